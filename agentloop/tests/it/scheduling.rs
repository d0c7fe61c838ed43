//! When jobs start: `run_at`, per-type concurrency and the global limit.

use std::time::Duration;

use agentloop::CreateJob;
use serde_json::json;
use skills::JobTypePatch;
use skills::registry::DefaultsPatch;
use store::{JobState, Timestamp};

use crate::support::{Harness, Options, runtime_config, wait_probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_not_started_before_its_run_at() {
    let h = Harness::start().await;
    let run_at = Timestamp::now().plus(Duration::from_millis(300));
    let job = h.create(CreateJob {
        job_type: "echo".into(),
        input: json!({}),
        run_at: Some(run_at),
        ..Default::default()
    });
    assert_eq!(job.run_at, run_at);
    let snap = h.snapshot().await;
    assert_eq!((snap.queued, snap.running), (1, 0));
    assert_eq!(h.job(job.id).state, JobState::Queued);

    let done = h.wait_state(job.id, JobState::Succeeded).await;
    let started_at = done.started_at.unwrap();
    assert!(
        started_at >= run_at,
        "started at {started_at}, before its run_at {run_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_limited_to_one_never_runs_two_at_once_and_does_not_hold_up_other_types() {
    let h = Harness::start().await;
    let patched = h
        .runtime
        .jobs
        .registry()
        .patch(
            "gate",
            JobTypePatch {
                defaults: Some(DefaultsPatch {
                    concurrency: Some(Some(1)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(patched.defaults.concurrency, Some(1));
    let jobs: Vec<_> = (0..3).map(|_| h.create_simple("gate", json!({}))).collect();
    wait_probe("one gate attempt to start", &h.gate, |p| p.started() == 1).await;

    // Another type runs while the gate type is at its limit.
    let echo = h.create_simple("echo", json!({}));
    h.wait_state(echo.id, JobState::Succeeded).await;

    for n in 1..=3 {
        let snap = h.snapshot().await;
        assert_eq!(snap.running_by_type.get("gate"), Some(&1), "{snap:?}");
        assert_eq!(snap.queued, 3 - n);
        assert_eq!(h.gate.started(), n, "only one at a time");
        h.gate.open(1);
        if n < 3 {
            wait_probe("the next gate attempt", &h.gate, |p| p.started() == n + 1).await;
        }
    }
    for job in &jobs {
        h.wait_state(job.id, JobState::Succeeded).await;
    }
    assert_eq!(h.gate.max_current(), 1);
    let snap = h.snapshot().await;
    assert!(snap.running_by_type.is_empty(), "{snap:?}");
    // Oldest first.
    let started: Vec<_> = jobs
        .iter()
        .map(|j| h.job(j.id).started_at.unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]), "{started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_concurrency_attempts_run_at_once() {
    let h = Harness::start_with(Options {
        config: runtime_config(2),
        ..Options::default()
    })
    .await;
    let jobs: Vec<_> = (0..5).map(|_| h.create_simple("gate", json!({}))).collect();
    wait_probe("two attempts to start", &h.gate, |p| p.started() == 2).await;
    let snap = h.snapshot().await;
    assert_eq!((snap.running, snap.queued, snap.max_concurrency), (2, 3, 2));
    assert_eq!(h.gate.started(), 2);

    h.gate.open(5);
    for job in &jobs {
        h.wait_state(job.id, JobState::Succeeded).await;
    }
    assert_eq!(h.gate.max_current(), 2);
    assert_eq!(h.snapshot().await.stats.succeeded, 5);
}
