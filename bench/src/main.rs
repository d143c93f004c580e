//! `herald-bench`: publishes events into a Herald and measures what comes out.
//!
//! It targets a running Herald (`--addr`, `--admin-key`) or starts one in this process
//! (the default: a temporary SQLite file and the in-process queue, or `--database-url` /
//! `--redis-url`), creates a tenant and endpoints pointing at its own receiver on
//! loopback, publishes, waits for every expected delivery or tail event, and reports
//! throughput, latency, losses, CPU and memory. The exit status is 0 only when nothing was
//! lost and nothing failed, so CI can run it with a tiny N.
//!
//! Modules: `run` (the phases of a run), `scenarios` (what each scenario creates and
//! expects), `publisher` (the load), `receiver` (the webhook receiver), `tails`, `floor`,
//! `target` (Herald in-process or remote), `payload` (events and their marker),
//! `procstat` (/proc, Redis INFO), `stats`, `report`.

mod floor;
mod payload;
mod procstat;
mod publisher;
mod receiver;
mod report;
mod run;
mod scenarios;
mod stats;
mod tails;
mod target;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

use crate::{publisher::Mode, scenarios::Scenario};

/// Benchmark a Herald end to end: publish → webhook (or tail) arrival.
#[derive(Parser, Debug, Clone)]
#[command(name = "herald-bench", version, about, long_about = None)]
pub struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::One)]
    pub scenario: Scenario,

    /// Events to publish.
    #[arg(short = 'n', long = "events", default_value_t = 10_000)]
    pub events: u64,

    /// Concurrent publishing callers (each on its own connection).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub concurrency: usize,

    /// How events are published.
    #[arg(long, value_enum, default_value_t = Mode::Unary)]
    pub mode: Mode,

    /// Events per `PublishBatch` call (`--mode batch`; at most 1,000).
    #[arg(short = 'b', long = "batch-size", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,

    /// Items in flight per `PublishStream` (`--mode stream`).
    #[arg(long, default_value_t = 64)]
    pub window: usize,

    /// Publish at this many events per second in all (paced, open loop) instead of as fast
    /// as Herald answers: for latencies at a given load (a4 at half the maximum rate, and
    /// the tails of (e), which a full-speed publisher would bury under 1,000 copies of
    /// every event).
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// Endpoints of `fanout` (default 10) and `filters` (default 1,000).
    #[arg(long)]
    pub endpoints: Option<usize>,

    /// Subscribe tails of the `tails` scenario.
    #[arg(short = 'k', long, default_value_t = 1000)]
    pub tails: usize,

    /// Deliveries to queue in the `backlog` scenario (default: `--events`).
    #[arg(short = 'm', long)]
    pub backlog: Option<u64>,

    /// `backlog`: seconds the receiver stays down from the first publish; every
    /// delivery must have failed once by then (default: 5 + 1 s per 1,000 deliveries).
    #[arg(long)]
    pub down_secs: Option<u64>,

    /// Also measure the receiver alone (direct POSTs) and report Herald's fraction of it.
    #[arg(long)]
    pub floor: bool,

    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,

    /// No progress bars (they go to stderr, and only to a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Give up waiting when no delivery arrived for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub stall_secs: u64,

    /// After the last expected arrival, wait this long for duplicates.
    #[arg(long, default_value_t = 250)]
    pub settle_ms: u64,

    /// A running Herald (`http://127.0.0.1:50051`); default: start one in this process.
    #[arg(long, requires = "admin_key")]
    pub addr: Option<String>,

    /// Admin key of the running Herald.
    #[arg(long, env = "HERALD_BENCH_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Process id of the running Herald (same machine), for its CPU time and peak RSS.
    #[arg(long, requires = "addr")]
    pub pid: Option<u32>,

    /// In-process Herald's database (default: a temporary SQLite file). PostgreSQL:
    /// `postgres://user@host/db` (an existing database; it is migrated).
    #[arg(long, conflicts_with = "addr")]
    pub database_url: Option<String>,

    /// Redis: the in-process Herald's queue (with a unique key prefix, deleted after);
    /// with `--addr`, only read for memory figures.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// In-process Herald's TOML configuration, for tuning (HERALD_* variables apply too).
    #[arg(long, conflicts_with = "addr")]
    pub herald_config: Option<PathBuf>,

    /// Worker threads of the in-process Herald's runtime (default: one per core).
    #[arg(long, conflicts_with = "addr")]
    pub herald_threads: Option<usize>,

    /// Worker threads of the harness's own runtime (default: one per core).
    #[arg(long)]
    pub bench_threads: Option<usize>,

    /// Where the receiver listens (the endpoints' URLs use it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub receiver_bind: SocketAddr,

    /// Keep the endpoints at the end (they are deleted when the data outlives the run).
    #[arg(long)]
    pub keep: bool,

    /// Log filter for the harness and the in-process Herald (stderr).
    #[arg(long, default_value = "warn")]
    pub log: String,
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{value}' is not a positive number of events per second"
        )),
    }
}

fn runtime(name: &str, threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name(name).enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder.build()
}

// glibc's malloc showed up at ~15% of the server's CPU under load (arena lock
// contention and consolidation); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let bench = match runtime("bench", args.bench_threads) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("herald-bench: cannot start a runtime: {err}");
            return ExitCode::from(2);
        }
    };
    // Herald gets a runtime of its own so that its threads can be told apart in /proc.
    let herald = match args.addr {
        Some(_) => None,
        None => match runtime("herald", args.herald_threads) {
            Ok(rt) => Some(rt),
            Err(err) => {
                eprintln!("herald-bench: cannot start a runtime: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let result = bench.block_on(run::run(
        args.clone(),
        herald.as_ref().map(|rt| rt.handle().clone()),
    ));
    if let Some(rt) = herald {
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    bench.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("herald-bench: {err}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.text());
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("herald-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
