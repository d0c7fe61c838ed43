//! The `SessionRouter` actor: maps inbound messages to sessions and supervises them.
//!
//! Channels hand it an [`Inbound`]; it appends `message.received` to the session's stream
//! (creating the session on first use, honouring an idempotency key) and replies with where the
//! message went, then makes sure the session's actor runs: spawned linked to the router on first
//! use, rehydrated from its stream after an idle stop or a failure. A session that fails is
//! restarted from its events within a restart budget; its failure never stops the router.
//!
//! The router also forwards job completions to the sessions that invoked them: one task follows
//! the event bus (gap-free, catching up from the store when it lags) and sends
//! [`SessionRouterMessage::JobFinished`] for every finished job linked to a session.
//!
//! At start-up it rehydrates every session whose record says it has pending work (a run in
//! progress or queued messages): that is how a run continues after a crash.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{
    ApprovalId, Follower, Job, MessageDedupe, MessageOutcome, NewMessage, Session as SessionRecord,
    SessionId, StoreError, StreamFilter, session_channel,
};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::planner::Trigger;
use crate::session::{Session, SessionArgs, SessionDeps, SessionMessage, SessionSnapshot};

/// A message for a session, as a channel hands it over.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The session key, e.g. `rest:ops` (its channel is the part before `:`).
    pub key: String,
    pub text: String,
    /// Structured data (REST `data`, a GitHub event's template context).
    pub data: Value,
    /// A structured event kind (`pull_request.opened`), if the message is one.
    pub event: Option<String>,
    pub sender: Option<String>,
    /// Deduplication (an `Idempotency-Key`, a GitHub delivery id).
    pub dedupe: Option<MessageDedupe>,
}

/// Where a routed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Routed {
    pub session_id: SessionId,
    /// The seq of its `message.received` event in the session's stream.
    pub seq: u64,
    /// The same idempotency key was seen before with the same request: nothing new happened.
    pub replayed: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "this Idempotency-Key was already used with a different message (session {session_id}, seq {seq}); use a new key"
    )]
    Conflict { session_id: SessionId, seq: u64 },
    #[error("no session `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the session router is not running")]
    Unavailable,
}

pub enum SessionRouterMessage {
    Route {
        inbound: Inbound,
        reply: RpcReplyPort<Result<Routed, RouteError>>,
    },
    /// A job linked to a session finished (from the bus-following task).
    JobFinished(Box<Job>),
    /// An approval was decided; its session acts on it.
    ApprovalDecided {
        session_id: SessionId,
        approval_id: ApprovalId,
    },
    /// Aborts the session's current run; replies whether there was one.
    Interrupt {
        key: String,
        by: String,
        reply: RpcReplyPort<Result<bool, RouteError>>,
    },
    /// The live state of one session (`None` when it is not running).
    SessionSnapshot {
        key: String,
        reply: RpcReplyPort<Option<SessionSnapshot>>,
    },
    Snapshot {
        reply: RpcReplyPort<RouterSnapshot>,
    },
}

/// Counters of the router, for `/v1/runtime` and tests.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct RouterStats {
    pub routed: u64,
    /// Events recorded without a run: the planner does not want them (see
    /// [`Planner::wants_event`](crate::Planner::wants_event)).
    pub ignored: u64,
    pub spawned: u64,
    pub rehydrated: u64,
    pub stopped_idle: u64,
    pub failures: u64,
    pub restarts: u64,
    /// Sessions left stopped because they failed more often than the restart budget allows.
    pub gave_up: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouterSnapshot {
    pub live_sessions: usize,
    pub stats: RouterStats,
}

pub struct SessionRouter;

pub struct SessionRouterState {
    deps: Arc<SessionDeps>,
    /// Live session actors by key.
    live: HashMap<String, Live>,
    /// Session keys by id, for events that name a session by id (jobs, approvals).
    keys: HashMap<SessionId, String>,
    /// Session keys by actor id, for supervision events.
    actors: HashMap<ActorId, String>,
    /// Recent restarts per session key, for the restart budget.
    restarts: HashMap<String, VecDeque<Instant>>,
    stats: RouterStats,
    /// The task forwarding job completions; aborted when the router stops.
    follower: Option<JoinHandle<()>>,
}

struct Live {
    actor: ActorRef<SessionMessage>,
}

impl Actor for SessionRouter {
    type Msg = SessionRouterMessage;
    type State = SessionRouterState;
    type Arguments = Arc<SessionDeps>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        deps: Arc<SessionDeps>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionRouterState {
            deps,
            live: HashMap::new(),
            keys: HashMap::new(),
            actors: HashMap::new(),
            restarts: HashMap::new(),
            stats: RouterStats::default(),
            follower: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Follow first, then rehydrate: a job that finishes in between is either seen by the
        // follower or found finished by the rehydrating session.
        let store = state.deps.store.clone();
        let horizon = store.bus().durable_horizon();
        let router = myself.clone();
        state.follower = Some(tokio::spawn(async move {
            let mut follower = Follower::new(&store, StreamFilter::Global, horizon);
            while let Ok(event) = follower.next().await {
                if !matches!(
                    event.kind.as_str(),
                    "job.succeeded" | "job.failed" | "job.cancelled"
                ) || event.data.get("session_id").is_none_or(Value::is_null)
                {
                    continue;
                }
                let Ok(job) = Job::deserialize(&event.data) else {
                    continue;
                };
                if router
                    .send_message(SessionRouterMessage::JobFinished(Box::new(job)))
                    .is_err()
                {
                    break;
                }
            }
        }));
        let pending: Vec<SessionRecord> = state
            .deps
            .store
            .sessions()?
            .into_iter()
            .filter(SessionRecord::has_pending_work)
            .collect();
        if !pending.is_empty() {
            info!(
                sessions = pending.len(),
                "resuming sessions with pending work"
            );
        }
        for record in pending {
            state.spawn(&myself, record, None).await?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(Some("router stopping".into()));
        if let Some(task) = state.follower.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SessionRouterMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionRouterMessage::Route { inbound, reply } => {
                let result = state.route(&myself, inbound).await;
                let _ = reply.send(result);
            }
            SessionRouterMessage::JobFinished(job) => {
                let Some(session_id) = job
                    .session_id
                    .as_deref()
                    .and_then(|s| s.parse::<SessionId>().ok())
                else {
                    return Ok(());
                };
                state
                    .deliver(&myself, session_id, SessionMessage::JobFinished(job))
                    .await?;
            }
            SessionRouterMessage::ApprovalDecided {
                session_id,
                approval_id,
            } => {
                state
                    .deliver(
                        &myself,
                        session_id,
                        SessionMessage::ApprovalDecided(approval_id),
                    )
                    .await?;
            }
            SessionRouterMessage::Interrupt { key, by, reply } => {
                let Some(live) = state.live.get(&key) else {
                    let result = match state.deps.store.session_by_key(&key) {
                        Ok(Some(_)) => Ok(false),
                        Ok(None) => Err(RouteError::NotFound(key)),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(result);
                    return Ok(());
                };
                // The session answers the caller directly: the router's mailbox never waits.
                let actor = live.actor.clone();
                tokio::spawn(async move {
                    let result =
                        ractor::call!(actor, |r| SessionMessage::Interrupt { by, reply: r })
                            .map_err(|_| RouteError::Unavailable);
                    let _ = reply.send(result);
                });
            }
            SessionRouterMessage::SessionSnapshot { key, reply } => match state.live.get(&key) {
                Some(live) => {
                    let _ = live.actor.send_message(SessionMessage::Snapshot { reply });
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            SessionRouterMessage::Snapshot { reply } => {
                let _ = reply.send(RouterSnapshot {
                    live_sessions: state.live.len(),
                    stats: state.stats,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop because a session stopped (ractor's default would).
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(key) = state.actors.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(live) = state.live.remove(&key) else {
            return Ok(());
        };
        if live.actor.get_id() != cell.get_id() {
            // A newer actor already serves this key.
            state.live.insert(key, live);
            return Ok(());
        }
        let record = state.deps.store.session_by_key(&key)?;
        if let Some(record) = &record {
            state.keys.remove(&record.id);
        }
        match failure {
            None => {
                state.stats.stopped_idle += 1;
                // A message may have been appended while the session was stopping: it is in
                // the stream, so a rehydrated session picks it up.
                if let Some(record) = record.filter(SessionRecord::has_pending_work) {
                    state.spawn(&myself, record, None).await?;
                }
            }
            Some(err) => {
                state.stats.failures += 1;
                metrics::counter!("rausku_session_failures_total").increment(1);
                let config = &state.deps.config;
                let now = Instant::now();
                let recent = state.restarts.entry(key.clone()).or_default();
                recent.retain(|t| now.duration_since(*t) < config.restart_window);
                if recent.len() as u32 >= config.max_restarts {
                    state.stats.gave_up += 1;
                    error!(
                        session = %key,
                        error = %err,
                        restarts = recent.len(),
                        "session failed too often; leaving it stopped until its next message"
                    );
                    return Ok(());
                }
                recent.push_back(now);
                warn!(session = %key, error = %err, "session failed; restarting it from its events");
                if let Some(record) = record {
                    state.stats.restarts += 1;
                    state.spawn(&myself, record, None).await?;
                }
            }
        }
        Ok(())
    }
}

impl SessionRouterState {
    async fn route(
        &mut self,
        myself: &ActorRef<SessionRouterMessage>,
        inbound: Inbound,
    ) -> Result<Routed, RouteError> {
        let channel = session_channel(&inbound.key).map_err(RouteError::Invalid)?;
        let mut trigger = Trigger {
            channel: channel.to_owned(),
            // Known once the message is appended.
            session_id: SessionId::NIL,
            session_key: inbound.key.clone(),
            text: inbound.text,
            event: inbound.event,
            data: inbound.data,
            sender: inbound.sender,
            message_seq: 0,
        };
        let ignored = trigger.event.is_some() && !self.deps.planner.wants_event(&trigger);
        let msg = NewMessage {
            key: inbound.key,
            text: trigger.text.clone(),
            data: trigger.data.clone(),
            event: trigger.event.clone(),
            sender: trigger.sender.clone(),
            ignored,
        };
        let (record, seq) = match self.deps.store.append_message(msg, inbound.dedupe)? {
            MessageOutcome::Appended { session, seq } => (session, seq),
            MessageOutcome::Replayed { session_id, seq } => {
                return Ok(Routed {
                    session_id,
                    seq,
                    replayed: true,
                });
            }
            MessageOutcome::Conflict { session_id, seq } => {
                return Err(RouteError::Conflict { session_id, seq });
            }
        };
        self.stats.routed += 1;
        metrics::counter!("rausku_messages_routed_total").increment(1);
        let routed = Routed {
            session_id: record.id,
            seq,
            replayed: false,
        };
        if ignored {
            // Recorded, and nothing to run: the session actor is not woken (or spawned).
            self.stats.ignored += 1;
            return Ok(routed);
        }
        trigger.session_id = record.id;
        trigger.message_seq = seq;
        let delivered = match self.live.get(&record.key) {
            Some(live) => live
                .actor
                .send_message(SessionMessage::MessageArrived(trigger.clone()))
                .is_ok(),
            None => false,
        };
        if !delivered {
            // Only the new message is pending: hand it over instead of replaying the stream.
            let arrived = (record.resume_seq == seq).then_some(trigger);
            self.spawn(myself, record, arrived).await.map_err(|e| {
                error!(error = %e, "could not start a session actor");
                RouteError::Unavailable
            })?;
        }
        Ok(routed)
    }

    /// Sends `msg` to the session `id`, rehydrating it first if it is not running.
    async fn deliver(
        &mut self,
        myself: &ActorRef<SessionRouterMessage>,
        id: SessionId,
        msg: SessionMessage,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(key) = self.keys.get(&id)
            && let Some(live) = self.live.get(key)
        {
            let _ = live.actor.send_message(msg);
            return Ok(());
        }
        // Not running: a rehydrated session reads the job or approval from the store itself.
        if let Some(record) = self.deps.store.session(id)?
            && record.has_pending_work()
            && !self.live.contains_key(&record.key)
        {
            self.spawn(myself, record, None).await?;
        }
        Ok(())
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SessionRouterMessage>,
        record: SessionRecord,
        arrived: Option<Trigger>,
    ) -> Result<(), ActorProcessingErr> {
        let key = record.key.clone();
        let id = record.id;
        let rehydrating = arrived.is_none();
        let args = SessionArgs {
            deps: self.deps.clone(),
            record,
            arrived,
        };
        let (actor, _) = Actor::spawn_linked(None, Session, args, myself.get_cell()).await?;
        self.stats.spawned += 1;
        if rehydrating {
            self.stats.rehydrated += 1;
        }
        metrics::gauge!("rausku_sessions_live").set(self.live.len() as f64 + 1.0);
        self.actors.insert(actor.get_id(), key.clone());
        self.keys.insert(id, key.clone());
        self.live.insert(key, Live { actor });
        Ok(())
    }
}
