//! Skill manifests: job types defined by TOML files in a directory (`RAUSKU_SKILLS_DIR`).
//!
//! Each `*.toml` file directly in the directory defines one job type. Files are read in file
//! name order, subdirectories and files with another extension are ignored, and an empty
//! directory defines nothing. Unknown keys are an error at every level.
//!
//! ```toml
//! name = "build"                       # required; 1–64 of a-z 0-9 . _ -, starting with a letter
//! description = "Build the sample project"  # required; at most 1024 characters
//! handler = "shell.exec"               # required; an existing handler
//! enabled = true                       # optional, default true
//!
//! [config]                             # optional: fixed handler config, handed to every job
//! argv = ["cargo", "build"]            #   (any TOML table; it becomes the JSON object)
//!
//! [defaults]                           # optional; missing fields fall back to the handler's
//! max_attempts = 2                     #   1–100
//! timeout_ms = 600000                  #   1–86400000 (24 h)
//! concurrency = 1                      #   1–10000; absent: only the global limit applies
//!
//! [input_schema]                       # optional: a JSON Schema the input must match
//! type = "object"                      #   (the subset in `skills::schema`; anything it
//! required = ["ref"]                   #   cannot enforce is refused)
//! properties.ref = { type = "string", minLength = 1 }
//!
//! [policy]                             # optional
//! risk = "write"                       #   "read" (default) | "write" | "deploy"
//! approval = { channels = ["github"] } #   "never" (default) | "always" | { channels = [...] }
//! channels = ["local", "rest", "github"]  # channels that may invoke it; absent or [] = all
//! ```
//!
//! TOML has no `null`, and its dates and times have no JSON form: a date in `config` or
//! `input_schema` is an error (quote it as a string).
//!
//! [`load_dir`] reads a directory into a [`ManifestSet`]: the manifests that parsed and passed
//! the checks that need no registry (name, description, defaults ranges, input schema, a name
//! defined by one file only — the first file in name order keeps it), and a [`ManifestError`]
//! per file that did not, with the line and column of the problem (`skills/build.toml:3:10:
//! …`). [`Registry::apply_manifests`](crate::Registry::apply_manifests) then checks what needs
//! the registry (the handler exists, the name is not a built-in or API-created type) and
//! brings the stored job types in line with the set, returning a [`ReloadReport`]; its doc
//! states the reload rules. `skills/MANIFESTS.md` is the same for operators.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value, json};
use sha2::{Digest, Sha256};
use store::Policy;
use toml::de::{DeTable, DeValue};

use crate::registry::{DefaultsPatch, JobTypeSpec, RegistryError, check_spec};

/// A directory of manifests as read by [`load_dir`].
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    /// The directory read.
    pub dir: PathBuf,
    /// The files that parsed and passed the checks that need no registry, in file name order;
    /// no two define the same name.
    pub manifests: Vec<Manifest>,
    /// One per file that did not (or one for the directory, if it could not be read).
    pub errors: Vec<ManifestError>,
}

/// One parsed manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from (the directory given to [`load_dir`] joined with its name).
    pub path: PathBuf,
    /// The job type it defines, as `POST /v1/job-types` would take it.
    pub spec: JobTypeSpec,
    /// SHA-256 (hex) of the definition, normalised (key order, comments and defaults left out
    /// make no difference): tells a changed manifest from one merely read again.
    pub digest: String,
    /// The file's text, to point errors found later (an unknown handler) at a line.
    text: String,
}

impl ManifestSet {
    /// Whether the directory itself could not be read (or listed), so the set may be missing
    /// files that are there: a reload then removes nothing.
    pub fn dir_failed(&self) -> bool {
        self.errors.iter().any(|e| e.path == self.dir)
    }
}

impl Manifest {
    /// The job type's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// An error about this file, pointing at `field` (a dotted path such as `handler` or
    /// `input_schema.properties.ref`) if the file has it.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::at(&self.path, &self.text, locate(&self.text, field), message)
    }

    /// A registry's refusal of this manifest, pointing at the field it names.
    pub(crate) fn registry_error(&self, e: &RegistryError) -> ManifestError {
        let field = match e {
            RegistryError::Invalid { field, .. } => field.as_str(),
            RegistryError::Input(e) => e.field.as_str(),
            RegistryError::UnknownHandler { .. } => "handler",
            _ => "name",
        };
        self.error(field, e.to_string())
    }
}

/// Why a manifest file (or the directory) could not be applied. Displays as
/// `path:line:column: message`, the form editors and terminals link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ManifestError {
    /// The file (or the directory, when it could not be read).
    #[serde(serialize_with = "display_path")]
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// 1-based line of the problem, when it has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the problem, when it has a place in the file.
    pub column: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

fn display_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}

impl ManifestError {
    /// An error about `path` as a whole (unreadable, missing).
    pub fn file(path: &Path, message: impl Into<String>) -> ManifestError {
        ManifestError {
            path: path.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error at byte offset `span.start` of `text` (the whole file if `span` is `None`).
    fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ManifestError {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ManifestError {
            path: path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// What a reload of the skill manifests did. Every list is sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Job types a manifest defines that did not exist before.
    pub added: Vec<String>,
    /// Job types rewritten from their manifest because it changed (or moved to another file).
    pub changed: Vec<String>,
    /// Job types removed because no manifest defines them any more.
    pub removed: Vec<String>,
    /// Job types whose manifest is as last applied; left as stored, operator changes included.
    pub unchanged: Vec<String>,
    /// Files (or the directory) that could not be applied, sorted by path; whatever a failing
    /// file defined before stays in force as it was.
    pub errors: Vec<ManifestError>,
}

/// A manifest file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    description: String,
    handler: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    defaults: Option<DefaultsPatch>,
    #[serde(default)]
    input_schema: Option<toml::Value>,
    #[serde(default)]
    policy: Option<Policy>,
}

/// Reads every `*.toml` file directly in `dir`, in file name order. A directory that cannot be
/// read is one error naming it; an empty one is an empty set.
pub fn load_dir(dir: &Path) -> ManifestSet {
    let mut set = ManifestSet {
        dir: dir.to_owned(),
        ..ManifestSet::default()
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            set.errors.push(ManifestError::file(
                dir,
                format!(
                    "cannot read the skills directory ({e}); create it, or point \
                     RAUSKU_SKILLS_DIR at the directory that holds the manifests"
                ),
            ));
            return set;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "toml") && !path.is_dir() {
                    paths.push(path);
                }
            }
            Err(e) => set.errors.push(ManifestError::file(
                dir,
                format!("cannot list the skills directory ({e}); check its permissions"),
            )),
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let mut defined_by: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                set.errors.push(ManifestError::file(
                    &path,
                    format!("cannot read the manifest ({e}); it must be a readable UTF-8 file"),
                ));
                continue;
            }
        };
        match parse(&path, &text) {
            Ok(manifest) => match defined_by.get(manifest.name()) {
                Some(first) => set.errors.push(manifest.error(
                    "name",
                    format!(
                        "job type `{}` is already defined by {}; a job type comes from one \
                         manifest only, so rename it here or remove one of the two",
                        manifest.name(),
                        first.display()
                    ),
                )),
                None => {
                    defined_by.insert(manifest.name().to_owned(), path.clone());
                    set.manifests.push(manifest);
                }
            },
            Err(e) => set.errors.push(e),
        }
    }
    set
}

/// Parses one manifest's `text` (read from `path`) and makes the checks that need no registry.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text)
        .map_err(|e| ManifestError::at(path, text, e.span(), e.message().trim_end().to_owned()))?;
    let located =
        |field: &str, message: String| ManifestError::at(path, text, locate(text, field), message);
    let config = raw
        .config
        .map(|table| to_json(toml::Value::Table(table), "config"))
        .transpose()
        .map_err(|(field, message)| located(&field, message))?;
    let input_schema = raw
        .input_schema
        .map(|value| to_json(value, "input_schema"))
        .transpose()
        .map_err(|(field, message)| located(&field, message))?;
    let spec = JobTypeSpec {
        name: raw.name,
        description: Some(raw.description),
        handler: raw.handler,
        config,
        defaults: raw.defaults,
        input_schema,
        policy: raw.policy,
        enabled: raw.enabled,
    };
    let manifest = Manifest {
        path: path.to_owned(),
        digest: digest(&spec),
        spec,
        text: text.to_owned(),
    };
    check_spec(&manifest.spec).map_err(|e| manifest.registry_error(&e))?;
    Ok(manifest)
}

/// SHA-256 of the definition as normalised JSON (object keys sorted, defaults filled in).
fn digest(spec: &JobTypeSpec) -> String {
    let defaults = spec.defaults.clone().unwrap_or_default();
    let normalised = json!({
        "name": spec.name,
        "description": spec.description,
        "handler": spec.handler,
        "enabled": spec.enabled.unwrap_or(true),
        "config": spec.config,
        "defaults": {
            "max_attempts": defaults.max_attempts,
            "timeout_ms": defaults.timeout_ms,
            "concurrency": defaults.concurrency.flatten(),
        },
        "input_schema": spec.input_schema,
        "policy": spec.policy.clone().unwrap_or_default(),
    });
    let bytes = serde_json::to_vec(&normalised).expect("JSON values serialise");
    hex::encode(Sha256::digest(&bytes))
}

/// A TOML value as JSON; `Err((field, message))` for what JSON cannot hold.
fn to_json(value: toml::Value, field: &str) -> Result<Value, (String, String)> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::Number(i.into()),
        toml::Value::Float(f) => match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => {
                return Err((
                    field.to_owned(),
                    format!("{field}: {f} has no JSON form; use a finite number"),
                ));
            }
        },
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => {
            return Err((
                field.to_owned(),
                format!("{field}: the TOML date/time {d} has no JSON form; quote it as a string"),
            ));
        }
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{field}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| {
                    let value = to_json(v, &format!("{field}.{k}"))?;
                    Ok::<_, (String, String)>((k, value))
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
    })
}

/// The span of the deepest part of `field` (a dotted path: `defaults.timeout_ms`,
/// `input_schema.properties.ref.pattern`, `config.argv.2`) that `text` has: the key of a table
/// entry, the item of an array. `None` if not even the first part is there (or the text does
/// not parse).
fn locate(text: &str, field: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let parts: Vec<&str> = field.split('.').collect();
    let mut found = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array = None;
    let mut i = 0;
    while i < parts.len() {
        let (span, value) = if let Some(t) = table {
            // A key may itself contain dots (`properties."a.b"`): try the longest match first.
            let Some((taken, key, value)) = (i + 1..=parts.len()).rev().find_map(|end| {
                let key = parts[i..end].join(".");
                t.get_key_value(key.as_str()).map(|(k, v)| (end - i, k, v))
            }) else {
                break;
            };
            i += taken;
            (key.span(), value)
        } else if let Some(items) = array {
            let items: &[toml::Spanned<DeValue<'_>>] = items;
            let Some(item) = parts[i].parse::<usize>().ok().and_then(|n| items.get(n)) else {
                break;
            };
            i += 1;
            (item.span(), item)
        } else {
            break;
        };
        found = Some(span);
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(&**a),
            _ => {}
        }
    }
    found
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use store::Approval;
    use tempfile::TempDir;

    use super::*;

    const GOOD: &str = r#"
name = "build"
description = "Build the sample project"
handler = "shell.exec"

[config]
argv = ["cargo", "build"]

[defaults]
max_attempts = 2

[input_schema]
type = "object"
required = ["ref"]
properties.ref = { type = "string", minLength = 1 }

[policy]
risk = "write"
approval = { channels = ["github"] }
channels = ["local", "github"]
"#;

    fn parse_text(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("skills/x.toml"), text)
    }

    /// The error for `text`, with its position and message.
    fn error(text: &str) -> (Option<usize>, Option<usize>, String) {
        let e = parse_text(text).expect_err("the manifest should be refused");
        assert_eq!(e.path, Path::new("skills/x.toml"));
        (e.line, e.column, e.message)
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "ab\ncdé\n\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 2), (1, 3));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 5), (2, 3));
        // After the two-byte `é`: column counts characters, not bytes.
        assert_eq!(line_col(text, 7), (2, 4));
        // Inside `é` rounds down; past the end clamps.
        assert_eq!(line_col(text, 6), (2, 3));
        assert_eq!(line_col(text, 9), (4, 1));
        assert_eq!(line_col(text, 100), (4, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }

    #[test]
    fn parses_every_section() {
        let m = parse_text(GOOD).unwrap();
        assert_eq!(m.name(), "build");
        assert_eq!(m.spec.handler, "shell.exec");
        assert_eq!(
            m.spec.description.as_deref(),
            Some("Build the sample project")
        );
        assert_eq!(m.spec.enabled, None);
        assert_eq!(m.spec.config, Some(json!({"argv": ["cargo", "build"]})));
        assert_eq!(m.spec.defaults.as_ref().unwrap().max_attempts, Some(2));
        assert_eq!(
            m.spec.input_schema,
            Some(json!({
                "type": "object",
                "required": ["ref"],
                "properties": {"ref": {"type": "string", "minLength": 1}},
            }))
        );
        let policy = m.spec.policy.clone().unwrap();
        assert_eq!(policy.risk, store::Risk::Write);
        assert_eq!(policy.approval, Approval::Channels(vec!["github".into()]));
        assert_eq!(policy.channels, ["local", "github"]);
        assert_eq!(m.digest.len(), 64);
    }

    #[test]
    fn approval_words() {
        for (toml, approval) in [
            (r#"approval = "never""#, Approval::Never),
            (r#"approval = "always""#, Approval::Always),
            (
                r#"approval = { channels = ["rest", "console"] }"#,
                Approval::Channels(vec!["rest".into(), "console".into()]),
            ),
        ] {
            let text =
                format!("name = \"a\"\ndescription = \"\"\nhandler = \"echo\"\n[policy]\n{toml}\n");
            let m = parse_text(&text).unwrap();
            assert_eq!(m.spec.policy.unwrap().approval, approval, "{toml}");
        }
        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"\"\nhandler = \"echo\"\n[policy]\napproval = \"sometimes\"\n",
        );
        assert_eq!(line, Some(5), "{message}");
        assert!(message.contains("sometimes"), "{message}");
    }

    #[test]
    fn the_digest_ignores_layout_and_spelled_out_defaults() {
        let a = parse_text(GOOD).unwrap();
        let reordered = GOOD
            .replace(
                "[policy]\nrisk = \"write\"\n",
                "# a comment\n[policy]\nrisk = \"write\"\n",
            )
            .replace(
                "required = [\"ref\"]\nproperties.ref = { type = \"string\", minLength = 1 }",
                "properties.ref = { minLength = 1, type = \"string\" }\nrequired = [\"ref\"]",
            )
            .replace(
                "handler = \"shell.exec\"\n",
                "handler = \"shell.exec\"\nenabled = true\n",
            );
        assert_ne!(reordered, GOOD);
        assert_eq!(parse_text(&reordered).unwrap().digest, a.digest);
        let changed = GOOD.replace("max_attempts = 2", "max_attempts = 3");
        assert_ne!(parse_text(&changed).unwrap().digest, a.digest);
        let disabled = GOOD.replace(
            "handler = \"shell.exec\"\n",
            "handler = \"shell.exec\"\nenabled = false\n",
        );
        assert_ne!(parse_text(&disabled).unwrap().digest, a.digest);
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let (line, column, message) = error("name = \"a\"\ndescription = \"d\"\nhandler = echo\n");
        assert_eq!((line, column), (Some(3), Some(11)), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");

        let (line, _, message) = error("name = \"a\"\n\n[defaults\nmax_attempts = 1\n");
        assert_eq!(line, Some(3), "{message}");
    }

    #[test]
    fn unknown_and_missing_keys() {
        let (line, column, message) =
            error("name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\nhandlr = \"echo\"\n");
        assert_eq!((line, column), (Some(4), Some(1)), "{message}");
        assert!(message.contains("unknown field `handlr`"), "{message}");

        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[defaults]\nretries = 3\n",
        );
        assert_eq!(line, Some(5), "{message}");
        assert!(message.contains("retries"), "{message}");

        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[policy]\nrisky = \"read\"\n",
        );
        assert_eq!(line, Some(5), "{message}");

        let (_, _, message) = error("name = \"a\"\nhandler = \"echo\"\n");
        assert!(message.contains("missing field `description`"), "{message}");
    }

    #[test]
    fn bad_names_point_at_the_name() {
        let (line, column, message) =
            error("description = \"d\"\nhandler = \"echo\"\nname = \"Build It\"\n");
        assert_eq!((line, column), (Some(3), Some(1)), "{message}");
        assert!(
            message.starts_with("name: `Build It` does not start with a lowercase letter"),
            "{message}"
        );
    }

    #[test]
    fn bad_defaults_point_at_the_field() {
        let (line, column, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n\n[defaults]\nmax_attempts = 1\n  timeout_ms = 0\n",
        );
        assert_eq!((line, column), (Some(7), Some(3)), "{message}");
        assert!(
            message.starts_with("defaults.timeout_ms: 0 is out of range"),
            "{message}"
        );
        // A negative number is a type error from TOML, with its span.
        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[defaults]\nmax_attempts = -1\n",
        );
        assert_eq!(line, Some(5), "{message}");
    }

    #[test]
    fn bad_schemas_point_at_the_keyword() {
        let (line, column, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n\n[input_schema]\ntype = \"object\"\n\n[input_schema.properties.ref]\ntype = \"string\"\npattern = \"^v\"\n",
        );
        assert_eq!((line, column), (Some(10), Some(1)), "{message}");
        assert!(
            message.starts_with("input_schema.properties.ref.pattern: `pattern` is not supported"),
            "{message}"
        );
        // Inline tables and dotted keys are located as well.
        let (line, column, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[input_schema]\nproperties.n = { type = \"integer\", minimum = \"1\" }\n",
        );
        assert_eq!((line, column), (Some(5), Some(36)), "{message}");
        assert!(message.contains("expected a number"), "{message}");
        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[input_schema]\ntype = \"object\"\nrequired = [\"a\", \"a\"]\n",
        );
        assert_eq!(line, Some(6), "{message}");
        assert!(message.contains("listed twice"), "{message}");
    }

    #[test]
    fn dates_and_odd_floats_have_no_json_form() {
        let (line, column, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[config]\nlist = [1, 1979-05-27]\n",
        );
        assert_eq!((line, column), (Some(5), Some(12)), "{message}");
        assert!(
            message.starts_with("config.list.1: the TOML date/time"),
            "{message}"
        );
        let (line, _, message) = error(
            "name = \"a\"\ndescription = \"d\"\nhandler = \"echo\"\n[input_schema]\nmaximum = inf\n",
        );
        assert_eq!(line, Some(5), "{message}");
        assert!(message.contains("finite"), "{message}");
    }

    #[test]
    fn locate_finds_the_deepest_part_present() {
        let text = "a = 1\n[t]\nx.\"y.z\" = [10, { q = 2 }]\n";
        let at = |field: &str| locate(text, field).map(|span| line_col(text, span.start));
        assert_eq!(at("a"), Some((1, 1)));
        assert_eq!(at("t"), Some((2, 2)));
        assert_eq!(at("t.x"), Some((3, 1)));
        assert_eq!(at("t.x.y.z"), Some((3, 3)));
        assert_eq!(at("t.x.y.z.1"), Some((3, 16)));
        assert_eq!(at("t.x.y.z.1.q"), Some((3, 18)));
        assert_eq!(at("t.x.y.z.7"), Some((3, 3)));
        assert_eq!(at("t.nope"), Some((2, 2)));
        assert_eq!(at("nope"), None);
        assert_eq!(locate("a = ", "a"), None);
    }

    #[test]
    fn display_is_path_line_column_message() {
        let e = ManifestError {
            path: "skills/build.toml".into(),
            line: Some(3),
            column: Some(10),
            message: "unknown handler".into(),
        };
        assert_eq!(e.to_string(), "skills/build.toml:3:10: unknown handler");
        let e = ManifestError::file(Path::new("skills"), "cannot read");
        assert_eq!(e.to_string(), "skills: cannot read");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"path": "skills", "line": null, "column": null, "message": "cannot read"})
        );
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order() {
        let dir = TempDir::new().unwrap();
        let write = |name: &str, manifest_name: &str| {
            fs::write(
                dir.path().join(name),
                format!("name = \"{manifest_name}\"\ndescription = \"d\"\nhandler = \"echo\"\n"),
            )
            .unwrap();
        };
        write("b.toml", "bee");
        write("a.toml", "ay");
        write("notes.txt", "ignored");
        write("c.toml.bak", "ignored");
        fs::create_dir(dir.path().join("sub.toml")).unwrap();
        fs::write(dir.path().join("sub.toml/d.toml"), "not = \"read\"").unwrap();
        let set = load_dir(dir.path());
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let names: Vec<_> = set.manifests.iter().map(Manifest::name).collect();
        assert_eq!(names, ["ay", "bee"]);
        assert_eq!(set.manifests[0].path, dir.path().join("a.toml"));
    }

    #[test]
    fn load_dir_refuses_a_name_defined_twice() {
        let dir = TempDir::new().unwrap();
        for file in ["one.toml", "two.toml"] {
            fs::write(
                dir.path().join(file),
                "description = \"d\"\nhandler = \"echo\"\nname = \"same\"\n",
            )
            .unwrap();
        }
        let set = load_dir(dir.path());
        assert_eq!(set.manifests.len(), 1);
        assert_eq!(set.manifests[0].path, dir.path().join("one.toml"));
        let [e] = &set.errors[..] else {
            panic!("{:?}", set.errors)
        };
        assert_eq!(e.path, dir.path().join("two.toml"));
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
        assert!(e.message.contains("already defined by"), "{e}");
        assert!(e.message.contains("one.toml"), "{e}");
    }

    #[test]
    fn load_dir_of_a_missing_or_empty_directory() {
        let dir = TempDir::new().unwrap();
        let set = load_dir(dir.path());
        assert!(set.manifests.is_empty() && set.errors.is_empty());

        let missing = dir.path().join("nope");
        let set = load_dir(&missing);
        let [e] = &set.errors[..] else {
            panic!("{:?}", set.errors)
        };
        assert_eq!(e.path, missing);
        assert!(
            e.message.contains("cannot read the skills directory"),
            "{e}"
        );
        assert!(e.to_string().starts_with(&missing.display().to_string()));
    }

    #[test]
    fn load_dir_reports_unreadable_files() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("bin.toml"), [0xff, 0xfe, 0x00]).unwrap();
        let set = load_dir(dir.path());
        let [e] = &set.errors[..] else {
            panic!("{:?}", set.errors)
        };
        assert_eq!(e.path, dir.path().join("bin.toml"));
        assert!(e.message.contains("UTF-8"), "{e}");
    }
}
