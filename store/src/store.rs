//! The `Store`: one sled database, its trees, a single writer with multi-tree transactions, and
//! group commit.
//!
//! Writes go through [`Store::write`]: the closure stages changes in a [`WriteTx`]. One writer
//! at a time (a mutex held for microseconds, never across `.await`) keeps event seqs dense and
//! makes check-then-write sequences (idempotency keys, lease checks) race-free. A write does not
//! touch sled: its changes join an in-memory overlay that every read consults first, so a write
//! is visible at once to everything in the process.
//!
//! A dedicated committer thread is the only sled writer. Each cycle it takes everything staged
//! since the last one, applies it in **one** multi-tree sled transaction (so every write is
//! atomic, and a batch is too), flushes it with one `fsync`, then publishes the flushed events on
//! the [`EventBus`] and wakes the callers of [`Store::durable`]. Concurrent writers so share
//! transactions and flushes (group commit), writers never wait for an `fsync` (sled holds a
//! process-wide lock during a flush that every transaction needs), and no subscriber ever sees
//! an event that a crash could take back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use tokio::sync::oneshot;

use crate::bus::EventBus;
use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::event::{Event, NewEvent, StreamFilter};
use crate::ids::{EventId, JobId};
use crate::job::{Job, JobState, LogLevel, LogLine, job_stream};
use crate::job_type::JobType;
use crate::keys::ApiKey;
use crate::time::Timestamp;

/// The sled trees. Every tree's keys are big-endian so range scans come out in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// `JobId` → `Job`.
    Jobs,
    /// `JobId` → state byte, for jobs that are not terminal (overwritten in place on change).
    JobsActive,
    /// `global_seq` → `Event`.
    Events,
    /// `stream ++ 0x00 ++ seq` → `global_seq`.
    Streams,
    /// name → `JobType`.
    JobTypes,
    /// `scope ++ 0x00 ++ key` → `IdempotencyRecord` (jobs); `m\0 ++ scope ++ 0x00 ++ key` → a
    /// session message's record (see [`crate::session`]).
    Idempotency,
    /// `KeyId` → `ApiKey`.
    ApiKeys,
    /// `JobId` → pending callback delivery (owned by the job runtime).
    Callbacks,
    /// Named singletons: counters, secrets, format markers.
    Meta,
    /// `scope ++ 0x00 ++ MemoryId` → `MemoryEntry` (see [`crate::memory`]).
    Memory,
    /// `'e' ++ MemoryId` → scope and seq; `'n' ++ scope` → scope stats;
    /// `'q' ++ scope ++ 0x00 ++ seq` → `MemoryId` (see [`crate::memory`]).
    MemoryIndex,
    /// `SessionId` → `Session` (see [`crate::session`]).
    Sessions,
    /// session key → `SessionId`.
    SessionKeys,
    /// `ApprovalId` → `ApprovalRequest`.
    Approvals,
    /// Webhook delivery id (e.g. GitHub's `X-GitHub-Delivery`) → when it was received and
    /// where its event went: the dedupe record of a webhook channel (owned by `channels`).
    Deliveries,
}

impl Tree {
    const ALL: [Tree; 15] = [
        Tree::Jobs,
        Tree::JobsActive,
        Tree::Events,
        Tree::Streams,
        Tree::JobTypes,
        Tree::Idempotency,
        Tree::ApiKeys,
        Tree::Callbacks,
        Tree::Meta,
        Tree::Memory,
        Tree::MemoryIndex,
        Tree::Sessions,
        Tree::SessionKeys,
        Tree::Approvals,
        Tree::Deliveries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Jobs => "jobs",
            Tree::JobsActive => "jobs_active",
            Tree::Events => "events",
            Tree::Streams => "streams",
            Tree::JobTypes => "job_types",
            Tree::Idempotency => "idempotency",
            Tree::ApiKeys => "api_keys",
            Tree::Callbacks => "callbacks",
            Tree::Meta => "meta",
            Tree::Memory => "memory",
            Tree::MemoryIndex => "memory_index",
            Tree::Sessions => "sessions",
            Tree::SessionKeys => "session_keys",
            Tree::Approvals => "approvals",
            Tree::Deliveries => "deliveries",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Capacity of the in-process event bus before slow subscribers lag.
    pub bus_capacity: usize,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            cache_bytes: 256 << 20,
            bus_capacity: 8192,
        }
    }
}

/// The idempotency record of one `(scope, key)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    request_hash: String,
    job_id: JobId,
    created_at: Timestamp,
}

/// Any idempotency record (of a job or of a session message), as far as purging is concerned.
#[derive(Deserialize)]
struct Stamped {
    created_at: Timestamp,
}

/// The idempotency key a job creation is made under.
#[derive(Debug, Clone)]
pub struct IdempotencyScope {
    /// Whose key it is (the API key id): keys of different callers never collide.
    pub scope: String,
    pub key: String,
    /// A hash of the request body: the same key with another body is a conflict.
    pub request_hash: String,
    /// Records older than this are forgotten.
    pub retention: Duration,
}

/// The result of [`Store::create_job`].
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    Created(Job),
    /// The same idempotency key and body were seen before: here is that job.
    Replayed(Job),
    /// The same idempotency key came with another body.
    Conflict {
        job_id: JobId,
    },
}

/// Filters of [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub job_type: Option<String>,
    pub session_id: Option<String>,
    /// Only jobs older than this one (the cursor of the previous page).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// Counters of the committer, for `/metrics` and `/v1/runtime`.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct CommitStats {
    pub flushes: u64,
    pub flushed_events: u64,
    pub flush_waiters: u64,
    pub flush_errors: u64,
    /// Time spent applying batches to sled (the transactions), in all, in microseconds.
    pub commit_us: u64,
    /// Time spent in `fsync` (sled's flush), in all, in microseconds.
    pub flush_us: u64,
}

/// A handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    path: PathBuf,
    committer_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::ops::Deref for Inner {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

/// What the store handles and the committer thread share.
struct Core {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    writer: Mutex<WriterState>,
    commit: Committer,
    /// Serialises commits to sled (the committer's, and [`Store::settle`]'s).
    commit_lock: Mutex<()>,
    /// Events committed to sled and not yet flushed: the committer publishes them after its
    /// next flush.
    unflushed: Mutex<Vec<Arc<Event>>>,
    bus: EventBus,
    /// Jobs per state, kept in step with the `jobs` tree (persisted in `meta`).
    counts: [AtomicU64; 6],
}

/// What the writer owns, behind one mutex.
struct WriterState {
    next_global: u64,
    /// Last seq per stream, a cache of the `streams` tree's last keys. Every stream with staged
    /// or committing events is in it (it is only cleared when nothing is pending).
    heads: HashMap<String, u64>,
    /// Changes staged since the committer last took them.
    staged: Pending,
    /// The batch the committer is applying to sled right now; reads see it until sled does.
    committing: Option<Arc<Pending>>,
}

/// A batch of staged changes: the last value of each changed key (`None`: removed), and the
/// events, in seq order.
#[derive(Default, Clone)]
struct Pending {
    ops: HashMap<(Tree, Vec<u8>), Option<Vec<u8>>>,
    events: Vec<Arc<Event>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty()
    }
}

impl WriterState {
    /// The pending value of a key: `Some(None)` if it is staged as removed, `None` if sled has
    /// the latest value.
    fn pending(&self, tree: Tree, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let k = (tree, key.to_vec());
        if let Some(v) = self.staged.ops.get(&k) {
            return Some(v.clone());
        }
        self.committing
            .as_ref()
            .and_then(|c| c.ops.get(&k).cloned())
    }
}

/// Cap of the stream-head cache; past it the cache is cleared and refilled from the tree.
const MAX_CACHED_HEADS: usize = 100_000;

impl Store {
    /// Opens (or creates) the store in `config.path`.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::Io(format!(
                "cannot create data directory {}: {e}",
                config.path.display()
            ))
        })?;
        let db = open_db(&config)?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let next_global = match trees[Tree::Events.index()].last()? {
            Some((k, _)) => be_u64(&k) + 1,
            None => 1,
        };
        let counts: [AtomicU64; 6] = Default::default();
        for st in JobState::ALL {
            if let Some(v) = trees[Tree::Meta.index()].get(count_key(st))? {
                counts[st.index()].store(be_u64(&v), Ordering::Relaxed);
            }
        }
        let core = Arc::new(Core {
            db,
            trees,
            writer: Mutex::new(WriterState {
                next_global,
                heads: HashMap::new(),
                staged: Pending::default(),
                committing: None,
            }),
            commit: Committer::default(),
            commit_lock: Mutex::new(()),
            unflushed: Mutex::new(Vec::new()),
            bus: EventBus::new(config.bus_capacity, next_global - 1),
            counts,
        });
        let thread = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("store-committer".into())
                .spawn(move || core.run_committer())
                .map_err(|e| StoreError::Io(format!("cannot start committer thread: {e}")))?
        };
        Ok(Store {
            inner: Arc::new(Inner {
                core,
                path: config.path,
                committer_thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    pub(crate) fn tree(&self, t: Tree) -> &sled::Tree {
        &self.inner.trees[t.index()]
    }

    /// Applies the changes staged by `f` atomically. Nothing is durable until
    /// [`Store::durable`] says so; events are published once they are.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = WriteTx {
            store: self,
            writer: &writer,
            ops: Vec::new(),
            events: Vec::new(),
            heads: HashMap::new(),
            head_error: None,
            jobs: HashMap::new(),
            read: HashMap::new(),
        };
        let out = f(&mut tx)?;
        let staged = tx.stage()?;
        if staged.apply(&mut writer, &self.inner.counts) {
            drop(writer);
            self.inner.commit.notify();
        }
        Ok(out)
    }

    /// Resolves once everything written before this call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.commit.wait(tx);
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits what is staged and flushes, synchronously (for shutdown and tools). Events are
    /// not published.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.commit_staged()?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Stops the committer after a last commit and flush. Later writes are still committed by
    /// [`Store::flush_blocking`] or when the last handle is dropped; call this at shutdown.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.commit.close();
        if let Some(h) = self
            .inner
            .committer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        self.flush_blocking()
    }

    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commit.stats()
    }

    /// Whether the store answers reads (for `/health`).
    pub fn healthy(&self) -> bool {
        self.tree(Tree::Meta).get(b"health-probe").is_ok()
    }

    /// Approximate bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    // ----- jobs -----

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.get(Tree::Jobs, &id.as_key())
    }

    /// Creates a job, honouring an idempotency key atomically: of many concurrent requests with
    /// one key, exactly one creates the job.
    pub fn create_job(
        &self,
        job: Job,
        idem: Option<IdempotencyScope>,
    ) -> Result<CreateOutcome, StoreError> {
        self.write(|tx| {
            if let Some(idem) = &idem {
                let key = idem_key(&idem.scope, &idem.key);
                if let Some(rec) = tx.get::<IdempotencyRecord>(Tree::Idempotency, &key)? {
                    let expired = rec.created_at.plus(idem.retention) < job.created_at;
                    if !expired {
                        if rec.request_hash != idem.request_hash {
                            return Ok(CreateOutcome::Conflict { job_id: rec.job_id });
                        }
                        if let Some(original) = tx.job(rec.job_id)? {
                            return Ok(CreateOutcome::Replayed(original));
                        }
                    }
                }
                let rec = IdempotencyRecord {
                    request_hash: idem.request_hash.clone(),
                    job_id: job.id,
                    created_at: job.created_at,
                };
                tx.put(Tree::Idempotency, key, &rec);
            }
            tx.insert_job(job.clone())?;
            Ok(CreateOutcome::Created(job))
        })
    }

    /// Forgets idempotency records created before `cutoff`. Returns how many.
    pub fn purge_idempotency(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        self.settle()?;
        let mut stale = Vec::new();
        for item in self.tree(Tree::Idempotency).iter() {
            let (k, v) = item?;
            let rec: Stamped = decode(Tree::Idempotency.name(), &k, &v)?;
            if rec.created_at < cutoff {
                stale.push(k);
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        // Checked again under the writer lock: a key found stale above may have been taken by
        // a new job since (an expired key is reused), and that record must stay.
        self.write(|tx| {
            let mut n = 0;
            for k in stale {
                let still_stale = tx
                    .get::<Stamped>(Tree::Idempotency, &k)?
                    .is_some_and(|rec| rec.created_at < cutoff);
                if still_stale {
                    tx.remove(Tree::Idempotency, k.to_vec());
                    n += 1;
                }
            }
            Ok::<_, StoreError>(n)
        })
    }

    /// Jobs newest first, filtered. The cursor of the next page is the last job's id.
    pub fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        self.settle()?;
        let limit = filter.limit.clamp(1, 1000);
        let upper = filter.before.map(|id| id.as_key().to_vec());
        let matches = |job: &Job| {
            filter.state.is_none_or(|s| job.state == s)
                && filter.job_type.as_deref().is_none_or(|t| job.job_type == t)
                && filter
                    .session_id
                    .as_deref()
                    .is_none_or(|s| job.session_id.as_deref() == Some(s))
        };
        let mut out = Vec::new();
        // Active states are few: walk their index instead of every job.
        let active_only = filter.state.is_some_and(|s| !s.is_terminal());
        let source = if active_only {
            Tree::JobsActive
        } else {
            Tree::Jobs
        };
        let range = match &upper {
            Some(u) => self.tree(source).range(..u.clone()),
            None => self.tree(source).iter(),
        };
        for item in range.rev() {
            let (k, v) = item?;
            let job: Job = if active_only {
                if JobState::from_byte(v.first().copied().unwrap_or(u8::MAX)) != filter.state {
                    continue;
                }
                match self.get(Tree::Jobs, &k)? {
                    Some(j) => j,
                    None => continue,
                }
            } else {
                decode(Tree::Jobs.name(), &k, &v)?
            };
            if matches(&job) {
                out.push(job);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every job that is not terminal, oldest first (for recovery at start-up).
    pub fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.settle()?;
        let mut out = Vec::new();
        for item in self.tree(Tree::JobsActive).iter() {
            let (k, _) = item?;
            if let Some(job) = self.get::<Job>(Tree::Jobs, &k)? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Jobs per state.
    pub fn job_counts(&self) -> Vec<(JobState, u64)> {
        JobState::ALL
            .iter()
            .map(|s| (*s, self.inner.counts[s.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// The log lines of a job after `after` (an event seq on its stream).
    pub fn job_logs(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        let filter = StreamFilter::Stream(job_stream(id));
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            let page = self.events_after(&filter, cursor, 512)?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            out.extend(page.iter().filter_map(log_line));
        }
        out.truncate(limit);
        Ok(out)
    }

    // ----- events -----

    /// Durable events after `after` (exclusive), in order, at most `limit`.
    pub fn events_after(
        &self,
        filter: &StreamFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let horizon = self.inner.bus.durable_horizon();
        let mut out = Vec::new();
        match filter {
            StreamFilter::Global => {
                let start = (after + 1).to_be_bytes();
                for item in self.tree(Tree::Events).range(start..) {
                    let (k, v) = item?;
                    if be_u64(&k) > horizon || out.len() == limit {
                        break;
                    }
                    out.push(decode(Tree::Events.name(), &k, &v)?);
                }
            }
            StreamFilter::Stream(stream) => {
                let start = stream_key(stream, after + 1);
                let end = stream_key(stream, u64::MAX);
                for item in self.tree(Tree::Streams).range(start..=end) {
                    let (_, g) = item?;
                    let gseq = be_u64(&g);
                    if gseq > horizon || out.len() == limit {
                        break;
                    }
                    let key = gseq.to_be_bytes();
                    match self.tree(Tree::Events).get(key)? {
                        Some(v) => out.push(decode(Tree::Events.name(), &key, &v)?),
                        None => {
                            return Err(StoreError::Corrupt {
                                tree: Tree::Streams.name().into(),
                                key: format!("{stream}#{gseq}"),
                                reason: "points at a missing event".into(),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The last seq of a stream (0 if empty), including events not yet durable.
    pub fn stream_head(&self, stream: &str) -> Result<u64, StoreError> {
        let cached = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heads
            .get(stream)
            .copied();
        match cached {
            Some(h) => Ok(h),
            None => self.committed_stream_head(stream),
        }
    }

    /// The last seq of a stream in sled. Only right for streams with nothing pending (which
    /// are the ones missing from the writer's head cache).
    fn committed_stream_head(&self, stream: &str) -> Result<u64, StoreError> {
        let prefix = stream_key(stream, 0);
        let prefix = &prefix[..prefix.len() - 8];
        Ok(
            match self.tree(Tree::Streams).scan_prefix(prefix).next_back() {
                Some(item) => be_u64(&item?.0[prefix.len()..]),
                None => 0,
            },
        )
    }

    // ----- job types, keys, generic records -----

    pub fn job_types(&self) -> Result<Vec<JobType>, StoreError> {
        self.scan(Tree::JobTypes)
    }

    pub fn put_job_type(&self, jt: &JobType) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.put(Tree::JobTypes, jt.name.as_bytes().to_vec(), jt);
            Ok(())
        })
    }

    /// Stores `put` and deletes the types named in `remove`, in one transaction.
    pub fn write_job_types(&self, put: &[JobType], remove: &[String]) -> Result<(), StoreError> {
        self.write(|tx| {
            for jt in put {
                tx.put(Tree::JobTypes, jt.name.as_bytes().to_vec(), jt);
            }
            for name in remove {
                tx.remove(Tree::JobTypes, name.as_bytes().to_vec());
            }
            Ok(())
        })
    }

    pub fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.scan(Tree::ApiKeys)
    }

    pub fn put_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.put(Tree::ApiKeys, key.id.as_key().to_vec(), key);
            Ok(())
        })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let pending = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending(tree, key);
        self.get_after(pending, tree, key)
    }

    /// Decodes a pending value, or reads sled if nothing is pending for the key.
    fn get_after<T: DeserializeOwned>(
        &self,
        pending: Option<Option<Vec<u8>>>,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let bytes = match pending {
            Some(v) => v,
            None => self.tree(tree).get(key)?.map(|v| v.to_vec()),
        };
        bytes.map(|v| decode(tree.name(), key, &v)).transpose()
    }

    /// Reads every record of a tree, in key order.
    pub fn scan<T: DeserializeOwned>(&self, tree: Tree) -> Result<Vec<T>, StoreError> {
        self.settle()?;
        self.tree(tree)
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(tree.name(), &k, &v)
            })
            .collect()
    }

    /// Commits what is staged to sled (not flushed), so that range scans see every write made
    /// so far. Point reads never need it: they consult the pending changes.
    pub(crate) fn settle(&self) -> Result<(), StoreError> {
        let pending = {
            let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            // A batch the committer is applying is not in sled yet either: `commit_staged`
            // waits for it on the commit lock.
            !w.staged.is_empty() || w.committing.is_some()
        };
        if pending {
            self.inner.commit_staged()?;
            self.inner.commit.notify();
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.commit.close();
        if let Some(h) = self
            .committer_thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        // Writes staged after the committer stopped.
        if let Err(e) = self.commit_staged().and_then(|()| Ok(self.db.flush()?)) {
            tracing::error!(error = %e, "final commit of the store failed");
        }
    }
}

/// The data of a `job.*` state event: the job as it is after the change.
pub fn job_event_data(job: &Job) -> serde_json::Value {
    serde_json::to_value(job).unwrap_or(serde_json::Value::Null)
}

fn log_line(e: &Event) -> Option<LogLine> {
    if e.kind != "job.log" {
        return None;
    }
    let level: LogLevel = serde_json::from_value(e.data.get("level")?.clone()).ok()?;
    Some(LogLine {
        seq: e.seq,
        ts: e.ts,
        level,
        message: e.data.get("message")?.as_str()?.to_string(),
    })
}

enum Op {
    Put(Tree, Vec<u8>, Vec<u8>),
    Remove(Tree, Vec<u8>),
}

/// Where an event staged with [`WriteTx::append_at`] will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPosition {
    /// Its seq in its stream.
    pub seq: u64,
    /// Its position in the global feed.
    pub global_seq: u64,
}

/// Changes staged for one atomic write. See [`Store::write`].
pub struct WriteTx<'s> {
    store: &'s Store,
    /// The writer's state, locked for this write: reads see pending changes through it.
    writer: &'s WriterState,
    ops: Vec<Op>,
    /// Staged events with the seq each was given in its stream.
    events: Vec<(NewEvent, u64)>,
    /// The last seq given in this write, per stream.
    heads: HashMap<String, u64>,
    /// A failure to read a stream's head in `append`, reported when the write is staged.
    head_error: Option<StoreError>,
    /// Jobs changed in this write: the state they had before it, and their new value.
    jobs: HashMap<JobId, (Option<JobState>, Job)>,
    /// The state of each job this write read from the store, so `put_job` need not read it again.
    read: HashMap<JobId, Option<JobState>>,
}

impl WriteTx<'_> {
    /// A job as this write sees it (its own changes included).
    pub fn job(&mut self, id: JobId) -> Result<Option<Job>, StoreError> {
        if let Some((_, job)) = self.jobs.get(&id) {
            return Ok(Some(job.clone()));
        }
        let job: Option<Job> = self.get(Tree::Jobs, &id.as_key())?;
        self.read.insert(id, job.as_ref().map(|j| j.state));
        Ok(job)
    }

    /// Stages a job's new value.
    pub fn put_job(&mut self, job: Job) -> Result<(), StoreError> {
        let before = match (self.jobs.get(&job.id), self.read.get(&job.id)) {
            (Some((before, _)), _) => *before,
            (None, Some(read)) => *read,
            (None, None) => self
                .get::<Job>(Tree::Jobs, &job.id.as_key())?
                .map(|j| j.state),
        };
        self.jobs.insert(job.id, (before, job));
        Ok(())
    }

    /// Stages a new job and its `job.queued` event.
    pub fn insert_job(&mut self, job: Job) -> Result<(), StoreError> {
        self.append(NewEvent::new(
            job.stream(),
            "job.queued",
            job_event_data(&job),
        ));
        self.put_job(job)
    }

    /// Stages an event and returns the seq it will have in its stream.
    pub fn append(&mut self, event: NewEvent) -> u64 {
        let head = match self.heads.get(&event.stream) {
            Some(h) => *h,
            None => match self.writer.heads.get(&event.stream) {
                Some(h) => *h,
                None => match self.store.committed_stream_head(&event.stream) {
                    Ok(h) => h,
                    Err(e) => {
                        self.head_error.get_or_insert(e);
                        0
                    }
                },
            },
        };
        let seq = head + 1;
        self.heads.insert(event.stream.clone(), seq);
        self.events.push((event, seq));
        seq
    }

    /// Stages an event like [`WriteTx::append`] and returns the position it will have once
    /// committed: its seq in its stream and its global seq. Positions are final: the writer
    /// lock held by this write keeps anyone else from numbering events before it.
    pub fn append_at(&mut self, event: NewEvent) -> Result<EventPosition, StoreError> {
        let global_seq = self.writer.next_global + self.events.len() as u64;
        let seq = self.append(event);
        match self.head_error.take() {
            Some(e) => Err(e),
            None => Ok(EventPosition { seq, global_seq }),
        }
    }

    pub fn put<T: Serialize + ?Sized>(&mut self, tree: Tree, key: Vec<u8>, value: &T) {
        self.ops.push(Op::Put(tree, key, encode(value)));
    }

    pub fn remove(&mut self, tree: Tree, key: Vec<u8>) {
        self.ops.push(Op::Remove(tree, key));
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.store
            .get_after(self.writer.pending(tree, key), tree, key)
    }

    /// Turns this write's changes into key-level operations and numbered events, without
    /// touching the writer state (a write that fails changes nothing).
    fn stage(mut self) -> Result<Staged, StoreError> {
        let store = self.store;
        let writer = self.writer;
        let mut counts_delta = [0i64; 6];
        for (id, (before, job)) in std::mem::take(&mut self.jobs) {
            let key = id.as_key().to_vec();
            if before != Some(job.state) {
                if let Some(b) = before {
                    counts_delta[b.index()] -= 1;
                }
                counts_delta[job.state.index()] += 1;
                if job.state.is_terminal() {
                    if before.is_some_and(|b| !b.is_terminal()) {
                        self.ops.push(Op::Remove(Tree::JobsActive, key.clone()));
                    }
                } else {
                    self.ops.push(Op::Put(
                        Tree::JobsActive,
                        key.clone(),
                        vec![job.state.to_byte()],
                    ));
                }
            }
            self.ops.push(Op::Put(Tree::Jobs, key, encode(&job)));
        }
        let mut counts = Vec::new();
        for st in JobState::ALL {
            let d = counts_delta[st.index()];
            if d != 0 {
                let now = store.inner.counts[st.index()].load(Ordering::Relaxed) as i64 + d;
                let now = now.max(0) as u64;
                counts.push((st, now));
                self.ops.push(Op::Put(
                    Tree::Meta,
                    count_key(st),
                    now.to_be_bytes().to_vec(),
                ));
            }
        }

        if let Some(e) = self.head_error.take() {
            return Err(e);
        }
        let now = Timestamp::now();
        let mut events = Vec::with_capacity(self.events.len());
        for (i, (e, seq)) in self.events.drain(..).enumerate() {
            let global_seq = writer.next_global + i as u64;
            let event = Event {
                stream: e.stream,
                seq,
                global_seq,
                id: EventId::new(),
                ts: now,
                kind: e.kind,
                data: e.data,
            };
            self.ops.push(Op::Put(
                Tree::Streams,
                stream_key(&event.stream, seq),
                global_seq.to_be_bytes().to_vec(),
            ));
            self.ops.push(Op::Put(
                Tree::Events,
                global_seq.to_be_bytes().to_vec(),
                encode(&event),
            ));
            events.push(Arc::new(event));
        }
        Ok(Staged {
            ops: self.ops,
            events,
            heads: self.heads,
            counts,
        })
    }
}

/// One write's changes, ready to join the pending batch.
struct Staged {
    ops: Vec<Op>,
    events: Vec<Arc<Event>>,
    heads: HashMap<String, u64>,
    counts: Vec<(JobState, u64)>,
}

impl Staged {
    /// Adds the changes to the pending batch. Returns whether there was anything to add.
    fn apply(self, writer: &mut WriterState, counts: &[AtomicU64; 6]) -> bool {
        if self.ops.is_empty() && self.events.is_empty() {
            return false;
        }
        for op in self.ops {
            match op {
                Op::Put(t, k, v) => writer.staged.ops.insert((t, k), Some(v)),
                Op::Remove(t, k) => writer.staged.ops.insert((t, k), None),
            };
        }
        writer.next_global += self.events.len() as u64;
        writer.staged.events.extend(self.events);
        writer.heads.extend(self.heads);
        for (st, n) in self.counts {
            counts[st.index()].store(n, Ordering::Relaxed);
        }
        true
    }
}

impl Core {
    /// The committer thread: commit, flush, publish, wake; until closed.
    fn run_committer(&self) {
        loop {
            let Some(waiters) = self.commit.next_cycle() else {
                break;
            };
            let started = Instant::now();
            let committed = self.commit_staged();
            let commit_time = started.elapsed();
            let result = committed.and_then(|()| {
                // Taken before the flush: every one of them is durable after it.
                let events =
                    std::mem::take(&mut *self.unflushed.lock().unwrap_or_else(|p| p.into_inner()));
                self.db.flush()?;
                Ok(events)
            });
            let ok = result.is_ok();
            {
                let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                let mut s = self.commit.stats.lock().unwrap_or_else(|p| p.into_inner());
                s.commit_us += micros(commit_time);
                s.flush_us += micros(started.elapsed() - commit_time);
                s.flushes += 1;
                s.flush_waiters += waiters.len() as u64;
                s.flush_errors += u64::from(!ok);
                if let Ok(events) = &result {
                    s.flushed_events += events.len() as u64;
                }
            }
            let result = match result {
                Ok(events) => {
                    self.bus.publish(events);
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed; retrying");
                    Err(e)
                }
            };
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if !ok {
                // Staged changes were kept; try again after a pause.
                std::thread::sleep(Duration::from_millis(100));
                self.commit.notify();
            }
        }
    }

    /// Applies everything staged in one sled transaction; its events wait in `unflushed`. On
    /// failure the changes are staged again, before anything staged since.
    fn commit_staged(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let batch = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.staged.is_empty() {
                return Ok(());
            }
            let batch = Arc::new(std::mem::take(&mut w.staged));
            w.committing = Some(batch.clone());
            batch
        };
        let applied = self.trees.as_slice().transaction(|t| {
            for ((tree, k), v) in &batch.ops {
                match v {
                    Some(v) => t[tree.index()].insert(k.as_slice(), v.as_slice())?,
                    None => t[tree.index()].remove(k.as_slice())?,
                };
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        });
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.committing = None;
        let mut batch = Arc::try_unwrap(batch).unwrap_or_else(|a| (*a).clone());
        if let Err(e) = applied {
            let later = std::mem::take(&mut w.staged);
            batch.ops.extend(later.ops);
            batch.events.extend(later.events);
            w.staged = batch;
            return Err(e.into());
        }
        if w.staged.is_empty() && w.heads.len() > MAX_CACHED_HEADS {
            w.heads.clear();
        }
        drop(w);
        self.unflushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch.events);
        Ok(())
    }
}

/// Group commit: wakes the committer thread and holds the callers of [`Store::durable`].
#[derive(Default)]
struct Committer {
    queue: Mutex<CommitQueue>,
    wake: Condvar,
    stats: Mutex<CommitStats>,
}

#[derive(Default)]
struct CommitQueue {
    /// Something was staged since the last cycle.
    dirty: bool,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    closed: bool,
}

impl Committer {
    fn notify(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
        self.wake.notify_one();
    }

    fn wait(&self, waiter: oneshot::Sender<Result<(), StoreError>>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            let _ = waiter.send(Err(StoreError::Closed));
            return;
        }
        q.waiters.push(waiter);
        drop(q);
        self.wake.notify_one();
    }

    fn close(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.wake.notify_one();
    }

    fn stats(&self) -> CommitStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for work and returns the waiters this cycle will answer, or `None` once closed and
    /// idle. Waiters are taken before the staged changes, so every write a waiter waits for is
    /// in this cycle's batch.
    fn next_cycle(&self) -> Option<Vec<oneshot::Sender<Result<(), StoreError>>>> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while !q.dirty && q.waiters.is_empty() && !q.closed {
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.closed && !q.dirty && q.waiters.is_empty() {
            return None;
        }
        q.dirty = false;
        Some(std::mem::take(&mut q.waiters))
    }
}

/// How long [`Store::open`] waits for a lock that a closing process (or a just-dropped store in
/// this one: sled's IO threads finish in the background) still holds.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(config: &StoreConfig) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: config.path.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => {
                return Err(StoreError::Io(format!(
                    "cannot open store at {}: {other}",
                    config.path.display()
                )));
            }
        }
    }
}

fn idem_key(scope: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + key.len() + 1);
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn stream_key(stream: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn count_key(st: JobState) -> Vec<u8> {
    format!("count/{}", st.as_str()).into_bytes()
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(b)
}
