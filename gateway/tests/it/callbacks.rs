//! Job callbacks: refused without an allowlist, signed with HMAC-SHA256, retried with backoff,
//! refused for private addresses unless allowed. The receiver is an axum server in the test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Gateway, SseReader, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    /// Serves on 127.0.0.1:0; returns the receiver and its port.
    async fn start(script: &[u16]) -> (Receiver, u16) {
        let rx = Receiver {
            hits: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn hook(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.hits.lock().unwrap().push(Hit { headers, body });
    let status = rx.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

fn expected_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Waits for an event of `kind` on the job's stream and returns it.
async fn wait_event(gw: &Gateway, id: &str, kind: &str) -> Value {
    wait_for(&format!("{kind} on job {id}"), DEADLINE, || async {
        gw.job_events(id)
            .await
            .into_iter()
            .find(|e| e["kind"] == kind)
    })
    .await
}

#[tokio::test]
async fn without_an_allowlist_a_callback_is_refused() {
    let gw = Gateway::start().await;
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "echo", "callback_url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    let details = r.assert_error(400, "invalid_input");
    assert_eq!(details["field"], "callback_url");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RAUSKU_CALLBACK_ALLOWLIST"),
        "{}",
        r.text
    );
    assert!(gw.all_jobs().await.is_empty());
}

#[tokio::test]
async fn a_signed_callback_is_delivered_and_recorded() {
    let secret = "it-callback-secret-0123456789";
    let (rx, port) = Receiver::start(&[]).await;
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_ALLOWLIST", "127.0.0.1")
        .env("RAUSKU_CALLBACK_ALLOW_PRIVATE", "true")
        .env("RAUSKU_CALLBACK_SECRET", secret)
        .start()
        .await;

    // A host that is not allowlisted is refused at creation.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "echo", "callback_url": "http://example.com/hook"}),
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_input")["field"],
        "callback_url"
    );
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "echo", "callback_url": "ftp://127.0.0.1/hook"}),
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_input")["field"],
        "callback_url"
    );

    let url = format!("http://127.0.0.1:{port}/hook");
    let job = gw
        .create_job(json!({"type": "echo", "input": {"k": "v"}, "callback_url": url}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["callback_url"], url.as_str());

    let delivered = wait_event(&gw, &id, "callback.delivered").await;
    assert_eq!(delivered["data"]["attempt"], 1, "{delivered}");
    assert_eq!(delivered["data"]["status"], 200, "{delivered}");
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "exactly one POST");
    let hit = &hits[0];
    let sig = hit
        .headers
        .get("x-rausku-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    assert_eq!(
        sig,
        expected_signature(secret, &hit.body),
        "HMAC-SHA256 of the body under the secret"
    );
    assert!(
        hit.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = serde_json::from_slice(&hit.body).expect("the body is the job as JSON");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["output"], json!({"k": "v"}));
    // No other delivery events for this job.
    let kinds: Vec<String> = gw
        .job_events(&id)
        .await
        .iter()
        .filter_map(|e| {
            e["kind"]
                .as_str()
                .filter(|k| k.starts_with("callback."))
                .map(String::from)
        })
        .collect();
    assert_eq!(kinds, vec!["callback.delivered"]);

    // The secret never shows in the runtime view.
    let r = gw.get("/v1/runtime").await;
    assert!(!r.text.contains(secret), "secret leaked in /v1/runtime");
    assert_eq!(r.json["callbacks"]["delivered"], 1, "{}", r.text);
}

#[tokio::test]
async fn a_failed_delivery_is_retried() {
    let secret = "it-retry-secret";
    let (rx, port) = Receiver::start(&[500]).await;
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_ALLOWLIST", "127.0.0.1")
        .env("RAUSKU_CALLBACK_ALLOW_PRIVATE", "true")
        .env("RAUSKU_CALLBACK_SECRET", secret)
        .start()
        .await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let job = gw
        .create_job(json!({"type": "echo", "input": {}, "callback_url": url}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();

    let delivered = wait_event(&gw, &id, "callback.delivered").await;
    assert_eq!(delivered["data"]["attempt"], 2, "{delivered}");
    let events = gw.job_events(&id).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "callback.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["data"]["attempt"], 1);
    assert_eq!(failed[0]["data"]["status"], 500);
    assert!(failed[0]["data"]["retry_in_ms"].is_u64(), "{}", failed[0]);
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[1].headers.get("x-rausku-delivery-attempt").unwrap(),
        "2"
    );
    for hit in &hits {
        let sig = hit
            .headers
            .get("x-rausku-signature")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(sig, expected_signature(secret, &hit.body));
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let (rx, port) = Receiver::start(&[]).await;
    // Both hosts are allowlisted, but private addresses are not allowed.
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_ALLOWLIST", "127.0.0.1,localhost")
        .start()
        .await;

    // An IP literal in a private range is refused when the job is created.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "echo", "callback_url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    let details = r.assert_error(400, "invalid_input");
    assert_eq!(details["field"], "callback_url");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{}",
        r.text
    );

    // A name is accepted at creation (it may resolve anywhere later), and refused at delivery
    // because it resolves only to loopback: abandoned, nothing sent.
    let job = gw
        .create_job(
            json!({"type": "echo", "callback_url": format!("http://localhost:{port}/hook")}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let abandoned = wait_event(&gw, &id, "callback.abandoned").await;
    assert_eq!(
        abandoned["data"]["attempts"], 1,
        "refused for good on the first attempt: {abandoned}"
    );
    assert!(
        gw.job_events(&id)
            .await
            .iter()
            .all(|e| e["kind"] != "callback.delivered")
    );
    assert!(rx.hits().is_empty(), "nothing reached the receiver");
    // The job itself succeeded; only its callback was refused.
    assert_eq!(gw.job(&id).await["state"], "succeeded");
}

/// Resuming a finished job's stream after its terminal event, when only callback events
/// follow, sends the job and ends (it used to stay open forever).
#[tokio::test]
async fn resuming_a_finished_job_stream_after_its_end_ends() {
    let (_rx, port) = Receiver::start(&[]).await;
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_ALLOWLIST", "127.0.0.1")
        .env("RAUSKU_CALLBACK_ALLOW_PRIVATE", "true")
        .start()
        .await;
    let job = gw
        .create_job(
            json!({"type": "echo", "callback_url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_event(&gw, &id, "callback.delivered").await;
    let events = gw.job_events(&id).await;
    let end = events
        .iter()
        .find(|e| e["kind"] == "job.succeeded")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mut sse = SseReader::open(
        &gw,
        &format!("/v1/jobs/{id}/stream"),
        &[("last-event-id", &end.to_string())],
    )
    .await;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while let Some(f) = sse.next(deadline).await {
        frames.push(f);
    }
    assert_eq!(frames[0].json()["state"], "succeeded", "{frames:?}");
    assert!(
        frames[1..].iter().all(|f| f.id.unwrap() > end),
        "{frames:?}"
    );
}
