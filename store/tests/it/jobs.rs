//! Jobs: create, get, list (order, filters, paging), the active index and the counters.

use store::{JobFilter, JobId, JobState, StoreError};

use crate::support::{count, create, ids, open, set_state, temp_store};

#[test]
fn a_created_job_reads_back_unchanged_and_unknown_ids_are_none() {
    let (_dir, store) = temp_store();
    let job = create(&store, "echo", Some("s1"));
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(store.job(job.id).unwrap(), Some(job.clone()));
    assert_eq!(store.job(JobId::new()).unwrap(), None);
}

#[test]
fn list_is_newest_first_and_pages_with_the_before_cursor() {
    let (_dir, store) = temp_store();
    let created: Vec<_> = (0..7).map(|_| create(&store, "echo", None)).collect();
    let mut newest_first = ids(&created);
    newest_first.reverse();

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                before,
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|j| j.id);
        pages.push(ids(&page));
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), newest_first);
}

#[test]
fn list_filters_by_state_type_and_session() {
    let (_dir, store) = temp_store();
    let a = create(&store, "echo", Some("s1"));
    let b = create(&store, "sleep", Some("s1"));
    let c = create(&store, "echo", Some("s2"));
    let d = create(&store, "echo", None);
    set_state(&store, c.id, JobState::Succeeded);
    set_state(&store, d.id, JobState::Running);

    let list = |filter: JobFilter| {
        ids(&store
            .list_jobs(&JobFilter {
                limit: 100,
                ..filter
            })
            .unwrap())
    };
    assert_eq!(
        list(JobFilter {
            job_type: Some("echo".into()),
            ..Default::default()
        }),
        [d.id, c.id, a.id]
    );
    assert_eq!(
        list(JobFilter {
            session_id: Some("s1".into()),
            ..Default::default()
        }),
        [b.id, a.id]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            ..Default::default()
        }),
        [b.id, a.id]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Running),
            ..Default::default()
        }),
        [d.id]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Succeeded),
            ..Default::default()
        }),
        [c.id]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Failed),
            ..Default::default()
        }),
        Vec::<JobId>::new()
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            job_type: Some("echo".into()),
            session_id: Some("s1".into()),
            ..Default::default()
        }),
        [a.id]
    );
    // Paging works on the active-state path too.
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            before: Some(b.id),
            ..Default::default()
        }),
        [a.id]
    );
    assert_eq!(
        ids(&store
            .list_jobs(&JobFilter {
                state: Some(JobState::Queued),
                limit: 1,
                ..Default::default()
            })
            .unwrap()),
        [b.id]
    );
}

#[test]
fn the_active_index_follows_every_state_change() {
    let (_dir, store) = temp_store();
    let a = create(&store, "echo", None);
    let b = create(&store, "echo", None);
    let c = create(&store, "echo", None);
    let by_state = |state| {
        ids(&store
            .list_jobs(&JobFilter {
                state: Some(state),
                limit: 100,
                ..Default::default()
            })
            .unwrap())
    };
    assert_eq!(
        ids(&store.active_jobs().unwrap()),
        [a.id, b.id, c.id],
        "oldest first"
    );

    // Active → active: listed under the new state only.
    set_state(&store, a.id, JobState::Running);
    set_state(&store, b.id, JobState::Retrying);
    assert_eq!(by_state(JobState::Queued), [c.id]);
    assert_eq!(by_state(JobState::Running), [a.id]);
    assert_eq!(by_state(JobState::Retrying), [b.id]);

    // Active → terminal: leaves the index.
    set_state(&store, a.id, JobState::Succeeded);
    set_state(&store, b.id, JobState::Failed);
    assert_eq!(ids(&store.active_jobs().unwrap()), [c.id]);
    assert_eq!(by_state(JobState::Running), Vec::<JobId>::new());

    // Terminal → active (a retry by hand): back in the index.
    set_state(&store, b.id, JobState::Queued);
    assert_eq!(ids(&store.active_jobs().unwrap()), [b.id, c.id]);
    assert_eq!(by_state(JobState::Queued), [c.id, b.id]);
    assert_eq!(by_state(JobState::Failed), Vec::<JobId>::new());
}

#[test]
fn several_changes_to_one_job_in_one_write_count_once() {
    let (_dir, store) = temp_store();
    let job = create(&store, "echo", None);
    store
        .write(|tx| {
            let mut j = tx.job(job.id)?.unwrap();
            j.state = JobState::Running;
            tx.put_job(j.clone())?;
            assert_eq!(
                tx.job(job.id)?.unwrap().state,
                JobState::Running,
                "a write sees its own changes"
            );
            j.state = JobState::Succeeded;
            tx.put_job(j)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(count(&store, JobState::Queued), 0);
    assert_eq!(count(&store, JobState::Running), 0);
    assert_eq!(count(&store, JobState::Succeeded), 1);
    assert!(store.active_jobs().unwrap().is_empty());
}

#[test]
fn job_counts_follow_changes_and_survive_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let expected = [
        (JobState::Queued, 2),
        (JobState::Running, 1),
        (JobState::Retrying, 0),
        (JobState::Succeeded, 2),
        (JobState::Failed, 0),
        (JobState::Cancelled, 1),
    ];
    {
        let store = open(dir.path());
        let jobs: Vec<_> = (0..6).map(|_| create(&store, "echo", None)).collect();
        assert_eq!(count(&store, JobState::Queued), 6);
        set_state(&store, jobs[0].id, JobState::Running);
        set_state(&store, jobs[1].id, JobState::Running);
        set_state(&store, jobs[1].id, JobState::Succeeded);
        set_state(&store, jobs[2].id, JobState::Succeeded);
        set_state(&store, jobs[3].id, JobState::Cancelled);
        // Rewriting a job in the state it already has changes no counter.
        set_state(&store, jobs[4].id, JobState::Queued);
        assert_eq!(store.job_counts(), expected);
        store.close().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.job_counts(), expected);
    // And they keep counting from there.
    let id = store.active_jobs().unwrap()[0].id;
    set_state(&store, id, JobState::Failed);
    assert_eq!(count(&store, JobState::Failed), 1);
    assert_eq!(
        count(&store, JobState::Running) + count(&store, JobState::Queued),
        2
    );
}

#[test]
fn list_limit_is_clamped_to_at_least_one() {
    let (_dir, store) = temp_store();
    let _a = create(&store, "echo", None);
    let b = create(&store, "echo", None);
    assert_eq!(
        ids(&store.list_jobs(&JobFilter::default()).unwrap()),
        [b.id]
    );
}
