//! Job-type input schemas: a small JSON Schema validator for the subset manifests need.
//!
//! [`check_schema`] runs when a job type is created and refuses any keyword this module does not
//! enforce, so no one reads a schema believing a check happens when it does not. [`validate`]
//! runs before a job is created, so a bad input is a 400 naming the field (`input.ref`,
//! `input.targets.2`), not a failed job.
//!
//! Enforced: `type` (a name or an array of `object`, `array`, `string`, `number`, `integer`,
//! `boolean`, `null`), `properties`, `required`, `additionalProperties` (a boolean or a schema),
//! `items` (one schema), `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum` (numbers), `minLength`, `maxLength` (in characters), `minItems`,
//! `maxItems`, `uniqueItems`, and the boolean schemas `true` and `false`. Accepted and ignored,
//! because they describe rather than constrain: `title`, `description`, `default`, `examples`,
//! `$schema`, `$comment`. Everything else (`pattern`, `format`, `$ref`, `oneOf`, …) is refused.
//!
//! As in JSON Schema, a keyword constrains only values of the type it is about (`minLength`
//! says nothing about a number), numbers compare by value (`1` equals `1.0`) and `1.0` is an
//! integer. [`validate`] reports the first error, in a fixed order: `type`, `const`, `enum`, the
//! keywords of the value's type, then (objects) the missing `required` names in sorted order and
//! the present properties in sorted order, (arrays) the items in order.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use crate::handler::InputError;

/// The keywords [`validate`] enforces.
pub const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
];

/// The keywords [`check_schema`] accepts and [`validate`] ignores.
pub const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$comment",
];

/// The names `type` may use.
const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// The most `enum` options an error message lists.
const MAX_LISTED: usize = 10;
/// The most characters of a value an error message quotes.
const MAX_QUOTED: usize = 64;

/// Checks that `schema` is a schema [`validate`] enforces in full. Errors name the offending
/// part from `input_schema`, e.g. `input_schema.properties.ref.type`.
pub fn check_schema(schema: &Value) -> Result<(), InputError> {
    check_at(schema, "input_schema")
}

/// Checks `input` against `schema`, returning the first error; fields start at `input`
/// (`input.ref`, `input.targets.2`).
///
/// `schema` should have passed [`check_schema`]. Parts of one that did not (a type stored before
/// schemas were checked) are skipped, not guessed at.
pub fn validate(schema: &Value, input: &Value) -> Result<(), InputError> {
    validate_at(schema, input, "input")
}

fn check_at(schema: &Value, path: &str) -> Result<(), InputError> {
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(obj) => obj,
        other => {
            return Err(InputError::new(
                path,
                format!(
                    "expected a JSON Schema (an object or a boolean), got {}",
                    kind(other)
                ),
            ));
        }
    };
    for (key, value) in sorted(obj) {
        let at = format!("{path}.{key}");
        match key {
            "type" => check_type_keyword(value, &at)?,
            "properties" => {
                let props = value.as_object().ok_or_else(|| {
                    InputError::new(
                        &at,
                        format!(
                            "expected an object of property schemas, got {}",
                            kind(value)
                        ),
                    )
                })?;
                for (name, sub) in sorted(props) {
                    check_at(sub, &format!("{at}.{name}"))?;
                }
            }
            "required" => {
                let names = value.as_array().ok_or_else(|| {
                    InputError::new(
                        &at,
                        format!("expected an array of property names, got {}", kind(value)),
                    )
                })?;
                for (i, name) in names.iter().enumerate() {
                    let Some(name) = name.as_str() else {
                        return Err(InputError::new(
                            format!("{at}.{i}"),
                            format!("expected a property name (a string), got {}", kind(name)),
                        ));
                    };
                    if names[..i].iter().any(|n| n.as_str() == Some(name)) {
                        return Err(InputError::new(
                            format!("{at}.{i}"),
                            format!("`{name}` is listed twice"),
                        ));
                    }
                }
            }
            "items" if value.is_array() => {
                return Err(InputError::new(
                    &at,
                    "an array of schemas (tuple validation) is not supported; give one schema \
                     for every item",
                ));
            }
            "additionalProperties" | "items" => check_at(value, &at)?,
            "enum" => match value.as_array() {
                Some(options) if !options.is_empty() => {}
                Some(_) => {
                    return Err(InputError::new(
                        &at,
                        "an empty enum accepts nothing; list at least one value",
                    ));
                }
                None => {
                    return Err(InputError::new(
                        &at,
                        format!("expected an array of values, got {}", kind(value)),
                    ));
                }
            },
            "const" => {}
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if !value.is_number() {
                    return Err(InputError::new(
                        &at,
                        format!("expected a number, got {}", kind(value)),
                    ));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(InputError::new(
                        &at,
                        format!("expected a non-negative integer, got {}", quote_kind(value)),
                    ));
                }
            }
            "uniqueItems" => {
                if !value.is_boolean() {
                    return Err(InputError::new(
                        &at,
                        format!("expected a boolean, got {}", kind(value)),
                    ));
                }
            }
            annotation if ANNOTATIONS.contains(&annotation) => {}
            unsupported => {
                return Err(InputError::new(
                    &at,
                    format!(
                        "`{unsupported}` is not supported, so it would not be enforced; use only \
                         {} (and the annotations {})",
                        KEYWORDS.join(", "),
                        ANNOTATIONS.join(", "),
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_type_keyword(value: &Value, at: &str) -> Result<(), InputError> {
    let known = |name: &str, at: &str| {
        if TYPES.contains(&name) {
            Ok(())
        } else {
            Err(InputError::new(
                at,
                format!("unknown type `{name}`; use one of {}", TYPES.join(", ")),
            ))
        }
    };
    match value {
        Value::String(name) => known(name, at),
        Value::Array(names) if !names.is_empty() => {
            for (i, name) in names.iter().enumerate() {
                let at = format!("{at}.{i}");
                let Some(name) = name.as_str() else {
                    return Err(InputError::new(
                        at,
                        format!("expected a type name (a string), got {}", kind(name)),
                    ));
                };
                known(name, &at)?;
                if names[..i].iter().any(|n| n.as_str() == Some(name)) {
                    return Err(InputError::new(at, format!("`{name}` is listed twice")));
                }
            }
            Ok(())
        }
        other => Err(InputError::new(
            at,
            format!(
                "expected a type name or a non-empty array of them, got {}",
                quote_kind(other)
            ),
        )),
    }
}

fn validate_at(schema: &Value, value: &Value, path: &str) -> Result<(), InputError> {
    let obj = match schema {
        Value::Object(obj) => obj,
        Value::Bool(false) => {
            return Err(InputError::new(
                path,
                "not allowed: the schema accepts no value here",
            ));
        }
        _ => return Ok(()),
    };
    if let Some(types) = type_names(obj)
        && !types.iter().any(|t| has_type(value, t))
    {
        return Err(InputError::new(
            path,
            format!("expected {}, got {}", describe_types(&types), kind(value)),
        ));
    }
    if let Some(expected) = obj.get("const")
        && canonical(expected) != canonical(value)
    {
        return Err(InputError::new(
            path,
            format!("expected {}, got {}", quote(expected), quote(value)),
        ));
    }
    if let Some(Value::Array(options)) = obj.get("enum") {
        let given = canonical(value);
        if !options.iter().any(|o| canonical(o) == given) {
            return Err(InputError::new(
                path,
                format!("not one of {}; got {}", list(options), quote(value)),
            ));
        }
    }
    match value {
        Value::Number(n) => check_number(obj, n, path),
        Value::String(s) => check_string(obj, s, path),
        Value::Array(items) => check_array(obj, items, path),
        Value::Object(map) => check_object(obj, map, path),
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

fn check_number(schema: &Map<String, Value>, n: &Number, path: &str) -> Result<(), InputError> {
    // (keyword, the orderings of `n` against the bound that fail, what is expected)
    let rules: [(&str, &[Ordering], &str); 4] = [
        ("minimum", &[Ordering::Less], "at least"),
        (
            "exclusiveMinimum",
            &[Ordering::Less, Ordering::Equal],
            "more than",
        ),
        ("maximum", &[Ordering::Greater], "at most"),
        (
            "exclusiveMaximum",
            &[Ordering::Greater, Ordering::Equal],
            "less than",
        ),
    ];
    for (keyword, failing, expected) in rules {
        let Some(Value::Number(bound)) = schema.get(keyword) else {
            continue;
        };
        if compare(n, bound).is_some_and(|o| failing.contains(&o)) {
            return Err(InputError::new(
                path,
                format!("expected {expected} {bound}, got {n}"),
            ));
        }
    }
    Ok(())
}

fn check_string(schema: &Map<String, Value>, s: &str, path: &str) -> Result<(), InputError> {
    let (min, max) = (uint(schema, "minLength"), uint(schema, "maxLength"));
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let len = s.chars().count() as u64;
    if let Some(min) = min.filter(|&min| len < min) {
        return Err(InputError::new(
            path,
            format!(
                "expected at least {}, got {len}",
                plural(min, "character", "characters")
            ),
        ));
    }
    if let Some(max) = max.filter(|&max| len > max) {
        return Err(InputError::new(
            path,
            format!(
                "expected at most {}, got {len}",
                plural(max, "character", "characters")
            ),
        ));
    }
    Ok(())
}

fn check_array(schema: &Map<String, Value>, items: &[Value], path: &str) -> Result<(), InputError> {
    let len = items.len() as u64;
    if let Some(min) = uint(schema, "minItems").filter(|&min| len < min) {
        return Err(InputError::new(
            path,
            format!(
                "expected at least {}, got {len}",
                plural(min, "item", "items")
            ),
        ));
    }
    if let Some(max) = uint(schema, "maxItems").filter(|&max| len > max) {
        return Err(InputError::new(
            path,
            format!(
                "expected at most {}, got {len}",
                plural(max, "item", "items")
            ),
        ));
    }
    if let Some(item_schema) = schema.get("items").filter(|s| !s.is_array()) {
        for (i, item) in items.iter().enumerate() {
            validate_at(item_schema, item, &format!("{path}.{i}"))?;
        }
    }
    if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
        // Canonical forms make this linear: an input array may be long.
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(first) = seen.insert(canonical(item), i) {
                return Err(InputError::new(
                    format!("{path}.{i}"),
                    format!("items must be unique; this one repeats {path}.{first}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_object(
    schema: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<(), InputError> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = schema.get("required") {
        let mut names: Vec<&str> = required.iter().filter_map(Value::as_str).collect();
        names.sort_unstable();
        if let Some(name) = names.into_iter().find(|n| !map.contains_key(*n)) {
            let expected = props
                .and_then(|p| p.get(name))
                .map_or_else(|| "a value".to_owned(), expected_of);
            return Err(InputError::new(
                format!("{path}.{name}"),
                format!("required; expected {expected}, got nothing"),
            ));
        }
    }
    let additional = schema.get("additionalProperties");
    for (key, value) in sorted(map) {
        let at = format!("{path}.{key}");
        if let Some(sub) = props.and_then(|p| p.get(key)) {
            validate_at(sub, value, &at)?;
        } else if additional == Some(&Value::Bool(false)) {
            let allowed = match props {
                Some(p) if !p.is_empty() => format!(
                    "allowed properties: {}",
                    sorted(p).map(|(k, _)| k).collect::<Vec<_>>().join(", ")
                ),
                _ => "this input takes no properties".to_owned(),
            };
            return Err(InputError::new(
                at,
                format!("not an allowed property; {allowed}"),
            ));
        } else if let Some(sub) = additional {
            validate_at(sub, value, &at)?;
        }
    }
    Ok(())
}

/// The entries of `map` sorted by key, whatever order the map keeps.
fn sorted(map: &Map<String, Value>) -> impl Iterator<Item = (&str, &Value)> {
    let mut entries: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries.into_iter()
}

/// The names in a schema's `type`, if it is well formed.
fn type_names(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(name) => Some(vec![name.as_str()]),
        Value::Array(names) => names.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_number().is_some_and(is_integer),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// `a, b or c`, each name with its article.
fn describe_types(names: &[&str]) -> String {
    let described: Vec<&str> = names
        .iter()
        .map(|name| match *name {
            "object" => "an object",
            "array" => "an array",
            "string" => "a string",
            "number" => "a number",
            "integer" => "an integer",
            "boolean" => "a boolean",
            "null" => "null",
            other => other,
        })
        .collect();
    match described.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => described.concat(),
    }
}

/// What a property's schema expects, for a `required` error.
fn expected_of(schema: &Value) -> String {
    let Some(obj) = schema.as_object() else {
        return "a value".to_owned();
    };
    if let Some(types) = type_names(obj) {
        describe_types(&types)
    } else if let Some(value) = obj.get("const") {
        quote(value)
    } else if let Some(Value::Array(options)) = obj.get("enum") {
        format!("one of {}", list(options))
    } else {
        "a value".to_owned()
    }
}

/// The kind of a value, with its article: `a string`, `an integer`, `null`.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if is_integer(n) => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar quoted, anything else by kind: for errors about keyword values.
fn quote_kind(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => kind(value).to_owned(),
        scalar => quote(scalar),
    }
}

/// `value` as compact JSON, cut short if long.
fn quote(value: &Value) -> String {
    let json = value.to_string();
    match json.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &json[..cut]),
        None => json,
    }
}

/// `"a", "b", "c"`, with at most [`MAX_LISTED`] values shown.
fn list(options: &[Value]) -> String {
    let mut out: Vec<String> = options.iter().take(MAX_LISTED).map(quote).collect();
    if options.len() > MAX_LISTED {
        out.push(format!("… ({} more)", options.len() - MAX_LISTED));
    }
    out.join(", ")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn uint(schema: &Map<String, Value>, keyword: &str) -> Option<u64> {
    schema.get(keyword).and_then(Value::as_u64)
}

/// An integer's exact value; `None` for a number with a fraction or beyond the integer range.
fn exact_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Compares two numbers by value: exactly when both are integers, as floats otherwise.
fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    match (exact_int(a), exact_int(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// A string equal for values JSON Schema calls equal: object keys sorted, `1.0` written `1`.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => match exact_int(n) {
            Some(i) => out.push_str(&i.to_string()),
            None => match n.as_f64() {
                // Below 2^64 an integral float converts exactly, and that range covers every
                // integer `exact_int` can give.
                Some(f) if f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0 => {
                    out.push_str(&(f as i128).to_string());
                }
                _ => out.push_str(&n.to_string()),
            },
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in sorted(map).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A schema, an input, and `None` if it passes or the error's field and a message fragment.
    type Case = (Value, Value, Option<(&'static str, &'static str)>);

    /// Runs `validate` over the cases, and `check_schema` over their schemas.
    fn run(cases: &[Case]) {
        for (schema, input, want) in cases {
            let got = validate(schema, input);
            match (want, &got) {
                (None, Ok(())) => {}
                (Some((field, fragment)), Err(e)) => {
                    assert_eq!(e.field, *field, "{schema} / {input}: {e}");
                    assert!(
                        e.message.contains(fragment),
                        "{schema} / {input}: `{}` lacks `{fragment}`",
                        e.message
                    );
                }
                _ => panic!("{schema} / {input}: expected {want:?}, got {got:?}"),
            }
            assert_eq!(check_schema(schema), Ok(()), "{schema}");
        }
    }

    #[test]
    fn boolean_schemas() {
        run(&[
            (json!(true), json!({"any": 1}), None),
            (json!({}), json!(null), None),
            (json!(false), json!(1), Some(("input", "accepts no value"))),
        ]);
    }

    #[test]
    fn type_keyword() {
        let int = json!({"type": "integer"});
        let num = json!({"type": "number"});
        let many = json!({"type": ["string", "null"]});
        run(&[
            (int.clone(), json!(3), None),
            (int.clone(), json!(-3), None),
            (int.clone(), json!(3.0), None),
            (
                int.clone(),
                json!("3"),
                Some(("input", "expected an integer, got a string")),
            ),
            (
                int.clone(),
                json!(3.5),
                Some(("input", "expected an integer, got a number")),
            ),
            (num.clone(), json!(3), None),
            (num.clone(), json!(3.5), None),
            (
                num,
                json!(true),
                Some(("input", "expected a number, got a boolean")),
            ),
            (json!({"type": "string"}), json!("x"), None),
            (json!({"type": "boolean"}), json!(false), None),
            (json!({"type": "null"}), json!(null), None),
            (json!({"type": "array"}), json!([]), None),
            (
                json!({"type": "object"}),
                json!([]),
                Some(("input", "expected an object, got an array")),
            ),
            (many.clone(), json!("x"), None),
            (many.clone(), json!(null), None),
            (
                many,
                json!({}),
                Some(("input", "expected a string or null, got an object")),
            ),
            (
                json!({"type": ["string", "integer", "boolean"]}),
                json!(1.5),
                Some((
                    "input",
                    "expected a string, an integer or a boolean, got a number",
                )),
            ),
        ]);
    }

    #[test]
    fn properties_required_and_additional() {
        let schema = json!({
            "type": "object",
            "properties": {
                "ref": {"type": "string"},
                "env": {"enum": ["staging", "production"]},
                "opts": {"type": "object", "properties": {"force": {"type": "boolean"}}},
            },
            "required": ["ref", "env"],
            "additionalProperties": false,
        });
        run(&[
            (
                schema.clone(),
                json!({"ref": "main", "env": "staging"}),
                None,
            ),
            (
                schema.clone(),
                json!({"ref": "main", "env": "staging", "opts": {"force": true}}),
                None,
            ),
            (
                schema.clone(),
                json!({"env": "staging"}),
                Some(("input.ref", "required; expected a string, got nothing")),
            ),
            // Missing names are reported in sorted order.
            (
                schema.clone(),
                json!({}),
                Some((
                    "input.env",
                    "required; expected one of \"staging\", \"production\"",
                )),
            ),
            (
                schema.clone(),
                json!({"ref": 1, "env": "staging"}),
                Some(("input.ref", "expected a string, got an integer")),
            ),
            (
                schema.clone(),
                json!({"ref": "main", "env": "staging", "opts": {"force": "yes"}}),
                Some(("input.opts.force", "expected a boolean, got a string")),
            ),
            (
                schema.clone(),
                json!({"ref": "main", "env": "staging", "extra": 1}),
                Some((
                    "input.extra",
                    "not an allowed property; allowed properties: env, opts, ref",
                )),
            ),
            // Present properties are checked in sorted order.
            (
                schema,
                json!({"zz": 1, "ref": 2, "env": "dev"}),
                Some(("input.env", "not one of")),
            ),
            (
                json!({"additionalProperties": false}),
                json!({"a": 1}),
                Some(("input.a", "this input takes no properties")),
            ),
            (
                json!({"properties": {"a": {}}, "additionalProperties": {"type": "integer"}}),
                json!({"a": "x", "b": 2}),
                None,
            ),
            (
                json!({"properties": {"a": {}}, "additionalProperties": {"type": "integer"}}),
                json!({"a": "x", "b": "y"}),
                Some(("input.b", "expected an integer, got a string")),
            ),
            (
                json!({"required": ["a"]}),
                json!({}),
                Some(("input.a", "required; expected a value, got nothing")),
            ),
            // Object keywords say nothing about other types.
            (json!({"required": ["a"]}), json!("x"), None),
        ]);
    }

    #[test]
    fn items_and_array_bounds() {
        let schema = json!({
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": true,
        });
        run(&[
            (schema.clone(), json!([1, 2, 3]), None),
            (
                schema.clone(),
                json!([]),
                Some(("input", "expected at least 1 item, got 0")),
            ),
            (
                schema.clone(),
                json!([1, 2, 3, 4]),
                Some(("input", "expected at most 3 items, got 4")),
            ),
            (
                schema.clone(),
                json!([1, 2, "x"]),
                Some(("input.2", "expected an integer, got a string")),
            ),
            (
                schema.clone(),
                json!([1, -1]),
                Some(("input.1", "expected at least 0, got -1")),
            ),
            (
                schema,
                json!([1, 2, 1.0]),
                Some(("input.2", "items must be unique; this one repeats input.0")),
            ),
            (
                json!({"uniqueItems": true}),
                json!([{"a": 1, "b": [2]}, {"b": [2], "a": 1}]),
                Some(("input.1", "repeats input.0")),
            ),
            (
                json!({"uniqueItems": true}),
                json!([{"a": 1}, {"a": 2}, "1", 1]),
                None,
            ),
            (json!({"uniqueItems": false}), json!([1, 1]), None),
            (
                json!({"properties": {"targets": {"items": {"type": "string"}}}}),
                json!({"targets": ["a", "b", 3]}),
                Some(("input.targets.2", "expected a string, got an integer")),
            ),
            (json!({"minItems": 2}), json!("x"), None),
        ]);
    }

    #[test]
    fn enum_and_const() {
        let env = json!({"enum": ["staging", "production"]});
        run(&[
            (env.clone(), json!("staging"), None),
            (
                env,
                json!("dev"),
                Some((
                    "input",
                    "not one of \"staging\", \"production\"; got \"dev\"",
                )),
            ),
            (json!({"enum": [1, null, {"a": [1]}]}), json!(1.0), None),
            (
                json!({"enum": [1, null, {"a": [1]}]}),
                json!({"a": [1]}),
                None,
            ),
            (
                json!({"enum": [1, null]}),
                json!(false),
                Some(("input", "not one of 1, null; got false")),
            ),
            (
                json!({"enum": (0..12).collect::<Vec<_>>()}),
                json!(12),
                Some(("input", "9, … (2 more); got 12")),
            ),
            (json!({"const": "v1"}), json!("v1"), None),
            (
                json!({"const": "v1"}),
                json!("v2"),
                Some(("input", "expected \"v1\", got \"v2\"")),
            ),
            (json!({"const": 2}), json!(2.0), None),
            (
                json!({"const": "a"}),
                json!("x".repeat(100)),
                Some(("input", "…")),
            ),
        ]);
    }

    #[test]
    fn number_bounds() {
        let bounded = json!({"minimum": 1, "maximum": 10});
        let exclusive = json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1.5});
        run(&[
            (bounded.clone(), json!(1), None),
            (bounded.clone(), json!(10), None),
            (bounded.clone(), json!(10.0), None),
            (
                bounded.clone(),
                json!(0.5),
                Some(("input", "expected at least 1, got 0.5")),
            ),
            (
                bounded.clone(),
                json!(11),
                Some(("input", "expected at most 10, got 11")),
            ),
            (exclusive.clone(), json!(1), None),
            (
                exclusive.clone(),
                json!(0),
                Some(("input", "expected more than 0, got 0")),
            ),
            (
                exclusive,
                json!(1.5),
                Some(("input", "expected less than 1.5, got 1.5")),
            ),
            (
                json!({"maximum": i64::MAX}),
                json!(u64::MAX),
                Some(("input", "expected at most 9223372036854775807")),
            ),
            (json!({"minimum": -5}), json!(u64::MAX), None),
            // Number keywords say nothing about other types.
            (bounded, json!("0"), None),
        ]);
    }

    #[test]
    fn string_lengths_count_characters() {
        let schema = json!({"type": "string", "minLength": 2, "maxLength": 3});
        run(&[
            (schema.clone(), json!("ab"), None),
            (schema.clone(), json!("äöü"), None),
            (
                schema.clone(),
                json!("a"),
                Some(("input", "expected at least 2 characters, got 1")),
            ),
            (
                schema,
                json!("abcd"),
                Some(("input", "expected at most 3 characters, got 4")),
            ),
            (
                json!({"maxLength": 1}),
                json!("ab"),
                Some(("input", "expected at most 1 character, got 2")),
            ),
            (json!({"maxLength": 1}), json!(12), None),
        ]);
    }

    #[test]
    fn check_schema_accepts_the_supported_subset() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "deploys a ref",
            "title": "deploy",
            "description": "what to deploy",
            "type": "object",
            "properties": {
                "ref": {"type": "string", "minLength": 1, "maxLength": 200, "default": "main"},
                "env": {"enum": ["staging", "production"], "examples": ["staging"]},
                "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 9,
                      "exclusiveMinimum": -1, "exclusiveMaximum": 10},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 0,
                         "maxItems": 5, "uniqueItems": true},
                "v": {"const": 1},
                "pattern": true,
            },
            "required": ["ref"],
            "additionalProperties": {"type": "string"},
        });
        assert_eq!(check_schema(&schema), Ok(()));
        assert_eq!(check_schema(&json!(true)), Ok(()));
        assert_eq!(check_schema(&json!(false)), Ok(()));
        assert_eq!(check_schema(&json!({})), Ok(()));
    }

    #[test]
    fn check_schema_refuses_unsupported_and_malformed_keywords() {
        let cases = [
            (json!("x"), "input_schema", "expected a JSON Schema"),
            (json!(1), "input_schema", "got an integer"),
            (
                json!({"pattern": "^a"}),
                "input_schema.pattern",
                "`pattern` is not supported",
            ),
            (
                json!({"format": "uri"}),
                "input_schema.format",
                "would not be enforced",
            ),
            (json!({"$ref": "#/x"}), "input_schema.$ref", "not supported"),
            (json!({"oneOf": []}), "input_schema.oneOf", "not supported"),
            (json!({"anyOf": []}), "input_schema.anyOf", "not supported"),
            (json!({"allOf": []}), "input_schema.allOf", "not supported"),
            (json!({"not": {}}), "input_schema.not", "not supported"),
            (json!({"if": {}}), "input_schema.if", "not supported"),
            (json!({"$defs": {}}), "input_schema.$defs", "not supported"),
            (
                json!({"minProperties": 1}),
                "input_schema.minProperties",
                "not supported",
            ),
            (
                json!({"typo": 1}),
                "input_schema.typo",
                "use only type, properties",
            ),
            (
                json!({"properties": {"ref": {"type": "string", "pattern": "^v"}}}),
                "input_schema.properties.ref.pattern",
                "not supported",
            ),
            (
                json!({"properties": {"ref": {"type": "text"}}}),
                "input_schema.properties.ref.type",
                "unknown type `text`",
            ),
            (json!({"type": []}), "input_schema.type", "non-empty array"),
            (json!({"type": 1}), "input_schema.type", "got 1"),
            (
                json!({"type": ["string", 1]}),
                "input_schema.type.1",
                "got an integer",
            ),
            (
                json!({"type": ["string", "string"]}),
                "input_schema.type.1",
                "listed twice",
            ),
            (
                json!({"properties": []}),
                "input_schema.properties",
                "got an array",
            ),
            (
                json!({"properties": {"a": "string"}}),
                "input_schema.properties.a",
                "expected a JSON Schema",
            ),
            (
                json!({"required": "a"}),
                "input_schema.required",
                "got a string",
            ),
            (
                json!({"required": ["a", 1]}),
                "input_schema.required.1",
                "got an integer",
            ),
            (
                json!({"required": ["a", "a"]}),
                "input_schema.required.1",
                "listed twice",
            ),
            (
                json!({"additionalProperties": 1}),
                "input_schema.additionalProperties",
                "expected a JSON Schema",
            ),
            (
                json!({"additionalProperties": {"not": {}}}),
                "input_schema.additionalProperties.not",
                "not supported",
            ),
            (
                json!({"items": [{}]}),
                "input_schema.items",
                "tuple validation",
            ),
            (
                json!({"items": {"oneOf": []}}),
                "input_schema.items.oneOf",
                "not supported",
            ),
            (json!({"enum": []}), "input_schema.enum", "empty enum"),
            (json!({"enum": "a"}), "input_schema.enum", "got a string"),
            (
                json!({"minimum": "1"}),
                "input_schema.minimum",
                "expected a number",
            ),
            (
                json!({"exclusiveMinimum": true}),
                "input_schema.exclusiveMinimum",
                "got a boolean",
            ),
            (json!({"minLength": -1}), "input_schema.minLength", "got -1"),
            (json!({"maxItems": 1.5}), "input_schema.maxItems", "got 1.5"),
            (
                json!({"maxLength": "3"}),
                "input_schema.maxLength",
                "got \"3\"",
            ),
            (
                json!({"uniqueItems": 1}),
                "input_schema.uniqueItems",
                "expected a boolean",
            ),
        ];
        for (schema, field, fragment) in cases {
            match check_schema(&schema) {
                Err(e) => {
                    assert_eq!(e.field, field, "{schema}: {e}");
                    assert!(e.message.contains(fragment), "{schema}: {e}");
                }
                Ok(()) => panic!("{schema} was accepted"),
            }
        }
    }

    #[test]
    fn validate_skips_what_check_schema_would_refuse() {
        // A type stored before schemas were checked: unknown keywords and malformed values
        // constrain nothing, and nothing panics.
        let legacy = json!({
            "pattern": "^a",
            "minLength": "x",
            "items": [{"type": "string"}],
            "type": 7,
            "required": "a",
            "properties": [],
        });
        assert_eq!(validate(&legacy, &json!("b")), Ok(()));
        assert_eq!(validate(&legacy, &json!([1])), Ok(()));
        assert_eq!(validate(&legacy, &json!({})), Ok(()));
        assert_eq!(validate(&json!("x"), &json!(1)), Ok(()));
    }
}
