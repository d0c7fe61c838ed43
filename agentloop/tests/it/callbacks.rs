//! Callbacks: signed POSTs to a real HTTP server, retries, refusals, no redirects.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentloop::callbacks::sign;
use agentloop::{CallbackConfig, CreateJob, JobError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;
use skills::net::NetPolicy;
use store::{Event, Job, JobState};

use crate::support::{Harness, Options, eventually, fast_backoff};

const SECRET: &[u8] = b"callback-secret";

/// One request the server received.
#[derive(Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A callback target: answers each request with the next scripted status (200 when the script
/// is empty); `/moved` always redirects to `/elsewhere`.
#[derive(Clone, Default)]
struct Target {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Target {
    async fn serve(script: &[u16]) -> (Target, u16) {
        let target = Target {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Default::default()
        };
        let app = Router::new()
            .fallback(any(record))
            .with_state(target.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (target, port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn record(
    State(target): State<Target>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    target.hits.lock().unwrap().push(Hit {
        path: uri.path().to_string(),
        headers,
        body,
    });
    if uri.path() == "/moved" {
        return (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response();
    }
    let status = target.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap().into_response()
}

fn callbacks(allowlist: &[&str], allow_private: bool, max_attempts: u32) -> CallbackConfig {
    let net = NetPolicy {
        allowlist: allowlist.iter().map(|s| s.to_string()).collect(),
        allow_private,
    };
    CallbackConfig {
        max_attempts,
        backoff: fast_backoff(),
        timeout: Duration::from_secs(5),
        ..CallbackConfig::new(net, SECRET.to_vec())
    }
}

async fn harness(callbacks: CallbackConfig) -> Harness {
    Harness::start_with(Options {
        callbacks,
        ..Options::default()
    })
    .await
}

fn echo_with_callback(h: &Harness, url: String) -> Job {
    h.create(CreateJob {
        job_type: "echo".into(),
        input: json!({"x": 1}),
        callback_url: Some(url),
        ..Default::default()
    })
}

fn callback_events(events: &[Event]) -> Vec<(String, serde_json::Value)> {
    events
        .iter()
        .filter(|e| e.kind.starts_with("callback."))
        .map(|e| (e.kind.clone(), e.data.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_posted_signed_to_its_allowlisted_callback() {
    let (target, port) = Target::serve(&[]).await;
    let h = harness(callbacks(&["127.0.0.1"], true, 3)).await;
    let job = echo_with_callback(&h, format!("http://127.0.0.1:{port}/hook"));
    h.wait_state(job.id, JobState::Succeeded).await;
    let events = h.wait_event(job.id, "callback.delivered").await;

    let hits = target.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(hit.path, "/hook");
    let signature = hit
        .headers
        .get("x-rausku-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(signature, sign(SECRET, &hit.body));
    assert_eq!(hit.headers.get("x-rausku-event").unwrap(), "job.succeeded");
    assert_eq!(
        hit.headers
            .get("x-rausku-job-id")
            .unwrap()
            .to_str()
            .unwrap(),
        job.id.to_string()
    );
    assert_eq!(hit.headers.get("x-rausku-delivery-attempt").unwrap(), "1");
    assert_eq!(hit.headers.get("content-type").unwrap(), "application/json");
    let body: Job = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(
        (body.id, body.state, body.output),
        (job.id, JobState::Succeeded, Some(json!({"x": 1})))
    );

    let cb = callback_events(&events);
    assert_eq!(cb.len(), 1);
    assert_eq!(cb[0].1["status"], 200);
    assert_eq!(cb[0].1["attempt"], 1);
    let snap = h.runtime.callback_snapshot().await.unwrap();
    assert_eq!(
        (snap.delivered, snap.failed_attempts, snap.abandoned),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_retried_until_it_accepts() {
    let (target, port) = Target::serve(&[500, 500]).await;
    let h = harness(callbacks(&["127.0.0.1"], true, 5)).await;
    let job = echo_with_callback(&h, format!("http://127.0.0.1:{port}/hook"));
    let events = h.wait_event(job.id, "callback.delivered").await;

    let cb = callback_events(&events);
    let kinds: Vec<_> = cb.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["callback.failed", "callback.failed", "callback.delivered"]
    );
    assert_eq!(cb[0].1["status"], 500);
    assert!(cb[0].1["retry_in_ms"].is_u64(), "{:?}", cb[0].1);
    assert_eq!(cb[2].1["attempt"], 3);
    let attempts: Vec<_> = target
        .hits()
        .iter()
        .map(|h| {
            h.headers
                .get("x-rausku-delivery-attempt")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let snap = h.runtime.callback_snapshot().await.unwrap();
    assert_eq!(
        (snap.delivered, snap.failed_attempts, snap.abandoned),
        (1, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_resolving_to_a_private_address_is_refused_for_good_without_allow_private() {
    let (target, port) = Target::serve(&[]).await;
    let h = harness(callbacks(&["localhost"], false, 5)).await;
    // `localhost` passes the allowlist; what it resolves to is refused at delivery.
    let job = echo_with_callback(&h, format!("http://localhost:{port}/hook"));
    let events = h.wait_event(job.id, "callback.abandoned").await;
    let cb = callback_events(&events);
    let kinds: Vec<_> = cb.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["callback.failed", "callback.abandoned"],
        "refused at once, not retried"
    );
    assert_eq!(cb[1].1["reason"], "the target is refused");
    assert!(
        cb[0].1["error"].as_str().unwrap().contains("private"),
        "{:?}",
        cb[0].1
    );
    assert!(target.hits().is_empty(), "nothing was sent");
    assert_eq!(h.runtime.callback_snapshot().await.unwrap().abandoned, 1);

    // An IP literal in a private range is refused when the job is created.
    match h.runtime.jobs.create(
        CreateJob {
            job_type: "echo".into(),
            input: json!({}),
            callback_url: Some(format!("http://127.0.0.1:{port}/hook")),
            ..Default::default()
        },
        None,
    ) {
        Err(JobError::Invalid { field, .. }) => assert_eq!(field, "callback_url"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_is_refused_when_no_callback_host_is_allowed() {
    let h = Harness::start().await;
    let err = h
        .runtime
        .jobs
        .create(
            CreateJob {
                job_type: "echo".into(),
                input: json!({}),
                callback_url: Some("https://example.com/hook".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
    match &err {
        JobError::Invalid { field, message } => {
            assert_eq!(field, "callback_url");
            assert!(message.contains("RAUSKU_CALLBACK_ALLOWLIST"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        h.store
            .list_jobs(&store::JobFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let (target, port) = Target::serve(&[]).await;
    let h = harness(callbacks(&["127.0.0.1"], true, 1)).await;
    let job = echo_with_callback(&h, format!("http://127.0.0.1:{port}/moved"));
    let events = h.wait_event(job.id, "callback.abandoned").await;
    let cb = callback_events(&events);
    assert_eq!(cb[0].0, "callback.failed");
    assert_eq!(cb[0].1["status"], 302);
    assert!(
        cb[0].1["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{:?}",
        cb[0].1
    );
    assert_eq!(cb[1].1["reason"], "no attempts left");
    let paths: Vec<_> = target.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/moved"], "the redirect target was never requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_called_back_too() {
    let (target, port) = Target::serve(&[]).await;
    let h = harness(callbacks(&["127.0.0.1"], true, 3)).await;
    let job = h.create(CreateJob {
        job_type: "block".into(),
        input: json!({}),
        callback_url: Some(format!("http://127.0.0.1:{port}/hook")),
        ..Default::default()
    });
    crate::support::wait_probe("the attempt to start", &h.block, |p| p.started() == 1).await;
    h.runtime.jobs.cancel(job.id).await.unwrap();
    h.wait_event(job.id, "callback.delivered").await;
    let hits = target.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].headers.get("x-rausku-event").unwrap(),
        "job.cancelled"
    );
    eventually("the dispatcher to be idle", || async {
        (h.runtime.callback_snapshot().await.unwrap().in_flight == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_callback_is_delivered_after_a_restart() {
    let (target, port) = Target::serve(&[500]).await;
    // The first runtime would retry only after a minute: it is restarted long before.
    let slow = CallbackConfig {
        backoff: agentloop::Backoff {
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
            jitter: 0.0,
        },
        ..callbacks(&["127.0.0.1"], true, 5)
    };
    let h = harness(slow).await;
    let job = echo_with_callback(&h, format!("http://127.0.0.1:{port}/hook"));
    h.wait_event(job.id, "callback.failed").await;

    let h = h
        .restart(Options {
            callbacks: callbacks(&["127.0.0.1"], true, 5),
            ..Options::default()
        })
        .await;
    let events = h.wait_event(job.id, "callback.delivered").await;
    let cb = callback_events(&events);
    let kinds: Vec<_> = cb.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["callback.failed", "callback.delivered"]);
    assert_eq!(
        cb[1].1["attempt"], 2,
        "the attempt count survived the restart"
    );
    let attempts: Vec<_> = target
        .hits()
        .iter()
        .map(|h| {
            h.headers
                .get("x-rausku-delivery-attempt")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(attempts, ["1", "2"]);
}
