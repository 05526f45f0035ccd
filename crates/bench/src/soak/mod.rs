//! `kuper-bridge-bench soak`: the crash soak. Thousands of orders of every scheme go through a
//! real `kuper-bridge` process while it is killed with SIGKILL at seeded random moments and
//! restarted at once on the same database, and while Kuper (the simulator, in this process)
//! has an outage. At the end the simulator's records say whether anything was lost, doubled or
//! reordered. See RELIABILITY.md.
//!
//! Like `crates/cli/tests/replicas.rs`: the store's actions go through the REST API (a retry
//! that gets `409` counts as applied when the order's `notified` list holds the event), Kuper's
//! webhooks go through the simulator's control API, and Kuper retries every webhook until it is
//! answered `200`.

use crate::gateway::find_gateway;
use crate::sampling::{loadavg, machine};
use crate::session::progress;
use anyhow::{bail, Context, Result};
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::procfs;
use kuper_bridge_bench::stats::thousands;
use report::print_report;
use scenario::soak;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod orders;
mod outage;
mod process;
mod report;
mod scenario;
mod stored;

/// The crash soak: orders of every scheme through a gateway that is killed with SIGKILL at
/// random moments and restarted at once, with a Kuper outage in the middle. Exit 1 when an
/// invariant breaks (something lost, doubled, reordered, refused, stuck or duplicated).
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Small counts for CI: 300 orders, a kill every ~1 s, a 3 s outage; about 40 s on 2 vCPUs.
    #[arg(long)]
    quick: bool,
    /// Orders placed by Kuper, the four kinds (A, A restaurant, B, C) in turn
    /// (default 10000; --quick 300).
    #[arg(long)]
    orders: Option<usize>,
    /// Mean time the gateway serves before it is killed, ms; each life is uniform in
    /// ±50 % of it (default 3000; --quick 1000; 0: never kill).
    #[arg(long)]
    kill_every_ms: Option<u64>,
    /// Length of Kuper's outage, seconds (default 120; --quick 3; 0: no outage).
    #[arg(long)]
    outage_secs: Option<f64>,
    /// How Kuper fails: 503 (every notification answered 503), hang (held, then dropped),
    /// or mixed (503 for the first half, hang for the second).
    #[arg(long, value_enum, default_value_t = OutageKind::Mixed)]
    outage_kind: OutageKind,
    /// The outage starts once this fraction of the orders has been placed.
    #[arg(long, default_value_t = 0.2)]
    outage_at: f64,
    /// sqlite: a file in a temporary directory. postgres: a fresh database kb_soak_<hex> on
    /// KUPER_BRIDGE_TEST_PG (default postgres://postgres@127.0.0.1:5432/postgres), dropped at
    /// the end.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Seed of the kill schedule and of the simulator's orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Orders worked on at once (an order waiting for Kuper does not count).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The gateway's dispatcher.request_timeout_ms (default 10000 = production; --quick 2000).
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// The gateway's dispatcher.lease_margin_ms (default 30000 = production; --quick 1000).
    /// On PostgreSQL a killed process's claims wait for lease = 5 × request timeout + margin.
    #[arg(long)]
    lease_margin_ms: Option<u64>,
    /// The gateway's log level (production default: info). Its whole log is searched for
    /// the secrets of the run at the end.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Also write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The gateway binary (default: kuper-bridge next to this binary).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Where the temporary directory (SQLite database, config, gateway log) is created.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary directory (and the PostgreSQL database) and print where they are.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutageKind {
    #[value(name = "503")]
    Status503,
    Hang,
    Mixed,
}

impl OutageKind {
    fn describe(self, total: Duration) -> String {
        let s = total.as_secs_f64();
        match self {
            OutageKind::Status503 => format!("503 for {s:.0} s"),
            OutageKind::Hang => format!("hang for {s:.0} s (held, then dropped)"),
            OutageKind::Mixed => {
                format!("503 for {:.1} s, then hang for {:.1} s (held, then dropped)", s / 2.0, s / 2.0)
            }
        }
    }
}

/// The retry schedule of the soak: production's first three steps, then every 30 s instead of
/// 2 min, 5 min, 15 min; throttle floor 5 s instead of 60 s. Everything else is production.
const SCHEDULE_MS: [u64; 3] = [1_000, 5_000, 30_000];
const THROTTLE_FLOOR_MS: u64 = 5_000;
/// How long one step of an order (an action, a webhook) may take through the restarts.
const STEP_DEADLINE: Duration = Duration::from_secs(180);
/// Base64 of the webhook credentials `kuper:secret` (what an `Authorization: Basic` carries).
const BASIC_CREDENTIALS_B64: &str = "a3VwZXI6c2VjcmV0";

struct Plan {
    quick: bool,
    orders: usize,
    kill_every: Duration,
    outage: Duration,
    outage_kind: OutageKind,
    outage_at: usize,
    concurrency: usize,
    request_timeout_ms: u64,
    lease_margin_ms: u64,
    drain_timeout: Duration,
}

impl Plan {
    fn from(a: &SoakArgs) -> Result<Self> {
        let orders = a.orders.unwrap_or(if a.quick { 300 } else { 10_000 });
        if orders == 0 {
            bail!("--orders must be positive");
        }
        if a.concurrency == 0 {
            bail!("--concurrency must be positive");
        }
        let outage_secs = a.outage_secs.unwrap_or(if a.quick { 3.0 } else { 120.0 });
        if !(0.0..=3600.0).contains(&outage_secs) {
            bail!("--outage-secs: between 0 and 3600");
        }
        if !(0.0..=1.0).contains(&a.outage_at) {
            bail!("--outage-at: a fraction between 0 and 1");
        }
        let outage = Duration::from_secs_f64(outage_secs);
        Ok(Plan {
            quick: a.quick,
            orders,
            kill_every: Duration::from_millis(a.kill_every_ms.unwrap_or(if a.quick { 1_000 } else { 3_000 })),
            outage,
            outage_kind: a.outage_kind,
            outage_at: ((orders as f64 * a.outage_at) as usize).min(orders.saturating_sub(1)),
            concurrency: a.concurrency,
            request_timeout_ms: a.request_timeout_ms.unwrap_or(if a.quick { 2_000 } else { 10_000 }),
            lease_margin_ms: a.lease_margin_ms.unwrap_or(if a.quick { 1_000 } else { 30_000 }),
            drain_timeout: Duration::from_secs(600) + outage,
        })
    }

    fn dispatcher_toml(&self) -> String {
        format!(
            "retry_schedule_ms = [{}]\nthrottle_floor_ms = {THROTTLE_FLOOR_MS}\nrequest_timeout_ms = {}\nlease_margin_ms = {}\n",
            SCHEDULE_MS.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            self.request_timeout_ms,
            self.lease_margin_ms
        )
    }

    fn schedule_text(&self) -> String {
        format!(
            "retry 1 s, 5 s, 30 s, then every 30 s (production: 1 s, 5 s, 30 s, 2 min, 5 min, then every 15 min), ±20 % jitter; \
             throttle floor 5 s (production 60 s); request timeout {} ms (production 10000); lease margin {} ms (production 30000); \
             dead letter after 24 h, dispatcher concurrency 32, poll 1 s (production)",
            self.request_timeout_ms, self.lease_margin_ms
        )
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "?".into())
}

pub async fn run(args: SoakArgs) -> Result<bool> {
    let plan = Arc::new(Plan::from(&args)?);
    let bin = find_gateway(args.gateway_bin.as_deref())?;
    let machine = machine();
    let run_started = Instant::now();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = kuper_bridge_bench::scratch::ScratchDir::new_in(&parent, "kuper-bridge-soak-")
        .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))?;
    let dir = tmp.path().to_path_buf();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let canonical = dir.canonicalize().unwrap_or(dir.clone());
    let (device, fs) = procfs::mount_of(&mounts, &canonical.to_string_lossy()).unwrap_or_default();
    let db = Database::create(args.backend, Some(&dir), "kb_soak").await?;
    progress(format!(
        "soak ({} mode): {} orders, {} (seed {}), Kuper outage: {}; {:?} at {}",
        if plan.quick { "quick" } else { "full" },
        thousands(plan.orders as f64),
        if plan.kill_every.is_zero() {
            "no kills".to_string()
        } else {
            format!("a SIGKILL every {:.1} s ± 50 %", plan.kill_every.as_secs_f64())
        },
        args.seed,
        if plan.outage.is_zero() { "none".to_string() } else { plan.outage_kind.describe(plan.outage) },
        args.backend,
        if db.pg_name().is_some() { db.url().to_string() } else { dir.display().to_string() },
    ));
    progress(format!("gateway dispatcher (compressed schedule): {}", plan.schedule_text()));

    let result = soak(&plan, &args, &bin, &dir, &db).await;
    let outcome = match result {
        Ok(mut report) => {
            report.json["machine"] = machine.clone();
            report.json["machine"]["loadavg_end"] = json!(loadavg());
            report.json["machine"]["db_dir"] = json!({"path": dir.display().to_string(), "fs": fs, "device": device});
            report.json["date"] = json!(date);
            report.json["wall_s"] = json!(run_started.elapsed().as_secs_f64());
            print_report(&report, &date, &machine, &fs, &device, run_started.elapsed());
            // A figures file that cannot be written fails the run, after the keep-or-drop
            // below: a run the user asked to keep is kept.
            let written = match &args.json {
                Some(path) => serde_json::to_string_pretty(&report.json)
                    .map_err(anyhow::Error::from)
                    .and_then(|text| {
                        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
                    })
                    .map(|()| progress(format!("figures written to {}", path.display()))),
                None => Ok(()),
            };
            written.map(|()| report.ok)
        }
        Err(e) => Err(e),
    };
    if args.keep {
        let kept = tmp.keep();
        db.keep();
        progress(format!(
            "kept {}{}",
            kept.display(),
            db.pg_name().map(|n| format!(" and database {n}")).unwrap_or_default()
        ));
    } else if let Err(e) = db.drop_database().await {
        progress(format!("could not drop the soak database: {e:#}"));
    }
    progress(format!("done in {:.1} s", run_started.elapsed().as_secs_f64()));
    outcome
}
