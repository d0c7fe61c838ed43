//! Configuration: raw layers (file, environment, flags) merged into a validated [`Config`].
//!
//! Flags win over `RAUSKU_*` environment variables, which win over `rauskuclaw.toml`. Unknown
//! keys in the file are an error; unknown `RAUSKU_*` variables are reported as warnings (they
//! are usually typos).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One layer of settings, every field optional. The file uses these names; the environment
/// uses `RAUSKU_` + the upper-cased name.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub api_key: Option<String>,
    pub callback_allowlist: Option<Vec<String>>,
    pub callback_allow_private: Option<bool>,
    pub callback_secret: Option<String>,
    pub http_allowlist: Option<Vec<String>>,
    pub log: Option<String>,
    pub max_concurrency: Option<u32>,
    pub retry_base_ms: Option<u64>,
    pub idempotency_retention_hours: Option<u64>,
    pub rate_limit_per_sec: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub webhook_rate_limit_per_sec: Option<u32>,
    pub webhook_rate_limit_burst: Option<u32>,
    pub shutdown_grace_secs: Option<u64>,
    pub github_webhook_secret: Option<String>,
    pub github_token: Option<String>,
    pub github_api_url: Option<String>,
    pub github_bot_login: Option<String>,
    pub github_command_prefixes: Option<Vec<String>>,
    pub github_delivery_retention_hours: Option<u64>,
    // Read now so they are validated and shown; used by the sessions issue.
    pub skills_dir: Option<PathBuf>,
    pub playbooks_dir: Option<PathBuf>,
    pub shell_allow: Option<Vec<String>>,
    pub shell_workdirs: Option<Vec<PathBuf>>,
    pub shell_env: Option<Vec<String>>,
    pub max_steps: Option<u32>,
    pub run_timeout_secs: Option<u64>,
    pub approval_timeout_secs: Option<u64>,
    pub session_idle_secs: Option<u64>,
    pub console_queue: Option<u64>,
}

/// Environment variable names, and whether the value is a list.
const ENV_KEYS: &[(&str, Kind)] = &[
    ("LISTEN", Kind::Text),
    ("DATA_DIR", Kind::Text),
    ("API_KEY", Kind::Text),
    ("CALLBACK_ALLOWLIST", Kind::List),
    ("CALLBACK_ALLOW_PRIVATE", Kind::Bool),
    ("CALLBACK_SECRET", Kind::Text),
    ("HTTP_ALLOWLIST", Kind::List),
    ("LOG", Kind::Text),
    ("MAX_CONCURRENCY", Kind::Int),
    ("RETRY_BASE_MS", Kind::Int),
    ("IDEMPOTENCY_RETENTION_HOURS", Kind::Int),
    ("RATE_LIMIT_PER_SEC", Kind::Int),
    ("RATE_LIMIT_BURST", Kind::Int),
    ("WEBHOOK_RATE_LIMIT_PER_SEC", Kind::Int),
    ("WEBHOOK_RATE_LIMIT_BURST", Kind::Int),
    ("SHUTDOWN_GRACE_SECS", Kind::Int),
    ("GITHUB_WEBHOOK_SECRET", Kind::Text),
    ("GITHUB_TOKEN", Kind::Text),
    ("GITHUB_API_URL", Kind::Text),
    ("GITHUB_BOT_LOGIN", Kind::Text),
    ("GITHUB_COMMAND_PREFIXES", Kind::List),
    ("GITHUB_DELIVERY_RETENTION_HOURS", Kind::Int),
    ("SKILLS_DIR", Kind::Text),
    ("PLAYBOOKS_DIR", Kind::Text),
    ("SHELL_ALLOW", Kind::List),
    ("SHELL_WORKDIRS", Kind::List),
    ("SHELL_ENV", Kind::List),
    ("MAX_STEPS", Kind::Int),
    ("RUN_TIMEOUT_SECS", Kind::Int),
    ("APPROVAL_TIMEOUT_SECS", Kind::Int),
    ("SESSION_IDLE_SECS", Kind::Int),
    ("CONSOLE_QUEUE", Kind::Int),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    List,
    Bool,
    Int,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Reads `RAUSKU_*` variables from `vars`. Returns the layer and warnings about unknown names.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<(RawConfig, Vec<String>)> {
        let mut table = toml::Table::new();
        let mut warnings = Vec::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("RAUSKU_") else {
                continue;
            };
            let Some((_, kind)) = ENV_KEYS.iter().find(|(k, _)| *k == key) else {
                warnings.push(format!("unknown environment variable {name} is ignored"));
                continue;
            };
            let v = match kind {
                Kind::Text => toml::Value::String(value),
                Kind::List => toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => toml::Value::Boolean(true),
                    "false" | "0" | "no" | "" => toml::Value::Boolean(false),
                    other => bail!("{name}={other:?} is not a boolean; use true or false"),
                },
                Kind::Int => toml::Value::Integer(
                    value
                        .trim()
                        .parse()
                        .with_context(|| format!("{name}={value:?} is not a whole number"))?,
                ),
            };
            table.insert(key.to_ascii_lowercase(), v);
        }
        let raw = RawConfig::deserialize(toml::Value::Table(table))
            .context("invalid RAUSKU_* environment")?;
        Ok((raw, warnings))
    }

    /// `other` wins where it says something.
    pub fn overlay(self, other: RawConfig) -> RawConfig {
        macro_rules! pick {
            ($($f:ident),*) => { RawConfig { $($f: other.$f.or(self.$f)),* } };
        }
        pick!(
            listen,
            data_dir,
            api_key,
            callback_allowlist,
            callback_allow_private,
            callback_secret,
            http_allowlist,
            log,
            max_concurrency,
            retry_base_ms,
            idempotency_retention_hours,
            rate_limit_per_sec,
            rate_limit_burst,
            webhook_rate_limit_per_sec,
            webhook_rate_limit_burst,
            shutdown_grace_secs,
            github_webhook_secret,
            github_token,
            github_api_url,
            github_bot_login,
            github_command_prefixes,
            github_delivery_retention_hours,
            skills_dir,
            playbooks_dir,
            shell_allow,
            shell_workdirs,
            shell_env,
            max_steps,
            run_timeout_secs,
            approval_timeout_secs,
            session_idle_secs,
            console_queue
        )
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub api_key: Option<String>,
    pub callback_allowlist: Vec<String>,
    pub callback_allow_private: bool,
    pub callback_secret: Option<String>,
    pub http_allowlist: Vec<String>,
    pub log: String,
    pub max_concurrency: u32,
    pub retry_base: Duration,
    pub idempotency_retention: Duration,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Per client address on `POST /webhooks/github`.
    pub webhook_rate_limit_per_sec: u32,
    pub webhook_rate_limit_burst: u32,
    pub shutdown_grace: Duration,
    /// Turns `POST /webhooks/github` on; the secret set on the GitHub webhook.
    pub github_webhook_secret: Option<String>,
    /// Lets `github.comment` post (and seeds its job type enabled).
    pub github_token: Option<String>,
    pub github_api_url: String,
    /// The login the bot posts as: its own comments are never commands.
    pub github_bot_login: Option<String>,
    /// Comment line prefixes that address the bot, e.g. `/rausku`, `@rauskuclaw`.
    pub github_command_prefixes: Vec<String>,
    /// How long `X-GitHub-Delivery` ids are remembered for dedupe.
    pub github_delivery_retention: Duration,
    pub skills_dir: Option<PathBuf>,
    pub playbooks_dir: Option<PathBuf>,
    pub shell_allow: Vec<String>,
    pub shell_workdirs: Vec<PathBuf>,
    pub shell_env: Vec<String>,
    /// Limits and timeouts of the agent loop.
    pub sessions: agentloop::SessionConfig,
    /// Frames waiting for the socket per console connection; a subscription that finds it
    /// full (for a grace period) is dropped as lagged.
    pub console_queue: usize,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

impl Config {
    pub fn from_raw(raw: RawConfig) -> anyhow::Result<Config> {
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("listen address {listen_text:?} is not host:port, e.g. 127.0.0.1:8787")
        })?;
        let positive = |name: &str, v: Option<u64>, default: u64| -> anyhow::Result<u64> {
            match v {
                Some(0) => bail!("{name} must be greater than 0"),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let lower = |v: Option<Vec<String>>| -> Vec<String> {
            v.unwrap_or_default()
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        };
        let github_api_url = raw
            .github_api_url
            .unwrap_or_else(|| "https://api.github.com".to_string());
        if !github_api_url.starts_with("http://") && !github_api_url.starts_with("https://") {
            bail!("github_api_url {github_api_url:?} must start with http:// or https://");
        }
        let rate = positive(
            "rate_limit_per_sec",
            raw.rate_limit_per_sec.map(u64::from),
            100,
        )? as u32;
        let webhook_rate = positive(
            "webhook_rate_limit_per_sec",
            raw.webhook_rate_limit_per_sec.map(u64::from),
            100,
        )? as u32;
        let github_command_prefixes: Vec<String> = match raw.github_command_prefixes {
            None => channels::github::event::DEFAULT_COMMAND_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        };
        if let Some(bad) = github_command_prefixes
            .iter()
            .find(|p| p.chars().any(char::is_whitespace))
        {
            bail!(
                "github_command_prefixes entry {bad:?} contains whitespace; give single words \
                 such as /rausku or @rauskuclaw, separated by commas"
            );
        }
        let github_bot_login = raw
            .github_bot_login
            .map(|l| l.trim().trim_start_matches('@').to_string())
            .filter(|l| !l.is_empty());
        Ok(Config {
            listen,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            api_key: raw.api_key.filter(|k| !k.is_empty()),
            callback_allowlist: lower(raw.callback_allowlist),
            callback_allow_private: raw.callback_allow_private.unwrap_or(false),
            callback_secret: raw.callback_secret.filter(|s| !s.is_empty()),
            http_allowlist: lower(raw.http_allowlist),
            log: raw.log.unwrap_or_else(|| "info".to_string()),
            max_concurrency: positive("max_concurrency", raw.max_concurrency.map(u64::from), 64)?
                as u32,
            retry_base: Duration::from_millis(positive("retry_base_ms", raw.retry_base_ms, 500)?),
            idempotency_retention: Duration::from_secs(
                3600 * positive(
                    "idempotency_retention_hours",
                    raw.idempotency_retention_hours,
                    24,
                )?,
            ),
            rate_limit_per_sec: rate,
            rate_limit_burst: positive(
                "rate_limit_burst",
                raw.rate_limit_burst.map(u64::from),
                u64::from(rate) * 2,
            )? as u32,
            webhook_rate_limit_per_sec: webhook_rate,
            webhook_rate_limit_burst: positive(
                "webhook_rate_limit_burst",
                raw.webhook_rate_limit_burst.map(u64::from),
                u64::from(webhook_rate) * 2,
            )? as u32,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(10)),
            github_webhook_secret: raw.github_webhook_secret.filter(|s| !s.is_empty()),
            github_token: raw.github_token.filter(|s| !s.is_empty()),
            github_api_url,
            github_bot_login,
            github_command_prefixes,
            github_delivery_retention: Duration::from_secs(
                3600 * positive(
                    "github_delivery_retention_hours",
                    raw.github_delivery_retention_hours,
                    72,
                )?,
            ),
            skills_dir: raw.skills_dir,
            playbooks_dir: raw.playbooks_dir,
            shell_allow: raw.shell_allow.unwrap_or_default(),
            shell_workdirs: raw.shell_workdirs.unwrap_or_default(),
            shell_env: raw.shell_env.unwrap_or_default(),
            sessions: agentloop::SessionConfig {
                max_steps: positive("max_steps", raw.max_steps.map(u64::from), 16)? as u32,
                run_timeout: Duration::from_secs(positive(
                    "run_timeout_secs",
                    raw.run_timeout_secs,
                    30 * 60,
                )?),
                approval_timeout: Duration::from_secs(positive(
                    "approval_timeout_secs",
                    raw.approval_timeout_secs,
                    30 * 60,
                )?),
                idle_timeout: Duration::from_secs(positive(
                    "session_idle_secs",
                    raw.session_idle_secs,
                    5 * 60,
                )?),
                ..agentloop::SessionConfig::default()
            },
            console_queue: match positive("console_queue", raw.console_queue, 1024)? {
                q if q > MAX_CONSOLE_QUEUE => {
                    bail!("console_queue {q} is too large; use at most {MAX_CONSOLE_QUEUE}")
                }
                q => q as usize,
            },
        })
    }

    /// Loads file (if any), environment and flags, in rising precedence.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: RawConfig,
    ) -> anyhow::Result<(Config, Vec<String>)> {
        let default_file = Path::new("rauskuclaw.toml");
        let file_layer = match file {
            Some(p) => RawConfig::from_file(p)?,
            None if default_file.exists() => RawConfig::from_file(default_file)?,
            None => RawConfig::default(),
        };
        let (env_layer, warnings) = RawConfig::from_env(env)?;
        let config = Config::from_raw(file_layer.overlay(env_layer).overlay(flags))?;
        Ok((config, warnings))
    }

    /// What `/v1/runtime` shows: everything but secrets.
    pub fn summary(&self) -> ConfigSummary {
        ConfigSummary {
            listen: self.listen.to_string(),
            data_dir: self.data_dir.display().to_string(),
            api_key_configured: self.api_key.is_some(),
            callback_allowlist: self.callback_allowlist.clone(),
            callback_allow_private: self.callback_allow_private,
            http_allowlist: self.http_allowlist.clone(),
            shell_allow: self.shell_allow.clone(),
            shell_workdirs: self
                .shell_workdirs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            shell_env: self.shell_env.clone(),
            max_concurrency: self.max_concurrency,
            retry_base_ms: self.retry_base.as_millis() as u64,
            idempotency_retention_hours: self.idempotency_retention.as_secs() / 3600,
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            webhook_rate_limit_per_sec: self.webhook_rate_limit_per_sec,
            webhook_rate_limit_burst: self.webhook_rate_limit_burst,
            shutdown_grace_secs: self.shutdown_grace.as_secs(),
            github_webhook_configured: self.github_webhook_secret.is_some(),
            github_token_configured: self.github_token.is_some(),
            github_api_url: self.github_api_url.clone(),
            console_queue: self.console_queue,
            github_bot_login: self.github_bot_login.clone(),
            github_command_prefixes: self.github_command_prefixes.clone(),
            github_delivery_retention_hours: self.github_delivery_retention.as_secs() / 3600,
        }
    }
}

/// The largest `console_queue`.
pub const MAX_CONSOLE_QUEUE: u64 = 1 << 20;

/// The configuration without secrets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfigSummary {
    pub listen: String,
    pub data_dir: String,
    pub api_key_configured: bool,
    pub callback_allowlist: Vec<String>,
    pub callback_allow_private: bool,
    pub http_allowlist: Vec<String>,
    pub shell_allow: Vec<String>,
    pub shell_workdirs: Vec<String>,
    pub shell_env: Vec<String>,
    pub max_concurrency: u32,
    pub retry_base_ms: u64,
    pub idempotency_retention_hours: u64,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub webhook_rate_limit_per_sec: u32,
    pub webhook_rate_limit_burst: u32,
    pub shutdown_grace_secs: u64,
    pub github_webhook_configured: bool,
    pub github_token_configured: bool,
    pub github_api_url: String,
    pub console_queue: usize,
    pub github_bot_login: Option<String>,
    pub github_command_prefixes: Vec<String>,
    pub github_delivery_retention_hours: u64,
}

/// The process environment as pairs (for [`Config::load`]).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert!(c.callback_allowlist.is_empty());
        assert_eq!(c.idempotency_retention, Duration::from_secs(24 * 3600));
        assert_eq!(c.console_queue, 1024);
    }

    #[test]
    fn flags_win_over_env_over_file() {
        let file: RawConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\nmax_concurrency = 5").unwrap();
        let (env_layer, _) = RawConfig::from_env(env(&[("RAUSKU_LISTEN", "127.0.0.1:2")])).unwrap();
        let flags = RawConfig {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let c = Config::from_raw(file.clone().overlay(env_layer.clone()).overlay(flags)).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.max_concurrency, 5);
        let c = Config::from_raw(file.overlay(env_layer)).unwrap();
        assert_eq!(c.listen.port(), 2);
    }

    #[test]
    fn env_lists_bools_and_unknown_names() {
        let (raw, warnings) = RawConfig::from_env(env(&[
            ("RAUSKU_CALLBACK_ALLOWLIST", "Hooks.Example.com, ,b.example"),
            ("RAUSKU_CALLBACK_ALLOW_PRIVATE", "true"),
            ("RAUSKU_CALBACK_SECRET", "typo"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        let c = Config::from_raw(raw).unwrap();
        assert_eq!(c.callback_allowlist, vec!["hooks.example.com", "b.example"]);
        assert!(c.callback_allow_private);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("RAUSKU_CALBACK_SECRET"));
    }

    #[test]
    fn github_and_webhook_settings() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.github_command_prefixes, ["/rausku", "@rauskuclaw"]);
        assert_eq!(c.github_delivery_retention, Duration::from_secs(72 * 3600));
        assert_eq!(
            (c.webhook_rate_limit_per_sec, c.webhook_rate_limit_burst),
            (100, 200)
        );
        assert_eq!(c.github_bot_login, None);
        let (raw, warnings) = RawConfig::from_env(env(&[
            ("RAUSKU_GITHUB_COMMAND_PREFIXES", "!bot, /ops"),
            ("RAUSKU_GITHUB_BOT_LOGIN", "@rausku-bot"),
            ("RAUSKU_GITHUB_DELIVERY_RETENTION_HOURS", "1"),
            ("RAUSKU_WEBHOOK_RATE_LIMIT_PER_SEC", "1"),
            ("RAUSKU_WEBHOOK_RATE_LIMIT_BURST", "3"),
        ]))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = Config::from_raw(raw).unwrap();
        assert_eq!(c.github_command_prefixes, ["!bot", "/ops"]);
        assert_eq!(c.github_bot_login.as_deref(), Some("rausku-bot"));
        assert_eq!(c.github_delivery_retention, Duration::from_secs(3600));
        assert_eq!(
            (c.webhook_rate_limit_per_sec, c.webhook_rate_limit_burst),
            (1, 3)
        );
        let err = Config::from_raw(RawConfig {
            github_command_prefixes: Some(vec!["/rausku deploy".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("whitespace"), "{err}");
        let err = Config::from_raw(RawConfig {
            webhook_rate_limit_per_sec: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("webhook_rate_limit_per_sec"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let err =
            RawConfig::from_env(env(&[("RAUSKU_CALLBACK_ALLOW_PRIVATE", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = Config::from_raw(RawConfig {
            listen: Some("localhost".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
        let err = toml::from_str::<RawConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::from_raw(RawConfig {
            max_concurrency: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_concurrency"), "{err}");
        let err = Config::from_raw(RawConfig {
            console_queue: Some(MAX_CONSOLE_QUEUE + 1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("console_queue"), "{err}");
    }
}
