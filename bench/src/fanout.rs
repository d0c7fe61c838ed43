//! Scenario (f): console fan-out: one session's events, live, to 1,000 WebSocket subscribers.
//!
//! RauskuClaw: the real binary ([`Gateway`]). 1,000 tokio-tungstenite clients `connect` and
//! `sessions.subscribe` to `rest:fanout` from its current head; then the session is sent
//! `runs` messages `/run echo {…}` over REST, each a whole run of the agent loop (plan, invoke
//! the `echo` skill as a job, observe, reply, finish). The clock runs from the first message
//! until every subscriber has every event of every run. The gateway produces the events (store
//! writes, fsyncs, the job) while it fans them out, on the same two cores.
//!
//! Baseline: raw tokio-tungstenite broadcast in this process, on its own runtime
//! ([`ServerThread`]): each connection answers the same two requests, then forwards every
//! message of a `tokio::sync::broadcast` channel with `send`. Once all are subscribed it is
//! published the very frames the first RauskuClaw subscriber received, all at once (so it
//! runs after RauskuClaw). The same client code reads both.
//!
//! Both report deliveries per second (events × subscribers / time to the last delivery).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::header;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::report::Row;
use crate::servers::{Gateway, ServerThread};
use crate::stats::{fmt_ms, fmt_rate, fmt_ratio, rate, thousands};

/// The session every subscriber follows.
const SESSION: &str = "rest:fanout";
/// [`SESSION`] in a URL path.
const SESSION_PATH: &str = "rest%3Afanout";
/// Connections opened at once.
const CONNECTING: usize = 64;
/// Connecting, the runs and the fan-out must each finish within this.
const TIMEOUT: Duration = Duration::from_secs(180);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the subscribers saw.
struct Fanout {
    /// Event frames delivered, over all subscribers.
    deliveries: usize,
    /// Events of the session (each subscriber got them all).
    events: usize,
    /// From the start of the publishing to the last delivery.
    elapsed: Duration,
    /// The event frames, as the first subscriber received them.
    frames: Vec<Utf8Bytes>,
}

impl Fanout {
    fn per_sec(&self) -> f64 {
        rate(self.deliveries, self.elapsed)
    }

    fn report(&self) {
        eprintln!(
            "    {} events × {} subscribers = {} deliveries in {:.2} s = {}",
            thousands(self.events as u64),
            thousands((self.deliveries / self.events.max(1)) as u64),
            thousands(self.deliveries as u64),
            self.elapsed.as_secs_f64(),
            fmt_rate(self.per_sec()),
        );
    }
}

pub async fn run(base: &Path, subscribers: usize, runs: usize) -> anyhow::Result<Vec<Row>> {
    let scenario = format!(
        "(f) console fan-out, 1 session, {} runs, {} subscribers",
        thousands(runs as u64),
        thousands(subscribers as u64)
    );
    let bin = Gateway::binary().context("(f) needs the gateway binary")?;
    let key = format!("bench-{}", uuid::Uuid::now_v7().simple());

    eprintln!("(f) RauskuClaw: {subscribers} console subscribers, {runs} runs of `/run echo` …");
    let ours = {
        let gateway = Gateway::start(&bin, base, &key, &[]).await?;
        rausku(&gateway, &key, subscribers, runs)
            .await
            .map_err(|e| gateway.explain(e))?
    };
    ours.report();

    eprintln!("(f) baseline: raw tokio-tungstenite broadcast of the same frames …");
    let raw = baseline(&ours.frames, subscribers, runs).await?;
    raw.report();

    Ok(vec![
        Row {
            scenario: scenario.clone(),
            measure: "deliveries/s (events × subscribers)".into(),
            ours: fmt_rate(ours.per_sec()),
            baseline: fmt_rate(raw.per_sec()),
            ratio: fmt_ratio(ours.per_sec(), raw.per_sec()),
            target: "≥ 0.5×".into(),
            met: Some(ours.per_sec() >= 0.5 * raw.per_sec()),
        },
        Row {
            scenario,
            measure: format!(
                "time to the last delivery ({} events)",
                thousands(ours.events as u64)
            ),
            ours: fmt_ms(ours.elapsed),
            baseline: fmt_ms(raw.elapsed),
            ratio: fmt_ratio(ours.elapsed.as_secs_f64(), raw.elapsed.as_secs_f64()),
            target: String::new(),
            met: None,
        },
    ])
}

async fn rausku(
    gateway: &Gateway,
    key: &str,
    subscribers: usize,
    runs: usize,
) -> anyhow::Result<Fanout> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let messages = format!("{}/v1/sessions/{SESSION_PATH}/messages", gateway.url());
    let send = |text: String| {
        http.post(&messages)
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(json!({ "text": text }).to_string())
            .send()
    };
    // The session exists, and is idle, before anyone subscribes.
    let first: Value = serde_json::from_slice(
        &send("/status".into())
            .await?
            .error_for_status()?
            .bytes()
            .await?,
    )?;
    let head = wait_idle(&http, gateway, key).await?;
    anyhow::ensure!(
        head >= first["seq"].as_u64().unwrap_or(0),
        "the session's head {head} is before its first message {first}"
    );

    let url = format!("ws://127.0.0.1:{}/v1/console", gateway.port);
    let subscribe = json!({ "key": SESSION, "after_seq": head });
    let sockets = connect_all(&url, key, &subscribe, subscribers).await?;
    eprintln!("    {subscribers} subscribed after seq {head}");

    let start = Instant::now();
    let readers = read_all(sockets, runs);
    for i in 0..runs {
        let resp = send(format!(r#"/run echo {{"i":{i},"bench":"fanout"}}"#)).await?;
        if !resp.status().is_success() {
            bail!(
                "message {i}: HTTP {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
    }
    eprintln!(
        "    {runs} messages accepted in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    finish(readers, start).await
}

/// Waits until the session is idle; returns the seq of its last event.
async fn wait_idle(http: &reqwest::Client, gateway: &Gateway, key: &str) -> anyhow::Result<u64> {
    let url = format!("{}/v1/sessions/{SESSION_PATH}", gateway.url());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = get_json(http, &url, key).await?;
        if s["state"] == "idle" {
            let events = get_json(http, &format!("{url}/events?after=0&limit=1000"), key).await?;
            let last = events["events"]
                .as_array()
                .and_then(|e| e.last())
                .and_then(|e| e["seq"].as_u64());
            if let Some(seq) = last {
                return Ok(seq);
            }
        }
        if Instant::now() > deadline {
            bail!("the session did not become idle within {TIMEOUT:?}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<Value> {
    let resp = http
        .get(url)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .await?
        .error_for_status()?;
    Ok(serde_json::from_slice(&resp.bytes().await?)?)
}

// ----- the subscribers (the same for both sides) -----

/// Opens `n` connections, `connect`s and subscribes each, [`CONNECTING`] at a time.
async fn connect_all(
    url: &str,
    key: &str,
    subscribe: &Value,
    n: usize,
) -> anyhow::Result<Vec<Socket>> {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (url, gate) = (url.to_string(), gate.clone());
        let connect =
            json!({"type": "req", "id": "c", "method": "connect", "params": {"token": key}});
        let subscribe =
            json!({"type": "req", "id": "s", "method": "sessions.subscribe", "params": subscribe});
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
            request(&mut ws, &connect).await?;
            request(&mut ws, &subscribe).await?;
            anyhow::Ok(ws)
        });
    }
    let all = async {
        let mut sockets = Vec::with_capacity(n);
        while let Some(ws) = set.join_next().await {
            sockets.push(ws.context("a connecting task failed")??);
        }
        anyhow::Ok(sockets)
    };
    tokio::time::timeout(TIMEOUT, all)
        .await
        .map_err(|_| anyhow::anyhow!("{n} subscribers did not connect within {TIMEOUT:?}"))?
        .context("connecting the subscribers")
}

/// Sends a request and waits for its successful response.
async fn request(ws: &mut Socket, req: &Value) -> anyhow::Result<()> {
    ws.send(Message::text(req.to_string())).await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let frame: Value = serde_json::from_str(&text)?;
        if frame["type"] == "res" && frame["id"] == req["id"] {
            anyhow::ensure!(frame["ok"] == true, "{} refused: {frame}", req["method"]);
            return Ok(());
        }
    }
    bail!("the socket closed before {} was answered", req["method"])
}

/// The top of a frame: all a subscriber looks at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    seq: Option<u64>,
}

/// What one subscriber received.
struct Received {
    events: usize,
    last: Instant,
    /// The event frames, for the first subscriber only.
    frames: Vec<Utf8Bytes>,
}

/// Reads every socket until it has seen `runs` × `run.finished`.
fn read_all(sockets: Vec<Socket>, runs: usize) -> JoinSet<anyhow::Result<Received>> {
    let mut set = JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        set.spawn(read(ws, runs, i == 0));
    }
    set
}

async fn read(mut ws: Socket, runs: usize, record: bool) -> anyhow::Result<Received> {
    let mut got = Received {
        events: 0,
        last: Instant::now(),
        frames: Vec::new(),
    };
    let mut finished = 0;
    while finished < runs {
        let Some(msg) = ws.next().await else {
            bail!("the socket closed after {} events", got.events);
        };
        let Message::Text(text) = msg? else { continue };
        let head: Head<'_> = serde_json::from_str(&text)?;
        if head.kind != "event" {
            continue;
        }
        match (head.event.as_deref(), head.seq) {
            (Some("lagged"), _) => bail!("lagged after {} events: {text}", got.events),
            (Some(kind), Some(_)) => {
                got.events += 1;
                got.last = Instant::now();
                if kind == "run.finished" {
                    finished += 1;
                }
                if record {
                    got.frames.push(text);
                }
            }
            _ => {} // tick
        }
    }
    Ok(got)
}

/// Waits for every reader; all must have received the same events.
async fn finish(
    mut readers: JoinSet<anyhow::Result<Received>>,
    start: Instant,
) -> anyhow::Result<Fanout> {
    let all = async {
        let mut out = Fanout {
            deliveries: 0,
            events: 0,
            elapsed: Duration::ZERO,
            frames: Vec::new(),
        };
        let mut counts = Vec::new();
        while let Some(r) = readers.join_next().await {
            let r = r.context("a subscriber task failed")??;
            out.deliveries += r.events;
            out.elapsed = out.elapsed.max(r.last - start);
            counts.push(r.events);
            if !r.frames.is_empty() {
                out.frames = r.frames;
            }
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        anyhow::ensure!(
            min == max,
            "subscribers received different numbers of events: {min:?} to {max:?}"
        );
        out.events = max.copied().unwrap_or(0);
        anyhow::Ok(out)
    };
    tokio::time::timeout(TIMEOUT, all)
        .await
        .map_err(|_| anyhow::anyhow!("the fan-out did not finish within {TIMEOUT:?}"))?
}

// ----- the baseline -----

async fn baseline(frames: &[Utf8Bytes], subscribers: usize, runs: usize) -> anyhow::Result<Fanout> {
    anyhow::ensure!(!frames.is_empty(), "no frames were recorded to replay");
    let (tx, _) = broadcast::channel::<Message>(frames.len() + 16);
    let subscribed = Arc::new(AtomicUsize::new(0));
    let server = {
        let (tx, subscribed) = (tx.clone(), subscribed.clone());
        ServerThread::start("baseline-ws", move |listener| async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_raw(stream, tx.clone(), subscribed.clone()));
            }
        })?
    };
    let url = format!("ws://{}/", server.addr);
    let sockets = connect_all(&url, "raw", &json!({ "key": SESSION }), subscribers).await?;
    anyhow::ensure!(
        subscribed.load(Ordering::Acquire) == subscribers,
        "the raw server has {} subscribers, not {subscribers}",
        subscribed.load(Ordering::Acquire)
    );
    let start = Instant::now();
    let readers = read_all(sockets, runs);
    for f in frames {
        tx.send(Message::Text(f.clone()))
            .map_err(|_| anyhow::anyhow!("the raw server has no subscribers"))?;
    }
    let out = finish(readers, start).await;
    drop(server);
    out
}

/// One raw connection: answers requests until subscribed, then forwards the broadcast.
async fn serve_raw(
    stream: TcpStream,
    tx: broadcast::Sender<Message>,
    subscribed: Arc<AtomicUsize>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut rx = None;
    while rx.is_none() {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            return;
        };
        let Ok(req) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        if req["method"] == "sessions.subscribe" {
            rx = Some(tx.subscribe());
            subscribed.fetch_add(1, Ordering::AcqRel);
        }
        let res = json!({"type": "res", "id": req["id"], "ok": true, "payload": {}});
        if ws.send(Message::text(res.to_string())).await.is_err() {
            return;
        }
    }
    let Some(mut rx) = rx else { return };
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => if ws.send(m).await.is_err() { return },
                Err(_) => return,
            },
            incoming = ws.next() => if !matches!(incoming, Some(Ok(_))) { return },
        }
    }
}
