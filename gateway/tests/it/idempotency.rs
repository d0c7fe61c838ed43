//! `Idempotency-Key`: replays for the same body, conflicts for another, scoped per API key,
//! and exactly one job under concurrency.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, Resp, send};

async fn post_raw(gw: &Gateway, key: &str, idem: &str, body: &str) -> Resp {
    send(
        gw.req_as(key, Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .header("idempotency-key", idem)
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn same_key_and_body_replays_other_body_conflicts() {
    let gw = Gateway::start().await;
    let first = post_raw(
        &gw,
        &gw.key,
        "order-1",
        r#"{"type":"echo","input":{"a":1,"b":{"x":true,"y":null}}}"#,
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let id = first.json["id"].as_str().unwrap().to_string();
    assert_eq!(first.json["idempotency_key"], "order-1");

    // Same body with its keys in another order (and other whitespace): the original job.
    let again = post_raw(
        &gw,
        &gw.key,
        "order-1",
        r#"{ "input": {"b": {"y": null, "x": true}, "a": 1}, "type": "echo" }"#,
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["id"], id.as_str());
    assert!(
        again.header("location").is_none()
            || again.header("location") == Some(&format!("/v1/jobs/{id}"))
    );

    // Still a replay after the job has finished.
    gw.wait_state(&id, "succeeded", std::time::Duration::from_secs(10))
        .await;
    let later = post_raw(
        &gw,
        &gw.key,
        "order-1",
        r#"{"type":"echo","input":{"a":1,"b":{"x":true,"y":null}}}"#,
    )
    .await;
    assert_eq!(later.status, 200, "{}", later.text);
    assert_eq!(later.json["id"], id.as_str());
    assert_eq!(
        later.json["state"], "succeeded",
        "the replay shows the job as it is now"
    );

    // Another body under the same key: 409 naming the original job.
    let other = post_raw(
        &gw,
        &gw.key,
        "order-1",
        r#"{"type":"echo","input":{"a":2}}"#,
    )
    .await;
    let details = other.assert_error(409, "idempotency_conflict");
    assert_eq!(details["job_id"], id.as_str());

    // A new key is a new job.
    let fresh = post_raw(
        &gw,
        &gw.key,
        "order-2",
        r#"{"type":"echo","input":{"a":1,"b":{"x":true,"y":null}}}"#,
    )
    .await;
    assert_eq!(fresh.status, 201, "{}", fresh.text);
    assert_ne!(fresh.json["id"], id.as_str());

    // The same key from another API key is that caller's own.
    let (_, ops) = gw.create_key("other-caller", "operator").await;
    let theirs = post_raw(
        &gw,
        &ops,
        "order-1",
        r#"{"type":"echo","input":{"a":1,"b":{"x":true,"y":null}}}"#,
    )
    .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    assert_ne!(theirs.json["id"], id.as_str());
    let theirs_again = post_raw(
        &gw,
        &ops,
        "order-1",
        r#"{"type":"echo","input":{"a":1,"b":{"x":true,"y":null}}}"#,
    )
    .await;
    assert_eq!(theirs_again.status, 200);
    assert_eq!(theirs_again.json["id"], theirs.json["id"]);

    // Invalid requests do not use up a key.
    let bad = post_raw(&gw, &gw.key, "order-3", r#"{"type":"nope"}"#).await;
    bad.assert_error(400, "invalid_input");
    let good = post_raw(&gw, &gw.key, "order-3", r#"{"type":"echo","input":{}}"#).await;
    assert_eq!(good.status, 201, "{}", good.text);

    // Exactly four jobs exist.
    assert_eq!(gw.all_jobs().await.len(), 4);
}

#[tokio::test]
async fn one_hundred_concurrent_requests_make_one_job() {
    let gw = Gateway::builder()
        .env("RAUSKU_RATE_LIMIT_PER_SEC", "10000")
        .env("RAUSKU_RATE_LIMIT_BURST", "10000")
        .start()
        .await;
    let body = json!({"type": "echo", "input": {"payload": "once"}});
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let rb = gw
            .req(Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .header("idempotency-key", "the-one")
            .body(body.to_string());
        tasks.push(tokio::spawn(send(rb)));
    }
    let mut created = 0;
    let mut replayed = 0;
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            200 => {
                assert_eq!(r.header("idempotent-replayed"), Some("true"));
                replayed += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
        ids.insert(r.json["id"].as_str().unwrap().to_string());
    }
    assert_eq!((created, replayed), (1, 99));
    assert_eq!(ids.len(), 1, "{ids:?}");
    let jobs = gw.all_jobs().await;
    assert_eq!(jobs.len(), 1, "exactly one job stored");
    assert!(ids.contains(jobs[0]["id"].as_str().unwrap()));
}
