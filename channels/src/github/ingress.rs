//! The durable front door of the GitHub channel: verify, dedupe, store, flush, then answer.
//!
//! [`GithubIngress::accept`] checks the signature over the raw body **before** anything else
//! looks at it, then parses the JSON, maps it with [`map_event`], and in **one** atomic store
//! write records the delivery id in the `deliveries` tree and appends a `github.received` event
//! to the [`GITHUB_STREAM`] stream. It returns only once that write is on disk, so a 2xx means
//! the delivery survives a crash; a second delivery with the same `X-GitHub-Delivery` (GitHub's
//! "Redeliver" keeps the id) is answered as a duplicate and stores nothing.
//!
//! `ping` deliveries are stored like any other (kind `ping`): the feed then shows when a hook was
//! set up and that its secret works; consumers skip them by kind.
//!
//! Consumers (the session router) follow the stream with [`follow`] from the last seq they
//! handled, and decode each event with [`StoredDelivery::from_event`].
//!
//! Delivery records are kept for a retention (72 h by default) and then forgotten by
//! [`purge_deliveries`], which the gateway's janitor calls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Event, Follower, NewEvent, Store, StoreError, StreamFilter, Timestamp, Tree};

use super::event::{CommandRules, map_event};
use super::signature::{SignatureError, verify};

/// The stream every accepted delivery is appended to.
pub const GITHUB_STREAM: &str = "github";
/// The kind of the event each accepted delivery becomes.
pub const RECEIVED_KIND: &str = "github.received";
/// How long delivery ids are remembered when nothing else is configured.
pub const DEFAULT_DEDUPE_RETENTION: Duration = Duration::from_secs(72 * 3600);
/// Longest accepted `X-GitHub-Delivery` (GitHub sends 36-character UUIDs).
pub const MAX_DELIVERY_ID_LEN: usize = 128;
/// Longest accepted `X-GitHub-Event`.
const MAX_EVENT_NAME_LEN: usize = 64;
/// Bodies up to this size are verified and parsed on the async runtime (well under 0.1 ms of
/// CPU for the typical 5–30 KB delivery, less than handing it to another thread costs);
/// larger ones on a blocking thread.
const INLINE_STAGE_BYTES: usize = 32 * 1024;

/// The metric counting deliveries by outcome.
pub const DELIVERIES_METRIC: &str = "rausku_webhook_deliveries_total";

/// The request headers the ingress reads (raw, as sent).
#[derive(Debug, Clone, Default)]
pub struct DeliveryHeaders {
    /// `X-GitHub-Event`, e.g. `pull_request`.
    pub event: Option<String>,
    /// `X-GitHub-Delivery`: a unique id per delivery, the dedupe key.
    pub delivery: Option<String>,
    /// `X-Hub-Signature-256`, or the legacy `X-Hub-Signature` when that is all there is (so a
    /// SHA-1-only sender is told why it is refused).
    pub signature: Option<String>,
}

/// How the ingress is set up.
#[derive(Clone)]
pub struct IngressConfig {
    /// The webhook secret (`RAUSKU_GITHUB_WEBHOOK_SECRET`).
    pub secret: Vec<u8>,
    /// Which comments are commands, and who the bot is.
    pub commands: CommandRules,
    /// How long delivery ids are remembered for dedupe.
    pub dedupe_retention: Duration,
}

impl IngressConfig {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        IngressConfig {
            secret: secret.into(),
            commands: CommandRules::default(),
            dedupe_retention: DEFAULT_DEDUPE_RETENTION,
        }
    }
}

impl std::fmt::Debug for IngressConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressConfig")
            .field("secret", &"<redacted>")
            .field("commands", &self.commands)
            .field("dedupe_retention", &self.dedupe_retention)
            .finish()
    }
}

/// What happened to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// New, and now durable: `seq` on the [`GITHUB_STREAM`] stream (answer 202).
    Stored {
        delivery: String,
        seq: u64,
        global_seq: u64,
    },
    /// This delivery id was stored before (at `seq`); nothing new was stored (answer 200).
    Duplicate {
        delivery: String,
        seq: u64,
        first_received_at: Timestamp,
    },
    /// A `ping`, stored (answer 200: there is nothing to process).
    Ping {
        delivery: String,
        seq: u64,
        global_seq: u64,
    },
}

impl Accepted {
    pub fn delivery(&self) -> &str {
        match self {
            Accepted::Stored { delivery, .. }
            | Accepted::Duplicate { delivery, .. }
            | Accepted::Ping { delivery, .. } => delivery,
        }
    }

    /// The delivery's seq on the [`GITHUB_STREAM`] stream (the original's, for a duplicate).
    pub fn seq(&self) -> u64 {
        match self {
            Accepted::Stored { seq, .. }
            | Accepted::Duplicate { seq, .. }
            | Accepted::Ping { seq, .. } => *seq,
        }
    }

    /// The label of the deliveries metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Accepted::Stored { .. } => "stored",
            Accepted::Duplicate { .. } => "duplicate",
            Accepted::Ping { .. } => "ping",
        }
    }
}

/// Why a delivery was refused. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(
        "the X-GitHub-Delivery header is missing; GitHub sends a unique id with every delivery, \
         other senders must send one too (e.g. a UUID)"
    )]
    MissingDelivery,
    #[error(
        "X-GitHub-Delivery must be 1 to {MAX_DELIVERY_ID_LEN} visible ASCII characters (GitHub \
         sends a UUID); got {0:?}"
    )]
    InvalidDelivery(String),
    #[error("the X-GitHub-Event header is missing; it names the event, e.g. `push`")]
    MissingEvent,
    #[error(
        "X-GitHub-Event must be 1 to {MAX_EVENT_NAME_LEN} characters of a-z, 0-9 and `_` \
         (e.g. `pull_request`); got {0:?}"
    )]
    InvalidEvent(String),
    #[error("the body is not valid JSON ({0}); set the webhook's content type to application/json")]
    InvalidJson(String),
    #[error("the body must be a JSON object, as GitHub sends; got {0}")]
    NotAnObject(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngressError {
    /// The label of the deliveries metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            IngressError::Signature(_) => "invalid_signature",
            IngressError::Store(_) => "error",
            _ => "invalid",
        }
    }
}

/// The data of a `github.received` event: everything a consumer needs, and the full payload.
///
/// A consumer that does not need the payload decodes a [`DeliveryRoute`] instead, which skips
/// it rather than copying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`, e.g. `issue_comment`.
    pub event: String,
    /// `<event>.<action>`, or the event alone (see [`map_event`]).
    pub kind: String,
    /// The session this delivery belongs to, e.g. `github:owner/repo#12`.
    pub session_key: String,
    /// Flattened fields for templates.
    pub context: Value,
    /// The text after a command prefix, for a new comment addressed to the bot.
    pub command: Option<String>,
    /// The payload as GitHub sent it.
    pub payload: Value,
}

/// What routing a delivery to its session takes: a [`StoredDelivery`] without its payload,
/// which decoding skips instead of copying.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeliveryRoute {
    pub delivery: String,
    pub kind: String,
    pub session_key: String,
    pub context: Value,
    pub command: Option<String>,
}

impl StoredDelivery {
    /// The event data, built by moving the fields (a payload of megabytes is not copied, as
    /// `serde_json::to_value` would).
    pub fn into_value(self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("delivery".into(), Value::String(self.delivery));
        m.insert("event".into(), Value::String(self.event));
        m.insert("kind".into(), Value::String(self.kind));
        m.insert("session_key".into(), Value::String(self.session_key));
        m.insert("context".into(), self.context);
        m.insert(
            "command".into(),
            self.command.map_or(Value::Null, Value::String),
        );
        m.insert("payload".into(), self.payload);
        Value::Object(m)
    }

    /// Decodes a `github.received` event; `None` for an event of another kind.
    pub fn from_event(event: &Event) -> Option<Result<Self, serde_json::Error>> {
        decode(event)
    }
}

impl DeliveryRoute {
    /// Decodes the routing fields of a `github.received` event; `None` for an event of
    /// another kind.
    pub fn from_event(event: &Event) -> Option<Result<Self, serde_json::Error>> {
        decode(event)
    }
}

/// Reads a `github.received` event's data in place (the event is shared, not copied).
fn decode<T: DeserializeOwned>(event: &Event) -> Option<Result<T, serde_json::Error>> {
    (event.kind == RECEIVED_KIND).then(|| T::deserialize(&event.data))
}

/// The dedupe record of one delivery id (tree `deliveries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub delivery: String,
    pub event: String,
    pub received_at: Timestamp,
    /// Seq of its `github.received` event on the [`GITHUB_STREAM`] stream.
    pub seq: u64,
    /// The same event's position in the global feed.
    pub global_seq: u64,
}

/// Verifies, dedupes and durably stores GitHub deliveries. Cheap to clone.
#[derive(Clone)]
pub struct GithubIngress {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where deliveries and their dedupe records go.
    store: Store,
    /// Signature secret, command rules and dedupe retention.
    config: IngressConfig,
}

impl GithubIngress {
    pub fn new(store: Store, config: IngressConfig) -> Self {
        GithubIngress {
            inner: Arc::new(Inner { store, config }),
        }
    }

    pub fn config(&self) -> &IngressConfig {
        &self.inner.config
    }

    /// Verifies, parses, dedupes and stores one delivery; returns once it is durable. Counts
    /// the outcome in [`DELIVERIES_METRIC`].
    pub async fn accept(
        &self,
        headers: DeliveryHeaders,
        body: Bytes,
    ) -> Result<Accepted, IngressError> {
        let staged = if body.len() <= INLINE_STAGE_BYTES {
            self.inner.stage(&headers, &body)
        } else {
            // Hashing and parsing a body of megabytes is CPU work: off the async runtime.
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.stage(&headers, &body))
                .await
                .unwrap_or_else(|e| {
                    Err(IngressError::Store(StoreError::Io(format!(
                        "the delivery task failed: {e}"
                    ))))
                })
        };
        let result = match staged {
            // Answered only once durable: also a duplicate, whose original may still be in
            // the batch being flushed.
            Ok(accepted) => match self.inner.store.durable().await {
                Ok(()) => Ok(accepted),
                Err(e) => Err(IngressError::Store(e)),
            },
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(a) => {
                tracing::debug!(
                    delivery = a.delivery(),
                    seq = a.seq(),
                    outcome = a.outcome(),
                    "github delivery accepted"
                );
                a.outcome()
            }
            Err(e) => {
                tracing::info!(error = %e, outcome = e.outcome(), "github delivery refused");
                e.outcome()
            }
        };
        count(outcome);
        result
    }

    /// The dedupe record of a delivery id, if it is remembered.
    pub fn delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.inner.store.get(Tree::Deliveries, id.as_bytes())
    }

    /// Forgets delivery ids older than the configured retention (blocking: run it on a blocking
    /// thread). Returns how many.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let cutoff = Timestamp::now().as_millis()
            - i64::try_from(self.inner.config.dedupe_retention.as_millis()).unwrap_or(i64::MAX);
        purge_deliveries(&self.inner.store, Timestamp::from_millis(cutoff))
    }

    /// Follows the [`GITHUB_STREAM`] stream after `after` (see [`follow`]).
    pub fn follow(&self, after: u64) -> Follower {
        follow(&self.inner.store, after)
    }
}

impl Inner {
    /// Everything up to the staged write, synchronously.
    fn stage(&self, headers: &DeliveryHeaders, body: &[u8]) -> Result<Accepted, IngressError> {
        verify(&self.config.secret, headers.signature.as_deref(), body)?;
        let delivery = delivery_id(headers.delivery.as_deref())?;
        let event_name = event_name(headers.event.as_deref())?;
        let payload: Value =
            serde_json::from_slice(body).map_err(|e| IngressError::InvalidJson(e.to_string()))?;
        if !payload.is_object() {
            return Err(IngressError::NotAnObject(json_kind(&payload)));
        }
        let mapped = map_event(&event_name, &payload, &self.config.commands);
        let data = StoredDelivery {
            delivery: delivery.clone(),
            event: event_name.clone(),
            kind: mapped.kind,
            session_key: mapped.session_key,
            context: mapped.context,
            command: mapped.command,
            payload,
        }
        .into_value();
        let is_ping = event_name == "ping";
        self.store.write(|tx| {
            let key = delivery.as_bytes();
            if let Some(rec) = tx.get::<DeliveryRecord>(Tree::Deliveries, key)? {
                return Ok(Accepted::Duplicate {
                    delivery: delivery.clone(),
                    seq: rec.seq,
                    first_received_at: rec.received_at,
                });
            }
            let at = tx.append_at(NewEvent::new(GITHUB_STREAM, RECEIVED_KIND, data))?;
            let record = DeliveryRecord {
                delivery: delivery.clone(),
                event: event_name.clone(),
                received_at: Timestamp::now(),
                seq: at.seq,
                global_seq: at.global_seq,
            };
            tx.put(Tree::Deliveries, key.to_vec(), &record);
            Ok(if is_ping {
                Accepted::Ping {
                    delivery: delivery.clone(),
                    seq: at.seq,
                    global_seq: at.global_seq,
                }
            } else {
                Accepted::Stored {
                    delivery: delivery.clone(),
                    seq: at.seq,
                    global_seq: at.global_seq,
                }
            })
        })
    }
}

/// Follows the [`GITHUB_STREAM`] stream from just after `after` (a seq on that stream): first
/// what the store has, then live events, with no gap and no duplicate. Decode each event with
/// [`StoredDelivery::from_event`].
pub fn follow(store: &Store, after: u64) -> Follower {
    Follower::new(
        store,
        StreamFilter::Stream(GITHUB_STREAM.to_string()),
        after,
    )
}

/// Forgets delivery records received before `cutoff` (blocking). Returns how many. A delivery
/// id that comes again after it was forgotten is stored again.
pub fn purge_deliveries(store: &Store, cutoff: Timestamp) -> Result<usize, StoreError> {
    let stale: Vec<String> = store
        .scan::<DeliveryRecord>(Tree::Deliveries)?
        .into_iter()
        .filter(|r| r.received_at < cutoff)
        .map(|r| r.delivery)
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    store.write(|tx| {
        let mut n = 0;
        for id in stale {
            // Checked again under the writer lock: a record purged and re-created since the
            // scan is new and stays.
            let still_stale = tx
                .get::<DeliveryRecord>(Tree::Deliveries, id.as_bytes())?
                .is_some_and(|r| r.received_at < cutoff);
            if still_stale {
                tx.remove(Tree::Deliveries, id.into_bytes());
                n += 1;
            }
        }
        Ok::<_, StoreError>(n)
    })
}

/// Counts one delivery outcome.
pub fn count(outcome: &'static str) {
    metrics::counter!(DELIVERIES_METRIC, "outcome" => outcome).increment(1);
}

fn delivery_id(raw: Option<&str>) -> Result<String, IngressError> {
    let id = raw.map(str::trim).unwrap_or_default();
    if id.is_empty() {
        return Err(IngressError::MissingDelivery);
    }
    if id.len() > MAX_DELIVERY_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        let shown: String = id.chars().take(MAX_DELIVERY_ID_LEN).collect();
        return Err(IngressError::InvalidDelivery(shown));
    }
    Ok(id.to_string())
}

fn event_name(raw: Option<&str>) -> Result<String, IngressError> {
    let name = raw.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(IngressError::MissingEvent);
    }
    let valid = name.len() <= MAX_EVENT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        let shown: String = name.chars().take(MAX_EVENT_NAME_LEN).collect();
        return Err(IngressError::InvalidEvent(shown));
    }
    Ok(name.to_string())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(matches!(
            delivery_id(None),
            Err(IngressError::MissingDelivery)
        ));
        assert!(matches!(
            delivery_id(Some(" ")),
            Err(IngressError::MissingDelivery)
        ));
        assert!(matches!(
            delivery_id(Some("a b")),
            Err(IngressError::InvalidDelivery(_))
        ));
        let long = "x".repeat(MAX_DELIVERY_ID_LEN + 1);
        assert!(matches!(
            delivery_id(Some(&long)),
            Err(IngressError::InvalidDelivery(_))
        ));
        assert_eq!(
            delivery_id(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")).unwrap(),
            "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
        assert!(matches!(event_name(None), Err(IngressError::MissingEvent)));
        assert!(matches!(
            event_name(Some("Push!")),
            Err(IngressError::InvalidEvent(_))
        ));
        assert_eq!(event_name(Some("pull_request")).unwrap(), "pull_request");
    }

    #[test]
    fn into_value_round_trips_like_serde() {
        let d = StoredDelivery {
            delivery: "d".into(),
            event: "issues".into(),
            kind: "issues.opened".into(),
            session_key: "github:o/r#1".into(),
            context: serde_json::json!({"repo": "o/r"}),
            command: Some("deploy".into()),
            payload: serde_json::json!({"action": "opened"}),
        };
        assert_eq!(d.clone().into_value(), serde_json::to_value(&d).unwrap());
        let none = StoredDelivery { command: None, ..d };
        assert_eq!(
            none.clone().into_value(),
            serde_json::to_value(&none).unwrap()
        );
    }

    #[test]
    fn outcomes_are_bounded_labels() {
        assert_eq!(
            IngressError::Signature(SignatureError::Missing).outcome(),
            "invalid_signature"
        );
        assert_eq!(IngressError::MissingDelivery.outcome(), "invalid");
        assert_eq!(IngressError::Store(StoreError::Closed).outcome(), "error");
    }
}
