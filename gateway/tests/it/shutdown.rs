//! SIGTERM: stop accepting, let running attempts finish within the grace period, exit 0.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, SseReader};

#[tokio::test]
async fn sigterm_lets_a_running_attempt_finish_and_exits_0() {
    let mut gw = Gateway::builder()
        .env("RAUSKU_SHUTDOWN_GRACE_SECS", "10")
        .start()
        .await;
    let job = gw
        .create_job(json!({"type": "sleep", "input": {"ms": 200}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    gw.wait_state(&id, "running", Duration::from_secs(10)).await;

    let started = Instant::now();
    let status = gw.sigterm(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    gw.restart().await;
    let job = gw.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempt"], 1,
        "finished during the drain, not re-run: {job}"
    );
}

#[tokio::test]
async fn an_attempt_past_the_grace_period_is_requeued_and_runs_after_restart() {
    let mut gw = Gateway::builder()
        .env("RAUSKU_SHUTDOWN_GRACE_SECS", "0")
        .start()
        .await;
    let job = gw
        .create_job(json!({"type": "sleep", "input": {"ms": 1500}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    gw.wait_state(&id, "running", Duration::from_secs(10)).await;

    let status = gw.sigterm(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");

    gw.restart().await;
    let job = gw.wait_terminal(&id, Duration::from_secs(15)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempt"], 1,
        "the interrupted attempt is not counted: {job}"
    );
    let kinds: Vec<String> = gw
        .job_events(&id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "job.interrupted"), "{kinds:?}");
    let logs = gw.get(&format!("/v1/jobs/{id}/logs")).await;
    assert!(logs.text.contains("stopped by shutdown"), "{}", logs.text);
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_still_exits_0() {
    let mut gw = Gateway::builder()
        .env("RAUSKU_SHUTDOWN_GRACE_SECS", "0")
        .start()
        .await;
    let job = gw
        .create_job(json!({"type": "sleep", "input": {"ms": 60_000}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    gw.wait_state(&id, "running", Duration::from_secs(10)).await;
    let mut global = SseReader::open(&gw, "/v1/events/stream", &[]).await;
    let mut job_stream = SseReader::open(&gw, &format!("/v1/jobs/{id}/stream"), &[]).await;
    // The job stream is live: the job frame and its stored events.
    let first = job_stream
        .next(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.event.as_deref(), Some("job"));

    let started = Instant::now();
    let status = gw.sigterm(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "open streams held the shutdown for {:?}",
        started.elapsed()
    );
    // Both streams end (cleanly or by the closed connection), they do not hang.
    let deadline = Instant::now() + Duration::from_secs(5);
    while global.next_or_closed(deadline).await.is_some() {}
    while job_stream.next_or_closed(deadline).await.is_some() {}
}
