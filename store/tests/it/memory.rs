//! Memory: entries per scope, lookups by id, keyword search, retention, events, reopening.

use std::time::{Duration, Instant};

use store::memory::{MAX_SEARCH_LIMIT, keywords};
use store::{
    MemoryEntry, MemoryError, MemoryHit, MemoryId, MemoryQuery, MemoryScope, Store, StreamFilter,
    Timestamp,
};

use crate::support::{open, temp_store};

fn global(text: &str) -> MemoryEntry {
    MemoryEntry::new(MemoryScope::Global, text)
}

fn session(id: &str, text: &str) -> MemoryEntry {
    MemoryEntry::new(MemoryScope::session(id), text)
}

fn put(store: &Store, entry: MemoryEntry) -> MemoryEntry {
    store.memory_put(entry).expect("memory_put").entry
}

/// Searches after committing everything written so far. (`Store::settle`, which a search
/// runs, does not wait for a commit the committer thread has already started; see
/// `search_sees_a_write_made_just_before`.)
fn search(store: &Store, query: MemoryQuery) -> Vec<MemoryHit> {
    store.flush_blocking().unwrap();
    store.memory_search(&query).expect("memory_search")
}

fn texts(hits: &[MemoryHit]) -> Vec<&str> {
    hits.iter().map(|h| h.entry.text.as_str()).collect()
}

#[test]
fn entries_are_found_by_id_counted_and_deleted() {
    let (_dir, store) = temp_store();
    let g = put(
        &store,
        global("the staging host is stg-1").with_tags(["infra"]),
    );
    let s = put(
        &store,
        session("s1", "prefer small PRs").with_source("job-123"),
    );

    assert_eq!(store.memory_get(g.id).unwrap(), Some(g.clone()));
    assert_eq!(store.memory_get(s.id).unwrap(), Some(s.clone()));
    assert_eq!(store.memory_get(MemoryId::new()).unwrap(), None);
    assert_eq!(store.memory_count(&MemoryScope::Global).unwrap(), 1);
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 1);
    assert_eq!(store.memory_count(&MemoryScope::session("s2")).unwrap(), 0);

    assert_eq!(store.memory_delete(s.id).unwrap(), Some(s.clone()));
    assert_eq!(store.memory_delete(s.id).unwrap(), None);
    assert_eq!(store.memory_get(s.id).unwrap(), None);
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 0);
    let q = MemoryQuery::new(MemoryScope::session("s1"), "small PRs").include_global(false);
    assert!(search(&store, q).is_empty());
}

#[test]
fn invalid_entries_are_refused_and_not_written() {
    let (_dir, store) = temp_store();
    let bad = global("x").with_tags(["ok", ""]);
    let id = bad.id;
    match store.memory_put(bad) {
        Err(MemoryError::Invalid { field, .. }) => assert_eq!(field, "tags[1]"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(store.memory_get(id).unwrap(), None);
    assert_eq!(store.memory_count(&MemoryScope::Global).unwrap(), 0);
    assert!(matches!(
        store.memory_search(&MemoryQuery::new(MemoryScope::Global, " - ")),
        Err(MemoryError::Invalid { field, .. }) if field == "query"
    ));
}

#[test]
fn search_ranks_by_matched_words_then_tags_then_recency() {
    let (_dir, store) = temp_store();
    put(
        &store,
        global("deploy checklist: run the staging smoke tests"),
    );
    put(&store, global("staging deploys need an approval"));
    put(&store, global("nothing to see here"));
    put(
        &store,
        global("the staging database is pg-2").with_tags(["deploy"]),
    );
    put(&store, global("lunch is at noon"));

    let hits = search(
        &store,
        MemoryQuery::new(MemoryScope::Global, "Staging DEPLOY?"),
    );
    // Two words each: the tagged one first, then the newer of the others. `deploys` is not
    // `deploy` (no stemming), so that entry matches one word.
    assert_eq!(
        texts(&hits),
        [
            "the staging database is pg-2",
            "deploy checklist: run the staging smoke tests",
            "staging deploys need an approval",
        ]
    );
    assert!(hits[0].score > hits[1].score && hits[1].score > hits[2].score);
    assert_eq!(hits[1].score, 2.0);
    assert_eq!(hits[2].score, 1.0);

    // Equal scores: newest first.
    let hits = search(&store, MemoryQuery::new(MemoryScope::Global, "staging"));
    assert_eq!(hits.len(), 3);
    assert!(hits.windows(2).all(|w| w[0].entry.id > w[1].entry.id));

    assert!(search(&store, MemoryQuery::new(MemoryScope::Global, "kubernetes")).is_empty());
}

#[test]
fn sessions_see_their_own_entries_and_optionally_the_global_ones() {
    let (_dir, store) = temp_store();
    put(&store, global("the on-call rota is in the wiki"));
    put(&store, session("a", "session a uses the blue cluster"));
    put(&store, session("ab", "session ab uses the green cluster"));

    let a = MemoryScope::session("a");
    let hits = search(&store, MemoryQuery::new(a.clone(), "cluster wiki"));
    // One word each; the newer first. `session:ab` is not seen from `session:a`.
    assert_eq!(
        texts(&hits),
        [
            "session a uses the blue cluster",
            "the on-call rota is in the wiki"
        ]
    );
    let hits = search(
        &store,
        MemoryQuery::new(a.clone(), "cluster wiki").include_global(false),
    );
    assert_eq!(texts(&hits), ["session a uses the blue cluster"]);
    // The global scope does not see sessions.
    let hits = search(&store, MemoryQuery::new(MemoryScope::Global, "cluster"));
    assert!(hits.is_empty(), "{hits:?}");
}

#[test]
fn limit_caps_results_and_is_clamped() {
    let (_dir, store) = temp_store();
    for i in 0..(MAX_SEARCH_LIMIT + 10) {
        put(&store, global(&format!("note number {i}")));
    }
    let q = MemoryQuery::new(MemoryScope::Global, "note");
    assert_eq!(search(&store, q.clone()).len(), 5);
    assert_eq!(search(&store, q.clone().limit(0)).len(), 1);
    let all = search(&store, q.limit(1000));
    assert_eq!(all.len(), MAX_SEARCH_LIMIT);
    // The newest, best first.
    assert_eq!(
        all[0].entry.text,
        format!("note number {}", MAX_SEARCH_LIMIT + 9)
    );
}

#[test]
fn writing_an_id_again_replaces_the_entry_in_place_or_across_scopes() {
    let (_dir, store) = temp_store();
    let first = put(&store, session("s1", "first draft"));
    let written = store
        .memory_put(session("s1", "second draft").with_id(first.id))
        .unwrap();
    assert!(written.replaced && written.dropped.is_empty());
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 1);
    assert_eq!(
        store.memory_get(first.id).unwrap().unwrap().text,
        "second draft"
    );

    // Moved to the global scope: counted there, gone from the session.
    let moved = store
        .memory_put(global("promoted draft").with_id(first.id))
        .unwrap();
    assert!(moved.replaced);
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 0);
    assert_eq!(store.memory_count(&MemoryScope::Global).unwrap(), 1);
    let q = MemoryQuery::new(MemoryScope::session("s1"), "draft").include_global(false);
    assert!(search(&store, q).is_empty());
    let q = MemoryQuery::new(MemoryScope::session("s1"), "draft");
    assert_eq!(texts(&search(&store, q)), ["promoted draft"]);
}

#[test]
fn a_full_scope_drops_its_oldest_entries() {
    let (_dir, store) = temp_store();
    let other = put(&store, session("other", "kept note"));
    let mut ids = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..5 {
        let w = store
            .memory_put_capped(session("s1", &format!("note {i}")), 3)
            .unwrap();
        ids.push(w.entry.id);
        dropped.extend(w.dropped);
    }
    assert_eq!(dropped, ids[..2]);
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 3);
    for id in &ids[..2] {
        assert_eq!(store.memory_get(*id).unwrap(), None);
    }
    let q = MemoryQuery::new(MemoryScope::session("s1"), "note").include_global(false);
    assert_eq!(texts(&search(&store, q)), ["note 4", "note 3", "note 2"]);
    // Other scopes are untouched.
    assert_eq!(store.memory_get(other.id).unwrap(), Some(other));

    // Deleted entries are not dropped twice, and a lower cap trims several at once.
    store.memory_delete(ids[2]).unwrap();
    let w = store.memory_put_capped(session("s1", "note 5"), 1).unwrap();
    assert_eq!(w.dropped, ids[3..]);
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 1);
}

#[tokio::test]
async fn writes_and_deletes_are_events_on_the_scope_stream() {
    let (_dir, store) = temp_store();
    let a = store
        .memory_put_capped(
            session("s1", "secret-ish text")
                .with_tags(["t"])
                .with_source("job-1"),
            1,
        )
        .unwrap()
        .entry;
    let b = store
        .memory_put_capped(session("s1", "second"), 1)
        .unwrap()
        .entry;
    store.memory_delete(b.id).unwrap();
    store.durable().await.unwrap();

    let events = store
        .events_after(
            &StreamFilter::Stream(MemoryScope::session("s1").stream()),
            0,
            10,
        )
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["memory.written", "memory.written", "memory.deleted"]
    );
    let first = &events[0].data;
    assert_eq!(first["id"], a.id.to_string());
    assert_eq!(first["scope"], "session:s1");
    assert_eq!(first["tags"], serde_json::json!(["t"]));
    assert_eq!(first["source"], "job-1");
    assert_eq!(first["bytes"], "secret-ish text".len());
    assert_eq!(first["replaced"], false);
    assert!(first.get("text").is_none(), "the text stays out of events");
    assert_eq!(events[1].data["dropped"], serde_json::json!([a.id]));
    assert_eq!(events[2].data["id"], b.id.to_string());
}

#[test]
fn memory_survives_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let (g, s) = {
        let store = open(dir.path());
        let g = put(&store, global("remember the milk").with_tags(["home"]));
        let s = put(&store, session("s1", "the milk is oat milk"));
        store.close().unwrap();
        (g, s)
    };
    let store = open(dir.path());
    assert_eq!(store.memory_get(g.id).unwrap(), Some(g));
    assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 1);
    let hits = store
        .memory_search(&MemoryQuery::new(MemoryScope::session("s1"), "milk"))
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].entry, s, "the newer entry wins the tie");
}

#[test]
fn concurrent_writers_keep_counts_and_the_cap_exact() {
    let (_dir, store) = temp_store();
    let dropped = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|t| {
        for w in 0..4 {
            let (store, dropped) = (&store, &dropped);
            t.spawn(move || {
                for i in 0..50 {
                    put(
                        store,
                        session("s1", &format!("writer {w} entry {i} shared")),
                    );
                    let full = store
                        .memory_put_capped(session("s2", &format!("writer {w} entry {i}")), 10)
                        .unwrap();
                    dropped.lock().unwrap().extend(full.dropped);
                }
            });
        }
    });
    assert_eq!(
        store.memory_count(&MemoryScope::session("s1")).unwrap(),
        200
    );
    let q = MemoryQuery::new(MemoryScope::session("s1"), "shared").limit(MAX_SEARCH_LIMIT);
    assert_eq!(search(&store, q).len(), MAX_SEARCH_LIMIT);

    assert_eq!(store.memory_count(&MemoryScope::session("s2")).unwrap(), 10);
    let mut dropped = dropped.into_inner().unwrap();
    assert_eq!(dropped.len(), 190);
    dropped.sort();
    dropped.dedup();
    assert_eq!(dropped.len(), 190, "no entry is dropped twice");
    let q = MemoryQuery::new(MemoryScope::session("s2"), "writer")
        .include_global(false)
        .limit(MAX_SEARCH_LIMIT);
    let kept = search(&store, q);
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|h| !dropped.contains(&h.entry.id)));
}

#[test]
fn keyword_search_over_a_full_scope_is_fast_enough() {
    let (_dir, store) = temp_store();
    let text = "a long-ish note about deployments, rollbacks and the staging cluster ".repeat(8);
    for i in 0..2_000 {
        put(&store, global(&format!("{text} #{i}")));
    }
    store.flush_blocking().unwrap();
    let started = Instant::now();
    let hits = store
        .memory_search(&MemoryQuery::new(
            MemoryScope::Global,
            "staging rollbacks 1999",
        ))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(hits[0].entry.text, format!("{text} #1999"));
    // Generous: a debug build on a busy machine.
    assert!(took < Duration::from_secs(5), "search took {took:?}");
    assert_eq!(keywords(&hits[0].entry.text).last().unwrap(), "1999");
    assert!(hits[0].entry.created_at <= Timestamp::now());
}

/// A search must see a write that returned before it started, even while the committer is
/// still applying the batch that holds it (regression: `Store::settle` used to skip an
/// in-flight commit).
#[test]
fn search_sees_a_write_made_just_before() {
    let (_dir, store) = temp_store();
    let mut misses = 0;
    for i in 0..5_000u64 {
        let scope = MemoryScope::session(format!("s{i}"));
        let word = format!("w{i}");
        put(
            &store,
            MemoryEntry::new(scope.clone(), format!("note {word}")),
        );
        // Give the committer thread time to take the write.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros(i % 50 * 4) {}
        let q = MemoryQuery::new(scope, &word).include_global(false);
        if store.memory_search(&q).unwrap().is_empty() {
            misses += 1;
        }
    }
    assert_eq!(misses, 0, "searches that missed the write just made");
}
