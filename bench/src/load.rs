//! A closed-loop HTTP load over loopback: `clients` keep-alive connections, each sending its
//! next request as soon as the last one was answered, with a warm-up that is not measured.
//! Scenarios (a) and (e) drive both their baseline and RauskuClaw with it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::http::StatusCode;

use crate::report::Row;
use crate::servers::Gateway;
use crate::stats::{Summary, fmt_ms, fmt_rate, fmt_ratio, rate, thousands};

/// The size of the load.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub clients: usize,
    pub requests: usize,
    /// Requests sent first and not measured (connections, caches, sled's first segments).
    pub warmup: usize,
}

impl LoadShape {
    /// 64 clients; 20,000 measured requests (2,000 with `quick`).
    pub fn standard(quick: bool) -> LoadShape {
        if quick {
            LoadShape {
                clients: 64,
                requests: 2_000,
                warmup: 200,
            }
        } else {
            LoadShape {
                clients: 64,
                requests: 20_000,
                warmup: 1_000,
            }
        }
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Summary,
}

impl Load {
    pub fn per_sec(&self) -> f64 {
        rate(self.ok, self.elapsed)
    }

    /// One progress line on stderr.
    pub fn report(&self) {
        eprintln!(
            "    {} ok in {:.2} s = {}; p50 {} p99 {} max {}{}",
            thousands(self.ok as u64),
            self.elapsed.as_secs_f64(),
            fmt_rate(self.per_sec()),
            fmt_ms(self.latency.p50),
            fmt_ms(self.latency.p99),
            fmt_ms(self.latency.max),
            match &self.first_error {
                Some(e) => format!("; {} errors, first: {e}", self.errors),
                None => String::new(),
            }
        );
    }
}

/// Builds request number `i` of a run (numbers are unique across warm-up and measurement).
pub type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// The whole of a load run may take this long.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// A keep-alive HTTP/1.1 client sized for `clients` connections.
pub fn client(clients: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// A warm-up, then the measured load; an answer other than `expect` counts as an error, and
/// more than 1 % errors fails the run.
pub async fn drive(
    shape: LoadShape,
    make: MakeRequest,
    expect: StatusCode,
) -> anyhow::Result<Load> {
    let client = client(shape.clients)?;
    let work = async {
        let warm = closed_loop(&client, &make, expect, shape.clients, 0..shape.warmup).await;
        if warm.ok == 0 && warm.errors > 0 {
            bail!(
                "every warm-up request failed; first error: {}",
                warm.first_error.unwrap_or_default()
            );
        }
        let measured = closed_loop(
            &client,
            &make,
            expect,
            shape.clients,
            shape.warmup..shape.warmup + shape.requests,
        )
        .await;
        if measured.errors * 100 > shape.requests {
            bail!(
                "{} of {} requests failed; first error: {}",
                measured.errors,
                shape.requests,
                measured.first_error.unwrap_or_default()
            );
        }
        Ok(measured)
    };
    tokio::time::timeout(LOAD_TIMEOUT, work)
        .await
        .map_err(|_| anyhow::anyhow!("the load did not finish within {LOAD_TIMEOUT:?}"))?
}

/// Requests numbered `range` from `clients` tasks, each waiting for its answer.
async fn closed_loop(
    client: &reqwest::Client,
    make: &MakeRequest,
    expect: StatusCode,
    clients: usize,
    range: std::ops::Range<usize>,
) -> Load {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, make, next) = (client.clone(), make.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let t = Instant::now();
                    let outcome = match make(&client, i).send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            // Read the body to the end so the connection is reused.
                            match resp.bytes().await {
                                Ok(_) if status == expect => Ok(()),
                                Ok(b) => {
                                    Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&b)))
                                }
                                Err(e) => Err(format!("reading the answer: {e}")),
                            }
                        }
                        Err(e) => Err(format!("{e}")),
                    };
                    match outcome {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(end - range.start);
    let mut out = Load::default();
    for t in tasks {
        match t.await {
            Ok((lat, errors, first)) => {
                all.extend(lat);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    out.elapsed = start.elapsed();
    out.ok = all.len();
    out.latency = Summary::of(&mut all);
    out
}

/// Drives `shape` against a fresh gateway started with `env`: request `i` is
/// `requests(<gateway url>)(i)`, and every answer must be `expect`. `None` when there is no
/// gateway binary to run (the baseline's figures still stand).
pub async fn against_gateway(
    label: &str,
    base: &Path,
    key: &str,
    env: &[(&str, &str)],
    shape: LoadShape,
    expect: StatusCode,
    requests: impl FnOnce(&str) -> MakeRequest,
) -> anyhow::Result<Option<Load>> {
    let bin = match Gateway::binary() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("{label} RauskuClaw gateway: not run: {e:#}");
            return Ok(None);
        }
    };
    eprintln!("{label} RauskuClaw gateway: {} …", bin.display());
    let gateway = Gateway::start(&bin, base, key, env).await?;
    let load = drive(shape, requests(&gateway.url()), expect)
        .await
        .map_err(|e| gateway.explain(e))?;
    gateway.report_commit_stats(key).await;
    drop(gateway);
    load.report();
    Ok(Some(load))
}

/// The table rows of a load against its baseline: requests/s (with the target ratio), p50
/// and p99. `ours` is `None` when the gateway binary was not there to run.
pub fn rows(scenario: &str, ours: Option<&Load>, raw: &Load, target_ratio: f64) -> Vec<Row> {
    let missing = || "not run (no gateway binary)".to_string();
    let lat_ratio = |a: Duration, b: Duration| fmt_ratio(a.as_secs_f64(), b.as_secs_f64());
    let latency = |measure: &str, pick: fn(&Summary) -> Duration| Row {
        scenario: scenario.into(),
        measure: measure.into(),
        ours: ours.map_or_else(missing, |o| fmt_ms(pick(&o.latency))),
        baseline: fmt_ms(pick(&raw.latency)),
        ratio: ours.map_or_else(String::new, |o| {
            lat_ratio(pick(&o.latency), pick(&raw.latency))
        }),
        target: String::new(),
        met: None,
    };
    vec![
        Row {
            scenario: scenario.into(),
            measure: "requests/s".into(),
            ours: ours.map_or_else(missing, |o| fmt_rate(o.per_sec())),
            baseline: fmt_rate(raw.per_sec()),
            ratio: ours.map_or_else(String::new, |o| fmt_ratio(o.per_sec(), raw.per_sec())),
            target: format!("≥ {target_ratio}×"),
            met: ours.map(|o| o.errors == 0 && o.per_sec() >= target_ratio * raw.per_sec()),
        },
        latency("p50", |s| s.p50),
        latency("p99", |s| s.p99),
    ]
}
