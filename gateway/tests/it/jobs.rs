//! The job lifecycle over HTTP: create, list, cancel, timeouts, retries, dead letters, `run_at`.

use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, rfc3339, send, wait_for};

const FINISH: Duration = Duration::from_secs(15);

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn create_returns_201_with_location_and_runs_to_success() {
    let gw = Gateway::start().await;
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "echo", "input": {"hello": "world", "n": [1, 2]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = id_of(&r.json);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    let job = &r.json;
    assert_eq!(job["type"], "echo");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["attempt"], 0);
    for field in [
        "id",
        "type",
        "state",
        "input",
        "output",
        "error",
        "attempt",
        "max_attempts",
        "timeout_ms",
        "run_at",
        "session_id",
        "idempotency_key",
        "callback_url",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    ] {
        assert!(job.get(field).is_some(), "job has `{field}`: {job}");
    }

    let done = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["output"],
        json!({"hello": "world", "n": [1, 2]}),
        "echo returns its input"
    );
    assert_eq!(done["attempt"], 1);
    assert!(done["error"].is_null());
    assert!(
        done["started_at"].is_string() && done["finished_at"].is_string(),
        "{done}"
    );
    // The Location works.
    let r = gw.get(r.header("location").unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["state"], "succeeded");
}

#[tokio::test]
async fn list_is_newest_first_with_filters_and_cursor_paging() {
    let gw = Gateway::start().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(
            &gw.create_job(json!({"type": "echo", "input": {"i": i}}))
                .await,
        ));
    }
    for _ in 0..2 {
        created.push(id_of(
            &gw.create_job(json!({"type": "sleep", "input": {"ms": 60_000}}))
                .await,
        ));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let r = gw.get("/v1/jobs").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.json), newest_first);
    assert!(r.json["next_cursor"].is_null(), "one page: {}", r.text);

    // Pages of 3: 3 + 3 + 1, same order, no overlap.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".to_string(),
        };
        let r = gw.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        paged.extend(ids(&r.json));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(paged, newest_first);
    assert_eq!(pages, 3);

    // Filters.
    let echo_ids: Vec<String> = newest_first[2..].to_vec();
    let r = gw.get("/v1/jobs?type=echo").await;
    assert_eq!(ids(&r.json), echo_ids);
    let r = gw.get("/v1/jobs?type=sleep").await;
    assert_eq!(ids(&r.json), newest_first[..2].to_vec());
    for id in &echo_ids {
        gw.wait_state(id, "succeeded", FINISH).await;
    }
    let r = gw.get("/v1/jobs?state=succeeded").await;
    assert_eq!(ids(&r.json), echo_ids);
    let r = gw.get("/v1/jobs?state=succeeded&type=sleep").await;
    assert!(ids(&r.json).is_empty(), "{}", r.text);
    let r = gw.get("/v1/jobs?state=failed").await;
    assert!(ids(&r.json).is_empty(), "{}", r.text);
    // The sleeping jobs are active: running (or still queued), never finished.
    wait_for("both sleep jobs to run", FINISH, || async {
        let r = gw.get("/v1/jobs?state=running").await;
        (ids(&r.json) == newest_first[..2].to_vec()).then_some(())
    })
    .await;
    let r = gw.get("/v1/jobs?state=running&limit=1").await;
    assert_eq!(ids(&r.json), newest_first[..1].to_vec());
    let cursor = r.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let r = gw
        .get(&format!("/v1/jobs?state=running&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&r.json), newest_first[1..2].to_vec());
}

#[tokio::test]
async fn cancel_stops_a_running_attempt_and_finished_jobs_refuse() {
    let gw = Gateway::start().await;
    let id = id_of(
        &gw.create_job(json!({"type": "sleep", "input": {"ms": 60_000}}))
            .await,
    );
    gw.wait_state(&id, "running", FINISH).await;

    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "cancelled");
    assert!(r.json["finished_at"].is_string(), "{}", r.text);

    // The attempt is really stopped: nothing runs any more, and the job stays cancelled.
    wait_for("the runtime to run nothing", FINISH, || async {
        let r = gw.get("/v1/runtime").await;
        (r.json["supervisor"]["running"] == 0).then_some(())
    })
    .await;
    let job = gw.job(&id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["output"].is_null(), "{job}");
    let logs = gw.get(&format!("/v1/jobs/{id}/logs")).await;
    let text = logs.json["logs"].to_string();
    assert!(text.contains("stopped by cancel"), "{text}");

    // Cancelling it again, or a finished job: 409 invalid_state.
    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!(r.assert_error(409, "invalid_state")["state"], "cancelled");
    let done = id_of(&gw.create_job(json!({"type": "echo", "input": {}})).await);
    gw.wait_state(&done, "succeeded", FINISH).await;
    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{done}/cancel"))).await;
    let details = r.assert_error(409, "invalid_state");
    assert_eq!(details["state"], "succeeded");
    assert_eq!(details["id"], done.as_str());
    // A succeeded job cannot be retried either.
    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{done}/retry"))).await;
    r.assert_error(409, "invalid_state");

    // A cancelled job can be retried by hand.
    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{id}/retry"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "queued");
    gw.wait_state(&id, "running", FINISH).await;
}

#[tokio::test]
async fn an_attempt_over_its_timeout_is_stopped_and_counts_as_failed() {
    let gw = Gateway::start().await;
    let started = Instant::now();
    let id = id_of(
        &gw.create_job(
            json!({"type": "sleep", "input": {"ms": 5000}, "timeout_ms": 100, "max_attempts": 2}),
        )
        .await,
    );
    let job = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("timed out"),
        "{job}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped at the timeout, not after the sleep"
    );
}

#[tokio::test]
async fn exhausted_retries_dead_letter_and_a_manual_retry_starts_over() {
    let gw = Gateway::start().await;
    let id = id_of(
        &gw.create_job(json!({"type": "flaky", "input": {"fail_times": 5}, "max_attempts": 3}))
            .await,
    );
    let job = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 3);
    assert!(
        job["error"].as_str().unwrap().contains("attempt 3"),
        "{job}"
    );
    // The job read can run ahead of the durable log: wait for the end to be recorded.
    gw.wait_events(&id, "job.failed", FINISH, |ev| {
        ev.iter().any(|e| e["kind"] == "job.failed")
    })
    .await;

    let logs = gw.get(&format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(logs.status, 200, "{}", logs.text);
    let lines: Vec<String> = logs.json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    for n in 1..=3 {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("attempt {n} of 3 failed"))),
            "attempt {n}: {lines:?}"
        );
    }
    assert!(lines.last().unwrap().contains("dead-lettered"), "{lines:?}");
    let seqs: Vec<u64> = logs.json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // `after` pages the log.
    let after = seqs[0];
    let r = gw.get(&format!("/v1/jobs/{id}/logs?after={after}")).await;
    assert_eq!(r.json["logs"].as_array().unwrap().len(), seqs.len() - 1);

    // The dead letter is listed as failed.
    let r = gw.get("/v1/jobs?state=failed").await;
    assert_eq!(ids(&r.json), vec![id.clone()]);

    // A manual retry re-queues it with fresh attempts; flaky counts from 1 again and fails again.
    let r = send(gw.req(Method::POST, &format!("/v1/jobs/{id}/retry"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "queued");
    assert_eq!(r.json["attempt"], 0);
    let job = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 3, "{job}");
    gw.wait_events(&id, "a second job.failed", FINISH, |ev| {
        ev.iter().filter(|e| e["kind"] == "job.failed").count() == 2
    })
    .await;
    let logs = gw.get(&format!("/v1/jobs/{id}/logs")).await;
    let text = logs.json["logs"].to_string();
    assert!(text.contains("re-queued by hand"), "{text}");
    assert_eq!(text.matches("dead-lettered").count(), 2, "{text}");
}

#[tokio::test]
async fn a_flaky_job_within_its_attempts_succeeds() {
    let gw = Gateway::start().await;
    let id = id_of(
        &gw.create_job(json!({"type": "flaky", "input": {"fail_times": 2}, "max_attempts": 3}))
            .await,
    );
    let job = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 3);
    assert_eq!(job["output"], json!({"attempt": 3}));
    assert!(job["error"].is_null(), "a success clears the error: {job}");
    // It went through `retrying` on the way.
    let kinds: Vec<String> = gw
        .wait_events(&id, "job.succeeded", FINISH, |ev| {
            ev.iter().any(|e| e["kind"] == "job.succeeded")
        })
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "job.retrying").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("job.succeeded"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn run_at_in_the_future_waits() {
    let gw = Gateway::start().await;
    let run_at = SystemTime::now() + Duration::from_millis(1500);
    let id = id_of(
        &gw.create_job(json!({"type": "echo", "input": {}, "run_at": rfc3339(run_at)}))
            .await,
    );
    let job = gw.job(&id).await;
    assert_eq!(job["state"], "queued", "{job}");
    let done = gw.wait_terminal(&id, FINISH).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(SystemTime::now() >= run_at, "finished only after run_at");
    let started = done["started_at"].as_str().unwrap();
    assert!(
        started >= rfc3339(run_at).as_str(),
        "started {started} before run_at {}",
        rfc3339(run_at)
    );
}
