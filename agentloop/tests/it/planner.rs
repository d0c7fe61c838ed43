//! The default planner over the test playbooks, with its decisions run as real jobs by a real
//! runtime: a stand-in for the session's loop (plan, invoke as a job, observe, re-plan), so the
//! inputs the planner builds are checked by the real handlers.

use std::path::{Path, PathBuf};

use agentloop::planner::testing::{Outcome, drive, message};
use agentloop::{
    CreateJob, Decision, DefaultPlanner, Observation, PlanRequest, Planner, StepStatus,
};
use serde_json::json;
use store::JobState;

use crate::support::{DEADLINE, Harness};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/playbooks")
}

fn fixture_planner() -> DefaultPlanner {
    let (planner, errors) = DefaultPlanner::load_dir(&fixtures_dir());
    assert_eq!(errors, [], "the fixtures load without errors");
    planner
}

/// Runs `text` as one run of a session: each `Invoke` becomes a job of the harness's runtime
/// and its end an observation. Returns the final request and the finishing decision.
async fn run_for_real(
    harness: &Harness,
    planner: &dyn Planner,
    req: &mut PlanRequest,
) -> (Option<String>, Option<String>) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not finish"
        );
        match planner
            .plan(req.clone())
            .await
            .expect("the planner decides")
        {
            Decision::Finish { reply, error } => return (reply, error),
            Decision::Reply { text } => req.replies.push(text),
            Decision::Invoke {
                step_id,
                skill,
                input,
            } => {
                let created = harness.runtime.jobs.create(
                    CreateJob {
                        job_type: skill.clone(),
                        input: input.clone(),
                        session_id: Some(req.trigger.session_id.to_string()),
                        run_id: Some(req.run_id.to_string()),
                        ..Default::default()
                    },
                    None,
                );
                let (status, output, error, job_id) = match created {
                    Ok(store::CreateOutcome::Created(job)) => {
                        let job = wait_terminal(harness, job.id).await;
                        let status = match job.state {
                            JobState::Succeeded => StepStatus::Succeeded,
                            JobState::Cancelled => StepStatus::Cancelled,
                            _ => StepStatus::Failed,
                        };
                        (
                            status,
                            job.output.unwrap_or_default(),
                            job.error,
                            Some(job.id),
                        )
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => (StepStatus::Invalid, json!(null), Some(e.to_string()), None),
                };
                req.history.push(Observation {
                    step: req.history.len() as u32 + 1,
                    step_id,
                    skill,
                    input,
                    status,
                    output,
                    error,
                    job_id,
                });
            }
        }
    }
}

async fn wait_terminal(harness: &Harness, id: store::JobId) -> store::Job {
    crate::support::eventually(format!("job {id} to end"), || async {
        let job = harness.job(id);
        job.state.is_terminal().then_some(job)
    })
    .await
}

#[test]
fn the_fixture_directory_loads_and_lists() {
    let planner = fixture_planner();
    let list = planner.playbooks().list();
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["deploy", "pr-checks", "30-ping"]);
    assert!(
        list[0]
            .path
            .ends_with("tests/fixtures/playbooks/10-deploy.toml")
    );
    assert_eq!(planner.name(), "playbook");
    let report = planner.playbooks().reload(&fixtures_dir());
    assert_eq!(report.unchanged.len(), 3);
    assert_eq!(report.errors, []);
}

#[tokio::test]
async fn the_deploy_playbook_runs_its_failure_branch_when_the_deploy_fails() {
    let planner = fixture_planner();
    let t = drive(
        &planner,
        message("rest", "deploy production v3"),
        |_, skill, _| match skill {
            "build" => Outcome::succeeded(json!({"artifact": "app-v3.tar"})),
            "deploy" => Outcome::failed("health check failed"),
            _ => Outcome::succeeded(json!({"ok": true})),
        },
    )
    .await;
    assert_eq!(
        t.invoked(),
        [
            "deploy:build",
            "deploy:deploy",
            "deploy:rollback",
            "deploy:notify"
        ]
    );
    assert_eq!(
        t.replies(),
        ["Deploying v3 to production", "Built app-v3.tar"]
    );
    assert_eq!(
        t.reply(),
        Some("Deploy failed at deploy: health check failed; rolled back: succeeded")
    );
    assert!(t.finish_error().unwrap().contains("at step `deploy`"));
}

#[tokio::test]
async fn memory_commands_and_run_work_against_the_real_handlers() {
    let harness = Harness::start().await;
    let planner = fixture_planner();
    let trigger = message("local", "/remember the staging database is db-2");

    let mut req = agentloop::planner::testing::request(trigger.clone());
    let (reply, error) = run_for_real(&harness, &planner, &mut req).await;
    assert_eq!((reply.as_deref(), error), (Some("Remembered."), None));

    // Same session, a later run.
    let mut req = agentloop::planner::testing::request(agentloop::Trigger {
        text: "/recall staging database".into(),
        ..trigger.clone()
    });
    let (reply, error) = run_for_real(&harness, &planner, &mut req).await;
    assert_eq!(error, None);
    assert_eq!(
        reply.as_deref(),
        Some("Found 1 for \"staging database\":\n- the staging database is db-2")
    );

    // Another session does not see it.
    let mut req = agentloop::planner::testing::request(message("local", "/recall staging"));
    let (reply, _) = run_for_real(&harness, &planner, &mut req).await;
    assert_eq!(reply.as_deref(), Some("Nothing found for \"staging\"."));

    // `/run` with an input the handler refuses: the refusal is the reply.
    let mut req =
        agentloop::planner::testing::request(message("local", "/run sleep {\"ms\": \"soon\"}"));
    let (reply, error) = run_for_real(&harness, &planner, &mut req).await;
    assert!(
        reply
            .unwrap()
            .starts_with("skill `sleep` could not start: ")
    );
    assert!(error.is_some());

    let mut req =
        agentloop::planner::testing::request(message("local", "/run echo {\"hello\": \"world\"}"));
    let (reply, error) = run_for_real(&harness, &planner, &mut req).await;
    assert_eq!(error, None);
    assert!(reply.unwrap().contains("\"hello\": \"world\""));

    harness
        .runtime
        .shutdown(std::time::Duration::from_millis(100))
        .await;
}
