//! The WebSocket console through the real binary, with a real WebSocket client: the first
//! frame authenticates, scopes, malformed and oversized frames, gap-free subscriptions across
//! the replay/live switch, runs driven and approvals resolved from the console, slow clients
//! dropped with `lagged` while fast ones keep up, and the close on shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, send, session_path, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

/// An echo skill that always asks for an approval.
const GATED: &str = r#"
name = "prod-deploy"
description = "deploy (echo stands in for the real thing)"
handler = "echo"
[input_schema]
type = "object"
required = ["env"]
properties.env = { type = "string" }
[policy]
risk = "deploy"
approval = "always"
"#;

/// What the server sent.
#[derive(Debug)]
enum Frame {
    Json(Value),
    /// A close frame (code, reason), or the connection ending without one (`None`).
    Closed(Option<(u16, String)>),
}

/// A console client.
struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Events read while waiting for a response.
    events: Vec<Value>,
}

impl Client {
    /// Opens `GET /v1/console` (no key header) on a socket with the default buffers.
    async fn open(gw: &Gateway) -> Client {
        Client::open_with(gw, None).await
    }

    /// Opens the console; `recv_buffer` shrinks the socket's receive buffer (a slow client
    /// then fills the server's queue sooner).
    async fn open_with(gw: &Gateway, recv_buffer: Option<u32>) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(gw.addr.parse().unwrap()).await.unwrap();
        let url = format!("ws://{}/v1/console", gw.addr);
        let (ws, resp) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("the console upgrades without a key header");
        assert_eq!(resp.status().as_u16(), 101);
        Client {
            ws,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Opens the console and connects with `key`.
    async fn connected(gw: &Gateway, key: &str) -> Client {
        let mut c = Client::open(gw).await;
        let r = c.call("connect", json!({ "token": key })).await;
        assert_eq!(r["ok"], true, "connect: {r}");
        c
    }

    async fn text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    async fn next(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame before the deadline");
            return match msg {
                Some(Ok(Message::Text(t))) => Frame::Json(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(c))) => {
                    Frame::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Frame::Closed(None),
            };
        }
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(v) => v,
            Frame::Closed(c) => panic!("the console closed: {c:?}"),
        }
    }

    /// The response to `id`, keeping the events that come first (ticks dropped).
    async fn response(&mut self, id: &Value) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["type"] == "res" && frame["id"] == *id {
                return frame;
            }
            assert_eq!(frame["type"], "event", "unexpected {frame}");
            if frame["event"] != "tick" {
                self.events.push(frame);
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(format!("r{}", self.next_id));
        let req = json!({ "type": "req", "id": id, "method": method, "params": params });
        self.text(req.to_string()).await;
        self.response(&id).await
    }

    /// Events (kept ones first) until `done` says so, ticks dropped.
    async fn events_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for e in std::mem::take(&mut self.events) {
            let end = done(&e);
            out.push(e);
            if end {
                return out;
            }
        }
        loop {
            let frame = self.next_json().await;
            if frame["event"] == "tick" {
                continue;
            }
            let end = done(&frame);
            out.push(frame);
            if end {
                return out;
            }
        }
    }

    /// Expects an error response with `code`, then a close with `close_code`.
    async fn expect_refused_and_closed(&mut self, code: &str, close_code: u16) {
        let r = self.next_json().await;
        assert_eq!(error_code(&r), code, "{r}");
        match self.next().await {
            Frame::Closed(Some((got, _))) => assert_eq!(got, close_code),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn error_code(r: &Value) -> &str {
    assert_eq!(r["type"], "res", "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r}"
    );
    r["error"]["code"].as_str().unwrap()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

/// Every event of a session, through REST.
async fn rest_events(gw: &Gateway, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = gw
            .get(&format!(
                "/v1/sessions/{}/events?after={after}&limit=1000",
                session_path(key)
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        after = r.json["next_after"].as_u64().unwrap();
        out.extend(page);
    }
}

/// The value of a metric (no labels) in `/metrics`.
async fn metric(gw: &Gateway, name: &str) -> f64 {
    let r = gw.get("/metrics").await;
    r.text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn write_skill(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("prod-deploy.toml"), GATED).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frame_must_connect_with_a_valid_key() {
    let gw = Gateway::start().await;
    // Anything else first: an error, then a policy-violation close.
    let mut c = Client::open(&gw).await;
    c.text(json!({"type": "req", "id": "1", "method": "ping"}).to_string())
        .await;
    c.expect_refused_and_closed("unauthorized", 1008).await;

    let mut c = Client::open(&gw).await;
    c.text(
        json!({"type": "req", "id": "1", "method": "connect", "params": {"token": "rk_nope"}})
            .to_string(),
    )
    .await;
    c.expect_refused_and_closed("unauthorized", 1008).await;

    let mut c = Client::open(&gw).await;
    c.text("not json".into()).await;
    c.expect_refused_and_closed("invalid_request", 1008).await;

    // A good key: the answer says who and what.
    let mut c = Client::open(&gw).await;
    let r = c.call("connect", json!({ "token": gw.key })).await;
    assert_eq!(r["id"], "r1");
    assert_eq!(r["payload"]["principal"]["scope"], "admin", "{r}");
    assert_eq!(r["payload"]["limits"]["max_frame_bytes"], 65536);
    let r = c.call("ping", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");

    // Not a WebSocket at all: a JSON error, not the framework's text.
    let r = send(gw.raw(reqwest::Method::GET, "/v1/console")).await;
    r.assert_error(426, "upgrade_required");
    // It is in the OpenAPI document.
    let r = gw.get("/v1/openapi.json").await;
    assert!(
        r.json["paths"]["/v1/console"]["get"].is_object(),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_malformed_and_oversized_frames() {
    let gw = Gateway::start().await;
    let (_, reader) = gw.create_key("reader", "read").await;
    let mut c = Client::connected(&gw, &reader).await;
    assert_eq!(metric(&gw, "rausku_console_connections").await, 1.0);

    let r = c
        .call("sessions.send", json!({"key": "ops", "text": "/help"}))
        .await;
    assert_eq!(error_code(&r), "forbidden");
    let r = c.call("sessions.interrupt", json!({"key": "ops"})).await;
    assert_eq!(error_code(&r), "forbidden");
    let r = c.call("sessions.list", json!({})).await;
    assert_eq!(r["payload"]["sessions"], json!([]), "{r}");

    // Malformed frames are answered; the connection stays.
    c.text("{oops".into()).await;
    let r = c.next_json().await;
    assert_eq!(
        (error_code(&r), &r["id"]),
        ("invalid_request", &Value::Null)
    );
    c.text(json!({"type": "req", "id": "m", "params": {}}).to_string())
        .await;
    let r = c.next_json().await;
    assert_eq!((error_code(&r), &r["id"]), ("invalid_request", &json!("m")));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("method"),
        "{r}"
    );
    let r = c.call("sessions.subscribe", json!({"after_seq": 1})).await;
    assert_eq!(error_code(&r), "invalid_request");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("key"),
        "{r}"
    );
    let r = c.call("sessions.explode", json!({})).await;
    assert_eq!(error_code(&r), "unknown_method");
    let r = c.call("ping", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");

    // Over 64 KiB: refused with an answer; the connection stays.
    let big = json!({"type": "req", "id": "big", "method": "ping", "params": {"pad": "x".repeat(100 << 10)}});
    c.text(big.to_string()).await;
    let r = c.next_json().await;
    assert_eq!(
        (error_code(&r), &r["id"]),
        ("payload_too_large", &json!("big"))
    );
    let r = c.call("ping", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    // Over what the transport reads at all: closed with 1009. The server closes while the
    // frame is still being written, so the write may fail; the close frame arrives anyway.
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        let _ = sink.send(Message::text("x".repeat(2 << 20))).await;
    });
    let close = loop {
        let msg = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("a close before the deadline");
        match msg {
            Some(Ok(Message::Close(close))) => break close.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a 1009 close, got {other:?}"),
        }
    };
    assert_eq!(close, Some(1009));
    writer.abort();
    wait_for("the connection gauge to drop", DEADLINE, || async {
        (metric(&gw, "rausku_console_connections").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_from_the_middle_of_a_run_sees_every_event_once_in_order() {
    let gw = Gateway::start().await;
    let key = "rest:steps";
    let runs = 4;
    for _ in 0..runs {
        gw.say(key, r#"/run sleep {"ms": 300}"#).await;
    }
    // Wait until the first run is under way, with some events stored.
    let stored = wait_for("the first run to be under way", DEADLINE, || async {
        let evs = rest_events(&gw, key).await;
        (evs.iter().any(|e| e["kind"] == "skill.invoked")).then_some(evs)
    })
    .await;
    let after = stored.last().unwrap()["seq"].as_u64().unwrap() / 2;
    assert!(after >= 1);

    let mut c = Client::connected(&gw, &gw.key).await;
    let r = c
        .call(
            "sessions.subscribe",
            json!({"key": key, "after_seq": after}),
        )
        .await;
    assert_eq!(r["payload"]["after_seq"], after, "{r}");
    let head = r["payload"]["head"].as_u64().unwrap();
    let mut evs = Vec::new();
    while count(&evs, "run.finished") < runs {
        evs.extend(c.events_until(|e| e["event"] == "run.finished").await);
    }
    assert!(
        head < seqs(&evs).last().copied().unwrap(),
        "live events came after the replay (head {head})"
    );
    assert!(evs.iter().all(|e| e["payload"]["key"] == key));
    let got = seqs(&evs);
    assert_eq!(
        got,
        ((after + 1)..=(after + got.len() as u64)).collect::<Vec<_>>(),
        "contiguous, no gap, no duplicate"
    );
    // Exactly what the store has, event for event.
    let rest: Vec<Value> = rest_events(&gw, key)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > after)
        .collect();
    assert_eq!(rest.len(), evs.len());
    for (ws, stored) in evs.iter().zip(&rest) {
        assert_eq!(ws["payload"]["id"], stored["id"]);
        assert_eq!(ws["event"], stored["kind"]);
        assert_eq!(ws["seq"], stored["seq"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_drives_runs_jobs_and_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path().join("skills");
    write_skill(&skills);
    let gw = Gateway::builder()
        .dir(dir)
        .env("RAUSKU_SKILLS_DIR", &skills.display().to_string())
        .start()
        .await;
    let (_, operator) = gw.create_key("op", "operator").await;
    let mut c = Client::connected(&gw, &operator).await;

    // A bare key is a console session; the answer comes once the message is durable.
    let r = c
        .call(
            "sessions.send",
            json!({"key": "ops", "text": "/run echo {\"x\": 1}"}),
        )
        .await;
    assert_eq!(r["payload"]["key"], "console:ops", "{r}");
    assert_eq!(r["payload"]["seq"], 1);
    let r = c.call("sessions.subscribe", json!({"key": "ops"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let evs = c.events_until(|e| e["event"] == "run.finished").await;
    let observed = evs.iter().find(|e| e["event"] == "skill.observed").unwrap();
    assert_eq!(
        observed["payload"]["data"]["observation"]["output"],
        json!({"x": 1})
    );
    let r = gw.get("/v1/sessions/console%3Aops").await;
    assert_eq!(r.json["channel"], "console", "{}", r.text);

    // It steers other channels' sessions too.
    let r = c
        .call(
            "sessions.send",
            json!({"key": "rest:elsewhere", "text": "/help"}),
        )
        .await;
    assert_eq!(r["payload"]["key"], "rest:elsewhere", "{r}");

    // A job's stream, until it ends.
    let job = gw
        .create_job(json!({"type": "echo", "input": {"y": 2}}))
        .await;
    let id = job["id"].as_str().unwrap();
    let r = c.call("jobs.subscribe", json!({ "id": id })).await;
    assert_eq!(r["payload"]["job_id"], id, "{r}");
    let evs = c.events_until(|e| e["event"] == "subscription.ended").await;
    assert_eq!(
        evs.last().unwrap()["payload"]["state"],
        "succeeded",
        "{evs:?}"
    );
    assert!(evs.iter().any(|e| e["event"] == "job.succeeded"));

    // An approval parks the run; resolving it from the console releases it, once.
    c.call(
        "sessions.send",
        json!({"key": "ops", "text": "/run prod-deploy {\"env\": \"staging\"}"}),
    )
    .await;
    c.events_until(|e| e["event"] == "approval.requested").await;
    let r = c.call("approvals.list", json!({"state": "pending"})).await;
    let approvals = r["payload"]["approvals"].as_array().unwrap().clone();
    assert_eq!(approvals.len(), 1, "{r}");
    assert_eq!(approvals[0]["skill"], "prod-deploy");
    let approval = approvals[0]["id"].clone();
    let r = c
        .call(
            "approvals.resolve",
            json!({"id": approval, "decision": "approve", "note": "go"}),
        )
        .await;
    assert_eq!(r["payload"]["state"], "approved", "{r}");
    assert_eq!(r["payload"]["decided_by"], "op");
    let evs = c.events_until(|e| e["event"] == "run.finished").await;
    let observed = evs.iter().find(|e| e["event"] == "skill.observed").unwrap();
    assert_eq!(
        observed["payload"]["data"]["observation"]["status"],
        "succeeded"
    );
    let r = c
        .call(
            "approvals.resolve",
            json!({"id": approval, "decision": "deny"}),
        )
        .await;
    assert_eq!(error_code(&r), "invalid_state");

    // Interrupting an idle session says so.
    let r = c.call("sessions.interrupt", json!({"key": "ops"})).await;
    assert_eq!(r["payload"]["interrupted"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_lagged_while_a_fast_one_keeps_up() {
    let gw = Gateway::builder()
        .env("RAUSKU_CONSOLE_QUEUE", "64")
        .env("RAUSKU_RATE_LIMIT_PER_SEC", "100000")
        .env("RAUSKU_RATE_LIMIT_BURST", "100000")
        .start()
        .await;
    let key = "rest:load";
    gw.say(key, "/help").await;

    // The fast client reads everything, in its own task.
    let mut fast = Client::connected(&gw, &gw.key).await;
    let r = fast.call("sessions.subscribe", json!({"key": key})).await;
    assert_eq!(r["ok"], true, "{r}");
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(None::<usize>);
    let reader = tokio::spawn(async move {
        let mut events = std::mem::take(&mut fast.events);
        loop {
            let sent = *sent_rx.borrow_and_update();
            if sent.is_some_and(|sent| count(&events, "run.finished") > sent) {
                return events;
            }
            tokio::select! {
                frame = fast.next_json() => {
                    if frame["event"] != "tick" {
                        events.push(frame);
                    }
                }
                _ = sent_rx.changed() => {}
            }
        }
    });

    // The slow client subscribes, then reads nothing for a while.
    let mut slow = Client::open_with(&gw, Some(4096)).await;
    let r = slow.call("connect", json!({ "token": gw.key })).await;
    assert_eq!(r["ok"], true, "{r}");
    slow.text(
        json!({"type": "req", "id": "sub", "method": "sessions.subscribe", "params": {"key": key}})
            .to_string(),
    )
    .await;

    // Many events, until the gateway has dropped the slow subscription.
    let pad = "x".repeat(2048);
    let mut sent = 0;
    while metric(&gw, "rausku_console_lagged_total").await < 1.0 {
        assert!(
            sent < 1500,
            "the slow client never lagged after {sent} messages"
        );
        let batch = (0..50).map(|i| {
            let text = format!(r#"/run echo {{"i": {}, "pad": "{pad}"}}"#, sent + i);
            let gw = &gw;
            async move { gw.say(key, &text).await }
        });
        futures_util::future::join_all(batch).await;
        sent += 50;
        // Let the runs happen before looking again (messages queue up faster than they run).
        wait_for("the batch to run", DEADLINE, || async {
            let r = gw.get(&format!("/v1/sessions/{}", session_path(key))).await;
            (r.json["runs"].as_u64() == Some(sent as u64 + 1) && r.json["state"] == "idle")
                .then_some(())
        })
        .await;
    }
    sent_tx.send(Some(sent)).unwrap();
    let fast_events = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the fast client saw every run finish")
        .unwrap();
    assert_eq!(count(&fast_events, "lagged"), 0, "the fast client kept up");
    let all = seqs(&fast_events);
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "every event, once, in order"
    );
    assert_eq!(count(&fast_events, "run.finished"), sent + 1);

    // The slow client reads again: its answer, what was queued, then `lagged`.
    let r = slow.response(&json!("sub")).await;
    assert_eq!(r["ok"], true, "{r}");
    let evs = slow.events_until(|e| e["event"] == "lagged").await;
    let (lagged, events) = evs.split_last().unwrap();
    assert_eq!(lagged["payload"]["key"], key, "{lagged}");
    let got = seqs(events);
    assert!(
        got.len() < all.len(),
        "the slow client was dropped before the end"
    );
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    assert_eq!(lagged["payload"]["last_seq"], json!(got.len()), "{lagged}");

    // From `last_seq` it catches up (subscribing again should it lag again).
    let end = all.len() as u64;
    let mut last = got.len() as u64;
    while last < end {
        let r = slow
            .call("sessions.subscribe", json!({"key": key, "after_seq": last}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        let evs = slow
            .events_until(|e| e["event"] == "lagged" || e["seq"].as_u64() == Some(end))
            .await;
        let got = seqs(&evs);
        assert_eq!(
            got,
            ((last + 1)..=(last + got.len() as u64)).collect::<Vec<_>>()
        );
        last += got.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_closes_when_the_gateway_shuts_down() {
    let mut gw = Gateway::start().await;
    let mut c = Client::connected(&gw, &gw.key.clone()).await;
    gw.say("rest:x", "/help").await;
    c.call("sessions.subscribe", json!({"key": "rest:x"})).await;
    let started = Instant::now();
    let status = gw.sigterm(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the open console held up shutdown"
    );
    // Whatever was queued, then the close with 1001 ("going away").
    loop {
        match c.next().await {
            Frame::Json(_) => continue,
            Frame::Closed(close) => {
                assert_eq!(close.map(|(code, _)| code), Some(1001));
                break;
            }
        }
    }
}
