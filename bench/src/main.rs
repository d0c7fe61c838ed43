//! RauskuClaw benchmarks, each against a raw baseline measured in the same run:
//!
//! - (a) [`http_create`]: durable `POST /v1/jobs` throughput and latency over loopback, the real
//!   gateway binary against a raw axum + sled handler doing the same writes and flushes.
//! - (b) [`throughput`]: `echo` jobs per second from enqueue to `succeeded`, the job runtime
//!   in process against raw tokio + sled doing the same state writes.
//! - (c) [`latency`]: enqueue → start latency at half the rate measured in (b).
//! - (d) [`sessions`]: sessions spawned and messages routed per second, and memory per idle
//!   session, against raw tokio tasks + channels.
//! - (e) [`webhook`]: signed GitHub webhook ingest (8 KB payloads) over loopback, the gateway
//!   binary against an axum hello-world.
//! - (f) [`fanout`]: one session's events to 1,000 console subscribers, the gateway binary
//!   against raw tokio-tungstenite broadcast.
//!
//! Shared: [`load`] (the closed-loop HTTP load of (a) and (e)), [`servers`] (the gateway child
//! process and the in-process baseline servers).
//!
//! `cargo run --release -p bench -- [a|b|c|d|e|f|all] [--quick] [--dir PATH]`. Progress goes to
//! stderr; the machine, the command and the result table go to stdout.

mod baseline;
mod fanout;
mod group_commit;
mod harness;
mod http_create;
mod latency;
mod load;
mod report;
mod servers;
mod sessions;
mod stats;
mod throughput;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::load::LoadShape;
use crate::report::Row;
use crate::stats::{fmt_rate, thousands};

const USAGE: &str = "\
usage: bench [a|b|c|d|e|f|all]... [--quick] [--dir PATH]

  a        durable POST /v1/jobs over loopback: the gateway binary vs a raw axum + sled handler
           (needs target/release/rauskuclaw: run `cargo build --release` first)
  b        echo jobs/s from enqueue to succeeded: the job runtime vs raw tokio + sled
  c        enqueue -> start latency at half of (b)'s rate
  d        10,000 sessions: spawned/s, messages routed/s, memory per idle session, vs raw
           tokio tasks + channels
  e        signed GitHub webhook ingest, 8 KB payloads, 64 clients: the gateway binary vs an
           axum hello-world (needs target/release/rauskuclaw)
  f        one session's events to 1,000 console subscribers: the gateway binary vs raw
           tokio-tungstenite broadcast (needs target/release/rauskuclaw)
  all      all six (the default)
  --quick  smaller runs (seconds instead of a minute or so)
  --dir    where the temporary data directories go (default: the system temp dir); put it
           on the disk you care about: every figure includes fsyncs";

#[derive(Debug)]
struct Options {
    a: bool,
    b: bool,
    c: bool,
    d: bool,
    e: bool,
    f: bool,
    quick: bool,
    dir: PathBuf,
}

impl Options {
    fn all(&mut self) {
        (self.a, self.b, self.c, self.d, self.e, self.f) = (true, true, true, true, true, true);
    }

    fn any(&self) -> bool {
        self.a || self.b || self.c || self.d || self.e || self.f
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        a: false,
        b: false,
        c: false,
        d: false,
        e: false,
        f: false,
        quick: false,
        dir: std::env::temp_dir(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "a" => o.a = true,
            "b" => o.b = true,
            "c" => o.c = true,
            "d" => o.d = true,
            "e" => o.e = true,
            "f" => o.f = true,
            "all" => o.all(),
            "--quick" => o.quick = true,
            "--dir" => o.dir = it.next().ok_or("--dir needs a path")?.into(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if !o.any() {
        o.all();
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.dir) {
        eprintln!("bench: cannot create {}: {e}", opts.dir.display());
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C the scenarios' futures are dropped, and with them their guards: the gateway
    // child is killed and the temporary directories are removed.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(&opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    let Some((rows, errors)) = outcome else {
        eprintln!("bench: interrupted");
        return ExitCode::from(130);
    };

    println!();
    println!("machine: {}", machine());
    println!(
        "command: cargo run --release -p bench --{}{}",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    );
    println!("data dir: {}", opts.dir.display());
    if cfg!(debug_assertions) {
        println!("WARNING: a debug build; these figures mean nothing. Use `cargo run --release`.");
    }
    println!();
    print!("{}", report::table(&rows));
    for e in &errors {
        println!();
        println!("error: {e:#}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the chosen scenarios; a failed scenario is reported and the others still run.
async fn run(o: &Options) -> (Vec<Row>, Vec<anyhow::Error>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    // First: its memory figure is the process's RSS growth, which memory freed by the other
    // scenarios (and reused) would hide.
    if o.d {
        let n = if o.quick { 2_000 } else { 10_000 };
        match sessions::run(&o.dir, n).await {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.context("scenario (d)")),
        }
    }
    if o.a {
        match http_create::run(&o.dir, LoadShape::standard(o.quick)).await {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.context("scenario (a)")),
        }
    }
    let mut max_rate = None;
    if o.b {
        let jobs = if o.quick { 5_000 } else { 50_000 };
        match throughput::run(&o.dir, jobs).await {
            Ok((t, r)) => {
                max_rate = Some(t.per_sec());
                rows.extend(r);
            }
            Err(e) => errors.push(e.context("scenario (b)")),
        }
    }
    if o.c {
        if max_rate.is_none() {
            let jobs = if o.quick { 5_000 } else { 20_000 };
            eprintln!(
                "(c) probing the maximum rate first ({} jobs, as in (b)) …",
                thousands(jobs)
            );
            match throughput::run_runtime(&o.dir, jobs as usize).await {
                Ok(t) => {
                    eprintln!("    {}", fmt_rate(t.per_sec()));
                    max_rate = Some(t.per_sec());
                }
                Err(e) => errors.push(e.context("scenario (c): probing the maximum rate")),
            }
        }
        if let Some(max) = max_rate {
            let seconds = if o.quick { 1.5 } else { 5.0 };
            match latency::run(&o.dir, max / 2.0, seconds).await {
                Ok(r) => rows.extend(r),
                Err(e) => errors.push(e.context("scenario (c)")),
            }
        }
    }
    if o.e {
        match webhook::run(&o.dir, LoadShape::standard(o.quick)).await {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.context("scenario (e)")),
        }
    }
    if o.f {
        let runs = if o.quick { 20 } else { 100 };
        match fanout::run(&o.dir, 1_000, runs).await {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.context("scenario (f)")),
        }
    }
    (rows, errors)
}

/// `2 CPUs (model), Linux 6.x`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("nproc {cpus} ({model}), {} {kernel}", std::env::consts::OS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let o = parse_args(&args(&[])).unwrap();
        assert!(o.a && o.b && o.c && o.d && o.e && o.f && !o.quick);
        let o = parse_args(&args(&["b", "--quick"])).unwrap();
        assert!(!o.a && o.b && !o.c && o.quick);
        let o = parse_args(&args(&["c", "--dir", "/x"])).unwrap();
        assert_eq!(o.dir, PathBuf::from("/x"));
        let o = parse_args(&args(&["d"])).unwrap();
        assert!(o.d && !o.a);
        let o = parse_args(&args(&["e", "f"])).unwrap();
        assert!(o.e && o.f && !o.a && !o.d);
        assert!(parse_args(&args(&["g"])).is_err());
        assert!(parse_args(&args(&["--dir"])).is_err());
    }
}
