//! Scenario (a): durable `POST /v1/jobs` over loopback, many concurrent keep-alive clients.
//!
//! RauskuClaw: the real `rauskuclaw serve` binary (found next to this executable), on a free
//! loopback port and a temporary data directory, killed when the guard drops (also on panic).
//!
//! Baseline: a raw axum handler in this process, on its own tokio runtime and threads (as if
//! it were another process), doing the same durable writes: deserialize the JSON, insert the
//! job record, its `job.queued` event and the stream index in one sled transaction over three
//! trees, wait for a shared group-commit flush, answer 201 with the job as JSON.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::baseline::{event_record, job_stream_key, new_job, open_db, record};
use crate::group_commit::GroupCommit;
use crate::report::Row;
use crate::stats::{Summary, fmt_ms, fmt_rate, fmt_ratio, rate, thousands};

/// The size of the load.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub clients: usize,
    pub requests: usize,
    /// Requests sent first and not measured (connections, caches, sled's first segments).
    pub warmup: usize,
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
}

/// The whole of a load run may take this long.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The gateway must answer `/health` within this.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Both runs, and the table rows.
pub async fn run(base: &Path, shape: LoadShape) -> anyhow::Result<Vec<Row>> {
    let key = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let scenario = format!(
        "(a) durable POST /v1/jobs, {} clients, {} requests",
        shape.clients,
        thousands(shape.requests as u64)
    );

    eprintln!("(a) baseline: raw axum + sled + group commit …");
    let raw = {
        let server = BaselineServer::start(base, &key)?;
        let url = format!("http://{}", server.addr);
        let load = drive(&url, &key, shape).await.context("(a) baseline")?;
        eprintln!("    flushes: {}", thousands(server.flushes()));
        load
    };
    report_run(&raw);

    let ours = match Gateway::binary() {
        Err(e) => {
            eprintln!("(a) RauskuClaw gateway: not run: {e:#}");
            None
        }
        Ok(bin) => {
            eprintln!("(a) RauskuClaw gateway: {} …", bin.display());
            let gateway = Gateway::start(&bin, base, &key).await?;
            let url = format!("http://127.0.0.1:{}", gateway.port);
            let load = drive(&url, &key, shape)
                .await
                .map_err(|e| gateway.explain(e))?;
            if let Some(line) = commit_stats(&url, &key).await {
                eprintln!("    {line}");
            }
            drop(gateway);
            report_run(&load);
            Some(load)
        }
    };

    let missing = || "not run (no gateway binary)".to_string();
    let lat_ratio = |a: Duration, b: Duration| fmt_ratio(a.as_secs_f64(), b.as_secs_f64());
    Ok(vec![
        Row {
            scenario: scenario.clone(),
            measure: "requests/s".into(),
            ours: ours
                .as_ref()
                .map_or_else(missing, |o| fmt_rate(o.per_sec())),
            baseline: fmt_rate(raw.per_sec()),
            ratio: ours
                .as_ref()
                .map_or_else(String::new, |o| fmt_ratio(o.per_sec(), raw.per_sec())),
            target: "≥ 0.6×".into(),
            met: ours
                .as_ref()
                .map(|o| o.errors == 0 && o.per_sec() >= 0.6 * raw.per_sec()),
        },
        Row {
            scenario: scenario.clone(),
            measure: "p50".into(),
            ours: ours
                .as_ref()
                .map_or_else(missing, |o| fmt_ms(o.latency.p50)),
            baseline: fmt_ms(raw.latency.p50),
            ratio: ours
                .as_ref()
                .map_or_else(String::new, |o| lat_ratio(o.latency.p50, raw.latency.p50)),
            target: String::new(),
            met: None,
        },
        Row {
            scenario,
            measure: "p99".into(),
            ours: ours
                .as_ref()
                .map_or_else(missing, |o| fmt_ms(o.latency.p99)),
            baseline: fmt_ms(raw.latency.p99),
            ratio: ours
                .as_ref()
                .map_or_else(String::new, |o| lat_ratio(o.latency.p99, raw.latency.p99)),
            target: String::new(),
            met: None,
        },
    ])
}

fn report_run(l: &Load) {
    eprintln!(
        "    {} ok in {:.2} s = {}; p50 {} p99 {} max {}{}",
        thousands(l.ok as u64),
        l.elapsed.as_secs_f64(),
        fmt_rate(l.per_sec()),
        fmt_ms(l.latency.p50),
        fmt_ms(l.latency.p99),
        fmt_ms(l.latency.max),
        match &l.first_error {
            Some(e) => format!("; {} errors, first: {e}", l.errors),
            None => String::new(),
        }
    );
}

// ----- the load -----

/// A warm-up, then the measured load, on one keep-alive client.
async fn drive(base_url: &str, key: &str, shape: LoadShape) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(shape.clients)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{base_url}/v1/jobs");
    let work = async {
        let warm = load(&client, &url, key, shape.clients, shape.warmup).await;
        if warm.ok == 0 && warm.errors > 0 {
            bail!(
                "every warm-up request failed; first error: {}",
                warm.first_error.unwrap_or_default()
            );
        }
        let measured = load(&client, &url, key, shape.clients, shape.requests).await;
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

/// `total` echo-job creations from `clients` tasks, each waiting for its answer.
async fn load(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    clients: usize,
    total: usize,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let auth = format!("Bearer {key}");
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, auth, next) =
                (client.clone(), url.to_string(), auth.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let body = format!(r#"{{"type":"echo","input":{{"i":{i},"bench":true}}}}"#);
                    let t = Instant::now();
                    let sent = client
                        .post(&url)
                        .header(header::AUTHORIZATION, &auth)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await;
                    let outcome = match sent {
                        Ok(resp) => {
                            let status = resp.status();
                            // Read the body to the end so the connection is reused.
                            match resp.bytes().await {
                                Ok(_) if status == StatusCode::CREATED => Ok(()),
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
    let mut all = Vec::with_capacity(total);
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

/// The gateway's group-commit counters from `/v1/runtime`, best effort.
async fn commit_stats(base_url: &str, key: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client
        .get(format!("{base_url}/v1/runtime"))
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .await
        .ok()?;
    let info: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
    let c = info.get("store")?.get("commit")?;
    let flushes = c.get("flushes")?.as_u64()?;
    let events = c.get("flushed_events")?.as_u64()?;
    let waiters = c.get("flush_waiters")?.as_u64()?;
    Some(format!(
        "gateway commit stats (whole run, warm-up and job execution included): {} flushes, \
         {:.1} events and {:.1} waiters per flush",
        thousands(flushes),
        events as f64 / flushes.max(1) as f64,
        waiters as f64 / flushes.max(1) as f64,
    ))
}

// ----- the gateway child -----

/// The running gateway; killed (and its data directory removed) on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    log: PathBuf,
    // Dropped after the child is dead.
    _dir: TempDir,
}

impl Gateway {
    /// `rauskuclaw` next to this executable (both are in `target/release` after a build).
    pub fn binary() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("cannot find this executable's path")?;
        let dir = exe.parent().context("this executable has no directory")?;
        let bin = dir.join(format!("rauskuclaw{}", std::env::consts::EXE_SUFFIX));
        if !bin.is_file() {
            bail!(
                "the gateway binary {} does not exist; build it first with `cargo build --release`",
                bin.display()
            );
        }
        Ok(bin)
    }

    pub async fn start(bin: &Path, base: &Path, key: &str) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new()
            .prefix("bench-gateway-")
            .tempdir_in(base)?;
        let data = dir.path().join("data");
        let log = dir.path().join("gateway.log");
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        // In the temporary directory, so no ./rauskuclaw.toml of the caller is picked up.
        cmd.current_dir(dir.path())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data);
        // Only our settings: none of the caller's RAUSKU_* leak into the measurement.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RAUSKU_") {
                cmd.env_remove(k);
            }
        }
        let logfile = std::fs::File::create(&log)?;
        cmd.env("RAUSKU_API_KEY", key)
            .env("RAUSKU_RATE_LIMIT_PER_SEC", "1000000")
            .env("RAUSKU_RATE_LIMIT_BURST", "1000000")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut gateway = Gateway {
            child,
            port,
            log,
            _dir: dir,
        };
        gateway.wait_healthy().await?;
        Ok(gateway)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the gateway exited ({status}) before it was healthy:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "the gateway did not answer {url} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the gateway's output.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Adds the gateway's last output to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        e.context(format!(
            "against the gateway; its last output:\n{}",
            self.log_tail()
        ))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (right now).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

// ----- the baseline server -----

/// The raw axum server on its own runtime thread; stopped on drop.
pub struct BaselineServer {
    pub addr: SocketAddr,
    commit: Arc<GroupCommit>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Dropped after the server thread ended.
    _dir: TempDir,
}

struct BaselineState {
    key: String,
    jobs: sled::Tree,
    events: sled::Tree,
    streams: sled::Tree,
    next_global: AtomicU64,
    commit: Arc<GroupCommit>,
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default)]
    input: Value,
}

impl BaselineServer {
    pub fn start(base: &Path, key: &str) -> anyhow::Result<BaselineServer> {
        let dir = tempfile::Builder::new()
            .prefix("bench-raw-http-")
            .tempdir_in(base)?;
        let db = open_db(dir.path())?;
        let commit = Arc::new(GroupCommit::start(db.clone())?);
        let state = Arc::new(BaselineState {
            key: key.to_string(),
            jobs: db.open_tree("jobs")?,
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
            next_global: AtomicU64::new(1),
            commit: commit.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("baseline-http")
            .build()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("baseline-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let app = Router::new()
                        .route("/health", get(|| async { "ok" }))
                        .route("/v1/jobs", post(create_job))
                        .with_state(state);
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("baseline server: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                eprintln!("baseline server: {e}");
                            }
                        }
                        _ = stop => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(BaselineServer {
            addr,
            commit,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: dir,
        })
    }

    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn create_job(
    State(s): State<Arc<BaselineState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == s.key);
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    let req: CreateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut job = new_job(req.input);
    job.job_type = req.job_type;
    let (key, value) = record(&job);
    let global = s.next_global.fetch_add(1, Ordering::Relaxed);
    let (ekey, evalue) = event_record(&job, "job.queued", 1, global);
    let skey = job_stream_key(&job, 1);
    let written = (&s.jobs, &s.events, &s.streams).transaction(|(jobs, events, streams)| {
        jobs.insert(key.as_slice(), value.as_slice())?;
        events.insert(ekey.as_slice(), evalue.as_slice())?;
        streams.insert(skey.as_slice(), &global.to_be_bytes())?;
        Ok::<_, ConflictableTransactionError<()>>(())
    });
    if let Err(e) = written {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")).into_response();
    }
    if let Err(e) = s.commit.durable().await {
        return (StatusCode::SERVICE_UNAVAILABLE, e).into_response();
    }
    (StatusCode::CREATED, axum::Json(job)).into_response()
}
