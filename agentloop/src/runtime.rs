//! Starting and stopping the job runtime's actors.

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

/// The running job runtime.
pub struct Runtime {
    pub jobs: JobService,
    supervisor: ActorRef<JobSupervisorMessage>,
    callbacks: ActorRef<CallbackMessage>,
}

impl Runtime {
    /// Starts the callback dispatcher and the job supervisor (which recovers interrupted jobs).
    pub async fn start(
        store: Store,
        registry: Registry,
        config: RuntimeConfig,
        callbacks: CallbackConfig,
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
            store,
            registry,
            supervisor.clone(),
            callbacks_enabled.then_some(net),
        );
        Ok(Runtime {
            jobs,
            supervisor,
            callbacks,
        })
    }

    pub async fn callback_snapshot(&self) -> Option<CallbackSnapshot> {
        ractor::call!(self.callbacks, |reply| CallbackMessage::Snapshot { reply }).ok()
    }

    /// Stops leasing, lets running attempts finish for up to `grace` (then stops and re-queues
    /// them), and stops the actors.
    pub async fn shutdown(&self, grace: Duration) {
        info!(
            grace_ms = grace.as_millis() as u64,
            "draining the job runtime"
        );
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
