//! Cancelling jobs: running ones stop at once, queued ones never start, finished ones refuse.

use std::time::Duration;

use agentloop::{CreateJob, JobError};
use serde_json::json;
use skills::JobTypePatch;
use skills::registry::DefaultsPatch;
use store::{JobId, JobState, Timestamp};

use crate::support::{Harness, wait_probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_at_once_and_drops_its_handler() {
    let h = Harness::start().await;
    let job = h.create_simple("block", json!({}));
    wait_probe("the attempt to start", &h.block, |p| p.started() == 1).await;

    let cancelled = h.runtime.jobs.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.lease.is_none() && cancelled.finished_at.is_some());
    assert_eq!(
        h.job(job.id).state,
        JobState::Cancelled,
        "in the store when cancel returns"
    );
    wait_probe("the handler future to be dropped", &h.block, |p| {
        p.dropped() == 1
    })
    .await;
    assert_eq!(h.block.finished(), 0);

    let snap = h.snapshot().await;
    assert_eq!((snap.running, snap.stats.cancelled), (0, 1));
    h.store.durable().await.unwrap();
    assert_eq!(
        h.kinds(job.id),
        ["job.queued", "job.started", "job.cancelled"]
    );
    assert!(
        h.logs(job.id)
            .iter()
            .any(|l| l.contains("stopped by cancel"))
    );

    // Cancelling it again is refused.
    match h.runtime.jobs.cancel(job.id).await {
        Err(JobError::InvalidState {
            state: JobState::Cancelled,
            action: "cancel",
            ..
        }) => {}
        other => panic!("expected InvalidState, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_sleep_returns_at_once() {
    let h = Harness::start().await;
    let job = h.create_simple("sleep", json!({"ms": 60_000}));
    h.wait_state(job.id, JobState::Running).await;
    let started = std::time::Instant::now();
    let cancelled = h.runtime.jobs.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel waited for the sleep"
    );
    h.wait_snapshot("no attempt running", |s| s.running == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_or_unknown_job_is_refused() {
    let h = Harness::start().await;
    let job = h.create_simple("echo", json!({}));
    h.wait_state(job.id, JobState::Succeeded).await;
    match h.runtime.jobs.cancel(job.id).await {
        Err(
            e @ JobError::InvalidState {
                state: JobState::Succeeded,
                ..
            },
        ) => {
            assert!(
                e.to_string().contains("only queued, running or retrying"),
                "{e}"
            );
        }
        other => panic!("expected InvalidState, got {other:?}"),
    }
    assert_eq!(h.job(job.id).state, JobState::Succeeded);
    match h.runtime.jobs.cancel(JobId::new()).await {
        Err(JobError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_waiting_for_its_run_at_never_starts() {
    let h = Harness::start().await;
    let run_at = Timestamp::now().plus(Duration::from_millis(200));
    let job = h.create(CreateJob {
        job_type: "echo".into(),
        input: json!({}),
        run_at: Some(run_at),
        ..Default::default()
    });
    let cancelled = h.runtime.jobs.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(h.snapshot().await.queued, 0, "it left the queue");

    // A later job is a barrier: once it ran, the cancelled one's time has long passed.
    let later = h.create(CreateJob {
        job_type: "echo".into(),
        input: json!({}),
        run_at: Some(run_at.plus(Duration::from_millis(100))),
        ..Default::default()
    });
    h.wait_state(later.id, JobState::Succeeded).await;
    assert_eq!(h.job(job.id).state, JobState::Cancelled);
    assert_eq!(h.kinds(job.id), ["job.queued", "job.cancelled"]);
    assert_eq!(h.job(job.id).attempt, 0);
}

/// Regression: cancelling a running job released its concurrency slot but did not dispatch, so
/// the next queued job of the type waited for an unrelated event to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_lets_the_next_queued_job_of_its_type_start() {
    let h = Harness::start().await;
    h.runtime
        .jobs
        .registry()
        .patch(
            "block",
            JobTypePatch {
                defaults: Some(DefaultsPatch {
                    concurrency: Some(Some(1)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .unwrap();
    let first = h.create_simple("block", json!({}));
    let second = h.create_simple("block", json!({}));
    wait_probe("the first attempt to start", &h.block, |p| p.started() == 1).await;
    let snap = h.snapshot().await;
    assert_eq!((snap.running, snap.queued), (1, 1));

    h.runtime.jobs.cancel(first.id).await.unwrap();
    wait_probe("the second job to start", &h.block, |p| p.started() == 2).await;
    h.wait_state(second.id, JobState::Running).await;
}
