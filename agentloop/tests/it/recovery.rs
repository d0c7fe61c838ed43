//! Crash recovery, stale attempt reports, and the graceful drain.

use std::time::Duration;

use agentloop::job_runner::AttemptResult;
use agentloop::job_supervisor::{JobSupervisor, JobSupervisorArgs, JobSupervisorMessage};
use ractor::Actor;
use serde_json::json;
use skills::AttemptOutcome;
use store::{CreateOutcome, Job, JobState, Lease, NewEvent, NewJob, Store, StoreError, Timestamp};

use crate::support::{
    Harness, Options, Probe, eventually, kinds, open_store, registry, runtime_config, wait_probe,
};

fn new_job(job_type: &str) -> Job {
    Job::from_new(
        NewJob {
            job_type: job_type.into(),
            input: json!({"from": "before the crash"}),
            max_attempts: 3,
            timeout_ms: 3_600_000,
            run_at: None,
            session_id: None,
            run_id: None,
            idempotency_key: None,
            callback_url: None,
        },
        Timestamp::now(),
    )
}

/// Writes `job` as a crashed process would have left it: running, leased by another boot.
fn write_running(store: &Store, mut job: Job) -> Job {
    let now = Timestamp::now();
    job.state = JobState::Running;
    job.attempt = 1;
    job.started_at = Some(now);
    job.lease = Some(Lease {
        attempt: 1,
        owner: "a-boot-that-crashed".into(),
        taken_at: now,
    });
    store
        .write(|tx| {
            tx.append(NewEvent::new(job.stream(), "job.queued", json!({})));
            tx.append(NewEvent::new(job.stream(), "job.started", json!({})));
            tx.put_job(job.clone())?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_by_a_crashed_process_is_requeued_and_completes() {
    let (dir, store) = open_store();
    let orphan = write_running(&store, new_job("echo"));
    let waiting = new_job("echo");
    let waiting = match store.create_job(waiting, None).unwrap() {
        CreateOutcome::Created(j) => j,
        other => panic!("{other:?}"),
    };
    store.durable().await.unwrap();

    let h = Harness::start_on(dir, store, Options::default()).await;
    let done = h.wait_state(orphan.id, JobState::Succeeded).await;
    assert_eq!(done.output, Some(json!({"from": "before the crash"})));
    assert_eq!(
        done.attempt, 1,
        "the interrupted attempt does not count against the job"
    );
    assert_eq!(
        h.kinds(orphan.id),
        [
            "job.queued",
            "job.started",
            "job.recovered",
            "job.started",
            "job.succeeded"
        ]
    );
    let recovered = h.wait_event(orphan.id, "job.recovered").await;
    let event = recovered
        .iter()
        .find(|e| e.kind == "job.recovered")
        .unwrap();
    assert_eq!(event.data["interrupted_attempt"], 1);
    assert!(
        h.logs(orphan.id)
            .iter()
            .any(|l| l.contains("interrupted by a restart"))
    );

    // A job that was only queued when the process died simply runs.
    h.wait_state(waiting.id, JobState::Succeeded).await;
    let snap = h.snapshot().await;
    assert_eq!((snap.stats.recovered, snap.stats.succeeded), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_when_the_store_was_closed_is_recovered_after_a_reopen() {
    let (dir, store) = open_store();
    let orphan = write_running(&store, new_job("echo"));
    store.durable().await.unwrap();
    drop(store);

    let store = Store::open(store::StoreConfig::new(dir.path())).unwrap();
    let h = Harness::start_on(dir, store, Options::default()).await;
    h.wait_state(orphan.id, JobState::Succeeded).await;
    assert!(h.kinds(orphan.id).contains(&"job.recovered".to_string()));
}

/// Reports reach the supervisor as messages; one from an attempt that does not hold the lease
/// must change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_an_attempt_that_no_longer_holds_the_lease_is_ignored() {
    let (_dir, store) = open_store();
    let block = Probe::new("block");
    let gate = Probe::new("gate");
    let registry = registry(&store, &block, &gate);
    let args = JobSupervisorArgs {
        store: store.clone(),
        registry,
        config: runtime_config(8),
        callbacks: None,
    };
    let (supervisor, _) = Actor::spawn(None, JobSupervisor, args).await.unwrap();
    let snapshot = || async {
        ractor::call!(supervisor, |reply| JobSupervisorMessage::Snapshot { reply }).unwrap()
    };
    let stale_reports = |n: u64| {
        let snapshot = &snapshot;
        async move {
            eventually(format!("{n} stale reports"), || async {
                (snapshot().await.stats.stale_reports == n).then_some(())
            })
            .await
        }
    };
    let succeeded = |what: &str| AttemptResult::Handler(AttemptOutcome::Succeeded(json!(what)));

    let job = match store.create_job(new_job("block"), None).unwrap() {
        CreateOutcome::Created(j) => j,
        other => panic!("{other:?}"),
    };
    supervisor
        .send_message(JobSupervisorMessage::Enqueued {
            id: job.id,
            job_type: job.job_type.clone(),
            run_at: job.run_at,
        })
        .unwrap();
    wait_probe("attempt 1 to start", &block.state, |p| p.started() == 1).await;

    // A report for another attempt number (under the lease that is current: this
    // supervisor's first, number 1).
    supervisor
        .send_message(JobSupervisorMessage::AttemptFinished {
            id: job.id,
            attempt: 2,
            lease: 1,
            result: succeeded("from attempt 2, which never ran"),
            duration: Duration::ZERO,
        })
        .unwrap();
    stale_reports(1).await;
    let now = store.job(job.id).unwrap().unwrap();
    assert_eq!(
        (now.state, now.attempt, now.output),
        (JobState::Running, 1, None)
    );
    assert_eq!(snapshot().await.running, 1);
    assert_eq!(block.state.dropped(), 0, "the real attempt keeps running");

    // Cancelled, then retried by hand: attempt 1 again, under lease 2. A late report of the
    // cancelled attempt (attempt 1, lease 1) carries the same attempt number but must not
    // complete the job. Regression: it used to, with the cancelled attempt's output.
    let cancelled = ractor::call!(supervisor, |reply| JobSupervisorMessage::Cancel {
        id: job.id,
        reply
    })
    .unwrap();
    assert_eq!(cancelled.unwrap().state, JobState::Cancelled);
    let retried = ractor::call!(supervisor, |reply| JobSupervisorMessage::Retry {
        id: job.id,
        reply
    })
    .unwrap();
    assert_eq!(retried.unwrap().state, JobState::Queued);
    wait_probe("the retried attempt to start", &block.state, |p| {
        p.started() == 2
    })
    .await;
    assert_eq!(store.job(job.id).unwrap().unwrap().attempt, 1);
    supervisor
        .send_message(JobSupervisorMessage::AttemptFinished {
            id: job.id,
            attempt: 1,
            lease: 1,
            result: succeeded("from the cancelled attempt"),
            duration: Duration::ZERO,
        })
        .unwrap();
    stale_reports(2).await;
    let now = store.job(job.id).unwrap().unwrap();
    assert_eq!(
        (now.state, now.attempt, now.output),
        (JobState::Running, 1, None)
    );
    assert_eq!(snapshot().await.running, 1);

    // The attempt that holds the lease still completes the job.
    block.state.open(1);
    eventually("the retried attempt to complete the job", || async {
        let job = store.job(job.id).unwrap().unwrap();
        (job.state == JobState::Succeeded).then_some(job)
    })
    .await;
    assert_eq!(
        store.job(job.id).unwrap().unwrap().output,
        Some(json!({"attempt": 1}))
    );
    assert_eq!(snapshot().await.stats.stale_reports, 2);
    supervisor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_requeues_an_attempt_still_running_after_the_grace_period() {
    let h = Harness::start().await;
    let job = h.create_simple("block", json!({}));
    wait_probe("the attempt to start", &h.block, |p| p.started() == 1).await;

    let started = std::time::Instant::now();
    h.runtime.shutdown(Duration::from_millis(200)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the grace period is honoured"
    );

    let job = h.job(job.id);
    assert_eq!(
        (job.state, job.attempt, job.lease.clone()),
        (JobState::Queued, 0, None)
    );
    wait_probe("the attempt to be dropped", &h.block, |p| p.dropped() == 1).await;
    h.store.durable().await.unwrap();
    assert_eq!(
        kinds(&h.store, job.id),
        ["job.queued", "job.started", "job.interrupted"]
    );
    assert!(
        h.logs(job.id)
            .iter()
            .any(|l| l.contains("stopped by shutdown"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_attempt_that_finishes_within_the_grace_period_succeed() {
    let h = Harness::start().await;
    let job = h.create_simple("gate", json!({}));
    wait_probe("the attempt to start", &h.gate, |p| p.started() == 1).await;

    let started = std::time::Instant::now();
    let (_, ()) = tokio::join!(h.runtime.shutdown(Duration::from_secs(30)), async {
        // Once the supervisor is draining, let the attempt finish.
        h.wait_snapshot("the drain to begin", |s| s.draining).await;
        h.gate.open(1);
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain ended when the attempt did"
    );
    assert_eq!(h.job(job.id).state, JobState::Succeeded);
    assert_eq!(h.gate.dropped(), 0);
}

/// Regression: ractor kills the children of a stopping supervisor, which skips the runner's
/// `post_stop`; the handler task was then never aborted and ran on, detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_supervisor_stops_the_attempts_it_was_running() {
    let (_dir, store) = open_store();
    let block = Probe::new("block");
    let gate = Probe::new("gate");
    let registry = registry(&store, &block, &gate);
    let args = JobSupervisorArgs {
        store: store.clone(),
        registry,
        config: runtime_config(8),
        callbacks: None,
    };
    let (supervisor, handle) = Actor::spawn(None, JobSupervisor, args).await.unwrap();
    for _ in 0..2 {
        let job = match store.create_job(new_job("block"), None).unwrap() {
            CreateOutcome::Created(j) => j,
            other => panic!("{other:?}"),
        };
        supervisor
            .send_message(JobSupervisorMessage::Enqueued {
                id: job.id,
                job_type: job.job_type,
                run_at: job.run_at,
            })
            .unwrap();
    }
    wait_probe("both attempts to start", &block.state, |p| p.started() == 2).await;

    supervisor.stop(None);
    handle.await.unwrap();
    wait_probe("both handler futures to be dropped", &block.state, |p| {
        p.dropped() == 2
    })
    .await;
}
