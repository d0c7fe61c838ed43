//! What every request handler can reach.

use std::sync::Arc;
use std::time::Instant;

use agentloop::{DefaultPlanner, JobService, Runtime};
use channels::{ApiKeys, ConsoleServices, GithubIngress};
use metrics_exporter_prometheus::PrometheusHandle;
use skills::Registry;
use store::Store;
use tokio::sync::watch;

use crate::config::Config;
use crate::rate_limit::RateLimits;

/// Shared state of the HTTP app. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub registry: Registry,
    pub jobs: JobService,
    pub runtime: Arc<Runtime>,
    /// The sessions' planner, kept to reload and list its playbooks.
    pub planner: Arc<DefaultPlanner>,
    pub keys: ApiKeys,
    pub config: Arc<Config>,
    pub limits: RateLimits,
    /// The GitHub webhook ingress; `None` while no webhook secret is configured (the route
    /// answers 404).
    pub github: Option<GithubIngress>,
    /// What each console connection gets a clone of (they share its frame cache).
    pub console: ConsoleServices,
    /// Renders `/metrics`; `None` when no recorder is installed (tests).
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    /// Flips to `true` when shutdown begins: long-lived streams end.
    pub shutdown: watch::Receiver<bool>,
}
