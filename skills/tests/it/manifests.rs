//! Skill manifests applied to a registry over a real sled store: what a reload adds, changes,
//! removes and keeps, and the errors it reports.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use skills::builtin::{BuiltinConfig, builtin_handlers};
use skills::registry::JobTypePatch;
use skills::{JobTypeSpec, Registry, RegistryError, ReloadReport};
use store::{Approval, JobTypeSource, PolicyDecision, Store, StoreConfig};
use tempfile::TempDir;

/// A data directory, a skills directory, and a registry over a store in the first.
struct Fixture {
    /// Holds the store's files.
    data: TempDir,
    /// Holds the manifests.
    skills: TempDir,
    registry: Registry,
}

impl Fixture {
    fn new() -> Fixture {
        let data = TempDir::new().unwrap();
        let skills = TempDir::new().unwrap();
        let registry = open(data.path());
        Fixture {
            data,
            skills,
            registry,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.skills.path().join(file)
    }

    fn write(&self, file: &str, text: &str) {
        fs::write(self.path(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        fs::remove_file(self.path(file)).unwrap();
    }

    fn reload(&self) -> ReloadReport {
        self.registry.load_manifests(self.skills.path()).unwrap()
    }

    /// Closes the registry and its store, and opens them again from disk, as a restart would.
    fn reopen(self) -> Fixture {
        let Fixture {
            data,
            skills,
            registry,
        } = self;
        drop(registry);
        let registry = open(data.path());
        Fixture {
            data,
            skills,
            registry,
        }
    }
}

fn open(data: &Path) -> Registry {
    let store = Store::open(StoreConfig::new(data)).unwrap();
    Registry::open(store, builtin_handlers(&BuiltinConfig::default())).unwrap()
}

/// A manifest over `echo` whose input needs a string `ref`.
fn build_manifest(description: &str) -> String {
    format!(
        r#"name = "build"
description = "{description}"
handler = "echo"

[defaults]
max_attempts = 2

[input_schema]
type = "object"
required = ["ref"]
properties.ref = {{ type = "string", minLength = 1 }}
"#
    )
}

const TEST: &str = r#"
name = "test"
description = "Run the tests"
handler = "echo"
"#;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The field a refused input names.
fn refused_field(registry: &Registry, type_name: &str, input: serde_json::Value) -> String {
    match registry.validate_input(type_name, &input) {
        Err(RegistryError::Input(e)) => e.field,
        Err(other) => panic!("{input}: {other}"),
        Ok(_) => panic!("{input} was accepted"),
    }
}

#[test]
fn added_then_changed_then_removed() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.write("test.toml", TEST);
    fx.write("README.md", "not a manifest");

    let report = fx.reload();
    assert_eq!(report.added, names(&["build", "test"]), "{report:?}");
    assert!(report.changed.is_empty() && report.removed.is_empty() && report.errors.is_empty());

    let build = fx.registry.get("build").unwrap();
    assert_eq!(build.handler, "echo");
    assert_eq!(build.description, "Build it");
    assert!(build.enabled);
    assert_eq!(build.defaults.max_attempts, 2);
    assert_eq!(
        build.source.manifest_path(),
        Some(fx.path("build.toml").to_str().unwrap())
    );
    // Input is validated against the manifest's schema.
    fx.registry
        .validate_input("build", &json!({"ref": "main"}))
        .unwrap();
    assert_eq!(
        refused_field(&fx.registry, "build", json!({"ref": 7})),
        "input.ref"
    );
    assert_eq!(refused_field(&fx.registry, "build", json!({})), "input.ref");

    // Read again with nothing changed: nothing is rewritten.
    let report = fx.reload();
    assert_eq!(report.unchanged, names(&["build", "test"]), "{report:?}");
    assert_eq!(fx.registry.get("build").unwrap(), build);

    // One file changes.
    fx.write(
        "test.toml",
        &TEST.replace("Run the tests", "Run every test"),
    );
    let report = fx.reload();
    assert_eq!(report.changed, names(&["test"]), "{report:?}");
    assert_eq!(report.unchanged, names(&["build"]));
    let test = fx.registry.get("test").unwrap();
    assert_eq!(test.description, "Run every test");
    assert!(test.updated_at >= test.created_at);

    // One file goes away: its type is removed from the registry and the store.
    fx.remove("test.toml");
    let report = fx.reload();
    assert_eq!(report.removed, names(&["test"]), "{report:?}");
    assert_eq!(report.unchanged, names(&["build"]));
    assert!(fx.registry.get("test").is_none());
    assert!(matches!(
        fx.registry.validate_input("test", &json!({})),
        Err(RegistryError::UnknownType { .. })
    ));

    // What the store holds after a restart matches; applying the same files again changes
    // nothing.
    let fx = fx.reopen();
    assert!(fx.registry.get("test").is_none());
    assert_eq!(fx.registry.get("build").unwrap(), build);
    let report = fx.reload();
    assert_eq!(report.unchanged, names(&["build"]), "{report:?}");
    assert!(report.added.is_empty() && report.removed.is_empty());
}

#[test]
fn a_broken_file_keeps_the_previous_version_in_force() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    let before = fx.registry.get("build").unwrap();

    // A syntax error on line 3 (and a new schema that must not take effect).
    let broken = build_manifest("Build it")
        .replace("handler = \"echo\"", "handler = echo")
        .replace("required = [\"ref\"]", "required = [\"ref\", \"env\"]");
    fx.write("build.toml", &broken);
    let report = fx.reload();
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.path, fx.path("build.toml"));
    assert_eq!((e.line, e.column), (Some(3), Some(11)), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3:11: ", fx.path("build.toml").display())),
        "{e}"
    );
    assert!(
        report.removed.is_empty() && report.changed.is_empty(),
        "{report:?}"
    );
    assert_eq!(fx.registry.get("build").unwrap(), before);
    // The old schema is the one enforced: `env` is not required, `ref` is.
    fx.registry
        .validate_input("build", &json!({"ref": "main"}))
        .unwrap();
    assert_eq!(refused_field(&fx.registry, "build", json!({})), "input.ref");

    // Another file may not take the name while the broken file still owns it.
    fx.write("ci.toml", &build_manifest("Build it elsewhere"));
    let report = fx.reload();
    // Errors come sorted by path: `build.toml` (still broken), then `ci.toml`.
    assert_eq!(report.errors.len(), 2, "{report:?}");
    assert_eq!(report.errors[0].path, fx.path("build.toml"));
    let taken = &report.errors[1];
    assert_eq!(taken.path, fx.path("ci.toml"));
    assert_eq!(taken.line, Some(1));
    assert!(taken.message.contains("which has errors"), "{taken}");
    assert_eq!(fx.registry.get("build").unwrap(), before);

    // Fixed, the new version applies.
    fx.remove("ci.toml");
    fx.write(
        "build.toml",
        &broken.replace("handler = echo", "handler = \"echo\""),
    );
    let report = fx.reload();
    assert_eq!(report.changed, names(&["build"]), "{report:?}");
    assert_eq!(
        refused_field(&fx.registry, "build", json!({"ref": "main"})),
        "input.env"
    );
}

#[test]
fn a_file_with_a_semantic_error_keeps_its_previous_version_too() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    let before = fx.registry.get("build").unwrap();
    fx.write(
        "build.toml",
        &build_manifest("Build it").replace("max_attempts = 2", "max_attempts = 0"),
    );
    let report = fx.reload();
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.line, Some(6), "{e}");
    assert!(
        e.message
            .starts_with("defaults.max_attempts: 0 is out of range"),
        "{e}"
    );
    assert!(report.removed.is_empty());
    assert_eq!(fx.registry.get("build").unwrap(), before);
}

#[test]
fn an_unknown_handler_is_an_error_at_its_line() {
    let fx = Fixture::new();
    fx.write(
        "deploy.toml",
        "name = \"deploy\"\ndescription = \"Deploy\"\n\nhandler = \"shell.exe\"\n",
    );
    let report = fx.reload();
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.path, fx.path("deploy.toml"));
    assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
    assert!(e.message.contains("unknown handler `shell.exe`"), "{e}");
    assert!(e.message.contains("shell.exec"), "lists the handlers: {e}");
    assert!(report.added.is_empty());
    assert!(fx.registry.get("deploy").is_none());
}

#[test]
fn an_unsupported_schema_keyword_is_an_error_at_its_line() {
    let fx = Fixture::new();
    fx.write(
        "build.toml",
        &build_manifest("Build it").replace(
            "properties.ref = { type = \"string\", minLength = 1 }",
            "properties.ref = { type = \"string\", minLength = 1 }\nproperties.env = { format = \"hostname\" }",
        ),
    );
    let report = fx.reload();
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!((e.line, e.column), (Some(12), Some(20)), "{e}");
    assert!(
        e.message
            .starts_with("input_schema.properties.env.format: `format` is not supported"),
        "{e}"
    );
    assert!(fx.registry.get("build").is_none());
}

#[test]
fn a_name_defined_by_two_files_goes_to_the_first() {
    let fx = Fixture::new();
    fx.write("a.toml", TEST);
    fx.write("b.toml", &TEST.replace("Run the tests", "Also the tests"));
    let report = fx.reload();
    assert_eq!(report.added, names(&["test"]), "{report:?}");
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.path, fx.path("b.toml"));
    assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
    assert!(e.message.contains("already defined by"), "{e}");
    let test = fx.registry.get("test").unwrap();
    assert_eq!(test.description, "Run the tests");
    assert_eq!(
        test.source.manifest_path(),
        Some(fx.path("a.toml").to_str().unwrap())
    );
}

#[test]
fn a_manifest_cannot_replace_a_builtin_or_api_type() {
    let fx = Fixture::new();
    let echo = fx.registry.get("echo").unwrap();
    fx.registry
        .create(
            serde_json::from_value::<JobTypeSpec>(json!({"name": "mine", "handler": "sleep"}))
                .unwrap(),
        )
        .unwrap();
    let mine = fx.registry.get("mine").unwrap();
    fx.write(
        "echo.toml",
        "name = \"echo\"\ndescription = \"Not the echo\"\nhandler = \"sleep\"\n",
    );
    fx.write(
        "mine.toml",
        "description = \"Mine\"\nhandler = \"echo\"\nname = \"mine\"\n",
    );
    let report = fx.reload();
    assert!(report.added.is_empty() && report.changed.is_empty());
    let [echo_err, mine_err] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(echo_err.path, fx.path("echo.toml"));
    assert_eq!(echo_err.line, Some(1));
    assert!(echo_err.message.contains("is built in"), "{echo_err}");
    assert_eq!(mine_err.line, Some(3));
    assert!(
        mine_err.message.contains("created through the API"),
        "{mine_err}"
    );
    assert_eq!(fx.registry.get("echo").unwrap(), echo);
    assert_eq!(
        fx.registry.get("echo").unwrap().source,
        JobTypeSource::Builtin
    );
    assert_eq!(fx.registry.get("mine").unwrap(), mine);

    // The failing files own nothing, so removing them removes nothing.
    fx.remove("echo.toml");
    fx.remove("mine.toml");
    let report = fx.reload();
    assert_eq!(report, ReloadReport::default());
    assert!(fx.registry.get("echo").is_some() && fx.registry.get("mine").is_some());
}

#[test]
fn policy_comes_from_the_manifest() {
    let fx = Fixture::new();
    fx.write(
        "deploy.toml",
        r#"name = "deploy"
description = "Deploy"
handler = "echo"

[policy]
risk = "deploy"
approval = { channels = ["github"] }
channels = ["github", "local"]
"#,
    );
    let report = fx.reload();
    assert_eq!(report.added, names(&["deploy"]), "{report:?}");
    let policy = fx.registry.get("deploy").unwrap().policy;
    assert_eq!(policy.risk, store::Risk::Deploy);
    assert_eq!(policy.approval, Approval::Channels(vec!["github".into()]));
    assert_eq!(policy.decide("github"), PolicyDecision::RequireApproval);
    assert_eq!(policy.decide("local"), PolicyDecision::Allow);
    assert!(matches!(
        policy.decide("rest"),
        PolicyDecision::Forbid { .. }
    ));
}

#[test]
fn operator_changes_last_until_the_manifest_changes() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    fx.registry
        .patch(
            "build",
            JobTypePatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();

    let report = fx.reload();
    assert_eq!(report.unchanged, names(&["build"]), "{report:?}");
    assert!(!fx.registry.get("build").unwrap().enabled);
    assert!(matches!(
        fx.registry.validate_input("build", &json!({"ref": "main"})),
        Err(RegistryError::Disabled(_))
    ));

    fx.write("build.toml", &build_manifest("Build it, again"));
    let report = fx.reload();
    assert_eq!(report.changed, names(&["build"]), "{report:?}");
    let build = fx.registry.get("build").unwrap();
    assert!(
        build.enabled,
        "the changed manifest says enabled (by default)"
    );
    assert_eq!(build.description, "Build it, again");
}

#[test]
fn moving_a_definition_to_another_file_changes_it() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    let created_at = fx.registry.get("build").unwrap().created_at;
    fs::rename(fx.path("build.toml"), fx.path("ci.toml")).unwrap();
    let report = fx.reload();
    assert_eq!(report.changed, names(&["build"]), "{report:?}");
    assert!(report.removed.is_empty());
    let build = fx.registry.get("build").unwrap();
    assert_eq!(
        build.source.manifest_path(),
        Some(fx.path("ci.toml").to_str().unwrap())
    );
    assert_eq!(build.created_at, created_at);
}

#[test]
fn a_file_renaming_its_type_adds_one_and_removes_the_other() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    fx.write(
        "build.toml",
        &build_manifest("Build it").replace("name = \"build\"", "name = \"compile\""),
    );
    let report = fx.reload();
    assert_eq!(report.added, names(&["compile"]), "{report:?}");
    assert_eq!(report.removed, names(&["build"]));
}

#[test]
fn an_unreadable_directory_removes_nothing() {
    let fx = Fixture::new();
    fx.write("build.toml", &build_manifest("Build it"));
    fx.reload();
    let dir = fx.skills.path().to_owned();
    let moved = dir.with_extension("moved");
    fs::rename(&dir, &moved).unwrap();
    let report = fx.registry.load_manifests(&dir).unwrap();
    fs::rename(&moved, &dir).unwrap();
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.path, dir);
    assert_eq!(e.line, None);
    assert!(
        e.message.contains("cannot read the skills directory"),
        "{e}"
    );
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(fx.registry.get("build").is_some());

    // Once it is back, all is as before.
    let report = fx.reload();
    assert_eq!(report.unchanged, names(&["build"]), "{report:?}");
}

#[test]
fn an_empty_directory_is_fine() {
    let fx = Fixture::new();
    assert_eq!(fx.reload(), ReloadReport::default());
    let before = fx.registry.list();
    assert_eq!(fx.reload(), ReloadReport::default());
    assert_eq!(fx.registry.list(), before);
}
