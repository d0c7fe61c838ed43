//! (d) Sessions: route one message to each of N new sessions (every one spawns a `Session`
//! actor through the `SessionRouter`, appends `message.received` and runs `/status`), then one
//! more message to each live session; and the memory an idle session costs.
//!
//! The baseline, in the same process and run: N raw tokio tasks, each with an mpsc channel,
//! spawned from a map keyed like the router's, sent the same messages. It does no store write
//! and no planning, so it is the floor of "an actor per session".
//!
//! Memory is the growth of the process's resident set from before the sessions exist until
//! they are all idle, divided by N. For RauskuClaw this is an upper bound of the actor's cost:
//! it also holds the store's cache of the events those runs wrote.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentloop::Inbound;
use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};

use crate::harness::Harness;
use crate::report::Row;
use crate::stats::{fmt_rate, fmt_ratio, thousands};

/// Concurrent senders: enough to keep the router's mailbox busy.
const SENDERS: usize = 16;

struct Measured {
    spawn_per_sec: f64,
    route_per_sec: f64,
    bytes_per_idle: f64,
}

pub async fn run(dir: &Path, sessions: usize) -> anyhow::Result<Vec<Row>> {
    eprintln!(
        "(d) baseline: {} raw tokio tasks + channels …",
        thousands(sessions as u64)
    );
    let base = baseline(sessions).await;
    eprintln!("(d) RauskuClaw: {} sessions …", thousands(sessions as u64));
    let ours = rausku(dir, sessions).await?;
    let n = thousands(sessions as u64);
    let spawn_ratio = ours.spawn_per_sec / base.spawn_per_sec;
    let kb = |b: f64| format!("{:.1} KB", b / 1024.0);
    Ok(vec![
        Row {
            scenario: format!("(d) {n} sessions"),
            measure: "sessions spawned/s (first message each)".into(),
            ours: fmt_rate(ours.spawn_per_sec),
            baseline: fmt_rate(base.spawn_per_sec),
            ratio: fmt_ratio(ours.spawn_per_sec, base.spawn_per_sec),
            target: "≥ 0.3×".into(),
            met: Some(spawn_ratio >= 0.3),
        },
        Row {
            scenario: format!("(d) {n} sessions"),
            measure: "messages routed/s (to live sessions)".into(),
            ours: fmt_rate(ours.route_per_sec),
            baseline: fmt_rate(base.route_per_sec),
            ratio: fmt_ratio(ours.route_per_sec, base.route_per_sec),
            target: String::new(),
            met: None,
        },
        Row {
            scenario: format!("(d) {n} sessions"),
            measure: "memory per idle session (RSS growth / N)".into(),
            ours: kb(ours.bytes_per_idle),
            baseline: kb(base.bytes_per_idle),
            ratio: fmt_ratio(ours.bytes_per_idle, base.bytes_per_idle),
            target: "≤ 16 KB".into(),
            met: Some(ours.bytes_per_idle <= 16.0 * 1024.0),
        },
    ])
}

async fn rausku(dir: &Path, n: usize) -> anyhow::Result<Measured> {
    let h = Harness::start(dir).await?;
    // Warm up: the first session pays for lazy initialisation (planner, store trees).
    send_all(&h, 1, "warmup").await?;
    wait_idle(&h, 1).await?;
    let rss_before = rss_bytes();

    let started = Instant::now();
    send_all(&h, n, "s").await?;
    let spawn = started.elapsed();
    wait_idle(&h, n + 1).await?;
    let rss_idle = rss_bytes();

    let started = Instant::now();
    send_all(&h, n, "s").await?;
    let route = started.elapsed();
    wait_idle(&h, n + 1).await?;
    let snapshot = h.sessions().snapshot().await?;
    eprintln!(
        "    live sessions {}, spawned {}, rehydrated {}",
        snapshot.live_sessions, snapshot.stats.spawned, snapshot.stats.rehydrated
    );
    h.stop().await;
    Ok(Measured {
        spawn_per_sec: n as f64 / spawn.as_secs_f64(),
        route_per_sec: n as f64 / route.as_secs_f64(),
        bytes_per_idle: rss_idle.saturating_sub(rss_before) as f64 / n as f64,
    })
}

/// Sends `/status` to sessions `rest:<prefix>-0 … n-1` from [`SENDERS`] tasks.
async fn send_all(h: &Harness, n: usize, prefix: &str) -> anyhow::Result<()> {
    let sessions = h.sessions().clone();
    let gate = Arc::new(Semaphore::new(SENDERS));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let sessions = sessions.clone();
        let key = format!("rest:{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            sessions
                .send(Inbound {
                    key,
                    text: "/status".into(),
                    ..Inbound::default()
                })
                .await
        }));
    }
    for t in tasks {
        t.await?.context("routing a message")?;
    }
    Ok(())
}

/// Waits until `n` sessions exist and none has a run going or a message queued.
async fn wait_idle(h: &Harness, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        h.store.durable().await?;
        let sessions = h.store.sessions()?;
        if sessions.len() >= n && sessions.iter().all(|s| !s.has_pending_work()) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "sessions did not go idle in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Raw tokio: a task and an mpsc channel per key, spawned on first use from a map.
async fn baseline(n: usize) -> Measured {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks: HashMap<String, mpsc::UnboundedSender<String>> = HashMap::with_capacity(n);
    let deliver = |tasks: &mut HashMap<String, mpsc::UnboundedSender<String>>, key: String| {
        let tx = tasks.entry(key).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let mut seen = 0u64;
                while let Some(text) = rx.recv().await {
                    seen += text.len() as u64;
                    let _ = done.send(());
                }
                seen
            });
            tx
        });
        let _ = tx.send("/status".to_owned());
    };
    deliver(&mut tasks, "rest:warmup-0".into());
    recv_n(&mut done_rx, 1).await;
    let rss_before = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        deliver(&mut tasks, format!("rest:s-{i}"));
    }
    recv_n(&mut done_rx, n).await;
    let spawn = started.elapsed();
    let rss_idle = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        deliver(&mut tasks, format!("rest:s-{i}"));
    }
    recv_n(&mut done_rx, n).await;
    let route = started.elapsed();
    drop(tasks);
    Measured {
        spawn_per_sec: n as f64 / spawn.as_secs_f64(),
        route_per_sec: n as f64 / route.as_secs_f64(),
        bytes_per_idle: rss_idle.saturating_sub(rss_before) as f64 / n as f64,
    }
}

async fn recv_n(rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        rx.recv().await;
    }
}

/// The resident set of this process, from `/proc/self/statm` (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
