//! Every failure is `{"error": {code, message, details}}` with the documented status, and
//! invalid input names the field to fix.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, Resp, assert_error_shape, send, with_json};

/// `POST /v1/jobs` with `body`, expecting 400 `invalid_input` naming `field`.
async fn invalid_job(gw: &Gateway, body: Value, field: &str) -> Resp {
    let r = gw.post("/v1/jobs", body.clone()).await;
    let details = r.assert_error(400, "invalid_input");
    assert_eq!(details["field"], field, "for {body}: {}", r.text);
    r
}

#[tokio::test]
async fn bodies_content_types_and_sizes() {
    let gw = Gateway::start().await;

    // Malformed JSON: our shape, not the framework's text.
    let r = send(
        gw.req(Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .body("{\"type\": "),
    )
    .await;
    let details = r.assert_error(400, "invalid_json");
    assert!(details["line"].is_u64(), "{}", r.text);

    // No content type, and a non-JSON one.
    let r = send(gw.req(Method::POST, "/v1/jobs").body(r#"{"type":"echo"}"#)).await;
    r.assert_error(415, "unsupported_media_type");
    let r = send(
        gw.req(Method::POST, "/v1/jobs")
            .header("content-type", "text/plain")
            .body(r#"{"type":"echo"}"#),
    )
    .await;
    r.assert_error(415, "unsupported_media_type");
    // `application/json; charset=utf-8` is JSON.
    let r = send(
        gw.req(Method::POST, "/v1/jobs")
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"type":"echo","input":{}}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Over 1 MiB on POST /v1/jobs: 413 as JSON.
    let big = json!({"type": "echo", "input": {"blob": "x".repeat(1536 * 1024)}});
    let r = gw.post("/v1/jobs", big).await;
    r.assert_error(413, "payload_too_large");
    // 100 KiB is over the default limit of other routes but within the jobs limit.
    let medium = json!({"type": "echo", "input": {"blob": "x".repeat(100 * 1024)}});
    let r = gw.post("/v1/jobs", medium).await;
    assert_eq!(
        r.status,
        201,
        "a 100 KiB job is accepted: {}",
        &r.text[..r.text.len().min(300)]
    );
    let r = gw
        .post(
            "/v1/keys",
            json!({"name": "x".repeat(100 * 1024), "scope": "read"}),
        )
        .await;
    r.assert_error(413, "payload_too_large");

    // A body that is JSON but not an object.
    let r = gw.post("/v1/jobs", json!([1, 2])).await;
    r.assert_error(400, "invalid_input");
}

#[tokio::test]
async fn invalid_job_requests_name_the_field() {
    let gw = Gateway::start().await;

    let r = invalid_job(&gw, json!({"type": "nope", "input": {}}), "type").await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "names the type: {}",
        r.text
    );
    invalid_job(&gw, json!({"input": {}}), "type").await;
    invalid_job(&gw, json!({"type": "sleep", "input": {}}), "input.ms").await;
    invalid_job(
        &gw,
        json!({"type": "sleep", "input": {"ms": "soon"}}),
        "input.ms",
    )
    .await;
    invalid_job(
        &gw,
        json!({"type": "sleep", "input": {"ms": 5, "extra": 1}}),
        "input.extra",
    )
    .await;
    invalid_job(
        &gw,
        json!({"type": "flaky", "input": {}}),
        "input.fail_times",
    )
    .await;
    let r = invalid_job(
        &gw,
        json!({"type": "echo", "input": {}, "bogus": 1}),
        "bogus",
    )
    .await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus"),
        "{}",
        r.text
    );
    invalid_job(&gw, json!({"type": "echo", "run_at": "tomorrow"}), "run_at").await;
    invalid_job(
        &gw,
        json!({"type": "echo", "max_attempts": 0}),
        "max_attempts",
    )
    .await;
    invalid_job(
        &gw,
        json!({"type": "echo", "max_attempts": 101}),
        "max_attempts",
    )
    .await;
    invalid_job(
        &gw,
        json!({"type": "echo", "max_attempts": -1}),
        "max_attempts",
    )
    .await;
    invalid_job(&gw, json!({"type": "echo", "timeout_ms": 0}), "timeout_ms").await;
    invalid_job(
        &gw,
        json!({"type": "echo", "callback_url": "http://example.com/"}),
        "callback_url",
    )
    .await;

    // A disabled type is refused by name.
    let r = gw
        .patch("/v1/job-types/flaky", json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = invalid_job(
        &gw,
        json!({"type": "flaky", "input": {"fail_times": 0}}),
        "type",
    )
    .await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flaky"),
        "{}",
        r.text
    );

    // Idempotency-Key longer than 255 characters.
    let r = send(
        with_json(gw.req(Method::POST, "/v1/jobs"), &json!({"type": "echo"}))
            .header("idempotency-key", "k".repeat(256)),
    )
    .await;
    assert_eq!(
        r.assert_error(400, "invalid_input")["field"],
        "Idempotency-Key"
    );

    // Nothing invalid was created.
    let r = gw.get("/v1/jobs").await;
    assert_eq!(r.json["jobs"].as_array().unwrap().len(), 0, "{}", r.text);
}

#[tokio::test]
async fn routes_methods_ids_and_queries() {
    let gw = Gateway::start().await;

    // Unknown routes, with and without a key, inside and outside /v1.
    for path in ["/nope", "/v1/nope", "/v1/jobs/x/y/z"] {
        send(gw.req(Method::GET, path))
            .await
            .assert_error(404, "not_found");
    }
    send(gw.raw(Method::GET, "/nope"))
        .await
        .assert_error(404, "not_found");

    // Wrong methods.
    for (method, path) in [
        (Method::DELETE, "/v1/jobs"),
        (Method::PUT, "/v1/jobs"),
        (Method::POST, "/health"),
        (
            Method::GET,
            "/v1/jobs/0190d5a0-0000-7000-8000-000000000000/cancel",
        ),
        (Method::DELETE, "/v1/job-types/echo"),
    ] {
        let r = send(gw.req(method.clone(), path)).await;
        r.assert_error(405, "method_not_allowed");
    }

    // Ids that are not UUIDs, and UUIDs of no job.
    gw.get("/v1/jobs/not-a-uuid")
        .await
        .assert_error(404, "not_found");
    gw.get("/v1/jobs/0190d5a0-0000-7000-8000-000000000000")
        .await
        .assert_error(404, "not_found");
    gw.get("/v1/jobs/not-a-uuid/logs")
        .await
        .assert_error(404, "not_found");
    gw.get("/v1/jobs/0190d5a0-0000-7000-8000-000000000000/stream")
        .await
        .assert_error(404, "not_found");
    let r = send(gw.req(
        Method::POST,
        "/v1/jobs/0190d5a0-0000-7000-8000-000000000000/cancel",
    ))
    .await;
    r.assert_error(404, "not_found");
    let r = send(gw.req(Method::POST, "/v1/jobs/not-a-uuid/retry")).await;
    r.assert_error(404, "not_found");
    gw.get("/v1/job-types/nope")
        .await
        .assert_error(404, "not_found");

    // Query parameters.
    let r = gw.get("/v1/jobs?state=done").await;
    assert_eq!(r.assert_error(400, "invalid_input")["field"], "state");
    assert_eq!(
        gw.get("/v1/jobs?limit=0")
            .await
            .assert_error(400, "invalid_input")["field"],
        "limit"
    );
    assert_eq!(
        gw.get("/v1/jobs?limit=501")
            .await
            .assert_error(400, "invalid_input")["field"],
        "limit"
    );
    assert_eq!(
        gw.get("/v1/jobs?cursor=zzz")
            .await
            .assert_error(400, "invalid_input")["field"],
        "cursor"
    );
    gw.get("/v1/jobs?limit=abc")
        .await
        .assert_error(400, "invalid_input");
    gw.get("/v1/jobs?bogus=1")
        .await
        .assert_error(400, "invalid_input");
    assert_eq!(
        gw.get("/v1/events?limit=0")
            .await
            .assert_error(400, "invalid_input")["field"],
        "limit"
    );
}

#[tokio::test]
async fn every_error_has_the_same_shape() {
    let gw = Gateway::start().await;
    let (_, read) = gw.create_key("r", "read").await;
    let finished = gw.create_job(json!({"type": "echo", "input": {}})).await;
    let id = finished["id"].as_str().unwrap().to_string();
    gw.wait_terminal(&id, std::time::Duration::from_secs(10))
        .await;

    let cases: Vec<(Resp, u16)> = vec![
        (send(gw.raw(Method::GET, "/v1/jobs")).await, 401),
        (send(gw.req_as(&read, Method::POST, "/v1/jobs")).await, 403),
        (gw.get("/v1/jobs/nope").await, 404),
        (send(gw.req(Method::PATCH, "/v1/jobs")).await, 405),
        (
            send(gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))).await,
            409,
        ),
        (send(gw.req(Method::POST, "/v1/jobs").body("{}")).await, 415),
        (
            send(
                gw.req(Method::POST, "/v1/jobs")
                    .header("content-type", "application/json")
                    .body("nope"),
            )
            .await,
            400,
        ),
        (
            gw.post(
                "/v1/jobs",
                json!({"type": "echo", "input": {"b": "x".repeat(1 << 21)}}),
            )
            .await,
            413,
        ),
    ];
    for (r, status) in cases {
        assert_eq!(r.status, status, "{}", r.text);
        assert_error_shape(&r);
    }
}
