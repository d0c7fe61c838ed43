//! `memory.write` and `memory.search` through the binary.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Gateway;

async fn run(gw: &Gateway, job_type: &str, input: Value) -> Value {
    let job = gw
        .create_job(json!({"type": job_type, "input": input}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = gw.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done["output"].clone()
}

#[tokio::test]
async fn remembers_and_recalls_across_jobs() {
    let gw = Gateway::start().await;
    let g = run(
        &gw,
        "memory.write",
        json!({"text": "prod deploys need approval", "tags": ["policy"]}),
    )
    .await;
    assert_eq!(g["scope"], "global", "{g}");
    let s = run(
        &gw,
        "memory.write",
        json!({"text": "this session deploys payments", "session": "s1"}),
    )
    .await;
    assert_eq!(s["scope"], "session:s1", "{s}");

    let out = run(
        &gw,
        "memory.search",
        json!({"query": "deploys policy", "session": "s1"}),
    )
    .await;
    let texts: Vec<_> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "prod deploys need approval",
            "this session deploys payments"
        ],
        "{out}"
    );

    // Bad inputs are a 400 naming the field, before any job exists.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "memory.write", "input": {"text": "x", "scope": "session"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.json["error"]["details"]["field"], "input.session",
        "{}",
        r.text
    );
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "memory.search", "input": {"query": "x", "limit": 500}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.json["error"]["details"]["field"], "input.limit",
        "{}",
        r.text
    );
}
