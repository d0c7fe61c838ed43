//! The DevOps example pack (`examples/devops/`), walked as its README walks it: the real binary
//! with the README's environment, in a copy of the pack inside the test's temporary directory
//! (so the scripts write there and the repository stays clean).
//!
//! - the terminal: `build`, `deploy staging` answered with `/approve`, triage and `/recall`;
//! - REST: approve, deny (the notify branch), a test failure that stops a deploy before its
//!   approval, a failing deploy (the rollback branch), triage that pages, job logs;
//! - the GitHub playbooks, driven through the planner with the pack's real scripts (the GitHub
//!   channel is not part of this binary yet).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentloop::planner::testing::{Outcome, drive, event, message};
use agentloop::{DefaultPlanner, PlaybookPlanner, PlaybookSet, Trigger};
use serde_json::{Value, json};

use crate::harness::{Gateway, local, local_command, session_path, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// The environment the README sets, run from the directory holding `examples/`.
const ENV: &[(&str, &str)] = &[
    ("RAUSKU_SKILLS_DIR", "examples/devops/skills"),
    ("RAUSKU_PLAYBOOKS_DIR", "examples/devops/playbooks"),
    ("RAUSKU_SHELL_ALLOW", "sh"),
    ("RAUSKU_SHELL_WORKDIRS", "examples/devops/sample-app"),
];

/// What the sample app's scripts write (see its `.gitignore`); never copied.
const GENERATED: &[&str] = &[
    "build",
    "dist",
    ".deployments",
    ".logs",
    ".fail-tests",
    ".fail-deploy",
];

/// `examples/devops` in the repository.
fn pack_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/devops")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if GENERATED.iter().any(|g| name == *g) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A temporary directory holding a fresh copy of the pack at `examples/devops`.
fn pack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&pack_source(), &dir.path().join("examples/devops"));
    dir
}

/// The sample app in a copy of the pack.
fn app(root: &Path) -> PathBuf {
    root.join("examples/devops/sample-app")
}

/// The release an environment runs, per `deploy.sh`.
fn current(root: &Path, env: &str) -> Option<String> {
    std::fs::read_to_string(app(root).join(".deployments").join(env).join("current"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Runs `rauskuclaw local` in `root` as a person at a terminal would: for each `(wait, line)`,
/// waits until the output so far contains `wait` (nothing when empty), then types `line`. Ends
/// the input after the last line and returns whether it exited 0, and its output.
fn converse(root: &Path, args: &[&str], script: &[(&str, &str)]) -> (bool, String) {
    let mut child = local_command(root, args, ENV)
        .spawn()
        .expect("spawn rauskuclaw local");
    let output = Arc::new(Mutex::new(String::new()));
    let reader = {
        let stdout = child.stdout.take().unwrap();
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        })
    };
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut stdin = child.stdin.take().unwrap();
    for (wait, line) in script {
        let started = Instant::now();
        while !output.lock().unwrap().contains(wait) {
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!(
                    "`local` never printed {wait:?}; output:\n{}",
                    output.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let out = output.lock().unwrap().clone();
    let errors = errors.join().unwrap();
    (status.success(), format!("{out}{errors}"))
}

fn stdout_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The README's part (a): the local channel.
#[test]
fn the_terminal_walkthrough_builds_deploys_once_approved_and_recalls_a_triage() {
    let dir = pack();
    let root = dir.path();

    // echo 'build' | rauskuclaw local
    let out = local(root, &[], ENV, "build\n");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("· plan: build {\"args\":[\"main\"]} (10-build:build)"),
        "{text}"
    );
    assert!(text.contains("« Built dist/app-main.tar.gz"), "{text}");
    assert!(app(root).join("dist/app-main.tar.gz").is_file());

    // `deploy staging`, then `/approve` once the approval is asked for.
    let (ok, text) = converse(
        root,
        &[],
        &[("", "deploy staging"), ("? approval needed", "/approve")],
    );
    assert!(ok, "{text}");
    for line in [
        "« Deploying main to staging: build, test, then deploy once approved",
        "« Built dist/app-main.tar.gz",
        "« Tests passed: 5 checks",
        "? approval needed for deploy {\"args\":[\"staging\",\"dist/app-main.tar.gz\"]} (risk deploy): /approve ",
        "· approval approved by local:",
        "✓ run finished",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let release = current(root, "staging").expect("staging runs a release");
    assert!(
        text.contains(&format!("« Deployed {release} to staging")),
        "{text}"
    );
    assert!(
        app(root)
            .join(".deployments/staging/releases")
            .join(&release)
            .join("app.sh")
            .is_file()
    );

    // Triage remembers; `/recall` finds it, from another user's session too.
    let out = local(root, &[], ENV, "triage checkout errors\n");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "« Triage: staging runs {release}; production runs none"
        )),
        "{text}"
    );
    assert!(text.contains("Remembered (find it again with `/recall incident`)."));
    let out = local(root, &["--user", "oncall"], ENV, "/recall checkout\n");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("« Found 1 for \"checkout\":"), "{text}");
    assert!(
        text.contains("- incident triage (checkout errors): staging runs"),
        "{text}"
    );
}

async fn events(gw: &Gateway, key: &str) -> Vec<Value> {
    let r = gw
        .get(&format!(
            "/v1/sessions/{}/events?after=0&limit=1000",
            session_path(key)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"].as_array().unwrap().clone()
}

/// Waits for the session's `n`th run to end (finished or failed); returns its events.
async fn run_ended(gw: &Gateway, key: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("run {n} of {key} to end"), DEADLINE, || async {
        let evs = events(gw, key).await;
        let ended = evs
            .iter()
            .filter(|e| matches!(e["kind"].as_str(), Some("run.finished" | "run.failed")))
            .count();
        (ended >= n).then_some(evs)
    })
    .await
}

/// The events of the session's last run (from its last `run.started`).
fn last_run(evs: &[Value]) -> &[Value] {
    let start = evs
        .iter()
        .rposition(|e| e["kind"] == "run.started")
        .unwrap();
    &evs[start..]
}

/// `(step, status)` of each observation.
fn steps(evs: &[Value]) -> Vec<(String, String)> {
    evs.iter()
        .filter(|e| e["kind"] == "skill.observed")
        .map(|e| {
            let o = &e["data"]["observation"];
            let step = o["step_id"].as_str().unwrap();
            let step = step.split_once(':').map_or(step, |(_, s)| s);
            (step.to_owned(), o["status"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn replies(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .filter(|e| e["kind"] == "reply")
        .map(|e| e["data"]["text"].as_str().unwrap().to_owned())
        .collect()
}

fn ended_as(evs: &[Value]) -> &str {
    evs.last().unwrap()["kind"].as_str().unwrap()
}

/// Waits for the pending approval and decides it.
async fn decide(gw: &Gateway, decision: &str, note: &str) -> Value {
    let approval = wait_for("a pending approval", DEADLINE, || async {
        let r = gw.get("/v1/approvals?state=pending").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["approvals"].as_array().unwrap().first().cloned()
    })
    .await;
    let id = approval["id"].as_str().unwrap();
    let r = gw
        .post(
            &format!("/v1/approvals/{id}"),
            json!({ "decision": decision, "note": note }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    approval
}

/// The README's part (b): `serve` and curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_walkthrough_approves_denies_stops_on_failing_tests_and_rolls_back() {
    let dir = pack();
    let root = dir.path().to_owned();
    let mut builder = Gateway::builder().dir(dir);
    for (k, v) in ENV {
        builder = builder.env(k, v);
    }
    let gw = builder.start().await;

    // Everything in the pack loaded.
    let r = gw.get("/v1/runtime").await;
    let playbooks: Vec<&str> = r.json["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        playbooks,
        [
            "10-build",
            "20-test",
            "30-deploy",
            "40-rollback",
            "50-triage",
            "60-github-pr",
            "70-github-deploy"
        ],
        "{}",
        r.text
    );
    for skill in ["build", "test", "deploy", "rollback", "triage", "notify"] {
        let r = gw.get(&format!("/v1/job-types/{skill}")).await;
        assert_eq!(r.status, 200, "{skill}: {}", r.text);
        assert!(r.json["enabled"].as_bool().unwrap(), "{}", r.text);
    }

    // Approve: deployed.
    gw.say("rest:ops", "deploy staging").await;
    let approval = decide(&gw, "approve", "go").await;
    assert_eq!(approval["skill"], "deploy");
    assert_eq!(approval["risk"], "deploy");
    assert_eq!(
        approval["input"],
        json!({"args": ["staging", "dist/app-main.tar.gz"]})
    );
    let evs = run_ended(&gw, "rest:ops", 1).await;
    assert_eq!(ended_as(&evs), "run.finished", "{evs:#?}");
    assert_eq!(
        steps(&evs),
        pairs(&[
            ("build", "succeeded"),
            ("test", "succeeded"),
            ("deploy", "succeeded")
        ])
    );
    let first = current(&root, "staging").expect("staging runs a release");
    assert_eq!(
        replies(&evs),
        [
            "Deploying main to staging: build, test, then deploy once approved".to_owned(),
            "Built dist/app-main.tar.gz".to_owned(),
            "Tests passed: 5 checks".to_owned(),
            format!("Deployed {first} to staging"),
        ]
    );
    // The deploy job's log has the command line and the script's output.
    let job_id = evs.iter().rfind(|e| e["kind"] == "skill.invoked").unwrap()["data"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw.get(&format!("/v1/jobs/{job_id}/logs")).await;
    let logs: Vec<&str> = r.json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        logs[0].starts_with("$ sh deploy.sh staging dist/app-main.tar.gz"),
        "{logs:?}"
    );
    assert!(
        logs.contains(&format!("deployed {first} to staging").as_str()),
        "{logs:?}"
    );

    // Deny: no rollback (nothing changed), only the notify branch.
    gw.say("rest:ops", "deploy production").await;
    decide(&gw, "deny", "change freeze").await;
    let evs = run_ended(&gw, "rest:ops", 2).await;
    let run = last_run(&evs);
    assert_eq!(ended_as(run), "run.failed");
    assert_eq!(
        steps(run),
        pairs(&[
            ("build", "succeeded"),
            ("test", "succeeded"),
            ("deploy", "denied"),
            ("notify", "succeeded")
        ])
    );
    let notified = run.iter().rfind(|e| e["kind"] == "skill.observed").unwrap();
    assert_eq!(
        notified["data"]["observation"]["output"]["text"],
        "deploy of main to production: deploy denied"
    );
    let last = replies(run).pop().unwrap();
    assert!(
        last.starts_with("Not deployed to production (denied: ")
            && last.contains("change freeze")
            && last.ends_with("nothing was changed."),
        "{last}"
    );
    assert_eq!(current(&root, "production"), None);

    // A failing test stops the deploy before anyone is asked to approve it.
    std::fs::write(app(&root).join(".fail-tests"), "").unwrap();
    gw.say("rest:ops", "deploy staging").await;
    let evs = run_ended(&gw, "rest:ops", 3).await;
    let run = last_run(&evs);
    assert_eq!(
        steps(run),
        pairs(&[
            ("build", "succeeded"),
            ("test", "failed"),
            ("notify", "succeeded")
        ])
    );
    assert!(!run.iter().any(|e| e["kind"] == "approval.requested"));
    let last = replies(run).pop().unwrap();
    assert!(
        last.starts_with("Deploy of main to staging failed at test: ")
            && last.contains("FAIL no test is forced to fail"),
        "{last}"
    );
    std::fs::remove_file(app(&root).join(".fail-tests")).unwrap();

    // A deploy whose health check fails: rolled back to the release before it, then notify.
    std::fs::write(app(&root).join(".fail-deploy"), "").unwrap();
    gw.say("rest:ops", "deploy staging v2").await;
    decide(&gw, "approve", "").await;
    let evs = run_ended(&gw, "rest:ops", 4).await;
    let run = last_run(&evs);
    assert_eq!(ended_as(run), "run.failed");
    assert_eq!(
        steps(run),
        pairs(&[
            ("build", "succeeded"),
            ("test", "succeeded"),
            ("deploy", "failed"),
            ("rollback", "succeeded"),
            ("notify", "succeeded")
        ])
    );
    let last = replies(run).pop().unwrap();
    assert!(
        last.starts_with("Deploy of v2 to staging failed at deploy: ")
            && last.contains("the demo switch .fail-deploy is set")
            && last.ends_with(&format!("Rolled back: staging runs {first} again.")),
        "{last}"
    );
    assert_eq!(current(&root, "staging").as_deref(), Some(first.as_str()));
    std::fs::remove_file(app(&root).join(".fail-deploy")).unwrap();

    // Triage sees the failed health check: it remembers, and pages.
    gw.say("rest:oncall", "incident checkout is slow").await;
    let evs = run_ended(&gw, "rest:oncall", 1).await;
    assert_eq!(ended_as(&evs), "run.finished", "{evs:#?}");
    assert_eq!(
        steps(&evs),
        pairs(&[
            ("triage", "succeeded"),
            ("remember", "succeeded"),
            ("page", "succeeded")
        ])
    );
    let last = replies(&evs).pop().unwrap();
    assert!(
        last.starts_with(&format!(
            "Triage: staging runs {first}; production runs none"
        )) && last.contains("last deploy event: staging rolled back app-v2-")
            && last.ends_with("on-call paged."),
        "{last}"
    );
    gw.say("rest:oncall", "/recall checkout").await;
    let evs = run_ended(&gw, "rest:oncall", 2).await;
    let last = replies(&evs).pop().unwrap();
    assert!(
        last.starts_with("Found 1 for \"checkout\":\n- incident triage (checkout is slow): "),
        "{last}"
    );
}

/// What shell.exec would make of running a skill's script (`sh <skill>.sh <args>` in the app):
/// its output on success, its stderr as the error otherwise. `notify` echoes its input.
fn run_script(app: &Path, skill: &str, input: &Value) -> Outcome {
    if skill == "notify" {
        return Outcome::succeeded(input.clone());
    }
    let args: Vec<&str> = input["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default();
    let out = Command::new("sh")
        .arg(format!("{skill}.sh"))
        .args(&args)
        .current_dir(app)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Outcome::succeeded(json!({"exit_code": 0, "stdout": stdout, "stderr": stderr}))
    } else {
        Outcome::failed(&format!("{skill}.sh failed: {stderr}{stdout}"))
    }
}

/// The GitHub playbooks, through the planner (the channel that turns webhooks into these
/// triggers is not in this binary yet), with the pack's real scripts.
#[tokio::test]
async fn the_github_playbooks_build_test_and_deploy_a_pull_request() {
    let dir = pack();
    let app = app(dir.path());
    let (set, errors) = PlaybookSet::load_dir(&dir.path().join("examples/devops/playbooks"));
    assert!(errors.is_empty(), "{errors:?}");
    let planner = DefaultPlanner::new(PlaybookPlanner::new(set));
    let run = |skill: &str, input: &Value| run_script(&app, skill, input);
    let pr = json!({
        "repo": "acme/shop", "number": 7, "title": "Cart", "pull_request": true,
        "sha": "0123456789abcdef0123456789abcdef01234567", "head": "cart", "base": "main",
    });

    // A PR was opened: build and test its head, and say how it went.
    let opened = event("github", "pull_request.opened", pr.clone());
    let t = drive(&planner, opened.clone(), |_, skill, input| {
        run(skill, input)
    })
    .await;
    assert_eq!(t.invoked(), ["60-github-pr:build", "60-github-pr:test"]);
    assert_eq!(t.last.history[0].input, json!({"args": ["pr-7"]}));
    assert_eq!(
        t.reply(),
        Some(
            "✅ Build and tests passed for 0123456789ab (5 checks). Comment `/rausku deploy \
             staging` to deploy it."
        )
    );
    std::fs::write(app.join(".fail-tests"), "").unwrap();
    let t = drive(&planner, opened, |_, skill, input| run(skill, input)).await;
    let reply = t.reply().unwrap();
    assert!(
        reply.starts_with("❌ Test failed for 0123456789ab: ")
            && reply.contains("FAIL no test is forced to fail"),
        "{reply}"
    );
    std::fs::remove_file(app.join(".fail-tests")).unwrap();

    // `/rausku deploy staging` on the PR: build, test, deploy the PR's artifact to staging.
    let comment = Trigger {
        data: pr.clone(),
        ..message("github", "deploy staging")
    };
    let t = drive(&planner, comment.clone(), |_, skill, input| {
        run(skill, input)
    })
    .await;
    assert_eq!(
        t.invoked(),
        [
            "70-github-deploy:build",
            "70-github-deploy:test",
            "70-github-deploy:deploy"
        ]
    );
    assert_eq!(
        t.last.history[2].input,
        json!({"args": ["staging", "dist/app-pr-7.tar.gz"]})
    );
    let release = current(dir.path(), "staging").unwrap();
    assert!(release.starts_with("app-pr-7-"), "{release}");
    assert_eq!(
        t.replies()[0],
        "Deploying PR #7 to staging: build, test, then deploy once an operator approves."
    );
    assert_eq!(
        t.reply(),
        Some(format!("🚀 Deployed {release} to staging.").as_str())
    );

    // A deploy that fails is rolled back; the PR is told.
    std::fs::write(app.join(".fail-deploy"), "").unwrap();
    let t = drive(&planner, comment, |_, skill, input| run(skill, input)).await;
    assert_eq!(
        t.invoked()[2..],
        [
            "70-github-deploy:deploy",
            "70-github-deploy:rollback",
            "70-github-deploy:notify"
        ]
    );
    let reply = t.reply().unwrap();
    assert!(
        reply.starts_with("Staging deploy of PR #7 did not go out: deploy failed (")
            && reply.ends_with("; rolled back."),
        "{reply}"
    );
    assert_eq!(current(dir.path(), "staging"), Some(release));

    // Production is not deployable from GitHub: no playbook matches, and nothing runs.
    let t = drive(
        &planner,
        Trigger {
            data: pr,
            ..message("github", "deploy production")
        },
        |_, skill, input| run(skill, input),
    )
    .await;
    assert!(t.invoked().is_empty(), "{:?}", t.invoked());
    // The terminal's `deploy` playbook is not GitHub's.
    let t = drive(&planner, message("local", "deploy staging"), |_, _, _| {
        Outcome::failed("not run")
    })
    .await;
    assert_eq!(t.invoked()[0], "30-deploy:build");
}
