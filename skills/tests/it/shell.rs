//! `shell.exec` running real processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use skills::builtin::{ShellExec, ShellPolicy};
use skills::{AttemptOutcome, Handler, JobContext, JobLog};
use store::{JobId, LogLevel};
use tempfile::TempDir;

/// A [`JobLog`] that keeps its lines with their levels.
#[derive(Default)]
struct Lines(Mutex<Vec<(LogLevel, String)>>);

impl JobLog for Lines {
    fn log(&self, level: LogLevel, message: String) {
        self.0.lock().unwrap().push((level, message));
    }
}

impl Lines {
    fn at(&self, level: LogLevel) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

fn ctx(log: Arc<Lines>) -> JobContext {
    JobContext {
        job_id: JobId::new(),
        job_type: "shell.exec".into(),
        attempt: 1,
        max_attempts: 1,
        timeout_ms: 10_000,
        config: Value::Null,
        log,
    }
}

/// A handler allowing a few standard programs, run in `workdir`.
fn handler(workdir: &Path) -> ShellExec {
    ShellExec::new(ShellPolicy {
        allow: ["echo", "false", "sh", "cat", "pwd", "env"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        workdirs: vec![workdir.to_owned()],
        env_allow: vec!["GREETING".into()],
    })
}

/// Validates `input`, runs it, and returns the outcome and the log.
async fn call(h: &ShellExec, input: Value) -> (AttemptOutcome, Arc<Lines>) {
    h.validate(&Value::Null, &input).unwrap();
    let log = Arc::new(Lines::default());
    let out = tokio::time::timeout(Duration::from_secs(20), h.run(ctx(log.clone()), input))
        .await
        .expect("the command finished");
    (out, log)
}

fn succeeded(out: AttemptOutcome) -> Value {
    match out {
        AttemptOutcome::Succeeded(v) => v,
        other => panic!("expected success, got {other:?}"),
    }
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped, which is as dead).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits up to 10 s for process `pid` to die.
async fn assert_dies(pid: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !is_dead(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} is still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to 10 s for `path` to hold a pid followed by a newline.
async fn read_pidfile(path: &PathBuf) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(pid) = text.strip_suffix('\n').and_then(|t| t.parse().ok())
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn echo_succeeds_and_streams_its_output() {
    let dir = TempDir::new().unwrap();
    let h = handler(dir.path());
    let (out, log) = call(&h, json!({"argv": ["echo", "hello", "world"]})).await;
    let out = succeeded(out);
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["stdout"], "hello world\n");
    assert_eq!(out["stderr"], "");
    assert_eq!(out["truncated"], false);
    assert!(out["duration_ms"].is_u64(), "{out}");
    let info = log.at(LogLevel::Info);
    assert!(info.iter().any(|l| l == "hello world"), "{info:?}");
    assert!(info[0].starts_with("$ echo hello world"), "{info:?}");
}

#[tokio::test]
async fn a_fixed_script_takes_its_arguments_from_the_job() {
    // As a manifest `[config] argv = ["sh", "greet.sh"], accept_args = true` would run it.
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("greet.sh"), "echo \"hello $1 ($#)\"\n").unwrap();
    let h = handler(dir.path());
    let config = json!({"argv": ["sh", "greet.sh"], "accept_args": true});
    let input = json!({"args": ["big world; rm -rf /"]});
    h.validate(&config, &input).unwrap();
    let log = Arc::new(Lines::default());
    let ctx = JobContext {
        config,
        ..ctx(log.clone())
    };
    let out = succeeded(h.run(ctx, input).await);
    // One argument, never parsed by a shell.
    assert_eq!(out["stdout"], "hello big world; rm -rf / (1)\n");
    let info = log.at(LogLevel::Info);
    assert!(
        info[0].starts_with("$ sh greet.sh 'big world; rm -rf /'"),
        "{info:?}"
    );
}

#[tokio::test]
async fn stderr_is_logged_as_warnings_and_non_zero_exit_fails() {
    let dir = TempDir::new().unwrap();
    let h = handler(dir.path());
    let (out, log) = call(
        &h,
        json!({"argv": ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]}),
    )
    .await;
    match out {
        AttemptOutcome::Failed { error, retryable } => {
            assert!(retryable, "a failed command may pass on a retry");
            assert!(error.contains("exited with code 3"), "{error}");
            assert!(error.contains("stderr: to-err"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(log.at(LogLevel::Info).contains(&"to-out".to_owned()));
    assert!(log.at(LogLevel::Warn).contains(&"to-err".to_owned()));

    let (out, _) = call(&h, json!({"argv": ["false"]})).await;
    assert!(
        matches!(&out, AttemptOutcome::Failed { error, retryable: true } if error.contains("`false` exited with code 1")),
        "{out:?}"
    );
}

#[tokio::test]
async fn refusals_name_the_field() {
    let dir = TempDir::new().unwrap();
    let other = TempDir::new().unwrap();
    let h = handler(dir.path());

    let err = h
        .validate(&Value::Null, &json!({"argv": ["rm", "-rf", "/"]}))
        .unwrap_err();
    assert_eq!(err.field, "input.argv.0");
    assert!(err.message.contains("not on the allowlist"), "{err}");

    let err = h
        .validate(
            &Value::Null,
            &json!({"argv": ["pwd"], "cwd": other.path().to_str().unwrap()}),
        )
        .unwrap_err();
    assert_eq!(err.field, "input.cwd");
    assert!(err.message.contains("outside"), "{err}");

    let err = h
        .validate(
            &Value::Null,
            &json!({"argv": ["env"], "env": {"LD_PRELOAD": "/tmp/x.so"}}),
        )
        .unwrap_err();
    assert_eq!(err.field, "input.env.LD_PRELOAD");

    let empty = ShellExec::new(ShellPolicy::default());
    assert!(!empty.enabled_by_default());
    let err = empty
        .validate(&Value::Null, &json!({"argv": ["echo", "hi"]}))
        .unwrap_err();
    assert_eq!(err.field, "input.argv.0");
    assert!(err.message.contains("RAUSKU_SHELL_ALLOW"), "{err}");

    // Running an input that skipped validation fails the job for good.
    let log = Arc::new(Lines::default());
    let out = empty.run(ctx(log), json!({"argv": ["echo"]})).await;
    assert!(
        matches!(
            out,
            AttemptOutcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn cwd_env_and_stdin() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let real = dir.path().canonicalize().unwrap();
    let h = handler(dir.path());

    let (out, _) = call(&h, json!({"argv": ["pwd"]})).await;
    assert_eq!(succeeded(out)["stdout"], format!("{}\n", real.display()));
    let (out, _) = call(&h, json!({"argv": ["pwd"], "cwd": "sub"})).await;
    assert_eq!(
        succeeded(out)["stdout"],
        format!("{}\n", real.join("sub").display())
    );

    // The environment is cleared but for PATH, HOME, LANG and the allowed names given.
    let (out, _) = call(&h, json!({"argv": ["env"], "env": {"GREETING": "hei"}})).await;
    let out = succeeded(out);
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.lines().any(|l| l == "GREETING=hei"), "{stdout}");
    for line in stdout.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            ["PATH", "HOME", "LANG", "GREETING"].contains(&name),
            "{name} leaked into the child's environment"
        );
    }

    let (out, _) = call(&h, json!({"argv": ["cat"], "stdin": "a\nb\n"})).await;
    assert_eq!(succeeded(out)["stdout"], "a\nb\n");
}

#[tokio::test]
async fn output_keeps_the_tail() {
    let dir = TempDir::new().unwrap();
    let h = handler(dir.path());
    let script = "i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done";
    let (out, log) = call(
        &h,
        json!({"argv": ["sh", "-c", script], "max_output_bytes": 100}),
    )
    .await;
    let out = succeeded(out);
    assert_eq!(out["truncated"], true);
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 100);
    assert!(stdout.ends_with("line498\nline499\n"), "{stdout}");
    // Every line was logged all the same.
    let info = log.at(LogLevel::Info);
    assert!(info.contains(&"line0".to_owned()) && info.contains(&"line499".to_owned()));
}

#[tokio::test]
async fn dropping_the_attempt_kills_the_process_group() {
    let dir = TempDir::new().unwrap();
    let pidfile = dir.path().join("pid");
    let h = handler(dir.path());
    let input = json!({
        "argv": ["sh", "-c", format!("sleep 30 & echo $! > {}; wait", pidfile.display())],
    });
    h.validate(&Value::Null, &input).unwrap();
    let log = Arc::new(Lines::default());
    let mut attempt = h.run(ctx(log), input);

    // Run the attempt until the grandchild has started, then drop it as a timeout would.
    let pid = tokio::select! {
        out = &mut attempt => panic!("the command ended early: {out:?}"),
        pid = read_pidfile(&pidfile) => pid,
    };
    assert!(!is_dead(pid), "the grandchild is running");
    let timed_out = tokio::time::timeout(Duration::from_millis(50), &mut attempt).await;
    assert!(timed_out.is_err(), "still running before the drop");
    drop(attempt);
    assert_dies(pid).await;
}

#[tokio::test]
async fn background_processes_die_with_the_program() {
    let dir = TempDir::new().unwrap();
    let h = handler(dir.path());
    // The shell exits at once, leaving a sleeper that holds stdout open.
    let started = std::time::Instant::now();
    let (out, _) = call(&h, json!({"argv": ["sh", "-c", "sleep 30 & echo $!"]})).await;
    let out = succeeded(out);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the sleeper"
    );
    let pid: u32 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert_dies(pid).await;
}
