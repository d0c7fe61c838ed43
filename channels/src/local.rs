//! The local channel: `rauskuclaw local`. Each line of input is a message to the session
//! `local:<user>`; the session's events are printed as they happen, human-readable or as JSON
//! lines. At end of input the channel waits until the session has no run going and nothing
//! queued, then reports that it is done.
//!
//! Two lines are the channel's own, not messages: `/approve [id] [note]` and `/deny [id]
//! [note]` decide an approval of this session (the latest pending one when no id is given), so a
//! terminal user can answer the approval gates their runs ask for.
//!
//! The `LocalChannel` actor owns the session's identity and counts; a reader task feeds it
//! lines, and a printer task follows the session's stream (gap-free, from the store) and writes
//! each event.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentloop::{Inbound, SessionService};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use store::{
    ApprovalState, Event, Follower, SessionId, SessionState, Store, StreamFilter, session_stream,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Where printed events go (stdout in the binary, a buffer in tests).
pub type Output = Arc<Mutex<dyn Write + Send>>;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One readable line per event.
    Human,
    /// Each event as one JSON line, exactly as stored.
    Json,
}

pub struct LocalChannel;

pub struct LocalChannelArgs {
    pub sessions: SessionService,
    pub store: Store,
    /// The session is `local:<user>`.
    pub user: String,
    pub format: Format,
    pub output: Output,
    /// The input, read line by line.
    pub input: Box<dyn AsyncBufRead + Send + Unpin>,
    /// Told once input has ended and the session's work is done, with the number of runs
    /// that failed.
    pub done: oneshot::Sender<LocalSummary>,
}

/// What the channel did, reported when it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalSummary {
    pub messages: u64,
    pub runs_failed: u64,
}

pub enum LocalMessage {
    Line(String),
    /// Input ended.
    Eof,
    /// A run of this session ended; `failed` says whether it failed.
    RunEnded {
        failed: bool,
    },
    /// Checks whether the work is done after input ended.
    CheckDone,
}

pub struct LocalChannelState {
    sessions: SessionService,
    store: Store,
    key: String,
    format: Format,
    output: Output,
    /// Known once the first message created (or found) the session.
    session_id: Option<SessionId>,
    /// Follows the session's stream and prints; started with the first message.
    printer: Option<JoinHandle<()>>,
    /// Tells the printer to stop once it has printed everything durable.
    stop_printer: watch::Sender<bool>,
    reader: Option<JoinHandle<()>>,
    summary: LocalSummary,
    /// Runs that ended since the first message was sent.
    runs_ended: u64,
    eof: bool,
    done: Option<oneshot::Sender<LocalSummary>>,
}

impl Actor for LocalChannel {
    type Msg = LocalMessage;
    type State = LocalChannelState;
    type Arguments = LocalChannelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LocalChannelArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut input = args.input;
        let reader = tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match input.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = line.trim_end_matches(['\n', '\r']).to_owned();
                        if myself.send_message(LocalMessage::Line(text)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = myself.send_message(LocalMessage::Eof);
        });
        let (stop_printer, _) = watch::channel(false);
        Ok(LocalChannelState {
            sessions: args.sessions,
            store: args.store,
            key: format!("local:{}", args.user),
            format: args.format,
            output: args.output,
            session_id: None,
            printer: None,
            stop_printer,
            reader: Some(reader),
            summary: LocalSummary::default(),
            runs_ended: 0,
            eof: false,
            done: Some(args.done),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reader) = state.reader.take() {
            reader.abort();
        }
        if let Some(printer) = state.printer.take() {
            printer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: LocalMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LocalMessage::Line(text) => {
                let text = text.trim();
                if text.is_empty() {
                    return Ok(());
                }
                if let Some(rest) = text.strip_prefix("/approve") {
                    state.decide(ApprovalState::Approved, rest);
                } else if let Some(rest) = text.strip_prefix("/deny") {
                    state.decide(ApprovalState::Denied, rest);
                } else {
                    state.send(&myself, text).await;
                }
            }
            LocalMessage::Eof => {
                state.eof = true;
                myself.send_message(LocalMessage::CheckDone)?;
            }
            LocalMessage::RunEnded { failed } => {
                state.runs_ended += 1;
                state.summary.runs_failed += u64::from(failed);
                if state.eof {
                    myself.send_message(LocalMessage::CheckDone)?;
                }
            }
            LocalMessage::CheckDone => {
                if state.done.is_none() {
                    return Ok(());
                }
                if state.work_done()? {
                    // Let the printer write what is durable, then report.
                    let _ = state.stop_printer.send(true);
                    if let Some(printer) = state.printer.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
                    }
                    if let Some(done) = state.done.take() {
                        let _ = done.send(state.summary);
                    }
                } else {
                    // A run may be waiting for a job or an approval: look again shortly.
                    myself.send_after(Duration::from_millis(100), || LocalMessage::CheckDone);
                }
            }
        }
        Ok(())
    }
}

impl LocalChannelState {
    async fn send(&mut self, myself: &ActorRef<LocalMessage>, text: &str) {
        let routed = self
            .sessions
            .send(Inbound {
                key: self.key.clone(),
                text: text.to_owned(),
                sender: self.key.strip_prefix("local:").map(str::to_owned),
                ..Inbound::default()
            })
            .await;
        match routed {
            Ok(routed) => {
                self.summary.messages += 1;
                if self.session_id.is_none() {
                    self.session_id = Some(routed.session_id);
                    // Print from this message on; earlier history is not replayed.
                    self.start_printer(myself, routed.session_id, routed.seq - 1);
                }
            }
            Err(e) => self.print_line(&format!("! message refused: {e}")),
        }
    }

    fn start_printer(&mut self, myself: &ActorRef<LocalMessage>, id: SessionId, after: u64) {
        let mut follower =
            Follower::new(&self.store, StreamFilter::Stream(session_stream(id)), after);
        let output = self.output.clone();
        let format = self.format;
        let channel = myself.clone();
        let mut stop = self.stop_printer.subscribe();
        let store = self.store.clone();
        self.printer = Some(tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = follower.next() => e,
                    _ = stop.changed() => {
                        // Drain what is durable, then end.
                        let _ = store.durable().await;
                        while let Ok(Some(e)) = follower.try_next_stored() {
                            print_event(&output, format, &e);
                        }
                        return;
                    }
                };
                let Ok(event) = event else { return };
                print_event(&output, format, &event);
                if let Some(failed) = run_end(&event) {
                    let _ = channel.send_message(LocalMessage::RunEnded { failed });
                }
            }
        }));
    }

    /// Whether every message sent has had its run, and the session is idle.
    fn work_done(&self) -> Result<bool, ActorProcessingErr> {
        let Some(id) = self.session_id else {
            return Ok(true);
        };
        let Some(session) = self.store.session(id)? else {
            return Ok(true);
        };
        Ok(self.runs_ended >= self.summary.messages
            && session.state == SessionState::Idle
            && session.queued == 0)
    }

    /// `/approve [id] [note]`, `/deny [id] [note]`.
    fn decide(&mut self, decision: ApprovalState, rest: &str) {
        let mut words = rest.split_whitespace();
        let first = words.next();
        let pending = match self.sessions.approvals(Some(ApprovalState::Pending), 500) {
            Ok(list) => list,
            Err(e) => return self.print_line(&format!("! cannot read approvals: {e}")),
        };
        let mine: Vec<_> = pending
            .into_iter()
            .filter(|a| a.session_key == self.key)
            .collect();
        let (approval, note_start) = match first {
            Some(word) => match mine.iter().find(|a| a.id.to_string().starts_with(word)) {
                Some(a) => (Some(a), true),
                None => (mine.first(), false),
            },
            None => (mine.first(), false),
        };
        let Some(approval) = approval else {
            return self.print_line("! no pending approval in this session");
        };
        let note: Vec<&str> = if note_start {
            words.collect()
        } else {
            first.into_iter().chain(words).collect()
        };
        let note = (!note.is_empty()).then(|| note.join(" "));
        let by = self.key.clone();
        if let Err(e) = self.sessions.decide(approval.id, decision, &by, note) {
            self.print_line(&format!("! {e}"));
        }
    }

    fn print_line(&self, line: &str) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// `Some(failed)` if the event ends a run.
fn run_end(event: &Event) -> Option<bool> {
    match event.kind.as_str() {
        "run.finished" => Some(false),
        "run.failed" | "run.interrupted" => Some(true),
        _ => None,
    }
}

fn print_event(output: &Output, format: Format, event: &Event) {
    let line = match format {
        Format::Json => serde_json::to_string(event).ok(),
        Format::Human => render(event),
    };
    if let Some(line) = line {
        let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// One readable line for an event, or `None` for events not worth a line.
pub fn render(event: &Event) -> Option<String> {
    let d = &event.data;
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
    let compact = |v: &Value| {
        let text = v.to_string();
        if text.len() > 300 {
            format!("{}…", text.chars().take(300).collect::<String>())
        } else {
            text
        }
    };
    Some(match event.kind.as_str() {
        "message.received" => format!("> {}", s("text")),
        "run.started" => "· run started".to_owned(),
        "plan.decided" => {
            let decision = &d["decision"];
            match decision["decision"].as_str() {
                Some("invoke") => format!(
                    "· plan: {} {} ({})",
                    decision["skill"].as_str().unwrap_or_default(),
                    compact(&decision["input"]),
                    decision["step_id"].as_str().unwrap_or_default()
                ),
                _ => return None,
            }
        }
        "skill.invoked" => format!("· {} → job {}", s("skill"), s("job_id")),
        "approval.requested" => format!(
            "? approval needed for {} {} (risk {}): /approve {} or /deny {}",
            s("skill"),
            compact(&d["input"]),
            s("risk"),
            s("approval_id"),
            s("approval_id"),
        ),
        "approval.resolved" => format!("· approval {} by {}", s("decision"), s("by")),
        "skill.observed" => {
            let o = &d["observation"];
            let skill = o["skill"].as_str().unwrap_or_default();
            match o["status"].as_str().unwrap_or_default() {
                "succeeded" => format!("✓ {skill}: {}", compact(&o["output"])),
                status => format!(
                    "✗ {skill} {status}: {}",
                    o["error"].as_str().unwrap_or_default()
                ),
            }
        }
        "reply" => format!("« {}", s("text")),
        "run.finished" => "✓ run finished".to_owned(),
        "run.failed" => format!("✗ run failed: {}", s("error")),
        "run.interrupted" => format!("✗ run interrupted by {}", s("by")),
        _ => return None,
    })
}
