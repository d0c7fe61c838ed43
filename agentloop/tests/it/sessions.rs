//! Sessions and the agent loop, driven by [`ScriptPlanner`]: runs and their events, queueing,
//! interrupts, policy, approvals, limits, idle stop, and continuing a run after a restart.

use std::time::Duration;

use agentloop::{Inbound, Routed, SessionConfig};
use serde_json::{Value, json};
use skills::JobTypeSpec;
use store::{
    Approval, ApprovalState, DecideError, Event, JobFilter, JobState, Policy, Risk, SessionState,
    StreamFilter,
};

use crate::support::{Harness, Options, eventually, wait_probe};

async fn send(h: &Harness, key: &str, script: Value) -> Routed {
    h.runtime
        .sessions
        .send(Inbound {
            key: key.into(),
            text: script.to_string(),
            ..Inbound::default()
        })
        .await
        .expect("message routed")
}

fn session_events(h: &Harness, key: &str) -> Vec<Event> {
    let Some(session) = h.store.session_by_key(key).unwrap() else {
        return Vec::new();
    };
    h.store
        .events_after(&StreamFilter::Stream(session.stream()), 0, 10_000)
        .unwrap()
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Waits until the session's stream has `n` events of `kind`, and returns the stream.
async fn wait_kind(h: &Harness, key: &str, kind: &str, n: usize) -> Vec<Event> {
    eventually(format!("{n} × {kind} in {key}"), || async {
        h.store.durable().await.unwrap();
        let events = session_events(h, key);
        (events.iter().filter(|e| e.kind == kind).count() >= n).then_some(events)
    })
    .await
}

fn observations(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.kind == "skill.observed")
        .map(|e| e.data["observation"].clone())
        .collect()
}

/// Restarts the harness while a `gate` step runs. The gated job was interrupted by the
/// shutdown and is re-queued by the job runtime; once it has started again, it is let through.
async fn restart_and_release_the_gate(h: Harness) -> Harness {
    let h = h.restart(Options::default()).await;
    wait_probe("the gated step to start again", &h.gate, |p| {
        p.started() == 1
    })
    .await;
    h.gate.open(1);
    h
}

fn with_sessions(config: SessionConfig) -> Options {
    Options {
        sessions: config,
        ..Options::default()
    }
}

fn add_type(h: &Harness, name: &str, handler: &str, policy: Policy) {
    h.runtime
        .jobs
        .registry()
        .create(JobTypeSpec {
            name: name.into(),
            description: None,
            handler: handler.into(),
            config: None,
            defaults: None,
            input_schema: Some(json!({
                "type": "object",
                "properties": {"message": {"type": "string"}},
            })),
            policy: Some(policy),
            enabled: None,
        })
        .expect("job type created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_plans_invokes_observes_and_replans_in_order() {
    let h = Harness::start().await;
    let routed = send(
        &h,
        "rest:ops",
        json!({"steps": [
            {"skill": "echo", "input": {"n": 1}},
            {"skill": "echo", "input": {"n": 2}},
        ], "reply": "all done"}),
    )
    .await;
    assert_eq!(routed.seq, 1);
    let events = wait_kind(&h, "rest:ops", "run.finished", 1).await;
    assert_eq!(
        kinds(&events),
        [
            "message.received",
            "run.started",
            "plan.decided",
            "skill.invoked",
            "skill.observed",
            "plan.decided",
            "skill.invoked",
            "skill.observed",
            "plan.decided",
            "reply",
            "run.finished",
        ]
    );
    let obs = observations(&events);
    assert_eq!(obs[0]["status"], "succeeded");
    assert_eq!(obs[1]["output"], json!({"n": 2}));
    let reply = events.iter().find(|e| e.kind == "reply").unwrap();
    assert_eq!(reply.data["text"], "all done");

    // The jobs are linked to the session and the run.
    let session = h.store.session_by_key("rest:ops").unwrap().unwrap();
    let jobs = h
        .store
        .list_jobs(&JobFilter {
            session_id: Some(session.id.to_string()),
            limit: 10,
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let run_id = events[1].data["run_id"].as_str().unwrap();
    assert!(jobs.iter().all(|j| j.run_id.as_deref() == Some(run_id)));

    let session = eventually("the session record to be idle", || async {
        let s = h.store.session_by_key("rest:ops").unwrap().unwrap();
        (s.state == SessionState::Idle).then_some(s)
    })
    .await;
    assert_eq!(
        (session.runs, session.queued, session.resume_seq),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_runs_the_on_failure_branch() {
    let h = Harness::start().await;
    send(
        &h,
        "rest:deploy",
        json!({
            "steps": [
                {"skill": "echo", "input": {"step": "build"}},
                {"skill": "flaky", "input": {"fail_times": 5}},
                {"skill": "echo", "input": {"step": "never"}},
            ],
            "on_failure": {"skill": "echo", "input": {"step": "rollback"}},
        }),
    )
    .await;
    let events = wait_kind(&h, "rest:deploy", "run.failed", 1).await;
    let obs = observations(&events);
    let steps: Vec<_> = obs
        .iter()
        .map(|o| {
            (
                o["step_id"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("s0", "succeeded"),
            ("s1", "failed"),
            ("on_failure", "succeeded")
        ]
    );
    assert_eq!(obs[2]["output"], json!({"step": "rollback"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arriving_during_a_run_are_queued_and_run_in_order() {
    let h = Harness::start().await;
    send(
        &h,
        "rest:q",
        json!({"steps": [{"skill": "gate", "input": {}}]}),
    )
    .await;
    wait_probe("the first run's job to start", &h.gate, |p| {
        p.started() == 1
    })
    .await;
    for i in 0..3 {
        send(
            &h,
            "rest:q",
            json!({"steps": [{"skill": "echo", "input": {"i": i}}]}),
        )
        .await;
    }
    let session = h.store.session_by_key("rest:q").unwrap().unwrap();
    assert_eq!(session.queued, 3);
    assert_eq!(session.state, SessionState::Running);
    h.gate.open(1);
    let events = wait_kind(&h, "rest:q", "run.finished", 4).await;
    let started: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "run.started")
        .map(|e| e.data["message_seq"].as_u64().unwrap())
        .collect();
    let received: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "message.received")
        .map(|e| e.seq)
        .collect();
    assert_eq!(started, received, "runs start in message order");
    let outputs: Vec<_> = observations(&events)
        .into_iter()
        .skip(1)
        .map(|o| o["output"]["i"].clone())
        .collect();
    assert_eq!(outputs, [json!(0), json!(1), json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_cancels_the_running_job_and_the_next_message_runs() {
    let h = Harness::start().await;
    send(
        &h,
        "rest:int",
        json!({"steps": [{"skill": "block", "input": {}}]}),
    )
    .await;
    send(
        &h,
        "rest:int",
        json!({"steps": [{"skill": "echo", "input": {}}]}),
    )
    .await;
    wait_probe("the blocking job to start", &h.block, |p| p.started() == 1).await;
    let had_run = h
        .runtime
        .sessions
        .interrupt("rest:int", "test")
        .await
        .unwrap();
    assert!(had_run);
    wait_probe("the blocking attempt to be dropped", &h.block, |p| {
        p.dropped() == 1
    })
    .await;
    let events = wait_kind(&h, "rest:int", "run.finished", 1).await;
    let ends: Vec<_> = kinds(&events)
        .into_iter()
        .filter(|k| k.starts_with("run.") && *k != "run.started")
        .collect();
    assert_eq!(ends, ["run.interrupted", "run.finished"]);
    let job_id = events
        .iter()
        .find(|e| e.kind == "skill.invoked")
        .unwrap()
        .data["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    h.wait_state(job_id, JobState::Cancelled).await;

    // Nothing to interrupt now; an unknown session is an error.
    assert!(
        !h.runtime
            .sessions
            .interrupt("rest:int", "test")
            .await
            .unwrap()
    );
    assert!(
        h.runtime
            .sessions
            .interrupt("rest:nobody", "test")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_and_forbidden_skills_create_no_job() {
    let h = Harness::start().await;
    add_type(
        &h,
        "ops.only",
        "echo",
        Policy {
            channels: vec!["local".into()],
            ..Policy::default()
        },
    );
    send(
        &h,
        "rest:bad",
        json!({"steps": [{"skill": "ops.only", "input": {"message": 42}}]}),
    )
    .await;
    send(
        &h,
        "rest:bad",
        json!({"steps": [{"skill": "no.such.skill", "input": {}}]}),
    )
    .await;
    send(
        &h,
        "rest:bad",
        json!({"steps": [{"skill": "ops.only", "input": {"message": "hi"}}]}),
    )
    .await;
    let events = wait_kind(&h, "rest:bad", "run.failed", 3).await;
    let obs = observations(&events);
    assert_eq!(obs[0]["status"], "invalid");
    assert!(
        obs[0]["error"].as_str().unwrap().contains("message"),
        "{}",
        obs[0]["error"]
    );
    assert_eq!(obs[1]["status"], "invalid");
    assert!(obs[1]["error"].as_str().unwrap().contains("no.such.skill"));
    assert_eq!(obs[2]["status"], "forbidden");
    assert!(obs[2]["error"].as_str().unwrap().contains("`rest`"));
    assert!(!kinds(&events).contains(&"skill.invoked"));
    let jobs = h
        .store
        .list_jobs(&JobFilter {
            job_type: Some("ops.only".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .unwrap();
    assert!(jobs.is_empty(), "no job exists: {jobs:?}");

    // The same skill is allowed on its channel.
    send(
        &h,
        "local:alice",
        json!({"steps": [{"skill": "ops.only", "input": {"message": "hi"}}]}),
    )
    .await;
    let events = wait_kind(&h, "local:alice", "run.finished", 1).await;
    assert_eq!(observations(&events)[0]["status"], "succeeded");
}

fn approval_policy() -> Policy {
    Policy {
        risk: Risk::Deploy,
        approval: Approval::Always,
        channels: Vec::new(),
    }
}

async fn pending_approval(h: &Harness) -> store::ApprovalRequest {
    eventually("a pending approval", || async {
        h.runtime
            .sessions
            .approvals(Some(ApprovalState::Pending), 10)
            .unwrap()
            .into_iter()
            .next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_step_runs_and_a_second_decision_is_refused() {
    let h = Harness::start().await;
    add_type(&h, "deploy", "echo", approval_policy());
    send(
        &h,
        "rest:prod",
        json!({"steps": [{"skill": "deploy", "input": {"message": "v1"}}]}),
    )
    .await;
    let approval = pending_approval(&h).await;
    assert_eq!(approval.skill, "deploy");
    assert_eq!(approval.session_key, "rest:prod");
    let session = h.store.session_by_key("rest:prod").unwrap().unwrap();
    assert_eq!(session.state, SessionState::WaitingApproval);
    assert!(!kinds(&session_events(&h, "rest:prod")).contains(&"skill.invoked"));

    let decided = h
        .runtime
        .sessions
        .decide(approval.id, ApprovalState::Approved, "alice", None)
        .unwrap();
    assert_eq!(decided.state, ApprovalState::Approved);
    let second = h
        .runtime
        .sessions
        .decide(approval.id, ApprovalState::Denied, "bob", None);
    assert!(
        matches!(second, Err(DecideError::AlreadyDecided(a)) if a.state == ApprovalState::Approved)
    );

    let events = wait_kind(&h, "rest:prod", "run.finished", 1).await;
    let order: Vec<_> = kinds(&events)
        .into_iter()
        .filter(|k| k.starts_with("approval.") || k.starts_with("skill."))
        .collect();
    assert_eq!(
        order,
        [
            "approval.requested",
            "approval.resolved",
            "skill.invoked",
            "skill.observed"
        ]
    );
    assert_eq!(observations(&events)[0]["output"], json!({"message": "v1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_step_is_observed_and_the_planner_replans() {
    let h = Harness::start().await;
    add_type(&h, "deploy", "echo", approval_policy());
    send(
        &h,
        "rest:prod",
        json!({
            "steps": [{"skill": "deploy", "input": {"message": "v1"}}],
            "on_failure": {"skill": "echo", "input": {"notify": "denied"}},
        }),
    )
    .await;
    let approval = pending_approval(&h).await;
    h.runtime
        .sessions
        .decide(
            approval.id,
            ApprovalState::Denied,
            "alice",
            Some("not today".into()),
        )
        .unwrap();
    let events = wait_kind(&h, "rest:prod", "run.failed", 1).await;
    let obs = observations(&events);
    assert_eq!(obs[0]["status"], "denied");
    assert_eq!(obs[0]["error"], "denied by alice: not today");
    assert_eq!(obs[1]["step_id"], "on_failure");
    assert_eq!(obs[1]["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires_as_denied() {
    let h = Harness::start_with(with_sessions(SessionConfig {
        approval_timeout: Duration::from_millis(200),
        ..SessionConfig::default()
    }))
    .await;
    add_type(&h, "deploy", "echo", approval_policy());
    send(
        &h,
        "rest:prod",
        json!({"steps": [{"skill": "deploy", "input": {"message": "v1"}}]}),
    )
    .await;
    let events = wait_kind(&h, "rest:prod", "run.failed", 1).await;
    let resolved = events
        .iter()
        .find(|e| e.kind == "approval.resolved")
        .unwrap();
    assert_eq!(resolved.data["decision"], "expired");
    assert_eq!(observations(&events)[0]["status"], "denied");
    let approval = h
        .runtime
        .sessions
        .approvals(None, 10)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(approval.state, ApprovalState::Expired);
    // Too late to approve it.
    assert!(matches!(
        h.runtime
            .sessions
            .decide(approval.id, ApprovalState::Approved, "alice", None),
        Err(DecideError::AlreadyDecided(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_and_the_repeat_guard_end_runaway_runs() {
    let h = Harness::start_with(with_sessions(SessionConfig {
        max_steps: 2,
        ..SessionConfig::default()
    }))
    .await;
    let steps: Vec<_> = (0..3)
        .map(|i| json!({"skill": "echo", "input": {"i": i}}))
        .collect();
    send(&h, "rest:limits", json!({ "steps": steps })).await;
    let events = wait_kind(&h, "rest:limits", "run.failed", 1).await;
    let failed = events.iter().find(|e| e.kind == "run.failed").unwrap();
    assert!(
        failed.data["error"]
            .as_str()
            .unwrap()
            .contains("limit of 2 steps"),
        "{failed:?}"
    );
    assert_eq!(observations(&events).len(), 2);

    let same = json!({"skill": "echo", "input": {"same": true}});
    send(&h, "rest:limits", json!({ "steps": [same, same] })).await;
    let events = wait_kind(&h, "rest:limits", "run.failed", 2).await;
    let failed = events.iter().rfind(|e| e.kind == "run.failed").unwrap();
    assert!(
        failed.data["error"]
            .as_str()
            .unwrap()
            .contains("same step twice"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_stops_and_is_rehydrated_by_its_next_message() {
    let h = Harness::start_with(with_sessions(SessionConfig {
        idle_timeout: Duration::from_millis(50),
        ..SessionConfig::default()
    }))
    .await;
    send(&h, "rest:idle", json!({"steps": []})).await;
    wait_kind(&h, "rest:idle", "run.finished", 1).await;
    eventually("the idle session to stop", || async {
        let snap = h.runtime.sessions.snapshot().await.unwrap();
        (snap.live_sessions == 0 && snap.stats.stopped_idle == 1).then_some(())
    })
    .await;
    send(
        &h,
        "rest:idle",
        json!({"steps": [{"skill": "echo", "input": {}}]}),
    )
    .await;
    let events = wait_kind(&h, "rest:idle", "run.finished", 2).await;
    assert_eq!(observations(&events).len(), 1);
    let session = h.store.session_by_key("rest:idle").unwrap().unwrap();
    assert_eq!(session.runs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_run_continues_without_repeating_observed_steps() {
    let h = Harness::start().await;
    send(
        &h,
        "rest:crash",
        json!({"steps": [
            {"skill": "echo", "input": {"step": 1}},
            {"skill": "gate", "input": {}},
            {"skill": "echo", "input": {"step": 3}},
        ]}),
    )
    .await;
    // A queued message must survive too.
    send(
        &h,
        "rest:crash",
        json!({"steps": [{"skill": "echo", "input": {"next": true}}]}),
    )
    .await;
    wait_probe("the gated step to start", &h.gate, |p| p.started() == 1).await;
    h.store.durable().await.unwrap();

    let h = restart_and_release_the_gate(h).await;
    let events = wait_kind(&h, "rest:crash", "run.finished", 2).await;
    let steps: Vec<_> = observations(&events)
        .iter()
        .map(|o| o["step_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(steps, ["s0", "s1", "s2", "s0"]);
    let invoked = kinds(&events)
        .iter()
        .filter(|k| **k == "skill.invoked")
        .count();
    assert_eq!(invoked, 4, "no step was invoked twice");
}

/// Issue #4: a structured event the planner does not want (a GitHub delivery no playbook
/// triggers on) is recorded as `ignored` and starts no run: not when it arrives during a run,
/// not when it arrives at an idle session, and not when the session's pending work is replayed
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_planner_does_not_want_is_recorded_and_never_run() {
    let key = "github:acme/api#7";
    let ignored = |n: u64| Inbound {
        key: key.into(),
        event: Some("ignored.star".into()),
        data: json!({ "n": n }),
        ..Inbound::default()
    };
    let h = Harness::start().await;
    // At a new session: recorded, and no actor is even started for it.
    let first = h.runtime.sessions.send(ignored(1)).await.unwrap();
    h.store.durable().await.unwrap();
    let events = session_events(&h, key);
    assert_eq!(kinds(&events), ["message.received"]);
    assert_eq!(events[0].data["ignored"], true);
    assert_eq!(events[0].data["event"], "ignored.star");
    assert_eq!(first.seq, 1);
    let session = h.store.session_by_key(key).unwrap().unwrap();
    assert_eq!((session.runs, session.queued), (0, 0));
    assert_eq!(session.state, SessionState::Idle);
    let snap = h.runtime.sessions.snapshot().await.unwrap();
    assert_eq!((snap.live_sessions, snap.stats.ignored), (0, 1));

    // During a run, and before a queued message: the run and the message still go as usual.
    send(&h, key, json!({"steps": [{"skill": "gate", "input": {}}]})).await;
    wait_probe("the gated step to start", &h.gate, |p| p.started() == 1).await;
    h.runtime.sessions.send(ignored(2)).await.unwrap();
    send(
        &h,
        key,
        json!({"steps": [{"skill": "echo", "input": {"queued": true}}]}),
    )
    .await;
    h.runtime.sessions.send(ignored(3)).await.unwrap();
    h.store.durable().await.unwrap();

    // The replay after a restart queues the message, not the events.
    let h = restart_and_release_the_gate(h).await;
    let events = wait_kind(&h, key, "run.finished", 2).await;
    h.runtime.sessions.send(ignored(4)).await.unwrap();
    h.store.durable().await.unwrap();
    let events_after = session_events(&h, key);
    let count = |events: &[Event], kind: &str| kinds(events).iter().filter(|k| **k == kind).count();
    assert_eq!(
        count(&events_after, "run.started"),
        2,
        "{:?}",
        kinds(&events_after)
    );
    assert_eq!(count(&events_after, "message.received"), 6);
    let ignored_seen = events_after
        .iter()
        .filter(|e| e.data["ignored"] == true)
        .count();
    assert_eq!(ignored_seen, 4);
    assert_eq!(observations(&events).len(), 2);
    let session = h.store.session_by_key(key).unwrap().unwrap();
    assert_eq!((session.runs, session.queued), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_survives_a_restart() {
    let h = Harness::start().await;
    add_type(&h, "deploy", "echo", approval_policy());
    send(
        &h,
        "rest:prod",
        json!({"steps": [{"skill": "deploy", "input": {"message": "v2"}}]}),
    )
    .await;
    let approval = pending_approval(&h).await;
    h.store.durable().await.unwrap();
    let h = h.restart(Options::default()).await;
    let again = pending_approval(&h).await;
    assert_eq!(again.id, approval.id);
    h.runtime
        .sessions
        .decide(approval.id, ApprovalState::Approved, "alice", None)
        .unwrap();
    let events = wait_kind(&h, "rest:prod", "run.finished", 1).await;
    assert_eq!(observations(&events)[0]["output"], json!({"message": "v2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_keys_and_reused_idempotency_keys_are_refused() {
    let h = Harness::start().await;
    for key in ["nochannel", "Rest:x", "rest:", ":x"] {
        let err = h
            .runtime
            .sessions
            .send(Inbound {
                key: key.into(),
                text: "hi".into(),
                ..Inbound::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("session key"), "{key}: {err}");
    }
    let dedupe = |hash: &str| store::MessageDedupe {
        scope: "k1".into(),
        key: "abc".into(),
        request_hash: hash.into(),
        retention: Duration::from_secs(60),
    };
    let msg = |hash: &str| Inbound {
        key: "rest:idem".into(),
        text: json!({"steps": []}).to_string(),
        dedupe: Some(dedupe(hash)),
        ..Inbound::default()
    };
    let first = h.runtime.sessions.send(msg("h1")).await.unwrap();
    let again = h.runtime.sessions.send(msg("h1")).await.unwrap();
    assert!(again.replayed);
    assert_eq!((again.session_id, again.seq), (first.session_id, first.seq));
    let conflict = h.runtime.sessions.send(msg("h2")).await.unwrap_err();
    assert!(
        conflict.to_string().contains("Idempotency-Key"),
        "{conflict}"
    );
    let events = wait_kind(&h, "rest:idem", "run.finished", 1).await;
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| **k == "message.received")
            .count(),
        1
    );
}
