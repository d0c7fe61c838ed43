//! `/v1/job-types`: built-ins, new types over a handler, PATCH, scopes.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, send, with_json};

#[tokio::test]
async fn built_ins_new_types_patches_and_scopes() {
    let gw = Gateway::start().await;

    let r = gw.get("/v1/job-types").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r.json["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for builtin in ["echo", "sleep", "flaky", "http.request"] {
        assert!(names.contains(&builtin), "{builtin} in {names:?}");
    }
    let handlers = r.json["handlers"].as_array().unwrap();
    assert!(handlers.iter().any(|h| h == "echo"), "{handlers:?}");
    let echo = gw.get("/v1/job-types/echo").await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.json["handler"], "echo");
    assert_eq!(echo.json["enabled"], true);

    // A new type over `echo` with its own defaults.
    let spec = json!({
        "name": "greet",
        "handler": "echo",
        "description": "says hello back",
        "defaults": {"max_attempts": 2, "timeout_ms": 5000},
    });
    let r = gw.post("/v1/job-types", spec.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/v1/job-types/greet"));
    assert_eq!(r.json["name"], "greet");
    assert_eq!(r.json["defaults"]["max_attempts"], 2);
    assert_eq!(r.json["defaults"]["timeout_ms"], 5000);
    let job = gw
        .create_job(json!({"type": "greet", "input": {"hello": 1}}))
        .await;
    assert_eq!(job["type"], "greet");
    assert_eq!(job["max_attempts"], 2, "the type's default");
    assert_eq!(job["timeout_ms"], 5000);
    let done = gw
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({"hello": 1}));

    // Same name again: 409.
    let r = gw.post("/v1/job-types", spec).await;
    assert_eq!(r.assert_error(409, "already_exists")["name"], "greet");
    // A handler that does not exist, a bad name.
    let r = gw
        .post("/v1/job-types", json!({"name": "x1", "handler": "nope"}))
        .await;
    assert_eq!(r.assert_error(400, "invalid_input")["field"], "handler");
    let r = gw
        .post(
            "/v1/job-types",
            json!({"name": "Bad Name!", "handler": "echo"}),
        )
        .await;
    r.assert_error(400, "invalid_input");

    // PATCH defaults and description; later jobs use them.
    let r = gw
        .patch(
            "/v1/job-types/greet",
            json!({"defaults": {"max_attempts": 4}, "description": "v2"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["defaults"]["max_attempts"], 4);
    assert_eq!(
        r.json["defaults"]["timeout_ms"], 5000,
        "untouched fields stay"
    );
    assert_eq!(r.json["description"], "v2");
    let job = gw.create_job(json!({"type": "greet", "input": {}})).await;
    assert_eq!(job["max_attempts"], 4);
    let r = gw
        .patch(
            "/v1/job-types/greet",
            json!({"defaults": {"max_attempts": 0}}),
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_input")["field"],
        "defaults.max_attempts"
    );
    let r = gw
        .patch("/v1/job-types/greet", json!({"handler": "sleep"}))
        .await;
    r.assert_error(400, "invalid_input");

    // Disable, refuse, enable again.
    let r = gw
        .patch("/v1/job-types/greet", json!({"enabled": false}))
        .await;
    assert_eq!(r.json["enabled"], false);
    let r = gw
        .post("/v1/jobs", json!({"type": "greet", "input": {}}))
        .await;
    assert_eq!(r.assert_error(400, "invalid_input")["field"], "type");
    let r = gw
        .patch("/v1/job-types/greet", json!({"enabled": true}))
        .await;
    assert_eq!(r.json["enabled"], true);
    gw.create_job(json!({"type": "greet", "input": {}})).await;

    // Unknown type: 404.
    gw.patch("/v1/job-types/nope", json!({"enabled": false}))
        .await
        .assert_error(404, "not_found");

    // An operator may not change job types.
    let (_, ops) = gw.create_key("ops", "operator").await;
    let r = send(with_json(
        gw.req_as(&ops, Method::POST, "/v1/job-types"),
        &json!({"name": "o", "handler": "echo"}),
    ))
    .await;
    assert_eq!(r.assert_error(403, "forbidden")["required"], "admin");
    let r = send(with_json(
        gw.req_as(&ops, Method::PATCH, "/v1/job-types/greet"),
        &json!({"enabled": false}),
    ))
    .await;
    r.assert_error(403, "forbidden");
    assert_eq!(gw.get("/v1/job-types/greet").await.json["enabled"], true);

    // Types survive a restart.
    let mut gw = gw;
    gw.restart().await;
    let r = gw.get("/v1/job-types/greet").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["defaults"]["max_attempts"], 4);
    assert_eq!(r.json["description"], "v2");
}

#[tokio::test]
async fn an_input_schema_rejects_bad_input_before_a_job_exists() {
    let gw = Gateway::start().await;
    let schema = serde_json::json!({
        "type": "object",
        "required": ["env"],
        "properties": {"env": {"enum": ["staging", "production"]}},
        "additionalProperties": false
    });
    let r = gw
        .post(
            "/v1/job-types",
            serde_json::json!({"name": "deploy", "handler": "echo", "input_schema": schema}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw
        .post(
            "/v1/jobs",
            serde_json::json!({"type": "deploy", "input": {"env": "dev"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.json["error"]["details"]["field"], "input.env",
        "{}",
        r.text
    );
    assert_eq!(
        gw.get("/v1/jobs?type=deploy").await.json["jobs"],
        serde_json::json!([])
    );
    gw.create_job(serde_json::json!({"type": "deploy", "input": {"env": "staging"}}))
        .await;
    // A schema keyword that would not be enforced is refused when the type is created.
    let r = gw
        .post(
            "/v1/job-types",
            serde_json::json!({"name": "loose", "handler": "echo", "input_schema": {"type": "string", "pattern": "^a"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json["error"]["details"]["field"]
            .as_str()
            .unwrap()
            .starts_with("input_schema"),
        "{}",
        r.text
    );
}
