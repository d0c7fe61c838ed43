//! Job log lines, persisted as `job.log` events on the job's stream.

use skills::JobLog;
use store::{JobId, LogLevel, NewEvent, Store, StoreError, job_stream};

/// Writes a running attempt's log lines to the store.
pub struct StoreJobLog {
    store: Store,
    stream: String,
}

/// Longest log line kept; longer ones are cut with a marker.
const MAX_LINE: usize = 16 * 1024;

impl StoreJobLog {
    pub fn new(store: Store, id: JobId) -> Self {
        StoreJobLog {
            store,
            stream: job_stream(id),
        }
    }
}

impl JobLog for StoreJobLog {
    fn log(&self, level: LogLevel, mut message: String) {
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[truncated]");
        }
        let event = NewEvent::new(
            self.stream.clone(),
            "job.log",
            serde_json::json!({ "level": level, "message": message }),
        );
        let written = self.store.write(|tx| {
            tx.append(event);
            Ok::<_, StoreError>(())
        });
        if let Err(e) = written {
            tracing::warn!(stream = %self.stream, error = %e, "could not persist a job log line");
        }
    }
}
