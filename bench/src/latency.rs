//! Scenario (c): enqueue → start latency at a paced rate (half the maximum of scenario (b)).
//!
//! Jobs are created on a 1 ms tick, as many per tick as the rate asks for. Two figures per job:
//! - observed: from just before `create` to the `job.started` event arriving on the bus. The
//!   bus publishes after the group-commit flush, so this includes an fsync (the lease write's).
//! - recorded: `started_at - created_at` of the stored job (millisecond timestamps), the time
//!   the supervisor took to lease it, without the flush.
//!
//! Baseline: [`RawEngine`] at the same rate; observed is "before enqueue → the `running`
//! record is durable", recorded is the same timestamp difference.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use store::{Job, JobId};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::baseline::{Observed, RawEngine};
use crate::harness::{self, Harness};
use crate::report::Row;
use crate::stats::{Summary, fmt_ms, fmt_rate, fmt_ratio, fmt_whole_ms, rate, thousands};

/// How long a run waits for the last jobs to start after the last creation.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub created: usize,
    /// The rate achieved by the pacer.
    pub achieved_rate: f64,
    pub observed: Summary,
    pub recorded: Summary,
    /// Jobs whose start was not observed (bus lag, or the drain timed out).
    pub missing: usize,
}

/// Both runs at `per_sec`, for about `seconds`, and the table rows.
pub async fn run(base: &Path, per_sec: f64, seconds: f64) -> anyhow::Result<Vec<Row>> {
    let n = ((per_sec * seconds).round() as usize).clamp(100, 200_000);
    eprintln!(
        "(c) baseline: raw tokio + sled at {}, {} jobs …",
        fmt_rate(per_sec),
        thousands(n as u64)
    );
    let raw = run_baseline(base, per_sec, n)
        .await
        .context("(c) baseline")?;
    report_run(&raw);
    eprintln!(
        "(c) RauskuClaw runtime at {}, {} jobs …",
        fmt_rate(per_sec),
        thousands(n as u64)
    );
    let ours = run_runtime(base, per_sec, n)
        .await
        .context("(c) RauskuClaw runtime")?;
    report_run(&ours);

    let scenario = format!("(c) enqueue → started at {}", fmt_rate(per_sec));
    let lat_ratio = |a: Duration, b: Duration| fmt_ratio(a.as_secs_f64(), b.as_secs_f64());
    Ok(vec![
        Row {
            scenario: scenario.clone(),
            measure: "p50, observed on the bus (incl. fsync)".into(),
            ours: fmt_ms(ours.observed.p50),
            baseline: fmt_ms(raw.observed.p50),
            ratio: lat_ratio(ours.observed.p50, raw.observed.p50),
            target: String::new(),
            met: None,
        },
        Row {
            scenario: scenario.clone(),
            measure: "p99, observed on the bus (incl. fsync)".into(),
            ours: fmt_ms(ours.observed.p99),
            baseline: fmt_ms(raw.observed.p99),
            ratio: lat_ratio(ours.observed.p99, raw.observed.p99),
            target: "≤ 5 ms".into(),
            met: Some(ours.observed.p99 <= Duration::from_millis(5) && ours.missing == 0),
        },
        Row {
            scenario: scenario.clone(),
            measure: "p50, started_at − created_at (ms resolution)".into(),
            ours: fmt_whole_ms(ours.recorded.p50),
            baseline: fmt_whole_ms(raw.recorded.p50),
            ratio: String::new(),
            target: String::new(),
            met: None,
        },
        Row {
            scenario,
            measure: "p99, started_at − created_at (ms resolution)".into(),
            ours: fmt_whole_ms(ours.recorded.p99),
            baseline: fmt_whole_ms(raw.recorded.p99),
            ratio: String::new(),
            target: "≤ 5 ms".into(),
            met: Some(ours.recorded.p99 <= Duration::from_millis(5)),
        },
    ])
}

fn report_run(l: &Latency) {
    eprintln!(
        "    {} jobs paced at {}: {} starts observed, p50 {} p99 {} max {}; recorded p50 {} p99 {}{}",
        thousands(l.created as u64),
        fmt_rate(l.achieved_rate),
        thousands(l.observed.count as u64),
        fmt_ms(l.observed.p50),
        fmt_ms(l.observed.p99),
        fmt_ms(l.observed.max),
        fmt_whole_ms(l.recorded.p50),
        fmt_whole_ms(l.recorded.p99),
        if l.missing > 0 {
            format!("; {} starts not observed", l.missing)
        } else {
            String::new()
        },
    );
}

/// Calls `create` `n` times at `per_sec`, on a 1 ms tick; returns each id with the instant
/// just before its creation, and the time it took.
async fn paced(
    per_sec: f64,
    n: usize,
    mut create: impl FnMut(usize) -> anyhow::Result<JobId>,
) -> anyhow::Result<(Vec<(JobId, Instant)>, Duration)> {
    let mut out = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let limit = Duration::from_secs_f64(n as f64 / per_sec * 3.0 + 10.0);
    let start = Instant::now();
    while out.len() < n {
        tick.tick().await;
        if start.elapsed() > limit {
            bail!(
                "the pacer fell behind: {} of {n} jobs created in {limit:?}",
                out.len()
            );
        }
        let due = ((start.elapsed().as_secs_f64() * per_sec) as usize + 1).min(n);
        while out.len() < due {
            let before = Instant::now();
            let id = create(out.len())?;
            out.push((id, before));
        }
    }
    Ok((out, start.elapsed()))
}

/// Per job, `observed[id] - created[id]`; and how many had no observation.
fn match_up(
    created: &[(JobId, Instant)],
    observed: &HashMap<JobId, Instant>,
) -> (Vec<Duration>, usize) {
    let mut out = Vec::with_capacity(created.len());
    let mut missing = 0;
    for (id, before) in created {
        match observed.get(id) {
            Some(at) => out.push(at.saturating_duration_since(*before)),
            None => missing += 1,
        }
    }
    (out, missing)
}

/// `started_at - created_at` of each stored job.
fn recorded(jobs: impl Iterator<Item = Job>) -> Vec<Duration> {
    jobs.filter_map(|j| j.started_at.map(|s| j.created_at.until(s)))
        .collect()
}

/// The real runtime.
pub async fn run_runtime(base: &Path, per_sec: f64, n: usize) -> anyhow::Result<Latency> {
    let h = Harness::start(base).await?;
    let result = measure_runtime(&h, per_sec, n).await;
    h.stop().await;
    result
}

async fn measure_runtime(h: &Harness, per_sec: f64, n: usize) -> anyhow::Result<Latency> {
    // Subscribe before the first creation.
    let mut rx = h.store.bus().subscribe();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let listener = tokio::spawn(async move {
        let mut seen: HashMap<JobId, Instant> = HashMap::with_capacity(n);
        let mut lagged = 0u64;
        while seen.len() < n {
            tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Ok(e) if e.kind == "job.started" => {
                        let at = Instant::now();
                        if let Some(id) = e.stream.strip_prefix("job:").and_then(|s| s.parse().ok()) {
                            seen.entry(id).or_insert(at);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(k)) => lagged += k,
                    Err(RecvError::Closed) => break,
                },
                _ = &mut stopped => break,
            }
        }
        (seen, lagged)
    });
    let jobs = h.jobs().clone();
    let (created, took) = paced(per_sec, n, |i| {
        harness::create_echo(&jobs, json!({ "i": i }))
    })
    .await?;
    let (seen, lagged) = finish_listener(listener, stop).await?;
    if lagged > 0 {
        eprintln!("    the bus receiver lagged by {lagged} events; those starts are missing");
    }
    let (mut observed, missing) = match_up(&created, &seen);
    let mut rec = recorded(
        created
            .iter()
            .filter_map(|(id, _)| h.store.job(*id).ok().flatten()),
    );
    Ok(Latency {
        created: n,
        achieved_rate: rate(n, took),
        observed: Summary::of(&mut observed),
        recorded: Summary::of(&mut rec),
        missing,
    })
}

/// Waits (bounded) for the listener to see every start, then stops it.
async fn finish_listener<T>(
    mut listener: tokio::task::JoinHandle<T>,
    stop: oneshot::Sender<()>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut listener).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            let _ = stop.send(());
            Ok(listener.await?)
        }
    }
}

/// The raw baseline.
pub async fn run_baseline(base: &Path, per_sec: f64, n: usize) -> anyhow::Result<Latency> {
    let (observer, mut observed) = mpsc::unbounded_channel();
    let engine = RawEngine::open(base, observer)?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let listener = tokio::spawn(async move {
        let mut seen: HashMap<JobId, Instant> = HashMap::with_capacity(n);
        while seen.len() < n {
            tokio::select! {
                biased;
                o = observed.recv() => match o {
                    Some(Observed::Started(ids, at)) => {
                        for id in ids {
                            seen.entry(id).or_insert(at);
                        }
                    }
                    Some(Observed::Succeeded(_)) => {}
                    None => break,
                },
                _ = &mut stopped => break,
            }
        }
        seen
    });
    let (created, took) = paced(per_sec, n, |i| engine.enqueue(json!({ "i": i }))).await?;
    let seen = finish_listener(listener, stop).await?;
    let (mut obs, missing) = match_up(&created, &seen);
    let mut rec = recorded(created.iter().filter_map(|(id, _)| engine.job(*id)));
    engine.close().await;
    Ok(Latency {
        created: n,
        achieved_rate: rate(n, took),
        observed: Summary::of(&mut obs),
        recorded: Summary::of(&mut rec),
        missing,
    })
}
