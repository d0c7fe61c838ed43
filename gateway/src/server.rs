//! `rauskuclaw serve`: open the store, start the runtime, serve HTTP, shut down gracefully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentloop::{
    Backoff, CallbackConfig, DefaultPlanner, PlaybookPlanner, PlaybookSet, ReplyRoute, Runtime,
    RuntimeConfig, SessionSetup,
};
use anyhow::Context;
use channels::github::channel::GithubChannelMessage;
use channels::github::{
    CommandRules, GithubChannel, GithubChannelArgs, GithubIngress, GithubReplies, IngressConfig,
};
use channels::{ApiKeys, ConsoleConfig, ConsoleServices, FrameCache};
use skills::Registry;
use skills::builtin::{BuiltinConfig, GithubApi, ShellPolicy, builtin_handlers, memory_handlers};
use skills::net::NetPolicy;
use store::{Scope, Store, StoreConfig, Timestamp};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::app;
use crate::config::Config;
use crate::rate_limit::RateLimits;
use crate::state::AppState;

/// Everything `serve` starts, before it binds a socket (tests use this directly).
pub struct Gateway {
    pub state: AppState,
    pub runtime: Arc<Runtime>,
    github_channel: ractor::ActorRef<GithubChannelMessage>,
    shutdown: watch::Sender<bool>,
}

impl Gateway {
    /// Opens the store and starts the runtime. `http` prepares serving HTTP: it installs the
    /// global Prometheus recorder (once per process) and creates the first admin key if there
    /// is none (`rauskuclaw local` needs neither).
    pub async fn start(config: Config, http: bool) -> anyhow::Result<Gateway> {
        let store = Store::open(StoreConfig::new(&config.data_dir))
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let mut handlers = builtin_handlers(&BuiltinConfig {
            http: NetPolicy {
                allowlist: config.http_allowlist.clone(),
                allow_private: config.callback_allow_private,
            },
            shell: ShellPolicy {
                allow: config.shell_allow.clone(),
                workdirs: config.shell_workdirs.clone(),
                env_allow: config.shell_env.clone(),
            },
            github: config.github_token.clone().map(|token| GithubApi {
                api_url: config.github_api_url.clone(),
                token,
            }),
            ..BuiltinConfig::default()
        });
        handlers.extend(memory_handlers(&store));
        let registry = Registry::open(store.clone(), handlers).context("cannot load job types")?;
        if let Some(dir) = &config.skills_dir {
            let report = registry
                .load_manifests(dir)
                .context("cannot store the skills of the manifests")?;
            for e in &report.errors {
                warn!("skill manifest not loaded: {e}");
            }
            info!(dir = %dir.display(), added = report.added.len(), changed = report.changed.len(),
                removed = report.removed.len(), errors = report.errors.len(), "loaded skill manifests");
        }
        let planner = Arc::new(match &config.playbooks_dir {
            Some(dir) => {
                let (planner, errors) = DefaultPlanner::load_dir(dir);
                for e in &errors {
                    warn!("playbook not loaded: {e}");
                }
                info!(dir = %dir.display(), playbooks = planner.playbooks().list().len(), errors = errors.len(), "loaded playbooks");
                planner
            }
            None => DefaultPlanner::new(PlaybookPlanner::new(PlaybookSet::default())),
        });
        let secret = callback_secret(&config)?;
        let callbacks = CallbackConfig::new(
            NetPolicy {
                allowlist: config.callback_allowlist.clone(),
                allow_private: config.callback_allow_private,
            },
            secret,
        );
        let runtime_config = RuntimeConfig {
            max_concurrency: config.max_concurrency,
            backoff: Backoff {
                base: config.retry_base,
                ..Backoff::default()
            },
            ..RuntimeConfig::default()
        };
        let runtime = Arc::new(
            Runtime::start(
                store.clone(),
                registry.clone(),
                runtime_config,
                callbacks,
                SessionSetup {
                    planner: planner.clone(),
                    config: config.sessions.clone(),
                    // Replies on issues and pull requests become comments once a token is set.
                    replies: config
                        .github_token
                        .as_ref()
                        .map(|_| Arc::new(GithubReplies) as Arc<dyn ReplyRoute>),
                },
            )
            .await
            .context("cannot start the runtime")?,
        );
        let keys = ApiKeys::load(store.clone(), config.api_key.as_deref())
            .context("cannot load API keys")?;
        if http && !keys.any_active() {
            bootstrap_admin_key(&keys, &config.data_dir)?;
        }
        let handle = if http {
            Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .install_recorder()
                    .context("cannot install the metrics recorder")?,
            )
        } else {
            None
        };
        let github = config.github_webhook_secret.as_ref().map(|secret| {
            GithubIngress::new(
                store.clone(),
                IngressConfig {
                    secret: secret.as_bytes().to_vec(),
                    commands: CommandRules {
                        prefixes: config.github_command_prefixes.clone(),
                        bot_login: config.github_bot_login.clone(),
                    },
                    dedupe_retention: config.github_delivery_retention,
                },
            )
        });
        // Routes stored GitHub deliveries to their sessions (also those stored before a crash).
        let (github_channel, _) = ractor::Actor::spawn(
            None,
            GithubChannel,
            GithubChannelArgs {
                store: store.clone(),
                sessions: runtime.sessions.clone(),
                dedupe_retention: config.github_delivery_retention,
            },
        )
        .await
        .context("cannot start the GitHub channel")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let limits = RateLimits::new(config.rate_limit_per_sec, config.rate_limit_burst)
            .with_webhook(
                config.webhook_rate_limit_per_sec,
                config.webhook_rate_limit_burst,
            );
        let console = ConsoleServices {
            sessions: runtime.sessions.clone(),
            store: store.clone(),
            keys: keys.clone(),
            rate_limit: Some({
                let limits = limits.clone();
                Arc::new(move |id: &str| limits.check_key(id))
            }),
            config: ConsoleConfig {
                queue: config.console_queue,
                idempotency_retention: config.idempotency_retention,
                ..ConsoleConfig::default()
            },
            frames: FrameCache::default(),
        };
        let state = AppState {
            store,
            registry,
            jobs: runtime.jobs.clone(),
            runtime: runtime.clone(),
            planner,
            keys,
            limits,
            github,
            console,
            config: Arc::new(config),
            metrics: handle,
            started: Instant::now(),
            shutdown: shutdown_rx,
        };
        Ok(Gateway {
            state,
            runtime,
            github_channel,
            shutdown,
        })
    }

    /// Serves until SIGTERM/SIGINT, then drains and flushes.
    pub async fn serve(self) -> anyhow::Result<()> {
        let addr = self.state.config.listen;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}; is another process using it? pick one with --listen")
        })?;
        let local = listener.local_addr()?;
        info!(addr = %local, data_dir = %self.state.config.data_dir.display(), "rauskuclaw listening");
        println!("rauskuclaw listening on http://{local}");
        let janitor = tokio::spawn(janitor(self.state.clone()));
        let shutdown = self.shutdown.clone();
        axum::serve(
            listener,
            app(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            info!("shutdown requested; no new connections");
            let _ = shutdown.send(true);
        })
        .await
        .context("the HTTP server failed")?;
        janitor.abort();
        self.stop().await
    }

    /// Drains the runtime and flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.github_channel.stop(None);
        self.runtime
            .shutdown(self.state.config.shutdown_grace)
            .await;
        self.state.store.close().context("final flush failed")?;
        info!("rauskuclaw stopped");
        Ok(())
    }
}

/// `rauskuclaw local`: the gateway without HTTP, with the local channel on stdin/stdout. Ends
/// when input has ended and the work is done, or on SIGINT/SIGTERM.
pub async fn run_local(
    config: Config,
    user: String,
    format: channels::local::Format,
) -> anyhow::Result<channels::LocalSummary> {
    let gateway = Gateway::start(config, false).await?;
    let (done, finished) = tokio::sync::oneshot::channel();
    let args = channels::LocalChannelArgs {
        sessions: gateway.runtime.sessions.clone(),
        store: gateway.state.store.clone(),
        user,
        format,
        output: Arc::new(std::sync::Mutex::new(std::io::stdout())),
        input: Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
        done,
    };
    let (channel, _) = ractor::Actor::spawn(None, channels::LocalChannel, args)
        .await
        .context("cannot start the local channel")?;
    let summary = tokio::select! {
        s = finished => s.unwrap_or_default(),
        _ = wait_for_signal() => {
            info!("interrupted; stopping");
            channels::LocalSummary::default()
        }
    };
    channel.stop(None);
    gateway.stop().await?;
    Ok(summary)
}

/// Periodic housekeeping: forget old idempotency keys, old webhook delivery ids and quiet
/// rate-limit entries.
async fn janitor(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.limits.retain_recent();
        let cutoff =
            Timestamp::now().as_millis() - state.config.idempotency_retention.as_millis() as i64;
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || {
            store.purge_idempotency(Timestamp::from_millis(cutoff))
        })
        .await
        {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => info!(purged = n, "forgot expired idempotency keys"),
            Ok(Err(e)) => warn!(error = %e, "purging idempotency keys failed"),
        }
        // Also without a webhook secret (now): ids stored while there was one still expire.
        let cutoff = Timestamp::now().as_millis()
            - state.config.github_delivery_retention.as_millis() as i64;
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || {
            channels::github::purge_deliveries(&store, Timestamp::from_millis(cutoff))
        })
        .await
        {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => info!(purged = n, "forgot expired github delivery ids"),
            Ok(Err(e)) => warn!(error = %e, "purging github delivery ids failed"),
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The callback signing secret: configured, or generated once and kept in `<data>/callback.secret`.
fn callback_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.callback_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("callback.secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().as_bytes().to_vec());
    }
    let secret = store::keys::generate("callback", Scope::Read).1;
    write_private(&path, &secret)?;
    info!(path = %path.display(), "generated a callback signing secret");
    Ok(secret.into_bytes())
}

fn bootstrap_admin_key(keys: &ApiKeys, data_dir: &Path) -> anyhow::Result<()> {
    let (_, secret) = keys
        .create("bootstrap-admin", Scope::Admin)
        .context("cannot create the admin key")?;
    let path = data_dir.join("admin.key");
    write_private(&path, &secret)?;
    println!(
        "rauskuclaw: created an admin API key (shown once, also saved to {}):",
        path.display()
    );
    println!("  {secret}");
    Ok(())
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{contents}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
