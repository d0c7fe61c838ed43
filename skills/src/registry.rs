//! The registry: handlers by name, and the persisted job types built over them.
//!
//! A job type names a handler and adds its own description, fixed config, defaults and policy.
//! Each built-in handler gets a job type of the same name the first time the registry opens a
//! store; after that the stored types are the truth (an operator may have disabled one).
//!
//! Job types also come from skill manifests ([`crate::manifest`]): `apply_manifests` adds,
//! rewrites and removes the ones a manifest defines, and leaves built-in and API-created types
//! alone. Every job type records where it came from in `JobType::source`.
//!
//! Writes go to the store first, then to the in-memory map. The mutating methods are sync and do
//! not wait for the disk: a caller that acknowledges a change to a client awaits
//! `Store::durable()` first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use store::job::{MAX_ATTEMPTS, MAX_TIMEOUT_MS};

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use store::{JobDefaults, JobType, JobTypeSource, Policy, Store, StoreError, Timestamp};

use crate::handler::{DynHandler, InputError};
use crate::manifest::{self, Manifest, ManifestError, ManifestSet, ReloadReport};
use crate::schema;

/// The longest job type name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest job type description.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// Why a registry operation was refused. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "job type `{0}` already exists; change it with PATCH /v1/job-types/{0} or pick another name"
    )]
    Exists(String),
    #[error("no job type named `{0}`; GET /v1/job-types lists them")]
    NotFound(String),
    #[error("unknown job type `{name}`; enabled types: {}", list_or_none(.enabled))]
    UnknownType { name: String, enabled: Vec<String> },
    #[error(
        "job type `{0}` is disabled; enable it with PATCH /v1/job-types/{0} {{\"enabled\": true}}"
    )]
    Disabled(String),
    #[error("unknown handler `{handler}`; available handlers: {}", list_or_none(.available))]
    UnknownHandler {
        handler: String,
        available: Vec<String>,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("the job type store failed: {0}")]
    Store(#[from] StoreError),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn invalid(field: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Defaults given in a request: each field falls back (to the handler's defaults on create, to
/// the current value on patch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsPatch {
    /// Attempts per job, 1–100.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Timeout per attempt in milliseconds, 1–86400000 (24 h).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Jobs of this type that may run at once, 1–10000; `null` removes the per-type limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, nullable)]
    pub concurrency: Option<Option<u32>>,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

impl DefaultsPatch {
    /// `base` with the given fields replaced, each checked against its range.
    fn apply(&self, base: &JobDefaults) -> Result<JobDefaults, RegistryError> {
        let mut out = base.clone();
        if let Some(n) = self.max_attempts {
            if !(1..=MAX_ATTEMPTS).contains(&n) {
                return Err(invalid(
                    "defaults.max_attempts",
                    format!("{n} is out of range; use 1 to {MAX_ATTEMPTS}"),
                ));
            }
            out.max_attempts = n;
        }
        if let Some(ms) = self.timeout_ms {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(invalid(
                    "defaults.timeout_ms",
                    format!("{ms} is out of range; use 1 to {MAX_TIMEOUT_MS} (24 h)"),
                ));
            }
            out.timeout_ms = ms;
        }
        if let Some(concurrency) = self.concurrency {
            if let Some(n) = concurrency.filter(|n| !(1..=10_000).contains(n)) {
                return Err(invalid(
                    "defaults.concurrency",
                    format!("{n} is out of range; use 1 to 10000, or null for no per-type limit"),
                ));
            }
            out.concurrency = concurrency;
        }
        Ok(out)
    }
}

/// A new job type over an existing handler (`POST /v1/job-types`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTypeSpec {
    /// 1–64 characters of `a-z 0-9 . _ -`, starting with a letter.
    pub name: String,
    /// Defaults to the handler's description.
    #[serde(default)]
    pub description: Option<String>,
    /// The handler that runs its jobs (`GET /v1/job-types` shows the built-in ones).
    pub handler: String,
    /// Fixed configuration handed to the handler with every job.
    #[serde(default)]
    pub config: Option<Value>,
    /// Fields not given fall back to the handler's defaults.
    #[serde(default)]
    pub defaults: Option<DefaultsPatch>,
    /// A JSON Schema the input must match, checked before a job is created. Only a subset is
    /// accepted (see `skills::schema`): an unsupported keyword is refused, not ignored.
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Defaults to `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A change to a job type (`PATCH /v1/job-types/{name}`); fields not given stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTypePatch {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub defaults: Option<DefaultsPatch>,
}

/// Handlers by name and the job types over them. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where job types are persisted.
    store: Store,
    /// Every handler this process can run, by name; fixed at start-up.
    handlers: BTreeMap<&'static str, DynHandler>,
    /// The stored job types by name, kept in step with the store (store first).
    types: RwLock<BTreeMap<String, JobType>>,
}

impl Registry {
    /// Loads the job types from `store` and seeds one per handler whose name has no type yet,
    /// enabled as [`Handler::enabled_by_default`](crate::Handler::enabled_by_default) says.
    pub fn open(store: Store, handlers: Vec<DynHandler>) -> Result<Registry, RegistryError> {
        let mut by_name = BTreeMap::new();
        for handler in handlers {
            let name = handler.name();
            if by_name.insert(name, handler).is_some() {
                return Err(invalid(
                    "handlers",
                    format!("handler `{name}` is registered twice"),
                ));
            }
        }
        let mut types: BTreeMap<String, JobType> = store
            .job_types()?
            .into_iter()
            .map(|jt| (jt.name.clone(), jt))
            .collect();
        for jt in types.values() {
            if let Some(Err(e)) = jt.input_schema.as_ref().map(schema::check_schema) {
                tracing::warn!(
                    job_type = %jt.name,
                    "stored input_schema is not fully enforced ({e}); recreate the type"
                );
            }
        }
        for (name, handler) in &by_name {
            if types.contains_key(*name) {
                continue;
            }
            let now = Timestamp::now();
            let jt = JobType {
                name: (*name).to_owned(),
                description: handler.description().to_owned(),
                handler: (*name).to_owned(),
                enabled: handler.enabled_by_default(),
                config: Value::Null,
                defaults: handler.defaults(),
                input_schema: None,
                policy: Policy::default(),
                source: JobTypeSource::Builtin,
                created_at: now,
                updated_at: now,
            };
            store.put_job_type(&jt)?;
            tracing::info!(job_type = %name, enabled = jt.enabled, "seeded built-in job type");
            types.insert(jt.name.clone(), jt);
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                store,
                handlers: by_name,
                types: RwLock::new(types),
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, JobType>> {
        // The map is only replaced entry by entry, so a panic elsewhere cannot leave it torn.
        self.inner
            .types
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, JobType>> {
        self.inner
            .types
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The job type named `name`.
    pub fn get(&self, name: &str) -> Option<JobType> {
        self.read().get(name).cloned()
    }

    /// Every job type, sorted by name.
    pub fn list(&self) -> Vec<JobType> {
        self.read().values().cloned().collect()
    }

    /// The handler that runs jobs of the type named `type_name`.
    pub fn handler(&self, type_name: &str) -> Option<DynHandler> {
        let handler = self.read().get(type_name)?.handler.clone();
        self.inner.handlers.get(handler.as_str()).cloned()
    }

    /// The names of every handler, sorted.
    pub fn handler_names(&self) -> Vec<&'static str> {
        self.inner.handlers.keys().copied().collect()
    }

    fn unknown_handler(&self, handler: &str) -> RegistryError {
        RegistryError::UnknownHandler {
            handler: handler.to_owned(),
            available: self
                .handler_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The job type `spec` describes, checked as `create` checks it (name, handler,
    /// description, defaults, input schema) but neither stored nor compared with existing types.
    pub(crate) fn build(
        &self,
        spec: JobTypeSpec,
        source: JobTypeSource,
    ) -> Result<JobType, RegistryError> {
        check_name(&spec.name)?;
        let handler = self
            .inner
            .handlers
            .get(spec.handler.as_str())
            .ok_or_else(|| self.unknown_handler(&spec.handler))?;
        check_spec(&spec)?;
        let defaults = spec
            .defaults
            .unwrap_or_default()
            .apply(&handler.defaults())?;
        let now = Timestamp::now();
        Ok(JobType {
            name: spec.name,
            description: spec
                .description
                .unwrap_or_else(|| handler.description().to_owned()),
            handler: handler.name().to_owned(),
            enabled: spec.enabled.unwrap_or(true),
            config: spec.config.unwrap_or(Value::Null),
            defaults,
            input_schema: spec.input_schema,
            policy: spec.policy.unwrap_or_default(),
            source,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates a job type over an existing handler and persists it.
    pub fn create(&self, spec: JobTypeSpec) -> Result<JobType, RegistryError> {
        let jt = self.build(spec, JobTypeSource::Api)?;
        // Holding the write lock over the (non-flushing) store write makes check-and-insert
        // atomic against a concurrent create of the same name.
        let mut types = self.write();
        if types.contains_key(&jt.name) {
            return Err(RegistryError::Exists(jt.name));
        }
        self.inner.store.put_job_type(&jt)?;
        types.insert(jt.name.clone(), jt.clone());
        tracing::info!(job_type = %jt.name, handler = %jt.handler, "created job type");
        Ok(jt)
    }

    /// Changes a job type's `enabled`, `description` or `defaults` and persists it.
    pub fn patch(&self, name: &str, patch: JobTypePatch) -> Result<JobType, RegistryError> {
        if let Some(description) = &patch.description {
            check_description(description)?;
        }
        let mut types = self.write();
        let mut jt = types
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        if let Some(enabled) = patch.enabled {
            jt.enabled = enabled;
        }
        if let Some(description) = patch.description {
            jt.description = description;
        }
        if let Some(defaults) = &patch.defaults {
            jt.defaults = defaults.apply(&jt.defaults)?;
        }
        jt.updated_at = Timestamp::now();
        self.inner.store.put_job_type(&jt)?;
        types.insert(jt.name.clone(), jt.clone());
        tracing::info!(job_type = %jt.name, enabled = jt.enabled, "updated job type");
        Ok(jt)
    }

    /// Brings the manifest-defined job types in line with `set` (see [`crate::manifest`] for
    /// the format), persisting every change in one store write, and says what changed.
    ///
    /// The rules:
    /// - A valid manifest creates its job type (`added`) or, if its definition or file differs
    ///   from the one last applied, rewrites it (`changed`; the creation time is kept). A
    ///   manifest whose definition and file are as last applied leaves the stored type alone
    ///   (`unchanged`): changes an operator made through `PATCH` (`enabled`, `description`,
    ///   `defaults`) last until the manifest itself changes, and are then overwritten by it.
    /// - A manifest is checked as `create` checks a request, plus: its handler exists, and its
    ///   name is not taken by a built-in or API-created type (that type stays) nor by a type
    ///   still owned by another manifest file that has errors.
    /// - A file that fails (to read, parse or check) keeps whatever it defined before in force,
    ///   unchanged.
    /// - A type last defined by a manifest that no file defines any more is removed from the
    ///   registry and the store (`removed`), unless the file that defined it failed, or the
    ///   directory could not be read (or listed): then nothing is removed. Jobs of a removed
    ///   type that are already queued fail when they run, as for any unknown type.
    ///
    /// `Err` only if the store write fails, in which case nothing changed.
    pub fn apply_manifests(&self, set: &ManifestSet) -> Result<ReloadReport, RegistryError> {
        let mut errors = set.errors.clone();
        let mut built: Vec<(&Manifest, JobType)> = Vec::new();
        for manifest in &set.manifests {
            let source = JobTypeSource::Manifest {
                path: manifest.path.to_string_lossy().into_owned(),
                digest: manifest.digest.clone(),
            };
            match self.build(manifest.spec.clone(), source) {
                Ok(jt) => built.push((manifest, jt)),
                Err(e) => errors.push(manifest.registry_error(&e)),
            }
        }

        // Held to the end, so no create or patch interleaves with the reload.
        let mut types = self.write();
        // A manifest refused for its name keeps its file's old types in force, which may be a
        // name another manifest claims: repeat until no more are refused.
        while let Some((i, message)) = built.iter().enumerate().find_map(|(i, (manifest, jt))| {
            name_taken(types.get(&jt.name), manifest, &errors).map(|message| (i, message))
        }) {
            let (manifest, _) = built.remove(i);
            errors.push(manifest.error("name", message));
        }

        let mut report = ReloadReport::default();
        let mut put = Vec::new();
        for (_, mut jt) in built {
            match types.get(&jt.name) {
                None => {
                    report.added.push(jt.name.clone());
                    put.push(jt);
                }
                Some(existing) if existing.source == jt.source => {
                    report.unchanged.push(jt.name.clone());
                }
                Some(existing) => {
                    jt.created_at = existing.created_at;
                    report.changed.push(jt.name.clone());
                    put.push(jt);
                }
            }
        }
        let defined: BTreeSet<&str> = report
            .added
            .iter()
            .chain(&report.changed)
            .chain(&report.unchanged)
            .map(String::as_str)
            .collect();
        let keep_all = set.dir_failed();
        report.removed = types
            .values()
            .filter(|jt| {
                !keep_all
                    && jt.source.manifest_path().is_some_and(|path| {
                        !defined.contains(jt.name.as_str()) && !failed(path, &errors)
                    })
            })
            .map(|jt| jt.name.clone())
            .collect();

        self.inner.store.write_job_types(&put, &report.removed)?;
        for jt in put {
            types.insert(jt.name.clone(), jt);
        }
        for name in &report.removed {
            types.remove(name);
        }
        drop(types);

        for e in &errors {
            tracing::warn!(error = %e, "skill manifest not applied");
        }
        errors.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        report.errors = errors;
        report.added.sort();
        report.changed.sort();
        report.unchanged.sort();
        tracing::info!(
            added = ?report.added,
            changed = ?report.changed,
            removed = ?report.removed,
            unchanged = report.unchanged.len(),
            errors = report.errors.len(),
            "applied skill manifests"
        );
        Ok(report)
    }

    /// Reads the manifests in `dir` and applies them: what start-up and a reload do.
    pub fn load_manifests(&self, dir: &Path) -> Result<ReloadReport, RegistryError> {
        self.apply_manifests(&manifest::load_dir(dir))
    }

    /// Checks that a job of type `type_name` with `input` may be created: the type exists, is
    /// enabled, its handler is present, and the input matches the type's `input_schema` (if any)
    /// and then passes the handler's own checks. Returns the type and its handler.
    pub fn validate_input(
        &self,
        type_name: &str,
        input: &Value,
    ) -> Result<(JobType, DynHandler), RegistryError> {
        let jt = {
            let types = self.read();
            match types.get(type_name) {
                Some(jt) => jt.clone(),
                None => {
                    let enabled = types
                        .values()
                        .filter(|t| t.enabled)
                        .map(|t| t.name.clone())
                        .collect();
                    return Err(RegistryError::UnknownType {
                        name: type_name.to_owned(),
                        enabled,
                    });
                }
            }
        };
        if !jt.enabled {
            return Err(RegistryError::Disabled(jt.name));
        }
        let handler = self
            .inner
            .handlers
            .get(jt.handler.as_str())
            .cloned()
            .ok_or_else(|| self.unknown_handler(&jt.handler))?;
        if let Some(schema) = &jt.input_schema {
            schema::validate(schema, input)?;
        }
        handler.validate(&jt.config, input)?;
        Ok((jt, handler))
    }
}

/// Why `manifest` may not define the job type `existing` (of the same name), if it may not.
fn name_taken(
    existing: Option<&JobType>,
    manifest: &Manifest,
    errors: &[ManifestError],
) -> Option<String> {
    let existing = existing?;
    let name = &existing.name;
    match &existing.source {
        JobTypeSource::Builtin => Some(format!(
            "job type `{name}` is built in and a manifest cannot replace it; pick another name"
        )),
        JobTypeSource::Api => Some(format!(
            "job type `{name}` was created through the API and a manifest cannot replace it; \
             pick another name"
        )),
        JobTypeSource::Manifest { path, .. }
            if Path::new(path) != manifest.path && failed(path, errors) =>
        {
            Some(format!(
                "job type `{name}` is still defined by {path}, which has errors; fix or remove \
                 that file first, or pick another name"
            ))
        }
        JobTypeSource::Manifest { .. } => None,
    }
}

/// Whether the manifest file `path` failed in this reload.
fn failed(path: &str, errors: &[ManifestError]) -> bool {
    errors.iter().any(|e| e.path == Path::new(path))
}

/// Job type names: 1–64 characters of `a-z 0-9 . _ -`, starting with a letter.
fn check_name(name: &str) -> Result<(), RegistryError> {
    const RULE: &str =
        "use 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`, starting with a letter";
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(
            "name",
            format!("`{name}` has {} characters; {RULE}", name.chars().count()),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid(
            "name",
            format!("`{name}` does not start with a lowercase letter; {RULE}"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(invalid(
            "name",
            format!("`{name}` contains `{bad}`; {RULE}"),
        ));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), RegistryError> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(invalid(
            "description",
            format!("too long; use at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(())
}

/// The checks of a spec that need no registry: the name, the description's length, the ranges
/// of the defaults given, and the input schema. Manifests run them when they are read.
pub(crate) fn check_spec(spec: &JobTypeSpec) -> Result<(), RegistryError> {
    check_name(&spec.name)?;
    if let Some(description) = &spec.description {
        check_description(description)?;
    }
    if let Some(defaults) = &spec.defaults {
        defaults.apply(&JobDefaults::default())?;
    }
    if let Some(schema) = &spec.input_schema {
        schema::check_schema(schema).map_err(|e| RegistryError::Invalid {
            field: e.field,
            message: e.message,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use store::StoreConfig;
    use tempfile::TempDir;

    use super::*;
    use crate::builtin::{BuiltinConfig, builtin_handlers};

    fn open(dir: &TempDir) -> Registry {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        Registry::open(store, builtin_handlers(&BuiltinConfig::default())).unwrap()
    }

    fn spec(value: Value) -> JobTypeSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn seeds_one_type_per_builtin() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let names: Vec<_> = reg.list().into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "echo",
                "flaky",
                "github.comment",
                "http.request",
                "shell.exec",
                "sleep"
            ]
        );
        let sleep = reg.get("sleep").unwrap();
        assert!(sleep.source.is_builtin() && sleep.enabled);
        assert_eq!(sleep.handler, "sleep");
        assert_eq!(sleep.defaults.timeout_ms, 3_600_000);
        assert_eq!(reg.handler("sleep").unwrap().name(), "sleep");
        assert_eq!(
            reg.handler_names(),
            [
                "echo",
                "flaky",
                "github.comment",
                "http.request",
                "shell.exec",
                "sleep"
            ]
        );
    }

    #[test]
    fn seeding_follows_enabled_by_default() {
        use crate::builtin::ShellPolicy;

        let with_allowlist = || BuiltinConfig {
            shell: ShellPolicy {
                allow: vec!["true".into()],
                ..ShellPolicy::default()
            },
            ..BuiltinConfig::default()
        };
        let reopen = |dir: &TempDir, cfg: &BuiltinConfig| {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            Registry::open(store, builtin_handlers(cfg)).unwrap()
        };

        // No allowlist: `shell.exec` is seeded disabled, the rest enabled.
        let dir = TempDir::new().unwrap();
        {
            let reg = open(&dir);
            let shell = reg.get("shell.exec").unwrap();
            assert!(shell.source.is_builtin() && !shell.enabled);
            assert_eq!(
                (shell.defaults.max_attempts, shell.defaults.timeout_ms),
                (1, 600_000)
            );
            assert!(reg.get("echo").unwrap().enabled);
            // No GitHub token: `github.comment` likewise.
            assert!(!reg.get("github.comment").unwrap().enabled);
            assert!(matches!(
                reg.validate_input("shell.exec", &json!({"argv": ["true"]})),
                Err(RegistryError::Disabled(_))
            ));
        }
        // A stored type is untouched when the allowlist appears later.
        let reg = reopen(&dir, &with_allowlist());
        assert!(!reg.get("shell.exec").unwrap().enabled);

        // With an allowlist (and a token) from the start they are seeded enabled.
        let dir = TempDir::new().unwrap();
        let reg = reopen(
            &dir,
            &BuiltinConfig {
                github: Some(crate::builtin::GithubApi {
                    api_url: "https://api.github.com".into(),
                    token: "t".into(),
                }),
                ..with_allowlist()
            },
        );
        assert!(reg.get("shell.exec").unwrap().enabled);
        assert!(reg.get("github.comment").unwrap().enabled);
        reg.validate_input("shell.exec", &json!({"argv": ["true"]}))
            .unwrap();
        match reg.validate_input("shell.exec", &json!({"argv": ["rm", "-rf", "/"]})) {
            Err(RegistryError::Input(e)) => assert_eq!(e.field, "input.argv.0"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a program off the allowlist was accepted"),
        }
    }

    #[test]
    fn seeding_preserves_stored_changes() {
        let dir = TempDir::new().unwrap();
        {
            let reg = open(&dir);
            reg.patch(
                "echo",
                JobTypePatch {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
            reg.create(spec(json!({"name": "hello", "handler": "echo"})))
                .unwrap();
        }
        let reg = open(&dir);
        assert!(!reg.get("echo").unwrap().enabled);
        assert_eq!(reg.get("hello").unwrap().handler, "echo");
        assert!(matches!(
            reg.validate_input("echo", &json!(1)),
            Err(RegistryError::Disabled(_))
        ));
    }

    #[test]
    fn create_over_a_handler() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let jt = reg
            .create(spec(json!({
                "name": "slow-sleep",
                "handler": "sleep",
                "defaults": {"max_attempts": 5},
                "policy": {"risk": "write"},
            })))
            .unwrap();
        assert_eq!(jt.defaults.max_attempts, 5);
        assert_eq!(
            jt.defaults.timeout_ms, 3_600_000,
            "falls back to the handler's default"
        );
        assert!(jt.enabled);
        assert_eq!(jt.source, JobTypeSource::Api);
        assert_eq!(reg.handler("slow-sleep").unwrap().name(), "sleep");
        assert_eq!(reg.get("slow-sleep"), Some(jt));

        let err = reg
            .create(spec(json!({"name": "slow-sleep", "handler": "echo"})))
            .unwrap_err();
        assert!(matches!(err, RegistryError::Exists(_)), "{err}");
        let err = reg
            .create(spec(json!({"name": "x", "handler": "nope"})))
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "available handlers: echo, flaky, github.comment, http.request, shell.exec, sleep"
            ),
            "{err}"
        );
    }

    #[test]
    fn create_refuses_bad_fields() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let cases = [
            (json!({"name": "", "handler": "echo"}), "name"),
            (json!({"name": "1abc", "handler": "echo"}), "name"),
            (json!({"name": "Abc", "handler": "echo"}), "name"),
            (json!({"name": "a b", "handler": "echo"}), "name"),
            (json!({"name": "a".repeat(65), "handler": "echo"}), "name"),
            (
                json!({"name": "ok", "handler": "echo", "defaults": {"max_attempts": 0}}),
                "defaults.max_attempts",
            ),
            (
                json!({"name": "ok", "handler": "echo", "defaults": {"max_attempts": 101}}),
                "defaults.max_attempts",
            ),
            (
                json!({"name": "ok", "handler": "echo", "defaults": {"timeout_ms": 0}}),
                "defaults.timeout_ms",
            ),
            (
                json!({"name": "ok", "handler": "echo", "defaults": {"timeout_ms": 86_400_001}}),
                "defaults.timeout_ms",
            ),
            (
                json!({"name": "ok", "handler": "echo", "defaults": {"concurrency": 0}}),
                "defaults.concurrency",
            ),
            (
                json!({"name": "ok", "handler": "echo", "input_schema": "x"}),
                "input_schema",
            ),
            (
                json!({"name": "ok", "handler": "echo",
                       "input_schema": {"properties": {"ref": {"pattern": "^v"}}}}),
                "input_schema.properties.ref.pattern",
            ),
        ];
        for (value, field) in cases {
            match reg.create(spec(value.clone())) {
                Err(RegistryError::Invalid { field: f, message }) => {
                    assert_eq!(f, field, "{value}: {message}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        assert!(
            reg.create(spec(json!({"name": "a".repeat(64), "handler": "echo"})))
                .is_ok()
        );
        assert!(
            reg.create(spec(json!({"name": "a.b_c-9", "handler": "echo"})))
                .is_ok()
        );
        assert!(
            serde_json::from_value::<JobTypeSpec>(
                json!({"name": "x", "handler": "echo", "extra": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn patch_changes_only_what_is_given() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let before = reg.get("http.request").unwrap();
        let patch: JobTypePatch = serde_json::from_value(
            json!({"defaults": {"concurrency": 4}, "description": "calls out"}),
        )
        .unwrap();
        let jt = reg.patch("http.request", patch).unwrap();
        assert_eq!(jt.defaults.concurrency, Some(4));
        assert_eq!(jt.defaults.max_attempts, before.defaults.max_attempts);
        assert_eq!(jt.description, "calls out");
        assert!(jt.enabled);

        let patch: JobTypePatch =
            serde_json::from_value(json!({"defaults": {"concurrency": null}})).unwrap();
        assert_eq!(
            reg.patch("http.request", patch)
                .unwrap()
                .defaults
                .concurrency,
            None
        );
        let patch: JobTypePatch =
            serde_json::from_value(json!({"defaults": {"timeout_ms": 5}})).unwrap();
        assert_eq!(
            reg.patch("http.request", patch)
                .unwrap()
                .defaults
                .concurrency,
            None
        );

        let err = reg.patch("nope", JobTypePatch::default()).unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)), "{err}");
        let bad: JobTypePatch =
            serde_json::from_value(json!({"defaults": {"max_attempts": 0}})).unwrap();
        assert!(matches!(
            reg.patch("echo", bad),
            Err(RegistryError::Invalid { .. })
        ));
        assert!(serde_json::from_value::<JobTypePatch>(json!({"handler": "x"})).is_err());
    }

    #[test]
    fn validate_input_checks_type_and_input() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let (jt, handler) = reg.validate_input("sleep", &json!({"ms": 10})).unwrap();
        assert_eq!((jt.name.as_str(), handler.name()), ("sleep", "sleep"));

        reg.patch(
            "flaky",
            JobTypePatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        let err = reg.validate_input("nope", &json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown job type `nope`; enabled types: echo, http.request, sleep"
        );
        let err = reg
            .validate_input("flaky", &json!({"fail_times": 1}))
            .unwrap_err();
        assert!(
            err.to_string().contains("PATCH /v1/job-types/flaky"),
            "{err}"
        );
        match reg.validate_input("sleep", &json!({"ms": "x"})) {
            Err(RegistryError::Input(e)) => assert_eq!(e.field, "input.ms"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a bad input was accepted"),
        }
    }

    #[test]
    fn validate_input_enforces_the_input_schema() {
        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        reg.create(spec(json!({
            "name": "deploy",
            "handler": "echo",
            "input_schema": {
                "type": "object",
                "properties": {
                    "ref": {"type": "string", "minLength": 1},
                    "env": {"enum": ["staging", "production"]},
                    "targets": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["ref", "env"],
                "additionalProperties": false,
            },
        })))
        .unwrap();
        let (jt, handler) = reg
            .validate_input(
                "deploy",
                &json!({"ref": "main", "env": "staging", "targets": [1, 2]}),
            )
            .unwrap();
        assert_eq!((jt.name.as_str(), handler.name()), ("deploy", "echo"));

        let refused = [
            (json!({"env": "staging"}), "input.ref", "required; "),
            (
                json!({"ref": 7, "env": "staging"}),
                "input.ref",
                "expected a string, got an integer",
            ),
            (
                json!({"ref": "main", "env": "dev"}),
                "input.env",
                "not one of \"staging\", \"production\"",
            ),
            (
                json!({"ref": "main", "env": "staging", "targets": [1, 2, "x"]}),
                "input.targets.2",
                "expected an integer, got a string",
            ),
            (
                json!({"ref": "main", "env": "staging", "force": true}),
                "input.force",
                "not an allowed property",
            ),
            (json!("main"), "input", "expected an object, got a string"),
        ];
        for (input, field, fragment) in refused {
            match reg.validate_input("deploy", &input) {
                Err(RegistryError::Input(e)) => {
                    assert_eq!(e.field, field, "{input}: {e}");
                    assert!(e.message.contains(fragment), "{input}: {e}");
                }
                Err(other) => panic!("{input}: {other}"),
                Ok(_) => panic!("{input} was accepted"),
            }
        }
        // The built-in type has no schema: `echo` still takes anything.
        reg.validate_input("echo", &json!("main")).unwrap();
    }

    #[test]
    fn apply_manifests_records_the_source_and_refuses_taken_names() {
        use std::path::PathBuf;

        let dir = TempDir::new().unwrap();
        let reg = open(&dir);
        let parse = |file: &str, text: &str| crate::manifest::parse(Path::new(file), text).unwrap();
        let lint = parse(
            "skills/lint.toml",
            "name = \"lint\"\ndescription = \"Lint\"\nhandler = \"echo\"\n",
        );
        let sleep = parse(
            "skills/sleep.toml",
            "name = \"sleep\"\ndescription = \"Mine\"\nhandler = \"echo\"\n",
        );
        let set = ManifestSet {
            dir: PathBuf::from("skills"),
            manifests: vec![lint.clone(), sleep],
            errors: vec![],
        };
        let report = reg.apply_manifests(&set).unwrap();
        assert_eq!(report.added, ["lint"]);
        let [e] = &report.errors[..] else {
            panic!("{report:?}")
        };
        assert_eq!(
            e.to_string(),
            "skills/sleep.toml:1:1: job type `sleep` is built in and a manifest cannot replace \
             it; pick another name"
        );
        assert_eq!(
            reg.get("lint").unwrap().source,
            JobTypeSource::Manifest {
                path: "skills/lint.toml".into(),
                digest: lint.digest.clone(),
            }
        );
        assert!(reg.get("sleep").unwrap().source.is_builtin());

        // The same manifest under an API-created name.
        let set = ManifestSet {
            manifests: vec![],
            ..set
        };
        assert_eq!(reg.apply_manifests(&set).unwrap().removed, ["lint"]);
        reg.create(spec(json!({"name": "lint", "handler": "echo"})))
            .unwrap();
        let set = ManifestSet {
            manifests: vec![lint],
            ..set
        };
        let report = reg.apply_manifests(&set).unwrap();
        assert!(
            report.errors[0].message.contains("created through the API"),
            "{report:?}"
        );
        assert_eq!(reg.get("lint").unwrap().source, JobTypeSource::Api);
    }

    #[test]
    fn stored_type_with_a_missing_handler() {
        let dir = TempDir::new().unwrap();
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            let reg = Registry::open(store, builtin_handlers(&BuiltinConfig::default())).unwrap();
            reg.create(spec(json!({"name": "old", "handler": "flaky"})))
                .unwrap();
        }
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let reg = Registry::open(store, vec![Arc::new(crate::builtin::Echo)]).unwrap();
        assert!(reg.handler("old").is_none());
        let err = reg.validate_input("old", &json!({})).unwrap_err();
        assert!(matches!(err, RegistryError::UnknownHandler { .. }), "{err}");
    }
}
