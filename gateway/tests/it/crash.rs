//! SIGKILL under load: every job the gateway acknowledged (2xx) exists after a restart and runs
//! to its end exactly once; nothing acknowledged is missing from the listing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, is_terminal, wait_for, with_json};

const CLIENTS: usize = 8;
const LOAD: Duration = Duration::from_millis(1500);
const RECOVERY: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_job() {
    let mut gw = Gateway::builder()
        .env("RAUSKU_RATE_LIMIT_PER_SEC", "100000")
        .env("RAUSKU_RATE_LIMIT_BURST", "100000")
        .start()
        .await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
        let rb = {
            let client = client.clone();
            let url = gw.url("/v1/jobs");
            let key = gw.key.clone();
            move || {
                client
                    .request(Method::POST, url.clone())
                    .bearer_auth(key.clone())
            }
        };
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = match (c as u64 + i) % 3 {
                    0 => json!({"type": "echo", "input": {"client": c, "i": i}}),
                    1 => json!({"type": "sleep", "input": {"ms": 50}}),
                    _ => json!({"type": "flaky", "input": {"fail_times": 1}, "max_attempts": 3}),
                };
                i += 1;
                match with_json(rb(), &body).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let job = match json_body(resp).await {
                            Some(j) => j,
                            None => {
                                // Headers came, the body did not: not a full acknowledgement.
                                failed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        };
                        acked
                            .lock()
                            .unwrap()
                            .push(job["id"].as_str().expect("id").to_string());
                    }
                    Ok(resp) => panic!("unexpected status {} under load", resp.status()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // The gateway is gone; stop hammering a closed port.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            }
        }));
    }

    // Let the load run, then kill the process while requests are in flight.
    let load_started = Instant::now();
    wait_for(
        "some jobs to be acknowledged",
        Duration::from_secs(20),
        || async {
            (load_started.elapsed() >= LOAD && !acked.lock().unwrap().is_empty()).then_some(())
        },
    )
    .await;
    let acked_before_kill = acked.lock().unwrap().len();
    gw.sigkill();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let failed = failed.load(Ordering::Relaxed);
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(
        unique.len(),
        acked.len(),
        "the gateway never answers two requests with one id"
    );

    gw.restart().await;
    let restart_at = Instant::now();

    // Every acknowledged job exists.
    for id in &acked {
        let r = gw.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            r.status, 200,
            "acknowledged job {id} is missing after the crash: {}",
            r.text
        );
    }

    // Every job (acknowledged or not) reaches its end, and these types all succeed.
    let jobs = wait_for(
        "every job to finish after the restart",
        RECOVERY,
        || async {
            let jobs = gw.all_jobs().await;
            jobs.iter().all(is_terminal).then_some(jobs)
        },
    )
    .await;
    let recovered_in = restart_at.elapsed();
    let by_id: HashMap<&str, &serde_json::Value> = jobs
        .iter()
        .map(|j| (j["id"].as_str().unwrap(), j))
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not listed: {missing:?}"
    );
    let not_succeeded: Vec<&&serde_json::Value> = by_id
        .values()
        .filter(|j| j["state"] != "succeeded")
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "jobs that did not succeed: {not_succeeded:?}"
    );
    for j in by_id.values().filter(|j| j["type"] == "flaky") {
        assert!(
            j["attempt"].as_u64().unwrap() >= 2,
            "flaky fails its first attempt: {j}"
        );
    }

    // Each job finished exactly once, and the per-state counts agree with the jobs.
    // (The job reads can run ahead of the durable feed: wait for every end to be in it.)
    let succeeded_events = wait_for(
        "every job.succeeded in the event feed",
        RECOVERY,
        || async {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for e in gw.all_events().await {
                if e["kind"] == "job.succeeded" {
                    *counts
                        .entry(e["stream"].as_str().unwrap().to_string())
                        .or_default() += 1;
                }
            }
            by_id
                .keys()
                .all(|id| counts.contains_key(&format!("job:{id}")))
                .then_some(counts)
        },
    )
    .await;
    for id in by_id.keys() {
        assert_eq!(
            succeeded_events.get(&format!("job:{id}")),
            Some(&1),
            "job {id} succeeded exactly once"
        );
    }
    let rt = gw.get("/v1/runtime").await;
    assert_eq!(
        rt.json["jobs"]["succeeded"],
        jobs.len(),
        "counts: {}",
        rt.json["jobs"]
    );
    for st in ["queued", "running", "retrying", "failed", "cancelled"] {
        assert_eq!(rt.json["jobs"][st], 0, "{st}: {}", rt.json["jobs"]);
    }

    // A fresh job still works on the recovered store.
    let fresh = gw
        .create_job(json!({"type": "echo", "input": {"after": "crash"}}))
        .await;
    let fresh = gw
        .wait_terminal(fresh["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(fresh["state"], "succeeded");

    eprintln!(
        "crash test: {} acknowledged ({acked_before_kill} before the kill), {failed} requests failed by the kill, \
         {} jobs in the store after restart ({} created but not acknowledged), all succeeded {recovered_in:?} after restart",
        acked.len(),
        jobs.len(),
        jobs.len() - acked.len(),
    );
}

/// Reads a body as JSON, `None` if the connection died first.
async fn json_body(resp: reqwest::Response) -> Option<serde_json::Value> {
    let text = resp.text().await.ok()?;
    serde_json::from_str(&text).ok()
}
