//! Starting and stopping the job runtime's actors.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, SpawnErr};
use skills::Registry;
use store::Store;
use tracing::info;

use crate::callbacks::{CallbackConfig, CallbackDispatcher, CallbackMessage, CallbackSnapshot};
use crate::job_supervisor::{
    JobSupervisor, JobSupervisorArgs, JobSupervisorMessage, RuntimeConfig,
};
use crate::jobs::JobService;
use crate::planner::Planner;
use crate::session::{ReplyRoute, SessionConfig, SessionDeps};
use crate::session_router::{SessionRouter, SessionRouterMessage};
use crate::sessions::SessionService;

/// What the sessions are started with.
pub struct SessionSetup {
    pub planner: Arc<dyn Planner>,
    pub config: SessionConfig,
    /// Delivers replies of channels that need a job for it (GitHub comments).
    pub replies: Option<Arc<dyn ReplyRoute>>,
}

/// The running runtime: the job actors and the sessions.
pub struct Runtime {
    pub jobs: JobService,
    pub sessions: SessionService,
    supervisor: ActorRef<JobSupervisorMessage>,
    callbacks: ActorRef<CallbackMessage>,
    router: ActorRef<SessionRouterMessage>,
}

impl Runtime {
    /// Starts the callback dispatcher, the job supervisor (which recovers interrupted jobs) and
    /// the session router (which resumes sessions with pending work).
    pub async fn start(
        store: Store,
        registry: Registry,
        config: RuntimeConfig,
        callbacks: CallbackConfig,
        sessions: SessionSetup,
    ) -> Result<Runtime, SpawnErr> {
        let callbacks_enabled = !callbacks.net.allowlist.is_empty();
        let net = callbacks.net.clone();
        let (callbacks, _) =
            Actor::spawn(None, CallbackDispatcher, (store.clone(), callbacks)).await?;
        let args = JobSupervisorArgs {
            store: store.clone(),
            registry: registry.clone(),
            config,
            callbacks: Some(callbacks.clone()),
        };
        let (supervisor, _) = Actor::spawn(None, JobSupervisor, args).await?;
        let jobs = JobService::new(
            store.clone(),
            registry.clone(),
            supervisor.clone(),
            callbacks_enabled.then_some(net),
        );
        let deps = Arc::new(SessionDeps {
            store: store.clone(),
            jobs: jobs.clone(),
            registry,
            planner: sessions.planner,
            config: sessions.config,
            replies: sessions.replies,
        });
        let (router, _) = Actor::spawn(None, SessionRouter, deps).await?;
        Ok(Runtime {
            jobs,
            sessions: SessionService::new(store, router.clone()),
            supervisor,
            callbacks,
            router,
        })
    }

    pub async fn callback_snapshot(&self) -> Option<CallbackSnapshot> {
        ractor::call!(self.callbacks, |reply| CallbackMessage::Snapshot { reply }).ok()
    }

    /// Stops the sessions (they resume from their events at the next start), stops leasing,
    /// lets running attempts finish for up to `grace` (then stops and re-queues
    /// them), and stops the actors.
    pub async fn shutdown(&self, grace: Duration) {
        info!(
            grace_ms = grace.as_millis() as u64,
            "draining the job runtime"
        );
        let _ = self
            .router
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        let _ = self
            .supervisor
            .call(
                |reply| JobSupervisorMessage::Drain { grace, reply },
                Some(grace + Duration::from_secs(5)),
            )
            .await;
        self.supervisor.stop(None);
        self.callbacks.stop(None);
    }
}
