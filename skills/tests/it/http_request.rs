//! `http.request` against a real local server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use skills::builtin::HttpRequest;
use skills::net::NetPolicy;
use skills::{AttemptOutcome, Handler, JobContext, JobLog};
use store::{JobId, LogLevel};

/// A [`JobLog`] that keeps its lines.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl JobLog for Lines {
    fn log(&self, _level: LogLevel, message: String) {
        self.0.lock().unwrap().push(message);
    }
}

fn ctx(log: Arc<Lines>) -> JobContext {
    JobContext {
        job_id: JobId::new(),
        job_type: "http.request".into(),
        attempt: 1,
        max_attempts: 3,
        timeout_ms: 10_000,
        config: Value::Null,
        log,
    }
}

/// Serves a few routes on 127.0.0.1 and returns the address.
async fn serve() -> SocketAddr {
    let app = Router::new()
        .route(
            "/json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"ok":true,"n":[1,2]}"#,
                )
            }),
        )
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "it broke") }),
        )
        .route("/busy", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such thing").into_response() }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/json")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn handler(hosts: &[&str], allow_private: bool) -> HttpRequest {
    let policy = NetPolicy {
        allowlist: hosts.iter().map(|h| h.to_string()).collect(),
        allow_private,
    };
    HttpRequest::new(policy, 1 << 20)
}

async fn call(h: &HttpRequest, input: Value) -> (AttemptOutcome, Vec<String>) {
    h.validate(&Value::Null, &input).unwrap();
    let log = Arc::new(Lines::default());
    let out = h.run(ctx(log.clone()), input).await;
    let lines = log.0.lock().unwrap().clone();
    (out, lines)
}

fn failure(out: AttemptOutcome) -> (String, bool) {
    match out {
        AttemptOutcome::Failed { error, retryable } => (error, retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn json_response_is_parsed_and_logged() {
    let addr = serve().await;
    let h = handler(&["127.0.0.1"], true);
    let (out, lines) = call(&h, json!({"url": format!("http://{addr}/json")})).await;
    let AttemptOutcome::Succeeded(out) = out else {
        panic!("{out:?}")
    };
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({"ok": true, "n": [1, 2]}));
    assert_eq!(out["truncated"], false);
    assert_eq!(out["headers"]["content-type"], "application/json");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("GET http://127.0.0.1:"), "{lines:?}");
    assert!(lines[1].contains("200 OK"), "{lines:?}");
}

#[tokio::test]
async fn response_is_truncated_at_the_cap() {
    let addr = serve().await;
    let h = handler(&["127.0.0.1"], true);
    let input = json!({"url": format!("http://{addr}/big"), "max_response_bytes": 100});
    let (out, _) = call(&h, input).await;
    let AttemptOutcome::Succeeded(out) = out else {
        panic!("{out:?}")
    };
    assert_eq!(out["body"], "x".repeat(100));
    assert_eq!(out["truncated"], true);
}

#[tokio::test]
async fn server_errors_and_429_are_retryable() {
    let addr = serve().await;
    let h = handler(&["127.0.0.1"], true);
    let (error, retryable) = failure(
        call(&h, json!({"url": format!("http://{addr}/boom")}))
            .await
            .0,
    );
    assert!(retryable);
    assert!(
        error.contains("500") && error.contains("it broke"),
        "{error}"
    );
    let (_, retryable) = failure(
        call(&h, json!({"url": format!("http://{addr}/busy")}))
            .await
            .0,
    );
    assert!(retryable);
}

#[tokio::test]
async fn client_errors_are_final_unless_fail_on_status_is_off() {
    let addr = serve().await;
    let h = handler(&["127.0.0.1"], true);
    let url = format!("http://{addr}/missing");
    let (error, retryable) = failure(call(&h, json!({"url": url})).await.0);
    assert!(!retryable);
    assert!(error.contains("404"), "{error}");

    let (out, _) = call(&h, json!({"url": url, "fail_on_status": false})).await;
    let AttemptOutcome::Succeeded(out) = out else {
        panic!("{out:?}")
    };
    assert_eq!(out["status"], 404);
    assert_eq!(out["body"], "no such thing");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let addr = serve().await;
    let h = handler(&["127.0.0.1"], true);
    let url = format!("http://{addr}/moved");
    let (error, retryable) = failure(call(&h, json!({"url": url})).await.0);
    assert!(!retryable);
    assert!(
        error.contains("302") && error.contains("redirects are not followed"),
        "{error}"
    );

    let (out, _) = call(&h, json!({"url": url, "fail_on_status": false})).await;
    let AttemptOutcome::Succeeded(out) = out else {
        panic!("{out:?}")
    };
    assert_eq!(out["status"], 302);
    assert_eq!(out["headers"]["location"], "/json");
}

#[tokio::test]
async fn hosts_off_the_allowlist_are_refused_at_validation() {
    let addr = serve().await;
    let h = handler(&["api.example.com"], true);
    let err = h
        .validate(&Value::Null, &json!({"url": format!("http://{addr}/json")}))
        .unwrap_err();
    assert_eq!(err.field, "input.url");
    assert!(err.message.contains("not on the allowlist"), "{err}");
    let out = h
        .run(
            ctx(Arc::default()),
            json!({"url": format!("http://{addr}/json")}),
        )
        .await;
    assert!(!failure(out).1, "a refused host is not retried");
}

#[tokio::test]
async fn loopback_is_refused_by_the_resolver_unless_private_is_allowed() {
    let addr = serve().await;
    let url = format!("http://localhost:{}/json", addr.port());

    // `localhost` is allowlisted and passes validation: the refusal happens at connect time.
    let h = handler(&["localhost"], false);
    let (error, retryable) = failure(call(&h, json!({"url": url})).await.0);
    assert!(!retryable, "{error}");
    assert!(
        error.contains("resolves only to internal addresses"),
        "{error}"
    );

    let h = handler(&["localhost"], true);
    let (out, _) = call(&h, json!({"url": url})).await;
    assert!(matches!(out, AttemptOutcome::Succeeded(_)), "{out:?}");
}
