//! Sessions through the real binary: the REST channel, playbooks and skill manifests from disk,
//! approvals, interrupts, reload, the local channel, and runs that survive SIGKILL.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, SseReader, local, send, session_path, wait_for, with_json};

const DEADLINE: Duration = Duration::from_secs(30);

/// A three-step playbook whose second step always fails (so `rollback` runs), a playbook whose
/// step needs an approval, and one with slow steps for the crash test.
const PLAYBOOKS: &[(&str, &str)] = &[
    (
        "10-release.toml",
        r#"
description = "build, deploy, verify; roll back when the deploy fails"
[trigger]
pattern = '^release (?P<version>\S+)$'
[[steps]]
name = "build"
skill = "echo"
input = { artifact = "app-{{ match.version }}.tar" }
[[steps]]
name = "deploy"
skill = "flaky"
input = { fail_times = 10 }
on_failure = "rollback"
[[steps]]
name = "verify"
skill = "echo"
input = { verified = "{{ steps.build.output.artifact }}" }
[[steps]]
name = "rollback"
skill = "echo"
only_on_failure = true
input = { rolled_back = "{{ steps.build.output.artifact }}" }
[reply]
failure = "release {{ match.version }} failed at {{ failed.name }}; rollback {{ steps.rollback.status }}"
"#,
    ),
    (
        "20-ship.toml",
        r#"
description = "deploy to an environment, with an approval"
[trigger]
pattern = '^ship (?P<env>\S+)$'
[[steps]]
name = "deploy"
skill = "prod-deploy"
input = { env = "{{ match.env }}" }
on_failure = "notify"
[[steps]]
name = "notify"
skill = "echo"
only_on_failure = true
input = { text = "ship to {{ match.env }}: {{ failed.status }}" }
[reply]
success = "shipped to {{ match.env }}"
failure = "not shipped: {{ failed.error }}"
"#,
    ),
    (
        "30-slow.toml",
        r#"
description = "three slow steps"
[trigger]
pattern = '^slow$'
[[steps]]
name = "one"
skill = "sleep"
input = { ms = 400 }
[[steps]]
name = "two"
skill = "sleep"
input = { ms = 401 }
[[steps]]
name = "three"
skill = "sleep"
input = { ms = 402 }
"#,
    ),
];

const MANIFESTS: &[(&str, &str)] = &[
    (
        "prod-deploy.toml",
        r#"
name = "prod-deploy"
description = "deploy (echo stands in for the real thing)"
handler = "echo"
[input_schema]
type = "object"
required = ["env"]
properties.env = { type = "string" }
[policy]
risk = "deploy"
approval = "always"
"#,
    ),
    (
        "local-only.toml",
        r#"
name = "local-only"
description = "may only run from the terminal"
handler = "echo"
[policy]
channels = ["local"]
"#,
    ),
];

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

async fn gateway_with_playbooks() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    write_all(&dir.path().join("playbooks"), PLAYBOOKS);
    write_all(&dir.path().join("skills"), MANIFESTS);
    let playbooks = dir.path().join("playbooks").display().to_string();
    let skills = dir.path().join("skills").display().to_string();
    Gateway::builder()
        .dir(dir)
        .env("RAUSKU_PLAYBOOKS_DIR", &playbooks)
        .env("RAUSKU_SKILLS_DIR", &skills)
        .start()
        .await
}

async fn events(gw: &Gateway, key: &str) -> Vec<Value> {
    let r = gw
        .get(&format!(
            "/v1/sessions/{}/events?limit=1000",
            session_path(key)
        ))
        .await;
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"].as_array().unwrap().clone()
}

/// Waits until the session has `n` events of `kind`; returns its events.
async fn wait_kind(gw: &Gateway, key: &str, kind: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} × {kind} in {key}"), DEADLINE, || async {
        let evs = events(gw, key).await;
        (evs.iter().filter(|e| e["kind"] == kind).count() >= n).then_some(evs)
    })
    .await
}

fn kinds(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn observations(evs: &[Value]) -> Vec<&Value> {
    evs.iter()
        .filter(|e| e["kind"] == "skill.observed")
        .map(|e| &e["data"]["observation"])
        .collect()
}

fn replies(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .filter(|e| e["kind"] == "reply")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect()
}

async fn pending_approval(gw: &Gateway) -> Value {
    wait_for("a pending approval", DEADLINE, || async {
        let r = gw.get("/v1/approvals?state=pending").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["approvals"].as_array().unwrap().first().cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_message_runs_a_command_and_the_events_show_the_loop() {
    let gw = Gateway::start().await;
    let accepted = gw.say("rest:ops", r#"/run echo {"x":1}"#).await;
    assert_eq!(accepted["seq"], 1);
    let evs = wait_kind(&gw, "rest:ops", "run.finished", 1).await;
    assert_eq!(
        kinds(&evs),
        [
            "message.received",
            "run.started",
            "plan.decided",
            "skill.invoked",
            "skill.observed",
            "plan.decided",
            "reply",
            "run.finished"
        ]
    );
    assert_eq!(observations(&evs)[0]["output"], json!({"x": 1}));
    assert!(replies(&evs)[0].contains("\"x\": 1"), "{:?}", replies(&evs));

    // A bare name is a REST session.
    let r = gw.get("/v1/sessions/ops").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["key"], "rest:ops");
    assert_eq!(r.json["channel"], "rest");
    assert_eq!(r.json["runs"], 1);
    assert_eq!(r.json["id"], accepted["session_id"]);
    let r = gw.get("/v1/sessions").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    assert_eq!(r.json[0]["state"], "idle");

    // The job is linked to the session.
    let r = gw
        .get(&format!(
            "/v1/jobs?session_id={}",
            accepted["session_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.json["jobs"].as_array().unwrap().len(), 1);

    // Unmatched text gets help, not an error.
    gw.say("rest:ops", "what can you do?").await;
    let evs = wait_kind(&gw, "rest:ops", "run.finished", 2).await;
    let help = replies(&evs)[1];
    assert!(help.contains("/run"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_requests_get_clear_errors() {
    let gw = Gateway::start().await;
    let post = |path: &'static str, body: Value| {
        let gw = &gw;
        async move { gw.post(path, body).await }
    };
    post("/v1/sessions/ops/messages", json!({"text": "  "}))
        .await
        .assert_error(400, "invalid_input");
    let r = post("/v1/sessions/ops/messages", json!({"txt": "hi"})).await;
    r.assert_error(400, "invalid_input");
    let r = post(
        "/v1/sessions/github%3Aacme%2Fapi%231/messages",
        json!({"text": "hi"}),
    )
    .await;
    let details = r.assert_error(400, "invalid_input");
    assert_eq!(details["field"], "key");
    let r = post("/v1/sessions/REST%3Ax/messages", json!({"text": "hi"})).await;
    r.assert_error(400, "invalid_input");
    let big = "x".repeat(70_000);
    post("/v1/sessions/ops/messages", json!({ "text": big }))
        .await
        .assert_error(413, "payload_too_large");
    gw.get("/v1/sessions/nobody")
        .await
        .assert_error(404, "not_found");
    gw.post("/v1/sessions/nobody/interrupt", json!({}))
        .await
        .assert_error(404, "not_found");
    gw.say("rest:ops", "/help").await;
    gw.get("/v1/sessions/ops/events?limit=0")
        .await
        .assert_error(400, "invalid_input");
    gw.get("/v1/approvals?state=maybe")
        .await
        .assert_error(400, "invalid_input");
    gw.post("/v1/approvals/not-an-id", json!({"decision": "approve"}))
        .await
        .assert_error(400, "invalid_input");
    gw.post(
        "/v1/approvals/0192f3e4-0000-7000-8000-000000000000",
        json!({"decision": "approve"}),
    )
    .await
    .assert_error(404, "not_found");

    // A read key may look but not talk.
    let (_, reader) = gw.create_key("reader", "read").await;
    let r = send(with_json(
        gw.req_as(&reader, Method::POST, "/v1/sessions/ops/messages"),
        &json!({"text": "hi"}),
    ))
    .await;
    r.assert_error(403, "forbidden");
    let r = send(gw.req_as(&reader, Method::GET, "/v1/sessions/ops")).await;
    assert_eq!(r.status, 200);
    let r = send(gw.raw(Method::GET, "/v1/sessions")).await;
    r.assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_message_count_once() {
    let gw = Gateway::start().await;
    let post = |text: &str| {
        send(with_json(
            gw.req(Method::POST, "/v1/sessions/ops/messages")
                .header("idempotency-key", "msg-1"),
            &json!({ "text": text }),
        ))
    };
    let first = post("/status").await;
    assert_eq!(first.status, 202, "{}", first.text);
    let again = post("/status").await;
    assert_eq!(again.status, 202);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
    post("/help")
        .await
        .assert_error(409, "idempotency_conflict");
    let evs = wait_kind(&gw, "rest:ops", "run.finished", 1).await;
    assert_eq!(
        kinds(&evs)
            .iter()
            .filter(|k| **k == "message.received")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_playbook_step_runs_its_on_failure_branch() {
    let gw = gateway_with_playbooks().await;
    gw.say("rest:rel", "release 1.2.3").await;
    let evs = wait_kind(&gw, "rest:rel", "run.failed", 1).await;
    let steps: Vec<(&str, &str)> = observations(&evs)
        .iter()
        .map(|o| {
            (
                o["step_id"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps[0].0.ends_with("build") && steps[0].1 == "succeeded");
    assert!(steps[1].0.ends_with("deploy") && steps[1].1 == "failed");
    assert!(steps[2].0.ends_with("rollback") && steps[2].1 == "succeeded");
    assert_eq!(
        observations(&evs)[2]["output"],
        json!({"rolled_back": "app-1.2.3.tar"})
    );
    let last = replies(&evs).pop().unwrap();
    assert!(
        last.contains("release 1.2.3 failed at deploy") && last.contains("succeeded"),
        "{last}"
    );
    // Plan, invoke, observe, re-plan: every invocation is decided first and observed after.
    let k = kinds(&evs);
    for (i, kind) in k.iter().enumerate() {
        if *kind == "skill.invoked" {
            assert_eq!(k[i - 1], "plan.decided");
            assert_eq!(k[i + 1], "skill.observed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_deny_and_a_second_decision() {
    let gw = gateway_with_playbooks().await;

    gw.say("rest:prod", "ship staging").await;
    let approval = pending_approval(&gw).await;
    assert_eq!(approval["skill"], "prod-deploy");
    assert_eq!(approval["input"], json!({"env": "staging"}));
    let r = gw.get("/v1/sessions/prod").await;
    assert_eq!(r.json["state"], "waiting_approval");
    let id = approval["id"].as_str().unwrap();
    let r = gw
        .post(
            &format!("/v1/approvals/{id}"),
            json!({"decision": "approve", "note": "go"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "approved");
    let r = gw
        .post(&format!("/v1/approvals/{id}"), json!({"decision": "deny"}))
        .await;
    r.assert_error(409, "invalid_state");
    let evs = wait_kind(&gw, "rest:prod", "run.finished", 1).await;
    assert_eq!(replies(&evs).last().unwrap(), &"shipped to staging");

    gw.say("rest:prod", "ship production").await;
    let approval = pending_approval(&gw).await;
    let id = approval["id"].as_str().unwrap();
    gw.post(&format!("/v1/approvals/{id}"), json!({"decision": "maybe"}))
        .await
        .assert_error(400, "invalid_input");
    let r = gw
        .post(
            &format!("/v1/approvals/{id}"),
            json!({"decision": "deny", "note": "change freeze"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let evs = wait_kind(&gw, "rest:prod", "run.failed", 1).await;
    let obs = observations(&evs);
    let denied = obs.iter().rev().find(|o| o["status"] == "denied").unwrap();
    assert!(
        denied["error"].as_str().unwrap().contains("change freeze"),
        "{denied}"
    );
    assert!(
        obs.last().unwrap()["step_id"]
            .as_str()
            .unwrap()
            .ends_with("notify")
    );
    let r = gw.get("/v1/approvals").await;
    let states: Vec<&str> = r.json["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["denied", "approved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires_as_denied() {
    let dir = tempfile::tempdir().unwrap();
    write_all(&dir.path().join("playbooks"), PLAYBOOKS);
    write_all(&dir.path().join("skills"), MANIFESTS);
    let playbooks = dir.path().join("playbooks").display().to_string();
    let skills = dir.path().join("skills").display().to_string();
    let gw = Gateway::builder()
        .dir(dir)
        .env("RAUSKU_PLAYBOOKS_DIR", &playbooks)
        .env("RAUSKU_SKILLS_DIR", &skills)
        .env("RAUSKU_APPROVAL_TIMEOUT_SECS", "1")
        .start()
        .await;
    gw.say("rest:prod", "ship staging").await;
    let evs = wait_kind(&gw, "rest:prod", "run.failed", 1).await;
    let resolved = evs
        .iter()
        .find(|e| e["kind"] == "approval.resolved")
        .unwrap();
    assert_eq!(resolved["data"]["decision"], "expired");
    let r = gw.get("/v1/approvals?state=expired").await;
    assert_eq!(r.json["approvals"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_input_schema_are_checked_before_any_job_exists() {
    let gw = gateway_with_playbooks().await;
    gw.say("rest:pol", "/run local-only {}").await;
    gw.say("rest:pol", r#"/run prod-deploy {"env": 5}"#).await;
    let evs = wait_kind(&gw, "rest:pol", "run.failed", 1).await;
    // The planner only offers a channel the skills its policy allows (and the session would
    // refuse one anyway: see agentloop's tests): the first run ends with a reply saying so.
    let first = replies(&evs)[0];
    assert!(
        first.contains("`local-only`") && first.contains("`rest`"),
        "{first}"
    );
    // A bad input is refused before any approval is asked or any job exists.
    let obs = observations(&evs);
    assert_eq!(obs.len(), 1, "{obs:?}");
    assert_eq!(obs[0]["status"], "invalid");
    assert!(
        obs[0]["error"].as_str().unwrap().contains("env"),
        "{}",
        obs[0]
    );
    assert!(!kinds(&evs).contains(&"skill.invoked"));
    assert!(!kinds(&evs).contains(&"approval.requested"));
    // From the terminal, the same skill runs.
    let out = local(
        gw.root(),
        &["--data-dir", "local-data"],
        &[(
            "RAUSKU_SKILLS_DIR",
            gw.root().join("skills").to_str().unwrap(),
        )],
        "/run local-only {\"from\": \"terminal\"}\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("✓ local-only: {\"from\":\"terminal\"}"),
        "{stdout}"
    );
    for t in ["local-only", "prod-deploy"] {
        let r = gw.get(&format!("/v1/jobs?type={t}")).await;
        assert!(r.json["jobs"].as_array().unwrap().is_empty(), "{}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_running_sleep_and_queued_messages_run_in_order() {
    let gw = Gateway::start().await;
    gw.say("rest:int", r#"/run sleep {"ms": 20000}"#).await;
    gw.say("rest:int", r#"/run echo {"n": 1}"#).await;
    gw.say("rest:int", r#"/run echo {"n": 2}"#).await;
    let evs = wait_kind(&gw, "rest:int", "skill.invoked", 1).await;
    let job_id = evs.iter().find(|e| e["kind"] == "skill.invoked").unwrap()["data"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    gw.wait_state(&job_id, "running", DEADLINE).await;
    let r = gw.post("/v1/sessions/int/interrupt", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["interrupted"], true);
    let job = gw.wait_terminal(&job_id, DEADLINE).await;
    assert_eq!(job["state"], "cancelled");
    let evs = wait_kind(&gw, "rest:int", "run.finished", 2).await;
    let ends: Vec<&str> = kinds(&evs)
        .into_iter()
        .filter(|k| matches!(*k, "run.finished" | "run.interrupted"))
        .collect();
    assert_eq!(ends, ["run.interrupted", "run.finished", "run.finished"]);
    let outputs: Vec<&Value> = observations(&evs)
        .into_iter()
        .map(|o| &o["output"]["n"])
        .collect();
    assert_eq!(outputs, [&json!(1), &json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_stream_resumes_from_last_event_id() {
    let gw = Gateway::start().await;
    gw.say("rest:sse", "/status").await;
    wait_kind(&gw, "rest:sse", "run.finished", 1).await;
    let mut sse = SseReader::open(&gw, "/v1/sessions/sse/stream", &[("last-event-id", "2")]).await;
    let deadline = Instant::now() + DEADLINE;
    let first = sse.next(deadline).await.expect("a frame");
    assert_eq!(first.id, Some(3));
    assert_eq!(first.event.as_deref(), Some("plan.decided"));
    gw.say("rest:sse", "/help").await;
    let mut seen = Vec::new();
    while let Some(frame) = sse.next(deadline).await {
        seen.push(frame.event.clone().unwrap_or_default());
        if seen.iter().filter(|k| *k == "run.finished").count() == 2 {
            break;
        }
    }
    assert!(seen.contains(&"message.received".to_owned()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_a_broken_manifest_and_keeps_the_previous_version() {
    let gw = gateway_with_playbooks().await;
    let skills = gw.root().join("skills");
    std::fs::write(
        skills.join("prod-deploy.toml"),
        "name = \"prod-deploy\"\ndescription = \"broken\nhandler = \"echo\"\n",
    )
    .unwrap();
    std::fs::write(
        skills.join("status.toml"),
        "name = \"status\"\ndescription = \"a new skill\"\nhandler = \"echo\"\n",
    )
    .unwrap();
    std::fs::write(
        gw.root().join("playbooks").join("40-bad.toml"),
        "description = \"bad\"\n[trigger]\npattern = '(unclosed'\n",
    )
    .unwrap();
    let r = gw.post("/v1/runtime/reload", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["skills"]["added"], json!(["status"]));
    let err = &r.json["skills"]["errors"][0];
    assert!(
        err["path"].as_str().unwrap().ends_with("prod-deploy.toml"),
        "{err}"
    );
    assert_eq!(err["line"], 2, "{err}");
    assert!(r.json["skills"]["removed"].as_array().unwrap().is_empty());
    let perr = &r.json["playbooks"]["errors"][0];
    assert!(
        perr["path"].as_str().unwrap().ends_with("40-bad.toml"),
        "{perr}"
    );
    assert_eq!(perr["line"], 3, "{perr}");
    let r = gw.get("/v1/job-types/prod-deploy").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json["description"],
        "deploy (echo stands in for the real thing)"
    );
    // The old version still gates on approval.
    gw.say("rest:prod", "ship staging").await;
    pending_approval(&gw).await;

    // Reload is an admin's job.
    let (_, operator) = gw.create_key("op", "operator").await;
    let r = send(gw.req_as(&operator, Method::POST, "/v1/runtime/reload")).await;
    r.assert_error(403, "forbidden");
    let r = gw.get("/v1/runtime").await;
    assert_eq!(r.json["planner"], "playbook");
    assert_eq!(r.json["playbooks"].as_array().unwrap().len(), 3);
    assert!(
        r.json["sessions"]["waiting_approval"].as_u64() == Some(1),
        "{}",
        r.json["sessions"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rauskuclaw_local_runs_stdin_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = local(dir.path(), &[], &[], "/run echo {\"x\":1}\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("✓ echo: {\"x\":1}"), "{stdout}");
    assert!(stdout.contains("✓ run finished"), "{stdout}");

    // The same session, as JSON lines; its history was kept.
    let out = local(dir.path(), &["--json"], &[], "/status\n\n/run nope {}\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "message.received").count(),
        2
    );
    assert!(kinds.contains(&"run.finished"), "{kinds:?}");
    assert!(
        events[0]["stream"]
            .as_str()
            .unwrap()
            .starts_with("session:")
    );
    let status = events.iter().find(|e| e["kind"] == "reply").unwrap()["data"]["text"]
        .as_str()
        .unwrap();
    assert!(status.contains('2') || status.contains("run"), "{status}");
    // An unknown skill is an invalid step: the run reports it and `local` exits non-zero.
    assert!(!out.status.success() || stdout.contains("nope"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_continues_after_sigkill_and_no_observed_step_runs_twice() {
    let mut gw = gateway_with_playbooks().await;
    gw.say("rest:crash", "slow").await;
    // Kill while the second step runs: the first is observed, the second in flight.
    wait_kind(&gw, "rest:crash", "skill.invoked", 2).await;
    gw.sigkill();
    gw.restart().await;
    let evs = wait_kind(&gw, "rest:crash", "run.finished", 1).await;
    let observed: Vec<&str> = observations(&evs)
        .iter()
        .map(|o| o["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(observed.len(), 3, "{observed:?}");
    let mut unique = observed.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "each step observed once: {observed:?}");
    // The first step's job ran once; only the in-flight one may have run again.
    let r = gw.get("/v1/jobs?type=sleep").await;
    let jobs = r.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "one job per step: {}", r.text);
    let first = jobs
        .iter()
        .find(|j| j["input"]["ms"] == 400)
        .expect("the first step's job");
    assert_eq!(first["attempt"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_survives_sigkill() {
    let mut gw = gateway_with_playbooks().await;
    gw.say("rest:prod", "ship production").await;
    let approval = pending_approval(&gw).await;
    gw.sigkill();
    gw.restart().await;
    let again = pending_approval(&gw).await;
    assert_eq!(again["id"], approval["id"]);
    let r = gw.get("/v1/sessions/prod").await;
    assert_eq!(r.json["state"], "waiting_approval");
    let id = approval["id"].as_str().unwrap();
    let r = gw
        .post(
            &format!("/v1/approvals/{id}"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let evs = wait_kind(&gw, "rest:prod", "run.finished", 1).await;
    assert_eq!(replies(&evs).last().unwrap(), &"shipped to production");
    assert_eq!(
        kinds(&evs)
            .iter()
            .filter(|k| **k == "approval.requested")
            .count(),
        1
    );
}
