//! The domain model of RauskuClaw and its durable persistence in sled.
//!
//! Nothing here knows about actors or HTTP: the job runtime (`agentloop`) and the API
//! (`gateway`) use the [`Store`] to persist, and the [`EventBus`] it owns to hear about changes.
//!
//! Layout:
//! - [`ids`], [`time`]: identifiers (UUIDv7) and timestamps.
//! - [`job`], [`job_type`], [`event`], [`keys`]: the domain model.
//! - [`session`]: session summaries, message ingress with idempotency, approvals.
//! - [`memory`]: memory entries per scope (global, session), keyword search, retention.
//! - [`codec`]: the versioned, checksummed value format of every stored record.
//! - [`store`]: the `Store` (sled trees, transactions, group commit) and its read/write API.
//! - [`bus`]: broadcast of persisted events and gap-free subscriptions that resume from a seq.

pub mod bus;
pub mod codec;
pub mod error;
pub mod event;
pub mod ids;
pub mod job;
pub mod job_type;
pub mod keys;
pub mod memory;
pub mod session;
pub mod store;
pub mod time;

pub use bus::{EventBus, Follower};
pub use error::StoreError;
pub use event::{Event, GLOBAL_STREAM, NewEvent, StreamFilter};
pub use ids::{ApprovalId, EventId, JobId, KeyId, MemoryId, RunId, SessionId};
pub use job::{Job, JobState, Lease, LogLevel, LogLine, NewJob, job_stream};
pub use job_type::{Approval, JobDefaults, JobType, JobTypeSource, Policy, PolicyDecision, Risk};
pub use keys::{ApiKey, Scope};
pub use memory::{MemoryEntry, MemoryError, MemoryHit, MemoryQuery, MemoryScope, MemoryWritten};
pub use session::{
    ApprovalRequest, ApprovalState, DecideError, MessageDedupe, MessageOutcome, NewMessage,
    Session, SessionState, session_channel, session_stream,
};
pub use store::{
    CreateOutcome, EventPosition, IdempotencyScope, JobFilter, Store, StoreConfig, Tree, WriteTx,
};
pub use time::Timestamp;
