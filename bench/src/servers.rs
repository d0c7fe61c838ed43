//! The servers the scenarios measure:
//!
//! - [`Gateway`]: the real `rauskuclaw serve` binary (found next to this executable), on a free
//!   loopback port and a temporary data directory, killed when the guard drops (also on panic).
//! - [`ServerThread`]: a baseline server in this process, on its own tokio runtime and threads
//!   (as if it were another process), stopped when the guard drops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::stats::thousands;

/// The gateway must answer `/health` within this.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// Starts `bin serve` with the admin key `key`, API rate limits out of the way, and `env`;
    /// returns once it answers `/health`.
    pub async fn start(
        bin: &Path,
        base: &Path,
        key: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Gateway> {
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
            .envs(env.iter().copied())
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

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/health", self.url());
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

    /// Prints the gateway's group-commit counters from `/v1/runtime` (best effort: nothing
    /// when they cannot be read).
    pub async fn report_commit_stats(&self, key: &str) {
        if let Some(line) = self.commit_stats(key).await {
            eprintln!("    {line}");
        }
    }

    async fn commit_stats(&self, key: &str) -> Option<String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client
            .get(format!("{}/v1/runtime", self.url()))
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {key}"))
            .send()
            .await
            .ok()?;
        let info: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
        let c = info.get("store")?.get("commit")?;
        let n = |field: &str| c.get(field).and_then(serde_json::Value::as_u64);
        let flushes = n("flushes")?.max(1) as f64;
        Some(format!(
            "gateway group commit (whole run, warm-up and the work after the answers included): \
             {} cycles; per cycle {:.1} events, {:.1} waiters, {:.2} ms applying to sled, \
             {:.2} ms in fsync",
            thousands(n("flushes")?),
            n("flushed_events")? as f64 / flushes,
            n("flush_waiters")? as f64 / flushes,
            n("commit_us")? as f64 / flushes / 1000.0,
            n("flush_us")? as f64 / flushes / 1000.0,
        ))
    }

    /// Adds the gateway's last output to an error.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
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

/// A server on its own multi-threaded tokio runtime, in a thread of its own; stopped (its
/// future dropped, the runtime shut down) on drop.
pub struct ServerThread {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Binds a loopback port and runs `serve(listener)` on the new runtime until dropped.
    pub fn start<F, Fut>(name: &str, serve: F) -> anyhow::Result<ServerThread>
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .build()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("{label}: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener) => {}
                        _ = stop => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(ServerThread {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves an axum app on `listener` until the server thread stops (errors are printed).
pub async fn serve_axum(listener: tokio::net::TcpListener, app: axum::Router, label: &str) {
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("{label}: {e}");
    }
}
