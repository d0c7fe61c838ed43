//! Memory: short texts an agent keeps (`/remember`) and finds again (`/recall`), per scope.
//!
//! A [`MemoryEntry`] belongs to one [`MemoryScope`]: [`MemoryScope::Global`] (every session
//! sees it) or [`MemoryScope::Session`] (one session's). Entries are written whole and never
//! edited in place; writing an entry again under its id replaces it (that is what makes a
//! retried `memory.write` job harmless: it writes under its job's id).
//!
//! Layout (both trees written only through [`Store::write`], so every change is atomic):
//! - `memory`: `scope ++ 0x00 ++ MemoryId` → `MemoryEntry`. A scope is a prefix, and ids are
//!   UUIDv7, so a prefix scan lists a scope oldest first. The scope part is its text form
//!   (`global`, `session:<id>`); session ids may not contain control characters, so no scope's
//!   prefix is a prefix of another's.
//! - `memory_index`, three kinds of keys:
//!   - `'e' ++ MemoryId` → the entry's scope and seq (finds an entry by id alone);
//!   - `'n' ++ scope` → the scope's count, first live seq and next seq (absent when empty);
//!   - `'q' ++ scope ++ 0x00 ++ seq` → `MemoryId`: the scope's entries in the order they were
//!     written (a seq is a per-scope counter), which is what retention drops from.
//!
//! Every write appends an event on the scope's stream `memory:<scope>`: `memory.written`
//! (`{id, scope, tags, source, bytes, replaced, dropped}`, without the text) or
//! `memory.deleted` (`{id, scope}`).
//!
//! Limits: a text is at most [`MAX_TEXT_BYTES`] (16 KiB), an entry has at most [`MAX_TAGS`]
//! tags. **Retention**: a scope holds at most [`MAX_ENTRIES_PER_SCOPE`] entries (10,000); a
//! write that would exceed it drops the scope's first-written entries in the same transaction,
//! and names them in the result and in the `memory.written` event. This is the guardrail that
//! keeps a chatty session from growing the store without bound; finer rules (age, size) come
//! later. Retention uses point reads only (through the write's view of pending changes), so
//! the cap is exact under concurrent writers.
//!
//! Search is keyword search over one scope (plus the global scope when asked): texts, tags and
//! queries are split into lowercase words at every character that is not alphanumeric, and an
//! entry scores one point per distinct query word it contains (in its text or its tags), plus
//! up to half a point for query words found among its tags. Entries scoring zero are left
//! out; ties go to the newer entry. A search reads every entry of the scopes it covers, which
//! the retention cap keeps bounded.
//!
//! Visibility: a write is seen at once by [`Store::memory_get`] and [`Store::memory_count`]
//! (point reads consult the store's pending changes); [`Store::memory_search`] commits what is
//! staged before it scans. Durability is the store's: await [`Store::durable`] before telling a
//! client a memory is kept.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::codec::decode;
use crate::error::StoreError;
use crate::event::NewEvent;
use crate::ids::MemoryId;
use crate::store::{Store, Tree, WriteTx};
use crate::time::Timestamp;

/// The longest text of an entry, in bytes (UTF-8): 16 KiB.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// The most tags an entry may have.
pub const MAX_TAGS: usize = 16;
/// The longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// The longest session id a scope may name, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 256;
/// The longest `source`, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256;
/// The longest search query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// How many results a search returns when not told.
pub const DEFAULT_SEARCH_LIMIT: usize = 5;
/// The most results a search returns.
pub const MAX_SEARCH_LIMIT: usize = 50;
/// The most entries one scope keeps; writing past it drops the oldest.
pub const MAX_ENTRIES_PER_SCOPE: usize = 10_000;

/// Whose memory an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryScope {
    /// Seen from every session.
    Global,
    /// One session's, by session id.
    Session(String),
}

impl MemoryScope {
    pub fn session(id: impl Into<String>) -> Self {
        MemoryScope::Session(id.into())
    }

    /// The session id of a session scope.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            MemoryScope::Global => None,
            MemoryScope::Session(id) => Some(id),
        }
    }

    /// Refuses a session id that is empty, too long or has control characters (field
    /// `session`).
    pub fn validate(&self) -> Result<(), MemoryError> {
        let MemoryScope::Session(id) = self else {
            return Ok(());
        };
        if id.is_empty() {
            return Err(MemoryError::invalid("session", "must not be empty"));
        }
        if id.len() > MAX_SESSION_ID_BYTES {
            return Err(MemoryError::invalid(
                "session",
                format!(
                    "is {} bytes; the maximum is {MAX_SESSION_ID_BYTES}",
                    id.len()
                ),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(MemoryError::invalid(
                "session",
                "must not contain control characters",
            ));
        }
        Ok(())
    }

    /// The event stream of the scope: `memory:global`, `memory:session:<id>`.
    pub fn stream(&self) -> String {
        format!("memory:{self}")
    }

    /// `scope ++ 0x00`: the key prefix of the scope's entries in the `memory` tree.
    fn prefix(&self) -> Vec<u8> {
        let mut k = self.to_string().into_bytes();
        k.push(0);
        k
    }
}

/// `global` or `session:<id>`.
impl fmt::Display for MemoryScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryScope::Global => f.write_str("global"),
            MemoryScope::Session(id) => write!(f, "session:{id}"),
        }
    }
}

impl FromStr for MemoryScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            _ if s == "global" => Ok(MemoryScope::Global),
            Some(("session", id)) if !id.is_empty() => Ok(MemoryScope::Session(id.to_string())),
            _ => Err(format!(
                "`{s}` is not a memory scope; expected `global` or `session:<id>`"
            )),
        }
    }
}

impl Serialize for MemoryScope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemoryScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for MemoryScope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("`global` or `session:<session id>`"))
            .examples(["session:ops-42"])
            .into()
    }
}

impl utoipa::ToSchema for MemoryScope {}

/// One remembered text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemoryEntry {
    pub id: MemoryId,
    pub scope: MemoryScope,
    pub text: String,
    /// At most 16, each 1–64 bytes; searched like the text, and a match there scores a bonus.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who wrote it, e.g. the id of the `memory.write` job.
    #[serde(default)]
    pub source: Option<String>,
    pub created_at: Timestamp,
}

impl MemoryEntry {
    /// A new entry with a fresh id, created now, without tags or source.
    pub fn new(scope: MemoryScope, text: impl Into<String>) -> Self {
        MemoryEntry {
            id: MemoryId::new(),
            scope,
            text: text.into(),
            tags: Vec::new(),
            source: None,
            created_at: Timestamp::now(),
        }
    }

    pub fn with_id(mut self, id: MemoryId) -> Self {
        self.id = id;
        self
    }

    /// Sets the tags, each trimmed, dropping repeats (compared case-insensitively).
    pub fn with_tags<S: AsRef<str>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags.clear();
        for tag in tags {
            let tag = tag.as_ref().trim();
            if !self
                .tags
                .iter()
                .any(|t| t.to_lowercase() == tag.to_lowercase())
            {
                self.tags.push(tag.to_string());
            }
        }
        self
    }

    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Refuses an entry the store would not keep. The error names the field: `text`, `tags`,
    /// `tags[i]`, `session` or `source`.
    pub fn validate(&self) -> Result<(), MemoryError> {
        self.scope.validate()?;
        if self.text.trim().is_empty() {
            return Err(MemoryError::invalid("text", "must not be empty"));
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(MemoryError::invalid(
                "text",
                format!(
                    "is {} bytes; the maximum is {MAX_TEXT_BYTES} (16 KiB)",
                    self.text.len()
                ),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(MemoryError::invalid(
                "tags",
                format!("{} tags; the maximum is {MAX_TAGS}", self.tags.len()),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            check_tag(tag)
                .map_err(|message| MemoryError::invalid(format!("tags[{i}]"), message))?;
        }
        if let Some(source) = &self.source
            && source.len() > MAX_SOURCE_BYTES
        {
            return Err(MemoryError::invalid(
                "source",
                format!(
                    "is {} bytes; the maximum is {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses a tag that is empty, longer than [`MAX_TAG_BYTES`] or has control characters.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(format!(
            "is {} bytes; the maximum is {MAX_TAG_BYTES}",
            tag.len()
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Why a memory operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MemoryError {
    /// A bad entry or query; `field` is relative (`text`, `tags[2]`, `query`, ...), so a caller
    /// can prefix it (`input.text`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MemoryError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        MemoryError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What [`Store::memory_put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryWritten {
    pub entry: MemoryEntry,
    /// An entry with this id existed and was replaced.
    pub replaced: bool,
    /// The scope's first-written entries, dropped to stay within the per-scope cap.
    pub dropped: Vec<MemoryId>,
}

/// A keyword search (see the module doc for the scoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryQuery {
    pub scope: MemoryScope,
    pub query: String,
    /// 1 to [`MAX_SEARCH_LIMIT`]; larger values are clamped.
    pub limit: usize,
    /// With a session scope, search the global scope too.
    pub include_global: bool,
}

impl MemoryQuery {
    /// A search of `scope` (and the global scope) for the [`DEFAULT_SEARCH_LIMIT`] best matches.
    pub fn new(scope: MemoryScope, query: impl Into<String>) -> Self {
        MemoryQuery {
            scope,
            query: query.into(),
            limit: DEFAULT_SEARCH_LIMIT,
            include_global: true,
        }
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn include_global(mut self, include: bool) -> Self {
        self.include_global = include;
        self
    }

    /// Refuses a query with no words, or a bad scope. Fields: `query`, `session`.
    pub fn validate(&self) -> Result<(), MemoryError> {
        self.scope.validate()?;
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(MemoryError::invalid(
                "query",
                format!(
                    "is {} bytes; the maximum is {MAX_QUERY_BYTES}",
                    self.query.len()
                ),
            ));
        }
        if keywords(&self.query).is_empty() {
            return Err(MemoryError::invalid(
                "query",
                "has no words to search for (letters or digits)",
            ));
        }
        Ok(())
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemoryHit {
    pub entry: MemoryEntry,
    /// Distinct query words found, plus up to 0.5 for those found among the tags.
    pub score: f64,
}

/// The distinct lowercase words of `text`, in order of first appearance: the runs of
/// alphanumeric characters (Unicode-aware, so `Ääkköset` is one word).
pub fn keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in words(text) {
        if !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The score of `entry` for the query words `query` (distinct, lowercase); 0 when none match.
pub fn score(query: &[String], entry: &MemoryEntry) -> f64 {
    Scorer::new(query).score(entry)
}

/// The query words by position, built once per search.
struct Scorer<'q> {
    words: HashMap<&'q str, usize>,
}

impl<'q> Scorer<'q> {
    fn new(query: &'q [String]) -> Self {
        Scorer {
            words: query
                .iter()
                .enumerate()
                .map(|(i, w)| (w.as_str(), i))
                .collect(),
        }
    }

    fn score(&self, entry: &MemoryEntry) -> f64 {
        let n = self.words.len();
        if n == 0 {
            return 0.0;
        }
        let mut in_text = vec![false; n];
        let mut in_tags = vec![false; n];
        self.mark(&mut in_text, &entry.text);
        for tag in &entry.tags {
            self.mark(&mut in_tags, tag);
        }
        let matched = (0..n).filter(|&i| in_text[i] || in_tags[i]).count();
        if matched == 0 {
            return 0.0;
        }
        let tagged = in_tags.iter().filter(|&&t| t).count();
        matched as f64 + 0.5 * tagged as f64 / n as f64
    }

    fn mark(&self, found: &mut [bool], text: &str) {
        for word in words(text) {
            if let Some(&i) = self.words.get(word.as_str()) {
                found[i] = true;
            }
        }
    }
}

/// Best first: higher score, then newer, then higher id.
fn rank(a: &MemoryHit, b: &MemoryHit) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| b.entry.created_at.cmp(&a.entry.created_at))
        .then_with(|| b.entry.id.cmp(&a.entry.id))
}

fn entry_key(scope: &MemoryScope, id: MemoryId) -> Vec<u8> {
    let mut k = scope.prefix();
    k.extend_from_slice(&id.as_key());
    k
}

fn index_key(id: MemoryId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'e');
    k.extend_from_slice(&id.as_key());
    k
}

fn stats_key(scope: &MemoryScope) -> Vec<u8> {
    let mut k = vec![b'n'];
    k.extend_from_slice(scope.to_string().as_bytes());
    k
}

fn seq_key(scope: &MemoryScope, seq: u64) -> Vec<u8> {
    let mut k = vec![b'q'];
    k.extend_from_slice(&scope.prefix());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Where an entry is: its scope, and its place in the scope's write order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexRecord {
    scope: MemoryScope,
    seq: u64,
}

/// The bookkeeping of a scope with entries (absent when it has none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScopeStats {
    count: u64,
    /// No entry of the scope has a lower seq.
    first: u64,
    /// The seq of the scope's next new entry.
    next: u64,
}

fn read_stats(tx: &WriteTx<'_>, scope: &MemoryScope) -> Result<ScopeStats, StoreError> {
    Ok(tx
        .get::<ScopeStats>(Tree::MemoryIndex, &stats_key(scope))?
        .unwrap_or_default())
}

fn write_stats(tx: &mut WriteTx<'_>, scope: &MemoryScope, stats: &ScopeStats) {
    if stats.count == 0 {
        // No seq keys are left, so numbering may start over.
        tx.remove(Tree::MemoryIndex, stats_key(scope));
    } else {
        tx.put(Tree::MemoryIndex, stats_key(scope), stats);
    }
}

/// Removes the entry `id` at `seq` of `scope` and its seq key, and counts it out. Its
/// `'e'` key is the caller's.
fn unlink(
    tx: &mut WriteTx<'_>,
    scope: &MemoryScope,
    seq: u64,
    id: MemoryId,
) -> Result<(), StoreError> {
    tx.remove(Tree::Memory, entry_key(scope, id));
    tx.remove(Tree::MemoryIndex, seq_key(scope, seq));
    let mut stats = read_stats(tx, scope)?;
    stats.count = stats.count.saturating_sub(1);
    write_stats(tx, scope, &stats);
    Ok(())
}

impl Store {
    /// Keeps `entry` (replacing an entry with its id, in whatever scope), dropping the scope's
    /// oldest entries past [`MAX_ENTRIES_PER_SCOPE`].
    pub fn memory_put(&self, entry: MemoryEntry) -> Result<MemoryWritten, MemoryError> {
        self.memory_put_capped(entry, MAX_ENTRIES_PER_SCOPE)
    }

    /// [`Store::memory_put`] with another per-scope cap (at least 1).
    pub fn memory_put_capped(
        &self,
        entry: MemoryEntry,
        max_per_scope: usize,
    ) -> Result<MemoryWritten, MemoryError> {
        entry.validate()?;
        let cap = max_per_scope.max(1) as u64;
        let scope = entry.scope.clone();
        let id = entry.id;
        self.write(|tx| {
            let previous = tx.get::<IndexRecord>(Tree::MemoryIndex, &index_key(id))?;
            let replaced = previous.is_some();
            let mut dropped = Vec::new();
            match previous {
                // Replaced in place: same key, same place in the write order.
                Some(prev) if prev.scope == scope => {}
                previous => {
                    if let Some(prev) = previous {
                        unlink(tx, &prev.scope, prev.seq, id)?;
                    }
                    let mut stats = read_stats(tx, &scope)?;
                    let seq = stats.next;
                    stats.next += 1;
                    stats.count += 1;
                    tx.put(Tree::MemoryIndex, seq_key(&scope, seq), &id);
                    tx.put(
                        Tree::MemoryIndex,
                        index_key(id),
                        &IndexRecord {
                            scope: scope.clone(),
                            seq,
                        },
                    );
                    // Retention: drop the first-written entries past the cap. Seqs of deleted
                    // entries are holes, each stepped over once.
                    while stats.count > cap && stats.first < seq {
                        let k = seq_key(&scope, stats.first);
                        stats.first += 1;
                        if let Some(old) = tx.get::<MemoryId>(Tree::MemoryIndex, &k)? {
                            tx.remove(Tree::MemoryIndex, k);
                            tx.remove(Tree::MemoryIndex, index_key(old));
                            tx.remove(Tree::Memory, entry_key(&scope, old));
                            stats.count -= 1;
                            dropped.push(old);
                        }
                    }
                    write_stats(tx, &scope, &stats);
                }
            }
            tx.put(Tree::Memory, entry_key(&scope, id), &entry);
            tx.append(NewEvent::new(
                scope.stream(),
                "memory.written",
                json!({
                    "id": id,
                    "scope": scope,
                    "tags": entry.tags,
                    "source": entry.source,
                    "bytes": entry.text.len(),
                    "replaced": replaced,
                    "dropped": dropped,
                }),
            ));
            Ok(MemoryWritten {
                entry: entry.clone(),
                replaced,
                dropped,
            })
        })
    }

    /// The entry with this id, in whatever scope.
    pub fn memory_get(&self, id: MemoryId) -> Result<Option<MemoryEntry>, StoreError> {
        let Some(rec) = self.get::<IndexRecord>(Tree::MemoryIndex, &index_key(id))? else {
            return Ok(None);
        };
        self.get(Tree::Memory, &entry_key(&rec.scope, id))
    }

    /// Forgets an entry; returns it, or `None` if there was none.
    pub fn memory_delete(&self, id: MemoryId) -> Result<Option<MemoryEntry>, StoreError> {
        self.write(|tx| {
            let Some(rec) = tx.get::<IndexRecord>(Tree::MemoryIndex, &index_key(id))? else {
                return Ok(None);
            };
            let entry = tx.get::<MemoryEntry>(Tree::Memory, &entry_key(&rec.scope, id))?;
            unlink(tx, &rec.scope, rec.seq, id)?;
            tx.remove(Tree::MemoryIndex, index_key(id));
            tx.append(NewEvent::new(
                rec.scope.stream(),
                "memory.deleted",
                json!({ "id": id, "scope": rec.scope }),
            ));
            Ok(entry)
        })
    }

    /// How many entries `scope` holds.
    pub fn memory_count(&self, scope: &MemoryScope) -> Result<u64, StoreError> {
        Ok(self
            .get::<ScopeStats>(Tree::MemoryIndex, &stats_key(scope))?
            .map_or(0, |s| s.count))
    }

    /// The entries of `query.scope` (and of the global scope, if `include_global`) matching
    /// the query's words, best first, at most `limit` (clamped to 1..=[`MAX_SEARCH_LIMIT`]).
    pub fn memory_search(&self, query: &MemoryQuery) -> Result<Vec<MemoryHit>, MemoryError> {
        query.validate()?;
        let words = keywords(&query.query);
        let scorer = Scorer::new(&words);
        let limit = query.limit.clamp(1, MAX_SEARCH_LIMIT);
        let mut scopes = vec![query.scope.clone()];
        if query.include_global && query.scope != MemoryScope::Global {
            scopes.push(MemoryScope::Global);
        }
        self.settle()?;
        let mut hits: Vec<MemoryHit> = Vec::new();
        for scope in &scopes {
            for item in self.tree(Tree::Memory).scan_prefix(scope.prefix()) {
                let (k, v) = item.map_err(StoreError::from)?;
                let entry: MemoryEntry = decode(Tree::Memory.name(), &k, &v)?;
                let score = scorer.score(&entry);
                if score > 0.0 {
                    hits.push(MemoryHit { entry, score });
                    // Keep memory bounded when many entries match.
                    if hits.len() >= 4 * limit + 64 {
                        hits.sort_by(rank);
                        hits.truncate(limit);
                    }
                }
            }
        }
        hits.sort_by(rank);
        hits.truncate(limit);
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, tags: &[&str]) -> MemoryEntry {
        MemoryEntry::new(MemoryScope::Global, text).with_tags(tags.iter().copied())
    }

    #[test]
    fn scopes_round_trip_through_text_and_json() {
        for scope in [MemoryScope::Global, MemoryScope::session("ops:42/a b")] {
            let text = scope.to_string();
            assert_eq!(text.parse::<MemoryScope>().unwrap(), scope);
            let json = serde_json::to_value(&scope).unwrap();
            assert_eq!(json, serde_json::Value::String(text));
            assert_eq!(serde_json::from_value::<MemoryScope>(json).unwrap(), scope);
        }
        assert_eq!(
            MemoryScope::session("s1").stream(),
            "memory:session:s1".to_string()
        );
        for bad in ["", "session", "session:", "Global", "user:1"] {
            assert!(bad.parse::<MemoryScope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_prefixes_never_nest() {
        // `session:a` must not be a prefix of `session:ab`'s keys.
        let a = MemoryScope::session("a").prefix();
        let ab = entry_key(&MemoryScope::session("ab"), MemoryId::new());
        assert!(!ab.starts_with(&a));
        assert!(
            MemoryScope::session("a\0b")
                .validate()
                .is_err_and(|e| e.to_string().starts_with("session:"))
        );
    }

    #[test]
    fn keywords_are_lowercase_distinct_and_unicode_aware() {
        assert_eq!(
            keywords("Deploy the API-key; deploy ÄÄKKÖSET_2 now!"),
            ["deploy", "the", "api", "key", "ääkköset", "2", "now"]
        );
        assert!(keywords(" ,.;- ").is_empty());
    }

    #[test]
    fn score_counts_distinct_words_with_a_tag_bonus() {
        let q = keywords("staging deploy key");
        assert_eq!(score(&q, &entry("nothing relevant", &[])), 0.0);
        assert_eq!(score(&q, &entry("The staging box", &[])), 1.0);
        assert_eq!(
            score(&q, &entry("Deploy to staging, staging, staging", &[])),
            2.0
        );
        // `key` found only in a tag: a full point plus a third of the tag bonus.
        let tagged = score(&q, &entry("deploy to staging", &["SSH-Key"]));
        assert!((tagged - (3.0 + 0.5 / 3.0)).abs() < 1e-9, "{tagged}");
        // The bonus never outweighs one more matched word.
        let all_tags = score(&q, &entry("x", &["staging", "deploy"]));
        assert!(all_tags < 3.0 && all_tags > 2.0, "{all_tags}");
    }

    #[test]
    fn validation_names_the_field() {
        let field = |e: MemoryEntry| match e.validate() {
            Err(MemoryError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(entry("  \n", &[])), "text");
        assert_eq!(field(entry(&"x".repeat(MAX_TEXT_BYTES + 1), &[])), "text");
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(field(entry("x", &[]).with_tags(&many)), "tags");
        assert_eq!(field(entry("x", &["ok", " "])), "tags[1]");
        assert_eq!(
            field(entry("x", &["ok", &"t".repeat(MAX_TAG_BYTES + 1)])),
            "tags[1]"
        );
        assert_eq!(
            field(MemoryEntry::new(MemoryScope::session(""), "x")),
            "session"
        );
        assert_eq!(
            field(entry("x", &[]).with_source("s".repeat(MAX_SOURCE_BYTES + 1))),
            "source"
        );
        assert!(
            entry(&"x".repeat(MAX_TEXT_BYTES), &["a"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn tags_are_trimmed_and_deduplicated() {
        let e = entry("x", &[" Rust ", "rust", "ops"]);
        assert_eq!(e.tags, ["Rust", "ops"]);
    }

    #[test]
    fn queries_need_a_word() {
        let q = MemoryQuery::new(MemoryScope::Global, "?!");
        assert!(
            q.validate()
                .is_err_and(|e| e.to_string().starts_with("query:"))
        );
        let long = MemoryQuery::new(MemoryScope::Global, "a".repeat(MAX_QUERY_BYTES + 1));
        assert!(long.validate().is_err());
        assert!(
            MemoryQuery::new(MemoryScope::Global, "ok")
                .validate()
                .is_ok()
        );
    }
}
