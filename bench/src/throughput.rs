//! Scenario (b): no-op (`echo`) jobs per second from enqueue to `succeeded`, in process.
//!
//! RauskuClaw: `JobService::create` from a few producer tasks as fast as they go, counting
//! `job.succeeded` on the event bus (published after the group-commit flush) until all are
//! done. If the counting receiver lags behind the bus, it falls back to polling the store's job
//! counters, then waits for one more flush so the figure still means "durably succeeded".
//!
//! Baseline: [`RawEngine`], the same state writes with tokio and sled alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use store::JobState;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::baseline::{Observed, RawEngine};
use crate::harness::{self, Harness};
use crate::report::Row;
use crate::stats::{fmt_rate, fmt_ratio, rate, thousands};

/// Tasks creating jobs at once.
const PRODUCERS: usize = 2;
/// A run that takes longer than this is reported as a failure.
const TIMEOUT: Duration = Duration::from_secs(180);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub jobs: usize,
    /// From the first creation to the last durable success.
    pub elapsed: Duration,
    /// From the first creation to the last one returning.
    pub enqueue_elapsed: Duration,
    pub flushes: u64,
    /// Whether the bus receiver lagged and counting fell back to polling.
    pub lagged: bool,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        rate(self.jobs, self.elapsed)
    }
}

/// Both runs, and the table rows.
pub async fn run(base: &Path, jobs: usize) -> anyhow::Result<(Throughput, Vec<Row>)> {
    eprintln!(
        "(b) baseline: raw tokio + sled, {} jobs …",
        thousands(jobs as u64)
    );
    let raw = run_baseline(base, jobs).await.context("(b) baseline")?;
    eprintln!(
        "    {} in {:.2} s",
        fmt_rate(raw.per_sec()),
        raw.elapsed.as_secs_f64()
    );
    eprintln!(
        "(b) RauskuClaw runtime, {} echo jobs …",
        thousands(jobs as u64)
    );
    let ours = run_runtime(base, jobs)
        .await
        .context("(b) RauskuClaw runtime")?;
    eprintln!(
        "    {} in {:.2} s",
        fmt_rate(ours.per_sec()),
        ours.elapsed.as_secs_f64()
    );

    let ratio = ours.per_sec() / raw.per_sec();
    let scenario = format!(
        "(b) echo jobs, enqueue → succeeded, {} jobs",
        thousands(jobs as u64)
    );
    let rows = vec![
        Row {
            scenario: scenario.clone(),
            measure: "jobs/s".into(),
            ours: fmt_rate(ours.per_sec()),
            baseline: fmt_rate(raw.per_sec()),
            ratio: fmt_ratio(ours.per_sec(), raw.per_sec()),
            target: "≥ 10,000/s and ≥ 0.5×".into(),
            met: Some(ours.per_sec() >= 10_000.0 && ratio >= 0.5),
        },
        Row {
            scenario,
            measure: "enqueue only (create returns)".into(),
            ours: fmt_rate(rate(ours.jobs, ours.enqueue_elapsed)),
            baseline: fmt_rate(rate(raw.jobs, raw.enqueue_elapsed)),
            ratio: fmt_ratio(
                rate(ours.jobs, ours.enqueue_elapsed),
                rate(raw.jobs, raw.enqueue_elapsed),
            ),
            target: String::new(),
            met: None,
        },
    ];
    eprintln!(
        "    flushes: RauskuClaw {} ({:.1} jobs/flush), baseline {}{}",
        thousands(ours.flushes),
        ours.jobs as f64 / ours.flushes.max(1) as f64,
        thousands(raw.flushes),
        if ours.lagged {
            "; the bus receiver lagged, counted by polling"
        } else {
            ""
        },
    );
    Ok((ours, rows))
}

/// The real runtime.
pub async fn run_runtime(base: &Path, n: usize) -> anyhow::Result<Throughput> {
    let h = Harness::start(base).await?;
    let result = measure_runtime(&h, n).await;
    let flushes = h.store.commit_stats().flushes;
    h.stop().await;
    result.map(|t| Throughput { flushes, ..t })
}

async fn measure_runtime(h: &Harness, n: usize) -> anyhow::Result<Throughput> {
    let mut rx = h.store.bus().subscribe();
    let start = Instant::now();
    let producers: Vec<_> = split(n)
        .map(|(from, to)| {
            let jobs = h.jobs().clone();
            tokio::spawn(async move {
                for i in from..to {
                    harness::create_echo(&jobs, json!({ "i": i }))?;
                    // Let the actors run between creations, as requests from many clients would.
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(Instant::now())
            })
        })
        .collect();
    let producers = tokio::spawn(async move {
        let mut last = Instant::now();
        for p in producers {
            last = p.await??;
        }
        anyhow::Ok(last)
    });

    let deadline = start + TIMEOUT;
    let mut succeeded = 0usize;
    let mut lagged = false;
    while succeeded < n {
        if Instant::now() > deadline {
            bail!("only {succeeded} of {n} jobs succeeded within {TIMEOUT:?}");
        }
        if lagged {
            tokio::time::sleep(Duration::from_millis(2)).await;
            succeeded = count(h, JobState::Succeeded) as usize;
            check_no_failures(h)?;
            continue;
        }
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Ok(e)) => {
                if e.kind == "job.succeeded" {
                    succeeded += 1;
                }
            }
            Ok(Err(RecvError::Lagged(_))) => lagged = true,
            Ok(Err(RecvError::Closed)) => bail!("the event bus closed"),
            Err(_) => check_no_failures(h)?,
        }
    }
    if lagged {
        // The counters move at write time; the events were published once flushed.
        h.store.durable().await?;
    }
    let elapsed = start.elapsed();
    let last_created = producers.await??;
    Ok(Throughput {
        jobs: n,
        elapsed,
        enqueue_elapsed: last_created.duration_since(start),
        flushes: 0,
        lagged,
    })
}

fn count(h: &Harness, state: JobState) -> u64 {
    h.store
        .job_counts()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

fn check_no_failures(h: &Harness) -> anyhow::Result<()> {
    let failed = count(h, JobState::Failed) + count(h, JobState::Retrying);
    if failed > 0 {
        bail!("{failed} echo jobs failed or are retrying: the benchmark would never finish");
    }
    Ok(())
}

/// The raw baseline.
pub async fn run_baseline(base: &Path, n: usize) -> anyhow::Result<Throughput> {
    let (observer, mut observed) = mpsc::unbounded_channel();
    let engine = Arc::new(RawEngine::open(base, observer)?);
    let start = Instant::now();
    let producers: Vec<_> = split(n)
        .map(|(from, to)| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in from..to {
                    engine.enqueue(json!({ "i": i }))?;
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(Instant::now())
            })
        })
        .collect();
    let mut last_created = start;
    for p in producers {
        last_created = last_created.max(p.await??);
    }
    let mut succeeded = 0usize;
    let deadline = start + TIMEOUT;
    while succeeded < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, observed.recv()).await {
            Ok(Some(Observed::Succeeded(k))) => succeeded += k,
            Ok(Some(Observed::Started(..))) => {}
            Ok(None) => bail!("the raw writer stopped after {succeeded} of {n} jobs"),
            Err(_) => bail!("only {succeeded} of {n} raw jobs succeeded within {TIMEOUT:?}"),
        }
    }
    let elapsed = start.elapsed();
    let flushes = engine.flushes();
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close().await;
    }
    Ok(Throughput {
        jobs: n,
        elapsed,
        enqueue_elapsed: last_created.duration_since(start),
        flushes,
        lagged: false,
    })
}

/// `0..n` cut into one range per producer.
fn split(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let per = n.div_ceil(PRODUCERS);
    (0..PRODUCERS).map(move |p| ((p * per).min(n), ((p + 1) * per).min(n)))
}
