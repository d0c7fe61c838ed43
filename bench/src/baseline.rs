//! The raw baselines: what the same durable state changes cost with tokio and sled alone, no
//! actors, no store layer. Records are the real `Job` and `Event` types in the store's own
//! value format, so the bytes written match what RauskuClaw writes.
//!
//! - [`record`], [`job_stream_key`]: the shared record helpers.
//! - [`RawEngine`]: the job lifecycle of scenarios (b) and (c): a sled transaction per
//!   enqueued job, a tokio task per job (like a runner), and a single writer task that records
//!   `running` and `succeeded` in batches, with group commit; it reports what became durable.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use store::codec::{decode, encode};
use store::store::job_event_data;
use store::{Event, EventId, Job, JobId, JobState, Lease, NewJob, Timestamp};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};

use crate::group_commit::GroupCommit;

/// Opens a sled database configured like the store's.
pub fn open_db(dir: &Path) -> anyhow::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(256 << 20)
        .open()
        .with_context(|| format!("cannot open a sled database in {}", dir.display()))
}

/// A queued `echo` job, as `JobService::create` builds it.
pub fn new_job(input: Value) -> Job {
    Job::from_new(
        NewJob {
            job_type: "echo".into(),
            input,
            max_attempts: 3,
            timeout_ms: 30_000,
            run_at: None,
            session_id: None,
            run_id: None,
            idempotency_key: None,
            callback_url: None,
        },
        Timestamp::now(),
    )
}

/// The `job.<kind>` event of a job's change, encoded, with its `events` key.
pub fn event_record(job: &Job, kind: &str, seq: u64, global_seq: u64) -> (Vec<u8>, Vec<u8>) {
    let event = Event {
        stream: job.stream(),
        seq,
        global_seq,
        id: EventId::new(),
        ts: job.updated_at,
        kind: kind.to_string(),
        data: job_event_data(job),
    };
    (global_seq.to_be_bytes().to_vec(), encode(&event))
}

/// `stream ++ 0x00 ++ seq`, the key of the `streams` index.
pub fn job_stream_key(job: &Job, seq: u64) -> Vec<u8> {
    let stream = job.stream();
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The encoded job record and its key.
pub fn record(job: &Job) -> (Vec<u8>, Vec<u8>) {
    (job.id.as_key().to_vec(), encode(job))
}

/// What the raw engine reports, once it is on disk.
#[derive(Debug)]
pub enum Observed {
    /// These jobs' `running` records became durable at that instant.
    Started(Vec<JobId>, Instant),
    /// This many more jobs' `succeeded` records became durable.
    Succeeded(usize),
}

/// The four trees of the job lifecycle.
#[derive(Clone)]
struct Trees {
    jobs: sled::Tree,
    active: sled::Tree,
    events: sled::Tree,
    streams: sled::Tree,
}

/// The raw job lifecycle engine (see the module docs).
pub struct RawEngine {
    trees: Trees,
    next_global: Arc<AtomicU64>,
    commit: Arc<GroupCommit>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_task: tokio::task::JoinHandle<()>,
    // Dropped last: the database lives in it.
    _dir: TempDir,
}

enum WriterMsg {
    /// A runner wants to start: record `running`, then hand the job back.
    Start {
        job: Job,
        reply: oneshot::Sender<Job>,
    },
    /// A runner finished: record `succeeded`.
    Finish { job: Job },
}

/// Indexes of the trees in the writer's transaction.
const JOBS: usize = 0;
const ACTIVE: usize = 1;
const EVENTS: usize = 2;
const STREAMS: usize = 3;

/// Most changes the writer records in one transaction (the supervisor's lease batch).
const BATCH: usize = 256;

impl RawEngine {
    /// Opens a fresh engine in a temporary directory under `base`. Must run inside tokio.
    pub fn open(base: &Path, observer: mpsc::UnboundedSender<Observed>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-raw-")
            .tempdir_in(base)?;
        let db = open_db(dir.path())?;
        let trees = Trees {
            jobs: db.open_tree("jobs")?,
            active: db.open_tree("jobs_active")?,
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
        };
        let commit = Arc::new(GroupCommit::start(db)?);
        let next_global = Arc::new(AtomicU64::new(1));
        let (writer, rx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(run_writer(
            rx,
            trees.clone(),
            commit.clone(),
            next_global.clone(),
            observer,
        ));
        Ok(RawEngine {
            trees,
            next_global,
            commit,
            writer,
            writer_task,
            _dir: dir,
        })
    }

    /// Writes a queued job (record, active index, `job.queued` event, stream index) in one
    /// transaction, asks for a flush, and spawns its runner task.
    pub fn enqueue(&self, input: Value) -> anyhow::Result<JobId> {
        let job = new_job(input);
        let (key, value) = record(&job);
        let global = self.next_global.fetch_add(1, Ordering::Relaxed);
        let (ekey, evalue) = event_record(&job, "job.queued", 1, global);
        let skey = job_stream_key(&job, 1);
        let t = &self.trees;
        (&t.jobs, &t.active, &t.events, &t.streams)
            .transaction(|(jobs, active, events, streams)| {
                jobs.insert(key.as_slice(), value.as_slice())?;
                active.insert(key.as_slice(), &[JobState::Queued as u8])?;
                events.insert(ekey.as_slice(), evalue.as_slice())?;
                streams.insert(skey.as_slice(), &global.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("raw enqueue transaction failed: {e:?}"))?;
        // Like the store's committer, which flushes whenever events are pending.
        drop(self.commit.request());
        let id = job.id;
        tokio::spawn(run_job(job, self.writer.clone()));
        Ok(id)
    }

    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// A job as stored (`None` if missing or undecodable).
    pub fn job(&self, id: JobId) -> Option<Job> {
        let key = id.as_key();
        let bytes = self.trees.jobs.get(key).ok()??;
        decode("jobs", &key, &bytes).ok()
    }

    /// Stops the writer; the database is flushed and removed on drop.
    pub async fn close(self) {
        drop(self.writer);
        // Runner tasks hold senders too: do not wait for them forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.writer_task).await;
    }
}

/// One job's runner: start, run the `echo` handler's logic, finish.
async fn run_job(job: Job, writer: mpsc::UnboundedSender<WriterMsg>) {
    let (reply, started) = oneshot::channel();
    if writer.send(WriterMsg::Start { job, reply }).is_err() {
        return;
    }
    let Ok(mut job) = started.await else { return };
    // `echo`: the output is the input.
    job.output = Some(job.input.clone());
    let _ = writer.send(WriterMsg::Finish { job });
}

/// The single writer: records batches of changes in one transaction each, then asks for a
/// flush and reports what it made durable.
async fn run_writer(
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    trees: Trees,
    commit: Arc<GroupCommit>,
    next_global: Arc<AtomicU64>,
    observer: mpsc::UnboundedSender<Observed>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let now = Timestamp::now();
        let mut puts: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch.len() * 4);
        let mut removes: Vec<Vec<u8>> = Vec::new();
        let mut replies = Vec::new();
        let mut started = Vec::new();
        let mut finished = 0;
        for msg in batch.drain(..) {
            let global = next_global.fetch_add(1, Ordering::Relaxed);
            match msg {
                WriterMsg::Start { mut job, reply } => {
                    job.state = JobState::Running;
                    job.attempt += 1;
                    job.lease = Some(Lease {
                        attempt: job.attempt,
                        owner: "bench".into(),
                        taken_at: now,
                    });
                    job.started_at.get_or_insert(now);
                    job.updated_at = now;
                    let (ek, ev) = event_record(&job, "job.started", 2, global);
                    puts.push((EVENTS, ek, ev));
                    puts.push((
                        STREAMS,
                        job_stream_key(&job, 2),
                        global.to_be_bytes().to_vec(),
                    ));
                    let (k, v) = record(&job);
                    puts.push((ACTIVE, k.clone(), vec![JobState::Running as u8]));
                    puts.push((JOBS, k, v));
                    started.push(job.id);
                    replies.push((reply, job));
                }
                WriterMsg::Finish { mut job } => {
                    job.state = JobState::Succeeded;
                    job.lease = None;
                    job.finished_at = Some(now);
                    job.updated_at = now;
                    let (ek, ev) = event_record(&job, "job.succeeded", 3, global);
                    puts.push((EVENTS, ek, ev));
                    puts.push((
                        STREAMS,
                        job_stream_key(&job, 3),
                        global.to_be_bytes().to_vec(),
                    ));
                    let (k, v) = record(&job);
                    removes.push(k.clone());
                    puts.push((JOBS, k, v));
                    finished += 1;
                }
            }
        }
        let written = (&trees.jobs, &trees.active, &trees.events, &trees.streams).transaction(
            |(jobs, active, events, streams)| {
                let by_index = [jobs, active, events, streams];
                for (tree, k, v) in &puts {
                    by_index[*tree].insert(k.as_slice(), v.as_slice())?;
                }
                for k in &removes {
                    active.remove(k.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            },
        );
        if let Err(e) = written {
            eprintln!("raw baseline: writer transaction failed: {e:?}");
            return;
        }
        for (reply, job) in replies {
            let _ = reply.send(job);
        }
        let flushed = commit.request();
        let observer = observer.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = flushed.await {
                if !started.is_empty() {
                    let _ = observer.send(Observed::Started(started, Instant::now()));
                }
                if finished > 0 {
                    let _ = observer.send(Observed::Succeeded(finished));
                }
            }
        });
    }
}
