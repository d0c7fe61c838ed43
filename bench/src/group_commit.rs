//! The baselines' group commit: one flusher thread, and any number of writers that ask for
//! durability. Everyone who asked while a flush was running shares the next `db.flush()`, so
//! the cost is one fsync per batch, not per write. This is the minimum the store's committer
//! does, without its event publication and statistics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    closed: bool,
}

impl GroupCommit {
    pub fn start(db: sled::Db) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("baseline-flusher".into())
                .spawn(move || shared.run(&db))?
        };
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a flush of everything written before this call. The receiver resolves once it
    /// is on disk; dropping it just leaves the flush to happen.
    pub fn request(&self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            let _ = tx.send(Err("the flusher is closed".into()));
        } else {
            q.waiters.push(tx);
        }
        drop(q);
        self.shared.wake.notify_one();
        rx
    }

    /// Resolves once everything written before the call is on disk.
    pub async fn durable(&self) -> Result<(), String> {
        self.request()
            .await
            .map_err(|_| "the flusher stopped".to_string())?
    }

    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn run(&self, db: &sled::Db) {
        loop {
            let (waiters, closed) = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.waiters.is_empty() && !q.closed {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                (std::mem::take(&mut q.waiters), q.closed)
            };
            let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
            self.flushes.fetch_add(1, Ordering::Relaxed);
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if closed {
                return;
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
