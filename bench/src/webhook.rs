//! Scenario (e): signed GitHub webhook ingest over loopback, 8 KB payloads, many concurrent
//! keep-alive clients (as GitHub's delivery workers are).
//!
//! RauskuClaw: `POST /webhooks/github` of the real binary ([`Gateway`]) with a webhook secret:
//! the signature is checked, the JSON parsed and mapped, the delivery id deduped and the
//! delivery stored and flushed before the 202; the `GithubChannel` then routes every delivery
//! to its session, on the same two cores, while the load goes on.
//!
//! Baseline: an axum hello-world in this process, on its own runtime ([`ServerThread`]): a
//! `POST /` handler that takes the body and answers `Hello, World!`. It is sent the very same
//! requests (bodies, headers and all).
//!
//! The payloads are a real `push` delivery from the fixtures, compacted as GitHub sends it and
//! padded to exactly 8,192 bytes through its commit message, on 16 branches (16 sessions).
//! Each request has its own `X-GitHub-Delivery`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::routing::post;
use channels::github::signature::sign;
use serde_json::Value;

use crate::load::{LoadShape, MakeRequest, against_gateway, drive, rows};
use crate::report::Row;
use crate::servers::{ServerThread, serve_axum};
use crate::stats::thousands;

/// The size of every payload.
pub const PAYLOAD_BYTES: usize = 8192;
/// Branches pushed to: deliveries go to this many sessions.
const BRANCHES: usize = 16;
/// The webhook secret both sides are configured with.
const SECRET: &str = "bench-webhook-secret";
/// A real delivery (GitHub's `push` on a new branch, from the octokit fixtures).
const FIXTURE: &str =
    include_str!("../../channels/tests/fixtures/github-webhooks/push/with-new-branch.payload.json");

/// One signed delivery body.
struct Signed {
    body: Bytes,
    signature: String,
}

pub async fn run(base: &Path, shape: LoadShape) -> anyhow::Result<Vec<Row>> {
    let payloads = Arc::new(payloads()?);
    let scenario = format!(
        "(e) signed webhook ingest, {} B payloads, {} clients, {} requests",
        thousands(PAYLOAD_BYTES as u64),
        shape.clients,
        thousands(shape.requests as u64)
    );
    // Delivery ids differ between runs of the bench too (the data directory is new anyway).
    let run_id = uuid::Uuid::now_v7().simple().to_string();

    eprintln!("(e) baseline: axum hello-world, the same requests …");
    let raw = {
        let app = Router::new().route("/", post(|_body: Bytes| async { "Hello, World!" }));
        let server = ServerThread::start("baseline-hello", move |listener| {
            serve_axum(listener, app, "hello-world server")
        })?;
        drive(
            shape,
            deliveries(
                format!("{}/", server.url()),
                payloads.clone(),
                run_id.clone(),
            ),
            StatusCode::OK,
        )
        .await
        .context("(e) baseline")?
    };
    raw.report();

    let key = format!("bench-{run_id}");
    let env = [
        ("RAUSKU_GITHUB_WEBHOOK_SECRET", SECRET),
        ("RAUSKU_WEBHOOK_RATE_LIMIT_PER_SEC", "1000000"),
        ("RAUSKU_WEBHOOK_RATE_LIMIT_BURST", "1000000"),
    ];
    let ours = against_gateway(
        "(e)",
        base,
        &key,
        &env,
        shape,
        StatusCode::ACCEPTED,
        |url| deliveries(format!("{url}/webhooks/github"), payloads, run_id.clone()),
    )
    .await?;
    Ok(rows(&scenario, ours.as_ref(), &raw, 0.3))
}

/// Delivery `i`: payload `i % BRANCHES`, delivery id `<run>-<i>`.
fn deliveries(url: String, payloads: Arc<Vec<Signed>>, run_id: String) -> MakeRequest {
    Arc::new(move |client, i| {
        let p = &payloads[i % payloads.len()];
        client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "GitHub-Hookshot/bench")
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("{run_id}-{i}"))
            .header("x-hub-signature-256", &p.signature)
            .body(p.body.clone())
    })
}

/// The fixture on each branch, compacted, padded to [`PAYLOAD_BYTES`] and signed.
fn payloads() -> anyhow::Result<Vec<Signed>> {
    let fixture: Value = serde_json::from_str(FIXTURE).context("the push fixture")?;
    (0..BRANCHES)
        .map(|b| {
            let mut p = fixture.clone();
            p["ref"] = format!("refs/heads/bench-{b}").into();
            p["head_commit"]["message"] = "".into();
            let bare = serde_json::to_vec(&p)?.len();
            anyhow::ensure!(
                bare < PAYLOAD_BYTES,
                "the fixture is {bare} bytes, more than {PAYLOAD_BYTES}"
            );
            p["head_commit"]["message"] = "x".repeat(PAYLOAD_BYTES - bare).into();
            let body = serde_json::to_vec(&p)?;
            debug_assert_eq!(body.len(), PAYLOAD_BYTES);
            Ok(Signed {
                signature: sign(SECRET.as_bytes(), &body),
                body: body.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_8_kb_json_on_their_own_branch() {
        let p = payloads().unwrap();
        assert_eq!(p.len(), BRANCHES);
        for (b, s) in p.iter().enumerate() {
            assert_eq!(s.body.len(), PAYLOAD_BYTES);
            let v: Value = serde_json::from_slice(&s.body).unwrap();
            assert_eq!(v["ref"], format!("refs/heads/bench-{b}"));
            assert!(s.signature.starts_with("sha256=") && s.signature.len() == 7 + 64);
        }
    }
}
