//! The command line: the main benchmark's options, the subcommands, and the plan (counts and
//! time caps) the options come to.

use crate::{board, ingest, soak};
use anyhow::{Context, Result};
use clap::Parser;
use kuper_bridge_bench::database::Backend;
use kuper_bridge_bench::scratch::ScratchDir;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark a running kuper-bridge: webhook ingest, action → Kuper latency, dispatch
/// throughput, resources, and the HTTP and SQLite ceilings of this machine.
///
/// Spawns the `kuper-bridge` binary found next to this one (build it first:
/// `cargo build --release -p kuper-bridge`) on a temporary SQLite database, with the Kuper
/// simulator in this process as Kuper. Progress goes to stderr, the table to stdout.
///
/// `kuper-bridge-bench soak` is the crash soak instead (see RELIABILITY.md).
#[derive(Parser)]
#[command(name = "kuper-bridge-bench", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Smoke mode: small counts, under 30 s (CI; no thresholds).
    #[arg(long)]
    pub(crate) quick: bool,
    /// order.created webhooks per concurrency level (default 5000; --quick 300). The dispatch
    /// run uses a fifth of it (100..=2000 orders) unless --dispatch-orders is given.
    #[arg(long)]
    pub(crate) orders: Option<usize>,
    /// Orders of the dispatch run (3 notifications each).
    #[arg(long)]
    pub(crate) dispatch_orders: Option<usize>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// The gateway binary (default: kuper-bridge next to this binary).
    #[arg(long)]
    pub(crate) gateway_bin: Option<PathBuf>,
    /// Where the temporary database directory is created (default: the system temp dir).
    /// The disk under it is what is measured.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Concurrent connections of the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    pub(crate) concurrency: Vec<usize>,
    /// Request rates of the fixed-rate (open-loop) runs, requests per second.
    #[arg(long, value_delimiter = ',', default_values_t = [200u32, 1000])]
    pub(crate) rates: Vec<u32>,
    /// Keep the temporary directory (database, config, gateway log) and print its path.
    #[arg(long)]
    pub(crate) keep: bool,
    /// The gateway's database: sqlite (a file in the temporary directory), postgres (a fresh
    /// database kb_bench_<hex> on KUPER_BRIDGE_TEST_PG, default
    /// postgres://postgres@127.0.0.1:5432/postgres, dropped at the end) or both, one after the
    /// other: a table each, then the two side by side.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub(crate) backend: BackendChoice,
    /// Profile the whole machine (`perf record -a -g`; root and linux-perf needed) during the
    /// ingest at the highest --concurrency, the highest fixed rate, the dispatch run and the
    /// dispatch of a backlog, and write `perf-<backend>-<phase>.txt` into this directory: where
    /// the CPUs went during each figure. perf takes CPU: take the figures from a run without it.
    #[arg(long, value_name = "DIR")]
    pub(crate) perf: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// The crash soak: orders of every scheme while the gateway is SIGKILLed at random
    /// moments and Kuper has an outage; exit 1 if anything is lost, doubled or reordered.
    Soak(soak::SoakArgs),
    /// The operator console's server time with many orders (default 100,000): the board, its
    /// filters and search, and order pages; exit 1 if a page answers wrongly.
    Board(board::BoardArgs),
    /// order.created ingest driven by an external load generator (wrk with
    /// crates/bench/scripts/unique_orders.lua); exit 1 unless every webhook was a new order.
    Ingest(ingest::IngestArgs),
}

pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) ingest_count: usize,
    pub(crate) level_cap: Duration,
    pub(crate) healthz_count: usize,
    pub(crate) healthz_cap: Duration,
    pub(crate) rate_duration: Duration,
    pub(crate) latency_samples: usize,
    pub(crate) latency_gap: Duration,
    pub(crate) dispatch_orders: usize,
    pub(crate) storage_orders: usize,
    pub(crate) storage_cap: Duration,
    pub(crate) warmup: usize,
    /// How long the idle CPU after the load is measured.
    pub(crate) idle_window: Duration,
}

impl Plan {
    pub(crate) fn from(args: &Args) -> Self {
        if args.quick {
            let n = args.orders.unwrap_or(300);
            Plan {
                quick: true,
                ingest_count: n,
                level_cap: Duration::from_secs(3),
                healthz_count: 2000,
                healthz_cap: Duration::from_secs(1),
                rate_duration: Duration::from_millis(1500),
                latency_samples: 20,
                latency_gap: Duration::from_millis(20),
                dispatch_orders: args.dispatch_orders.unwrap_or((n / 5).clamp(20, 60)).max(1),
                storage_orders: 300,
                storage_cap: Duration::from_secs(2),
                warmup: 50,
                idle_window: Duration::from_secs(2),
            }
        } else {
            let n = args.orders.unwrap_or(5000);
            Plan {
                quick: false,
                ingest_count: n,
                level_cap: Duration::from_secs(120),
                healthz_count: (n * 4).max(20_000),
                healthz_cap: Duration::from_secs(10),
                rate_duration: Duration::from_secs(10),
                latency_samples: 200,
                latency_gap: Duration::from_millis(50),
                dispatch_orders: args.dispatch_orders.unwrap_or((n / 5).clamp(100, 2000)).max(1),
                storage_orders: 3000,
                storage_cap: Duration::from_secs(10),
                warmup: 200,
                idle_window: Duration::from_secs(15), // one deadline sweep (every 15 s)
            }
        }
    }
}

/// The database backends of a run, in order.
pub(crate) fn backends_of(choice: BackendChoice) -> Vec<Backend> {
    match choice {
        BackendChoice::Sqlite => vec![Backend::Sqlite],
        BackendChoice::Postgres => vec![Backend::Postgres],
        BackendChoice::Both => vec![Backend::Sqlite, Backend::Postgres],
    }
}

/// The options `ingest` and `board` share: where the figures go, which gateway runs, where the
/// run's temporary directory is made and whether it outlives the run. A subcommand that writes
/// or keeps more than this help says rewords it with `mut_arg`, so that its `--help` stays what
/// it was when each declared these options itself.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,
    /// The gateway binary (default: kuper-bridge next to this binary).
    #[arg(long, value_name = "PATH")]
    pub(crate) gateway_bin: Option<PathBuf>,
    /// Where the temporary directory (SQLite database, config, gateway log) is created.
    #[arg(long, value_name = "PATH")]
    pub(crate) dir: Option<PathBuf>,
    /// Keep the temporary directory and the PostgreSQL database.
    #[arg(long)]
    pub(crate) keep: bool,
}

impl RunArgs {
    /// A new temporary directory `PREFIX…` under `--dir` (default: the system's).
    pub(crate) fn scratch(&self, prefix: &str) -> Result<ScratchDir> {
        let parent = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        ScratchDir::new_in(&parent, prefix)
            .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))
    }
}
