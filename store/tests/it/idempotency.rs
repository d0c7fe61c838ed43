//! Idempotency keys: replay, conflict, expiry, scoping, purge, and a race of many creators.

use std::sync::Barrier;
use std::time::Duration;

use store::{CreateOutcome, IdempotencyScope, JobFilter, JobState, Timestamp};

use crate::support::{count, job_at, temp_store};

const HOUR: Duration = Duration::from_secs(3600);

fn scope(scope: &str, key: &str, hash: &str, retention: Duration) -> Option<IdempotencyScope> {
    Some(IdempotencyScope {
        scope: scope.to_string(),
        key: key.to_string(),
        request_hash: hash.to_string(),
        retention,
    })
}

fn created(outcome: CreateOutcome) -> store::Job {
    match outcome {
        CreateOutcome::Created(job) => job,
        other => panic!("expected Created, got {other:?}"),
    }
}

#[test]
fn the_same_key_and_body_replays_the_first_job() {
    let (_dir, store) = temp_store();
    let first = created(
        store
            .create_job(
                job_at("echo", None, Timestamp::now()),
                scope("k1", "abc", "h1", HOUR),
            )
            .unwrap(),
    );
    match store
        .create_job(
            job_at("echo", None, Timestamp::now()),
            scope("k1", "abc", "h1", HOUR),
        )
        .unwrap()
    {
        CreateOutcome::Replayed(job) => assert_eq!(job, first),
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(
        store
            .list_jobs(&JobFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
    assert_eq!(count(&store, JobState::Queued), 1);
    // A replay writes nothing: the job's stream still holds only its `job.queued`.
    assert_eq!(store.stream_head(&first.stream()).unwrap(), 1);
}

#[test]
fn the_same_key_with_another_body_is_a_conflict_naming_the_first_job() {
    let (_dir, store) = temp_store();
    let first = created(
        store
            .create_job(
                job_at("echo", None, Timestamp::now()),
                scope("k1", "abc", "h1", HOUR),
            )
            .unwrap(),
    );
    match store
        .create_job(
            job_at("echo", None, Timestamp::now()),
            scope("k1", "abc", "h2", HOUR),
        )
        .unwrap()
    {
        CreateOutcome::Conflict { job_id } => assert_eq!(job_id, first.id),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(count(&store, JobState::Queued), 1);
}

#[test]
fn a_key_is_forgotten_after_its_retention() {
    let (_dir, store) = temp_store();
    let retention = Duration::from_secs(60);
    let t0 = Timestamp::now();
    let first = created(
        store
            .create_job(
                job_at("echo", None, t0),
                scope("k1", "abc", "h1", retention),
            )
            .unwrap(),
    );
    // At exactly the end of the retention the key still holds…
    match store
        .create_job(
            job_at("echo", None, t0.plus(retention)),
            scope("k1", "abc", "h1", retention),
        )
        .unwrap()
    {
        CreateOutcome::Replayed(job) => assert_eq!(job.id, first.id),
        other => panic!("expected Replayed, got {other:?}"),
    }
    // …and a millisecond later it is free, even for another body.
    let later = t0.plus(retention + Duration::from_millis(1));
    let second = created(
        store
            .create_job(
                job_at("echo", None, later),
                scope("k1", "abc", "h2", retention),
            )
            .unwrap(),
    );
    assert_ne!(second.id, first.id);
    // The new record is the one that holds now.
    match store
        .create_job(
            job_at("echo", None, later),
            scope("k1", "abc", "h2", retention),
        )
        .unwrap()
    {
        CreateOutcome::Replayed(job) => assert_eq!(job.id, second.id),
        other => panic!("expected Replayed, got {other:?}"),
    }
}

#[test]
fn keys_of_different_scopes_never_collide() {
    let (_dir, store) = temp_store();
    let a = created(
        store
            .create_job(
                job_at("echo", None, Timestamp::now()),
                scope("key-a", "same", "h1", HOUR),
            )
            .unwrap(),
    );
    let b = created(
        store
            .create_job(
                job_at("echo", None, Timestamp::now()),
                scope("key-b", "same", "h1", HOUR),
            )
            .unwrap(),
    );
    assert_ne!(a.id, b.id);
    assert_eq!(count(&store, JobState::Queued), 2);
}

#[test]
fn of_100_concurrent_creators_with_one_key_exactly_one_creates() {
    let (_dir, store) = temp_store();
    let barrier = Barrier::new(100);
    let outcomes: Vec<CreateOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                s.spawn(|| {
                    let job = job_at("echo", None, Timestamp::now());
                    barrier.wait();
                    store
                        .create_job(job, scope("k1", "race", "h1", HOUR))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            CreateOutcome::Created(j) => Some(j.id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "exactly one creator wins");
    for o in &outcomes {
        match o {
            CreateOutcome::Created(_) => {}
            CreateOutcome::Replayed(j) => assert_eq!(j.id, created[0]),
            CreateOutcome::Conflict { .. } => panic!("same body, no conflict expected"),
        }
    }
    assert_eq!(count(&store, JobState::Queued), 1);
    assert_eq!(
        store
            .list_jobs(&JobFilter {
                limit: 1000,
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn purge_forgets_only_records_older_than_the_cutoff() {
    let (_dir, store) = temp_store();
    let t0 = Timestamp::now();
    let old = created(
        store
            .create_job(job_at("echo", None, t0), scope("k1", "old", "h1", HOUR))
            .unwrap(),
    );
    let t1 = t0.plus(Duration::from_secs(10));
    let young = created(
        store
            .create_job(job_at("echo", None, t1), scope("k1", "young", "h1", HOUR))
            .unwrap(),
    );

    assert_eq!(
        store
            .purge_idempotency(t0.plus(Duration::from_secs(5)))
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .purge_idempotency(t0.plus(Duration::from_secs(5)))
            .unwrap(),
        0,
        "nothing left to purge"
    );

    // The purged key creates a new job; the kept one still replays.
    let again = created(
        store
            .create_job(job_at("echo", None, t1), scope("k1", "old", "h1", HOUR))
            .unwrap(),
    );
    assert_ne!(again.id, old.id);
    match store
        .create_job(job_at("echo", None, t1), scope("k1", "young", "h1", HOUR))
        .unwrap()
    {
        CreateOutcome::Replayed(job) => assert_eq!(job.id, young.id),
        other => panic!("expected Replayed, got {other:?}"),
    }
    // Purging forgets keys, never jobs.
    assert!(store.job(old.id).unwrap().is_some());
}
