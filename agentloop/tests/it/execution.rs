//! Running jobs: success, retries with backoff, dead-lettering, retry by hand, timeouts,
//! panics.

use agentloop::{CreateJob, JobError};
use serde_json::json;
use store::{CreateOutcome, IdempotencyScope, JobState};

use crate::support::{Harness, wait_probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_succeeds_with_its_input_and_records_queued_started_succeeded() {
    let h = Harness::start().await;
    let input = json!({"hello": "world", "n": [1, 2, 3]});
    let job = h.create_simple("echo", input.clone());
    let done = h.wait_state(job.id, JobState::Succeeded).await;
    assert_eq!(done.output, Some(input));
    assert_eq!(done.attempt, 1);
    assert_eq!(done.error, None);
    assert!(done.lease.is_none(), "a finished job holds no lease");
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(
        h.kinds(job.id),
        ["job.queued", "job.started", "job.succeeded"]
    );
    let events = h.wait_event(job.id, "job.succeeded").await;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(events.last().unwrap().data["state"], "succeeded");
    let snap = h.snapshot().await;
    assert_eq!(
        (
            snap.stats.leased,
            snap.stats.succeeded,
            snap.running,
            snap.queued
        ),
        (1, 1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_succeeds_on_the_third_attempt_after_two_retries() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "flaky".into(),
        input: json!({"fail_times": 2}),
        max_attempts: Some(3),
        ..Default::default()
    });
    let done = h.wait_state(job.id, JobState::Succeeded).await;
    assert_eq!(done.attempt, 3);
    assert_eq!(done.output, Some(json!({"attempt": 3})));
    assert_eq!(
        done.error, None,
        "a success clears the last attempt's error"
    );
    assert_eq!(
        h.kinds(job.id),
        [
            "job.queued",
            "job.started",
            "job.retrying",
            "job.started",
            "job.retrying",
            "job.started",
            "job.succeeded"
        ]
    );
    let logs = h.logs(job.id);
    assert!(
        logs.iter()
            .any(|l| l.contains("attempt 1 of 3 failed") && l.contains("retrying in")),
        "{logs:?}"
    );
    assert_eq!(h.snapshot().await.stats.retried, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_attempts_is_dead_lettered_and_retry_by_hand_runs_fresh_attempts() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "flaky".into(),
        input: json!({"fail_times": 2}),
        max_attempts: Some(2),
        ..Default::default()
    });
    let failed = h.wait_state(job.id, JobState::Failed).await;
    assert_eq!(failed.attempt, 2);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("failing on purpose"),
        "{:?}",
        failed.error
    );
    assert_eq!(
        h.kinds(job.id),
        [
            "job.queued",
            "job.started",
            "job.retrying",
            "job.started",
            "job.failed"
        ]
    );
    assert!(h.logs(job.id).iter().any(|l| l.contains("dead-lettered")));

    // Retry by hand: queued again with the attempt count reset. `flaky` fails attempts 1 and 2
    // whatever came before, so the two fresh attempts fail the same way.
    let requeued = h.runtime.jobs.retry(job.id).await.unwrap();
    assert_eq!(
        (requeued.state, requeued.attempt, requeued.max_attempts),
        (JobState::Queued, 0, 2)
    );
    eventually_started_twice_more(&h, job.id).await;
    let again = h.wait_state(job.id, JobState::Failed).await;
    assert_eq!(again.attempt, 2);
    assert_eq!(
        h.kinds(job.id)[5..],
        [
            "job.queued",
            "job.started",
            "job.retrying",
            "job.started",
            "job.failed"
        ]
    );

    // Only failed or cancelled jobs can be retried.
    let ok = h.create_simple("echo", json!(1));
    h.wait_state(ok.id, JobState::Succeeded).await;
    match h.runtime.jobs.retry(ok.id).await {
        Err(JobError::InvalidState {
            state: JobState::Succeeded,
            action: "retry",
            ..
        }) => {}
        other => panic!("expected InvalidState, got {other:?}"),
    }
    match h.runtime.jobs.retry(store::JobId::new()).await {
        Err(JobError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn eventually_started_twice_more(h: &Harness, id: store::JobId) {
    crate::support::eventually("two more job.started events", || async {
        let n = h.kinds(id).iter().filter(|k| *k == "job.started").count();
        (n >= 4).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_is_stopped_retried_and_finally_failed() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "block".into(),
        input: json!({}),
        max_attempts: Some(2),
        timeout_ms: Some(100),
        ..Default::default()
    });
    let failed = h.wait_state(job.id, JobState::Failed).await;
    let error = failed.error.unwrap();
    assert!(error.contains("timed out after 100 ms"), "{error}");
    assert_eq!(failed.attempt, 2);
    // Both attempts' futures were dropped, not left running.
    wait_probe("both attempts dropped", &h.block, |p| p.dropped() == 2).await;
    assert_eq!((h.block.started(), h.block.finished()), (2, 0));
    assert_eq!(
        h.kinds(job.id),
        [
            "job.queued",
            "job.started",
            "job.retrying",
            "job.started",
            "job.failed"
        ]
    );
    let snap = h.snapshot().await;
    assert_eq!(
        (snap.stats.timeouts, snap.stats.retried, snap.stats.failed),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sleep_with_a_short_timeout_fails_as_timed_out() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "sleep".into(),
        input: json!({"ms": 60_000}),
        max_attempts: Some(1),
        timeout_ms: Some(100),
        ..Default::default()
    });
    let failed = h.wait_state(job.id, JobState::Failed).await;
    assert!(
        failed.error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        failed.error
    );
    assert_eq!(h.kinds(job.id), ["job.queued", "job.started", "job.failed"]);
    // The handler's own log line made it to the job's logs.
    assert!(h.logs(job.id).iter().any(|l| l == "sleeping 60000 ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt_and_the_supervisor_keeps_working() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "panics".into(),
        input: json!({}),
        max_attempts: Some(2),
        ..Default::default()
    });
    let failed = h.wait_state(job.id, JobState::Failed).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("handler panicked: boom"),
        "{:?}",
        failed.error
    );
    assert_eq!(failed.attempt, 2, "a panic is retryable like any failure");
    assert_eq!(h.snapshot().await.stats.panics, 2);

    let ok = h.create_simple("echo", json!("still here"));
    assert_eq!(
        h.wait_state(ok.id, JobState::Succeeded).await.output,
        Some(json!("still here"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_before_returning_its_future_is_a_failed_attempt() {
    let h = Harness::start().await;
    let job = h.create(CreateJob {
        job_type: "panics.eagerly".into(),
        input: json!({}),
        max_attempts: Some(1),
        ..Default::default()
    });
    let failed = h.wait_state(job.id, JobState::Failed).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("boom before the future"),
        "{:?}",
        failed.error
    );
    let snap = h.snapshot().await;
    assert_eq!((snap.stats.panics, snap.running), (1, 0));

    let ok = h.create_simple("echo", json!(2));
    h.wait_state(ok.id, JobState::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_idempotent_create_returns_the_first_job_and_does_not_run_it_again() {
    let h = Harness::start().await;
    let idem = || {
        Some(IdempotencyScope {
            scope: "key-1".into(),
            key: "once".into(),
            request_hash: "h".into(),
            retention: std::time::Duration::from_secs(3600),
        })
    };
    let req = || CreateJob {
        job_type: "echo".into(),
        input: json!({"n": 1}),
        ..Default::default()
    };
    let first = match h.runtime.jobs.create(req(), idem()).unwrap() {
        CreateOutcome::Created(j) => j,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(first.idempotency_key.as_deref(), Some("once"));
    h.wait_state(first.id, JobState::Succeeded).await;
    match h.runtime.jobs.create(req(), idem()).unwrap() {
        CreateOutcome::Replayed(j) => assert_eq!((j.id, j.state), (first.id, JobState::Succeeded)),
        other => panic!("expected Replayed, got {other:?}"),
    }
    // A barrier job: once it ran, a second run of the first would have been leased too.
    let barrier = h.create_simple("echo", json!("barrier"));
    h.wait_state(barrier.id, JobState::Succeeded).await;
    assert_eq!(
        h.kinds(first.id),
        ["job.queued", "job.started", "job.succeeded"]
    );
    assert_eq!(h.snapshot().await.stats.leased, 2);
}
