//! `SessionService`: the one way in to sessions, for channels and the HTTP API.
//!
//! Everything goes through the [`SessionRouter`](crate::session_router::SessionRouter): channels
//! never talk to a session directly. Reads of records (lists, events) go to the store.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use store::{ApprovalId, ApprovalRequest, ApprovalState, DecideError, Session, Store, StoreError};

use crate::session::SessionSnapshot;
use crate::session_router::{Inbound, RouteError, Routed, RouterSnapshot, SessionRouterMessage};

/// Handle to the sessions. Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    store: Store,
    router: ActorRef<SessionRouterMessage>,
}

impl SessionService {
    pub(crate) fn new(store: Store, router: ActorRef<SessionRouterMessage>) -> Self {
        SessionService { store, router }
    }

    /// Routes a message to its session. It is staged, not yet durable: a caller that
    /// acknowledges it awaits [`Store::durable`] first.
    pub async fn send(&self, inbound: Inbound) -> Result<Routed, RouteError> {
        self.call(|reply| SessionRouterMessage::Route { inbound, reply })
            .await?
    }

    pub fn list(&self) -> Result<Vec<Session>, StoreError> {
        self.store.sessions()
    }

    pub fn get(&self, key: &str) -> Result<Option<Session>, StoreError> {
        self.store.session_by_key(key)
    }

    /// Aborts the session's current run (its running job is cancelled). Returns whether there
    /// was a run.
    pub async fn interrupt(&self, key: &str, by: &str) -> Result<bool, RouteError> {
        let (key, by) = (key.to_owned(), by.to_owned());
        self.call(|reply| SessionRouterMessage::Interrupt { key, by, reply })
            .await?
    }

    /// Decides a pending approval (the first decision wins) and lets its session act on it.
    pub fn decide(
        &self,
        id: ApprovalId,
        decision: ApprovalState,
        by: &str,
        note: Option<String>,
    ) -> Result<ApprovalRequest, DecideError> {
        let approval = self.store.decide_approval(id, decision, by, note)?;
        metrics::counter!("rausku_approvals_decided_total", "decision" => decision.as_str())
            .increment(1);
        let _ = self
            .router
            .send_message(SessionRouterMessage::ApprovalDecided {
                session_id: approval.session_id,
                approval_id: approval.id,
            });
        Ok(approval)
    }

    pub fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.store.approvals(state, limit)
    }

    /// The live state of a session's actor (`None` when it is not running).
    pub async fn live(&self, key: &str) -> Option<SessionSnapshot> {
        let key = key.to_owned();
        self.call(|reply| SessionRouterMessage::SessionSnapshot { key, reply })
            .await
            .ok()
            .flatten()
    }

    pub async fn snapshot(&self) -> Result<RouterSnapshot, RouteError> {
        self.call(|reply| SessionRouterMessage::Snapshot { reply })
            .await
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> SessionRouterMessage,
    ) -> Result<T, RouteError> {
        match self.router.call(msg, Some(Duration::from_secs(30))).await {
            Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
            _ => Err(RouteError::Unavailable),
        }
    }
}
