//! Server-Sent Events over a [`Follower`]: replay from the store, then live, ending on shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use store::{Event, Follower};
use tokio::sync::watch;

/// What to send for one stored event, and whether the stream ends after it.
pub type Mapper = Box<dyn FnMut(&Event) -> (Option<SseEvent>, bool) + Send>;

/// The position to resume after, from `Last-Event-ID`.
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Streams `first` (if any), then every event of `follower` through `map`.
pub fn stream(
    first: Option<SseEvent>,
    follower: Follower,
    shutdown: watch::Receiver<bool>,
    map: Mapper,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        first: Option<SseEvent>,
        follower: Follower,
        shutdown: watch::Receiver<bool>,
        map: Mapper,
        done: bool,
    }
    let st = St {
        first,
        follower,
        shutdown,
        map,
        done: false,
    };
    let s = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        loop {
            if st.done || *st.shutdown.borrow() {
                return None;
            }
            let event = tokio::select! {
                e = st.follower.next() => e,
                _ = st.shutdown.changed() => return None,
            };
            let Ok(event) = event else { return None };
            let (out, end) = (st.map)(&event);
            st.done = end;
            if let Some(out) = out {
                return Some((Ok(out), st));
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// An SSE event carrying `data` as JSON.
pub fn json_event(name: &str, id: Option<u64>, data: &impl serde::Serialize) -> SseEvent {
    let mut e = SseEvent::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default());
    if let Some(id) = id {
        e = e.id(id.to_string());
    }
    e
}
