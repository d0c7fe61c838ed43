//! Runs the real `rauskuclaw` binary on a temporary data directory and talks to it over HTTP.
//!
//! - [`Gateway::start`] / [`Gateway::builder`]: spawn `serve --listen 127.0.0.1:0`, learn the port
//!   from the `rauskuclaw listening on http://ADDR` line, drain stdout/stderr in background
//!   threads, kill the child on drop (its output is printed if the test failed).
//! - Requests: [`Gateway::get`], [`Gateway::post`], … return a [`Resp`] with the parsed JSON.
//! - Waiting: [`wait_for`] polls a condition until a deadline; no guessed sleeps.
//! - [`SseReader`]: reads Server-Sent Events frames with a deadline.

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rauskuclaw");

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(20);

/// A fresh random-looking secret (unique per call and per process).
pub fn random_secret(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let digest = Sha256::digest(format!("{nanos}-{}-{n}", std::process::id()));
    format!("{prefix}-{}", hex::encode(&digest[..16]))
}

/// How to start a gateway.
pub struct Builder {
    env: Vec<(String, String)>,
    api_key: Option<String>,
    dir: Option<TempDir>,
}

impl Builder {
    /// Adds (or replaces) an environment variable of the child.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Starts without `RAUSKU_API_KEY` (the first start then writes `<data>/admin.key`).
    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    /// Uses an existing directory (e.g. one prepared with [`cli`]).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> Gateway {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().expect("temp dir"),
        };
        let mut env = vec![
            ("RAUSKU_RETRY_BASE_MS".to_string(), "20".to_string()),
            ("RAUSKU_LOG".to_string(), "warn".to_string()),
        ];
        for (k, v) in self.env {
            env.retain(|(e, _)| *e != k);
            env.push((k, v));
        }
        if let Some(key) = &self.api_key {
            env.push(("RAUSKU_API_KEY".to_string(), key.clone()));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut gw = Gateway {
            key: self.api_key.clone().unwrap_or_default(),
            admin_key: self.api_key,
            env,
            dir,
            child: None,
            addr: String::new(),
            base: String::new(),
            client,
            output: Arc::default(),
            starts: 0,
        };
        gw.spawn().await;
        gw
    }
}

/// A running (or stopped) gateway process and its data directory.
pub struct Gateway {
    /// The key requests are sent with (the admin key unless a test changes it).
    pub key: String,
    /// `RAUSKU_API_KEY`, if one was configured.
    pub admin_key: Option<String>,
    env: Vec<(String, String)>,
    dir: TempDir,
    child: Option<Child>,
    /// `127.0.0.1:PORT` of the current process.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: reqwest::Client,
    /// Every line the process printed, for the failure report.
    output: Arc<Mutex<Vec<String>>>,
    starts: u32,
}

impl Gateway {
    pub fn builder() -> Builder {
        Builder {
            env: Vec::new(),
            api_key: Some(random_secret("it-admin")),
            dir: None,
        }
    }

    /// A gateway with the default test settings.
    pub async fn start() -> Gateway {
        Gateway::builder().start().await
    }

    /// The temporary directory (the process's working directory).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The store directory passed as `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the gateway is already running");
        self.starts += 1;
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir());
        configure(&mut cmd, self.dir.path(), &self.env);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn rauskuclaw");
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let start = self.starts;
        let out = self.output.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("rauskuclaw listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_string());
                }
                out.lock()
                    .unwrap()
                    .push(format!("[start {start} stdout] {line}"));
            }
        });
        let out = self.output.clone();
        std::thread::spawn(move || drain(stderr, &out, start));
        self.child = Some(child);
        let addr = match tokio::time::timeout(START_DEADLINE, rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "the gateway did not report its address within {START_DEADLINE:?} (exit: {status:?}); output:\n{}",
                    self.output().join("\n")
                );
            }
        };
        self.base = format!("http://{addr}");
        self.addr = addr;
    }

    /// Sends a message to a session (`POST /v1/sessions/{key}/messages`), asserting the 202;
    /// returns `{session_id, seq}`.
    pub async fn say(&self, key: &str, text: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/sessions/{}/messages", session_path(key)),
                json!({ "text": text }),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        r.json
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the gateway is not running")
            .id()
    }

    /// Sends SIGTERM and waits (up to `deadline`) for the process to exit.
    pub async fn sigterm(&mut self, deadline: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {pid} failed");
        self.wait_exit(deadline).await
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn sigkill(&mut self) {
        let mut child = self.child.take().expect("the gateway is not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the gateway is not running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if started.elapsed() > deadline {
                panic!(
                    "the gateway did not exit within {deadline:?}; output:\n{}",
                    self.output().join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the gateway again on the same data directory (stopping it with SIGTERM first if
    /// it still runs). The port changes.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.sigterm(Duration::from_secs(20)).await;
            assert!(
                status.success(),
                "graceful stop before restart exited with {status}"
            );
        }
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with no key at all.
    pub fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with [`Gateway::key`].
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(&self.key, method, path)
    }

    /// A request with another key.
    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.raw(method, path).bearer_auth(key)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        send(with_json(self.req(Method::POST, path), &body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        send(with_json(self.req(Method::PATCH, path), &body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.req(Method::DELETE, path)).await
    }

    /// `POST /v1/jobs`, asserting 201; returns the job.
    pub async fn create_job(&self, body: Value) -> Value {
        let r = self.post("/v1/jobs", body.clone()).await;
        assert_eq!(r.status, 201, "creating {body}: {}", r.text);
        r.json
    }

    /// `GET /v1/jobs/{id}`, asserting 200.
    pub async fn job(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(r.status, 200, "GET job {id}: {}", r.text);
        r.json
    }

    /// Waits until the job is in a terminal state and returns it.
    pub async fn wait_terminal(&self, id: &str, deadline: Duration) -> Value {
        wait_for(&format!("job {id} to finish"), deadline, || async {
            let job = self.job(id).await;
            is_terminal(&job).then_some(job)
        })
        .await
    }

    /// Waits until the job is in `state`.
    pub async fn wait_state(&self, id: &str, state: &str, deadline: Duration) -> Value {
        wait_for(&format!("job {id} to be {state}"), deadline, || async {
            let job = self.job(id).await;
            (job["state"] == state).then_some(job)
        })
        .await
    }

    /// Creates a key through the API and returns `(id, secret)`.
    pub async fn create_key(&self, name: &str, scope: &str) -> (String, String) {
        let r = self
            .post("/v1/keys", json!({ "name": name, "scope": scope }))
            .await;
        assert_eq!(r.status, 201, "create key: {}", r.text);
        let id = r.json["key"]["id"].as_str().expect("key.id").to_string();
        let secret = r.json["secret"].as_str().expect("secret").to_string();
        (id, secret)
    }

    /// Every event of the global feed, paged through `GET /v1/events?after=`.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let r = self
                .get(&format!("/v1/events?after={after}&limit=1000"))
                .await;
            assert_eq!(r.status, 200, "events: {}", r.text);
            let page = r.json["events"].as_array().expect("events").clone();
            if page.is_empty() {
                return out;
            }
            after = r.json["next_after"].as_u64().expect("next_after");
            out.extend(page);
        }
    }

    /// The events of one job's stream, from the global feed.
    pub async fn job_events(&self, id: &str) -> Vec<Value> {
        let stream = format!("job:{id}");
        self.all_events()
            .await
            .into_iter()
            .filter(|e| e["stream"] == stream.as_str())
            .collect()
    }

    /// Waits until the job's (durable) events satisfy `done`, and returns them. Job reads can run
    /// ahead of the durable event feed, so a test that saw a state waits here for its events.
    pub async fn wait_events(
        &self,
        id: &str,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        wait_for(&format!("{what} on job {id}"), deadline, || async {
            let events = self.job_events(id).await;
            done(&events).then_some(events)
        })
        .await
    }

    /// Every job, paged through `GET /v1/jobs?cursor=`.
    pub async fn all_jobs(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/jobs?limit=500&cursor={c}"),
                None => "/v1/jobs?limit=500".to_string(),
            };
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "list jobs: {}", r.text);
            out.extend(r.json["jobs"].as_array().expect("jobs").iter().cloned());
            match r.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- gateway output ({}) ----", self.dir.path().display());
            for line in self.output.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// Environment and working directory of a child: no inherited `RAUSKU_*`, and a directory
/// without a `rauskuclaw.toml`.
fn configure(cmd: &mut Command, cwd: &Path, env: &[(String, String)]) {
    for (k, _) in std::env::vars() {
        if k.starts_with("RAUSKU_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
}

fn drain(r: impl Read, out: &Mutex<Vec<String>>, start: u32) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        out.lock()
            .unwrap()
            .push(format!("[start {start} stderr] {line}"));
    }
}

/// Runs a `rauskuclaw` subcommand other than `serve` (e.g. `keys list`) to completion.
pub fn cli(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    configure(
        &mut cmd,
        cwd,
        &[("RAUSKU_LOG".to_string(), "warn".to_string())],
    );
    cmd.stdin(Stdio::null());
    cmd.output().expect("run rauskuclaw")
}

/// An HTTP response, its body parsed as JSON (`Null` if it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the error shape `{"error": {code, message, details}}` with `code`;
    /// returns `details`.
    pub fn assert_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got: {}",
            self.text
        );
        assert_error_shape(self);
        assert_eq!(
            self.json["error"]["code"], code,
            "error code in {}",
            self.text
        );
        &self.json["error"]["details"]
    }
}

/// Asserts that a response is a JSON error: `{"error": {code, message, details}}`, nothing else.
pub fn assert_error_shape(r: &Resp) {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?} of error {}",
        r.text
    );
    let obj = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {:?}", r.text));
    assert_eq!(obj.len(), 1, "error body has only `error`: {}", r.text);
    let err = r.json["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no `error` object: {}", r.text));
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no error.code: {}", r.text));
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "error.code is snake_case: {code:?}"
    );
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no error.message: {}", r.text));
    assert!(!message.is_empty(), "empty error.message: {}", r.text);
    assert!(
        err.get("details").is_some_and(Value::is_object),
        "error.details is an object: {}",
        r.text
    );
}

pub fn with_json(rb: RequestBuilder, body: &Value) -> RequestBuilder {
    rb.header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
}

/// Sends and reads the whole body.
pub async fn send(rb: RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("read body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Polls `f` until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-01-31T12:00:00.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_millis()
    )
}

/// One Server-Sent Events frame.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub event: Option<String>,
    pub id: Option<u64>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {:?}", self.data))
    }
}

/// Reads SSE frames from a streaming response.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Opens `path` with `headers`; asserts a 200 `text/event-stream`.
    pub async fn open(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> SseReader {
        // No overall timeout: the stream is read with deadlines instead.
        let client = reqwest::Client::new();
        let mut rb = client.get(gw.url(path)).bearer_auth(&gw.key);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.expect("open stream");
        assert_eq!(resp.status().as_u16(), 200, "stream {path}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            ct.starts_with("text/event-stream"),
            "content-type of {path}: {ct}"
        );
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// Like [`SseReader::next`], but a connection closed mid-stream also counts as the end.
    pub async fn next_or_closed(&mut self, deadline: Instant) -> Option<Frame> {
        self.read(deadline, true).await
    }

    /// The next frame with an event or data, `None` when the stream ended. Fails the test if
    /// nothing arrives before `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<Frame> {
        self.read(deadline, false).await
    }

    async fn read(&mut self, deadline: Instant, closed_is_end: bool) -> Option<Frame> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                let mut data = Vec::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        frame.event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        frame.id = Some(v.trim().parse().expect("numeric SSE id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                frame.data = data.join("\n");
                if frame.event.is_some() || !frame.data.is_empty() {
                    return Some(frame);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => panic!("no SSE frame before the deadline; buffered: {:?}", self.buf),
                Ok(Err(_)) if closed_is_end => return None,
                Ok(Err(e)) => panic!("reading the stream failed: {e}"),
                Ok(Ok(None)) => return None,
                Ok(Ok(Some(bytes))) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
            }
        }
    }
}

/// `rauskuclaw local <args>` in `cwd` with `env` (and no inherited `RAUSKU_*`), its stdin,
/// stdout and stderr piped, not started yet.
pub fn local_command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("local").args(args);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    configure(&mut cmd, cwd, &env);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `rauskuclaw local <args>` in `cwd` with `stdin` as its input, to completion.
pub fn local(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = local_command(cwd, args, env)
        .spawn()
        .expect("spawn rauskuclaw local");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("run rauskuclaw local")
}

/// A session key as a URL path segment: `github:acme/api#1` → `github%3Aacme%2Fapi%231`.
pub fn session_path(key: &str) -> String {
    key.replace(':', "%3A")
        .replace('/', "%2F")
        .replace('#', "%23")
}
