//! The in-process event bus and gap-free subscriptions.
//!
//! The committer publishes events only after they are flushed, and advances the *durable
//! horizon* (the highest flushed `global_seq`) before it does. A [`Follower`] subscribes to the
//! bus first, then reads the store up to the horizon, then takes live events, skipping what it
//! has already seen: so it resumes from any seq with no gap and no duplicate. If it falls behind
//! the bus (lagged), it catches up from the store; it never silently loses events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::event::{Event, StreamFilter};
use crate::store::Store;

/// Broadcast of durable events. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    horizon: Arc<AtomicU64>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize, horizon: u64) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus {
            tx,
            horizon: Arc::new(AtomicU64::new(horizon)),
        }
    }

    /// The highest `global_seq` known to be on disk.
    pub fn durable_horizon(&self) -> u64 {
        self.horizon.load(Ordering::Acquire)
    }

    pub(crate) fn publish(&self, events: Vec<Arc<Event>>) {
        if let Some(max) = events.iter().map(|e| e.global_seq).max() {
            self.horizon.fetch_max(max, Ordering::AcqRel);
        }
        for e in events {
            // No receivers is fine: nobody is listening.
            let _ = self.tx.send(e);
        }
    }

    /// A raw receiver of live events (no replay). Prefer [`Follower`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Follows one stream (or the global feed) from a position: first what the store has after it,
/// then live events, with no gap and no duplicate.
pub struct Follower {
    store: Store,
    filter: StreamFilter,
    rx: broadcast::Receiver<Arc<Event>>,
    /// Position (seq, or global seq for the feed) of the last event handed out.
    last: u64,
    /// Events read from the store and not yet handed out.
    backlog: VecDeque<Arc<Event>>,
    /// Whether the store has nothing more for us up to the durable horizon, so live events
    /// continue where the store left off.
    caught_up: bool,
    /// How many times this follower fell behind the bus and caught up from the store.
    lagged: u64,
}

const PAGE: usize = 256;

impl Follower {
    pub fn new(store: &Store, filter: StreamFilter, after: u64) -> Self {
        // Subscribe before reading the store: nothing published in between is missed.
        let rx = store.bus().subscribe();
        Follower {
            store: store.clone(),
            filter,
            rx,
            last: after,
            backlog: VecDeque::new(),
            caught_up: false,
            lagged: 0,
        }
    }

    pub fn position(&self) -> u64 {
        self.last
    }

    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    /// The next event. Errors only if the store fails or shuts down.
    ///
    /// A live event is the one the bus carries, shared by every follower: nothing is copied
    /// per follower, however many there are and however large the event.
    pub async fn next(&mut self) -> Result<Arc<Event>, StoreError> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                self.last = self.filter.position(&e);
                return Ok(e);
            }
            if !self.caught_up {
                let page = self.store.events_after(&self.filter, self.last, PAGE)?;
                if page.len() < PAGE {
                    self.caught_up = true;
                }
                self.backlog.extend(page.into_iter().map(Arc::new));
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if !self.filter.matches(&e) {
                        continue;
                    }
                    let pos = self.filter.position(&e);
                    if pos <= self.last {
                        continue;
                    }
                    if pos == self.last + 1 {
                        self.last = pos;
                        return Ok(e);
                    }
                    // Something between was published before we subscribed: read it.
                    self.caught_up = false;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.lagged += 1;
                    self.caught_up = false;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }

    /// The next event if one is ready now, without waiting for live ones.
    pub fn try_next_stored(&mut self) -> Result<Option<Arc<Event>>, StoreError> {
        if self.backlog.is_empty() {
            let page = self.store.events_after(&self.filter, self.last, PAGE)?;
            self.backlog.extend(page.into_iter().map(Arc::new));
        }
        Ok(self
            .backlog
            .pop_front()
            .inspect(|e| self.last = self.filter.position(e)))
    }
}
