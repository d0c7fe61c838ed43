//! Events: everything that happens, persisted before anyone hears of it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::EventId;
use crate::time::Timestamp;

/// The stream every event also belongs to: the global feed.
pub const GLOBAL_STREAM: &str = "global";

/// One persisted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// `job:<id>`, `session:<id>`, or another named stream.
    pub stream: String,
    /// Dense and increasing within `stream`, from 1.
    pub seq: u64,
    /// Position in the global feed, dense and increasing from 1.
    pub global_seq: u64,
    pub id: EventId,
    pub ts: Timestamp,
    /// Dotted kind, e.g. `job.succeeded`, `job.log`, `callback.delivered`.
    pub kind: String,
    pub data: Value,
}

/// An event to append; the store assigns `seq`, `global_seq`, `id` and `ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub stream: String,
    pub kind: String,
    pub data: Value,
}

impl NewEvent {
    pub fn new(stream: impl Into<String>, kind: impl Into<String>, data: Value) -> Self {
        NewEvent {
            stream: stream.into(),
            kind: kind.into(),
            data,
        }
    }
}

/// Which events a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamFilter {
    /// Every event, ordered by `global_seq`.
    Global,
    /// One stream, ordered by `seq`.
    Stream(String),
}

impl StreamFilter {
    /// The cursor of `event` for this filter.
    pub fn position(&self, event: &Event) -> u64 {
        match self {
            StreamFilter::Global => event.global_seq,
            StreamFilter::Stream(_) => event.seq,
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        match self {
            StreamFilter::Global => true,
            StreamFilter::Stream(s) => *s == event.stream,
        }
    }
}
