//! Sessions and approvals: the records behind the agent loop.
//!
//! A session is event-sourced: its stream `session:<id>` holds everything that happened in it
//! (`message.received`, `run.started`, `skill.invoked`, …, written by the `Session` actor in
//! `agentloop`). The [`Session`] record here is a summary kept in step with the stream in the
//! same writes, so sessions can be listed without replaying them, and so start-up knows which
//! sessions have work to resume (`resume_seq`).
//!
//! Layout:
//! - `sessions`: `SessionId` → [`Session`];
//! - `session_keys`: key (`rest:ops`) → `SessionId`;
//! - `approvals`: `ApprovalId` → [`ApprovalRequest`].
//!
//! Messages enter through [`Store::append_message`], which creates the session on first use,
//! honours an idempotency key, and appends `message.received` in one write. Approvals are
//! decided through [`Store::decide_approval`]: the first decision wins, atomically.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::StoreError;
use crate::event::NewEvent;
use crate::ids::{ApprovalId, RunId, SessionId};
use crate::job_type::Risk;
use crate::store::{Store, Tree, WriteTx};
use crate::time::Timestamp;

/// The longest session key, in bytes.
pub const MAX_SESSION_KEY_BYTES: usize = 256;
/// The longest message text, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The event stream of a session.
pub fn session_stream(id: SessionId) -> String {
    format!("session:{id}")
}

/// Checks a session key (`<channel>:<name>`) and returns its channel.
pub fn session_channel(key: &str) -> Result<&str, String> {
    let Some((channel, name)) = key.split_once(':') else {
        return Err(format!(
            "session key `{key}` must look like `<channel>:<name>`, e.g. `rest:ops`"
        ));
    };
    if channel.is_empty()
        || channel.len() > 32
        || !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "session key `{key}`: the channel `{channel}` must be 1-32 lowercase letters, digits, `_` or `-`"
        ));
    }
    if name.is_empty() {
        return Err(format!("session key `{key}`: the name after `:` is empty"));
    }
    if key.len() > MAX_SESSION_KEY_BYTES {
        return Err(format!(
            "session key is {} bytes; the limit is {MAX_SESSION_KEY_BYTES}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("session key contains control characters".into());
    }
    Ok(channel)
}

/// Where a session's agent loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Idle,
    Running,
    WaitingApproval,
}

/// A session's summary record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub key: String,
    pub channel: String,
    pub state: SessionState,
    pub created_at: Timestamp,
    pub last_activity_at: Timestamp,
    /// Runs started so far.
    pub runs: u64,
    /// Messages accepted and waiting for a run.
    pub queued: u64,
    /// The run in progress, if any.
    pub active_run: Option<RunId>,
    /// Where a rehydrating session starts replaying its stream: the first event of the work
    /// still pending (the active run's start or the oldest queued message); 0 when there is
    /// none, and then nothing needs replaying.
    #[serde(default)]
    pub resume_seq: u64,
}

impl Session {
    pub fn stream(&self) -> String {
        session_stream(self.id)
    }

    /// Whether there is work to resume after a restart.
    pub fn has_pending_work(&self) -> bool {
        self.resume_seq > 0
    }
}

/// A message to append to a session (created on first use).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub key: String,
    pub text: String,
    /// Structured data (REST `data`, a GitHub event's context).
    pub data: Value,
    /// A structured event kind (`pull_request.opened`), if the message is one.
    pub event: Option<String>,
    pub sender: Option<String>,
    /// Recorded only: the planner starts no run for it (an event nothing handles). It is not
    /// queued, and its `message.received` says `"ignored": true`.
    pub ignored: bool,
}

/// Deduplication of a message: the same `(scope, key)` within `retention` is the same message.
#[derive(Debug, Clone)]
pub struct MessageDedupe {
    /// Whose key it is (an API key id, `github`): keys of different callers never collide.
    pub scope: String,
    pub key: String,
    /// A hash of the request: the same key with another request is a conflict.
    pub request_hash: String,
    pub retention: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MessageDedupeRecord {
    request_hash: String,
    session_id: SessionId,
    seq: u64,
    created_at: Timestamp,
}

/// The result of [`Store::append_message`].
#[derive(Debug, Clone)]
pub enum MessageOutcome {
    /// Appended at `seq` of the session's stream.
    Appended { session: Session, seq: u64 },
    /// The same idempotency key and request were seen before: this is where it went.
    Replayed { session_id: SessionId, seq: u64 },
    /// The same idempotency key came with another request.
    Conflict { session_id: SessionId, seq: u64 },
}

/// Where an approval request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    /// Nobody answered in time: counts as denied.
    Expired,
    /// The run it belonged to was interrupted.
    Cancelled,
}

impl ApprovalState {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Cancelled => "cancelled",
        }
    }
}

/// A step of a run waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalRequest {
    pub id: ApprovalId,
    pub session_id: SessionId,
    pub session_key: String,
    pub run_id: RunId,
    /// The step of the run, 1-based.
    pub step: u32,
    pub step_id: String,
    pub skill: String,
    pub input: Value,
    pub channel: String,
    pub risk: Risk,
    pub state: ApprovalState,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// Who decided (an API key's name, `expiry`, `interrupt`).
    pub decided_by: Option<String>,
    pub note: Option<String>,
}

/// Why a decision was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecideError {
    #[error("approval {0} not found")]
    NotFound(ApprovalId),
    #[error("approval {} was already decided: {}", .0.id, .0.state.as_str())]
    AlreadyDecided(Box<ApprovalRequest>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key_bytes(key: &str) -> Vec<u8> {
    key.as_bytes().to_vec()
}

fn dedupe_key(scope: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + key.len() + 2);
    k.extend_from_slice(b"m\0");
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl Store {
    pub fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.get(Tree::Sessions, &id.as_key())
    }

    pub fn session_by_key(&self, key: &str) -> Result<Option<Session>, StoreError> {
        match self.get::<SessionId>(Tree::SessionKeys, &key_bytes(key))? {
            Some(id) => self.session(id),
            None => Ok(None),
        }
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.scan(Tree::Sessions)
    }

    /// Appends `message.received` to the session `msg.key` (created on first use), honouring
    /// `dedupe` atomically. The caller checks the key with [`session_channel`] first.
    pub fn append_message(
        &self,
        msg: NewMessage,
        dedupe: Option<MessageDedupe>,
    ) -> Result<MessageOutcome, StoreError> {
        let channel = session_channel(&msg.key)
            .map_err(StoreError::Invalid)?
            .to_owned();
        let now = Timestamp::now();
        self.write(|tx| {
            let existing = match tx.get::<SessionId>(Tree::SessionKeys, &key_bytes(&msg.key))? {
                Some(id) => tx.get::<Session>(Tree::Sessions, &id.as_key())?,
                None => None,
            };
            if let Some(d) = &dedupe {
                let k = dedupe_key(&d.scope, &d.key);
                if let Some(rec) = tx.get::<MessageDedupeRecord>(Tree::Idempotency, &k)?
                    && rec.created_at.plus(d.retention) >= now
                {
                    return Ok(if rec.request_hash == d.request_hash {
                        MessageOutcome::Replayed {
                            session_id: rec.session_id,
                            seq: rec.seq,
                        }
                    } else {
                        MessageOutcome::Conflict {
                            session_id: rec.session_id,
                            seq: rec.seq,
                        }
                    });
                }
            }
            let is_new = existing.is_none();
            let mut session = existing.unwrap_or_else(|| Session {
                id: SessionId::new(),
                key: msg.key.clone(),
                channel,
                state: SessionState::Idle,
                created_at: now,
                last_activity_at: now,
                runs: 0,
                queued: 0,
                active_run: None,
                resume_seq: 0,
            });
            let mut data = json!({
                "text": msg.text,
                "data": msg.data,
                "event": msg.event,
                "sender": msg.sender,
                "channel": session.channel,
            });
            if msg.ignored {
                data["ignored"] = Value::Bool(true);
            }
            let seq = tx.append(NewEvent::new(session.stream(), "message.received", data));
            if let Some(d) = &dedupe {
                let rec = MessageDedupeRecord {
                    request_hash: d.request_hash.clone(),
                    session_id: session.id,
                    seq,
                    created_at: now,
                };
                tx.put(Tree::Idempotency, dedupe_key(&d.scope, &d.key), &rec);
            }
            session.last_activity_at = now;
            if !msg.ignored {
                session.queued += 1;
                if session.resume_seq == 0 {
                    session.resume_seq = seq;
                }
            }
            if is_new {
                tx.put(Tree::SessionKeys, key_bytes(&msg.key), &session.id);
            }
            tx.put_session(&session);
            Ok(MessageOutcome::Appended { session, seq })
        })
    }

    pub fn approval(&self, id: ApprovalId) -> Result<Option<ApprovalRequest>, StoreError> {
        self.get(Tree::Approvals, &id.as_key())
    }

    /// Approvals, newest first, optionally only those in `state`.
    pub fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut all: Vec<ApprovalRequest> = self.scan(Tree::Approvals)?;
        all.reverse();
        Ok(all
            .into_iter()
            .filter(|a| state.is_none_or(|s| a.state == s))
            .take(limit)
            .collect())
    }

    /// Decides a pending approval and appends `approval.resolved` to its session's stream, in
    /// one write. The first decision wins: a second gets [`DecideError::AlreadyDecided`].
    pub fn decide_approval(
        &self,
        id: ApprovalId,
        decision: ApprovalState,
        by: &str,
        note: Option<String>,
    ) -> Result<ApprovalRequest, DecideError> {
        let now = Timestamp::now();
        self.write(|tx| {
            let Some(mut a) = tx.get::<ApprovalRequest>(Tree::Approvals, &id.as_key())? else {
                return Err(DecideError::NotFound(id));
            };
            if a.state != ApprovalState::Pending {
                return Err(DecideError::AlreadyDecided(Box::new(a)));
            }
            a.state = decision;
            a.decided_at = Some(now);
            a.decided_by = Some(by.to_owned());
            a.note = note;
            tx.append(NewEvent::new(
                session_stream(a.session_id),
                "approval.resolved",
                json!({
                    "run_id": a.run_id,
                    "approval_id": a.id,
                    "step": a.step,
                    "skill": a.skill,
                    "decision": a.state.as_str(),
                    "by": a.decided_by,
                    "note": a.note,
                }),
            ));
            tx.put_approval(&a);
            Ok(a)
        })
    }
}

impl WriteTx<'_> {
    pub fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.get(Tree::Sessions, &id.as_key())
    }

    pub fn put_session(&mut self, session: &Session) {
        self.put(Tree::Sessions, session.id.as_key().to_vec(), session);
    }

    pub fn put_approval(&mut self, approval: &ApprovalRequest) {
        self.put(Tree::Approvals, approval.id.as_key().to_vec(), approval);
    }
}
