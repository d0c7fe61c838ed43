//! `memory.write` and `memory.search`: an agent's memory, kept in the store (see
//! [`store::memory`] for the data model, limits, retention and scoring).
//!
//! `memory.write` input: `{text, scope? ("global" | "session"), session?, tags? [string]}`.
//! Output: `{id, scope, replaced, dropped}`, where `scope` is `global` or `session:<id>` and
//! `dropped` counts the scope's oldest entries dropped to stay within its cap.
//!
//! `memory.search` input: `{query, scope?, session?, limit? (5, at most 50), include_global?
//! (true)}`. Output: `{results: [{id, scope, text, tags, score, created_at}]}`, best first.
//!
//! Scope: `session` names the session; without `scope`, an input with a `session` works on that
//! session's memory and one without works on the global memory. `scope: "session"` needs a
//! `session`, and `scope: "global"` refuses one (it would be ignored). A session search also
//! covers the global memory unless `include_global` is `false`.
//!
//! The entry written by a job has the job's id as its id (and `job:<id>` as its source), so a
//! retried attempt replaces what an earlier attempt of the same job wrote instead of storing it
//! twice. Store calls run on the blocking pool: a search reads every entry of its scopes.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use store::memory::{
    DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, MAX_TAGS, MemoryError, MemoryQuery, check_tag,
};
use store::{MemoryEntry, MemoryId, MemoryScope, Store, job_stream};

use super::{kind, object, opt_u64};
use crate::handler::{AttemptOutcome, BoxFuture, DynHandler, Handler, InputError, JobContext};

const WRITE_FIELDS: &[&str] = &["text", "scope", "session", "tags"];
const SEARCH_FIELDS: &[&str] = &["query", "scope", "session", "limit", "include_global"];

/// The memory handlers over `store`: `memory.write` and `memory.search`.
pub fn memory_handlers(store: &Store) -> Vec<DynHandler> {
    vec![
        Arc::new(MemoryWrite::new(store.clone())),
        Arc::new(MemorySearch::new(store.clone())),
    ]
}

/// Keeps a text in the global memory or a session's.
#[derive(Clone)]
pub struct MemoryWrite {
    store: Store,
}

impl MemoryWrite {
    pub fn new(store: Store) -> Self {
        MemoryWrite { store }
    }

    /// The entry an input asks for; `run` then sets its id and source from the job.
    fn parse(input: &Value) -> Result<MemoryEntry, InputError> {
        let obj = object(input, WRITE_FIELDS)?;
        let scope = scope(obj)?;
        let text = match obj.get("text") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => {
                return Err(InputError::new(
                    "input.text",
                    "required; give the text to remember",
                ));
            }
            Some(other) => {
                return Err(InputError::new(
                    "input.text",
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        };
        let entry = MemoryEntry::new(scope, text).with_tags(tags(obj)?);
        entry.validate().map_err(input_error)?;
        Ok(entry)
    }
}

impl Handler for MemoryWrite {
    fn name(&self) -> &'static str {
        "memory.write"
    }

    fn description(&self) -> &'static str {
        "Remembers {text} (with optional tags) in the global memory or a session's; returns {id, scope}."
    }

    fn validate(&self, _config: &Value, input: &Value) -> Result<(), InputError> {
        Self::parse(input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let store = self.store.clone();
        Box::pin(async move {
            let entry = match Self::parse(&input) {
                Ok(entry) => entry
                    .with_id(MemoryId(ctx.job_id.0))
                    .with_source(job_stream(ctx.job_id)),
                Err(e) => return AttemptOutcome::fatal(e.to_string()),
            };
            let written = match blocking(move || store.memory_put(entry)).await {
                Ok(written) => written,
                Err(outcome) => return outcome,
            };
            let entry = &written.entry;
            ctx.info(format!(
                "remembered {} bytes in {}{}",
                entry.text.len(),
                entry.scope,
                match written.dropped.len() {
                    0 => String::new(),
                    n => format!("; dropped its {n} oldest entries (the scope is full)"),
                }
            ));
            AttemptOutcome::Succeeded(json!({
                "id": entry.id,
                "scope": entry.scope,
                "replaced": written.replaced,
                "dropped": written.dropped.len(),
            }))
        })
    }
}

/// Finds remembered texts by keywords.
#[derive(Clone)]
pub struct MemorySearch {
    store: Store,
}

impl MemorySearch {
    pub fn new(store: Store) -> Self {
        MemorySearch { store }
    }

    fn parse(input: &Value) -> Result<MemoryQuery, InputError> {
        let obj = object(input, SEARCH_FIELDS)?;
        let scope = scope(obj)?;
        let query = match obj.get("query") {
            Some(Value::String(q)) => q.clone(),
            None | Some(Value::Null) => {
                return Err(InputError::new(
                    "input.query",
                    "required; give the words to look for",
                ));
            }
            Some(other) => {
                return Err(InputError::new(
                    "input.query",
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        };
        let limit = match opt_u64(obj, "limit", MAX_SEARCH_LIMIT as u64)? {
            None => DEFAULT_SEARCH_LIMIT,
            Some(0) => {
                return Err(InputError::new(
                    "input.limit",
                    format!("must be at least 1 (and at most {MAX_SEARCH_LIMIT})"),
                ));
            }
            Some(n) => n as usize,
        };
        let include_global = match obj.get("include_global") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InputError::new(
                    "input.include_global",
                    format!("expected a boolean, got {}", kind(other)),
                ));
            }
        };
        let query = MemoryQuery::new(scope, query)
            .limit(limit)
            .include_global(include_global);
        query.validate().map_err(input_error)?;
        Ok(query)
    }
}

impl Handler for MemorySearch {
    fn name(&self) -> &'static str {
        "memory.search"
    }

    fn description(&self) -> &'static str {
        "Finds remembered texts matching the words of {query} (a session's and the global memory); returns {results}, best first."
    }

    fn validate(&self, _config: &Value, input: &Value) -> Result<(), InputError> {
        Self::parse(input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let store = self.store.clone();
        Box::pin(async move {
            let query = match Self::parse(&input) {
                Ok(query) => query,
                Err(e) => return AttemptOutcome::fatal(e.to_string()),
            };
            let scope = query.scope.clone();
            let hits = match blocking(move || store.memory_search(&query)).await {
                Ok(hits) => hits,
                Err(outcome) => return outcome,
            };
            ctx.info(format!("{} matching entries in {scope}", hits.len()));
            let results: Vec<Value> = hits
                .into_iter()
                .map(|hit| {
                    let e = hit.entry;
                    json!({
                        "id": e.id,
                        "scope": e.scope,
                        "text": e.text,
                        "tags": e.tags,
                        "score": hit.score,
                        "created_at": e.created_at,
                    })
                })
                .collect();
            AttemptOutcome::Succeeded(json!({ "results": results }))
        })
    }
}

/// The scope of an input, from its `scope` and `session` fields.
fn scope(obj: &Map<String, Value>) -> Result<MemoryScope, InputError> {
    let session = match obj.get("session") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(InputError::new(
                "input.session",
                format!("expected a session id (a string), got {}", kind(other)),
            ));
        }
    };
    let wants_session = match obj.get("scope") {
        None | Some(Value::Null) => session.is_some(),
        Some(Value::String(s)) if s == "global" => false,
        Some(Value::String(s)) if s == "session" => true,
        Some(other) => {
            return Err(InputError::new(
                "input.scope",
                format!("expected \"global\" or \"session\", got {other}"),
            ));
        }
    };
    let scope = match (wants_session, session) {
        (true, Some(id)) => MemoryScope::Session(id),
        (true, None) => {
            return Err(InputError::new(
                "input.session",
                "required when scope is \"session\"; give the session id",
            ));
        }
        (false, None) => MemoryScope::Global,
        (false, Some(_)) => {
            return Err(InputError::new(
                "input.session",
                "not used with scope \"global\"; leave it out, or set scope to \"session\"",
            ));
        }
    };
    scope.validate().map_err(input_error)?;
    Ok(scope)
}

/// The `tags` of an input, each checked where it stands in the input.
fn tags(obj: &Map<String, Value>) -> Result<Vec<String>, InputError> {
    let items = match obj.get("tags") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(InputError::new(
                "input.tags",
                format!("expected an array of strings, got {}", kind(other)),
            ));
        }
    };
    if items.len() > MAX_TAGS {
        return Err(InputError::new(
            "input.tags",
            format!("{} tags; the maximum is {MAX_TAGS}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("input.tags[{i}]");
            let tag = item.as_str().ok_or_else(|| {
                InputError::new(&field, format!("expected a string, got {}", kind(item)))
            })?;
            check_tag(tag).map_err(|message| InputError::new(&field, message))?;
            Ok(tag.to_string())
        })
        .collect()
}

/// A refusal of the store as an input error on `input.<field>`.
fn input_error(e: MemoryError) -> InputError {
    match e {
        MemoryError::Invalid { field, message } => {
            InputError::new(format!("input.{field}"), message)
        }
        MemoryError::Store(e) => InputError::new("input", e.to_string()),
    }
}

/// Runs a store call on the blocking pool; a failure is the attempt's outcome: a refusal is
/// fatal, a storage error may pass on a retry.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, AttemptOutcome> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(MemoryError::Invalid { field, message })) => {
            Err(AttemptOutcome::fatal(format!("input.{field}: {message}")))
        }
        Ok(Err(MemoryError::Store(e))) => Err(AttemptOutcome::failed(format!(
            "the memory store failed: {e}"
        ))),
        Err(e) => Err(AttemptOutcome::failed(format!(
            "the memory store call did not finish: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use store::StoreConfig;
    use tempfile::TempDir;

    use super::*;
    use crate::builtin::test_support::ctx;

    fn temp_store() -> (TempDir, Store) {
        let dir = TempDir::new().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        (dir, store)
    }

    fn output(outcome: AttemptOutcome) -> Value {
        match outcome {
            AttemptOutcome::Succeeded(v) => v,
            other => panic!("expected success, got {other:?}"),
        }
    }

    /// Writes through the handler and waits until the write is committed, as a job's success
    /// is before anyone hears of it.
    async fn remember(store: &Store, input: Value) -> Value {
        let out = output(MemoryWrite::new(store.clone()).run(ctx(1), input).await);
        store.durable().await.unwrap();
        out
    }

    async fn recall(store: &Store, input: Value) -> Vec<Value> {
        let h = MemorySearch::new(store.clone());
        assert_eq!(h.validate(&Value::Null, &input), Ok(()), "{input}");
        let out = output(h.run(ctx(1), input).await);
        out["results"].as_array().unwrap().clone()
    }

    fn texts(results: &[Value]) -> Vec<&str> {
        results
            .iter()
            .map(|r| r["text"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn write_validation_names_the_field() {
        let (_dir, store) = temp_store();
        let h = MemoryWrite::new(store);
        let cases = [
            (json!(7), "input"),
            (json!({}), "input.text"),
            (json!({"text": 5}), "input.text"),
            (json!({"text": "   "}), "input.text"),
            (
                json!({"text": "x".repeat(store::memory::MAX_TEXT_BYTES + 1)}),
                "input.text",
            ),
            (json!({"text": "x", "extra": 1}), "input.extra"),
            (json!({"text": "x", "scope": "team"}), "input.scope"),
            (json!({"text": "x", "scope": "session"}), "input.session"),
            (
                json!({"text": "x", "scope": "global", "session": "s1"}),
                "input.session",
            ),
            (json!({"text": "x", "session": ""}), "input.session"),
            (json!({"text": "x", "session": 42}), "input.session"),
            (json!({"text": "x", "session": "a\u{0}b"}), "input.session"),
            (json!({"text": "x", "tags": "ops"}), "input.tags"),
            (json!({"text": "x", "tags": ["ok", 1]}), "input.tags[1]"),
            (json!({"text": "x", "tags": ["ok", " "]}), "input.tags[1]"),
            (
                json!({"text": "x", "tags": (0..=MAX_TAGS).map(|i| i.to_string()).collect::<Vec<_>>()}),
                "input.tags",
            ),
        ];
        for (input, field) in cases {
            let err = h.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
        for ok in [
            json!({"text": "x"}),
            json!({"text": "x", "scope": "global", "tags": ["a", "A"]}),
            json!({"text": "x", "session": "s1"}),
            json!({"text": "x", "scope": "session", "session": "s1", "tags": null}),
        ] {
            assert_eq!(h.validate(&Value::Null, &ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn search_validation_names_the_field() {
        let (_dir, store) = temp_store();
        let h = MemorySearch::new(store);
        let cases = [
            (json!({}), "input.query"),
            (json!({"query": ["a"]}), "input.query"),
            (json!({"query": "?!"}), "input.query"),
            (json!({"query": "a", "limit": 0}), "input.limit"),
            (json!({"query": "a", "limit": 51}), "input.limit"),
            (json!({"query": "a", "limit": "5"}), "input.limit"),
            (
                json!({"query": "a", "include_global": "yes"}),
                "input.include_global",
            ),
            (json!({"query": "a", "scope": "session"}), "input.session"),
            (json!({"query": "a", "scope": 1}), "input.scope"),
            (json!({"query": "a", "text": "b"}), "input.text"),
        ];
        for (input, field) in cases {
            let err = h.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[tokio::test]
    async fn remembers_and_recalls_per_session_with_global_fallback() {
        let (_dir, store) = temp_store();
        let g = remember(
            &store,
            json!({"text": "Production deploys need an approval", "tags": ["policy"]}),
        )
        .await;
        assert_eq!(g["scope"], "global");
        assert_eq!(g["replaced"], false);
        assert_eq!(g["dropped"], 0);
        let s = remember(
            &store,
            json!({"text": "this session deploys the payments service", "session": "s1"}),
        )
        .await;
        assert_eq!(s["scope"], "session:s1");
        remember(
            &store,
            json!({"text": "another session deploys search", "session": "s2"}),
        )
        .await;

        let results = recall(&store, json!({"query": "deploys policy", "session": "s1"})).await;
        assert_eq!(
            texts(&results),
            [
                "Production deploys need an approval",
                "this session deploys the payments service"
            ]
        );
        let top = &results[0];
        assert_eq!(top["id"], g["id"]);
        assert_eq!(top["scope"], "global");
        assert_eq!(top["tags"], json!(["policy"]));
        assert!(top["score"].as_f64().unwrap() > 2.0);
        assert!(top["created_at"].as_str().unwrap().ends_with('Z'));

        let only_session = json!({"query": "deploys", "session": "s1", "include_global": false});
        assert_eq!(
            texts(&recall(&store, only_session).await),
            ["this session deploys the payments service"]
        );
        let global = recall(&store, json!({"query": "deploys", "limit": 50})).await;
        assert_eq!(texts(&global), ["Production deploys need an approval"]);
        assert!(
            recall(&store, json!({"query": "kubernetes"}))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_retried_attempt_replaces_instead_of_duplicating() {
        let (_dir, store) = temp_store();
        let h = MemoryWrite::new(store.clone());
        let attempt = ctx(1);
        let input = json!({"text": "only once", "session": "s1"});
        let first = output(h.run(attempt.clone(), input.clone()).await);
        let again = output(
            h.run(
                JobContext {
                    attempt: 2,
                    ..attempt.clone()
                },
                input,
            )
            .await,
        );
        assert_eq!(first["id"], attempt.job_id.to_string());
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["replaced"], true);
        assert_eq!(store.memory_count(&MemoryScope::session("s1")).unwrap(), 1);
        let entry = store
            .memory_get(MemoryId(attempt.job_id.0))
            .unwrap()
            .unwrap();
        assert_eq!(entry.source, Some(job_stream(attempt.job_id)));
    }

    #[tokio::test]
    async fn a_bad_input_at_run_time_fails_the_job_for_good() {
        let (_dir, store) = temp_store();
        let out = MemoryWrite::new(store.clone())
            .run(ctx(1), json!({"text": ""}))
            .await;
        assert!(
            matches!(&out, AttemptOutcome::Failed { error, retryable: false } if error.starts_with("input.text")),
            "{out:?}"
        );
        let out = MemorySearch::new(store)
            .run(ctx(1), json!({"query": 1}))
            .await;
        assert!(
            matches!(
                &out,
                AttemptOutcome::Failed {
                    retryable: false,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn memory_handlers_are_named_once() {
        let (_dir, store) = temp_store();
        let names: Vec<_> = memory_handlers(&store).iter().map(|h| h.name()).collect();
        assert_eq!(names, ["memory.write", "memory.search"]);
    }
}
