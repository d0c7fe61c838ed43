//! `shell.exec`: runs one allowlisted program with an argv, never through a shell.
//!
//! Input: `{argv: [program, arg, ...], args? [arg, ...], cwd?, env? {NAME: value}, stdin?
//! (string), max_output_bytes? (64 KiB)}`; `args` are appended to `argv`. Output: `{exit_code,
//! stdout, stderr, truncated, duration_ms}`, where `stdout` and `stderr` are the last
//! `max_output_bytes` bytes of each stream and `truncated` says whether either was cut.
//!
//! What a job may do is bounded by the [`ShellPolicy`], checked when the input is validated (so
//! a refused program is a 400, not a failed job) and again when the attempt starts:
//! - `argv[0]` must be on the allowlist (`RAUSKU_SHELL_ALLOW`): a bare name is looked up in the
//!   gateway's `PATH` (absolute entries only) and the program found there is run by its absolute
//!   path; a name with a `/` must be an absolute path that is itself allowlisted. With an empty
//!   allowlist nothing runs, and the seeded job type starts disabled.
//! - `cwd` must be inside one of the allowed working directories, after symlinks are resolved.
//! - The child starts from an empty environment plus `PATH`, `HOME` and `LANG` from the gateway,
//!   plus the input's `env`, whose names must be allowlisted.
//!
//! Each line of stdout is logged at `info` and each line of stderr at `warn` as it arrives.
//!
//! The program runs in a process group of its own. When the attempt ends the whole group is
//! killed: on timeout or cancel (the runtime drops the future, and a guard kills the group with
//! SIGKILL), and also after the program exits, so a background process it left behind does not
//! outlive the job (a process that moved to its own session escapes this).
//!
//! A job type over this handler may fix fields in its `config` (e.g. `{"argv": ["cargo",
//! "test"], "cwd": "/srv/repo"}`): those are merged into every input, and an input that sets a
//! fixed field again is refused (`env` maps are merged name by name).
//!
//! A type whose config fixes `argv` takes no `args` from its jobs, unless the config also says
//! `"accept_args": true`: then each job may append `args` to the fixed command line (`{"argv":
//! ["sh", "deploy.sh"], "accept_args": true}` and a job's `{"args": ["staging"]}` run `sh
//! deploy.sh staging`). The type's `input_schema` is the place to bound them. `accept_args` is
//! read from the config only; an input may not set it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use store::{JobDefaults, LogLevel};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{kind, object, opt_u64};
use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};

/// How much of each stream the output keeps when the input does not set `max_output_bytes`.
pub const DEFAULT_OUTPUT_BYTES: u64 = 64 << 10;
/// The largest `max_output_bytes` an input may ask for: 10 MiB per stream.
pub const MAX_OUTPUT_BYTES_LIMIT: u64 = 10 << 20;
/// The gateway's environment variables every child gets (when the gateway has them).
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG"];
/// Lines logged per stream and attempt; past that the output's tail still has them.
const MAX_LOGGED_LINES: usize = 10_000;
/// A line longer than this is logged in pieces.
const MAX_LINE_BYTES: usize = 16 << 10;
/// How long to keep reading after the program exited and its group was killed. Only a process
/// that left the group (setsid) and kept the pipes open makes this wait.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How much of the output's tail goes into a failure message.
const ERROR_SNIPPET: usize = 500;
/// How much of the command line goes into messages.
const COMMAND_DISPLAY: usize = 200;

const FIELDS: &[&str] = &["argv", "args", "cwd", "env", "stdin", "max_output_bytes"];

/// The config-only switch that lets jobs append `args` to a type's fixed `argv`.
const ACCEPT_ARGS: &str = "accept_args";

/// What `shell.exec` may run, where, and with which environment (the gateway builds it from
/// `RAUSKU_SHELL_ALLOW`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellPolicy {
    /// Programs that may run: bare names (`cargo`, looked up in the gateway's `PATH`) or
    /// absolute paths (`/usr/bin/git`, which also pins what the bare name `git` runs). Empty:
    /// nothing may run, and the `shell.exec` job type is seeded disabled.
    pub allow: Vec<String>,
    /// Directories a job's `cwd` must be inside (after symlinks are resolved); a job without
    /// `cwd` runs in the first one. Empty: only the gateway's working directory (and below).
    pub workdirs: Vec<PathBuf>,
    /// Environment variable names a job's `env` may set.
    pub env_allow: Vec<String>,
}

impl ShellPolicy {
    /// The policy with blank entries dropped and the rest trimmed.
    fn normalized(self) -> ShellPolicy {
        let clean = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        ShellPolicy {
            allow: clean(self.allow),
            workdirs: self
                .workdirs
                .into_iter()
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            env_allow: clean(self.env_allow),
        }
    }

    /// The absolute path of the program `name` (`argv[0]`), if the allowlist lets it run.
    pub fn resolve_program(&self, name: &str) -> Result<PathBuf, String> {
        if self.allow.is_empty() {
            return Err(
                "shell.exec is disabled: no program is allowlisted; list the programs it \
                        may run in RAUSKU_SHELL_ALLOW (comma-separated names such as `cargo,git`, \
                        or absolute paths)"
                    .to_owned(),
            );
        }
        if name.is_empty() {
            return Err("the program name is empty; give an allowlisted program".to_owned());
        }
        let not_allowed = || {
            format!(
                "program `{name}` is not on the allowlist (RAUSKU_SHELL_ALLOW: {}); use an \
                 allowlisted program or add it there",
                self.allow.join(", ")
            )
        };
        if name.contains('/') {
            // A path runs only if that exact absolute path is allowlisted.
            let path = Path::new(name);
            if !path.is_absolute() || !self.allow.iter().any(|a| a == name) {
                return Err(format!(
                    "{}; a program given as a path must be an absolute path that is itself \
                     allowlisted",
                    not_allowed()
                ));
            }
            return if is_executable(path) {
                Ok(path.to_owned())
            } else {
                Err(format!(
                    "program `{name}` is allowlisted but is not an executable file"
                ))
            };
        }
        if name == "." || name == ".." {
            return Err(not_allowed());
        }
        // An allowlisted absolute path with this file name pins the program.
        if let Some(pinned) = self
            .allow
            .iter()
            .map(Path::new)
            .find(|p| p.is_absolute() && p.file_name().is_some_and(|f| f == name))
        {
            return if is_executable(pinned) {
                Ok(pinned.to_owned())
            } else {
                Err(format!(
                    "program `{name}` is allowlisted as `{}`, which is not an executable file",
                    pinned.display()
                ))
            };
        }
        if !self.allow.iter().any(|a| a == name) {
            return Err(not_allowed());
        }
        find_in_path(name).ok_or_else(|| {
            format!(
                "program `{name}` is allowlisted but was not found in the gateway's PATH; install \
                 it or allowlist its absolute path"
            )
        })
    }

    /// The canonical working directory for `cwd` (relative to the default directory), if it is
    /// inside an allowed one.
    pub fn resolve_cwd(&self, cwd: Option<&str>) -> Result<PathBuf, String> {
        let configured = !self.workdirs.is_empty();
        let roots: Vec<PathBuf> = if configured {
            self.workdirs.clone()
        } else {
            vec![std::env::current_dir().map_err(|e| {
                format!("the gateway's working directory cannot be read ({e}); set RAUSKU_SHELL_WORKDIRS")
            })?]
        };
        let roots: Vec<PathBuf> = roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let describe = || {
            if configured {
                format!(
                    "the allowed working directories (RAUSKU_SHELL_WORKDIRS: {})",
                    self.workdirs
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                "the gateway's working directory (set RAUSKU_SHELL_WORKDIRS to allow others)"
                    .to_owned()
            }
        };
        let Some(default) = roots.first() else {
            return Err(format!("none of {} exists", describe()));
        };
        let Some(cwd) = cwd else {
            return Ok(default.clone());
        };
        if cwd.is_empty() {
            return Err("empty; leave it out to run in the default directory".to_owned());
        }
        let wanted = default.join(cwd);
        let real = std::fs::canonicalize(&wanted)
            .map_err(|e| format!("`{}` cannot be used: {e}", wanted.display()))?;
        if !real.is_dir() {
            return Err(format!("`{}` is not a directory", real.display()));
        }
        if !roots.iter().any(|root| real.starts_with(root)) {
            return Err(format!("`{}` is outside {}", real.display(), describe()));
        }
        Ok(real)
    }

    /// Whether a job may set the environment variable `name`.
    pub fn check_env(&self, name: &str) -> Result<(), String> {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err("not a valid environment variable name".to_owned());
        }
        if self.env_allow.iter().any(|n| n == name) {
            return Ok(());
        }
        let allowed = if self.env_allow.is_empty() {
            "none".to_owned()
        } else {
            self.env_allow.join(", ")
        };
        Err(format!(
            "`{name}` may not be set; the variables a job may set are: {allowed} \
             (RAUSKU_SHELL_ENV)"
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the gateway's `PATH`, skipping relative entries (which would
/// depend on the working directory).
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The `shell.exec` handler.
#[derive(Clone)]
pub struct ShellExec {
    policy: Arc<ShellPolicy>,
}

/// A validated command.
#[derive(Debug)]
struct Exec {
    /// The absolute path run.
    program: PathBuf,
    /// As given; `argv[0]` is passed to the program as its name.
    argv: Vec<String>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    max_output: usize,
}

impl ShellExec {
    /// A handler running what `policy` allows (blank entries are ignored).
    pub fn new(policy: ShellPolicy) -> Self {
        ShellExec {
            policy: Arc::new(policy.normalized()),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &ShellPolicy {
        &self.policy
    }
}

/// `config` without [`ACCEPT_ARGS`], and its value.
fn split_accept_args(config: &Value) -> Result<(Value, bool), InputError> {
    let Some(fixed) = config.as_object().filter(|c| c.contains_key(ACCEPT_ARGS)) else {
        return Ok((config.clone(), false));
    };
    let accept = match &fixed[ACCEPT_ARGS] {
        Value::Bool(b) => *b,
        other => {
            return Err(InputError::new(
                format!("config.{ACCEPT_ARGS}"),
                format!("expected a boolean, got {}", kind(other)),
            ));
        }
    };
    let mut rest = fixed.clone();
    rest.remove(ACCEPT_ARGS);
    Ok((Value::Object(rest), accept))
}

/// The strings of the array field `field` (`argv`, `args`).
fn strings(field: &str, items: &[Value]) -> Result<Vec<String>, InputError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.contains('\0') => Err(InputError::new(
                format!("input.{field}.{i}"),
                "contains a NUL byte",
            )),
            Value::String(s) => Ok(s.clone()),
            other => Err(InputError::new(
                format!("input.{field}.{i}"),
                format!("expected a string, got {}", kind(other)),
            )),
        })
        .collect()
}

fn parse(policy: &ShellPolicy, config: &Value, input: &Value) -> Result<Exec, InputError> {
    if input.get(ACCEPT_ARGS).is_some() {
        return Err(InputError::new(
            format!("input.{ACCEPT_ARGS}"),
            "only a job type's config can set it; leave it out",
        ));
    }
    let (config, accept_args) = split_accept_args(config)?;
    let argv_fixed = config.get("argv").is_some_and(|v| !v.is_null());
    if argv_fixed && !accept_args && input.get("args").is_some_and(|v| !v.is_null()) {
        return Err(InputError::new(
            "input.args",
            "this job type fixes its command line (`argv` in its config) and takes no extra \
             arguments; leave it out (a type that should take them says `accept_args = true` \
             in its config)",
        ));
    }
    let merged = super::merge_config(&config, input, "env", false)?;
    let obj = object(&merged, FIELDS)?;

    let mut argv: Vec<String> = match obj.get("argv") {
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(InputError::new(
                "input.argv",
                "empty; give the program and its arguments, e.g. [\"cargo\", \"test\"]",
            ));
        }
        Some(Value::Array(items)) => strings("argv", items)?,
        Some(Value::String(_)) => {
            return Err(InputError::new(
                "input.argv",
                "expected an array of strings, got a string; shell.exec never runs a shell, so \
                 split the command into its arguments, e.g. [\"cargo\", \"test\"]",
            ));
        }
        None | Some(Value::Null) => {
            return Err(InputError::new(
                "input.argv",
                "required; give the program and its arguments, e.g. [\"cargo\", \"test\"]",
            ));
        }
        Some(other) => {
            return Err(InputError::new(
                "input.argv",
                format!("expected an array of strings, got {}", kind(other)),
            ));
        }
    };
    let program = policy
        .resolve_program(&argv[0])
        .map_err(|e| InputError::new("input.argv.0", e))?;
    match obj.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => argv.extend(strings("args", items)?),
        Some(other) => {
            return Err(InputError::new(
                "input.args",
                format!("expected an array of strings, got {}", kind(other)),
            ));
        }
    }

    let cwd = match obj.get("cwd") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(InputError::new("input.cwd", "contains a NUL byte"));
        }
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(InputError::new(
                "input.cwd",
                format!("expected a string, got {}", kind(other)),
            ));
        }
    };
    let cwd = policy
        .resolve_cwd(cwd)
        .map_err(|e| InputError::new("input.cwd", e))?;

    let mut env = BTreeMap::new();
    match obj.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let field = format!("input.env.{name}");
                policy
                    .check_env(name)
                    .map_err(|e| InputError::new(&field, e))?;
                match value {
                    Value::String(v) if v.contains('\0') => {
                        return Err(InputError::new(&field, "contains a NUL byte"));
                    }
                    Value::String(v) => {
                        env.insert(name.clone(), v.clone());
                    }
                    other => {
                        return Err(InputError::new(
                            &field,
                            format!("expected a string, got {}", kind(other)),
                        ));
                    }
                }
            }
        }
        Some(other) => {
            return Err(InputError::new(
                "input.env",
                format!("expected an object of strings, got {}", kind(other)),
            ));
        }
    }

    let stdin = match obj.get("stdin") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(InputError::new(
                "input.stdin",
                format!("expected a string, got {}", kind(other)),
            ));
        }
    };

    let max_output = match opt_u64(obj, "max_output_bytes", MAX_OUTPUT_BYTES_LIMIT)? {
        Some(0) => {
            return Err(InputError::new(
                "input.max_output_bytes",
                "must be at least 1",
            ));
        }
        Some(n) => n,
        None => DEFAULT_OUTPUT_BYTES,
    };

    Ok(Exec {
        program,
        argv,
        cwd,
        env,
        stdin,
        // At most 10 MiB, so it fits.
        max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
    })
}

/// The running child and its process group. Dropping it (the attempt's future was dropped on
/// timeout or cancel) kills the whole group before the child handle goes (which kills the
/// child again, and has tokio reap it).
struct Running {
    child: Child,
    /// The group to kill, until it has been killed.
    pgid: Option<Pid>,
}

impl Running {
    fn new(child: Child) -> Self {
        // The child leads its own group (`process_group(0)`), so the group id is its pid.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Running { child, pgid }
    }

    /// Sends SIGKILL to every process in the group, once.
    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            match killpg(pgid, Signal::SIGKILL) {
                // ESRCH: every process of the group is gone already.
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => {
                    tracing::warn!(pgid = pgid.as_raw(), error = %e, "could not kill a shell.exec process group");
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// The last `cap` bytes of a stream.
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    total: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.buf.extend_from_slice(data);
        // Trim in batches, so pushes stay amortised O(len).
        if self.buf.len() > self.cap.max(8 << 10) * 2 {
            self.buf.drain(..self.buf.len() - self.cap);
        }
    }

    fn truncated(&self) -> bool {
        self.total > self.cap as u64
    }

    /// The kept bytes as text (a multi-byte character cut at the start is dropped).
    fn text(&self) -> String {
        let mut kept = &self.buf[self.buf.len().saturating_sub(self.cap)..];
        if self.truncated() {
            let cont = kept
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xc0) == 0x80)
                .count();
            kept = &kept[cont..];
        }
        String::from_utf8_lossy(kept).into_owned()
    }
}

/// Splits a stream into lines and logs each at `level`.
struct LineLog<'a> {
    ctx: &'a JobContext,
    level: LogLevel,
    stream: &'static str,
    pending: Vec<u8>,
    logged: usize,
    /// The "no more lines are logged" note was written.
    capped: bool,
}

impl<'a> LineLog<'a> {
    fn new(ctx: &'a JobContext, level: LogLevel, stream: &'static str) -> Self {
        LineLog {
            ctx,
            level,
            stream,
            pending: Vec::new(),
            logged: 0,
            capped: false,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            if self.pending.is_empty() {
                self.emit(&data[..nl]);
            } else {
                self.pending.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.pending);
                self.emit(&line);
            }
            data = &data[nl + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            let line = std::mem::replace(&mut self.pending, rest);
            self.emit(&line);
        }
    }

    fn finish(&mut self) {
        let line = std::mem::take(&mut self.pending);
        self.emit(&line);
    }

    fn emit(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self.logged < MAX_LOGGED_LINES {
            self.logged += 1;
            self.ctx
                .log
                .log(self.level, String::from_utf8_lossy(line).into_owned());
        } else if !self.capped {
            self.capped = true;
            self.ctx.warn(format!(
                "{}: more than {MAX_LOGGED_LINES} lines; the rest is not logged (the output keeps \
                 the stream's tail)",
                self.stream
            ));
        }
    }
}

/// Reads `pipe` to its end into `tail`, logging each line.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    tail: &mut Tail,
    ctx: &JobContext,
    level: LogLevel,
    stream: &'static str,
) {
    let Some(mut pipe) = pipe else { return };
    let mut lines = LineLog::new(ctx, level, stream);
    let mut buf = vec![0u8; 8 << 10];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                tail.push(&buf[..n]);
                lines.feed(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                ctx.warn(format!("{stream}: reading failed: {e}"));
                break;
            }
        }
    }
    lines.finish();
}

async fn run(policy: Arc<ShellPolicy>, ctx: JobContext, input: Value) -> AttemptOutcome {
    let exec = match parse(&policy, &ctx.config, &input) {
        Ok(exec) => exec,
        Err(e) => return AttemptOutcome::fatal(e.to_string()),
    };
    let line = command_line(&exec.argv);
    ctx.info(format!("$ {line}  (in {})", exec.cwd.display()));

    let mut cmd = Command::new(&exec.program);
    cmd.arg0(&exec.argv[0])
        .args(&exec.argv[1..])
        .current_dir(&exec.cwd)
        .env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(&exec.env)
        .stdin(if exec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);

    let started = Instant::now();
    let mut running = match cmd.spawn() {
        Ok(child) => Running::new(child),
        Err(e) => return spawn_failure(&short(&line), &e),
    };
    let stdin = running.child.stdin.take();
    let stdout = running.child.stdout.take();
    let stderr = running.child.stderr.take();
    let mut out = Tail::new(exec.max_output);
    let mut err = Tail::new(exec.max_output);

    let status = {
        let feed = async {
            if let (Some(mut pipe), Some(data)) = (stdin, exec.stdin.as_deref()) {
                // A program that exits without reading its input is not an error.
                let _ = pipe.write_all(data.as_bytes()).await;
            }
        };
        let pumps = async {
            tokio::join!(
                feed,
                pump(stdout, &mut out, &ctx, LogLevel::Info, "stdout"),
                pump(stderr, &mut err, &ctx, LogLevel::Warn, "stderr"),
            )
        };
        tokio::pin!(pumps);
        let mut drained = false;
        let status = loop {
            tokio::select! {
                status = running.child.wait() => break status,
                _ = &mut pumps, if !drained => drained = true,
            }
        };
        // Background processes the program left behind go with it; that also closes the pipes
        // they inherited.
        running.kill_group();
        if !drained && tokio::time::timeout(DRAIN_GRACE, &mut pumps).await.is_err() {
            ctx.warn(
                "the program exited but its output stayed open (a process outside its group \
                 holds it); stopped reading",
            );
        }
        status
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            return AttemptOutcome::failed(format!(
                "`{}`: waiting for the program failed: {e}",
                short(&line)
            ));
        }
    };
    finish(&ctx, &short(&line), status, &out, &err, duration_ms)
}

/// The outcome for a program that ended with `status`.
///
/// Exit code 0 succeeds. A non-zero exit code fails the attempt as retryable, since builds and
/// tests can be flaky; the type's `max_attempts` defaults to 1 because commands have side
/// effects, so retries happen only when a job or type asks for them. A program killed by a
/// signal (OOM killer, an operator) fails retryable too.
fn finish(
    ctx: &JobContext,
    line: &str,
    status: ExitStatus,
    out: &Tail,
    err: &Tail,
    duration_ms: u64,
) -> AttemptOutcome {
    if let Some(0) = status.code() {
        ctx.info(format!("exited with code 0 after {duration_ms} ms"));
        return AttemptOutcome::Succeeded(json!({
            "exit_code": 0,
            "stdout": out.text(),
            "stderr": err.text(),
            "truncated": out.truncated() || err.truncated(),
            "duration_ms": duration_ms,
        }));
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!(
            "was killed by signal {signal}{}",
            Signal::try_from(signal)
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default()
        ),
        (None, None) => format!("ended with {status}"),
    };
    let mut error = format!("`{line}` {how} after {duration_ms} ms");
    let snippet_of = if err.total > 0 { err } else { out };
    let text = snippet_of.text();
    let mut start = text.len().saturating_sub(ERROR_SNIPPET);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let snippet = text[start..].trim();
    if !snippet.is_empty() {
        let name = if err.total > 0 { "stderr" } else { "stdout" };
        error.push_str(&format!("; {name}: {snippet}"));
    }
    ctx.warn(format!("{how} after {duration_ms} ms"));
    AttemptOutcome::failed(error)
}

/// The failure for a program that could not be started. A missing or non-executable program
/// or directory will not start on a retry either; anything else (too many processes, out of
/// memory) may.
fn spawn_failure(line: &str, err: &std::io::Error) -> AttemptOutcome {
    use std::io::ErrorKind;
    let error = format!("could not start `{line}`: {err}");
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
            AttemptOutcome::fatal(error)
        }
        _ => AttemptOutcome::failed(error),
    }
}

/// `argv` as a shell-quoted command line, for logs and messages (it is never run by a shell).
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@+%^".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `line` cut to [`COMMAND_DISPLAY`] characters.
fn short(line: &str) -> String {
    match line.char_indices().nth(COMMAND_DISPLAY) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

impl Handler for ShellExec {
    fn name(&self) -> &'static str {
        "shell.exec"
    }

    fn description(&self) -> &'static str {
        "Runs an allowlisted program (RAUSKU_SHELL_ALLOW) from an argv (plus `args`), never \
         through a shell, streaming stdout/stderr into the job log; returns {exit_code, stdout, stderr, \
         truncated, duration_ms}. Disabled until programs are allowlisted."
    }

    fn defaults(&self) -> JobDefaults {
        // Builds and test runs take minutes; commands have side effects, so retries are opt-in.
        JobDefaults {
            max_attempts: 1,
            timeout_ms: 600_000,
            concurrency: None,
        }
    }

    fn enabled_by_default(&self) -> bool {
        !self.policy.allow.is_empty()
    }

    fn validate(&self, config: &Value, input: &Value) -> Result<(), InputError> {
        parse(&self.policy, config, input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let policy = Arc::clone(&self.policy);
        Box::pin(run(policy, ctx, input))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::builtin::test_support::{Lines, ctx};

    fn policy(allow: &[&str]) -> ShellPolicy {
        ShellPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            workdirs: Vec::new(),
            env_allow: vec!["RUST_LOG".into()],
        }
    }

    fn handler(allow: &[&str]) -> ShellExec {
        ShellExec::new(policy(allow))
    }

    #[test]
    fn validation_names_the_field() {
        let h = handler(&["echo"]);
        let cases = [
            (json!({}), "input.argv"),
            (json!({"argv": []}), "input.argv"),
            (json!({"argv": "echo hi"}), "input.argv"),
            (json!({"argv": {"0": "echo"}}), "input.argv"),
            (json!({"argv": [1]}), "input.argv.0"),
            (json!({"argv": ["echo", 2]}), "input.argv.1"),
            (json!({"argv": ["echo", "a\u{0}b"]}), "input.argv.1"),
            (json!({"argv": ["rm", "-rf", "/"]}), "input.argv.0"),
            (json!({"argv": ["/bin/echo"]}), "input.argv.0"),
            (json!({"argv": ["./echo"]}), "input.argv.0"),
            (json!({"argv": [""]}), "input.argv.0"),
            (json!({"argv": ["echo"], "cwd": 5}), "input.cwd"),
            (json!({"argv": ["echo"], "cwd": ""}), "input.cwd"),
            (json!({"argv": ["echo"], "cwd": "/"}), "input.cwd"),
            (json!({"argv": ["echo"], "env": []}), "input.env"),
            (
                json!({"argv": ["echo"], "env": {"FOO": "1"}}),
                "input.env.FOO",
            ),
            (
                json!({"argv": ["echo"], "env": {"RUST_LOG": 1}}),
                "input.env.RUST_LOG",
            ),
            (json!({"argv": ["echo"], "stdin": []}), "input.stdin"),
            (
                json!({"argv": ["echo"], "max_output_bytes": 0}),
                "input.max_output_bytes",
            ),
            (
                json!({"argv": ["echo"], "max_output_bytes": MAX_OUTPUT_BYTES_LIMIT + 1}),
                "input.max_output_bytes",
            ),
            (json!({"argv": ["echo"], "shell": true}), "input.shell"),
            (json!(["echo"]), "input"),
        ];
        for (input, field) in cases {
            let err = h.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
        let ok = json!({
            "argv": ["echo", "hi there", "it's"],
            "cwd": ".",
            "env": {"RUST_LOG": "debug"},
            "stdin": "x",
            "max_output_bytes": 10,
        });
        assert_eq!(h.validate(&Value::Null, &ok), Ok(()));
    }

    #[test]
    fn a_string_argv_is_told_there_is_no_shell() {
        let err = handler(&["cargo"])
            .validate(&Value::Null, &json!({"argv": "cargo test"}))
            .unwrap_err();
        assert!(err.message.contains("never runs a shell"), "{err}");
    }

    #[test]
    fn empty_allowlist_refuses_with_the_hint() {
        let h = handler(&["", "  "]);
        assert!(!h.enabled_by_default());
        assert!(handler(&["echo"]).enabled_by_default());
        let err = h
            .validate(&Value::Null, &json!({"argv": ["echo", "hi"]}))
            .unwrap_err();
        assert_eq!(err.field, "input.argv.0");
        assert!(err.message.contains("RAUSKU_SHELL_ALLOW"), "{err}");
        assert!(err.message.contains("disabled"), "{err}");
    }

    #[test]
    fn programs_resolve_through_the_allowlist() {
        let sh = find_in_path("sh").expect("sh is in PATH");
        assert!(sh.is_absolute());

        let p = policy(&["sh"]).normalized();
        assert_eq!(p.resolve_program("sh"), Ok(sh.clone()));
        let err = p.resolve_program("bash").unwrap_err();
        assert!(
            err.contains("`bash` is not on the allowlist (RAUSKU_SHELL_ALLOW: sh)"),
            "{err}"
        );
        // A path runs only if that very path is allowlisted.
        let sh_path = sh.to_str().unwrap();
        assert!(p.resolve_program(sh_path).is_err());
        let p = policy(&[sh_path]).normalized();
        assert_eq!(p.resolve_program(sh_path), Ok(sh.clone()));
        // ...and pins what the bare name runs.
        assert_eq!(p.resolve_program("sh"), Ok(sh.clone()));
        assert!(p.resolve_program("../sh").is_err());

        let p = policy(&["no-such-program-rausku"]).normalized();
        let err = p.resolve_program("no-such-program-rausku").unwrap_err();
        assert!(err.contains("not found in the gateway's PATH"), "{err}");
        let p = policy(&["/no/such/prog"]).normalized();
        assert!(
            p.resolve_program("prog")
                .unwrap_err()
                .contains("not an executable")
        );
    }

    #[test]
    fn cwd_must_be_inside_a_workdir() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("sub");
        std::fs::create_dir(&inside).unwrap();
        let other = tempfile::tempdir().unwrap();
        let p = ShellPolicy {
            workdirs: vec![root.path().to_owned()],
            ..policy(&["echo"])
        };
        let real_root = std::fs::canonicalize(root.path()).unwrap();
        assert_eq!(p.resolve_cwd(None), Ok(real_root.clone()));
        assert_eq!(p.resolve_cwd(Some("sub")), Ok(real_root.join("sub")));
        assert_eq!(
            p.resolve_cwd(Some(inside.to_str().unwrap())),
            Ok(real_root.join("sub"))
        );
        let err = p.resolve_cwd(Some("..")).unwrap_err();
        assert!(
            err.contains("is outside the allowed working directories"),
            "{err}"
        );
        let err = p
            .resolve_cwd(Some(other.path().to_str().unwrap()))
            .unwrap_err();
        assert!(err.contains("RAUSKU_SHELL_WORKDIRS"), "{err}");
        assert!(p.resolve_cwd(Some("missing")).is_err());
        // A symlink out of the workdir is judged by where it points.
        std::os::unix::fs::symlink(other.path(), root.path().join("link")).unwrap();
        assert!(p.resolve_cwd(Some("link")).is_err());

        // No workdirs: the gateway's working directory and below.
        let p = policy(&["echo"]);
        let here = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(p.resolve_cwd(None), Ok(here.clone()));
        assert_eq!(p.resolve_cwd(Some("src")), Ok(here.join("src")));
        assert!(p.resolve_cwd(Some("/")).is_err());
    }

    #[test]
    fn env_names_are_allowlisted() {
        let p = policy(&["echo"]);
        assert_eq!(p.check_env("RUST_LOG"), Ok(()));
        let err = p.check_env("LD_PRELOAD").unwrap_err();
        assert!(
            err.contains("RUST_LOG") && err.contains("RAUSKU_SHELL_ENV"),
            "{err}"
        );
        assert!(p.check_env("A=B").is_err());
        assert!(p.check_env("").is_err());
        let none = ShellPolicy::default().check_env("X").unwrap_err();
        assert!(none.contains(": none"), "{none}");
    }

    #[test]
    fn config_fixes_fields() {
        let h = handler(&["echo", "true"]);
        let config = json!({"argv": ["echo", "fixed"], "env": {"RUST_LOG": "info"}});
        let exec = parse(&h.policy, &config, &json!({"stdin": "x"})).unwrap();
        assert_eq!(exec.argv, ["echo", "fixed"]);
        assert_eq!(exec.env["RUST_LOG"], "info");
        let err = h.validate(&config, &json!({"argv": ["true"]})).unwrap_err();
        assert_eq!(err.field, "input.argv");
        let err = h
            .validate(&config, &json!({"env": {"RUST_LOG": "debug"}}))
            .unwrap_err();
        assert_eq!(err.field, "input.env.RUST_LOG");
        let err = h.validate(&json!([1]), &json!({})).unwrap_err();
        assert_eq!(err.field, "config");
        // Config goes through the same policy.
        let err = h
            .validate(&json!({"argv": ["rm"]}), &json!({}))
            .unwrap_err();
        assert_eq!(err.field, "input.argv.0");
    }

    #[test]
    fn args_extend_argv_only_where_the_type_accepts_them() {
        let h = handler(&["echo", "sh"]);
        // Without a fixed argv, `args` simply follow it.
        let exec = parse(
            &h.policy,
            &Value::Null,
            &json!({"argv": ["echo", "a"], "args": ["b", "c d"]}),
        )
        .unwrap();
        assert_eq!(exec.argv, ["echo", "a", "b", "c d"]);

        // A fixed argv takes no args unless the config accepts them.
        let fixed = json!({"argv": ["sh", "deploy.sh"]});
        let err = h.validate(&fixed, &json!({"args": ["x"]})).unwrap_err();
        assert_eq!(err.field, "input.args");
        assert!(err.message.contains("accept_args"), "{err}");
        assert_eq!(h.validate(&fixed, &json!({"args": null})), Ok(()));
        let off = json!({"argv": ["sh", "deploy.sh"], "accept_args": false});
        assert_eq!(
            h.validate(&off, &json!({"args": ["x"]})).unwrap_err().field,
            "input.args"
        );

        let open = json!({"argv": ["sh", "deploy.sh"], "accept_args": true});
        let exec = parse(
            &h.policy,
            &open,
            &json!({"args": ["staging", "dist/app.tar.gz"]}),
        )
        .unwrap();
        assert_eq!(exec.argv, ["sh", "deploy.sh", "staging", "dist/app.tar.gz"]);
        let exec = parse(&h.policy, &open, &json!({})).unwrap();
        assert_eq!(exec.argv, ["sh", "deploy.sh"]);
        // Args are still strings without NUL bytes, and argv itself stays fixed.
        let cases = [
            (json!({"args": "staging"}), "input.args"),
            (json!({"args": [1]}), "input.args.0"),
            (json!({"args": ["ok", "a\u{0}b"]}), "input.args.1"),
            (json!({"argv": ["echo"]}), "input.argv"),
            // Only the config may open the door.
            (json!({"accept_args": true}), "input.accept_args"),
        ];
        for (input, field) in cases {
            let err = h.validate(&open, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
        let err = h
            .validate(&fixed, &json!({"accept_args": true, "args": ["x"]}))
            .unwrap_err();
        assert_eq!(err.field, "input.accept_args");
        let err = h
            .validate(&json!({"argv": ["echo"], "accept_args": "yes"}), &json!({}))
            .unwrap_err();
        assert_eq!(err.field, "config.accept_args");
    }

    #[test]
    fn defaults_are_long_and_single_attempt() {
        let d = handler(&["echo"]).defaults();
        assert_eq!((d.max_attempts, d.timeout_ms), (1, 600_000));
    }

    #[test]
    fn command_lines_are_quoted() {
        let argv: Vec<String> = ["git", "commit", "-m", "it's done", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(command_line(&argv), r"git commit -m 'it'\''s done' ''");
        let long = "x".repeat(COMMAND_DISPLAY + 10);
        assert_eq!(short(&long).chars().count(), COMMAND_DISPLAY + 1);
        assert_eq!(short("ls"), "ls");
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(10);
        t.push(b"hello");
        assert!(!t.truncated());
        assert_eq!(t.text(), "hello");
        for i in 0..10_000 {
            t.push(format!("line{i}\n").as_bytes());
        }
        assert!(t.truncated());
        assert_eq!(t.text(), "\nline9999\n");
        assert!(t.buf.len() <= 2 * (8 << 10) + 10);

        // A character cut in half at the start is dropped, not mangled.
        let mut t = Tail::new(4);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes
        assert_eq!(t.text(), "€");
    }

    #[test]
    fn lines_are_split_and_capped() {
        let log = Arc::new(Lines::default());
        let mut c = ctx(1);
        c.log = log.clone();
        let mut lines = LineLog::new(&c, LogLevel::Warn, "stderr");
        lines.feed(b"one\ntw");
        lines.feed(b"o\r\n\n   \nthree");
        lines.finish();
        let got: Vec<_> = log.0.lock().unwrap().drain(..).collect();
        assert_eq!(
            got,
            [
                (LogLevel::Warn, "one".to_owned()),
                (LogLevel::Warn, "two".to_owned()),
                (LogLevel::Warn, "three".to_owned()),
            ]
        );

        // A very long line is logged in pieces.
        let mut lines = LineLog::new(&c, LogLevel::Info, "stdout");
        lines.feed(&vec![b'x'; MAX_LINE_BYTES * 2 + 5]);
        lines.finish();
        let sizes: Vec<_> = log
            .0
            .lock()
            .unwrap()
            .drain(..)
            .map(|(_, l)| l.len())
            .collect();
        assert_eq!(sizes, [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]);

        // Past the cap, one note and nothing more.
        let mut lines = LineLog::new(&c, LogLevel::Info, "stdout");
        for _ in 0..MAX_LOGGED_LINES + 50 {
            lines.feed(b"x\n");
        }
        let got = log.0.lock().unwrap();
        assert_eq!(got.len(), MAX_LOGGED_LINES + 1);
        assert!(
            got.last().unwrap().1.contains("not logged"),
            "{:?}",
            got.last()
        );
    }
}
