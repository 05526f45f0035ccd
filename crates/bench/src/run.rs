//! The main benchmark (`kuper-bridge-bench` without a subcommand): per backend a fresh
//! database, a gateway on it, and the measured phases one after the other.

use crate::ceiling::{storage_ceilings, StorageCeiling};
use crate::cli::{backends_of, Args, Plan};
use crate::ctl::Ctl;
use crate::gateway::{find_gateway, spawn_gateway, DbSize, Gateway};
use crate::load::{closed_loop, open_loop, ClosedLoop, OpenLoop, Target, POSITIONS};
use crate::probes::{
    action_latency, action_latency_until, dispatch, dispatch_backlog, ActionLatency, Backlog, Dispatch,
};
use crate::profile;
use crate::report::{self, mib, print_summary, print_table, Report};
use crate::sampling::{loadavg, machine, pg_settings};
use crate::session::{keep_or_drop, progress};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::database::{pg_server, Backend, Database};
use kuper_bridge_bench::stats::{fmt_ms, thousands};
use kuper_bridge_bench::{body, procfs};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) async fn run(args: Args) -> Result<bool> {
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
    let db = Database::create(backend, Some(&dir), "kb_bench").await?;
    let pg_settings = match backend {
        Backend::Sqlite => {
            progress(format!("database directory {} ({fs} on {device})", dir.display()));
            Value::Null
        }
        Backend::Postgres => {
            let settings = pg_settings(db.url()).await.unwrap_or(Value::Null);
            progress(format!("database {} on {} ({settings})", db.pg_name().unwrap_or("?"), pg_server()));
            settings
        }
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
    let sim_url = sim.base_url();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let spawned = spawn_gateway(bin, &dir, db.url(), &sim_url, &http).await;
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
            report.json["backend"] = json!(backend.slug());
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

/// What the phases of one backend measured, in the order they ran.
pub(crate) struct Figures {
    pub(crate) backend: Backend,
    pub(crate) idle: Idle,
    pub(crate) sample_body_bytes: usize,
    pub(crate) storage: Vec<StorageCeiling>,
    pub(crate) ingest: Ingest,
    pub(crate) healthz: Vec<ClosedLoop>,
    pub(crate) fixed: Vec<OpenLoop>,
    pub(crate) idle_actions: ActionLatency,
    pub(crate) under_load: UnderLoad,
    pub(crate) dispatch: DispatchRun,
    pub(crate) after: AfterLoad,
    pub(crate) backlog: Backlog,
    /// Orders in the gateway's database once the phases on it are over.
    pub(crate) stored_orders: usize,
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
    let idle = idle(gw).await;
    let bodies = Bodies::new()?;
    let storage = storage_ceilings(backend, dir, &bodies.sample, plan.storage_orders, plan.storage_cap).await?;
    let webhook = Target::Webhook {
        url: format!("{}/kuper-webhook", gw.url),
        template: bodies.template.clone(),
        seq: Arc::new(AtomicU64::new(1)),
    };
    let ingest = ingest(plan, args, backend, gw, &webhook, bodies.sample.len()).await?;
    let healthz = http_ceiling(plan, args, gw).await?;
    let fixed = fixed_rate(plan, args, backend, gw, &webhook).await?;
    let idle_actions = action_idle(plan, ctl, &bodies.positions).await?;
    let under_load = action_under_load(plan, args, gw, ctl, &webhook, &bodies.positions).await?;
    let dispatch = dispatch_run(plan, gw, ctl, &bodies.positions, backend, args.perf.as_deref()).await?;
    let stored_orders = ingest.warm_ok
        + ingest.ok
        + fixed.iter().map(|r| r.ok).sum::<usize>()
        + idle_actions.orders
        + under_load.orders
        + under_load.load.ok
        + dispatch.d.orders;
    let after = after_load(plan, gw, stored_orders).await?;
    let backlog = backlog(plan, bin, backend, dir, ctl, &bodies.positions, args.perf.as_deref()).await?;
    let figures = Figures {
        backend,
        idle,
        sample_body_bytes: bodies.sample.len(),
        storage,
        ingest,
        healthz,
        fixed,
        idle_actions: idle_actions.latency,
        under_load,
        dispatch,
        after,
        backlog,
        stored_orders,
    };
    Ok(report::report(plan, &figures))
}

pub(crate) struct Idle {
    pub(crate) rss: Option<u64>,
    pub(crate) db: DbSize,
}

/// The gateway has started, migrated and is waiting.
async fn idle(gw: &Gateway) -> Idle {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = gw.rss();
    let db = gw.db_size().await;
    progress(format!("idle RSS {:.1} MiB; database {:.1} MiB after the migrations", mib(rss), mib(Some(db.total))));
    Idle { rss, db }
}

/// The `order.created` of the run, dated now (Moscow time, as Kuper sends it).
struct Bodies {
    template: Arc<String>,
    positions: Value,
    sample: String,
}

impl Bodies {
    fn new() -> Result<Self> {
        let msk = chrono::FixedOffset::east_opt(3 * 3600).ok_or_else(|| anyhow!("UTC+3"))?;
        let template = Arc::new(body::order_created_template_at(POSITIONS, chrono::Utc::now().with_timezone(&msk))?);
        let fixture: Value = serde_json::from_str(body::FIXTURE)?;
        let positions = Value::Array(body::positions(&fixture, POSITIONS)?);
        let sample = body::fill(&template, &body::order_id(0), "bench:00000000-0000-0000-0000-000000000000");
        Ok(Bodies { template, positions, sample })
    }
}

pub(crate) struct Ingest {
    pub(crate) warm_ok: usize,
    pub(crate) runs: Vec<ClosedLoop>,
    /// The gateway's CPU over the runs (the warm-up not included).
    pub(crate) cpu: f64,
    /// Successful webhooks of the runs.
    pub(crate) ok: usize,
    pub(crate) db_after: DbSize,
}

/// A warm-up, then `order.created` in a closed loop at each concurrency.
async fn ingest(
    plan: &Plan,
    args: &Args,
    backend: Backend,
    gw: &mut Gateway,
    webhook: &Target,
    body_bytes: usize,
) -> Result<Ingest> {
    progress(format!("warm-up: {} order.created", plan.warmup));
    let warm = closed_loop(webhook, 8, plan.warmup, plan.level_cap, gw).await?;
    if warm.errors > 0 {
        bail!("warm-up: {} of {} webhooks failed: {}", warm.errors, plan.warmup, warm.first_error.unwrap_or_default());
    }
    let cpu0 = gw.cpu_secs().unwrap_or(0.0);
    let mut runs = Vec::new();
    for &c in &args.concurrency {
        progress(format!(
            "order.created × {} ({POSITIONS} positions, {body_bytes} B), {c} connection(s)",
            plan.ingest_count
        ));
        let profiled = c == args.concurrency.iter().copied().max().unwrap_or(c);
        let recording = if profiled {
            profile::start(args.perf.as_deref(), &format!("{}-ingest-{c}", backend.slug())).await?
        } else {
            None
        };
        let r = closed_loop(webhook, c, plan.ingest_count, plan.level_cap, gw).await?;
        if let Some(recording) = recording {
            recording.finish(gw.pid).await?;
        }
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
        runs.push(r);
    }
    let cpu = gw.cpu_secs().unwrap_or(0.0) - cpu0;
    let ok = runs.iter().map(|r| r.ok).sum();
    let db_after = gw.db_size().await;
    Ok(Ingest { warm_ok: warm.ok, runs, cpu, ok, db_after })
}

/// The HTTP ceiling: the same closed loop against /healthz.
async fn http_ceiling(plan: &Plan, args: &Args, gw: &Gateway) -> Result<Vec<ClosedLoop>> {
    let healthz = Target::Healthz { url: format!("{}/healthz", gw.url) };
    let mut ceilings = Vec::new();
    for &c in &args.concurrency {
        progress(format!("GET /healthz × {}, {c} connection(s)", plan.healthz_count));
        let r = closed_loop(&healthz, c, plan.healthz_count, plan.healthz_cap, gw).await?;
        progress(format!("  {:.0} req/s, p50 {}, p99 {}", r.rps, fmt_ms(r.latency.p50), fmt_ms(r.latency.p99)));
        ceilings.push(r);
    }
    Ok(ceilings)
}

/// `order.created` at each fixed rate.
async fn fixed_rate(
    plan: &Plan,
    args: &Args,
    backend: Backend,
    gw: &mut Gateway,
    webhook: &Target,
) -> Result<Vec<OpenLoop>> {
    let mut fixed = Vec::new();
    for &rate in &args.rates {
        progress(format!("order.created at {rate} req/s for {:.1} s", plan.rate_duration.as_secs_f64()));
        let profiled = rate == args.rates.iter().copied().max().unwrap_or(rate);
        let recording = if profiled {
            profile::start(args.perf.as_deref(), &format!("{}-rate-{rate}", backend.slug())).await?
        } else {
            None
        };
        let r = open_loop(webhook, rate, plan.rate_duration, gw).await?;
        if let Some(recording) = recording {
            recording.finish(gw.pid).await?;
        }
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
        fixed.push(r);
    }
    Ok(fixed)
}

struct IdleActions {
    latency: ActionLatency,
    /// Orders placed for it.
    orders: usize,
}

/// Action → Kuper with nothing else going on.
async fn action_idle(plan: &Plan, ctl: &Ctl, positions: &Value) -> Result<IdleActions> {
    let n_lat = plan.latency_samples + 1;
    progress(format!("action → Kuper: {n_lat} orders through the simulator, one start-assembly at a time"));
    let lat_ids = ctl.create_sim_orders(positions, n_lat, 4).await?;
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
    Ok(IdleActions { latency: lat, orders: lat_ids.len() })
}

pub(crate) struct UnderLoad {
    /// The rate of the `order.created` load.
    pub(crate) rate: u32,
    pub(crate) load: OpenLoop,
    pub(crate) actions: ActionLatency,
    /// Orders placed through the simulator for the actions.
    pub(crate) orders: usize,
}

/// Action → Kuper again, while order.created arrives at the highest fixed rate.
async fn action_under_load(
    plan: &Plan,
    args: &Args,
    gw: &mut Gateway,
    ctl: &Ctl,
    webhook: &Target,
    positions: &Value,
) -> Result<UnderLoad> {
    let load_rate = args.rates.iter().copied().max().unwrap_or(1000);
    let n_load = plan.latency_samples + 1;
    progress(format!(
        "action → Kuper under load: {n_load} orders through the simulator, then start-assembly every {} ms while order.created arrives at {load_rate} /s for {:.1} s",
        plan.latency_gap.as_millis(),
        plan.rate_duration.as_secs_f64()
    ));
    let load_ids = ctl.create_sim_orders(positions, n_load, 4).await?;
    ctl.wait_drained(Duration::from_secs(30)).await?;
    // The actions start once the load has settled and stop before it ends.
    let settle = (plan.rate_duration / 10).min(Duration::from_millis(500));
    let actions_until = Instant::now() + plan.rate_duration.saturating_sub(settle * 2);
    let (loaded_run, loaded) = tokio::join!(open_loop(webhook, load_rate, plan.rate_duration, gw), async {
        tokio::time::sleep(settle).await;
        action_latency_until(ctl, &load_ids, plan.latency_gap, Some(actions_until)).await
    });
    let (loaded_run, loaded) = (loaded_run?, loaded?);
    gw.check_alive()?;
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
    Ok(UnderLoad { rate: load_rate, load: loaded_run, actions: loaded, orders: load_ids.len() })
}

pub(crate) struct DispatchRun {
    pub(crate) d: Dispatch,
    /// The gateway's CPU from the first order created to the outbox drained.
    pub(crate) cpu: f64,
    pub(crate) db_before: DbSize,
    pub(crate) db_after: DbSize,
    pub(crate) create_elapsed: Duration,
}

/// Dispatch throughput: orders through the simulator, then their actions at once.
async fn dispatch_run(
    plan: &Plan,
    gw: &Gateway,
    ctl: &Ctl,
    positions: &Value,
    backend: Backend,
    perf: Option<&Path>,
) -> Result<DispatchRun> {
    progress(format!("dispatch: {} orders through the simulator", plan.dispatch_orders));
    let db_before = gw.db_size().await;
    let cpu0 = gw.cpu_secs().unwrap_or(0.0);
    let create_started = Instant::now();
    let ids = ctl.create_sim_orders(positions, plan.dispatch_orders, 16).await?;
    let create_elapsed = create_started.elapsed();
    progress(format!(
        "  created in {:.1} s; {} actions from 32 connections (3 per order, in sequence per order)",
        create_elapsed.as_secs_f64(),
        ids.len() * 3
    ));
    let recording = profile::start(perf, &format!("{}-dispatch", backend.slug())).await?;
    let d = dispatch(ctl, &ids, 32, gw).await?;
    // Before the report: `perf report` takes seconds, and the gateway's CPU meanwhile is not the run's.
    let cpu = gw.cpu_secs().unwrap_or(0.0) - cpu0;
    if let Some(recording) = recording {
        recording.finish(gw.pid).await?;
    }
    let db_after = gw.db_size().await;
    progress(format!(
        "  {}/{} notifications accepted, {:.0}/s (first action → last arrival {:.2} s), FIFO violations {}, rejected {}",
        d.accepted,
        d.expected,
        d.rps,
        d.elapsed.as_secs_f64(),
        d.fifo_violations,
        d.rejected
    ));
    Ok(DispatchRun { d, cpu, db_before, db_after, create_elapsed })
}

pub(crate) struct AfterLoad {
    /// CPU-s per s over the idle window.
    pub(crate) idle_cpu: f64,
    pub(crate) rss: Option<u64>,
    pub(crate) rss_peak: Option<u64>,
    pub(crate) db: DbSize,
}

/// Resources after the load. Idle CPU: the gateway's background work with every stored
/// order still open, mostly the deadline sweep (production default: every 15 s, over all
/// open orders).
async fn after_load(plan: &Plan, gw: &mut Gateway, stored_orders: usize) -> Result<AfterLoad> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu0 = gw.cpu_secs().unwrap_or(0.0);
    tokio::time::sleep(plan.idle_window).await;
    let idle_cpu = (gw.cpu_secs().unwrap_or(0.0) - idle_cpu0) / plan.idle_window.as_secs_f64();
    progress(format!(
        "idle after the load: gateway {idle_cpu:.3} CPU-s per s with {} open orders",
        thousands(stored_orders as f64)
    ));
    gw.check_alive()?;
    Ok(AfterLoad { idle_cpu, rss: gw.rss(), rss_peak: gw.peak_rss(), db: gw.db_size().await })
}

/// Dispatch alone, on a database of its own, after everything the gateway above measured.
async fn backlog(
    plan: &Plan,
    bin: &Path,
    backend: Backend,
    dir: &Path,
    ctl: &Ctl,
    positions: &Value,
    perf: Option<&Path>,
) -> Result<Backlog> {
    progress(format!(
        "dispatch of a backlog: {} orders' notifications queued by a gateway without a dispatcher, then sent",
        plan.dispatch_orders
    ));
    let b = dispatch_backlog(bin, backend, dir, ctl, positions, plan.dispatch_orders, perf).await?;
    progress(format!(
        "  {}/{} accepted in {:.2} s (first → last arrival): {:.0}/s, FIFO violations {}",
        b.accepted,
        b.expected,
        b.elapsed.as_secs_f64(),
        b.rps,
        b.fifo_violations
    ));
    Ok(b)
}
