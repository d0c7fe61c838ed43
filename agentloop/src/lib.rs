//! The actors of RauskuClaw. For now, the job runtime: the reliable core that every skill
//! invocation runs through. Sessions and the agent loop come next and will invoke skills as
//! jobs through [`JobService`].
//!
//! Layout:
//! - [`runtime`]: `Runtime`, which starts the actors and shuts them down gracefully.
//! - [`jobs`]: `JobService`, the API of the runtime (create, get, list, cancel, retry).
//! - [`job_supervisor`]: the `JobSupervisor` actor: the queue, leases, concurrency, retries,
//!   crash recovery.
//! - [`job_runner`]: the `JobRunner` actor: one attempt under a timeout, panics caught.
//! - [`callbacks`]: the `CallbackDispatcher` actor: signed, allowlisted, retried callbacks.
//! - [`job_log`]: job log lines as events. [`backoff`]: retry spacing.
//! - [`planner`]: the `Planner` contract and the embedded `DefaultPlanner` (chat commands and
//!   TOML playbooks).

pub mod backoff;
pub mod callbacks;
pub mod job_log;
pub mod job_runner;
pub mod job_supervisor;
pub mod jobs;
pub mod planner;
pub mod runtime;
pub mod session;
pub mod session_router;
pub mod sessions;

pub use backoff::Backoff;
pub use callbacks::{CallbackConfig, CallbackSnapshot};
pub use job_supervisor::{RuntimeConfig, SupervisorSnapshot, SupervisorStats};
pub use jobs::{CreateJob, JobError, JobService};
pub use planner::{
    Decision, DefaultPlanner, Observation, PlanError, PlanRequest, Planner, PlaybookFileError,
    PlaybookInfo, PlaybookPlanner, PlaybookReloadReport, PlaybookSet, StepStatus, Trigger,
};
pub use runtime::{Runtime, SessionSetup};
pub use session::{ReplyRoute, SessionConfig, SessionDeps, SessionSnapshot};
pub use session_router::{
    Inbound, RouteError, Routed, RouterSnapshot, SessionRouter, SessionRouterMessage,
};
pub use sessions::SessionService;
