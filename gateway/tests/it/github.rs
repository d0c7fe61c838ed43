//! `POST /webhooks/github` through the real binary: all 273 real payloads signed and stored
//! once; flipped bits and missing or SHA-1 signatures refused with nothing stored; redeliveries
//! answered 200 with nothing new; 404 without a secret; 413; 429 per address; deliveries
//! survive SIGKILL; `github.comment` jobs reach a mock GitHub API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Gateway, Resp, send};

const SECRET: &str = "it-github-webhook-secret";
const FIXTURE_COUNT: usize = 273;

/// `(event, file, body)` of every vendored real payload.
fn fixtures() -> Vec<(String, String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../channels/tests/fixtures/github-webhooks");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let event = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap();
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                out.push((event.clone(), name, std::fs::read(file.path()).unwrap()));
            }
        }
    }
    out.sort();
    assert_eq!(out.len(), FIXTURE_COUNT, "payloads in {}", dir.display());
    out
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `body` as a delivery with the given headers (`None`: header left out).
async fn deliver(
    gw: &Gateway,
    event: Option<&str>,
    delivery: Option<&str>,
    signature: Option<&str>,
    body: Vec<u8>,
) -> Resp {
    let mut rb = gw
        .raw(Method::POST, "/webhooks/github")
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/it");
    if let Some(e) = event {
        rb = rb.header("x-github-event", e);
    }
    if let Some(d) = delivery {
        rb = rb.header("x-github-delivery", d);
    }
    if let Some(s) = signature {
        rb = rb.header("x-hub-signature-256", s);
    }
    send(rb.body(body)).await
}

/// A correctly signed delivery.
async fn signed(gw: &Gateway, event: &str, delivery: &str, body: &[u8]) -> Resp {
    deliver(
        gw,
        Some(event),
        Some(delivery),
        Some(&sign(body)),
        body.to_vec(),
    )
    .await
}

/// The events of the `github` stream.
async fn github_events(gw: &Gateway) -> Vec<Value> {
    gw.all_events()
        .await
        .into_iter()
        .filter(|e| e["stream"] == "github")
        .collect()
}

async fn started(extra: &[(&str, &str)]) -> Gateway {
    let mut b = Gateway::builder()
        .env("RAUSKU_GITHUB_WEBHOOK_SECRET", SECRET)
        // The tests below send hundreds of deliveries from one address.
        .env("RAUSKU_WEBHOOK_RATE_LIMIT_PER_SEC", "100000")
        .env("RAUSKU_WEBHOOK_RATE_LIMIT_BURST", "100000");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b.start().await
}

#[tokio::test]
async fn every_real_payload_is_stored_once_and_tampering_or_redelivery_stores_nothing() {
    let gw = started(&[]).await;
    let all = fixtures();

    // Every payload, signed, with its own delivery id (and no API key).
    for (i, (event, file, body)) in all.iter().enumerate() {
        let id = format!("fixture-{i:03}");
        let r = signed(&gw, event, &id, body).await;
        let want = if event == "ping" { 200 } else { 202 };
        assert_eq!(r.status, want, "{event}/{file}: {}", r.text);
        assert_eq!(r.json["delivery"], id.as_str(), "{}", r.text);
        assert_eq!(r.json["seq"], i as u64 + 1, "{event}/{file}: {}", r.text);
        let outcome = if event == "ping" { "ping" } else { "stored" };
        assert_eq!(r.json["outcome"], outcome);
    }
    // A 2xx means durable: every delivery is on the stream already, once, in order.
    let events = github_events(&gw).await;
    assert_eq!(events.len(), FIXTURE_COUNT);
    for (i, (e, (event, file, body))) in events.iter().zip(&all).enumerate() {
        assert_eq!(e["kind"], "github.received");
        assert_eq!(e["seq"], i as u64 + 1);
        let d = &e["data"];
        assert_eq!(d["delivery"], format!("fixture-{i:03}").as_str());
        assert_eq!(d["event"], event.as_str());
        let key = d["session_key"].as_str().unwrap();
        assert!(
            key.len() > "github:".len() && key.starts_with("github:"),
            "{key}"
        );
        assert!(d["kind"].as_str().unwrap().starts_with(event.as_str()));
        assert!(d["context"].is_object());
        let original: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(d["payload"], original, "{event}/{file}");
    }
    let stored = github_events(&gw).await.len();

    // One bit flipped in the body: refused, nothing stored.
    for (i, (event, file, body)) in all.iter().enumerate() {
        let signature = sign(body);
        let mut tampered = body.clone();
        let at = i * 7919 % tampered.len();
        tampered[at] ^= 1 << (i % 8);
        let id = format!("tampered-body-{i:03}");
        let r = deliver(&gw, Some(event), Some(&id), Some(&signature), tampered).await;
        let details = r.assert_error(401, "invalid_signature");
        assert!(details.is_object(), "{event}/{file}");
    }
    // One bit flipped in the signature: refused, nothing stored.
    for (i, (event, _, body)) in all.iter().enumerate() {
        let mut signature = sign(body).into_bytes();
        // A hex digit with one bit flipped is another hex digit (or a non-hex byte).
        let at = 7 + i % 64;
        signature[at] = match signature[at] {
            b'0'..=b'8' => signature[at] + 1,
            b'9' => b'8',
            b'a' => b'b',
            c => c ^ 1,
        };
        let signature = String::from_utf8(signature).unwrap();
        let id = format!("tampered-signature-{i:03}");
        let r = deliver(&gw, Some(event), Some(&id), Some(&signature), body.clone()).await;
        r.assert_error(401, "invalid_signature");
    }
    assert_eq!(github_events(&gw).await.len(), stored, "nothing stored");

    // Each delivery again (GitHub's "Redeliver" keeps the id): 200, nothing new.
    for (i, (event, file, body)) in all.iter().enumerate() {
        let id = format!("fixture-{i:03}");
        let r = signed(&gw, event, &id, body).await;
        assert_eq!(r.status, 200, "{event}/{file}: {}", r.text);
        assert_eq!(r.json["outcome"], "duplicate");
        assert_eq!(r.json["seq"], i as u64 + 1);
    }
    // The tampered ids were not remembered: the genuine delivery under one is stored.
    let (event, _, body) = &all[0];
    let r = signed(&gw, event, "tampered-body-000", body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(github_events(&gw).await.len(), stored + 1);

    // Counted by outcome.
    let metrics = send(gw.raw(Method::GET, "/metrics")).await.text;
    let count = |outcome: &str| -> u64 {
        let prefix = format!("rausku_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(count("stored"), FIXTURE_COUNT as u64 - 3 + 1);
    assert_eq!(count("ping"), 3);
    assert_eq!(count("duplicate"), FIXTURE_COUNT as u64);
    assert_eq!(count("invalid_signature"), 2 * FIXTURE_COUNT as u64);
}

#[tokio::test]
async fn the_route_is_off_without_a_secret() {
    let gw = Gateway::start().await;
    let body = br#"{"zen": "x"}"#.to_vec();
    let r = deliver(&gw, Some("ping"), Some("d-1"), Some(&sign(&body)), body).await;
    let _ = r.assert_error(404, "not_found");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RAUSKU_GITHUB_WEBHOOK_SECRET"),
        "{}",
        r.text
    );
    let rt = gw.get("/v1/runtime").await.json;
    assert_eq!(rt["config"]["github_webhook_configured"], false);
    // Without a token `github.comment` exists but is off.
    let t = gw.get("/v1/job-types/github.comment").await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.json["enabled"], false);
}

#[tokio::test]
async fn missing_or_sha1_signatures_bad_headers_and_bodies_are_refused() {
    let gw = started(&[]).await;
    let body = br#"{"action": "created", "repository": {"full_name": "o/r"}}"#.to_vec();

    let r = deliver(&gw, Some("star"), Some("d-1"), None, body.clone()).await;
    r.assert_error(401, "invalid_signature");
    assert!(
        r.text.contains("X-Hub-Signature-256 header is missing"),
        "{}",
        r.text
    );

    // Only the legacy SHA-1 signature.
    let r = send(
        gw.raw(Method::POST, "/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", "star")
            .header("x-github-delivery", "d-2")
            .header(
                "x-hub-signature",
                "sha1=0123456789abcdef0123456789abcdef01234567",
            )
            .body(body.clone()),
    )
    .await;
    r.assert_error(401, "invalid_signature");
    assert!(r.text.contains("SHA-1"), "{}", r.text);
    let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567";
    deliver(&gw, Some("star"), Some("d-3"), Some(sha1), body.clone())
        .await
        .assert_error(401, "invalid_signature");
    // An API key is no substitute for the signature.
    let r = send(
        gw.req(Method::POST, "/webhooks/github")
            .header("x-github-event", "star")
            .header("x-github-delivery", "d-4")
            .body(body.clone()),
    )
    .await;
    r.assert_error(401, "invalid_signature");

    // Signed, but no delivery id / no event / not JSON / not an object: 400 naming the problem.
    let sig = sign(&body);
    let r = deliver(&gw, Some("star"), None, Some(&sig), body.clone()).await;
    let details = r.assert_error(400, "invalid_input");
    assert_eq!(details["field"], "X-GitHub-Delivery");
    let r = deliver(&gw, None, Some("d-5"), Some(&sig), body.clone()).await;
    assert_eq!(
        r.assert_error(400, "invalid_input")["field"],
        "X-GitHub-Event"
    );
    let bad = b"payload=%7B%7D".to_vec();
    let r = deliver(&gw, Some("star"), Some("d-6"), Some(&sign(&bad)), bad).await;
    r.assert_error(400, "invalid_json");
    assert!(r.text.contains("application/json"), "{}", r.text);
    let arr = b"[1, 2]".to_vec();
    let r = deliver(&gw, Some("star"), Some("d-7"), Some(&sign(&arr)), arr).await;
    assert_eq!(r.assert_error(400, "invalid_input")["field"], "body");

    assert!(github_events(&gw).await.is_empty());
    // Wrong method: JSON too.
    let r = send(gw.raw(Method::GET, "/webhooks/github")).await;
    r.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn bodies_up_to_25_mib_are_accepted_and_larger_ones_are_413() {
    let gw = started(&[]).await;
    // 3 MiB: more than axum's default limit, well within GitHub's.
    let big = serde_json::to_vec(&json!({
        "action": "edited",
        "repository": {"full_name": "o/r"},
        "issue": {"number": 1, "body": "x".repeat(3 << 20)},
    }))
    .unwrap();
    let r = signed(&gw, "issues", "big-1", &big).await;
    assert_eq!(r.status, 202, "{}", &r.text[..r.text.len().min(300)]);

    let too_big = vec![b' '; (25 << 20) + 1];
    let sig = sign(&too_big);
    let r = deliver(&gw, Some("issues"), Some("big-2"), Some(&sig), too_big).await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(github_events(&gw).await.len(), 1);
}

#[tokio::test]
async fn deliveries_over_the_per_address_limit_get_429_with_retry_after() {
    let gw = Gateway::builder()
        .env("RAUSKU_GITHUB_WEBHOOK_SECRET", SECRET)
        .env("RAUSKU_WEBHOOK_RATE_LIMIT_PER_SEC", "1")
        .env("RAUSKU_WEBHOOK_RATE_LIMIT_BURST", "2")
        .start()
        .await;
    let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
    assert_eq!(signed(&gw, "ping", "p-1", &body).await.status, 200);
    assert_eq!(signed(&gw, "ping", "p-2", &body).await.status, 200);
    let r = signed(&gw, "ping", "p-3", &body).await;
    r.assert_error(429, "rate_limited");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // The limit is checked before the signature: an unsigned flood is refused cheaply too.
    deliver(&gw, Some("ping"), Some("p-4"), None, body.clone())
        .await
        .assert_error(429, "rate_limited");
    // API keys have their own budget.
    assert_eq!(gw.get("/v1/jobs").await.status, 200);
    // p-3 was not stored; after the wait it is.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = signed(&gw, "ping", "p-3", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["outcome"], "ping");
    assert_eq!(github_events(&gw).await.len(), 3);
}

#[tokio::test]
async fn acknowledged_deliveries_and_their_dedupe_survive_sigkill() {
    let mut gw = started(&[]).await;
    let all = fixtures();
    for (i, (event, _, body)) in all.iter().take(40).enumerate() {
        let r = signed(&gw, event, &format!("k-{i}"), body).await;
        assert!(r.status == 202 || r.status == 200, "{}", r.text);
    }
    gw.sigkill();
    gw.restart().await;
    assert_eq!(github_events(&gw).await.len(), 40);
    for (i, (event, _, body)) in all.iter().take(40).enumerate() {
        let r = signed(&gw, event, &format!("k-{i}"), body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["outcome"], "duplicate");
    }
    assert_eq!(github_events(&gw).await.len(), 40);
}

/// A mock of the GitHub comments API: the comments of any issue, in one list.
async fn mock_github() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    mock_github_failing(0).await
}

/// A mock of GitHub's issue comments API whose first `fail_posts` POSTs answer 502.
async fn mock_github_failing(fail_posts: usize) -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let comments: Arc<Mutex<Vec<Value>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(fail_posts));
    let app = axum::Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            get(|State(c): State<Arc<Mutex<Vec<Value>>>>| async move {
                Json(c.lock().unwrap().clone())
            })
            .post(
                move |State(c): State<Arc<Mutex<Vec<Value>>>>,
                 Path((o, r, n)): Path<(String, String, u64)>,
                 headers: axum::http::HeaderMap,
                 Json(body): Json<Value>| async move {
                    let failing = failures
                        .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        return (StatusCode::BAD_GATEWAY, Json(json!({"message": "upstream hiccup"})))
                            .into_response();
                    }
                    if headers["authorization"] != "Bearer it-token" {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"})))
                            .into_response();
                    }
                    let mut c = c.lock().unwrap();
                    let id = c.len() + 1;
                    let comment = json!({"id": id, "body": body["body"],
                        "html_url": format!("https://github.com/{o}/{r}/issues/{n}#issuecomment-{id}")});
                    c.push(comment.clone());
                    (StatusCode::CREATED, Json(comment)).into_response()
                },
            ),
        )
        .with_state(comments.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, comments)
}

#[tokio::test]
async fn github_comment_jobs_post_once_through_the_configured_api() {
    let (addr, comments) = mock_github().await;
    let api = format!("http://{addr}");
    let gw = Gateway::builder()
        .env("RAUSKU_GITHUB_TOKEN", "it-token")
        .env("RAUSKU_GITHUB_API_URL", &api)
        .start()
        .await;
    let t = gw.get("/v1/job-types/github.comment").await;
    assert_eq!(t.json["enabled"], true, "{}", t.text);
    let input = json!({"repo": "octo/hello", "number": 3, "body": "On it.", "reply_id": "it-1"});
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let job = gw
            .create_job(json!({"type": "github.comment", "input": input}))
            .await;
        let done = gw
            .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(20))
            .await;
        assert_eq!(done["state"], "succeeded", "{done}");
        outputs.push(done["output"].clone());
    }
    assert_eq!(outputs[0]["already_posted"], false, "{}", outputs[0]);
    assert_eq!(outputs[1]["already_posted"], true, "{}", outputs[1]);
    assert_eq!(outputs[0]["comment_id"], outputs[1]["comment_id"]);
    let posted = comments.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["body"], "On it.\n\n<!-- rausku:reply:it-1 -->");

    // A bad input is a 400 before any job exists.
    let r = gw
        .post(
            "/v1/jobs",
            json!({"type": "github.comment", "input": {"repo": "nope", "number": 1, "body": "x", "reply_id": "r"}}),
        )
        .await;
    assert_eq!(r.assert_error(400, "invalid_input")["field"], "input.repo");
    let rt = gw.get("/v1/runtime").await.json;
    assert_eq!(rt["config"]["github_token_configured"], true);
}

const PR_PLAYBOOK: &str = r#"
description = "check a pull request and say how it went"
[trigger]
events = ["pull_request.opened", "pull_request.synchronize"]
[[steps]]
name = "check"
skill = "echo"
input = { repo = "{{ data.repo }}", number = "{{ data.number }}" }
[reply]
success = "checks passed on {{ steps.check.output.repo }}#{{ steps.check.output.number }}"
"#;

/// A gateway wired to a mock GitHub (whose first `fail_posts` comment POSTs fail with 502) and
/// a playbook that answers pull requests.
async fn wired(fail_posts: usize) -> (Gateway, Arc<Mutex<Vec<Value>>>) {
    let (addr, comments) = mock_github_failing(fail_posts).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/pr.toml"), PR_PLAYBOOK).unwrap();
    let playbooks = dir.path().join("playbooks").display().to_string();
    let gw = Gateway::builder()
        .dir(dir)
        .env("RAUSKU_GITHUB_WEBHOOK_SECRET", SECRET)
        .env("RAUSKU_GITHUB_TOKEN", "it-token")
        .env("RAUSKU_GITHUB_API_URL", &format!("http://{addr}"))
        .env("RAUSKU_PLAYBOOKS_DIR", &playbooks)
        .start()
        .await;
    (gw, comments)
}

fn fixture(event: &str, file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../channels/tests/fixtures/github-webhooks")
        .join(event)
        .join(file);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn wait_comments(comments: &Arc<Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
    crate::harness::wait_for(
        &format!("{n} comment(s)"),
        Duration::from_secs(30),
        || async {
            let c = comments.lock().unwrap().clone();
            (c.len() >= n).then_some(c)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_pull_request_runs_the_playbook_and_comments_once_despite_a_502() {
    let (gw, comments) = wired(1).await;
    let payload = fixture("pull_request", "opened.payload.json");
    let repo = payload["repository"]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let number = payload["number"].as_u64().unwrap();
    let body = serde_json::to_vec(&payload).unwrap();
    let r = signed(&gw, "pull_request", "pr-delivery-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    // A redelivery changes nothing.
    let r = signed(&gw, "pull_request", "pr-delivery-1", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let posted = wait_comments(&comments, 1).await;
    assert_eq!(
        posted[0]["body"].as_str().unwrap().lines().next().unwrap(),
        format!("checks passed on {repo}#{number}")
    );
    // The comment job needed a second attempt (the first POST got a 502).
    let key = format!("github:{repo}#{number}");
    let session = gw
        .get(&format!(
            "/v1/sessions/{}",
            crate::harness::session_path(&key)
        ))
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    let jobs = gw
        .get(&format!(
            "/v1/jobs?type=github.comment&session_id={}",
            session.json["id"].as_str().unwrap()
        ))
        .await;
    let job = &jobs.json["jobs"][0];
    let job = gw
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(comments.lock().unwrap().len(), 1, "exactly one comment");
    assert_eq!(session.json["runs"], 1, "the redelivery started nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_addressed_to_the_bot_is_a_message_to_the_pull_requests_session() {
    let (gw, comments) = wired(0).await;
    let mut payload = fixture("issue_comment", "created.payload.json");
    payload["comment"]["body"] = json!("Looks good.\n/rausku /status");
    let body = serde_json::to_vec(&payload).unwrap();
    let r = signed(&gw, "issue_comment", "comment-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let posted = wait_comments(&comments, 1).await;
    let text = posted[0]["body"].as_str().unwrap();
    assert!(text.contains("rausku:reply:"), "{text}");
    let repo = payload["repository"]["full_name"].as_str().unwrap();
    let number = payload["issue"]["number"].as_u64().unwrap();
    let r = gw.get("/v1/sessions").await;
    let session = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == format!("github:{repo}#{number}"))
        .cloned();
    let session = session.unwrap_or_else(|| panic!("no session for the comment: {}", r.text));
    assert_eq!(session["channel"], "github");

    // The bot's own comment (it carries the reply marker) is not a command, and no playbook
    // wants the event: it is recorded in the session as ignored, and starts no run.
    let mut own = payload.clone();
    own["comment"]["body"] = json!(text);
    let r = signed(
        &gw,
        "issue_comment",
        "comment-2",
        &serde_json::to_vec(&own).unwrap(),
    )
    .await;
    assert_eq!(r.status, 202);
    let key = session["key"].as_str().unwrap();
    let path = format!(
        "/v1/sessions/{}/events?after=0",
        crate::harness::session_path(key)
    );
    let ignored = crate::harness::wait_for(
        "the event in its session",
        Duration::from_secs(30),
        || async {
            let r = gw.get(&path).await;
            r.json["events"]
                .as_array()?
                .iter()
                .find(|e| e["kind"] == "message.received" && e["data"]["ignored"] == true)
                .cloned()
        },
    )
    .await;
    assert_eq!(
        ignored["data"]["event"], "issue_comment.created",
        "{ignored}"
    );
    let r = gw
        .get(&format!(
            "/v1/sessions/{}",
            crate::harness::session_path(key)
        ))
        .await;
    assert_eq!(r.json["runs"], 1, "{}", r.text);
    assert_eq!(r.json["state"], "idle", "{}", r.text);
    assert_eq!(
        comments.lock().unwrap().len(),
        1,
        "no reply to the bot's own comment"
    );
}
