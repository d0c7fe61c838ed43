//! The WebSocket console: one `Console` actor per connection, speaking JSON frames.
//!
//! The gateway's `GET /v1/console` route owns the socket. It opens a [`ConsoleConnection`],
//! hands every frame the client sends to it ([`ConsoleConnection::received`]) and writes
//! whatever comes out of the connection's bounded outgoing queue ([`Outgoing`]). Everything
//! else — authentication, scopes, the methods, subscriptions, slow consumers — is here, so it
//! can be tested without a socket. `channels/CONSOLE.md` documents the protocol with a
//! transcript.
//!
//! Frames: requests `{"type":"req","id":…,"method":…,"params":{…}}`, responses
//! `{"type":"res","id":…,"ok":true,"payload":…}` or `{"type":"res","id":…,"ok":false,
//! "error":{"code","message"}}`, events `{"type":"event","event":…,"payload":…,"seq":N}` (`seq`
//! only on events of a stream).
//!
//! - The first request must be `connect {token}`; anything else first, or a bad token, gets an
//!   error response and the socket is closed with 1008 (policy violation). The key is checked
//!   again on every request and every tick, so a revoked key loses the socket.
//! - A malformed frame after `connect` gets an `invalid_request` response (with the request's
//!   `id` when it could be read, else `null`); the connection stays open.
//! - Session keys: a key without `:` is a console session, `ops` → `console:ops`; any other
//!   key is used as given, so the console steers sessions of every channel.
//! - Each subscription is a task with its own [`Follower`] (replay from the store, then live,
//!   no gap). Its events go through the connection's bounded queue; when the queue stays full
//!   for [`ConsoleConfig::lag_grace`], the subscription is dropped and the client is sent
//!   `lagged {key, last_seq}` (after every event it was sent) so it can subscribe again from
//!   `last_seq`. Nothing upstream waits for a slow client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentloop::{Inbound, RouteError, SessionService};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::{
    ApprovalId, ApprovalState, DecideError, Event, Follower, JobId, JobState, MessageDedupe, Scope,
    Store, StoreError, StreamFilter, Timestamp, job_stream,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, warn};

use crate::auth::{ApiKeys, Principal};

/// Close code: the client broke the protocol's rules (no `connect` first, a bad key).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code: a frame too large for the transport.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the gateway is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// The longest approval note, in bytes (as over REST).
const MAX_NOTE_BYTES: usize = 4096;
/// The longest `idempotency_key` (as the REST `Idempotency-Key` header).
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The longest request `id` string.
const MAX_ID_BYTES: usize = 128;

/// Every method, with the scope it needs.
const METHODS: &[(&str, Scope)] = &[
    ("ping", Scope::Read),
    ("sessions.list", Scope::Read),
    ("sessions.subscribe", Scope::Read),
    ("sessions.unsubscribe", Scope::Read),
    ("sessions.send", Scope::Operator),
    ("sessions.interrupt", Scope::Operator),
    ("approvals.list", Scope::Read),
    ("approvals.resolve", Scope::Operator),
    ("jobs.subscribe", Scope::Read),
    ("jobs.unsubscribe", Scope::Read),
];

/// The scope `method` needs; `None` for a method that does not exist.
pub fn required_scope(method: &str) -> Option<Scope> {
    METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, scope)| *scope)
}

/// The session a console key names: `ops` → `console:ops`; a key with a channel is kept.
pub fn console_key(key: &str) -> String {
    if key.contains(':') {
        key.to_owned()
    } else {
        format!("console:{key}")
    }
}

/// Limits and timings of console connections.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Frames waiting for the socket, per connection.
    pub queue: usize,
    /// How long a subscription waits for room in a full queue before it is dropped as lagged.
    pub lag_grace: Duration,
    /// How often a `tick` event is sent.
    pub tick: Duration,
    /// How long a new connection may take to send `connect`.
    pub connect_timeout: Duration,
    /// The largest request frame handled; a larger one gets `payload_too_large`.
    pub max_frame_bytes: usize,
    /// Subscriptions (sessions and jobs) one connection may hold.
    pub max_subscriptions: usize,
    /// Requests of one connection being handled at once (the reader waits beyond that).
    pub max_in_flight: usize,
    /// How long a `sessions.send` idempotency key is remembered.
    pub idempotency_retention: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            queue: 1024,
            lag_grace: Duration::from_secs(1),
            tick: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 << 10,
            max_subscriptions: 64,
            max_in_flight: 64,
            idempotency_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Checks a caller's rate limit: `Err(seconds to wait)` when it is over it.
pub type RateCheck = Arc<dyn Fn(&str) -> Result<(), u64> + Send + Sync>;

/// What every console connection uses. Cheap to clone; build it once and clone it for each
/// connection, so they share [`ConsoleServices::frames`].
#[derive(Clone)]
pub struct ConsoleServices {
    pub sessions: SessionService,
    pub store: Store,
    pub keys: ApiKeys,
    /// The per-key rate limit of the HTTP API, applied to each request; `None` for none.
    pub rate_limit: Option<RateCheck>,
    pub config: ConsoleConfig,
    /// Event frames built for one subscriber and sent as they are to the others.
    pub frames: FrameCache,
}

/// How many events' frames a [`FrameCache`] keeps at most.
const FRAME_CACHE_EVENTS: usize = 4096;
/// How many bytes of frames a [`FrameCache`] keeps at most (a frame carries a job's output,
/// which can be large). A larger frame is built for each subscriber instead.
const FRAME_CACHE_BYTES: usize = 16 << 20;

/// Event frames already built, shared by the connections. Every subscriber of a session is
/// sent the same text for each of its events, so it is serialized once, not once per
/// subscriber: with a thousand consoles on one session that was most of the gateway's work.
/// Keeps the frames of the last [`FRAME_CACHE_EVENTS`] events, [`FRAME_CACHE_BYTES`] in all
/// (subscribers follow a live session within a few events of each other; one replaying old
/// history builds its own).
#[derive(Clone, Default)]
pub struct FrameCache {
    inner: Arc<Mutex<FrameCacheInner>>,
}

#[derive(Default)]
struct FrameCacheInner {
    /// By the event's global seq: its frame for each target that asked (usually one).
    frames: HashMap<u64, Vec<(Target, String)>>,
    /// The global seqs in `frames`, oldest first.
    order: VecDeque<u64>,
    /// The length of all the frames held.
    bytes: usize,
}

impl FrameCache {
    /// The text of `e`'s frame for a subscription to `target`, built at most once.
    fn frame(&self, target: &Target, e: &Event) -> String {
        let cached = self.lock().frames.get(&e.global_seq).and_then(|built| {
            built
                .iter()
                .find(|(t, _)| t == target)
                .map(|(_, text)| text.clone())
        });
        if let Some(text) = cached {
            return text;
        }
        // Built outside the lock; when two build the same frame at once, both are right.
        let text = target.event_text(e);
        if text.len() > FRAME_CACHE_BYTES / 16 {
            return text;
        }
        let mut c = self.lock();
        let c = &mut *c;
        let built = c.frames.entry(e.global_seq).or_insert_with(|| {
            c.order.push_back(e.global_seq);
            Vec::new()
        });
        if !built.iter().any(|(t, _)| t == target) {
            built.push((target.clone(), text.clone()));
            c.bytes += text.len();
        }
        while c.order.len() > FRAME_CACHE_EVENTS || c.bytes > FRAME_CACHE_BYTES {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            for (_, dropped) in c.frames.remove(&old).unwrap_or_default() {
                c.bytes -= dropped.len();
            }
        }
        text
    }

    fn lock(&self) -> MutexGuard<'_, FrameCacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A frame from the client, as the socket delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A binary frame (refused: requests are JSON text), with its length.
    Binary(usize),
}

/// A frame for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON frame (response or event).
    Text(String),
    /// Close the socket with this code and reason; nothing follows.
    Close { code: u16, reason: String },
}

/// A refused request: the `error` of a response frame. Codes match the REST API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleError {
    pub code: &'static str,
    pub message: String,
}

impl ConsoleError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ConsoleError {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ConsoleError::new("invalid_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ConsoleError::new("not_found", message)
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => {
                ConsoleError::new("unavailable", "the gateway is shutting down; retry shortly")
            }
            StoreError::JobNotFound(id) => ConsoleError::not_found(format!("job {id} not found")),
            StoreError::Invalid(msg) => ConsoleError::invalid(msg),
            StoreError::Io(_) | StoreError::Locked { .. } => {
                warn!(error = %e, "store unavailable");
                ConsoleError::new(
                    "unavailable",
                    "the store cannot be written right now; retry shortly",
                )
            }
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt store record");
                ConsoleError::new(
                    "internal",
                    "the gateway failed to handle this request; see its log for details",
                )
            }
        }
    }
}

impl From<RouteError> for ConsoleError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Invalid(msg) => ConsoleError::invalid(format!("params.key: {msg}")),
            RouteError::Conflict { .. } => ConsoleError::new(
                "idempotency_conflict",
                e.to_string().replace("Idempotency-Key", "idempotency_key"),
            ),
            RouteError::NotFound(_) => ConsoleError::not_found(e.to_string()),
            RouteError::Store(e) => e.into(),
            RouteError::Unavailable => ConsoleError::new(
                "unavailable",
                "the sessions are not running (shutting down?); retry shortly",
            ),
        }
    }
}

impl From<DecideError> for ConsoleError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound(_) => ConsoleError::not_found(e.to_string()),
            DecideError::AlreadyDecided(_) => {
                ConsoleError::new("invalid_state", format!("{e}; the first decision wins"))
            }
            DecideError::Store(e) => e.into(),
        }
    }
}

/// A response frame.
fn response(id: &Value, result: Result<Value, ConsoleError>) -> Outgoing {
    let frame = match result {
        Ok(payload) => json!({ "type": "res", "id": id, "ok": true, "payload": payload }),
        Err(e) => json!({
            "type": "res", "id": id, "ok": false,
            "error": { "code": e.code, "message": e.message },
        }),
    };
    Outgoing::Text(frame.to_string())
}

/// An event frame; `seq` for events of a stream.
fn event(name: &str, payload: Value, seq: Option<u64>) -> Outgoing {
    Outgoing::Text(event_text(name, payload, seq))
}

/// The text of an event frame.
fn event_text(name: &str, payload: Value, seq: Option<u64>) -> String {
    let mut frame = json!({ "type": "event", "event": name, "payload": payload });
    if let Some(seq) = seq {
        frame["seq"] = json!(seq);
    }
    frame.to_string()
}

/// What a subscription follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A session, by its full key.
    Session(String),
    Job(JobId),
}

impl Target {
    /// How the client tells this subscription's frames apart: `{"key": …}` or `{"job_id": …}`.
    fn label(&self) -> (&'static str, Value) {
        match self {
            Target::Session(key) => ("key", json!(key)),
            Target::Job(id) => ("job_id", json!(id)),
        }
    }

    fn name(&self) -> String {
        match self {
            Target::Session(key) => key.clone(),
            Target::Job(id) => format!("job:{id}"),
        }
    }

    /// A payload naming the target, plus `extra`.
    fn payload(&self, extra: Value) -> Value {
        let (field, value) = self.label();
        let mut payload = json!({ field: value });
        if let (Value::Object(p), Value::Object(extra)) = (&mut payload, extra) {
            p.extend(extra);
        }
        payload
    }

    /// The text of the frame of one event of the stream: the stored event, plus the target
    /// (see [`FrameCache`]).
    fn event_text(&self, e: &Event) -> String {
        let mut payload = serde_json::to_value(e).unwrap_or_default();
        if let Value::Object(p) = &mut payload {
            let (field, value) = self.label();
            p.insert(field.to_owned(), value);
        }
        event_text(&e.kind, payload, Some(e.seq))
    }
}

pub struct Console;

pub struct ConsoleArgs {
    pub services: ConsoleServices,
    /// The connection's outgoing frames; the socket writer holds the other end.
    pub out: mpsc::Sender<Outgoing>,
}

pub enum ConsoleMessage {
    /// A frame arrived; `permit` is its share of [`ConsoleConfig::max_in_flight`], released
    /// once it is answered.
    Received {
        frame: Incoming,
        permit: OwnedSemaphorePermit,
    },
    /// Time for a `tick` event (and to check the key again).
    Tick,
    /// The connection had its time to send `connect`.
    ConnectDeadline,
    /// A subscription ended by itself (lagged, its job finished, the store closed).
    SubscriptionEnded {
        target_name: String,
        generation: u64,
        lagged: bool,
    },
    Snapshot {
        reply: RpcReplyPort<ConsoleSnapshot>,
    },
}

/// A console connection's state, for tests and diagnostics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsoleSnapshot {
    /// The key's name once `connect` succeeded.
    pub principal: Option<String>,
    pub scope: Option<Scope>,
    /// Session keys and `job:<id>` of the live subscriptions, sorted.
    pub subscriptions: Vec<String>,
    /// Requests handled (answered or being answered).
    pub requests: u64,
    /// Requests refused with an error.
    pub refused: u64,
    /// Subscriptions dropped because the client did not keep up.
    pub lagged: u64,
}

/// One live subscription.
struct Subscription {
    /// Tells a late [`ConsoleMessage::SubscriptionEnded`] of a replaced subscription apart.
    generation: u64,
    /// Cleared (under the lock) when it is cancelled, so no frame of it follows the answer to
    /// `unsubscribe`: its task checks the flag and queues a frame under the same lock.
    alive: Arc<Mutex<bool>>,
    /// Follows the stream and queues its frames.
    task: JoinHandle<()>,
}

impl Subscription {
    fn cancel(self) {
        *lock(&self.alive) = false;
        self.task.abort();
    }
}

fn lock(flag: &Mutex<bool>) -> MutexGuard<'_, bool> {
    flag.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ConsoleState {
    /// The way in to sessions: send, interrupt, approvals.
    sessions: SessionService,
    /// Reads of records; subscriptions replay from it.
    store: Store,
    /// Checks the `connect` token, and again on every request and tick.
    keys: ApiKeys,
    /// The HTTP API's per-key rate limit, if any.
    rate_limit: Option<RateCheck>,
    config: ConsoleConfig,
    /// Event frames shared with the other connections.
    frames: FrameCache,
    /// The connection's bounded outgoing queue; the socket writer drains it.
    out: mpsc::Sender<Outgoing>,
    /// Who is connected; `None` until `connect` succeeds.
    principal: Option<Principal>,
    /// The token `connect` presented, kept to check it again: a revoked key loses the socket.
    token: Option<String>,
    /// Live subscriptions.
    subscriptions: HashMap<Target, Subscription>,
    /// The generation of the next subscription.
    next_generation: u64,
    /// The connect deadline, then the tick timer; stopped with the actor.
    timer: Option<AbortHandle>,
    /// Set once a close frame is queued: later frames are ignored.
    closing: bool,
    stats: ConsoleSnapshot,
}

impl Actor for Console {
    type Msg = ConsoleMessage;
    type State = ConsoleState;
    type Arguments = ConsoleArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConsoleArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let s = args.services;
        let timer = myself.send_after(s.config.connect_timeout, || ConsoleMessage::ConnectDeadline);
        Ok(ConsoleState {
            sessions: s.sessions,
            store: s.store,
            keys: s.keys,
            rate_limit: s.rate_limit,
            config: s.config,
            frames: s.frames,
            out: args.out,
            principal: None,
            token: None,
            subscriptions: HashMap::new(),
            next_generation: 0,
            timer: Some(timer.abort_handle()),
            closing: false,
            stats: ConsoleSnapshot::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        for (_, sub) in state.subscriptions.drain() {
            sub.cancel();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConsoleMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsoleMessage::Received { frame, permit } => {
                if !state.closing {
                    state.received(&myself, frame, permit).await;
                }
            }
            ConsoleMessage::Tick => state.tick(&myself).await,
            ConsoleMessage::ConnectDeadline => {
                if state.principal.is_none() && !state.closing {
                    let secs = state.config.connect_timeout.as_secs_f64();
                    let e = ConsoleError::new(
                        "unauthorized",
                        format!(
                            "no `connect` request within {secs} s; send connect {{\"token\": \"<API key>\"}} first"
                        ),
                    );
                    state.refuse_and_close(&myself, &Value::Null, e).await;
                }
            }
            ConsoleMessage::SubscriptionEnded {
                target_name,
                generation,
                lagged,
            } => {
                state
                    .subscriptions
                    .retain(|t, s| t.name() != target_name || s.generation != generation);
                state.stats.lagged += u64::from(lagged);
            }
            ConsoleMessage::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}

/// A parsed request frame.
struct Request {
    id: Value,
    method: String,
    params: Value,
}

/// Reads a request frame; on failure, the error and whatever `id` could be read.
fn parse_request(text: &str) -> Result<Request, (Value, ConsoleError)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            ConsoleError::invalid(format!(
                "the frame is not valid JSON ({e}); send {{\"type\":\"req\",\"id\":\"1\",\"method\":\"ping\",\"params\":{{}}}}"
            )),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            ConsoleError::invalid(
                "a request is a JSON object: {\"type\":\"req\",\"id\",\"method\",\"params\"}",
            ),
        ));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::String(s) => !s.is_empty() && s.len() <= MAX_ID_BYTES,
        Value::Number(_) => true,
        _ => false,
    };
    if !id_ok {
        return Err((
            Value::Null,
            ConsoleError::invalid(format!(
                "`id` is missing or invalid: use a string of 1 to {MAX_ID_BYTES} bytes (or a number); the response carries it back"
            )),
        ));
    }
    let fail = |message: String| Err((id.clone(), ConsoleError::invalid(message)));
    match obj.remove("type") {
        Some(Value::String(t)) if t == "req" => {}
        Some(other) => {
            return fail(format!(
                "`type` is {other}; requests have \"type\": \"req\""
            ));
        }
        None => return fail("`type` is missing; requests have \"type\": \"req\"".into()),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(other) => {
            return fail(format!(
                "`method` is {other}; it must be a string such as \"ping\""
            ));
        }
        None => return fail("`method` is missing, e.g. \"method\": \"ping\"".into()),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(other) => return fail(format!("`params` is {other}; it must be an object")),
    };
    if let Some(field) = obj.keys().next() {
        return fail(format!(
            "unknown field `{field}`; a request has only type, id, method and params"
        ));
    }
    Ok(Request { id, method, params })
}

/// The `id` of a frame that is refused without being handled, if it can be read.
fn lenient_id(text: &str) -> Value {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Value,
    }
    serde_json::from_str::<IdOnly>(text)
        .map(|f| f.id)
        .ok()
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(Value::Null)
}

/// Reads a method's params, naming the method and what is wrong.
fn params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, ConsoleError> {
    serde_json::from_value(params)
        .map_err(|e| ConsoleError::invalid(format!("{method} params: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectParams {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    key: String,
    #[serde(default)]
    after_seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyParams {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    key: String,
    text: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsParams {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveParams {
    id: String,
    decision: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSubscribeParams {
    id: String,
    #[serde(default)]
    after_seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    id: String,
}

/// How a request is answered.
enum Answer {
    /// Now, with this result.
    Now(Result<Value, ConsoleError>),
    /// By a task that waits for the store to make the change durable first.
    Durable(Value),
    /// Already answered (subscriptions answer before their first event).
    Done,
}

impl ConsoleState {
    /// Queues a frame, waiting for room; stops the console when the socket is gone.
    async fn send(&self, myself: &ActorRef<ConsoleMessage>, frame: Outgoing) {
        if self.out.send(frame).await.is_err() {
            myself.stop(Some("the socket is gone".into()));
        }
    }

    async fn respond(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        result: Result<Value, ConsoleError>,
    ) {
        if result.is_err() {
            self.stats.refused += 1;
        }
        self.send(myself, response(id, result)).await;
    }

    /// Answers with an error, then closes the socket (policy violation).
    async fn refuse_and_close(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        e: ConsoleError,
    ) {
        let reason = "connect with a valid API key first";
        self.respond(myself, id, Err(e)).await;
        self.closing = true;
        self.send(
            myself,
            Outgoing::Close {
                code: CLOSE_POLICY_VIOLATION,
                reason: reason.into(),
            },
        )
        .await;
        myself.stop(Some(reason.into()));
    }

    async fn received(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        frame: Incoming,
        permit: OwnedSemaphorePermit,
    ) {
        self.stats.requests += 1;
        let authenticated = self.principal.is_some();
        let text = match frame {
            Incoming::Text(text) => text,
            Incoming::Binary(len) => {
                let e = ConsoleError::invalid(format!(
                    "a binary frame ({len} bytes) is not a request; send each request as a JSON text frame"
                ));
                return self.refuse(myself, &Value::Null, e, authenticated).await;
            }
        };
        if text.len() > self.config.max_frame_bytes {
            let e = ConsoleError::new(
                "payload_too_large",
                format!(
                    "the frame is {} bytes; the limit is {} — send a smaller request",
                    text.len(),
                    self.config.max_frame_bytes
                ),
            );
            return self
                .refuse(myself, &lenient_id(&text), e, authenticated)
                .await;
        }
        let req = match parse_request(&text) {
            Ok(req) => req,
            Err((id, e)) => return self.refuse(myself, &id, e, authenticated).await,
        };
        if !authenticated {
            return self.connect(myself, req).await;
        }
        let answer = match self.authorize(&req) {
            Ok(principal) => self.dispatch(myself, &req, principal).await,
            Err(e) if e.code == "unauthorized" => {
                return self.refuse_and_close(myself, &req.id, e).await;
            }
            Err(e) => Answer::Now(Err(e)),
        };
        match answer {
            Answer::Now(result) => self.respond(myself, &req.id, result).await,
            Answer::Durable(payload) => {
                // Acknowledge only what is on disk; the mailbox goes on meanwhile.
                let (store, out, id) = (self.store.clone(), self.out.clone(), req.id);
                tokio::spawn(async move {
                    let result = store.durable().await.map(|()| payload).map_err(Into::into);
                    let _ = out.send(response(&id, result)).await;
                    drop(permit);
                });
            }
            Answer::Done => {}
        }
    }

    /// Refuses a frame: closes the socket before `connect`, answers with an error after.
    async fn refuse(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        e: ConsoleError,
        authenticated: bool,
    ) {
        if authenticated {
            self.respond(myself, id, Err(e)).await;
        } else {
            self.refuse_and_close(myself, id, e).await;
        }
    }

    /// The first request: `connect {token}`, or the socket closes.
    async fn connect(&mut self, myself: &ActorRef<ConsoleMessage>, req: Request) {
        if req.method != "connect" {
            let e = ConsoleError::new(
                "unauthorized",
                format!(
                    "the first request must be `connect` with params {{\"token\": \"<API key>\"}}, not `{}`",
                    req.method
                ),
            );
            return self.refuse_and_close(myself, &req.id, e).await;
        }
        let p: ConnectParams = match params("connect", req.params) {
            Ok(p) => p,
            Err(e) => return self.refuse_and_close(myself, &req.id, e).await,
        };
        let Some(principal) = self.keys.authenticate(p.token.trim()) else {
            let e = ConsoleError::new(
                "unauthorized",
                "the API key is not valid (unknown, revoked, or mistyped)",
            );
            return self.refuse_and_close(myself, &req.id, e).await;
        };
        debug!(key = %principal.name, "console connected");
        let payload = json!({
            "principal": { "id": principal.id, "name": principal.name, "scope": principal.scope },
            "version": env!("CARGO_PKG_VERSION"),
            "methods": METHODS.iter().map(|(m, s)| json!({ "method": m, "scope": s })).collect::<Vec<_>>(),
            "limits": {
                "max_frame_bytes": self.config.max_frame_bytes,
                "queue": self.config.queue,
                "max_subscriptions": self.config.max_subscriptions,
                "tick_ms": self.config.tick.as_millis() as u64,
            },
        });
        self.principal = Some(principal);
        self.token = Some(p.token.trim().to_owned());
        if let Some(deadline) = self.timer.take() {
            deadline.abort();
        }
        let ticks = myself.send_interval(self.config.tick, || ConsoleMessage::Tick);
        self.timer = Some(ticks.abort_handle());
        self.respond(myself, &req.id, Ok(payload)).await;
    }

    /// Checks the key again, the method's scope and the rate limit.
    fn authorize(&mut self, req: &Request) -> Result<Principal, ConsoleError> {
        let principal = self.recheck()?;
        if req.method == "connect" {
            return Err(ConsoleError::invalid(format!(
                "already connected as `{}`; open a new connection to use another key",
                principal.name
            )));
        }
        let Some(needed) = required_scope(&req.method) else {
            let known: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
            return Err(ConsoleError::new(
                "unknown_method",
                format!(
                    "unknown method `{}`; methods are {}",
                    req.method,
                    known.join(", ")
                ),
            ));
        };
        if principal.scope < needed {
            return Err(ConsoleError::new(
                "forbidden",
                format!(
                    "this key has scope `{}`; {} needs `{needed}`",
                    principal.scope, req.method
                ),
            ));
        }
        if let Some(check) = &self.rate_limit
            && let Err(wait) = check(&principal.id)
        {
            return Err(ConsoleError::new(
                "rate_limited",
                format!("too many requests for this key; retry in {wait} s"),
            ));
        }
        Ok(principal)
    }

    /// The connection's key, if it is still valid.
    fn recheck(&mut self) -> Result<Principal, ConsoleError> {
        let fresh = self
            .token
            .as_deref()
            .and_then(|t| self.keys.authenticate(t));
        match fresh {
            Some(p) => {
                self.principal = Some(p.clone());
                Ok(p)
            }
            None => Err(ConsoleError::new(
                "unauthorized",
                "the API key of this connection is no longer valid (revoked?); connect again with a valid key",
            )),
        }
    }

    async fn tick(&mut self, myself: &ActorRef<ConsoleMessage>) {
        if self.closing || self.principal.is_none() {
            return;
        }
        if let Err(e) = self.recheck() {
            return self.refuse_and_close(myself, &Value::Null, e).await;
        }
        // A client too slow to take it does not need it.
        let tick = event("tick", json!({ "ts": Timestamp::now() }), None);
        if let Err(TrySendError::Closed(_)) = self.out.try_send(tick) {
            myself.stop(Some("the socket is gone".into()));
        }
    }

    async fn dispatch(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        req: &Request,
        principal: Principal,
    ) -> Answer {
        let p = req.params.clone();
        let m = req.method.as_str();
        let result = match m {
            "ping" => params::<NoParams>(m, p).map(|_| json!({ "ts": Timestamp::now() })),
            "sessions.list" => params::<NoParams>(m, p)
                .and_then(|_| Ok(json!({ "sessions": self.sessions.list()? }))),
            "sessions.subscribe" => match params::<SubscribeParams>(m, p) {
                Ok(p) => match self.subscribe_session(myself, &req.id, p).await {
                    Ok(()) => return Answer::Done,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            "sessions.unsubscribe" => params::<KeyParams>(m, p).map(|p| {
                let key = console_key(&p.key);
                let was = self.unsubscribe(&Target::Session(key.clone()));
                json!({ "key": key, "unsubscribed": was })
            }),
            "sessions.send" => match params::<SendParams>(m, p) {
                Ok(p) => match self.send_message(p, &principal).await {
                    Ok(payload) => return Answer::Durable(payload),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            "sessions.interrupt" => match params::<KeyParams>(m, p) {
                Ok(p) => match self.interrupt(p, &principal).await {
                    Ok(payload) => return Answer::Durable(payload),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            "approvals.list" => params::<ApprovalsParams>(m, p).and_then(|p| self.approvals(p)),
            "approvals.resolve" => {
                match params::<ResolveParams>(m, p).and_then(|p| self.resolve(p, &principal)) {
                    Ok(payload) => return Answer::Durable(payload),
                    Err(e) => Err(e),
                }
            }
            "jobs.subscribe" => match params::<JobSubscribeParams>(m, p) {
                Ok(p) => match self.subscribe_job(myself, &req.id, p).await {
                    Ok(()) => return Answer::Done,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            "jobs.unsubscribe" => params::<JobParams>(m, p).and_then(|p| {
                let id = parse_job_id(&p.id)?;
                let was = self.unsubscribe(&Target::Job(id));
                Ok(json!({ "job_id": id, "unsubscribed": was }))
            }),
            other => Err(ConsoleError::new(
                "unknown_method",
                format!("unknown method `{other}`"),
            )),
        };
        Answer::Now(result)
    }

    async fn subscribe_session(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        p: SubscribeParams,
    ) -> Result<(), ConsoleError> {
        let key = console_key(&p.key);
        let session = self.sessions.get(&key)?.ok_or_else(|| {
            ConsoleError::not_found(format!(
                "no session `{key}`; sessions.send creates it (then subscribe with after_seq = its seq - 1)"
            ))
        })?;
        let target = Target::Session(key.clone());
        self.check_room(&target)?;
        let stream = session.stream();
        let after = p.after_seq.unwrap_or(0);
        let head = self.store.stream_head(&stream)?;
        // Subscribe to the bus now: nothing published from here on is missed.
        let follower = Follower::new(&self.store, StreamFilter::Stream(stream), after);
        let payload = json!({
            "key": key, "session_id": session.id, "after_seq": after, "head": head,
        });
        self.start(myself, id, target, follower, payload, None)
            .await;
        Ok(())
    }

    async fn subscribe_job(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        p: JobSubscribeParams,
    ) -> Result<(), ConsoleError> {
        let job_id = parse_job_id(&p.id)?;
        let target = Target::Job(job_id);
        self.check_room(&target)?;
        let stream = job_stream(job_id);
        // Read the head before the job: a job finished by then has all its events below it.
        let head = self.store.stream_head(&stream)?;
        let job = self
            .store
            .job(job_id)?
            .ok_or_else(|| ConsoleError::not_found(format!("job {job_id} not found")))?;
        let after = p.after_seq.unwrap_or(0);
        let payload = json!({
            "job_id": job_id, "state": job.state, "after_seq": after, "head": head,
        });
        if job.state.is_terminal() && head <= after {
            // Finished, and the client has seen all of it.
            self.unsubscribe(&target);
            self.respond(myself, id, Ok(payload)).await;
            let ended = target.payload(json!({
                "last_seq": after, "reason": "finished", "state": job.state,
            }));
            self.send(myself, event("subscription.ended", ended, None))
                .await;
            return Ok(());
        }
        let follower = Follower::new(&self.store, StreamFilter::Stream(stream), after);
        let end_at = job.state.is_terminal().then_some(head);
        self.start(myself, id, target, follower, payload, Some(end_at))
            .await;
        Ok(())
    }

    /// Whether one more subscription fits (re-subscribing to the same target always does).
    fn check_room(&self, target: &Target) -> Result<(), ConsoleError> {
        if !self.subscriptions.contains_key(target)
            && self.subscriptions.len() >= self.config.max_subscriptions
        {
            return Err(ConsoleError::new(
                "too_many_subscriptions",
                format!(
                    "this connection already has {} subscriptions, the limit; unsubscribe from one first",
                    self.subscriptions.len()
                ),
            ));
        }
        Ok(())
    }

    /// Answers the subscribe request, then starts the subscription's task, so the answer comes
    /// before its first event. A subscription to the same target is replaced.
    async fn start(
        &mut self,
        myself: &ActorRef<ConsoleMessage>,
        id: &Value,
        target: Target,
        follower: Follower,
        payload: Value,
        job_end: Option<Option<u64>>,
    ) {
        self.unsubscribe(&target);
        self.respond(myself, id, Ok(payload)).await;
        let generation = self.next_generation;
        self.next_generation += 1;
        let alive = Arc::new(Mutex::new(true));
        let feed = Feed {
            target: target.clone(),
            last_seq: follower.position(),
            follower,
            out: self.out.clone(),
            alive: alive.clone(),
            console: myself.clone(),
            generation,
            grace: self.config.lag_grace,
            frames: self.frames.clone(),
            store: self.store.clone(),
            job_end,
        };
        let task = tokio::spawn(feed.run());
        self.subscriptions.insert(
            target,
            Subscription {
                generation,
                alive,
                task,
            },
        );
    }

    /// Ends a subscription; whether there was one.
    fn unsubscribe(&mut self, target: &Target) -> bool {
        match self.subscriptions.remove(target) {
            Some(sub) => {
                sub.cancel();
                true
            }
            None => false,
        }
    }

    /// Routes a message (in the order requests arrived); the answer waits for the disk.
    async fn send_message(
        &mut self,
        p: SendParams,
        principal: &Principal,
    ) -> Result<Value, ConsoleError> {
        let key = console_key(&p.key);
        if p.text.trim().is_empty() {
            return Err(ConsoleError::invalid(
                "params.text is empty; say something, e.g. /help",
            ));
        }
        if p.text.len() > store::session::MAX_MESSAGE_BYTES {
            return Err(ConsoleError::invalid(format!(
                "params.text is {} bytes; the limit is {}",
                p.text.len(),
                store::session::MAX_MESSAGE_BYTES
            )));
        }
        let data = p.data.unwrap_or(Value::Null);
        let dedupe = match p.idempotency_key {
            None => None,
            Some(k) => {
                let valid = !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY
                    && k.chars().all(|c| c.is_ascii() && !c.is_ascii_control());
                if !valid {
                    return Err(ConsoleError::invalid(format!(
                        "params.idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    )));
                }
                Some(MessageDedupe {
                    scope: principal.id.clone(),
                    key: k,
                    request_hash: request_hash(&key, &p.text, &data),
                    retention: self.config.idempotency_retention,
                })
            }
        };
        let routed = self
            .sessions
            .send(Inbound {
                key: key.clone(),
                text: p.text,
                data,
                event: None,
                sender: Some(principal.name.clone()),
                dedupe,
            })
            .await?;
        Ok(json!({
            "key": key, "session_id": routed.session_id, "seq": routed.seq, "replayed": routed.replayed,
        }))
    }

    async fn interrupt(
        &mut self,
        p: KeyParams,
        principal: &Principal,
    ) -> Result<Value, ConsoleError> {
        let key = console_key(&p.key);
        if self.sessions.get(&key)?.is_none() {
            return Err(ConsoleError::not_found(format!("no session `{key}`")));
        }
        let interrupted = self.sessions.interrupt(&key, &principal.name).await?;
        Ok(json!({ "key": key, "interrupted": interrupted }))
    }

    fn approvals(&self, p: ApprovalsParams) -> Result<Value, ConsoleError> {
        let state = match p.state.as_deref() {
            None => None,
            Some(s) => Some(ApprovalState::parse(s).ok_or_else(|| {
                ConsoleError::invalid(format!(
                    "params.state `{s}` is unknown; use pending, approved, denied, expired or cancelled"
                ))
            })?),
        };
        let limit = p.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ConsoleError::invalid(
                "params.limit must be between 1 and 500",
            ));
        }
        Ok(json!({ "approvals": self.sessions.approvals(state, limit)? }))
    }

    fn resolve(&self, p: ResolveParams, principal: &Principal) -> Result<Value, ConsoleError> {
        let id: ApprovalId = p.id.parse().map_err(|_| {
            ConsoleError::invalid(format!(
                "params.id `{}` is not an approval id (a UUID)",
                p.id
            ))
        })?;
        let decision = match p.decision.as_str() {
            "approve" | "approved" => ApprovalState::Approved,
            "deny" | "denied" => ApprovalState::Denied,
            other => {
                return Err(ConsoleError::invalid(format!(
                    "params.decision `{other}` is unknown; use `approve` or `deny`"
                )));
            }
        };
        if p.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
            return Err(ConsoleError::invalid(format!(
                "params.note is longer than {MAX_NOTE_BYTES} bytes"
            )));
        }
        let approval = self
            .sessions
            .decide(id, decision, &principal.name, p.note)?;
        Ok(serde_json::to_value(approval).unwrap_or_default())
    }

    fn snapshot(&self) -> ConsoleSnapshot {
        let mut subscriptions: Vec<String> = self.subscriptions.keys().map(Target::name).collect();
        subscriptions.sort();
        ConsoleSnapshot {
            principal: self.principal.as_ref().map(|p| p.name.clone()),
            scope: self.principal.as_ref().map(|p| p.scope),
            subscriptions,
            ..self.stats.clone()
        }
    }
}

fn parse_job_id(id: &str) -> Result<JobId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::invalid(format!("params.id `{id}` is not a job id (a UUID)")))
}

/// What makes two `sessions.send` requests with one idempotency key the same: the session,
/// the text and the data.
fn request_hash(key: &str, text: &str, data: &Value) -> String {
    let canonical = json!({ "key": key, "text": text, "data": data });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// A subscription's task: follows a stream and queues its events.
struct Feed {
    target: Target,
    follower: Follower,
    out: mpsc::Sender<Outgoing>,
    /// Shared with the actor's [`Subscription`]; frames are queued only while it is set.
    alive: Arc<Mutex<bool>>,
    console: ActorRef<ConsoleMessage>,
    generation: u64,
    grace: Duration,
    /// Where this event's frame may already be built.
    frames: FrameCache,
    store: Store,
    /// The seq of the last event queued (the subscription's `after_seq` before any).
    last_seq: u64,
    /// Jobs only: `Some(end_at)`, where `end_at` is the head of a job already finished when
    /// subscribed (the replay ends there unless it was re-queued since).
    job_end: Option<Option<u64>>,
}

/// Why a subscription's task stopped.
enum FeedEnd {
    /// Unsubscribed, replaced, or the socket is gone: nothing to tell.
    Gone,
    /// The queue stayed full.
    Lagged,
    /// Its job reached a terminal state.
    Finished(Option<JobState>),
    /// The store failed or closed (shutdown).
    Failed(String),
}

impl Feed {
    async fn run(mut self) {
        let end = self.pump().await;
        let lagged = matches!(end, FeedEnd::Lagged);
        let frame = match end {
            FeedEnd::Gone => return,
            FeedEnd::Lagged => {
                metrics::counter!("rausku_console_lagged_total").increment(1);
                debug!(target = %self.target.name(), last_seq = self.last_seq, "console subscription lagged");
                event(
                    "lagged",
                    self.target.payload(json!({ "last_seq": self.last_seq })),
                    None,
                )
            }
            FeedEnd::Finished(state) => event(
                "subscription.ended",
                self.target.payload(
                    json!({ "last_seq": self.last_seq, "reason": "finished", "state": state }),
                ),
                None,
            ),
            FeedEnd::Failed(message) => event(
                "subscription.ended",
                self.target.payload(json!({
                    "last_seq": self.last_seq, "reason": "unavailable", "message": message,
                })),
                None,
            ),
        };
        {
            let mut alive = lock(&self.alive);
            if !*alive {
                return;
            }
            *alive = false;
        }
        let _ = self
            .console
            .send_message(ConsoleMessage::SubscriptionEnded {
                target_name: self.target.name(),
                generation: self.generation,
                lagged,
            });
        // Waits for room: the client learns of it once it reads again.
        let _ = self.out.send(frame).await;
    }

    async fn pump(&mut self) -> FeedEnd {
        loop {
            let next = tokio::select! {
                e = self.follower.next() => e,
                () = self.out.closed() => return FeedEnd::Gone,
            };
            let e = match next {
                Ok(e) => e,
                Err(e) => return FeedEnd::Failed(e.to_string()),
            };
            let permit = match self.out.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Closed(())) => return FeedEnd::Gone,
                Err(TrySendError::Full(())) => {
                    match tokio::time::timeout(self.grace, self.out.reserve()).await {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return FeedEnd::Gone,
                        Err(_) => return FeedEnd::Lagged,
                    }
                }
            };
            {
                let alive = lock(&self.alive);
                if !*alive {
                    return FeedEnd::Gone;
                }
                permit.send(Outgoing::Text(self.frames.frame(&self.target, &e)));
            }
            self.last_seq = e.seq;
            if let Some(state) = self.job_finished(&e) {
                return FeedEnd::Finished(state);
            }
        }
    }

    /// For a job subscription: `Some(state)` once the job has finished with `e`.
    fn job_finished(&self, e: &Event) -> Option<Option<JobState>> {
        let (Target::Job(id), Some(end_at)) = (&self.target, self.job_end) else {
            return None;
        };
        let terminal = matches!(
            e.kind.as_str(),
            "job.succeeded" | "job.failed" | "job.cancelled"
        );
        let replay_done = end_at.is_some_and(|head| e.seq >= head);
        if !terminal && !replay_done {
            return None;
        }
        // Unless it has been re-queued since (a retry by hand).
        let state = self.store.job(*id).ok().flatten().map(|j| j.state);
        state.is_none_or(JobState::is_terminal).then_some(state)
    }
}

/// The gateway's handle on one console connection.
pub struct ConsoleConnection {
    actor: ActorRef<ConsoleMessage>,
    /// Requests being handled; the reader waits when they are all taken.
    in_flight: Arc<Semaphore>,
}

/// The console of this connection has stopped (it closed the socket, or the socket is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the console connection is closed")]
pub struct ConsoleClosed;

impl ConsoleConnection {
    /// Starts the console of a new connection; the socket writer drains the receiver.
    pub async fn open(
        services: ConsoleServices,
    ) -> Result<(ConsoleConnection, mpsc::Receiver<Outgoing>), SpawnErr> {
        let (out, rx) = mpsc::channel(services.config.queue.max(1));
        let in_flight = Arc::new(Semaphore::new(services.config.max_in_flight.max(1)));
        let (actor, _) = Actor::spawn(None, Console, ConsoleArgs { services, out }).await?;
        Ok((ConsoleConnection { actor, in_flight }, rx))
    }

    /// Hands a frame from the client to the console, waiting while too many are in flight.
    pub async fn received(&self, frame: Incoming) -> Result<(), ConsoleClosed> {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConsoleClosed)?;
        self.actor
            .send_message(ConsoleMessage::Received { frame, permit })
            .map_err(|_| ConsoleClosed)
    }

    /// The connection's state (`None` once it has stopped).
    pub async fn snapshot(&self) -> Option<ConsoleSnapshot> {
        ractor::call!(self.actor, |reply| ConsoleMessage::Snapshot { reply }).ok()
    }

    /// Stops the console and its subscriptions (the socket is closed or closing).
    pub fn close(&self) {
        self.in_flight.close();
        self.actor.stop(None);
    }
}

impl Drop for ConsoleConnection {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use agentloop::{
        CallbackConfig, DefaultPlanner, PlaybookPlanner, PlaybookSet, Runtime, RuntimeConfig,
        SessionConfig, SessionSetup,
    };
    use serde_json::{Value, json};
    use skills::Registry;
    use skills::builtin::{BuiltinConfig, builtin_handlers};
    use store::{EventId, Scope, Store, StoreConfig};
    use tokio::sync::mpsc;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);
    const BOOTSTRAP: &str = "console-test-bootstrap";

    /// A skill that always asks for an approval (echo underneath).
    const GATED: &str = r#"
name = "gated"
description = "echo behind an approval"
handler = "echo"
[policy]
approval = "always"
"#;

    /// A store, the runtime over it, and the keys.
    struct Rig {
        _dir: tempfile::TempDir,
        store: Store,
        runtime: Runtime,
        keys: ApiKeys,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("data"))).unwrap();
        let registry =
            Registry::open(store.clone(), builtin_handlers(&BuiltinConfig::default())).unwrap();
        let skills = dir.path().join("skills");
        std::fs::create_dir_all(&skills).unwrap();
        std::fs::write(skills.join("gated.toml"), GATED).unwrap();
        let report = registry.load_manifests(&skills).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let planner = DefaultPlanner::new(PlaybookPlanner::new(PlaybookSet::default()));
        let runtime = Runtime::start(
            store.clone(),
            registry,
            RuntimeConfig::default(),
            CallbackConfig::new(Default::default(), b"secret".to_vec()),
            SessionSetup {
                planner: Arc::new(planner),
                config: SessionConfig::default(),
                replies: None,
            },
        )
        .await
        .unwrap();
        let keys = ApiKeys::load(store.clone(), Some(BOOTSTRAP)).unwrap();
        Rig {
            _dir: dir,
            store,
            runtime,
            keys,
        }
    }

    impl Rig {
        fn services(&self, config: ConsoleConfig) -> ConsoleServices {
            ConsoleServices {
                sessions: self.runtime.sessions.clone(),
                store: self.store.clone(),
                keys: self.keys.clone(),
                rate_limit: None,
                config,
                frames: FrameCache::default(),
            }
        }

        async fn client(&self, config: ConsoleConfig) -> Client {
            let (conn, rx) = ConsoleConnection::open(self.services(config))
                .await
                .unwrap();
            Client {
                conn,
                rx,
                next_id: 0,
                events: Vec::new(),
            }
        }

        /// A client connected with the bootstrap (admin) key.
        async fn admin(&self, config: ConsoleConfig) -> Client {
            let mut c = self.client(config).await;
            let r = c.call("connect", json!({ "token": BOOTSTRAP })).await;
            assert_eq!(r["ok"], true, "{r}");
            c
        }

        /// Sends a message to a session directly (not through a console).
        async fn say(&self, key: &str, text: &str) -> u64 {
            let routed = self
                .runtime
                .sessions
                .send(Inbound {
                    key: key.into(),
                    text: text.into(),
                    ..Inbound::default()
                })
                .await
                .unwrap();
            routed.seq
        }
    }

    /// A console connection driven like a socket would be.
    struct Client {
        conn: ConsoleConnection,
        rx: mpsc::Receiver<Outgoing>,
        next_id: u64,
        /// Events read while waiting for a response.
        events: Vec<Value>,
    }

    impl Client {
        async fn raw(&self, text: &str) {
            self.conn
                .received(Incoming::Text(text.into()))
                .await
                .unwrap();
        }

        /// The next frame.
        async fn next(&mut self) -> Outgoing {
            tokio::time::timeout(DEADLINE, self.rx.recv())
                .await
                .expect("a frame before the deadline")
                .expect("the console is still open")
        }

        /// The next JSON frame; fails on a close.
        async fn next_json(&mut self) -> Value {
            match self.next().await {
                Outgoing::Text(t) => serde_json::from_str(&t).unwrap(),
                Outgoing::Close { code, reason } => panic!("closed: {code} {reason}"),
            }
        }

        /// The response to `id`, keeping events that come first.
        async fn response(&mut self, id: &Value) -> Value {
            loop {
                let frame = self.next_json().await;
                if frame["type"] == "res" && frame["id"] == *id {
                    return frame;
                }
                assert_eq!(frame["type"], "event", "unexpected {frame}");
                self.events.push(frame);
            }
        }

        async fn call(&mut self, method: &str, params: Value) -> Value {
            self.next_id += 1;
            let id = json!(format!("r{}", self.next_id));
            let req = json!({ "type": "req", "id": id, "method": method, "params": params });
            self.raw(&req.to_string()).await;
            self.response(&id).await
        }

        /// Expects an error response of `code` to the next request, and a close with 1008.
        async fn expect_refused_and_closed(&mut self, code: &str) {
            let r = self.next_json().await;
            assert_eq!(
                (r["ok"].clone(), r["error"]["code"].clone()),
                (json!(false), json!(code)),
                "{r}"
            );
            match self.next().await {
                Outgoing::Close { code, .. } => assert_eq!(code, CLOSE_POLICY_VIOLATION),
                other => panic!("expected a close, got {other:?}"),
            }
        }

        /// Events (kept and new) until `done` says so, in order.
        async fn events_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
            let mut out: Vec<Value> = std::mem::take(&mut self.events);
            if out.iter().any(&done) {
                return out;
            }
            loop {
                let frame = self.next_json().await;
                let end = done(&frame);
                out.push(frame);
                if end {
                    return out;
                }
            }
        }
    }

    fn error_code(r: &Value) -> &str {
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{r}"
        );
        r["error"]["code"].as_str().unwrap()
    }

    /// The default config, with ticks too rare to show up in a test.
    fn config() -> ConsoleConfig {
        ConsoleConfig {
            tick: Duration::from_secs(3600),
            ..ConsoleConfig::default()
        }
    }

    fn seqs(events: &[Value]) -> Vec<u64> {
        events.iter().filter_map(|e| e["seq"].as_u64()).collect()
    }

    #[test]
    fn keys_and_scopes() {
        assert_eq!(console_key("ops"), "console:ops");
        assert_eq!(console_key("rest:ops"), "rest:ops");
        assert_eq!(console_key("github:acme/api#1"), "github:acme/api#1");
        assert_eq!(required_scope("ping"), Some(Scope::Read));
        assert_eq!(required_scope("sessions.subscribe"), Some(Scope::Read));
        assert_eq!(required_scope("sessions.send"), Some(Scope::Operator));
        assert_eq!(required_scope("approvals.resolve"), Some(Scope::Operator));
        assert_eq!(required_scope("connect"), None);
        assert_eq!(required_scope("nope"), None);
    }

    #[test]
    fn request_frames_are_checked() {
        let ok = parse_request(r#"{"type":"req","id":"1","method":"ping"}"#).unwrap();
        assert_eq!(
            (ok.id, ok.method, ok.params),
            (json!("1"), "ping".into(), json!({}))
        );
        let cases = [
            ("{", "not valid JSON", Value::Null),
            ("[1]", "JSON object", Value::Null),
            (
                r#"{"type":"req","method":"ping"}"#,
                "`id` is missing",
                Value::Null,
            ),
            (
                r#"{"type":"req","id":{},"method":"ping"}"#,
                "`id`",
                Value::Null,
            ),
            (
                r#"{"id":"7","method":"ping"}"#,
                "`type` is missing",
                json!("7"),
            ),
            (
                r#"{"type":"res","id":7,"method":"ping"}"#,
                "\"type\": \"req\"",
                json!(7),
            ),
            (
                r#"{"type":"req","id":"7"}"#,
                "`method` is missing",
                json!("7"),
            ),
            (
                r#"{"type":"req","id":"7","method":"ping","params":[]}"#,
                "`params`",
                json!("7"),
            ),
            (
                r#"{"type":"req","id":"7","method":"ping","extra":1}"#,
                "`extra`",
                json!("7"),
            ),
        ];
        for (text, says, id) in cases {
            let (got_id, e) = parse_request(text)
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"));
            assert_eq!(e.code, "invalid_request", "{text}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
            assert_eq!(got_id, id, "{text}");
        }
        assert_eq!(lenient_id(r#"{"id":"x","junk":[1,2]}"#), json!("x"));
        assert_eq!(lenient_id("not json"), Value::Null);
    }

    #[test]
    fn frames_are_built_once_per_event_and_target_and_the_oldest_are_dropped() {
        let event = |global_seq: u64| Event {
            stream: "session:x".into(),
            seq: global_seq,
            global_seq,
            id: EventId::new(),
            ts: Timestamp::now(),
            kind: "reply".into(),
            data: json!({ "text": "hi" }),
        };
        let cache = FrameCache::default();
        let session = Target::Session("rest:a".into());
        let job = Target::Job(JobId::new());
        let e = event(1);
        let first = cache.frame(&session, &e);
        assert_eq!(first, session.event_text(&e));
        assert_eq!(cache.frame(&session, &e), first);
        let frame: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(frame["payload"]["key"], "rest:a");
        assert_eq!(frame["seq"], 1);
        let for_job = cache.frame(&job, &e);
        assert_ne!(for_job, first, "each target has its own frame");
        assert_eq!(cache.lock().frames[&1].len(), 2);

        for n in 2..(FRAME_CACHE_EVENTS as u64 + 10) {
            cache.frame(&session, &event(n));
        }
        {
            let c = cache.lock();
            assert_eq!(c.order.len(), FRAME_CACHE_EVENTS);
            assert_eq!(c.frames.len(), FRAME_CACHE_EVENTS);
            assert!(!c.frames.contains_key(&1), "the oldest event is dropped");
            let held: usize = c.frames.values().flatten().map(|(_, t)| t.len()).sum();
            assert_eq!(c.bytes, held);
        }

        // Large frames: never more than the byte budget, and one too large is not kept.
        let big = |global_seq: u64, len: usize| Event {
            data: json!({ "text": "x".repeat(len) }),
            ..event(global_seq)
        };
        let cache = FrameCache::default();
        for n in 0..64 {
            cache.frame(&session, &big(n, FRAME_CACHE_BYTES / 20));
        }
        let huge = big(100, FRAME_CACHE_BYTES);
        assert_eq!(cache.frame(&session, &huge), session.event_text(&huge));
        let c = cache.lock();
        assert!(c.bytes <= FRAME_CACHE_BYTES, "{} bytes held", c.bytes);
        assert!(c.frames.contains_key(&63) && !c.frames.contains_key(&0));
        assert!(
            !c.frames.contains_key(&100),
            "a frame over the size limit is not kept"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn anything_but_connect_first_closes_the_socket() {
        let rig = rig().await;
        let mut c = rig.client(config()).await;
        c.raw(r#"{"type":"req","id":"1","method":"ping"}"#).await;
        c.expect_refused_and_closed("unauthorized").await;

        let mut c = rig.client(config()).await;
        c.raw("hello").await;
        c.expect_refused_and_closed("invalid_request").await;

        let mut c = rig.client(config()).await;
        c.raw(r#"{"type":"req","id":"1","method":"connect","params":{"token":"wrong"}}"#)
            .await;
        c.expect_refused_and_closed("unauthorized").await;
        // The console stopped: further frames are not taken.
        tokio::time::timeout(DEADLINE, async {
            while c.conn.received(Incoming::Text("x".into())).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the console stops after closing");

        // No connect at all within the deadline.
        let mut c = rig
            .client(ConsoleConfig {
                connect_timeout: Duration::from_millis(50),
                ..config()
            })
            .await;
        c.expect_refused_and_closed("unauthorized").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_frames_are_answered_and_the_connection_stays() {
        let rig = rig().await;
        let mut c = rig
            .admin(ConsoleConfig {
                max_frame_bytes: 1024,
                ..config()
            })
            .await;
        c.raw("{not json").await;
        let r = c.next_json().await;
        assert_eq!(
            (error_code(&r), &r["id"]),
            ("invalid_request", &Value::Null)
        );
        let r = c.call("nope.nope", json!({})).await;
        assert_eq!(error_code(&r), "unknown_method");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("sessions.subscribe")
        );
        let r = c.call("sessions.subscribe", json!({})).await;
        assert_eq!(error_code(&r), "invalid_request");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("`key`"),
            "{r}"
        );
        let r = c
            .call("sessions.subscribe", json!({"key": "x", "afterSeq": 1}))
            .await;
        assert!(
            r["error"]["message"].as_str().unwrap().contains("afterSeq"),
            "{r}"
        );
        let r = c.call("ping", json!({"x": 1})).await;
        assert_eq!(error_code(&r), "invalid_request");
        let r = c.call("connect", json!({"token": BOOTSTRAP})).await;
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already connected"),
            "{r}"
        );
        c.conn.received(Incoming::Binary(3)).await.unwrap();
        let r = c.next_json().await;
        assert_eq!(error_code(&r), "invalid_request");
        let big = json!({"type": "req", "id": "big", "method": "ping", "params": {"pad": "x".repeat(2000)}});
        c.raw(&big.to_string()).await;
        let r = c.next_json().await;
        assert_eq!(
            (error_code(&r), &r["id"]),
            ("payload_too_large", &json!("big"))
        );
        // Still connected.
        let r = c.call("ping", json!({})).await;
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["payload"]["ts"].is_string());
        let snap = c.conn.snapshot().await.unwrap();
        assert_eq!(snap.principal.as_deref(), Some("bootstrap"));
        assert!(snap.refused >= 8, "{snap:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scopes_are_enforced_and_a_revoked_key_loses_the_socket() {
        let rig = rig().await;
        let (reader, secret) = rig.keys.create("reader", Scope::Read).unwrap();
        let mut c = rig.client(config()).await;
        let r = c.call("connect", json!({ "token": secret })).await;
        assert_eq!(r["payload"]["principal"]["scope"], "read", "{r}");
        let r = c
            .call("sessions.send", json!({"key": "ops", "text": "/help"}))
            .await;
        assert_eq!(error_code(&r), "forbidden");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("operator"),
            "{r}"
        );
        let r = c
            .call(
                "approvals.resolve",
                json!({"id": "x", "decision": "approve"}),
            )
            .await;
        assert_eq!(error_code(&r), "forbidden");
        let r = c.call("sessions.list", json!({})).await;
        assert_eq!(r["payload"]["sessions"], json!([]), "{r}");

        rig.keys.revoke(&reader.id.to_string()).unwrap();
        c.raw(r#"{"type":"req","id":"p","method":"ping"}"#).await;
        c.expect_refused_and_closed("unauthorized").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn send_then_subscribe_sees_the_run_and_a_resubscribe_resumes() {
        let rig = rig().await;
        let mut c = rig.admin(config()).await;
        let r = c
            .call(
                "sessions.send",
                json!({"key": "ops", "text": "/run echo {\"a\": 1}"}),
            )
            .await;
        assert_eq!(r["payload"]["key"], "console:ops", "{r}");
        assert_eq!(r["payload"]["seq"], 1);
        let r = c.call("sessions.subscribe", json!({"key": "ops"})).await;
        assert_eq!(r["payload"]["after_seq"], 0, "{r}");
        let evs = c.events_until(|e| e["event"] == "run.finished").await;
        assert_eq!(seqs(&evs), (1..=evs.len() as u64).collect::<Vec<_>>());
        assert!(evs.iter().all(|e| e["payload"]["key"] == "console:ops"));
        assert_eq!(evs[0]["event"], "message.received");
        assert_eq!(evs[0]["payload"]["data"]["text"], "/run echo {\"a\": 1}");

        // Resubscribing from the middle replays from there, then goes on live.
        let r = c
            .call(
                "sessions.subscribe",
                json!({"key": "console:ops", "after_seq": 3}),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
        let evs = c.events_until(|e| e["event"] == "run.finished").await;
        assert_eq!(seqs(&evs), (4..=8).collect::<Vec<_>>());
        c.call("sessions.send", json!({"key": "ops", "text": "/help"}))
            .await;
        let evs = c.events_until(|e| e["event"] == "run.finished").await;
        assert_eq!(seqs(&evs)[0], 9);

        let r = c.call("sessions.unsubscribe", json!({"key": "ops"})).await;
        assert_eq!(r["payload"]["unsubscribed"], true, "{r}");
        let r = c.call("sessions.unsubscribe", json!({"key": "ops"})).await;
        assert_eq!(r["payload"]["unsubscribed"], false, "{r}");
        let r = c.call("sessions.subscribe", json!({"key": "nobody"})).await;
        assert_eq!(error_code(&r), "not_found");
        let r = c.call("sessions.interrupt", json!({"key": "nobody"})).await;
        assert_eq!(error_code(&r), "not_found");
        let r = c
            .call("sessions.send", json!({"key": "ops", "text": "  "}))
            .await;
        assert_eq!(error_code(&r), "invalid_request");
        let r = c
            .call("sessions.send", json!({"key": "BAD:x", "text": "hi"}))
            .await;
        assert_eq!(error_code(&r), "invalid_request");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotency_keys_replay_or_conflict() {
        let rig = rig().await;
        let mut c = rig.admin(config()).await;
        let send = json!({"key": "ops", "text": "/help", "idempotency_key": "k1"});
        let first = c.call("sessions.send", send.clone()).await;
        let again = c.call("sessions.send", send).await;
        assert_eq!(again["payload"]["replayed"], true, "{again}");
        assert_eq!(again["payload"]["seq"], first["payload"]["seq"]);
        let other = c
            .call(
                "sessions.send",
                json!({"key": "ops", "text": "/run echo {}", "idempotency_key": "k1"}),
            )
            .await;
        assert_eq!(error_code(&other), "idempotency_conflict");
        let other = c
            .call(
                "sessions.send",
                json!({"key": "elsewhere", "text": "/help", "idempotency_key": "k1"}),
            )
            .await;
        assert_eq!(error_code(&other), "idempotency_conflict");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_the_subscription_with_lagged() {
        let rig = rig().await;
        rig.say("rest:busy", "/help").await;
        let small = ConsoleConfig {
            queue: 4,
            lag_grace: Duration::from_millis(50),
            ..config()
        };
        let mut slow = rig.admin(small).await;
        let mut fast = rig.admin(config()).await;
        // The slow client asks, then reads nothing while the session runs.
        slow.raw(
            r#"{"type":"req","id":"s","method":"sessions.subscribe","params":{"key":"rest:busy"}}"#,
        )
        .await;
        let r = fast
            .call("sessions.subscribe", json!({"key": "rest:busy"}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        for i in 0..5 {
            rig.say("rest:busy", &format!("/run echo {{\"i\": {i}}}"))
                .await;
        }
        let mut fast_events = Vec::new();
        while fast_events
            .iter()
            .filter(|e: &&Value| e["event"] == "run.finished")
            .count()
            < 6
        {
            fast_events.extend(fast.events_until(|e| e["event"] == "run.finished").await);
        }
        assert!(fast_events.iter().all(|e| e["event"] != "lagged"));
        let all = seqs(&fast_events);
        assert_eq!(
            all,
            (1..=all.len() as u64).collect::<Vec<_>>(),
            "the fast client saw every event"
        );

        // The slow one's subscription was dropped meanwhile.
        let started = Instant::now();
        while slow.conn.snapshot().await.unwrap().lagged == 0 {
            assert!(
                started.elapsed() < DEADLINE,
                "the slow subscription never lagged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Now it reads: its answer, what fit in the queue, then `lagged`.
        let r = slow.response(&json!("s")).await;
        assert_eq!(r["ok"], true, "{r}");
        let evs = slow.events_until(|e| e["event"] == "lagged").await;
        let (lagged, events) = evs.split_last().unwrap();
        assert_eq!(lagged["payload"]["key"], "rest:busy");
        assert!(lagged.get("seq").is_none(), "{lagged}");
        let got = seqs(events);
        assert!(!got.is_empty() && got.len() < all.len(), "{got:?}");
        assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
        assert_eq!(lagged["payload"]["last_seq"], json!(got.len()));
        let snap = slow.conn.snapshot().await.unwrap();
        assert!(snap.subscriptions.is_empty(), "{snap:?}");
        assert_eq!(snap.lagged, 1);

        // It picks up where it was (again and again, should it lag again).
        let mut last = got.len() as u64;
        while last < all.len() as u64 {
            let r = slow
                .call(
                    "sessions.subscribe",
                    json!({"key": "rest:busy", "after_seq": last}),
                )
                .await;
            assert_eq!(r["ok"], true, "{r}");
            let evs = slow
                .events_until(|e| {
                    e["event"] == "lagged" || e["seq"].as_u64() == Some(all.len() as u64)
                })
                .await;
            let got = seqs(&evs);
            assert_eq!(
                got,
                ((last + 1)..=(last + got.len() as u64)).collect::<Vec<_>>()
            );
            last += got.len() as u64;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ticks_arrive_once_connected() {
        let rig = rig().await;
        let mut c = rig
            .admin(ConsoleConfig {
                tick: Duration::from_millis(30),
                ..config()
            })
            .await;
        let t = c.next_json().await;
        assert_eq!(
            (t["type"].as_str(), t["event"].as_str()),
            (Some("event"), Some("tick")),
            "{t}"
        );
        assert!(
            t["payload"]["ts"].is_string() && t.get("seq").is_none(),
            "{t}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_subscription_ends_after_its_terminal_state() {
        let rig = rig().await;
        let job = match rig
            .runtime
            .jobs
            .create(
                agentloop::CreateJob {
                    job_type: "echo".into(),
                    input: json!({"x": 1}),
                    ..Default::default()
                },
                None,
            )
            .unwrap()
        {
            store::CreateOutcome::Created(job) => job,
            other => panic!("{other:?}"),
        };
        let mut c = rig.admin(config()).await;
        let r = c
            .call("jobs.subscribe", json!({"id": job.id.to_string()}))
            .await;
        assert_eq!(r["payload"]["job_id"], json!(job.id), "{r}");
        let evs = c.events_until(|e| e["event"] == "subscription.ended").await;
        let (ended, events) = evs.split_last().unwrap();
        assert_eq!(ended["payload"]["state"], "succeeded", "{ended}");
        assert_eq!(ended["payload"]["reason"], "finished");
        assert!(
            events.iter().any(|e| e["event"] == "job.succeeded"),
            "{evs:?}"
        );
        assert!(
            events
                .iter()
                .all(|e| e["payload"]["job_id"] == json!(job.id))
        );
        assert_eq!(
            ended["payload"]["last_seq"],
            json!(seqs(events).last().unwrap())
        );
        // Subscribing to the finished job after its end: the answer, then the end at once.
        let last = ended["payload"]["last_seq"].clone();
        let r = c
            .call(
                "jobs.subscribe",
                json!({"id": job.id.to_string(), "after_seq": last}),
            )
            .await;
        assert_eq!(r["payload"]["state"], "succeeded", "{r}");
        let evs = c.events_until(|e| e["event"] == "subscription.ended").await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        // …and from the start: a replay that ends at the head.
        c.call("jobs.subscribe", json!({"id": job.id.to_string()}))
            .await;
        let evs = c.events_until(|e| e["event"] == "subscription.ended").await;
        assert_eq!(
            seqs(&evs[..evs.len() - 1]).len() as u64,
            last.as_u64().unwrap()
        );
        let r = c.call("jobs.subscribe", json!({"id": "nope"})).await;
        assert_eq!(error_code(&r), "invalid_request");
        let r = c
            .call("jobs.subscribe", json!({"id": JobId::new().to_string()}))
            .await;
        assert_eq!(error_code(&r), "not_found");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn approvals_are_listed_and_resolved_once() {
        let rig = rig().await;
        let mut c = rig.admin(config()).await;
        c.call(
            "sessions.send",
            json!({"key": "ops", "text": "/run gated {\"v\": 1}"}),
        )
        .await;
        c.call("sessions.subscribe", json!({"key": "ops"})).await;
        c.events_until(|e| e["event"] == "approval.requested").await;
        let r = c.call("approvals.list", json!({"state": "pending"})).await;
        let approvals = r["payload"]["approvals"].as_array().unwrap().clone();
        assert_eq!(approvals.len(), 1, "{r}");
        let id = approvals[0]["id"].clone();
        let r = c
            .call(
                "approvals.resolve",
                json!({"id": id, "decision": "approve", "note": "ok"}),
            )
            .await;
        assert_eq!(r["payload"]["state"], "approved", "{r}");
        let evs = c.events_until(|e| e["event"] == "run.finished").await;
        assert!(
            evs.iter().any(|e| e["event"] == "skill.observed"),
            "{evs:?}"
        );
        let r = c
            .call("approvals.resolve", json!({"id": id, "decision": "deny"}))
            .await;
        assert_eq!(error_code(&r), "invalid_state");
        let r = c
            .call("approvals.resolve", json!({"id": id, "decision": "maybe"}))
            .await;
        assert_eq!(error_code(&r), "invalid_request");
        let r = c
            .call(
                "approvals.resolve",
                json!({"id": JobId::new().to_string(), "decision": "deny"}),
            )
            .await;
        assert_eq!(error_code(&r), "not_found");
        let r = c.call("approvals.list", json!({"state": "maybe"})).await;
        assert_eq!(error_code(&r), "invalid_request");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_connection_stops_its_subscriptions() {
        let rig = rig().await;
        rig.say("rest:x", "/help").await;
        // Once the run is over, nothing else comes and goes on the bus.
        let started = Instant::now();
        while rig.store.session_by_key("rest:x").unwrap().unwrap().state
            != store::SessionState::Idle
        {
            assert!(started.elapsed() < DEADLINE, "the run did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let receivers = rig.store.bus().receivers();
        let mut c = rig.admin(config()).await;
        c.call("sessions.subscribe", json!({"key": "rest:x"})).await;
        assert_eq!(rig.store.bus().receivers(), receivers + 1);
        let Client { conn, rx, .. } = c;
        drop(rx);
        drop(conn);
        let started = Instant::now();
        while rig.store.bus().receivers() > receivers {
            assert!(started.elapsed() < DEADLINE, "the follower was not dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
