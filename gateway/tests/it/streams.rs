//! Server-Sent Events: a job's stream (ends after its terminal state, `Last-Event-ID` resumes),
//! the global feed streamed and paged.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Frame, Gateway, SseReader};

const DEADLINE: Duration = Duration::from_secs(15);

/// Every frame until the stream ends, failing after `DEADLINE`.
async fn read_to_end(sse: &mut SseReader) -> Vec<Frame> {
    let deadline = Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while let Some(f) = sse.next(deadline).await {
        frames.push(f);
    }
    frames
}

#[tokio::test]
async fn a_job_stream_ends_after_the_terminal_state_and_resumes() {
    let gw = Gateway::start().await;
    let job = gw
        .create_job(json!({"type": "sleep", "input": {"ms": 300}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();

    let mut sse = SseReader::open(&gw, &format!("/v1/jobs/{id}/stream"), &[]).await;
    let frames = read_to_end(&mut sse).await;
    // First the job as it is on connect (no id), then what happens after, each with its seq.
    assert_eq!(frames[0].event.as_deref(), Some("job"), "{frames:?}");
    assert!(frames[0].id.is_none());
    assert_eq!(frames[0].json()["id"], id.as_str());
    let jobs: Vec<Value> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("job"))
        .map(Frame::json)
        .collect();
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(
        states.last(),
        Some(&"succeeded"),
        "the last job frame is the terminal state: {states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "succeeded").count(),
        1,
        "the terminal state is sent once, then the stream ends: {states:?}"
    );
    if states[0] != "succeeded" {
        // Connected while it was queued or running: it ends right after the terminal state.
        assert_eq!(
            frames.last().unwrap().event.as_deref(),
            Some("job"),
            "{frames:?}"
        );
        assert!(states.contains(&"running"), "{states:?}");
    }
    let logs: Vec<Value> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("log"))
        .map(Frame::json)
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap().contains("sleeping 300 ms")),
        "{logs:?}"
    );
    let seqs: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f.id.expect("stored events carry their seq"))
        .collect();
    assert!(!seqs.is_empty());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing: {seqs:?}");

    // Resume after the first seq: nothing at or before it comes again, every log line after it
    // does, and the stream still ends.
    let resume_after = seqs[0];
    let mut sse = SseReader::open(
        &gw,
        &format!("/v1/jobs/{id}/stream"),
        &[("last-event-id", &resume_after.to_string())],
    )
    .await;
    let resumed = read_to_end(&mut sse).await;
    assert_eq!(resumed[0].id, None, "the current job first");
    assert_eq!(resumed[0].json()["state"], "succeeded");
    assert!(
        resumed[1..].iter().all(|f| f.id.unwrap() > resume_after),
        "{resumed:?}"
    );
    let resumed_logs: Vec<u64> = resumed
        .iter()
        .filter(|f| f.event.as_deref() == Some("log"))
        .map(|f| f.id.unwrap())
        .collect();
    let stored = gw
        .get(&format!("/v1/jobs/{id}/logs?after={resume_after}"))
        .await;
    let stored_logs: Vec<u64> = stored.json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        resumed_logs, stored_logs,
        "the log lines after {resume_after}"
    );

    // Resuming after the last event of a finished job: the job, then the end.
    let events = gw.job_events(&id).await;
    let end = events.last().unwrap()["seq"].as_u64().unwrap();
    let mut sse = SseReader::open(
        &gw,
        &format!("/v1/jobs/{id}/stream"),
        &[("last-event-id", &end.to_string())],
    )
    .await;
    let tail = read_to_end(&mut sse).await;
    assert_eq!(tail.len(), 1, "{tail:?}");
    assert_eq!(tail[0].json()["state"], "succeeded");
}

#[tokio::test]
async fn the_global_feed_pages_and_streams() {
    let gw = Gateway::start().await;
    let a = gw
        .create_job(json!({"type": "echo", "input": {"n": 1}}))
        .await;
    let a = a["id"].as_str().unwrap().to_string();
    gw.wait_state(&a, "succeeded", DEADLINE).await;
    gw.wait_events(&a, "job.succeeded", DEADLINE, |ev| {
        ev.iter().any(|e| e["kind"] == "job.succeeded")
    })
    .await;

    // Paging with `after` and `limit` gives the same events as one big page, dense, in order.
    let all = gw.all_events().await;
    assert!(all.len() >= 3, "{all:?}");
    let gseqs: Vec<u64> = all
        .iter()
        .map(|e| e["global_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        gseqs,
        (1..=gseqs.len() as u64).collect::<Vec<_>>(),
        "dense from 1"
    );
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let r = gw.get(&format!("/v1/events?after={after}&limit=2")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["events"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        if page.is_empty() {
            assert_eq!(
                r.json["next_after"], after,
                "an empty page keeps the position"
            );
            break;
        }
        after = r.json["next_after"].as_u64().unwrap();
        assert_eq!(after, page.last().unwrap()["global_seq"].as_u64().unwrap());
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let r = gw
        .get(&format!("/v1/events?after={}", gseqs[gseqs.len() - 2]))
        .await;
    assert_eq!(r.json["events"].as_array().unwrap().len(), 1);

    // The stream starts with new events only, and carries each with its global seq as `id:`.
    let mut sse = SseReader::open(&gw, "/v1/events/stream", &[]).await;
    let b = gw
        .create_job(json!({"type": "echo", "input": {"n": 2}}))
        .await;
    let c = gw
        .create_job(json!({"type": "sleep", "input": {"ms": 10}}))
        .await;
    let want: HashSet<String> = [&b, &c]
        .iter()
        .map(|j| format!("job:{}", j["id"].as_str().unwrap()))
        .collect();
    let mut finished = HashSet::new();
    let mut ids = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while finished.len() < 2 {
        let f = sse
            .next(deadline)
            .await
            .expect("the global stream does not end");
        let id = f.id.expect("id: on every event");
        let event = f.json();
        assert_eq!(event["global_seq"], id);
        assert_eq!(
            f.event.as_deref(),
            event["kind"].as_str(),
            "event: is the kind"
        );
        let stream = event["stream"].as_str().unwrap().to_string();
        assert_ne!(stream, format!("job:{a}"), "no replay of old events");
        if event["kind"] == "job.succeeded" && want.contains(&stream) {
            finished.insert(stream);
        }
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "increasing without gaps: {ids:?}"
    );
    assert!(ids[0] > *gseqs.last().unwrap(), "only new events: {ids:?}");

    // `Last-Event-ID` resumes the global stream too.
    let from = ids[0];
    let mut sse = SseReader::open(
        &gw,
        "/v1/events/stream",
        &[("last-event-id", &from.to_string())],
    )
    .await;
    let first = sse.next(Instant::now() + DEADLINE).await.unwrap();
    assert_eq!(first.id, Some(from + 1));
}
