//! Events: dense seqs, reads after a position, followers (replay → live, lag), and durability
//! before visibility.

use std::time::Duration;

use serde_json::json;
use store::{
    Event, Follower, GLOBAL_STREAM, NewEvent, Store, StoreConfig, StoreError, StreamFilter,
};

use crate::support::{open, temp_store};

/// Appends one event per `(stream, n)` in a single write.
fn append(store: &Store, events: &[(&str, u64)]) {
    store
        .write(|tx| {
            for (stream, n) in events {
                tx.append(NewEvent::new(*stream, "test.event", json!({ "n": n })));
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn global_seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.global_seq).collect()
}

fn stream(name: &str) -> StreamFilter {
    StreamFilter::Stream(name.to_string())
}

/// The next event of a follower, or a panic naming what was awaited after 10 s.
async fn next(follower: &mut Follower, what: &str) -> std::sync::Arc<Event> {
    match tokio::time::timeout(Duration::from_secs(10), follower.next()).await {
        Ok(event) => event.unwrap(),
        Err(_) => panic!(
            "no event within 10 s while waiting for {what} (follower at {})",
            follower.position()
        ),
    }
}

#[tokio::test]
async fn seqs_are_dense_per_stream_and_globally_also_after_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let store = open(dir.path());
        append(&store, &[("a", 1), ("b", 1), ("a", 2)]);
        append(&store, &[("b", 2)]);
        append(&store, &[("a", 3), ("a", 4), ("c", 1)]);
        store.durable().await.unwrap();

        let a = store.events_after(&stream("a"), 0, 100).unwrap();
        assert_eq!(seqs(&a), [1, 2, 3, 4]);
        assert_eq!(
            a.iter()
                .map(|e| e.data["n"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(
            seqs(&store.events_after(&stream("b"), 0, 100).unwrap()),
            [1, 2]
        );
        let all = store.events_after(&StreamFilter::Global, 0, 100).unwrap();
        assert_eq!(global_seqs(&all), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            all.iter()
                .map(|e| (e.stream.as_str(), e.seq))
                .collect::<Vec<_>>(),
            [
                ("a", 1),
                ("b", 1),
                ("a", 2),
                ("b", 2),
                ("a", 3),
                ("a", 4),
                ("c", 1)
            ]
        );

        // After a position, exclusive, and at most `limit`.
        assert_eq!(
            seqs(&store.events_after(&stream("a"), 2, 100).unwrap()),
            [3, 4]
        );
        assert_eq!(
            seqs(&store.events_after(&stream("a"), 1, 2).unwrap()),
            [2, 3]
        );
        assert_eq!(
            global_seqs(&store.events_after(&StreamFilter::Global, 5, 100).unwrap()),
            [6, 7]
        );
        assert_eq!(
            global_seqs(&store.events_after(&StreamFilter::Global, 2, 3).unwrap()),
            [3, 4, 5]
        );
        assert!(store.events_after(&stream("a"), 4, 100).unwrap().is_empty());
        assert!(
            store
                .events_after(&stream("nope"), 0, 100)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.stream_head("a").unwrap(), 4);
    }
    let store = open(dir.path());
    append(&store, &[("a", 5), ("d", 1)]);
    store.durable().await.unwrap();
    let a = store.events_after(&stream("a"), 3, 100).unwrap();
    assert_eq!(seqs(&a), [4, 5]);
    assert_eq!(global_seqs(&a), [6, 8]);
    assert_eq!(
        global_seqs(&store.events_after(&StreamFilter::Global, 6, 100).unwrap()),
        [7, 8, 9]
    );
    assert_eq!(
        store.events_after(&StreamFilter::Global, 0, 100).unwrap()[8].stream,
        "d"
    );
    assert_eq!(GLOBAL_STREAM, "global");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_started_mid_stream_sees_every_event_once_across_replay_and_live() {
    let (_dir, store) = temp_store();
    for n in 1..=50 {
        append(&store, &[("s", n), ("noise", n)]);
    }
    store.durable().await.unwrap();

    // Another thread keeps appending while the followers replay and then go live.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 51..=300 {
                if n % 3 == 0 {
                    append(&store, &[("noise", n), ("s", n)]);
                } else {
                    append(&store, &[("s", n)]);
                }
                if n % 50 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut by_stream = Follower::new(&store, stream("s"), 25);
    let mut global = Follower::new(&store, StreamFilter::Global, 40);

    let mut got = Vec::new();
    while got.len() < 275 {
        let e = next(&mut by_stream, "stream `s`").await;
        assert_eq!(e.stream, "s");
        assert_eq!(
            e.data["n"].as_u64(),
            Some(e.seq),
            "the event at seq {} is the one written there",
            e.seq
        );
        got.push(e.seq);
    }
    assert_eq!(
        got,
        (26..=300).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(by_stream.position(), 300);

    writer.join().unwrap();
    store.durable().await.unwrap();
    let total = store.bus().durable_horizon();
    let noise = (51..=300).filter(|n| n % 3 == 0).count() as u64;
    assert_eq!(
        total,
        100 + 250 + noise,
        "50 pairs, then 250 on `s` and the noise"
    );
    let mut global_seen = Vec::new();
    while global_seen.len() < (total - 40) as usize {
        global_seen.push(next(&mut global, "the global feed").await.global_seq);
    }
    assert_eq!(global_seen, (41..=total).collect::<Vec<_>>());
    // Nothing more, and nothing duplicated, is pending.
    assert!(by_stream.try_next_stored().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lags_behind_a_tiny_bus_catches_up_from_the_store() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::open(StoreConfig {
        bus_capacity: 1,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let mut follower = Follower::new(&store, stream("s"), 0);
    let mut global = Follower::new(&store, StreamFilter::Global, 0);

    for n in 1..=5 {
        append(&store, &[("s", n)]);
    }
    store.durable().await.unwrap();
    for want in 1..=5 {
        assert_eq!(next(&mut follower, "the first events").await.seq, want);
    }
    assert_eq!(follower.lagged(), 0);
    for want in 1..=5 {
        assert_eq!(next(&mut global, "the first events").await.global_seq, want);
    }

    // Now live: publish far more than the bus holds while nobody reads.
    for n in 6..=400 {
        append(&store, &[("s", n), ("other", n)]);
    }
    store.durable().await.unwrap();

    let mut got = Vec::new();
    while got.len() < 395 {
        got.push(next(&mut follower, "events after the lag").await.seq);
    }
    assert_eq!(got, (6..=400).collect::<Vec<_>>());
    assert!(
        follower.lagged() >= 1,
        "the follower must have lagged for this test to mean anything"
    );

    let mut all = Vec::new();
    while all.len() < 2 * 395 {
        all.push(next(&mut global, "the global feed").await.global_seq);
    }
    assert_eq!(all, (6..=795).collect::<Vec<_>>());
    assert!(global.lagged() >= 1);
}

#[tokio::test]
async fn append_at_predicts_the_positions_events_get() {
    let dir = tempfile::TempDir::new().unwrap();
    let write = |store: &Store, streams: &[&str]| {
        store
            .write(|tx| {
                streams
                    .iter()
                    .map(|s| tx.append_at(NewEvent::new(*s, "test.event", json!({}))))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .unwrap()
    };
    let mut predicted = Vec::new();
    {
        let store = open(dir.path());
        // Staged and not yet committed, then committed, then mixed in one write.
        predicted.extend(write(&store, &["a", "b", "a"]));
        predicted.extend(write(&store, &["a"]));
        store.durable().await.unwrap();
        predicted.extend(write(&store, &["b", "a", "c"]));
        store.durable().await.unwrap();
    }
    // After a reopen the heads come from sled.
    let store = open(dir.path());
    predicted.extend(write(&store, &["c", "a"]));
    store.durable().await.unwrap();
    let events = store.events_after(&StreamFilter::Global, 0, 100).unwrap();
    let actual: Vec<_> = events.iter().map(|e| (e.seq, e.global_seq)).collect();
    let predicted: Vec<_> = predicted.iter().map(|p| (p.seq, p.global_seq)).collect();
    assert_eq!(predicted, actual);
    assert_eq!(
        actual,
        [
            (1, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (2, 5),
            (4, 6),
            (1, 7),
            (2, 8),
            (5, 9)
        ]
    );
}

#[tokio::test]
async fn events_become_visible_once_durable() {
    let (_dir, store) = temp_store();
    let mut follower = Follower::new(&store, stream("s"), 0);
    append(&store, &[("s", 1), ("s", 2)]);
    store.durable().await.unwrap();
    // `durable` resolves only after the committer flushed and published.
    assert!(store.bus().durable_horizon() >= 2);
    assert_eq!(
        seqs(&store.events_after(&stream("s"), 0, 10).unwrap()),
        [1, 2]
    );
    assert_eq!(follower.try_next_stored().unwrap().map(|e| e.seq), Some(1));
    assert_eq!(next(&mut follower, "seq 2").await.seq, 2);
}

#[tokio::test]
async fn events_written_but_not_flushed_are_invisible_to_readers_and_followers() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let store = open(dir.path());
        append(&store, &[("s", 1)]);
        store.durable().await.unwrap();
        let mut follower = Follower::new(&store, stream("s"), 0);
        assert_eq!(next(&mut follower, "seq 1").await.seq, 1);

        // With the committer stopped nothing written from now on is ever flushed by it: the
        // write is in sled's tree, but no reader may see it.
        store.close().unwrap();
        append(&store, &[("s", 2)]);
        assert_eq!(
            store.stream_head("s").unwrap(),
            2,
            "the write itself happened"
        );
        assert_eq!(store.bus().durable_horizon(), 1);
        assert_eq!(seqs(&store.events_after(&stream("s"), 0, 10).unwrap()), [1]);
        assert_eq!(
            global_seqs(&store.events_after(&StreamFilter::Global, 0, 10).unwrap()),
            [1]
        );
        assert!(follower.try_next_stored().unwrap().is_none());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), follower.next())
                .await
                .is_err()
        );
        assert!(matches!(store.durable().await, Err(StoreError::Closed)));
        store.flush_blocking().unwrap();
    }
    // Once on disk (here: flushed, then reopened) it is visible.
    let store = open(dir.path());
    assert_eq!(
        seqs(&store.events_after(&stream("s"), 0, 10).unwrap()),
        [1, 2]
    );
}

#[test]
fn readers_racing_a_writer_never_see_an_event_before_its_flush() {
    let (_dir, store) = temp_store();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 1..=300 {
                append(&store, &[("s", n)]);
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last_seen = 0;
    while last_seen < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {last_seen} of 300 events visible after 10 s"
        );
        let seen = store.events_after(&StreamFilter::Global, 0, 1000).unwrap();
        // Flush counters are updated before events are published, so whatever a reader sees
        // was counted as flushed already.
        let flushed = store.commit_stats().flushed_events;
        assert!(
            seen.len() as u64 <= flushed,
            "saw {} events but only {flushed} were flushed",
            seen.len()
        );
        assert_eq!(
            global_seqs(&seen),
            (1..=seen.len() as u64).collect::<Vec<_>>(),
            "no gap"
        );
        last_seen = seen.len();
        std::thread::yield_now();
    }
    writer.join().unwrap();
}
