//! The test harness: a runtime over a temporary store, test-only handlers, and waiting by
//! polling a condition against a deadline (never a guessed sleep).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agentloop::planner::BoxFuture as PlanFuture;
use agentloop::{
    Backoff, CallbackConfig, CreateJob, Decision, PlanError, PlanRequest, Planner, Runtime,
    RuntimeConfig, SessionConfig, SessionSetup, SupervisorSnapshot,
};
use serde_json::{Value, json};
use skills::builtin::{BuiltinConfig, builtin_handlers, memory_handlers};
use skills::net::NetPolicy;
use skills::{AttemptOutcome, BoxFuture, DynHandler, Handler, InputError, JobContext, Registry};
use store::{
    CreateOutcome, Job, JobDefaults, JobId, JobState, Store, StoreConfig, StreamFilter, job_stream,
};
use tempfile::TempDir;
use tokio::sync::Semaphore;

/// How long any wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every few milliseconds until it returns `Some`, or fails the test after
/// [`DEADLINE`] naming `what`.
pub async fn eventually<T, F, Fut>(what: impl Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a [`Probe`] handler saw. Shared between the handler and the test.
pub struct ProbeState {
    /// Attempts that started.
    pub started: AtomicUsize,
    /// Attempts that returned an outcome.
    pub finished: AtomicUsize,
    /// Attempts whose future was dropped before it finished (timeout, cancel, shutdown).
    pub dropped: AtomicUsize,
    /// Attempts running right now, and the most ever seen at once.
    pub current: AtomicUsize,
    pub max_current: AtomicUsize,
    /// Each permit lets one waiting attempt succeed. Nobody adds any for a "block" probe.
    pub gate: Semaphore,
}

impl ProbeState {
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
    pub fn max_current(&self) -> usize {
        self.max_current.load(Ordering::SeqCst)
    }
    /// Lets `n` waiting (or future) attempts succeed.
    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// A handler that waits for a permit of its gate, then succeeds with `{attempt}`; it records
/// starts, finishes, drops and concurrency.
pub struct Probe {
    name: &'static str,
    pub state: Arc<ProbeState>,
}

impl Probe {
    pub fn new(name: &'static str) -> Self {
        let state = ProbeState {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
            max_current: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        };
        Probe {
            name,
            state: Arc::new(state),
        }
    }
}

/// Counts the attempt as running while it lives; dropped unfinished, it counts a drop.
struct Attempt {
    state: Arc<ProbeState>,
    finished: AtomicBool,
}

impl Attempt {
    fn enter(state: Arc<ProbeState>) -> Self {
        state.started.fetch_add(1, Ordering::SeqCst);
        let now = state.current.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_current.fetch_max(now, Ordering::SeqCst);
        Attempt {
            state,
            finished: AtomicBool::new(false),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.state.current.fetch_sub(1, Ordering::SeqCst);
        if self.finished.load(Ordering::SeqCst) {
            self.state.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        "test probe: waits for a permit, then succeeds"
    }
    fn defaults(&self) -> JobDefaults {
        JobDefaults {
            max_attempts: 1,
            timeout_ms: 60_000,
            concurrency: None,
        }
    }
    fn validate(&self, _config: &Value, _input: &Value) -> Result<(), InputError> {
        Ok(())
    }
    fn run(&self, ctx: JobContext, _input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let state = self.state.clone();
        Box::pin(async move {
            let attempt = Attempt::enter(state.clone());
            state
                .gate
                .acquire()
                .await
                .expect("gate is never closed")
                .forget();
            attempt.finished.store(true, Ordering::SeqCst);
            AttemptOutcome::Succeeded(json!({ "attempt": ctx.attempt }))
        })
    }
}

/// Panics inside its future, on the first poll.
pub struct PanicsInFuture;

impl Handler for PanicsInFuture {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn description(&self) -> &'static str {
        "test: panics while running"
    }
    fn validate(&self, _config: &Value, _input: &Value) -> Result<(), InputError> {
        Ok(())
    }
    fn run(&self, _ctx: JobContext, _input: Value) -> BoxFuture<'static, AttemptOutcome> {
        Box::pin(async { panic!("boom") })
    }
}

/// Panics in `run` itself, before it returns a future.
pub struct PanicsOnCall;

impl Handler for PanicsOnCall {
    fn name(&self) -> &'static str {
        "panics.eagerly"
    }
    fn description(&self) -> &'static str {
        "test: panics before returning its future"
    }
    fn validate(&self, _config: &Value, _input: &Value) -> Result<(), InputError> {
        Ok(())
    }
    fn run(&self, _ctx: JobContext, _input: Value) -> BoxFuture<'static, AttemptOutcome> {
        panic!("boom before the future")
    }
}

/// Small, jitter-free backoff so retries take milliseconds.
pub fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        jitter: 0.0,
    }
}

pub fn runtime_config(max_concurrency: u32) -> RuntimeConfig {
    RuntimeConfig {
        max_concurrency,
        backoff: fast_backoff(),
        ..RuntimeConfig::default()
    }
}

/// Callbacks disabled (empty allowlist).
pub fn no_callbacks() -> CallbackConfig {
    CallbackConfig::new(NetPolicy::default(), b"test-secret".to_vec())
}

pub fn open_store() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    (dir, store)
}

/// The built-in handlers (memory included) plus the test handlers, over `store`.
pub fn registry(store: &Store, block: &Probe, gate: &Probe) -> Registry {
    let mut handlers: Vec<DynHandler> = builtin_handlers(&BuiltinConfig::default());
    handlers.extend(memory_handlers(store));
    handlers.push(Arc::new(Probe {
        name: block.name,
        state: block.state.clone(),
    }));
    handlers.push(Arc::new(Probe {
        name: gate.name,
        state: gate.state.clone(),
    }));
    handlers.push(Arc::new(PanicsInFuture));
    handlers.push(Arc::new(PanicsOnCall));
    Registry::open(store.clone(), handlers).unwrap()
}

/// A running runtime over a temporary store.
pub struct Harness {
    pub store: Store,
    pub runtime: Runtime,
    /// Jobs of type `block` wait until they are dropped (nobody opens the gate).
    pub block: Arc<ProbeState>,
    /// Jobs of type `gate` wait until the test opens the gate.
    pub gate: Arc<ProbeState>,
    /// Last, so the directory outlives the store.
    dir: TempDir,
}

pub struct Options {
    pub config: RuntimeConfig,
    pub callbacks: CallbackConfig,
    pub sessions: SessionConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: runtime_config(8),
            callbacks: no_callbacks(),
            sessions: SessionConfig::default(),
        }
    }
}

/// A planner for testing the session actor: the message text is a JSON script
/// `{"steps": [{"skill", "input"}], "on_failure": {"skill", "input"}?, "reply"?}`. It invokes
/// the steps in order; after a step that did not succeed it invokes `on_failure` once (if
/// given) and then finishes as failed; after the last step it finishes with `reply`.
/// Structured events of a kind starting with `ignored.` are not wanted (no run).
pub struct ScriptPlanner;

impl Planner for ScriptPlanner {
    fn name(&self) -> &str {
        "script"
    }

    fn wants_event(&self, trigger: &agentloop::Trigger) -> bool {
        !trigger
            .event
            .as_deref()
            .is_some_and(|kind| kind.starts_with("ignored."))
    }

    fn plan(&self, req: PlanRequest) -> PlanFuture<'static, Result<Decision, PlanError>> {
        Box::pin(async move {
            let script: Value = serde_json::from_str(&req.trigger.text)
                .map_err(|e| PlanError(format!("not a script: {e}")))?;
            let steps = script["steps"].as_array().cloned().unwrap_or_default();
            let invoke = |id: String, step: &Value| Decision::Invoke {
                step_id: id,
                skill: step["skill"].as_str().unwrap_or_default().to_owned(),
                input: step["input"].clone(),
            };
            if let Some(failed) = req.history.iter().find(|o| !o.status.is_success()) {
                let recovered = req.history.iter().any(|o| o.step_id == "on_failure");
                if !recovered && !script["on_failure"].is_null() {
                    return Ok(invoke("on_failure".into(), &script["on_failure"]));
                }
                return Ok(Decision::Finish {
                    reply: Some(format!("step {} {:?}", failed.step_id, failed.status)),
                    error: Some(
                        failed
                            .error
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", failed.status).to_lowercase()),
                    ),
                });
            }
            let next = req.history.len();
            match steps.get(next) {
                Some(step) => Ok(invoke(format!("s{next}"), step)),
                None => Ok(Decision::Finish {
                    reply: script["reply"].as_str().map(str::to_owned),
                    error: None,
                }),
            }
        })
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Harness {
        let (dir, store) = open_store();
        Self::start_on(dir, store, options).await
    }

    /// Starts a runtime over a store the test has prepared.
    pub async fn start_on(dir: TempDir, store: Store, options: Options) -> Harness {
        let block = Probe::new("block");
        let gate = Probe::new("gate");
        let registry = registry(&store, &block, &gate);
        let runtime = Runtime::start(
            store.clone(),
            registry,
            options.config,
            options.callbacks,
            SessionSetup {
                planner: Arc::new(ScriptPlanner),
                config: options.sessions,
                replies: None,
            },
        )
        .await
        .expect("runtime starts");
        Harness {
            store,
            runtime,
            block: block.state,
            gate: gate.state,
            dir,
        }
    }

    /// Shuts the runtime down and starts a new one over the same store, as a restart would.
    pub async fn restart(self, options: Options) -> Harness {
        self.runtime.shutdown(Duration::from_millis(100)).await;
        let Harness { store, dir, .. } = self;
        Harness::start_on(dir, store, options).await
    }

    pub fn create(&self, req: CreateJob) -> Job {
        match self.runtime.jobs.create(req, None).expect("job is valid") {
            CreateOutcome::Created(job) => job,
            other => panic!("expected Created, got {other:?}"),
        }
    }

    pub fn create_simple(&self, job_type: &str, input: Value) -> Job {
        self.create(CreateJob {
            job_type: job_type.into(),
            input,
            ..Default::default()
        })
    }

    pub fn job(&self, id: JobId) -> Job {
        self.store.job(id).unwrap().expect("job exists")
    }

    /// Waits until the job is in `state`, and everything written so far is durable (so its
    /// events can be read).
    pub async fn wait_state(&self, id: JobId, state: JobState) -> Job {
        let job = eventually(format!("job {id} to be {state}"), || async {
            let job = self.job(id);
            (job.state == state).then_some(job)
        })
        .await;
        self.store.durable().await.unwrap();
        job
    }

    pub async fn snapshot(&self) -> SupervisorSnapshot {
        self.runtime
            .jobs
            .snapshot()
            .await
            .expect("supervisor answers")
    }

    /// Waits until the supervisor's snapshot satisfies `check`.
    pub async fn wait_snapshot(
        &self,
        what: &str,
        check: impl Fn(&SupervisorSnapshot) -> bool,
    ) -> SupervisorSnapshot {
        eventually(what, || async {
            let snap = self.snapshot().await;
            check(&snap).then_some(snap)
        })
        .await
    }

    /// The durable events of a job, `job.log` lines left out.
    pub fn kinds(&self, id: JobId) -> Vec<String> {
        kinds(&self.store, id)
    }

    /// Waits until a durable event of `kind` is on the job's stream, and returns the events.
    pub async fn wait_event(&self, id: JobId, kind: &str) -> Vec<store::Event> {
        eventually(format!("event {kind} on job {id}"), || async {
            let events = events(&self.store, id);
            events.iter().any(|e| e.kind == kind).then_some(events)
        })
        .await
    }

    /// Log lines of the job, as text.
    pub fn logs(&self, id: JobId) -> Vec<String> {
        self.store
            .job_logs(id, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect()
    }
}

pub fn events(store: &Store, id: JobId) -> Vec<store::Event> {
    store
        .events_after(&StreamFilter::Stream(job_stream(id)), 0, 10_000)
        .unwrap()
}

pub fn kinds(store: &Store, id: JobId) -> Vec<String> {
    events(store, id)
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k != "job.log")
        .collect()
}

/// Waits until `probe` satisfies `check`.
pub async fn wait_probe(what: &str, probe: &ProbeState, check: impl Fn(&ProbeState) -> bool) {
    eventually(what, || async { check(probe).then_some(()) }).await
}
