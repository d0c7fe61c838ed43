//! `CallbackDispatcher`: delivers a finished job to its `callback_url`.
//!
//! The pending delivery is written in the same store write that makes the job terminal, so a
//! crash cannot lose it; the dispatcher re-reads pending deliveries at start-up. Each POST
//! carries the job as JSON, signed `X-Rausku-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//! Only allowlisted hosts are called, private addresses are refused unless allowed (checked
//! again at connect time by the guarded resolver), redirects are not followed, and failures
//! are retried with backoff as scheduled messages. Every attempt is an event on the job.

use std::collections::HashSet;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use skills::net::NetPolicy;
use store::store::Tree;
use store::{Job, JobId, NewEvent, Store, StoreError, Timestamp, WriteTx};
use tracing::{debug, warn};

use crate::backoff::Backoff;

/// How callbacks are delivered.
#[derive(Clone)]
pub struct CallbackConfig {
    /// Allowed hosts and the private-address rule (`RAUSKU_CALLBACK_*`).
    pub net: NetPolicy,
    /// HMAC key of `X-Rausku-Signature`.
    pub secret: Vec<u8>,
    /// Delivery attempts before a callback is abandoned.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl CallbackConfig {
    pub fn new(net: NetPolicy, secret: Vec<u8>) -> Self {
        CallbackConfig {
            net,
            secret,
            max_attempts: 8,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
                jitter: 0.2,
            },
            timeout: Duration::from_secs(10),
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A delivery that has not succeeded yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingCallback {
    job_id: JobId,
    url: String,
    /// Attempts made so far.
    attempts: u32,
    created_at: Timestamp,
}

/// Records, inside the write that ends `job`, that its callback is owed.
pub(crate) fn stage_delivery(tx: &mut WriteTx<'_>, job: &Job) {
    if let Some(url) = &job.callback_url {
        let pending = PendingCallback {
            job_id: job.id,
            url: url.clone(),
            attempts: 0,
            created_at: Timestamp::now(),
        };
        tx.put(Tree::Callbacks, job.id.as_key().to_vec(), &pending);
    }
}

pub struct CallbackDispatcher;

pub enum CallbackMessage {
    /// A job with a callback ended; its delivery is in the store.
    Deliver(JobId),
    /// A delivery attempt finished.
    Attempted {
        id: JobId,
        result: Result<u16, DeliveryError>,
    },
    Snapshot {
        reply: RpcReplyPort<CallbackSnapshot>,
    },
}

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub message: String,
    pub status: Option<u16>,
    pub permanent: bool,
}

/// A serialisable view of the dispatcher.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct CallbackSnapshot {
    pub in_flight: usize,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub abandoned: u64,
}

pub struct CallbackState {
    /// Where pending deliveries and their events are.
    store: Store,
    /// How to deliver.
    config: CallbackConfig,
    /// The guarded HTTP client.
    client: reqwest::Client,
    /// Deliveries with a request in flight (a `Deliver` for them is ignored).
    in_flight: HashSet<JobId>,
    stats: CallbackSnapshot,
}

impl Actor for CallbackDispatcher {
    type Msg = CallbackMessage;
    type State = CallbackState;
    type Arguments = (Store, CallbackConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (store, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let client = config.net.client(config.timeout)?;
        let pending: Vec<PendingCallback> = store.scan(Tree::Callbacks)?;
        for p in pending {
            myself.send_message(CallbackMessage::Deliver(p.job_id))?;
        }
        Ok(CallbackState {
            store,
            config,
            client,
            in_flight: HashSet::new(),
            stats: CallbackSnapshot::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CallbackMessage::Deliver(id) => state.start(&myself, id),
            CallbackMessage::Attempted { id, result } => state.finish(&myself, id, result),
            CallbackMessage::Snapshot { reply } => {
                let mut snap = state.stats;
                snap.in_flight = state.in_flight.len();
                let _ = reply.send(snap);
            }
        }
        Ok(())
    }
}

impl CallbackState {
    fn pending(&self, id: JobId) -> Option<PendingCallback> {
        match self.store.get(Tree::Callbacks, &id.as_key()) {
            Ok(p) => p,
            Err(e) => {
                warn!(%id, error = %e, "cannot read a pending callback");
                None
            }
        }
    }

    fn start(&mut self, myself: &ActorRef<CallbackMessage>, id: JobId) {
        if self.in_flight.contains(&id) {
            return;
        }
        let Some(pending) = self.pending(id) else {
            return;
        };
        let job = match self.store.job(id) {
            Ok(Some(job)) => job,
            _ => return,
        };
        self.in_flight.insert(id);
        let body = serde_json::to_vec(&job).unwrap_or_default();
        let signature = sign(&self.config.secret, &body);
        let client = self.client.clone();
        let net = self.config.net.clone();
        let myself = myself.clone();
        let attempt = pending.attempts + 1;
        let kind = format!("job.{}", job.state);
        tokio::spawn(async move {
            let result = deliver(
                &client,
                &net,
                &pending.url,
                body,
                &signature,
                &kind,
                id,
                attempt,
            )
            .await;
            let _ = myself.send_message(CallbackMessage::Attempted { id, result });
        });
    }

    fn finish(
        &mut self,
        myself: &ActorRef<CallbackMessage>,
        id: JobId,
        result: Result<u16, DeliveryError>,
    ) {
        self.in_flight.remove(&id);
        let Some(mut pending) = self.pending(id) else {
            return;
        };
        pending.attempts += 1;
        let stream = store::job_stream(id);
        let max = self.config.max_attempts;
        let retry_in = match &result {
            Err(e) if !e.permanent && pending.attempts < max => {
                Some(self.config.backoff.next_delay(pending.attempts))
            }
            _ => None,
        };
        let written = self.store.write(|tx| {
            match &result {
                Ok(status) => {
                    tx.append(NewEvent::new(
                        stream.clone(),
                        "callback.delivered",
                        serde_json::json!({
                            "attempt": pending.attempts, "url": pending.url, "status": status,
                        }),
                    ));
                    tx.remove(Tree::Callbacks, id.as_key().to_vec());
                }
                Err(e) => {
                    tx.append(NewEvent::new(stream.clone(), "callback.failed", serde_json::json!({
                        "attempt": pending.attempts, "url": pending.url, "status": e.status,
                        "error": e.message, "retry_in_ms": retry_in.map(|d| d.as_millis() as u64),
                    })));
                    if retry_in.is_some() {
                        tx.put(Tree::Callbacks, id.as_key().to_vec(), &pending);
                    } else {
                        let why = if e.permanent {
                            "the target is refused"
                        } else {
                            "no attempts left"
                        };
                        tx.append(NewEvent::new(
                            stream.clone(),
                            "callback.abandoned",
                            serde_json::json!({
                                "attempts": pending.attempts, "url": pending.url, "reason": why,
                            }),
                        ));
                        tx.remove(Tree::Callbacks, id.as_key().to_vec());
                    }
                }
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = written {
            warn!(%id, error = %e, "cannot record a callback attempt");
        }
        match result {
            Ok(status) => {
                debug!(%id, status, "callback delivered");
                self.stats.delivered += 1;
                metrics::counter!("rausku_callback_deliveries_total", "outcome" => "delivered")
                    .increment(1);
            }
            Err(e) => {
                warn!(%id, attempt = pending.attempts, error = %e.message, "callback delivery failed");
                self.stats.failed_attempts += 1;
                metrics::counter!("rausku_callback_deliveries_total", "outcome" => "failed")
                    .increment(1);
                match retry_in {
                    Some(delay) => {
                        myself.send_after(delay, move || CallbackMessage::Deliver(id));
                    }
                    None => self.stats.abandoned += 1,
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    client: &reqwest::Client,
    net: &NetPolicy,
    url: &str,
    body: Vec<u8>,
    signature: &str,
    kind: &str,
    id: JobId,
    attempt: u32,
) -> Result<u16, DeliveryError> {
    let permanent = |message: String| DeliveryError {
        message,
        status: None,
        permanent: true,
    };
    let url = net.check_url(url).map_err(|e| permanent(e.to_string()))?;
    if !net.allow_private {
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| skills::net::is_forbidden_ip(a.ip())) {
                return Err(permanent(format!(
                    "host `{host}` resolves only to loopback/private/link-local addresses; \
                     set RAUSKU_CALLBACK_ALLOW_PRIVATE=true to allow that"
                )));
            }
        }
    }
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-rausku-signature", signature)
        .header("x-rausku-event", kind)
        .header("x-rausku-job-id", id.to_string())
        .header("x-rausku-delivery-attempt", attempt.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError {
            message: error_chain(&e),
            status: None,
            permanent: false,
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        let hint = if status.is_redirection() {
            " (redirects are not followed)"
        } else {
            ""
        };
        Err(DeliveryError {
            message: format!("the target answered {status}{hint}"),
            status: Some(status.as_u16()),
            permanent: false,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // GitHub's published test vector for the same scheme.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
