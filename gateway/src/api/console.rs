//! `GET /v1/console`: the WebSocket console. This module only pumps the socket; the protocol
//! (auth with a first `connect` frame, methods, subscriptions, slow consumers) is the
//! `channels::console` actor's, documented in `channels/CONSOLE.md`.
//!
//! The route sits outside the `/v1` key middleware: browsers cannot set headers on a
//! WebSocket, so the key comes in the first frame. It is kept out of timeout layers; it ends
//! when the client or the console closes, when the client accepts nothing for
//! [`WRITE_STALL`], or when the gateway shuts down (close code 1001).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use channels::console::{CLOSE_GOING_AWAY, CLOSE_TOO_BIG, ConsoleConnection, Incoming, Outgoing};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::state::AppState;

/// The largest frame the transport reads at all; a larger one closes the socket with 1009.
/// Frames between the console's own limit (64 KiB) and this get a `payload_too_large` answer
/// and the connection goes on.
pub const TRANSPORT_LIMIT: usize = 1 << 20;

/// A client that takes no frame for this long is disconnected.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// Most frames written with one flush.
const WRITE_BATCH: usize = 64;

#[utoipa::path(get, path = "/v1/console", tag = "console",
    security(()),
    description = "The WebSocket console (`Upgrade: websocket`). No header key: the first frame \
        must be `{\"type\":\"req\",\"id\":\"1\",\"method\":\"connect\",\"params\":{\"token\":\"<API key>\"}}`. \
        Methods: `ping`, `sessions.list`, `sessions.subscribe {key, after_seq?}`, `sessions.unsubscribe {key}`, \
        `sessions.send {key, text, data?, idempotency_key?}`, `sessions.interrupt {key}`, \
        `approvals.list {state?, limit?}`, `approvals.resolve {id, decision, note?}`, \
        `jobs.subscribe {id, after_seq?}`, `jobs.unsubscribe {id}`. Frames and examples: channels/CONSOLE.md.",
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 426, description = "not a WebSocket upgrade request", body = crate::api::ErrorBody)))]
pub async fn console(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("GET /v1/console is a WebSocket; connect with a WebSocket client ({e})"),
        )
    })?;
    Ok(upgrade
        .max_message_size(TRANSPORT_LIMIT)
        .max_frame_size(TRANSPORT_LIMIT)
        .on_failed_upgrade(|e| debug!(error = %e, "console upgrade failed"))
        .on_upgrade(move |socket| serve(state, socket)))
}

/// Counts open connections in `rausku_console_connections` while it lives.
struct Open;

impl Open {
    fn new() -> Open {
        metrics::gauge!("rausku_console_connections").increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("rausku_console_connections").decrement(1.0);
    }
}

/// Why the pump stopped.
enum End {
    /// Closed already (by the client, the console, or the socket failing).
    Done,
    /// Close with this code and reason.
    Close(u16, String),
}

async fn serve(state: AppState, socket: WebSocket) {
    let _open = Open::new();
    let (conn, mut out) = match ConsoleConnection::open(state.console.clone()).await {
        Ok(opened) => opened,
        Err(e) => {
            warn!(error = %e, "cannot start a console");
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = state.shutdown.clone();
    let writer = async {
        loop {
            let next = tokio::select! {
                next = out.recv() => next,
                _ = shutdown.wait_for(|down| *down) => {
                    return End::Close(CLOSE_GOING_AWAY, "the gateway is shutting down".into());
                }
            };
            let Some(first) = next else {
                return End::Done;
            };
            // This frame and those already queued behind it, with one flush: a busy connection
            // costs a socket write per batch, not per frame.
            let batch = async {
                let (mut next, mut fed) = (Some(first), 0);
                while let Some(frame) = next.take() {
                    match frame {
                        Outgoing::Text(text) => sink.feed(Message::Text(text.into())).await?,
                        Outgoing::Close { code, reason } => {
                            sink.flush().await?;
                            return Ok(Some(End::Close(code, reason)));
                        }
                    }
                    fed += 1;
                    if fed < WRITE_BATCH {
                        next = out.try_recv().ok();
                    }
                }
                sink.flush().await?;
                Ok::<_, axum::Error>(None)
            };
            match tokio::time::timeout(WRITE_STALL, batch).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(end))) => return end,
                Ok(Err(_)) => return End::Done,
                Err(_) => {
                    debug!("console client stalled; disconnecting");
                    return End::Done;
                }
            }
        }
    };
    let reader = async {
        while let Some(msg) = stream.next().await {
            let frame = match msg {
                Ok(Message::Text(text)) => Incoming::Text(text.to_string()),
                Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.len()),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return End::Done,
                Err(e) => return read_failed(e),
            };
            if conn.received(frame).await.is_err() {
                // The console closed; the writer sends its close frame.
                std::future::pending::<()>().await;
            }
        }
        End::Done
    };
    let end = tokio::select! {
        end = writer => end,
        end = reader => end,
    };
    conn.close();
    drop(out);
    if let End::Close(code, mut reason) = end {
        // A close frame's reason is at most 123 bytes.
        while reason.len() > 123 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
        if code == CLOSE_TOO_BIG {
            // The client may still be sending the rest of the frame: closing at once would
            // reset the connection and could lose the close frame. Give it a moment.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A frame that could not be read: 1009 if it was too large, else the socket is done.
fn read_failed(e: axum::Error) -> End {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(c)) => End::Close(
            CLOSE_TOO_BIG,
            format!("{c}; frames are limited to {TRANSPORT_LIMIT} bytes"),
        ),
        _ => {
            debug!(error = %inner, "console socket read failed");
            End::Done
        }
    }
}
