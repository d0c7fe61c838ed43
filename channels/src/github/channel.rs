//! The `GithubChannel` actor: from the `github` stream to sessions, and replies back as
//! comments.
//!
//! The webhook route stores each delivery on the `github` stream and answers; this actor follows
//! that stream (gap-free, from the store) and routes every delivery to its session through the
//! `SessionRouter`: a comment addressed to the bot (`/rausku deploy staging`) becomes a message
//! with that text, any other delivery a structured event (`pull_request.opened`) with the
//! delivery's template context as data. Pings are skipped.
//!
//! Durability: the position routed so far is kept in the store (`meta`), written at most every
//! [`CURSOR_SAVE_INTERVAL`] while deliveries are routed (and when the actor stops), and each
//! routed message is deduplicated on its delivery id. After a crash the actor resumes from the
//! saved position, and the deliveries routed since are recognised by their ids: nothing is
//! lost and nothing is run twice.
//!
//! [`GithubReplies`] is the reply route: a reply of a session keyed `github:<owner>/<repo>#<n>`
//! becomes a `github.comment` job, marked with the reply's id so a retried comment is posted
//! once.

use std::sync::Arc;
use std::time::Duration;

use agentloop::{CreateJob, Inbound, ReplyRoute, RouteError, SessionService};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use store::{Event, MessageDedupe, Store, Tree};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::ingress::{DeliveryRoute, follow};

/// The `meta` key of the last `github` stream seq routed to a session.
const CURSOR_KEY: &[u8] = b"github.routed_seq";
/// How long the routed position may go unsaved: one cursor write per burst of deliveries,
/// not one per delivery. What a crash re-routes is deduplicated on the delivery ids.
pub const CURSOR_SAVE_INTERVAL: Duration = Duration::from_millis(100);

pub struct GithubChannel;

pub struct GithubChannelArgs {
    pub store: Store,
    pub sessions: SessionService,
    /// How long a delivery id dedupes its message (as long as the webhook's own dedupe).
    pub dedupe_retention: Duration,
}

pub enum GithubChannelMessage {
    /// A stored event of the `github` stream, in order.
    Delivered(Arc<Event>),
    /// Save the routed position (scheduled by the first delivery after the last save).
    SaveCursor,
}

pub struct GithubChannelState {
    store: Store,
    sessions: SessionService,
    dedupe_retention: Duration,
    /// The last seq routed.
    routed: u64,
    /// The last seq saved as [`CURSOR_KEY`].
    saved: u64,
    /// Whether a [`GithubChannelMessage::SaveCursor`] is on its way.
    save_scheduled: bool,
    /// Follows the stream from `routed` and feeds this actor; aborted when it stops.
    follower: Option<JoinHandle<()>>,
}

impl Actor for GithubChannel {
    type Msg = GithubChannelMessage;
    type State = GithubChannelState;
    type Arguments = GithubChannelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: GithubChannelArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let routed = args.store.get::<u64>(Tree::Meta, CURSOR_KEY)?.unwrap_or(0);
        let mut follower = follow(&args.store, routed);
        let task = tokio::spawn(async move {
            while let Ok(event) = follower.next().await {
                if myself
                    .send_message(GithubChannelMessage::Delivered(event))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(GithubChannelState {
            store: args.store,
            sessions: args.sessions,
            dedupe_retention: args.dedupe_retention,
            routed,
            saved: routed,
            save_scheduled: false,
            follower: Some(task),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.follower.take() {
            task.abort();
        }
        if let Err(e) = state.save_cursor() {
            warn!(error = %e, "cannot save the github routing position; it is routed again after a restart");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: GithubChannelMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let event = match msg {
            GithubChannelMessage::Delivered(event) => event,
            GithubChannelMessage::SaveCursor => {
                state.save_scheduled = false;
                state.save_cursor()?;
                return Ok(());
            }
        };
        if event.seq <= state.routed {
            return Ok(());
        }
        match DeliveryRoute::from_event(&event) {
            Some(Ok(delivery)) if delivery.kind != "ping" => {
                state.route(delivery).await?;
            }
            Some(Err(e)) => {
                warn!(seq = event.seq, error = %e, "unreadable github delivery event; skipped");
            }
            _ => {}
        }
        state.routed = event.seq;
        if !state.save_scheduled {
            state.save_scheduled = true;
            myself.send_after(CURSOR_SAVE_INTERVAL, || GithubChannelMessage::SaveCursor);
        }
        Ok(())
    }
}

impl GithubChannelState {
    /// Saves the routed position if it moved since the last save.
    fn save_cursor(&mut self) -> Result<(), store::StoreError> {
        if self.routed > self.saved {
            let seq = self.routed;
            self.store.write(|tx| {
                tx.put(Tree::Meta, CURSOR_KEY.to_vec(), &seq);
                Ok::<_, store::StoreError>(())
            })?;
            self.saved = seq;
        }
        Ok(())
    }

    async fn route(&self, delivery: DeliveryRoute) -> Result<(), ActorProcessingErr> {
        let (text, event) = match delivery.command {
            Some(command) => (command, None),
            None => (String::new(), Some(delivery.kind.clone())),
        };
        let sender = delivery
            .context
            .get("sender")
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        let inbound = Inbound {
            key: delivery.session_key.clone(),
            text,
            data: delivery.context,
            event,
            sender,
            dedupe: Some(MessageDedupe {
                scope: "github".into(),
                key: delivery.delivery.clone(),
                request_hash: delivery.delivery.clone(),
                retention: self.dedupe_retention,
            }),
        };
        match self.sessions.send(inbound).await {
            Ok(routed) => {
                info!(
                    delivery = %delivery.delivery,
                    kind = %delivery.kind,
                    session = %delivery.session_key,
                    seq = routed.seq,
                    replayed = routed.replayed,
                    "github delivery routed"
                );
                Ok(())
            }
            Err(RouteError::Invalid(reason)) => {
                // A key the router cannot take is a mapping bug, not a reason to stop the channel.
                warn!(delivery = %delivery.delivery, %reason, "github delivery not routable; skipped");
                Ok(())
            }
            // Anything else (the router is stopping, the store failed): stop here; the cursor
            // was not advanced, so the delivery is routed again after a restart.
            Err(e) => Err(e.into()),
        }
    }
}

/// Replies of sessions on an issue or pull request become `github.comment` jobs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GithubReplies;

impl ReplyRoute for GithubReplies {
    fn job_for(&self, session_key: &str, reply_id: &str, text: &str) -> Option<CreateJob> {
        let (repo, number) = issue_of(session_key)?;
        if text.trim().is_empty() {
            return None;
        }
        Some(CreateJob {
            job_type: "github.comment".into(),
            input: json!({
                "repo": repo,
                "number": number,
                "body": text,
                "reply_id": reply_id,
            }),
            ..CreateJob::default()
        })
    }
}

/// `github:<owner>/<repo>#<number>` → (`owner/repo`, number).
fn issue_of(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix("github:")?;
    let (repo, number) = rest.rsplit_once('#')?;
    let number = number.parse().ok()?;
    repo.contains('/').then_some((repo, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issue_and_pull_request_sessions_get_comments() {
        assert_eq!(issue_of("github:acme/api#42"), Some(("acme/api", 42)));
        assert_eq!(issue_of("github:acme/api@main"), None);
        assert_eq!(issue_of("github:acme/api/release/v1"), None);
        assert_eq!(issue_of("github:acme/api#x"), None);
        assert_eq!(issue_of("rest:ops#1"), None);
        let job = GithubReplies
            .job_for("github:acme/api#7", "run-1", "all green")
            .unwrap();
        assert_eq!(job.job_type, "github.comment");
        assert_eq!(
            job.input,
            json!({"repo": "acme/api", "number": 7, "body": "all green", "reply_id": "run-1"})
        );
        assert!(
            GithubReplies
                .job_for("github:acme/api#7", "r", "  ")
                .is_none()
        );
    }
}
