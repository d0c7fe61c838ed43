//! Templates in playbooks: [minijinja] with one shared environment.
//!
//! Every string in a step's `input`, a step's `reply` and the playbook's `[reply]` texts is a
//! minijinja template; a step's `when` is a minijinja *expression*. Three ways to evaluate:
//!
//! - [`Templates::render_value`] (step inputs): a string that is exactly one expression,
//!   `"{{ x }}"`, yields the expression's value as JSON (a number stays a number, an object
//!   passes through); any other template yields the rendered string; a string without template
//!   syntax is taken as it is.
//! - [`Templates::render_string`] (replies): always the rendered string.
//! - [`Templates::condition`] (`when`): the truthiness of an expression, written bare
//!   (`steps.build.output.changed`) or wrapped (`{{ steps.build.output.changed }}`).
//!
//! Undefined values: the environment is [`UndefinedBehavior::SemiStrict`]. Printing an undefined
//! value, iterating over it or looking an attribute up on it is an error (so a typo such as
//! `{{ match.evn }}` fails the run instead of sending an empty string to a deploy), while
//! `| default(...)`, `is defined` and `{% if x %}` work on undefined values as usual. A whole
//! expression evaluating to undefined (`"{{ match.evn }}"`) is an error too.
//!
//! Besides minijinja's builtins there is a `tojson` filter (`{{ steps.build.output | tojson }}`,
//! `tojson(2)` indents), since minijinja's own needs a feature this workspace does not enable,
//! and its reverse, `fromjson`, which parses a string as JSON: a script run by `shell.exec` can
//! print a JSON object on its last line and later steps read its fields
//! (`{{ (steps.build.output.stdout | trim | lines | last | fromjson).artifact }}`). A string
//! that is not JSON is an error naming what it got.
//!
//! Layout: [`Templates`] (the environment and the three evaluations), [`TemplateError`],
//! [`split_expression`] (tells a whole-expression string from a template).

use std::sync::LazyLock;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// The environment every playbook template is evaluated in (it holds no templates, only
/// settings and filters, so one is enough for the process).
pub fn templates() -> &'static Templates {
    static TEMPLATES: LazyLock<Templates> = LazyLock::new(Templates::new);
    &TEMPLATES
}

/// The minijinja environment and the ways playbooks evaluate templates with it.
pub struct Templates {
    /// Semi-strict undefined behaviour, the `tojson` filter; no loader (templates are strings).
    env: Environment<'static>,
}

/// Why a template could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What went wrong, without minijinja's `(in <string>:N)` suffix.
    pub message: String,
    /// The 1-based line inside the template, when minijinja knows it.
    pub line: Option<usize>,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(line) = self.line.filter(|&l| l > 1) {
            write!(f, " (line {line} of the template)")?;
        }
        Ok(())
    }
}

impl From<Error> for TemplateError {
    fn from(err: Error) -> Self {
        let mut message = match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.kind().to_string(),
        };
        if err.kind() == ErrorKind::UndefinedError {
            message.push_str(
                " (a name or attribute that does not exist; check its spelling, or give a \
                 fallback with `| default(...)`)",
            );
        }
        TemplateError {
            message,
            line: err.line(),
        }
    }
}

/// `Some(expr)` when `src` (trimmed) is exactly one `{{ expr }}` and nothing else, so it can be
/// evaluated to a value rather than rendered to a string.
pub fn split_expression(src: &str) -> Option<&str> {
    let inner = src.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    Some(inner.trim())
}

/// Whether `src` uses template syntax at all (a string without it is taken literally).
pub fn is_template(src: &str) -> bool {
    src.contains("{{") || src.contains("{%") || src.contains("{#")
}

impl Templates {
    fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.add_filter("tojson", tojson);
        env.add_filter("fromjson", fromjson);
        Templates { env }
    }

    /// Checks that `src` compiles as a template (or, when it is one `{{ expr }}`, as an
    /// expression).
    pub fn check_template(&self, src: &str) -> Result<(), TemplateError> {
        if !is_template(src) {
            return Ok(());
        }
        match split_expression(src) {
            Some(expr) => self.env.compile_expression(expr).map(drop),
            None => self.env.template_from_str(src).map(drop),
        }
        .map_err(TemplateError::from)
    }

    /// Checks that `src` compiles as a condition (see [`Templates::condition`]).
    pub fn check_condition(&self, src: &str) -> Result<(), TemplateError> {
        let expr = split_expression(src).unwrap_or(src);
        self.env
            .compile_expression(expr)
            .map(drop)
            .map_err(TemplateError::from)
    }

    /// The JSON value of `src`: the value of its one expression, the rendered string, or `src`
    /// itself when it has no template syntax.
    pub fn render_value(&self, src: &str, ctx: &Value) -> Result<serde_json::Value, TemplateError> {
        if !is_template(src) {
            return Ok(serde_json::Value::String(src.to_owned()));
        }
        let Some(expr) = split_expression(src) else {
            return self.render_string(src, ctx).map(serde_json::Value::String);
        };
        let value = self.env.compile_expression(expr)?.eval(ctx)?;
        if value.is_undefined() {
            return Err(TemplateError {
                message: format!(
                    "`{expr}` is undefined (a name or attribute that does not exist; check its \
                     spelling, or give a fallback with `| default(...)`)"
                ),
                line: None,
            });
        }
        serde_json::to_value(&value).map_err(|e| TemplateError {
            message: format!("`{expr}` has no JSON form: {e}"),
            line: None,
        })
    }

    /// `src` rendered to a string.
    pub fn render_string(&self, src: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !is_template(src) {
            return Ok(src.to_owned());
        }
        Ok(self.env.render_str(src, ctx)?)
    }

    /// Whether the expression `src` (bare or in `{{ }}`) is true; undefined is false.
    pub fn condition(&self, src: &str, ctx: &Value) -> Result<bool, TemplateError> {
        let expr = split_expression(src).unwrap_or(src);
        Ok(self.env.compile_expression(expr)?.eval(ctx)?.is_true())
    }
}

/// The `tojson` filter: `value | tojson` (compact) or `value | tojson(2)` (indented).
fn tojson(value: &Value, indent: Option<usize>) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "tojson got an undefined value",
        ));
    }
    let json = match indent {
        Some(_) => serde_json::to_string_pretty(value),
        None => serde_json::to_string(value),
    }
    .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    Ok(Value::from_safe_string(json))
}

/// The `fromjson` filter: `string | fromjson` is the JSON value the string holds.
fn fromjson(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "fromjson got an undefined value",
        ));
    }
    let Some(text) = value.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("fromjson expects a string, got {}", value.kind()),
        ));
    };
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let shown: String = text.chars().take(80).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        Error::new(
            ErrorKind::InvalidOperation,
            format!("fromjson: not JSON ({e}): {shown:?}{more}"),
        )
    })?;
    Ok(Value::from_serialize(&parsed))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Value {
        Value::from_serialize(json!({
            "match": {"env": "staging"},
            "data": {"number": 42, "repo": "acme/api", "labels": ["a", "b"]},
            "steps": {"build": {"status": "succeeded", "output": {"artifact": "app-1.tar"}},
                      "deploy": {"status": "denied", "output": null}},
            "failed": null,
        }))
    }

    #[test]
    fn split_expression_table() {
        let table: &[(&str, Option<&str>)] = &[
            ("{{ x }}", Some("x")),
            ("  {{x}} ", Some("x")),
            ("{{- x.y | default(1) -}}", Some("x.y | default(1)")),
            ("{{ a }} and {{ b }}", None),
            ("v{{ a }}", None),
            ("{{ a }}!", None),
            ("{% if a %}{{ a }}{% endif %}", None),
            ("plain", None),
        ];
        for &(src, want) in table {
            assert_eq!(split_expression(src), want, "{src:?}");
        }
    }

    #[test]
    fn render_value_table() {
        let t = templates();
        let table: &[(&str, serde_json::Value)] = &[
            ("plain text", json!("plain text")),
            ("{{ data.number }}", json!(42)),
            ("#{{ data.number }}", json!("#42")),
            (
                "{{ data }}",
                json!({"number": 42, "repo": "acme/api", "labels": ["a", "b"]}),
            ),
            ("{{ data.labels }}", json!(["a", "b"])),
            ("{{ match.env }}", json!("staging")),
            ("{{ match.ref | default('main') }}", json!("main")),
            ("{{ match.ref is defined }}", json!(false)),
            (
                "deploy {{ match.env }} from {{ match.ref | default('main') }}",
                json!("deploy staging from main"),
            ),
            ("{{ steps.deploy.output }}", json!(null)),
            (
                "{{ steps.build.output | tojson }}",
                json!("{\"artifact\":\"app-1.tar\"}"),
            ),
        ];
        for (src, want) in table {
            assert_eq!(&t.render_value(src, &ctx()).unwrap(), want, "{src:?}");
        }
    }

    #[test]
    fn fromjson_reads_what_a_script_printed_last() {
        let t = templates();
        let ctx = Value::from_serialize(json!({"steps": {"build": {"output": {
            "stdout": "building\npacked 120 bytes\n{\"artifact\": \"dist/app-main.tar.gz\", \"files\": 3}\n",
        }}}}));
        let last = "steps.build.output.stdout | trim | lines | last | fromjson";
        assert_eq!(
            t.render_value(&format!("{{{{ ({last}).artifact }}}}"), &ctx)
                .unwrap(),
            json!("dist/app-main.tar.gz")
        );
        assert_eq!(
            t.render_value(&format!("{{{{ {last} }}}}"), &ctx).unwrap(),
            json!({"artifact": "dist/app-main.tar.gz", "files": 3})
        );
        assert_eq!(
            t.render_value("{{ '[1, true]' | fromjson }}", &ctx)
                .unwrap(),
            json!([1, true])
        );
        for (src, says) in [
            ("{{ 'building' | fromjson }}", "not JSON"),
            ("{{ 5 | fromjson }}", "expects a string"),
            ("{{ nope | fromjson }}", "undefined"),
        ] {
            let err = t.render_value(src, &ctx).unwrap_err();
            assert!(err.message.contains(says), "{src}: {err}");
        }
    }

    #[test]
    fn undefined_is_an_error_that_says_what_to_do() {
        let t = templates();
        for src in [
            "{{ match.evn }}",
            "deploy {{ match.evn }}",
            "{{ nope.deeper }}",
            "{{ steps.missing.status }}",
        ] {
            let err = t.render_value(src, &ctx()).unwrap_err();
            assert!(err.message.contains("default(...)"), "{src:?}: {err}");
        }
    }

    #[test]
    fn conditions() {
        let t = templates();
        let table: &[(&str, bool)] = &[
            ("{{ steps.deploy.status == 'denied' }}", true),
            ("steps.build.status == 'succeeded'", true),
            ("steps.build.output.artifact", true),
            ("match.ref", false), // undefined is false, not an error
            ("failed", false),
            ("data.number > 40 and match.env == 'staging'", true),
        ];
        for &(src, want) in table {
            assert_eq!(t.condition(src, &ctx()).unwrap(), want, "{src:?}");
        }
    }

    #[test]
    fn syntax_errors_are_caught_by_the_checks() {
        let t = templates();
        assert!(t.check_template("{{ a }").is_err());
        assert!(t.check_template("{% if a %}x").is_err());
        assert!(t.check_template("{{ a | default('x') }}").is_ok());
        assert!(
            t.check_template("{{ unknown_filter_is_a_render_error(1) }}")
                .is_ok()
        );
        assert!(t.check_condition("a ==").is_err());
        assert!(t.check_condition("{{ a == 1 }}").is_ok());
        let err = t.check_template("line one\n{{ a b }}").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn render_string_keeps_text() {
        let t = templates();
        assert_eq!(t.render_string("{{ data.number }}", &ctx()).unwrap(), "42");
        assert_eq!(
            t.render_string("{% if failed %}bad{% else %}good{% endif %}", &ctx())
                .unwrap(),
            "good"
        );
    }
}
