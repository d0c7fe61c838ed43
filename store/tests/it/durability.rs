//! Durability: reopening, corrupt records reported (not panicked on), job logs.

use serde_json::json;
use store::store::Tree;
use store::{JobFilter, JobState, LogLevel, NewEvent, StoreError, StreamFilter, job_stream};

use crate::support::{count, create, open, set_state};

#[tokio::test]
async fn what_was_durable_is_there_after_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let (job, done) = {
        let store = open(dir.path());
        let job = create(&store, "echo", Some("s1"));
        let done = create(&store, "sleep", None);
        let done = set_state(&store, done.id, JobState::Succeeded);
        store.durable().await.unwrap();
        (job, done)
    }; // dropped without `close`: the committer thread is stopped by the drop
    let store = open(dir.path());
    assert_eq!(store.job(job.id).unwrap(), Some(job.clone()));
    assert_eq!(store.job(done.id).unwrap(), Some(done.clone()));
    assert_eq!(
        store
            .active_jobs()
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [job.id]
    );
    assert_eq!(count(&store, JobState::Queued), 1);
    assert_eq!(count(&store, JobState::Succeeded), 1);
    let events = store
        .events_after(&StreamFilter::Stream(job.stream()), 0, 10)
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "job.queued");
    assert_eq!(events[0].data["id"], json!(job.id.to_string()));
}

/// Flips one byte of the stored value at `key` in `tree`, through sled directly.
fn corrupt(path: &std::path::Path, tree: &str, key: &[u8], at: usize) {
    let db = sled::open(path).expect("raw sled open (the store must be closed)");
    let tree = db.open_tree(tree).unwrap();
    let mut value = tree.get(key).unwrap().expect("the record exists").to_vec();
    value[at] ^= 0x20;
    tree.insert(key, value).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_corrupt_job_record_is_an_error_naming_tree_and_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let (bad, good) = {
        let store = open(dir.path());
        let bad = create(&store, "echo", None);
        let good = create(&store, "echo", None);
        store.durable().await.unwrap();
        store.close().unwrap();
        (bad, good)
    };
    // A payload byte (past the 5-byte header): the checksum no longer matches.
    corrupt(dir.path(), Tree::Jobs.name(), &bad.id.as_key(), 12);

    let store = open(dir.path());
    let key_hex = hex::encode(bad.id.as_key());
    let check = |err: StoreError, what: &str| match &err {
        StoreError::Corrupt { tree, key, reason } => {
            assert_eq!(tree, "jobs", "{what}");
            assert!(
                key.contains(&key_hex),
                "{what}: key `{key}` should name {key_hex}"
            );
            assert!(reason.contains("checksum"), "{what}: {reason}");
            let msg = err.to_string();
            assert!(
                msg.contains("jobs") && msg.contains(&key_hex),
                "{what}: {msg}"
            );
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };
    check(store.job(bad.id).unwrap_err(), "job");
    check(
        store
            .list_jobs(&JobFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap_err(),
        "list_jobs",
    );
    check(
        store
            .list_jobs(&JobFilter {
                state: Some(JobState::Queued),
                limit: 10,
                ..Default::default()
            })
            .unwrap_err(),
        "list_jobs by state",
    );
    check(store.active_jobs().unwrap_err(), "active_jobs");
    // Writing over a corrupt job is refused too, rather than miscounting.
    check(
        store
            .write(|tx| {
                let _ = tx.job(bad.id)?;
                Ok::<_, StoreError>(())
            })
            .unwrap_err(),
        "write",
    );
    // The rest of the store is fine.
    assert_eq!(store.job(good.id).unwrap(), Some(good));
}

#[tokio::test]
async fn an_unknown_format_version_is_reported_as_corrupt() {
    let dir = tempfile::TempDir::new().unwrap();
    let job = {
        let store = open(dir.path());
        let job = create(&store, "echo", None);
        store.close().unwrap();
        job
    };
    corrupt(dir.path(), Tree::Jobs.name(), &job.id.as_key(), 0);
    let store = open(dir.path());
    match store.job(job.id).unwrap_err() {
        StoreError::Corrupt { tree, reason, .. } => {
            assert_eq!(tree, "jobs");
            assert!(reason.contains("format version"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn job_logs_page_through_log_lines_only() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    let job = create(&store, "echo", None); // seq 1: job.queued
    let stream = job_stream(job.id);
    store
        .write(|tx| {
            for i in 0..10 {
                tx.append(NewEvent::new(
                    stream.clone(),
                    "job.log",
                    json!({"level": "info", "message": format!("line {i}")}),
                ));
                if i % 3 == 0 {
                    tx.append(NewEvent::new(stream.clone(), "job.started", json!({})));
                }
            }
            // Malformed log events are skipped, not errors.
            tx.append(NewEvent::new(
                stream.clone(),
                "job.log",
                json!({"message": "no level"}),
            ));
            tx.append(NewEvent::new(
                stream.clone(),
                "job.log",
                json!({"level": "warn", "message": "last"}),
            ));
            // Another job's lines are not ours.
            tx.append(NewEvent::new(
                "job:other",
                "job.log",
                json!({"level": "info", "message": "x"}),
            ));
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store.durable().await.unwrap();

    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = store.job_logs(job.id, after, 4).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 3]);
    let lines: Vec<_> = pages.concat();
    let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
    let mut expected: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    expected.push("last".into());
    assert_eq!(messages, expected);
    assert!(
        lines.windows(2).all(|w| w[0].seq < w[1].seq),
        "in seq order"
    );
    assert_eq!(lines.last().unwrap().level, LogLevel::Warn);
    assert_eq!(lines[0].seq, 2, "seq 1 is job.queued");
    // A cursor past the end, and a job without logs.
    assert!(store.job_logs(job.id, 1000, 10).unwrap().is_empty());
    assert!(
        store
            .job_logs(store::JobId::new(), 0, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_data_directory_in_use_is_refused_as_locked() {
    let dir = tempfile::TempDir::new().unwrap();
    let _store = open(dir.path());
    match store::Store::open(store::StoreConfig::new(dir.path())) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("a second open of a directory in use must fail"),
    }
}

#[tokio::test]
async fn a_failed_write_applies_nothing_and_consumes_no_seq() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    let job = create(&store, "echo", None);
    let failed: Result<(), StoreError> = store.write(|tx| {
        let mut j = tx.job(job.id)?.unwrap();
        j.state = JobState::Running;
        tx.put_job(j)?;
        tx.append(NewEvent::new(job.stream(), "job.started", json!({})));
        Err(StoreError::Io("refused by the test".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.job(job.id).unwrap().unwrap().state, JobState::Queued);
    assert_eq!(count(&store, JobState::Running), 0);
    assert_eq!(store.stream_head(&job.stream()).unwrap(), 1);
    store
        .write(|tx| {
            tx.append(NewEvent::new(job.stream(), "job.next", json!({})));
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store.durable().await.unwrap();
    let events = store.events_after(&StreamFilter::Global, 0, 10).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.seq, e.global_seq))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    assert_eq!(events[1].kind, "job.next");
}

#[tokio::test]
async fn job_types_are_written_and_removed_together_and_old_records_decode() {
    use store::{JobType, JobTypeSource};

    let dir = tempfile::TempDir::new().unwrap();
    {
        let store = open(dir.path());
        // A record from before `source` existed: `builtin` only.
        let legacy = json!({
            "name": "echo", "description": "d", "handler": "echo", "enabled": true,
            "config": null, "defaults": {"max_attempts": 3, "timeout_ms": 1000, "concurrency": null},
            "input_schema": null, "policy": {"risk": "read", "approval": "never", "channels": []},
            "builtin": true,
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
        });
        store
            .write(|tx| {
                tx.put(Tree::JobTypes, b"echo".to_vec(), &legacy);
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let echo = store.job_types().unwrap().remove(0);
        assert_eq!(echo.source, JobTypeSource::Builtin);

        let mut build: JobType = echo.clone();
        build.name = "build".into();
        build.source = JobTypeSource::Manifest {
            path: "skills/build.toml".into(),
            digest: "00".into(),
        };
        store.write_job_types(&[build.clone()], &[]).unwrap();
        store
            .write_job_types(&[], &["echo".to_string(), "never-existed".to_string()])
            .unwrap();
        store.durable().await.unwrap();
    }
    let store = open(dir.path());
    let types = store.job_types().unwrap();
    assert_eq!(types.len(), 1, "{types:?}");
    assert_eq!(types[0].name, "build");
    assert_eq!(types[0].source.manifest_path(), Some("skills/build.toml"));
}
