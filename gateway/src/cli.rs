//! The command line: `serve`, `local`, `keys create|list|revoke`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use channels::local::Format;
use clap::{Parser, Subcommand};
use store::{Scope, Store, StoreConfig};

use crate::config::{Config, RawConfig, process_env};
use crate::server::Gateway;

#[derive(Parser)]
#[command(
    name = "rauskuclaw",
    version,
    about = "Self-hosted orchestration gateway: durable jobs, skills, events"
)]
pub struct Cli {
    /// A TOML configuration file (default: ./rauskuclaw.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the store lives (RAUSKU_DATA_DIR; default ./data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// host:port to listen on (RAUSKU_LISTEN; default 127.0.0.1:8787).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Talk to a session from the terminal: each line of stdin is a message to the session
    /// `local:<user>` (try `/help`); its events are printed as they happen. At end of input,
    /// waits for the work to finish and exits (1 if a run failed).
    Local {
        /// Print each event as a JSON line instead of readable text.
        #[arg(long)]
        json: bool,
        /// The session is `local:<user>` (default: $USER, else `me`).
        #[arg(long)]
        user: Option<String>,
    },
    /// Manage API keys in the store (the gateway must be stopped; while it runs, use /v1/keys).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// read, operator or admin.
        #[arg(long, default_value = "operator")]
        scope: Scope,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rauskuclaw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        Command::Keys { .. } | Command::Local { .. } => None,
    };
    let flags = RawConfig {
        listen,
        data_dir: cli.data_dir,
        ..RawConfig::default()
    };
    let (config, warnings) = Config::load(cli.config.as_deref(), process_env(), flags)?;
    match cli.command {
        Command::Serve { .. } => {
            init_tracing(&config.log);
            for w in warnings {
                tracing::warn!("{w}");
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async {
                let gateway = Gateway::start(config, true).await?;
                gateway.serve().await
            })
        }
        Command::Local { json, user } => {
            // Events go to stdout; logs to stderr, quiet unless asked for.
            let filter = std::env::var("RAUSKU_LOG").unwrap_or_else(|_| "warn".into());
            init_tracing_to_stderr(&filter);
            let user = user
                .or_else(|| std::env::var("USER").ok())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "me".into());
            let format = if json { Format::Json } else { Format::Human };
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let summary = rt.block_on(crate::server::run_local(config, user, format))?;
            if summary.runs_failed > 0 {
                bail!("{} of the session's runs failed", summary.runs_failed);
            }
            Ok(())
        }
        Command::Keys { command } => keys(&config, command),
    }
}

fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::open(StoreConfig::new(&config.data_dir))
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let keys = channels::ApiKeys::load(store.clone(), None)?;
    match command {
        KeysCommand::Create { name, scope } => {
            let (key, secret) = keys.create(&name, scope)?;
            println!(
                "created key {} ({}, scope {}); it is shown only now:",
                key.id, key.name, key.scope
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            println!("{:<38} {:<9} {:<26} NAME", "ID", "SCOPE", "REVOKED");
            for k in keys.list() {
                let revoked = k
                    .revoked_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<38} {:<9} {:<26} {}",
                    k.id.to_string(),
                    k.scope.as_str(),
                    revoked,
                    k.name
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let key = keys.revoke(&id)?;
            println!("revoked key {} ({})", key.id, key.name);
        }
    }
    store.close()?;
    Ok(())
}

fn init_tracing_to_stderr(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("rauskuclaw: RAUSKU_LOG={filter:?} is not a valid filter ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colours only on a terminal: not in files, `docker logs` or journald.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}
