//! `/health`, `/v1/runtime`, `/metrics` and `/v1/openapi.json`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, send};

#[tokio::test]
async fn health_has_its_shape_without_a_key() {
    let gw = Gateway::start().await;
    let r = send(gw.raw(Method::GET, "/health")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ok");
    assert_eq!(r.json["store"], "ok");
    assert_eq!(r.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.json["uptime_s"].is_u64(), "{}", r.text);
}

#[tokio::test]
async fn runtime_shows_config_counts_and_supervisor_but_no_secrets() {
    let callback_secret = "it-cb-secret-must-not-leak";
    let github_secret = "it-gh-webhook-secret-must-not-leak";
    let github_token = "it-gh-token-must-not-leak";
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_SECRET", callback_secret)
        .env("RAUSKU_GITHUB_WEBHOOK_SECRET", github_secret)
        .env("RAUSKU_GITHUB_TOKEN", github_token)
        .env("RAUSKU_CALLBACK_ALLOWLIST", "hooks.example.com")
        .start()
        .await;
    let ok = gw.create_job(json!({"type": "echo", "input": {}})).await;
    let bad = gw
        .create_job(json!({"type": "flaky", "input": {"fail_times": 9}, "max_attempts": 1}))
        .await;
    gw.wait_state(
        ok["id"].as_str().unwrap(),
        "succeeded",
        Duration::from_secs(10),
    )
    .await;
    gw.wait_state(
        bad["id"].as_str().unwrap(),
        "failed",
        Duration::from_secs(10),
    )
    .await;

    let r = gw.get("/v1/runtime").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for secret in [
        gw.admin_key.as_deref().unwrap(),
        callback_secret,
        github_secret,
        github_token,
    ] {
        assert!(
            !r.text.contains(secret),
            "a secret leaked into /v1/runtime: {}",
            r.text
        );
    }
    let rt = &r.json;
    assert_eq!(rt["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(rt["config"]["api_key_configured"], true);
    assert_eq!(rt["config"]["github_webhook_configured"], true);
    assert_eq!(
        rt["config"]["callback_allowlist"],
        json!(["hooks.example.com"])
    );
    assert_eq!(rt["config"]["retry_base_ms"], 20);
    assert_eq!(rt["config"]["listen"], "127.0.0.1:0");
    assert_eq!(rt["jobs"]["succeeded"], 1, "{}", rt["jobs"]);
    assert_eq!(rt["jobs"]["failed"], 1, "{}", rt["jobs"]);
    assert_eq!(rt["jobs"]["queued"], 0, "{}", rt["jobs"]);
    let sup = &rt["supervisor"];
    assert!(sup.is_object(), "supervisor snapshot: {}", r.text);
    assert_eq!(sup["running"], 0);
    assert!(sup["max_concurrency"].as_u64().unwrap() > 0);
    for t in ["echo", "sleep", "flaky"] {
        assert!(
            rt["job_types"].as_array().unwrap().iter().any(|x| x == t),
            "{}",
            rt["job_types"]
        );
    }
    assert!(
        rt["store"]["durable_global_seq"].as_u64().unwrap() > 0,
        "{}",
        rt["store"]
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let gw = Gateway::start().await;
    let job = gw.create_job(json!({"type": "echo", "input": {}})).await;
    gw.wait_state(
        job["id"].as_str().unwrap(),
        "succeeded",
        Duration::from_secs(10),
    )
    .await;
    let r = send(gw.raw(Method::GET, "/metrics")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        r.header("content-type")
    );
    assert!(r.text.contains("# TYPE rausku_jobs gauge"), "{}", r.text);
    let line = r
        .text
        .lines()
        .find(|l| l.starts_with("rausku_jobs{state=\"succeeded\"}"))
        .unwrap_or_else(|| panic!("no succeeded gauge in {}", r.text));
    assert_eq!(line.split_whitespace().last(), Some("1"), "{line}");
    // HTTP latency is labelled with the matched route, not the raw path.
    assert!(
        r.text
            .lines()
            .any(|l| l.starts_with("rausku_http_request_duration_seconds")
                && l.contains("route=\"/v1/jobs\"")
                && l.contains("method=\"POST\"")),
        "no HTTP latency for POST /v1/jobs in {}",
        r.text
    );
    for st in ["queued", "running", "retrying", "failed", "cancelled"] {
        assert!(
            r.text.contains(&format!("rausku_jobs{{state=\"{st}\"}}")),
            "{st}: {}",
            r.text
        );
    }
    assert!(
        r.text.contains("rausku_http_request_duration_seconds"),
        "{}",
        r.text
    );
    // Every sample line is `name{labels} value` or `name value`.
    for l in r
        .text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = l.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad sample {l:?}"
        );
    }
}

/// Every route `app.rs` defines, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/retry"),
    ("get", "/v1/jobs/{id}/logs"),
    ("get", "/v1/jobs/{id}/stream"),
    ("get", "/v1/job-types"),
    ("post", "/v1/job-types"),
    ("get", "/v1/job-types/{name}"),
    ("patch", "/v1/job-types/{name}"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys"),
    ("delete", "/v1/keys/{id}"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/runtime"),
    ("post", "/v1/runtime/reload"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{key}"),
    ("post", "/v1/sessions/{key}/messages"),
    ("post", "/v1/sessions/{key}/interrupt"),
    ("get", "/v1/sessions/{key}/events"),
    ("get", "/v1/sessions/{key}/stream"),
    ("get", "/v1/approvals"),
    ("post", "/v1/approvals/{id}"),
    ("get", "/v1/console"),
    ("get", "/v1/openapi.json"),
    ("post", "/webhooks/github"),
];

#[tokio::test]
async fn openapi_lists_every_route() {
    // With a webhook secret, so that the webhook route is served too.
    let gw = Gateway::builder()
        .env("RAUSKU_GITHUB_WEBHOOK_SECRET", "it-openapi")
        .start()
        .await;
    let r = gw.get("/v1/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["openapi"].as_str().unwrap().starts_with('3'),
        "{}",
        r.json["openapi"]
    );
    let paths = r.json["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let op = paths.get(*path).and_then(|p| p.get(*method));
        assert!(
            op.is_some(),
            "{} {path} is missing from the OpenAPI document",
            method.to_uppercase()
        );
    }
    // And nothing that does not exist.
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "documented operations: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // Each route that is served answers (not 404/405) — the list above is the real router.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{id}", "0190d5a0-0000-7000-8000-000000000000")
            .replace("{name}", "echo")
            .replace("{key}", "ops");
        if concrete.ends_with("/stream") {
            continue;
        }
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = send(
            gw.req(m, &concrete)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_ne!(r.status, 405, "{method} {concrete}: {}", r.text);
        if !path.contains('{') {
            assert_ne!(r.status, 404, "{method} {concrete}: {}", r.text);
        }
    }
    // The webhook is authenticated by its signature: no API-key security on it.
    let webhook = &paths["/webhooks/github"]["post"];
    assert_eq!(webhook["security"], json!([{}]), "{webhook}");
    let schemes = &r.json["components"]["securitySchemes"];
    assert!(
        schemes.get("bearer").is_some() && schemes.get("api_key").is_some(),
        "{schemes}"
    );
}
