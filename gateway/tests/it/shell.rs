//! `shell.exec` through the binary: off until `RAUSKU_SHELL_ALLOW` names programs.

use std::time::Duration;

use serde_json::json;

use crate::harness::Gateway;

#[tokio::test]
async fn shell_exec_is_refused_without_an_allowlist() {
    let gw = Gateway::start().await;
    let jt = gw.get("/v1/job-types/shell.exec").await;
    assert_eq!(jt.status, 200, "{}", jt.text);
    assert_eq!(jt.json["enabled"], false, "{}", jt.text);
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "shell.exec", "input": {"argv": ["echo", "hi"]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["details"]["field"], "type", "{}", r.text);
}

#[tokio::test]
async fn shell_exec_runs_allowlisted_programs_and_logs_their_output() {
    let gw = Gateway::builder()
        .env("RAUSKU_SHELL_ALLOW", "echo")
        .start()
        .await;
    let job = gw
        .create_job(json!({"type": "shell.exec", "input": {"argv": ["echo", "hello from rausku"]}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = gw.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"]["exit_code"], 0, "{done}");
    let logs = gw.get(&format!("/v1/jobs/{id}/logs")).await;
    assert!(logs.text.contains("hello from rausku"), "{}", logs.text);

    // A program that is not on the allowlist is a 400 naming argv[0], before any job exists.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "shell.exec", "input": {"argv": ["rm", "-rf", "/tmp/x"]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.json["error"]["details"]["field"], "input.argv.0",
        "{}",
        r.text
    );
    // A shell string is refused too.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "shell.exec", "input": {"argv": "echo hi; rm x"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
