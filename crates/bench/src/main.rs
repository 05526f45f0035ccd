//! `kuper-bridge-bench`: drives a real `kuper-bridge` process over loopback and prints what
//! it sustains. The simulator (the fake Kuper) runs in this process; the gateway is the
//! release binary, spawned with a temporary configuration and database. See BENCHMARKS.md.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use kuper_bridge_bench::database::{pg_server, Backend, Database};
use kuper_bridge_bench::stats::{fmt_ms, thousands, Summary};
use kuper_bridge_bench::{body, fifo, procfs};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod board;
mod ingest;
mod soak;

const WEBHOOK_USER: &str = "kuper";
const WEBHOOK_PASSWORD: &str = "secret";
const API_KEY: &str = "bench-admin-key-0123456789";
const POSITIONS: usize = 20;
/// Orders per transaction of the group-commit storage reference (SQLite).
const GROUP: usize = 32;
/// Connections of the gateway's PostgreSQL pool (storage/src/postgres.rs), and of the
/// concurrent PostgreSQL storage reference.
const PG_POOL: usize = 10;
const A_FLOW: [&str; 3] = ["order.in_work", "order.assembled", "order.ready_for_delivery"];
const A_ACTIONS: [&str; 3] = ["start-assembly", "assembled", "ready"];
const MIB: f64 = 1024.0 * 1024.0;

// Targets (the benchmark issue).
const TARGET_INGEST_RPS: f64 = 5000.0;
const TARGET_P99_AT_1000: Duration = Duration::from_millis(20);
const TARGET_ACTION_P50: Duration = Duration::from_millis(5);
const TARGET_DISPATCH_RPS: f64 = 2000.0;
const TARGET_IDLE_RSS_MIB: f64 = 30.0;
const TARGET_PEAK_RSS_MIB: f64 = 150.0;

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
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Smoke mode: small counts, under 30 s (CI; no thresholds).
    #[arg(long)]
    quick: bool,
    /// order.created webhooks per concurrency level (default 5000; --quick 300). The dispatch
    /// run uses a fifth of it (100..=2000 orders) unless --dispatch-orders is given.
    #[arg(long)]
    orders: Option<usize>,
    /// Orders of the dispatch run (3 notifications each).
    #[arg(long)]
    dispatch_orders: Option<usize>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The gateway binary (default: kuper-bridge next to this binary).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Where the temporary database directory is created (default: the system temp dir).
    /// The disk under it is what is measured.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Concurrent connections of the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    concurrency: Vec<usize>,
    /// Request rates of the fixed-rate (open-loop) runs, requests per second.
    #[arg(long, value_delimiter = ',', default_values_t = [200u32, 1000])]
    rates: Vec<u32>,
    /// Keep the temporary directory (database, config, gateway log) and print its path.
    #[arg(long)]
    keep: bool,
    /// The gateway's database: sqlite (a file in the temporary directory), postgres (a fresh
    /// database kb_bench_<hex> on KUPER_BRIDGE_TEST_PG, default
    /// postgres://postgres@127.0.0.1:5432/postgres, dropped at the end) or both, one after the
    /// other: a table each, then the two side by side.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(clap::Subcommand)]
enum Command {
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

struct Plan {
    quick: bool,
    ingest_count: usize,
    level_cap: Duration,
    healthz_count: usize,
    healthz_cap: Duration,
    rate_duration: Duration,
    latency_samples: usize,
    latency_gap: Duration,
    dispatch_orders: usize,
    storage_orders: usize,
    storage_cap: Duration,
    warmup: usize,
    /// How long the idle CPU after the load is measured.
    idle_window: Duration,
}

impl Plan {
    fn from(args: &Args) -> Self {
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

/// The end of a run: its directory and PostgreSQL database kept (`--keep`, said where) or
/// removed (the directory when `tmp` drops).
async fn keep_or_drop(keep: bool, tmp: kuper_bridge_bench::scratch::ScratchDir, db: &Database) {
    if keep {
        let kept = tmp.keep();
        progress(format!(
            "kept {}{}",
            kept.display(),
            db.pg_name().map(|n| format!(" and database {n} on {}", pg_server())).unwrap_or_default()
        ));
    } else if let Err(e) = db.drop_database().await {
        progress(format!("could not drop the benchmark database: {e:#}"));
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", chrono::Utc::now().format("%H:%M:%S"), msg.as_ref());
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let result = match args.command.take() {
        Some(Command::Soak(soak_args)) => soak::run(soak_args).await,
        Some(Command::Board(board_args)) => board::run(board_args).await,
        Some(Command::Ingest(ingest_args)) => ingest::run(ingest_args).await,
        None => run(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("kuper-bridge-bench: correctness checks failed (see the table); figures are not thresholds");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kuper-bridge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process

struct Gateway {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    /// The gateway's database URL (`sqlite://…` or `postgres://…`).
    db_url: String,
    log: PathBuf,
}

/// The size of the gateway's database: SQLite `.db` + `-wal` files; PostgreSQL
/// `pg_database_size` (and `pg_total_relation_size` of the gateway's tables, indexes and
/// TOAST included).
#[derive(Clone, Copy, Default)]
struct DbSize {
    total: u64,
    /// SQLite: the `-wal` file. PostgreSQL: the gateway's tables (`orders`, `events`, `outbox`).
    part: u64,
}

impl Gateway {
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        procfs::status_bytes(&text, field)
    }

    fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS")
    }

    fn peak_rss(&self) -> Option<u64> {
        self.status_bytes("VmHWM")
    }

    fn cpu_secs(&self) -> Option<f64> {
        cpu_secs_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Seconds the gateway's threads (those alive now) have spent runnable but not running.
    fn runq_wait_secs(&self) -> f64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else { return 0.0 };
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| procfs::schedstat_wait_ns(&s))
            .sum();
        ns as f64 / 1e9
    }

    /// The database's size now (zero when it cannot be read).
    async fn db_size(&self) -> DbSize {
        if self.db_url.starts_with("postgres") {
            use sqlx::{Connection, Row};
            let read = async {
                let mut c = sqlx::PgConnection::connect(&self.db_url).await?;
                let r = sqlx::query(
                    "SELECT pg_database_size(current_database()) AS total,
                            CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) AS tables
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind = 'r'",
                )
                .fetch_one(&mut c)
                .await?;
                let size = DbSize {
                    total: u64::try_from(r.try_get::<i64, _>("total")?).unwrap_or(0),
                    part: u64::try_from(r.try_get::<i64, _>("tables")?).unwrap_or(0),
                };
                let _ = c.close().await;
                Ok::<_, sqlx::Error>(size)
            };
            read.await.unwrap_or_default()
        } else {
            let path = self.db_url.trim_start_matches("sqlite://");
            let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let wal = size(&format!("{path}-wal"));
            DbSize { total: size(path) + wal, part: wal }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the gateway's last log lines if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the gateway exited ({status}); its last log lines:\n{}", self.log_tail());
        }
        Ok(())
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

static CLK_TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

fn cpu_secs_of(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    let ticks = procfs::stat_cpu_ticks(&text)?;
    Some(ticks as f64 / *CLK_TCK.get_or_init(clock_ticks))
}

fn own_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat").unwrap_or(0.0)
}

fn find_gateway(explicit: Option<&Path>) -> Result<PathBuf> {
    const HINT: &str = "build it first: cargo build --release -p kuper-bridge";
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--gateway-bin {}: no such file; {HINT}", p.display());
    }
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let dir = exe.parent().ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let candidate = dir.join("kuper-bridge");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!("the gateway binary {} is missing; {HINT} (or pass --gateway-bin PATH)", candidate.display())
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The gateway's config for a benchmark or soak run: production settings, the simulator as
/// Kuper, our webhook credentials and API key; `extra` adds whole sections (`[dispatcher]`,
/// `[[stores]]`, …).
fn gateway_config(port: u16, db_url: &str, sim_url: &str, key_name: &str, log_level: &str, extra: &str) -> String {
    format!(
        r#"# written by kuper-bridge-bench: production settings unless a section below says otherwise
[server]
listen = "127.0.0.1:{port}"

[database]
url = {db_url}

[kuper]
base_url = {sim}
client_id = "sim-client"
client_secret = "sim-secret"

[webhook_auth]
basic = ["{WEBHOOK_USER}:{WEBHOOK_PASSWORD}"]

[[api_keys]]
name = {key_name}
key = "{API_KEY}"
scopes = ["admin"]

[log]
level = {log_level}
format = "json"
{extra}"#,
        db_url = toml_str(db_url),
        sim = toml_str(sim_url),
        key_name = toml_str(key_name),
        log_level = toml_str(log_level),
    )
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

async fn spawn_gateway(bin: &Path, dir: &Path, db_url: &str, sim_url: &str, http: &reqwest::Client) -> Result<Gateway> {
    spawn_gateway_as(bin, dir, db_url, sim_url, http, "all").await
}

/// A gateway in `role` (`all`, `api`: no dispatcher, `worker`).
async fn spawn_gateway_as(
    bin: &Path,
    dir: &Path,
    db_url: &str,
    sim_url: &str,
    http: &reqwest::Client,
    role: &str,
) -> Result<Gateway> {
    let port = free_port()?;
    let config = gateway_config(port, db_url, sim_url, "bench", "warn", "").replacen(
        "[server]\n",
        &format!("[server]\nrole = {}\n", toml_str(role)),
        1,
    );
    let config_path = dir.join("kuper-bridge.toml");
    std::fs::write(&config_path, config).with_context(|| format!("cannot write {}", config_path.display()))?;
    let log = dir.join("gateway.log");
    let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config").arg(&config_path).arg("serve").current_dir(dir);
    // Only our config counts: no environment override may change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KUPER_BRIDGE_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "warn").stdin(std::process::Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("the gateway exited at once"))?;
    let mut gw = Gateway { child, pid, url: format!("http://127.0.0.1:{port}"), db_url: db_url.to_string(), log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        gw.check_alive()?;
        if let Ok(r) = http.get(format!("{}/healthz", gw.url)).send().await {
            if r.status().is_success() {
                return Ok(gw);
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway did not answer /healthz within 30 s; its log:\n{}", gw.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Clone)]
enum Target {
    Webhook { url: String, template: Arc<String>, seq: Arc<AtomicU64> },
    Healthz { url: String },
}

#[derive(serde::Deserialize)]
struct CreatedAnswer {
    status: String,
}

impl Target {
    async fn send(&self, client: &reqwest::Client) -> Result<(), String> {
        match self {
            Target::Webhook { url, template, seq } => {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let uuid = format!("bench:{}", uuid::Uuid::new_v4());
                let payload = body::fill(template, &body::order_id(n), &uuid);
                let resp = client
                    .post(url)
                    .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| format!("transport: {e}"))?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
                if status != 200 {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
                }
                match serde_json::from_slice::<CreatedAnswer>(&bytes) {
                    Ok(a) if a.status == "created" => Ok(()),
                    _ => Err(format!("200 without status created: {}", String::from_utf8_lossy(&bytes))),
                }
            }
            Target::Healthz { url } => {
                let resp = client.get(url).send().await.map_err(|e| format!("transport: {e}"))?;
                let status = resp.status().as_u16();
                let _ = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
        }
    }
}

fn load_client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

struct ClosedLoop {
    concurrency: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    rps: f64,
    latency: Summary,
    /// Throughput of the first and the second half of the successful requests: a gateway
    /// that slows down as its database grows shows it here.
    halves: (f64, f64),
    client_cpu_s: f64,
    gateway_cpu_s: f64,
    gateway_runq_wait_s: f64,
}

impl ClosedLoop {
    fn to_json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps,
            "latency": self.latency.to_json(),
            "rps_first_half": self.halves.0,
            "rps_second_half": self.halves.1,
            "client_cpu_s": self.client_cpu_s,
            "gateway_cpu_s": self.gateway_cpu_s,
            "gateway_runq_wait_s": self.gateway_runq_wait_s,
        })
    }
}

/// `concurrency` connections, each sending its next request as soon as the previous one is
/// answered, until `count` requests were sent or `cap` has passed.
async fn closed_loop(
    target: &Target,
    concurrency: usize,
    count: usize,
    cap: Duration,
    gw: &Gateway,
) -> Result<ClosedLoop> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (cpu0, own0, wait0) = (gw.cpu_secs().unwrap_or(0.0), own_cpu_secs(), gw.runq_wait_secs());
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = load_client(1)?;
        let target = target.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < count && started.elapsed() < cap {
                let t = Instant::now();
                match target.send(&client).await {
                    Ok(()) => samples.push((t.elapsed(), started.elapsed())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (s, e, f) = w.await.context("a load worker panicked")?;
        samples.extend(s);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed();
    let mut done: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    done.sort_unstable();
    let halves = halves(&done);
    let ok = samples.len();
    Ok(ClosedLoop {
        concurrency,
        ok,
        errors,
        first_error,
        elapsed,
        rps: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples.into_iter().map(|s| s.0).collect()),
        halves,
        client_cpu_s: own_cpu_secs() - own0,
        gateway_cpu_s: gw.cpu_secs().unwrap_or(0.0) - cpu0,
        gateway_runq_wait_s: gw.runq_wait_secs() - wait0,
    })
}

fn halves(done: &[Duration]) -> (f64, f64) {
    let n = done.len();
    if n < 4 {
        return (0.0, 0.0);
    }
    let mid = n / 2;
    let t_mid = done[mid - 1].as_secs_f64().max(1e-9);
    let t_end = done[n - 1].as_secs_f64();
    (mid as f64 / t_mid, (n - mid) as f64 / (t_end - t_mid).max(1e-9))
}

struct OpenLoop {
    rate: u32,
    sent: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    achieved_rps: f64,
    /// From the request's scheduled send time: includes any queueing (no coordinated omission).
    latency: Summary,
    /// From the moment the request actually left.
    service: Summary,
    /// 100 ms windows (by scheduled send time) holding a request slower than 20 ms:
    /// (window start in s, such requests, slowest in ms). Shows whether the tail is a few
    /// stalls or spread out.
    slow_windows: Vec<(f64, usize, f64)>,
    gateway_cpu_s: f64,
    /// Time the gateway's threads were ready to run but waiting for a CPU.
    gateway_runq_wait_s: f64,
}

/// Requests at a fixed rate whatever the answers (open loop), at most 512 in flight.
async fn open_loop(target: &Target, rate: u32, duration: Duration, gw: &Gateway) -> Result<OpenLoop> {
    let (cpu0, wait0) = (gw.cpu_secs().unwrap_or(0.0), gw.runq_wait_secs());
    let client = load_client(512)?;
    let inflight = Arc::new(tokio::sync::Semaphore::new(512));
    let n = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let scheduled = started + period * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled).await;
        let (client, target, inflight) = (client.clone(), target.clone(), inflight.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = inflight.acquire_owned().await;
            let sent = tokio::time::Instant::now();
            let r = target.send(&client).await;
            let now = tokio::time::Instant::now();
            (r, now - scheduled, now - sent, now, scheduled - started)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut service = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    let mut last = started;
    let mut windows: std::collections::BTreeMap<u64, (usize, Duration)> = std::collections::BTreeMap::new();
    for t in tasks {
        let (r, l, s, at, offset) = t.await.context("a request task panicked")?;
        last = last.max(at);
        match r {
            Ok(()) => {
                if l > Duration::from_millis(20) {
                    let w = windows.entry(offset.as_millis() as u64 / 100).or_default();
                    w.0 += 1;
                    w.1 = w.1.max(l);
                }
                lat.push(l);
                service.push(s);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let ok = lat.len();
    Ok(OpenLoop {
        rate,
        sent: n,
        ok,
        errors,
        first_error,
        achieved_rps: ok as f64 / (last - started).as_secs_f64().max(1e-9),
        latency: Summary::of(lat),
        service: Summary::of(service),
        slow_windows: windows
            .into_iter()
            .map(|(w, (count, max))| (w as f64 / 10.0, count, kuper_bridge_bench::stats::ms(max)))
            .collect(),
        gateway_cpu_s: gw.cpu_secs().unwrap_or(0.0) - cpu0,
        gateway_runq_wait_s: gw.runq_wait_secs() - wait0,
    })
}

// ---------------------------------------------------------------------------------------------
// Storage ceiling

struct StorageCeiling {
    /// What was measured, for the table.
    name: String,
    /// Orders written (rows, or gateway-shaped order inserts).
    orders: usize,
    commits: usize,
    /// Orders per second.
    rps: f64,
    /// Per transaction.
    latency: Summary,
    row_bytes: usize,
}

impl StorageCeiling {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "orders": self.orders, "commits": self.commits, "rps": self.rps, "latency": self.latency.to_json(), "row_bytes": self.row_bytes})
    }
}

/// What one transaction of a storage reference writes.
#[derive(Clone, Copy)]
enum TxShape {
    /// One row holding the body twice (raw in the audit log, parsed in the order document):
    /// the bare cost of a durable commit of that many bytes.
    OneRow,
    /// What the gateway does for a new `order.created` (storage/src/sqlite.rs, postgres.rs):
    /// look the order up, insert it (SQLite: then write its number and document), insert the
    /// audit event — `per_tx` orders per COMMIT. SQLite with `per_tx` > 1 wraps each order in
    /// a SAVEPOINT, as the gateway's group commit does (storage/src/group_commit.rs).
    Gateway { per_tx: usize },
}

/// One storage reference: a shape, on this many connections at once (each its own loop of
/// transactions; PostgreSQL only — SQLite has one writer).
#[derive(Clone, Copy)]
struct RefSpec {
    shape: TxShape,
    connections: usize,
}

impl RefSpec {
    fn name(&self, backend: Backend) -> String {
        let what = match self.shape {
            TxShape::OneRow => "1 row/commit".to_string(),
            TxShape::Gateway { per_tx: 1 } => "the gateway's order.created transaction, 1 order/commit".to_string(),
            TxShape::Gateway { per_tx } => {
                format!("the gateway's order.created transaction, {per_tx} orders/commit, a SAVEPOINT each")
            }
        };
        match backend {
            Backend::Sqlite => what,
            Backend::Postgres => format!(
                "{what}, {} connection{}",
                self.connections,
                if self.connections == 1 { "" } else { "s at once" }
            ),
        }
    }
}

/// The references measured on each backend.
fn ref_specs(backend: Backend) -> Vec<RefSpec> {
    match backend {
        Backend::Sqlite => vec![
            RefSpec { shape: TxShape::OneRow, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: GROUP }, connections: 1 },
        ],
        Backend::Postgres => vec![
            RefSpec { shape: TxShape::OneRow, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: PG_POOL },
        ],
    }
}

const CEILING_SCHEMA: &[&str] = &[
    "CREATE TABLE rows (id INTEGER PRIMARY KEY, original_order_id TEXT UNIQUE, at INTEGER NOT NULL, data TEXT NOT NULL, body TEXT NOT NULL)",
    // The gateway's orders and events tables and indexes (storage migrations 0001, 0006).
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, original_order_id TEXT UNIQUE, order_uuid TEXT UNIQUE, number TEXT NOT NULL UNIQUE,
        store_id TEXT NOT NULL, scheme TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
    "CREATE INDEX orders_state ON orders (state, id)",
    "CREATE INDEX orders_store ON orders (store_id, id)",
    "CREATE INDEX orders_open_for_deadlines ON orders (id) WHERE state NOT IN ('delivered', 'canceled')",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders (id), outbox_id INTEGER, at INTEGER NOT NULL,
        kind TEXT NOT NULL, direction TEXT NOT NULL, event TEXT, outcome TEXT, method TEXT, path TEXT, status INTEGER, latency_ms INTEGER,
        headers TEXT, body TEXT, response TEXT, detail TEXT, request_id TEXT)",
    "CREATE INDEX events_order ON events (order_id, id)",
    "CREATE INDEX events_outbox ON events (outbox_id)",
    "CREATE INDEX events_at ON events (at)",
];

/// The same tables in PostgreSQL types (storage migrations/postgres 0001, 0005).
const CEILING_SCHEMA_PG: &[&str] = &[
    "DROP TABLE IF EXISTS rows, events, orders",
    "CREATE TABLE rows (id BIGSERIAL PRIMARY KEY, original_order_id TEXT UNIQUE, at BIGINT NOT NULL, data TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, original_order_id TEXT UNIQUE, order_uuid TEXT UNIQUE, number TEXT NOT NULL UNIQUE,
        store_id TEXT NOT NULL, scheme TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE INDEX orders_state ON orders (state, id)",
    "CREATE INDEX orders_store ON orders (store_id, id)",
    "CREATE INDEX orders_open_for_deadlines ON orders (id) WHERE state NOT IN ('delivered', 'canceled')",
    "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, order_id BIGINT REFERENCES orders (id), outbox_id BIGINT, at BIGINT NOT NULL,
        kind TEXT NOT NULL, direction TEXT NOT NULL, event TEXT, outcome TEXT, method TEXT, path TEXT, status BIGINT, latency_ms BIGINT,
        headers TEXT, body TEXT, response TEXT, detail TEXT, request_id TEXT)",
    "CREATE INDEX events_order ON events (order_id, id)",
    "CREATE INDEX events_outbox ON events (outbox_id)",
    "CREATE INDEX events_at ON events (at)",
];

const REF_HEADERS: &str = r#"{"authorization":"[redacted]","content-type":"application/json","host":"127.0.0.1"}"#;
const REF_RESPONSE: &str = r#"{"status":"created","number":"KB-1","expectedAssemblyTime":"2026-03-14T10:32:11+03:00"}"#;

async fn gateway_shaped_insert(conn: &mut sqlx::SqliteConnection, i: u64, payload: &str) -> Result<()> {
    let oid = body::order_id(i);
    let uuid = format!("bench:{i}");
    let _found = sqlx::query(
        "SELECT id, data, created_at, updated_at FROM orders WHERE (?1 IS NOT NULL AND original_order_id = ?1) OR (?2 IS NOT NULL AND order_uuid = ?2) ORDER BY id LIMIT 1",
    )
    .bind(&oid)
    .bind(&uuid)
    .fetch_optional(&mut *conn)
    .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
         VALUES (?, ?, ?, '1184', 'a', 'created', '{}', ?, ?) RETURNING id",
    )
    .bind(&oid)
    .bind(&uuid)
    .bind(format!("pending-{i}"))
    .bind(i as i64)
    .bind(i as i64)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE orders SET number = ?, data = ? WHERE id = ?")
        .bind(format!("KB-{id}"))
        .bind(payload)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id)
         VALUES (?, NULL, ?, 'webhook', 'in', 'order.created', 'created', 'POST', '/kuper-webhook', 200, 0, ?, ?, ?, NULL, ?)",
    )
    .bind(id)
    .bind(i as i64)
    .bind(REF_HEADERS)
    .bind(payload)
    .bind(REF_RESPONSE)
    .bind(uuid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the gateway's PostgreSQL store does for a new `order.created`: the lookup `FOR
/// UPDATE`, the id from the sequence, one insert with the number and document, the audit event.
async fn gateway_shaped_insert_pg(conn: &mut sqlx::PgConnection, i: u64, payload: &str) -> Result<()> {
    let oid = body::order_id(i);
    let uuid = format!("bench:{i}");
    let _found = sqlx::query(
        "SELECT id, data, created_at, updated_at FROM orders WHERE ($1::text IS NOT NULL AND original_order_id = $1) OR ($2::text IS NOT NULL AND order_uuid = $2) ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .bind(&oid)
    .bind(&uuid)
    .fetch_optional(&mut *conn)
    .await?;
    let id: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))").fetch_one(&mut *conn).await?;
    let _inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO orders (id, original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
         VALUES ($1, $2, $3, $4, '1184', 'a', 'created', $5, $6, $6) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&oid)
    .bind(&uuid)
    .bind(format!("KB-{id}"))
    .bind(payload)
    .bind(i as i64)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id)
         VALUES ($1, NULL, $2, 'webhook', 'in', 'order.created', 'created', 'POST', '/kuper-webhook', 200, 0, $3, $4, $5, NULL, $6)",
    )
    .bind(id)
    .bind(i as i64)
    .bind(REF_HEADERS)
    .bind(payload)
    .bind(REF_RESPONSE)
    .bind(uuid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Raw SQLite in this process, on a file next to the gateway's database: WAL,
/// synchronous=FULL, one connection, `BEGIN IMMEDIATE` … `COMMIT` per transaction.
async fn storage_ceiling_sqlite(
    dir: &Path,
    payload: &str,
    spec: RefSpec,
    orders: usize,
    cap: Duration,
) -> Result<StorageCeiling> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection};
    let path = dir.join("ceiling.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    let mut conn = options.connect().await.with_context(|| format!("cannot open {}", path.display()))?;
    for ddl in CEILING_SCHEMA {
        sqlx::query(ddl).execute(&mut conn).await?;
    }
    let per_tx = match spec.shape {
        TxShape::OneRow => 1,
        TxShape::Gateway { per_tx } => per_tx.max(1),
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut written = 0usize;
    while written < orders && started.elapsed() < cap {
        let t = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for _ in 0..per_tx {
            let i = written as u64;
            match spec.shape {
                TxShape::OneRow => {
                    sqlx::query("INSERT INTO rows (original_order_id, at, data, body) VALUES (?, ?, ?, ?)")
                        .bind(body::order_id(i))
                        .bind(i as i64)
                        .bind(payload)
                        .bind(payload)
                        .execute(&mut *tx)
                        .await?;
                }
                TxShape::Gateway { per_tx: 1 } => gateway_shaped_insert(&mut tx, i, payload).await?,
                TxShape::Gateway { .. } => {
                    sqlx::query("SAVEPOINT w").execute(&mut *tx).await?;
                    gateway_shaped_insert(&mut tx, i, payload).await?;
                    sqlx::query("RELEASE w").execute(&mut *tx).await?;
                }
            }
            written += 1;
        }
        tx.commit().await?;
        samples.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    Ok(StorageCeiling {
        name: spec.name(Backend::Sqlite),
        orders: written,
        commits: samples.len(),
        rps: written as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples),
        row_bytes: payload.len() * 2,
    })
}

/// Raw PostgreSQL from this process, in a database of its own on the same server
/// (`KUPER_BRIDGE_TEST_PG`), with the server's settings: `spec.connections` connections, each
/// running `BEGIN` … `COMMIT` transactions one after the other.
async fn storage_ceiling_pg(
    url: &str,
    payload: &str,
    spec: RefSpec,
    orders: usize,
    cap: Duration,
) -> Result<StorageCeiling> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    for ddl in CEILING_SCHEMA_PG {
        sqlx::query(ddl).execute(&mut admin).await?;
    }
    let _ = admin.close().await;
    let next = Arc::new(AtomicUsize::new(0));
    let payload = Arc::new(payload.to_string());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (next, payload) = (next.clone(), payload.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < cap {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let t = Instant::now();
                let mut tx = conn.begin().await?;
                match spec.shape {
                    TxShape::OneRow => {
                        sqlx::query("INSERT INTO rows (original_order_id, at, data, body) VALUES ($1, $2, $3, $4)")
                            .bind(body::order_id(i as u64))
                            .bind(i as i64)
                            .bind(payload.as_str())
                            .bind(payload.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                    TxShape::Gateway { .. } => gateway_shaped_insert_pg(&mut tx, i as u64, &payload).await?,
                }
                tx.commit().await?;
                samples.push(t.elapsed());
            }
            let _ = conn.close().await;
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.context("a storage reference task panicked")??);
    }
    let elapsed = started.elapsed();
    let written = samples.len();
    Ok(StorageCeiling {
        name: spec.name(Backend::Postgres),
        orders: written,
        commits: written,
        rps: written as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples),
        row_bytes: payload.len() * 2,
    })
}

// ---------------------------------------------------------------------------------------------
// Control calls (simulator and REST API)

struct Ctl {
    http: reqwest::Client,
    sim: String,
    app: String,
}

impl Ctl {
    async fn create_sim_order(&self, positions: &Value) -> Result<String> {
        let body = json!({
            "target": format!("{}/kuper-webhook", self.app),
            "auth": {"basic": format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")},
            "store": "1184",
            "positions": positions,
        });
        let resp = self.http.post(format!("{}/sim/v1/orders", self.sim)).json(&body).send().await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.context("simulator answer is not JSON")?;
        if status != 201 || v["merchantAnswer"]["status"] != 200 || v["check"]["ok"] != true {
            bail!("creating an order through the simulator failed (HTTP {status}): {v}");
        }
        v["originalOrderId"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no originalOrderId in {v}"))
    }

    async fn create_sim_orders(&self, positions: &Value, count: usize, concurrency: usize) -> Result<Vec<String>> {
        let next = Arc::new(AtomicUsize::new(0));
        let ctl = Arc::new(Ctl { http: self.http.clone(), sim: self.sim.clone(), app: self.app.clone() });
        let positions = Arc::new(positions.clone());
        let mut tasks = Vec::new();
        for _ in 0..concurrency.min(count.max(1)) {
            let (next, ctl, positions) = (next.clone(), ctl.clone(), positions.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    ids.push(ctl.create_sim_order(&positions).await?);
                }
                Ok::<_, anyhow::Error>(ids)
            }));
        }
        let mut ids = Vec::with_capacity(count);
        for t in tasks {
            ids.extend(t.await.context("an order-creating task panicked")??);
        }
        Ok(ids)
    }

    async fn act(&self, id: &str, action: &str) -> Result<u16> {
        let resp = self
            .http
            .post(format!("{}/api/v1/orders/{id}/{action}", self.app))
            .bearer_auth(API_KEY)
            .json(&json!({}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let _ = resp.bytes().await?;
        Ok(status)
    }

    /// Whether the gateway's outbox has a pending record. `limit=1`: the check must cost the
    /// gateway next to nothing while it is being measured.
    async fn any_pending(&self) -> Result<bool> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/outbox?status=pending&limit=1", self.app))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["records"].as_array().is_some_and(|r| !r.is_empty()))
    }

    async fn wait_drained(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.any_pending().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the outbox still has pending notifications after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sim_order(&self, id: &str) -> Result<Value> {
        Ok(self.http.get(format!("{}/sim/v1/orders/{id}", self.sim)).send().await?.error_for_status()?.json().await?)
    }

    async fn sim_log(&self) -> Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!("{}/sim/v1/notifications", self.sim))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match v {
            Value::Array(a) => Ok(a),
            other => bail!("the simulator log is not an array: {other}"),
        }
    }
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
}

fn at_ms(record: &Value) -> Option<i64> {
    let at = record["at"].as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp_millis())
}

fn ms_duration(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

// ---------------------------------------------------------------------------------------------
// Action → Kuper latency

struct ActionLatency {
    samples: usize,
    /// REST call: request sent → 202.
    round_trip: Summary,
    /// 202 → the simulator's arrival timestamp (1 ms resolution, +0.5 ms mid-point).
    to_kuper: Summary,
    /// Request sent → arrival: what a store system waits for, end to end.
    end_to_end: Summary,
    /// 202 → seen by polling the simulator every ~1 ms (an upper bound).
    polled: Summary,
    /// Notifications that arrived before the 202 reached the client.
    before_202: usize,
}

async fn action_latency(ctl: &Ctl, ids: &[String], gap: Duration) -> Result<ActionLatency> {
    action_latency_until(ctl, ids, gap, None).await
}

/// [`action_latency`], stopping early once `until` has passed.
async fn action_latency_until(
    ctl: &Ctl,
    ids: &[String],
    gap: Duration,
    until: Option<Instant>,
) -> Result<ActionLatency> {
    let mut rt = Vec::new();
    let mut to_kuper = Vec::new();
    let mut e2e = Vec::new();
    let mut polled = Vec::new();
    let mut before = 0;
    // The first one also fetches the OAuth token and opens the connection to Kuper: not idle.
    for (i, id) in ids.iter().enumerate() {
        tokio::time::sleep(gap).await;
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let sent_sys = unix_ms(SystemTime::now());
        let sent = Instant::now();
        let status = ctl.act(id, "start-assembly").await?;
        let t202 = Instant::now();
        let t202_sys = unix_ms(SystemTime::now());
        if status != 202 {
            bail!("start-assembly on {id} answered {status}, not 202");
        }
        let deadline = t202 + Duration::from_secs(10);
        let arrived = loop {
            let v = ctl.sim_order(id).await?;
            let found = v["notifications"]
                .as_array()
                .and_then(|n| n.iter().find(|r| r["event"] == "order.in_work" && r["verdict"] == "accepted").cloned());
            if let Some(r) = found {
                break r;
            }
            if Instant::now() > deadline {
                bail!("order.in_work of {id} did not reach the simulator within 10 s: {v}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let seen = t202.elapsed();
        let at = at_ms(&arrived).ok_or_else(|| anyhow!("no arrival time in {arrived}"))? as f64 + 0.5;
        if i == 0 {
            continue;
        }
        rt.push(t202 - sent);
        if at < t202_sys {
            before += 1;
        }
        to_kuper.push(ms_duration(at - t202_sys));
        e2e.push(ms_duration(at - sent_sys));
        polled.push(seen);
    }
    Ok(ActionLatency {
        samples: rt.len(),
        round_trip: Summary::of(rt),
        to_kuper: Summary::of(to_kuper),
        end_to_end: Summary::of(e2e),
        polled: Summary::of(polled),
        before_202: before,
    })
}

// ---------------------------------------------------------------------------------------------
// Dispatch throughput and FIFO

struct Dispatch {
    orders: usize,
    expected: usize,
    accepted: usize,
    rejected: usize,
    faults: usize,
    fifo_violations: usize,
    incomplete: usize,
    action_errors: usize,
    actions_elapsed: Duration,
    actions_rps: f64,
    /// First action sent → last notification accepted by the simulator.
    elapsed: Duration,
    rps: f64,
    /// Last action answered → last notification accepted.
    tail: Duration,
    gateway_cpu_s: f64,
}

/// Posts every order's three actions (in sequence per order, orders at once from
/// `concurrency` connections); returns how many were not answered 202.
async fn post_actions(ctl: &Ctl, ids: &[String], concurrency: usize) -> Result<usize> {
    let ids_arc = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let ctl_arc = Arc::new(Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: ctl.app.clone() });
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ids, next, errors, ctl) = (ids_arc.clone(), next.clone(), errors.clone(), ctl_arc.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                // An order's actions one after the other (a store does them in sequence);
                // different orders at once.
                for action in A_ACTIONS {
                    match ctl.act(id, action).await {
                        Ok(202) => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("an action task panicked")?;
    }
    Ok(errors.load(Ordering::Relaxed))
}

async fn dispatch(ctl: &Ctl, ids: &[String], concurrency: usize, gw: &Gateway) -> Result<Dispatch> {
    let cpu0 = gw.cpu_secs().unwrap_or(0.0);
    let first_sys = unix_ms(SystemTime::now());
    let started = Instant::now();
    let action_errors = post_actions(ctl, ids, concurrency).await?;
    let actions_elapsed = started.elapsed();
    let actions_done_sys = unix_ms(SystemTime::now());
    ctl.wait_drained(Duration::from_secs(300)).await?;
    let gateway_cpu_s = gw.cpu_secs().unwrap_or(0.0) - cpu0;
    let log = ctl.sim_log().await?;
    let ours: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut arrivals = Vec::new();
    let mut accepted_arrivals = Vec::new();
    let (mut accepted, mut rejected, mut faults) = (0, 0, 0);
    let mut last_at = 0i64;
    for r in &log {
        let Some(order) = r["originalOrderId"].as_str().filter(|o| ours.contains(o)) else { continue };
        let event = r["event"].as_str().unwrap_or("");
        let seq = r["seq"].as_u64().unwrap_or(0);
        match r["verdict"].as_str() {
            Some("accepted") | Some("repeat_accepted") => {
                accepted += 1;
                last_at = last_at.max(at_ms(r).unwrap_or(0));
                accepted_arrivals.push(fifo::Arrival::new(order, event, seq));
            }
            Some("rejected") => rejected += 1,
            _ => faults += 1,
        }
        if r["verdict"] != "fault" {
            arrivals.push(fifo::Arrival::new(order, event, seq));
        }
    }
    let elapsed = ms_duration(last_at as f64 + 0.5 - first_sys);
    Ok(Dispatch {
        orders: ids.len(),
        expected: ids.len() * A_FLOW.len(),
        accepted,
        rejected,
        faults,
        fifo_violations: fifo::fifo_violations(&A_FLOW, &arrivals),
        incomplete: fifo::incomplete_orders(&A_FLOW, ids, &accepted_arrivals),
        action_errors,
        actions_elapsed,
        actions_rps: (ids.len() * A_ACTIONS.len()) as f64 / actions_elapsed.as_secs_f64().max(1e-9),
        elapsed,
        rps: accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        tail: ms_duration(last_at as f64 + 0.5 - actions_done_sys),
        gateway_cpu_s,
    })
}

/// Dispatch alone: a backlog queued while nothing sends, then drained.
struct Backlog {
    expected: usize,
    accepted: usize,
    fifo_violations: usize,
    incomplete: usize,
    rejected: usize,
    action_errors: usize,
    /// First arrival → last arrival.
    elapsed: Duration,
    rps: f64,
}

/// `orders` orders of a fresh database get their three actions through a gateway without a
/// dispatcher (`role = "api"`), so their notifications pile up; then a gateway in role `all`
/// starts on that database and sends them. From the first arrival to the last is dispatch
/// alone: not bounded by how fast actions are posted (the `dispatch` run is, on two cores).
async fn dispatch_backlog(
    bin: &Path,
    backend: Backend,
    dir: &Path,
    ctl: &Ctl,
    positions: &Value,
    orders: usize,
) -> Result<Backlog> {
    let bdir = dir.join("backlog");
    std::fs::create_dir_all(&bdir).with_context(|| format!("cannot create {}", bdir.display()))?;
    let db = Database::create(backend, &bdir, "kb_bench_backlog").await?;
    let result = async {
        let mut api = spawn_gateway_as(bin, &bdir, &db.url, &ctl.sim, &ctl.http, "api").await?;
        let on_api = Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: api.url.clone() };
        let ids = on_api.create_sim_orders(positions, orders, 16).await?;
        let action_errors = post_actions(&on_api, &ids, 32).await?;
        api.child.kill().await.context("cannot stop the api gateway")?;
        let mut all = spawn_gateway_as(bin, &bdir, &db.url, &ctl.sim, &ctl.http, "all").await?;
        let on_all = Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: all.url.clone() };
        let drained = on_all.wait_drained(Duration::from_secs(300)).await;
        let _ = all.child.kill().await;
        drained?;
        let log = ctl.sim_log().await?;
        let ours: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let (mut accepted, mut rejected, mut first, mut last) = (0, 0, i64::MAX, 0);
        let (mut arrivals, mut accepted_arrivals) = (Vec::new(), Vec::new());
        for r in &log {
            let Some(order) = r["originalOrderId"].as_str().filter(|o| ours.contains(o)) else { continue };
            let (event, seq) = (r["event"].as_str().unwrap_or(""), r["seq"].as_u64().unwrap_or(0));
            match r["verdict"].as_str() {
                Some("accepted") | Some("repeat_accepted") => {
                    accepted += 1;
                    let at = at_ms(r).unwrap_or(0);
                    first = first.min(at);
                    last = last.max(at);
                    accepted_arrivals.push(fifo::Arrival::new(order, event, seq));
                }
                Some("rejected") => rejected += 1,
                _ => {}
            }
            if r["verdict"] != "fault" {
                arrivals.push(fifo::Arrival::new(order, event, seq));
            }
        }
        let elapsed = Duration::from_millis(u64::try_from((last - first).max(1)).unwrap_or(1));
        Ok(Backlog {
            expected: ids.len() * A_FLOW.len(),
            accepted,
            fifo_violations: fifo::fifo_violations(&A_FLOW, &arrivals),
            incomplete: fifo::incomplete_orders(&A_FLOW, &ids, &accepted_arrivals),
            rejected,
            action_errors,
            elapsed,
            rps: accepted as f64 / elapsed.as_secs_f64(),
        })
    }
    .await;
    if let Err(e) = db.drop_database().await {
        progress(format!("could not drop the backlog database: {e:#}"));
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Machine

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = procfs::status_bytes(&meminfo, "MemTotal").map(|b| b as f64 / MIB / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_gib": mem,
        "kernel": kernel,
        "loadavg": loadavg(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The run

fn mib(bytes: Option<u64>) -> f64 {
    bytes.map(|b| b as f64 / MIB).unwrap_or(f64::NAN)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

struct Row {
    figure: String,
    value: String,
    target: String,
    mark: String,
}

fn row(figure: impl Into<String>, value: impl Into<String>, target: impl Into<String>, mark: impl Into<String>) -> Row {
    Row { figure: figure.into(), value: value.into(), target: target.into(), mark: mark.into() }
}

/// The database backends of a run, in order.
fn backends_of(choice: BackendChoice) -> Vec<Backend> {
    match choice {
        BackendChoice::Sqlite => vec![Backend::Sqlite],
        BackendChoice::Postgres => vec![Backend::Postgres],
        BackendChoice::Both => vec![Backend::Sqlite, Backend::Postgres],
    }
}

async fn run(args: Args) -> Result<bool> {
    let plan = Plan::from(&args);
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs positive numbers, e.g. 1,8,32");
    }
    if args.rates.contains(&0) {
        bail!("--rates needs positive numbers, e.g. 200,1000");
    }
    let bin = find_gateway(args.gateway_bin.as_deref())?;
    let run_started = Instant::now();
    let backends = backends_of(args.backend);
    let mut reports = Vec::new();
    for (i, &backend) in backends.iter().enumerate() {
        progress(format!("==== {} ({} of {})", backend.label(), i + 1, backends.len()));
        reports.push((backend, run_backend(&args, &plan, &bin, backend).await?));
    }
    if reports.len() > 1 {
        print_summary(&reports);
    }
    if let Some(path) = &args.json {
        let mut all = serde_json::Map::new();
        for (b, r) in &reports {
            all.insert(format!("{b:?}").to_lowercase(), r.json.clone());
        }
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(all))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    progress(format!("done in {:.1} s", run_started.elapsed().as_secs_f64()));
    Ok(reports.iter().all(|(_, r)| r.correct))
}

/// One backend: a fresh database, a gateway on it, every measurement, its table on stdout.
async fn run_backend(args: &Args, plan: &Plan, bin: &Path, backend: Backend) -> Result<Report> {
    let machine = machine();
    let run_started = Instant::now();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    progress(format!(
        "{} mode on {}; gateway {}; {} × {}; load average {}",
        if plan.quick { "quick" } else { "full" },
        backend.label(),
        bin.display(),
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["loadavg"].as_str().unwrap_or("?")
    ));

    let parent = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = kuper_bridge_bench::scratch::ScratchDir::new_in(&parent, "kuper-bridge-bench-")
        .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))?;
    let dir = tmp.path().to_path_buf();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let canonical = dir.canonicalize().unwrap_or(dir.clone());
    let (device, fs) = procfs::mount_of(&mounts, &canonical.to_string_lossy()).unwrap_or_default();
    let db = Database::create(backend, &dir, "kb_bench").await?;
    let pg_settings = match backend {
        Backend::Sqlite => {
            progress(format!("database directory {} ({fs} on {device})", dir.display()));
            Value::Null
        }
        Backend::Postgres => {
            let settings = pg_settings(&db.url).await.unwrap_or(Value::Null);
            progress(format!("database {} on {} ({settings})", db.pg_name().unwrap_or("?"), pg_server()));
            settings
        }
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
    let sim_url = sim.base_url();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let spawned = spawn_gateway(bin, &dir, &db.url, &sim_url, &http).await;
    let result = match spawned {
        Ok(mut gw) => {
            let ctl = Ctl { http: http.clone(), sim: sim_url.clone(), app: gw.url.clone() };
            progress(format!("gateway pid {} at {}, simulator at {sim_url}", gw.pid, gw.url));
            let r = measure(plan, args, backend, &mut gw, &ctl, &dir, bin).await;
            let r = r.map_err(|e| e.context(format!("gateway log tail:\n{}", gw.log_tail())));
            let _ = gw.child.kill().await;
            r
        }
        Err(e) => Err(e),
    };
    sim.shutdown().await;
    let outcome = match result {
        Ok(mut report) => {
            report.json["backend"] = json!(format!("{backend:?}").to_lowercase());
            report.json["machine"] = machine;
            report.json["machine"]["loadavg_end"] = json!(loadavg());
            report.json["machine"]["db_dir"] = json!({"path": dir.display().to_string(), "fs": fs, "device": device});
            report.json["postgres"] = pg_settings;
            report.json["date"] = json!(date);
            report.json["mode"] = json!(if plan.quick { "quick" } else { "full" });
            report.json["gateway_bin"] = json!(bin.display().to_string());
            report.json["wall_s"] = json!(run_started.elapsed().as_secs_f64());
            print_table(&report, backend, &date, &fs, &device);
            Ok(report)
        }
        Err(e) => Err(e),
    };
    keep_or_drop(args.keep, tmp, &db).await;
    progress(format!("{} done in {:.1} s", backend.label(), run_started.elapsed().as_secs_f64()));
    outcome
}

/// The PostgreSQL server's version and the settings that decide what a commit costs.
async fn pg_settings(url: &str) -> Result<Value> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    let mut out = serde_json::Map::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "commit_delay",
        "full_page_writes",
        "autovacuum",
        "shared_buffers",
    ] {
        let v: String = sqlx::query_scalar(&format!("SHOW {name}")).fetch_one(&mut c).await?;
        out.insert(name.into(), json!(v));
    }
    let _ = c.close().await;
    Ok(Value::Object(out))
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    json: Value,
    correct: bool,
}

async fn measure(
    plan: &Plan,
    args: &Args,
    backend: Backend,
    gw: &mut Gateway,
    ctl: &Ctl,
    dir: &Path,
    bin: &Path,
) -> Result<Report> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut correct = true;

    // Idle: the gateway has started, migrated and is waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = gw.rss();
    let db_idle = gw.db_size().await;
    progress(format!(
        "idle RSS {:.1} MiB; database {:.1} MiB after the migrations",
        mib(rss_idle),
        mib(Some(db_idle.total))
    ));

    let msk = chrono::FixedOffset::east_opt(3 * 3600).ok_or_else(|| anyhow!("UTC+3"))?;
    let template = Arc::new(body::order_created_template_at(POSITIONS, chrono::Utc::now().with_timezone(&msk))?);
    let fixture: Value = serde_json::from_str(body::FIXTURE)?;
    let positions = Value::Array(body::positions(&fixture, POSITIONS)?);
    let sample_body = body::fill(&template, &body::order_id(0), "bench:00000000-0000-0000-0000-000000000000");

    // Storage ceilings, while the gateway is idle.
    let ref_db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Database::create(Backend::Postgres, dir, "kb_bench_ref").await?),
    };
    let mut storage = Vec::new();
    let mut failed = None;
    for spec in ref_specs(backend) {
        progress(format!(
            "storage reference, {} {}: {} orders",
            backend.label(),
            spec.name(backend),
            plan.storage_orders
        ));
        let c = match &ref_db {
            None => storage_ceiling_sqlite(dir, &sample_body, spec, plan.storage_orders, plan.storage_cap).await,
            Some(db) => storage_ceiling_pg(&db.url, &sample_body, spec, plan.storage_orders, plan.storage_cap).await,
        };
        match c {
            Ok(c) => {
                progress(format!(
                    "  {:.0} orders/s, {} commits, p50 {}, p99 {} per commit",
                    c.rps,
                    c.commits,
                    fmt_ms(c.latency.p50),
                    fmt_ms(c.latency.p99)
                ));
                storage.push(c);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(db) = &ref_db {
        if let Err(e) = db.drop_database().await {
            progress(format!("could not drop the reference database: {e:#}"));
        }
    }
    if let Some(e) = failed {
        return Err(e.context("storage reference"));
    }

    // Webhook ingest.
    let webhook = Target::Webhook {
        url: format!("{}/kuper-webhook", gw.url),
        template: template.clone(),
        seq: Arc::new(AtomicU64::new(1)),
    };
    progress(format!("warm-up: {} order.created", plan.warmup));
    let warm = closed_loop(&webhook, 8, plan.warmup, plan.level_cap, gw).await?;
    if warm.errors > 0 {
        bail!("warm-up: {} of {} webhooks failed: {}", warm.errors, plan.warmup, warm.first_error.unwrap_or_default());
    }
    let mut stored_orders = warm.ok;
    let cpu_ingest0 = gw.cpu_secs().unwrap_or(0.0);
    let mut ingest = Vec::new();
    for &c in &args.concurrency {
        progress(format!(
            "order.created × {} ({POSITIONS} positions, {} B), {c} connection(s)",
            plan.ingest_count,
            sample_body.len()
        ));
        let r = closed_loop(&webhook, c, plan.ingest_count, plan.level_cap, gw).await?;
        gw.check_alive()?;
        progress(format!(
            "  {:.0} req/s, p50 {}, p99 {}, p99.9 {}, errors {}{}",
            r.rps,
            fmt_ms(r.latency.p50),
            fmt_ms(r.latency.p99),
            fmt_ms(r.latency.p999),
            r.errors,
            r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        ));
        stored_orders += r.ok;
        ingest.push(r);
    }
    let ingest_cpu = gw.cpu_secs().unwrap_or(0.0) - cpu_ingest0;
    let ingest_ok: usize = ingest.iter().map(|r| r.ok).sum();
    let db_after_ingest = gw.db_size().await;

    // HTTP ceiling: the same closed loop against /healthz.
    let healthz = Target::Healthz { url: format!("{}/healthz", gw.url) };
    let mut ceilings = Vec::new();
    for &c in &args.concurrency {
        progress(format!("GET /healthz × {}, {c} connection(s)", plan.healthz_count));
        let r = closed_loop(&healthz, c, plan.healthz_count, plan.healthz_cap, gw).await?;
        progress(format!("  {:.0} req/s, p50 {}, p99 {}", r.rps, fmt_ms(r.latency.p50), fmt_ms(r.latency.p99)));
        ceilings.push(r);
    }

    // Fixed rate.
    let mut fixed = Vec::new();
    for &rate in &args.rates {
        progress(format!("order.created at {rate} req/s for {:.1} s", plan.rate_duration.as_secs_f64()));
        let r = open_loop(&webhook, rate, plan.rate_duration, gw).await?;
        gw.check_alive()?;
        progress(format!(
            "  achieved {:.0} req/s, p50 {}, p99 {}, errors {}; gateway {:.2} CPU-s, {:.2} s waiting for a CPU",
            r.achieved_rps,
            fmt_ms(r.latency.p50),
            fmt_ms(r.latency.p99),
            r.errors,
            r.gateway_cpu_s,
            r.gateway_runq_wait_s
        ));
        stored_orders += r.ok;
        fixed.push(r);
    }

    // Action → Kuper, idle.
    let n_lat = plan.latency_samples + 1;
    progress(format!("action → Kuper: {n_lat} orders through the simulator, one start-assembly at a time"));
    let lat_ids = ctl.create_sim_orders(&positions, n_lat, 4).await?;
    stored_orders += lat_ids.len();
    ctl.wait_drained(Duration::from_secs(30)).await?;
    let lat = action_latency(ctl, &lat_ids, plan.latency_gap).await?;
    progress(format!(
        "  202 → Kuper p50 {}, p99 {} (request → 202 p50 {}; polled p50 {})",
        fmt_ms(lat.to_kuper.p50),
        fmt_ms(lat.to_kuper.p99),
        fmt_ms(lat.round_trip.p50),
        fmt_ms(lat.polled.p50)
    ));
    ctl.wait_drained(Duration::from_secs(30)).await?;

    // Action → Kuper under load: the same, while order.created arrives at the highest fixed rate.
    let load_rate = args.rates.iter().copied().max().unwrap_or(1000);
    let n_load = plan.latency_samples + 1;
    progress(format!(
        "action → Kuper under load: {n_load} orders through the simulator, then start-assembly every {} ms while order.created arrives at {load_rate} /s for {:.1} s",
        plan.latency_gap.as_millis(),
        plan.rate_duration.as_secs_f64()
    ));
    let load_ids = ctl.create_sim_orders(&positions, n_load, 4).await?;
    stored_orders += load_ids.len();
    ctl.wait_drained(Duration::from_secs(30)).await?;
    // The actions start once the load has settled and stop before it ends.
    let settle = (plan.rate_duration / 10).min(Duration::from_millis(500));
    let actions_until = Instant::now() + plan.rate_duration.saturating_sub(settle * 2);
    let (loaded_run, loaded) = tokio::join!(open_loop(&webhook, load_rate, plan.rate_duration, gw), async {
        tokio::time::sleep(settle).await;
        action_latency_until(ctl, &load_ids, plan.latency_gap, Some(actions_until)).await
    });
    let (loaded_run, loaded) = (loaded_run?, loaded?);
    gw.check_alive()?;
    stored_orders += loaded_run.ok;
    progress(format!(
        "  202 → Kuper p50 {}, p99 {} ({} samples); the load: achieved {:.0} /s, p99 {}, errors {}",
        fmt_ms(loaded.to_kuper.p50),
        fmt_ms(loaded.to_kuper.p99),
        loaded.samples,
        loaded_run.achieved_rps,
        fmt_ms(loaded_run.latency.p99),
        loaded_run.errors
    ));
    ctl.wait_drained(Duration::from_secs(60)).await?;

    // Dispatch throughput.
    progress(format!("dispatch: {} orders through the simulator", plan.dispatch_orders));
    let db0 = gw.db_size().await;
    let cpu_life0 = gw.cpu_secs().unwrap_or(0.0);
    let create_started = Instant::now();
    let ids = ctl.create_sim_orders(&positions, plan.dispatch_orders, 16).await?;
    let create_elapsed = create_started.elapsed();
    stored_orders += ids.len();
    progress(format!(
        "  created in {:.1} s; {} actions from 32 connections (3 per order, in sequence per order)",
        create_elapsed.as_secs_f64(),
        ids.len() * 3
    ));
    let d = dispatch(ctl, &ids, 32, gw).await?;
    let lifecycle_cpu = gw.cpu_secs().unwrap_or(0.0) - cpu_life0;
    let db1 = gw.db_size().await;
    progress(format!(
        "  {}/{} notifications accepted, {:.0}/s (first action → last arrival {:.2} s), FIFO violations {}, rejected {}",
        d.accepted,
        d.expected,
        d.rps,
        d.elapsed.as_secs_f64(),
        d.fifo_violations,
        d.rejected
    ));

    // Resources after the load. Idle CPU: the gateway's background work with every stored
    // order still open, mostly the deadline sweep (production default: every 15 s, over all
    // open orders).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu0 = gw.cpu_secs().unwrap_or(0.0);
    tokio::time::sleep(plan.idle_window).await;
    let idle_cpu = (gw.cpu_secs().unwrap_or(0.0) - idle_cpu0) / plan.idle_window.as_secs_f64();
    progress(format!(
        "idle after the load: gateway {idle_cpu:.3} CPU-s per s with {} open orders",
        thousands(stored_orders as f64)
    ));
    gw.check_alive()?;
    let rss_after = gw.rss();
    let rss_peak = gw.peak_rss();
    let db_end = gw.db_size().await;

    // Dispatch alone, on a database of its own, after everything the gateway above measured.
    progress(format!(
        "dispatch of a backlog: {} orders' notifications queued by a gateway without a dispatcher, then sent",
        plan.dispatch_orders
    ));
    let b = dispatch_backlog(bin, backend, dir, ctl, &positions, plan.dispatch_orders).await?;
    progress(format!(
        "  {}/{} accepted in {:.2} s (first → last arrival): {:.0}/s, FIFO violations {}",
        b.accepted,
        b.expected,
        b.elapsed.as_secs_f64(),
        b.rps,
        b.fifo_violations
    ));

    // ---- correctness
    let ingest_errors: usize = ingest.iter().map(|r| r.errors).sum::<usize>()
        + fixed.iter().map(|r| r.errors).sum::<usize>()
        + loaded_run.errors;
    if ingest_errors > 0 {
        correct = false;
        notes.push(format!("{ingest_errors} webhook(s) were not answered 200 created"));
    }
    if b.fifo_violations > 0 || b.incomplete > 0 || b.rejected > 0 || b.action_errors > 0 || b.accepted < b.expected {
        correct = false;
        notes.push(format!(
            "dispatch of a backlog: {} FIFO violation(s), {} incomplete order(s), {} rejection(s), {} action error(s)",
            b.fifo_violations, b.incomplete, b.rejected, b.action_errors
        ));
    }
    if d.fifo_violations > 0 || d.incomplete > 0 || d.rejected > 0 || d.action_errors > 0 || d.accepted < d.expected {
        correct = false;
        notes.push(format!(
            "dispatch: {} FIFO violation(s), {} incomplete order(s), {} rejection(s), {} action error(s)",
            d.fifo_violations, d.incomplete, d.rejected, d.action_errors
        ));
    }

    // ---- table
    let best_ingest = ingest.iter().map(|r| r.rps).fold(0.0, f64::max);
    for r in &ingest {
        let is_best = (r.rps - best_ingest).abs() < f64::EPSILON;
        rows.push(row(
            format!("order.created, {} conn.", r.concurrency),
            format!(
                "**{} /s** · p50 {} · p99 {} · p99.9 {} · {} errors",
                thousands(r.rps),
                fmt_ms(r.latency.p50),
                fmt_ms(r.latency.p99),
                fmt_ms(r.latency.p999),
                r.errors
            ),
            if is_best { "≥ 5,000 /s" } else { "" },
            if is_best { mark(best_ingest >= TARGET_INGEST_RPS) } else { "" },
        ));
    }
    for r in &fixed {
        let target = if r.rate == 1000 { "p99 ≤ 20 ms" } else { "" };
        let m = if r.rate == 1000 { mark(r.latency.p99 <= TARGET_P99_AT_1000 && r.errors == 0) } else { "" };
        rows.push(row(
            format!("order.created at {} /s (fixed rate)", thousands(f64::from(r.rate))),
            format!(
                "p50 {} · p99 {} · achieved {} /s · {} errors",
                fmt_ms(r.latency.p50),
                fmt_ms(r.latency.p99),
                thousands(r.achieved_rps),
                r.errors
            ),
            target,
            m,
        ));
    }
    rows.push(row(
        "action 202 → notification at Kuper (idle)",
        format!(
            "p50 {} · p99 {} ({} samples; request → 202 p50 {})",
            fmt_ms(lat.to_kuper.p50),
            fmt_ms(lat.to_kuper.p99),
            lat.samples,
            fmt_ms(lat.round_trip.p50)
        ),
        "p50 ≤ 5 ms",
        mark(lat.to_kuper.p50 <= TARGET_ACTION_P50),
    ));
    rows.push(row(
        format!(
            "action 202 → notification at Kuper (under load: order.created at {} /s)",
            thousands(f64::from(load_rate))
        ),
        format!(
            "p50 {} · p99 {} ({} samples; request → 202 p50 {}) · the load: achieved {} /s, p99 {}",
            fmt_ms(loaded.to_kuper.p50),
            fmt_ms(loaded.to_kuper.p99),
            loaded.samples,
            fmt_ms(loaded.round_trip.p50),
            thousands(loaded_run.achieved_rps),
            fmt_ms(loaded_run.latency.p99)
        ),
        "",
        "",
    ));
    rows.push(row(
        "dispatch to Kuper",
        format!(
            "**{} notifications/s** ({} in {:.2} s; actions {} /s) · FIFO violations {} · rejected {}",
            thousands(d.rps),
            d.accepted,
            d.elapsed.as_secs_f64(),
            thousands(d.actions_rps),
            d.fifo_violations,
            d.rejected
        ),
        "≥ 2,000 /s; FIFO 0",
        mark(d.rps >= TARGET_DISPATCH_RPS && d.fifo_violations == 0),
    ));
    rows.push(row(
        "dispatch of a backlog (nothing else running)",
        format!(
            "**{} notifications/s** ({} in {:.2} s, first → last arrival; {} orders) · FIFO violations {} · rejected {}",
            thousands(b.rps),
            b.accepted,
            b.elapsed.as_secs_f64(),
            b.expected / A_FLOW.len(),
            b.fifo_violations,
            b.rejected
        ),
        "≥ 2,000 /s; FIFO 0",
        mark(b.rps >= TARGET_DISPATCH_RPS && b.fifo_violations == 0),
    ));
    rows.push(row(
        "gateway RSS idle (after start)",
        format!("{:.1} MiB (after the load: {:.1} MiB)", mib(rss_idle), mib(rss_after)),
        "≤ 30 MiB",
        mark(mib(rss_idle) <= TARGET_IDLE_RSS_MIB),
    ));
    rows.push(row(
        "gateway RSS peak (VmHWM)",
        format!("{:.1} MiB", mib(rss_peak)),
        "≤ 150 MiB",
        mark(mib(rss_peak) <= TARGET_PEAK_RSS_MIB),
    ));
    let cpu_per_k_ingest = ingest_cpu / ingest_ok.max(1) as f64 * 1000.0;
    let cpu_per_k_life = lifecycle_cpu / d.orders.max(1) as f64 * 1000.0;
    rows.push(row(
        "gateway CPU per 1,000 orders",
        format!("{cpu_per_k_ingest:.2} CPU-s (order.created only) · {cpu_per_k_life:.2} CPU-s (created + 3 actions + 3 notifications)"),
        "",
        "",
    ));
    rows.push(row(
        "gateway CPU idle after the load (deadline sweep every 15 s over all open orders)",
        format!(
            "{idle_cpu:.3} CPU-s per s with {} open orders ({:.1} CPU-ms per sweep per 1,000 open orders)",
            thousands(stored_orders as f64),
            idle_cpu * 15.0 * 1000.0 / (stored_orders.max(1) as f64 / 1000.0)
        ),
        "",
        "",
    ));
    let ingest_orders = (warm.ok + ingest_ok).max(1) as f64;
    let db_per_k_ingest = db_after_ingest.total.saturating_sub(db_idle.total) as f64 / ingest_orders * 1000.0 / MIB;
    let db_per_k_life = db1.total.saturating_sub(db0.total) as f64 / d.orders.max(1) as f64 * 1000.0 / MIB;
    let (db_what, db_end_detail) = match backend {
        Backend::Sqlite => (".db + -wal", format!("-wal {:.0} MiB", db_end.part as f64 / MIB)),
        Backend::Postgres => {
            ("pg_database_size", format!("tables with indexes and TOAST {:.0} MiB", db_end.part as f64 / MIB))
        }
    };
    rows.push(row(
        format!("database per 1,000 orders ({db_what})"),
        format!(
            "{db_per_k_ingest:.1} MiB (order.created only) · {db_per_k_life:.1} MiB (full flow); {:.0} MiB for {} orders at the end ({db_end_detail})",
            db_end.total as f64 / MIB,
            thousands(stored_orders as f64)
        ),
        "",
        "",
    ));
    // References.
    for (r, h) in ingest.iter().zip(&ceilings) {
        rows.push(row(
            format!("ref: GET /healthz, {} conn. (HTTP ceiling)", h.concurrency),
            format!(
                "{} /s · p50 {} · order.created is {:.1} % of it",
                thousands(h.rps),
                fmt_ms(h.latency.p50),
                100.0 * r.rps / h.rps.max(1e-9)
            ),
            "",
            "",
        ));
    }
    for (i, c) in storage.iter().enumerate() {
        let label = if i == 0 { " (storage ceiling)" } else { "" };
        let per_commit = if c.commits < c.orders { " per commit" } else { "" };
        rows.push(row(
            format!("ref: {} {}{label}", backend.label(), c.name),
            format!(
                "{} orders/s · p50 {}{per_commit} · p99 {} · best order.created is **{:.2}×** it",
                thousands(c.rps),
                fmt_ms(c.latency.p50),
                fmt_ms(c.latency.p99),
                best_ingest / c.rps.max(1e-9)
            ),
            "",
            "",
        ));
    }

    notes.push(format!(
        "CPU during the ingest runs (client = this process: load generator and simulator): {}",
        ingest
            .iter()
            .map(|r| format!(
                "{} conn. {:.2} s wall, client {:.2} CPU-s, gateway {:.2} CPU-s + {:.2} s runnable but waiting for a CPU",
                r.concurrency,
                r.elapsed.as_secs_f64(),
                r.client_cpu_s,
                r.gateway_cpu_s,
                r.gateway_runq_wait_s
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    notes.push(format!(
        "fixed rate: {}",
        fixed
            .iter()
            .map(|r| format!(
                "{} /s: latency from send p99 {}, {} 100-ms windows with a request over 20 ms, gateway {:.2} CPU-s + {:.2} s waiting for a CPU",
                r.rate,
                fmt_ms(r.service.p99),
                r.slow_windows.len(),
                r.gateway_cpu_s,
                r.gateway_runq_wait_s
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    notes.push(format!(
        "ingest throughput first half → second half: {}",
        ingest
            .iter()
            .map(|r| format!("{} conn. {:.0} → {:.0} /s", r.concurrency, r.halves.0, r.halves.1))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    notes.push(format!(
        "action → Kuper: end to end (request sent → arrival) p50 {} p99 {}; seen by 1 ms polling p50 {}; {} of {} arrived before the 202 reached the client",
        fmt_ms(lat.end_to_end.p50),
        fmt_ms(lat.end_to_end.p99),
        fmt_ms(lat.polled.p50),
        lat.before_202,
        lat.samples
    ));
    notes.push(format!(
        "dispatch: actions took {:.2} s; last notification {:.2} s after the last action's answer; {} orders created through the simulator in {:.1} s",
        d.actions_elapsed.as_secs_f64(),
        d.tail.as_secs_f64(),
        d.orders,
        create_elapsed.as_secs_f64()
    ));

    let json = json!({
        "targets": {
            "ingest_rps": {"target": TARGET_INGEST_RPS, "value": best_ingest, "met": best_ingest >= TARGET_INGEST_RPS},
            "p99_at_1000_ms": {
                "target": 20.0,
                "value": fixed.iter().find(|r| r.rate == 1000).map(|r| kuper_bridge_bench::stats::ms(r.latency.p99)),
                "met": fixed.iter().find(|r| r.rate == 1000).map(|r| r.latency.p99 <= TARGET_P99_AT_1000 && r.errors == 0),
            },
            "action_p50_ms": {"target": 5.0, "value": kuper_bridge_bench::stats::ms(lat.to_kuper.p50), "met": lat.to_kuper.p50 <= TARGET_ACTION_P50},
            "dispatch_rps": {"target": TARGET_DISPATCH_RPS, "value": d.rps, "met": d.rps >= TARGET_DISPATCH_RPS},
            "idle_rss_mib": {"target": TARGET_IDLE_RSS_MIB, "value": mib(rss_idle), "met": mib(rss_idle) <= TARGET_IDLE_RSS_MIB},
            "peak_rss_mib": {"target": TARGET_PEAK_RSS_MIB, "value": mib(rss_peak), "met": mib(rss_peak) <= TARGET_PEAK_RSS_MIB},
        },
        "ingest": ingest.iter().map(ClosedLoop::to_json).collect::<Vec<_>>(),
        "healthz": ceilings.iter().map(ClosedLoop::to_json).collect::<Vec<_>>(),
        "fixed_rate": fixed.iter().map(|r| json!({
            "rate": r.rate, "sent": r.sent, "ok": r.ok, "errors": r.errors, "first_error": r.first_error,
            "achieved_rps": r.achieved_rps, "latency_from_schedule": r.latency.to_json(), "latency_from_send": r.service.to_json(),
            "gateway_cpu_s": r.gateway_cpu_s, "gateway_runq_wait_s": r.gateway_runq_wait_s,
            "slow_windows": r.slow_windows.iter().map(|(at, n, max)| json!({"at_s": at, "over_20ms": n, "max_ms": max})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "storage": storage.iter().map(StorageCeiling::to_json).collect::<Vec<_>>(),
        "group_size": GROUP,
        "action_to_kuper_under_load": {
            "rate": load_rate, "samples": loaded.samples, "to_kuper": loaded.to_kuper.to_json(),
            "round_trip": loaded.round_trip.to_json(), "end_to_end": loaded.end_to_end.to_json(),
            "load_achieved_rps": loaded_run.achieved_rps, "load_latency": loaded_run.latency.to_json(), "load_errors": loaded_run.errors,
        },
        "action_to_kuper": {
            "samples": lat.samples, "to_kuper": lat.to_kuper.to_json(), "round_trip": lat.round_trip.to_json(),
            "end_to_end": lat.end_to_end.to_json(), "polled": lat.polled.to_json(), "before_202": lat.before_202,
        },
        "dispatch": {
            "orders": d.orders, "expected": d.expected, "accepted": d.accepted, "rejected": d.rejected, "faults": d.faults,
            "fifo_violations": d.fifo_violations, "incomplete_orders": d.incomplete, "action_errors": d.action_errors,
            "actions_elapsed_s": d.actions_elapsed.as_secs_f64(), "actions_rps": d.actions_rps,
            "elapsed_s": d.elapsed.as_secs_f64(), "rps": d.rps, "tail_s": d.tail.as_secs_f64(), "gateway_cpu_s": d.gateway_cpu_s,
            "create_elapsed_s": create_elapsed.as_secs_f64(),
        },
        "dispatch_backlog": {
            "expected": b.expected, "accepted": b.accepted, "rejected": b.rejected, "fifo_violations": b.fifo_violations,
            "incomplete_orders": b.incomplete, "action_errors": b.action_errors, "elapsed_s": b.elapsed.as_secs_f64(), "rps": b.rps,
        },
        "resources": {
            "rss_idle_mib": mib(rss_idle), "rss_after_load_mib": mib(rss_after), "rss_peak_mib": mib(rss_peak),
            "cpu_s_per_1000_created": cpu_per_k_ingest, "cpu_s_per_1000_lifecycle": cpu_per_k_life,
            "idle_cpu_s_per_s": idle_cpu, "idle_window_s": plan.idle_window.as_secs_f64(),
            "db_mib_per_1000_created": db_per_k_ingest, "db_mib_per_1000_lifecycle": db_per_k_life,
            "db_bytes_idle": db_idle.total, "db_bytes_end": db_end.total, "db_part_bytes_end": db_end.part,
            "db_part_is": if backend == Backend::Sqlite { "wal" } else { "tables" }, "orders_stored": stored_orders,
        },
        "body_bytes": sample_body.len(),
        "positions": POSITIONS,
        "correct": correct,
    });
    Ok(Report { rows, notes, json, correct })
}

fn print_table(report: &Report, backend: Backend, date: &str, fs: &str, device: &str) {
    let m = &report.json["machine"];
    let db = match backend {
        Backend::Sqlite => format!("SQLite on {fs} ({device})"),
        Backend::Postgres => {
            let pg = &report.json["postgres"];
            let get = |k: &str| pg[k].as_str().unwrap_or("?").to_string();
            format!(
                "PostgreSQL {} (synchronous_commit={}, fsync={}, autovacuum={}) on {}",
                get("server_version"),
                get("synchronous_commit"),
                get("fsync"),
                get("autovacuum"),
                pg_server_host()
            )
        }
    };
    println!();
    println!(
        "kuper-bridge benchmark · {date} · {} mode · {db} · {} × {} · {:.1} GiB · kernel {} · load average {} → {}",
        report.json["mode"].as_str().unwrap_or("?"),
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_gib"].as_f64().unwrap_or(f64::NAN),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
    );
    println!();
    println!("| figure | value | target | |");
    println!("| --- | --- | --- | --- |");
    for r in &report.rows {
        println!("| {} | {} | {} | {} |", r.figure, r.value, r.target, r.mark);
    }
    println!();
    for n in &report.notes {
        println!("- {n}");
    }
    println!();
}

/// The PostgreSQL server's host and port, without credentials.
fn pg_server_host() -> String {
    let server = pg_server();
    let rest = server.split_once("://").map_or(server.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// Both backends side by side: the headline figures and their ratios to the references.
fn print_summary(reports: &[(Backend, Report)]) {
    fn f(v: &Value) -> f64 {
        v.as_f64().unwrap_or(f64::NAN)
    }
    fn best_ingest(j: &Value) -> f64 {
        f(&j["targets"]["ingest_rps"]["value"])
    }
    /// A JSON millisecond figure as the tables print durations.
    fn ms(v: &Value) -> String {
        v.as_f64()
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map_or("-".into(), |m| fmt_ms(Duration::from_secs_f64(m / 1e3)))
    }
    type Cell = Box<dyn Fn(&Value) -> String>;
    let lines: Vec<(&str, &str, Cell)> = vec![
        (
            "order.created, best closed loop",
            "≥ 5,000 /s",
            Box::new(|j| {
                let best = j["ingest"]
                    .as_array()
                    .and_then(|a| a.iter().max_by(|x, y| f(&x["rps"]).total_cmp(&f(&y["rps"]))))
                    .map(|r| r["concurrency"].to_string())
                    .unwrap_or_default();
                format!("{} /s ({best} conn.)", thousands(best_ingest(j)))
            }),
        ),
        (
            "order.created p99 at 1,000 /s",
            "≤ 20 ms",
            Box::new(|j| {
                j["fixed_rate"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["rate"] == 1000))
                    .map(|r| {
                        format!(
                            "{} (p50 {})",
                            ms(&r["latency_from_schedule"]["p99_ms"]),
                            ms(&r["latency_from_schedule"]["p50_ms"])
                        )
                    })
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "action → Kuper p50, idle",
            "≤ 5 ms",
            Box::new(|j| {
                format!(
                    "{} (p99 {})",
                    ms(&j["action_to_kuper"]["to_kuper"]["p50_ms"]),
                    ms(&j["action_to_kuper"]["to_kuper"]["p99_ms"])
                )
            }),
        ),
        (
            "action → Kuper p50, under load",
            "",
            Box::new(|j| {
                let l = &j["action_to_kuper_under_load"];
                format!(
                    "{} (p99 {}; at {} /s)",
                    ms(&l["to_kuper"]["p50_ms"]),
                    ms(&l["to_kuper"]["p99_ms"]),
                    thousands(f(&l["rate"]))
                )
            }),
        ),
        (
            "dispatch to Kuper",
            "≥ 2,000 /s; FIFO 0",
            Box::new(|j| {
                format!(
                    "{} /s · FIFO violations {}",
                    thousands(f(&j["dispatch"]["rps"])),
                    j["dispatch"]["fifo_violations"]
                )
            }),
        ),
        (
            "RSS idle / peak",
            "≤ 30 / ≤ 150 MiB",
            Box::new(|j| {
                format!("{:.1} / {:.1} MiB", f(&j["resources"]["rss_idle_mib"]), f(&j["resources"]["rss_peak_mib"]))
            }),
        ),
        (
            "CPU per 1,000 orders: created / full flow",
            "",
            Box::new(|j| {
                format!(
                    "{:.2} / {:.2} CPU-s",
                    f(&j["resources"]["cpu_s_per_1000_created"]),
                    f(&j["resources"]["cpu_s_per_1000_lifecycle"])
                )
            }),
        ),
        (
            "CPU idle after the load (deadline sweeps)",
            "",
            Box::new(|j| {
                format!(
                    "{:.3} CPU-s per s over {} open orders",
                    f(&j["resources"]["idle_cpu_s_per_s"]),
                    thousands(f(&j["resources"]["orders_stored"]))
                )
            }),
        ),
        (
            "database per 1,000 orders: created / full flow",
            "",
            Box::new(|j| {
                format!(
                    "{:.1} / {:.1} MiB",
                    f(&j["resources"]["db_mib_per_1000_created"]),
                    f(&j["resources"]["db_mib_per_1000_lifecycle"])
                )
            }),
        ),
        (
            "best order.created ÷ HTTP ceiling (best /healthz)",
            "",
            Box::new(|j| {
                let http = j["healthz"].as_array().map(|a| a.iter().map(|r| f(&r["rps"])).fold(0.0, f64::max));
                let http = http.unwrap_or(f64::NAN);
                format!("{:.1} % (of {} /s)", 100.0 * best_ingest(j) / http, thousands(http))
            }),
        ),
        (
            "best order.created ÷ storage ceiling (1 row/commit)",
            "",
            Box::new(|j| {
                let c = f(&j["storage"][0]["rps"]);
                format!("{:.2}× (of {} /s)", best_ingest(j) / c, thousands(c))
            }),
        ),
        (
            "best order.created ÷ gateway-shaped tx, 1 order/commit, 1 connection",
            "",
            Box::new(|j| {
                let c = f(&j["storage"][1]["rps"]);
                format!("{:.2}× (of {} /s)", best_ingest(j) / c, thousands(c))
            }),
        ),
        (
            "best order.created ÷ gateway-shaped tx, batched (SQLite 32/commit; PostgreSQL 10 connections)",
            "",
            Box::new(|j| {
                let c = f(&j["storage"][2]["rps"]);
                format!("{:.2}× (of {} /s)", best_ingest(j) / c, thousands(c))
            }),
        ),
    ];
    println!();
    println!("kuper-bridge benchmark · the backends side by side");
    println!();
    print!("| figure |");
    for (b, _) in reports {
        print!(" {} |", b.label());
    }
    println!(" target |");
    println!("|{}", " --- |".repeat(reports.len() + 2));
    for (name, target, cell) in &lines {
        print!("| {name} |");
        for (_, r) in reports {
            print!(" {} |", cell(&r.json));
        }
        println!(" {target} |");
    }
    println!();
}
