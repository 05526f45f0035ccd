//! `kuper-bridge-bench board`: the operator console's server time with a large database.
//!
//! The gateway (the release binary) gets N orders through its real webhook: customers with
//! Russian names and their own phone numbers, a few stores, Kuper delivery and pickup mixed.
//! A tenth of them are placed through the simulator instead, so that Kuper knows them and
//! accepts the notifications their actions send (the simulator answers 404 to an order it
//! never placed, which the gateway dead-letters); those are moved on with REST actions. A
//! fiftieth are pickup orders whose window has passed: the deadline sweep flags them, and
//! they are what "needs attention" finds. Then an operator logs in and the board, its
//! filters, its search, a deep page, the live fragment and order pages are requested one at
//! a time (server time, no queueing) and then several at once. Every answer is checked
//! against what was seeded; a wrong answer fails the run, slowness only reports.

use super::{
    backends_of, find_gateway, loadavg, machine, mark, mib, progress, spawn_gateway, BackendChoice, Ctl, Gateway,
    WEBHOOK_PASSWORD, WEBHOOK_USER,
};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::body;
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::soak::Rng;
use kuper_bridge_bench::stats::{fmt_ms, percentile, thousands, Summary};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The issue's goal for the board and the order page.
const GOAL_P99: Duration = Duration::from_millis(50);
/// The board's page size (crates/app/src/ui/board.rs).
const PAGE_SIZE: usize = 50;
const OPERATOR: &str = "bench";
/// Letters and digits only: the login form's body needs no escaping.
const OPERATOR_PASSWORD: &str = "benchConsole2026";
const SEED_CONCURRENCY: usize = 32;
/// Stores and their share of the orders (a chain with one big store).
const STORES: [(&str, u64); 5] = [("1184", 40), ("1185", 20), ("2040", 20), ("3107", 15), ("27", 5)];
const PICKUP_PERCENT: u64 = 30;
const MAX_POSITIONS: usize = 15;
/// Below this many orders the idle CPU (one deadline sweep) is not measured: it would be most
/// of a smoke run's time.
const IDLE_CPU_MIN_ORDERS: usize = 20_000;
const SWEEP_WINDOW: Duration = Duration::from_secs(15);

#[rustfmt::skip]
const FIRST_MALE: [&str; 15] = [
    "Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл", "Михаил", "Никита",
    "Егор", "Иван", "Роман", "Павел",
];
#[rustfmt::skip]
const FIRST_FEMALE: [&str; 15] = [
    "Анна", "Мария", "Елена", "Ольга", "Наталья", "Екатерина", "Татьяна", "Ирина", "Светлана", "Юлия", "Анастасия",
    "Дарья", "Полина", "Ксения", "Виктория",
];
/// Masculine forms; every one takes "-а" in the feminine.
#[rustfmt::skip]
const SURNAMES: [&str; 50] = [
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков", "Фёдоров",
    "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов", "Степанов", "Николаев",
    "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев",
    "Романов", "Воробьёв", "Сергеев", "Кузьмин", "Фролов", "Александров", "Дмитриев", "Королёв", "Гусев", "Киселёв",
    "Ильин", "Максимов", "Поляков", "Сорокин", "Виноградов", "Ковалёв", "Белов", "Медведев", "Антонов", "Тарасов",
];

/// The console's server time with many orders: the board (first page, filters, search, a deep
/// page, the live fragment) and order pages, one request at a time and then several at once.
/// Exit 1 when a page answers wrongly (not 200, or not what was seeded); the 50 ms goal only
/// reports.
#[derive(clap::Args)]
pub struct BoardArgs {
    /// Orders in the database before the pages are measured.
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// The gateway's database: sqlite, postgres (a fresh database kb_board_<hex> on
    /// KUPER_BRIDGE_TEST_PG, dropped at the end) or both, one after the other.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Requests per page, in each of the two runs (one at a time, then --concurrency at once).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Requests in flight in the second run.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// For every page whose p99 (one at a time) misses the goal, record the gateway with
    /// `perf record -g` for 10 s while that page is requested in a loop, and write
    /// `perf report --stdio` into this directory.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// PostgreSQL: measure right after seeding, without the `VACUUM ANALYZE` that the
    /// benchmark otherwise runs first (what autovacuum does after such a load; the test
    /// server has autovacuum off).
    #[arg(long)]
    no_vacuum: bool,
    /// Also write every figure as JSON here, keyed by backend.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The gateway binary (default: kuper-bridge next to this binary).
    #[arg(long, value_name = "PATH")]
    gateway_bin: Option<PathBuf>,
    /// Where the temporary directory (SQLite database, config, gateway log) is created.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Keep the temporary directory and the PostgreSQL database (to look at the query plans).
    #[arg(long)]
    keep: bool,
}

pub async fn run(args: BoardArgs) -> Result<bool> {
    if args.orders < 500 {
        bail!("--orders: at least 500 (the board's pages and filters need that many to mean anything)");
    }
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency need positive numbers");
    }
    let bin = find_gateway(args.gateway_bin.as_deref())?;
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut correct = true;
    for backend in backends_of(args.backend) {
        progress(format!(
            "==== console benchmark on {} with {} orders",
            backend.label(),
            thousands(args.orders as f64)
        ));
        let report = run_backend(&args, &bin, backend).await?;
        correct &= report.correct;
        reports.push((backend, report));
    }
    if reports.len() > 1 {
        print_side_by_side(&reports);
    }
    if let Some(path) = &args.json {
        let all: serde_json::Map<String, Value> =
            reports.iter().map(|(b, r)| (format!("{b:?}").to_lowercase(), r.json.clone())).collect();
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(all))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    progress(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(correct)
}

// ---------------------------------------------------------------------------------------------
// What is seeded

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    /// `order.created` posted to the webhook by this process.
    Webhook,
    /// A pickup order whose delivery window has passed: the deadline sweep flags it.
    Late,
    /// Placed through the simulator (Kuper knows it), then moved on with REST actions.
    Simulator(Fate),
}

/// Where the REST actions take an order placed through the simulator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    InWork,
    Ready,
    Canceled,
}

impl Fate {
    fn of(k: usize) -> Fate {
        match k % 10 {
            0 => Fate::Canceled,
            1..=3 => Fate::Ready,
            _ => Fate::InWork,
        }
    }

    fn actions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Fate::InWork => &[("start-assembly", "{}")],
            Fate::Ready => &[("start-assembly", "{}"), ("assembled", "{}"), ("ready", "{}")],
            Fate::Canceled => &[("cancel", r#"{"reason":"out_of_stock"}"#)],
        }
    }

    fn state(self) -> &'static str {
        match self {
            Fate::InWork => "in_work",
            Fate::Ready => "ready",
            Fate::Canceled => "canceled",
        }
    }
}

/// One order as planned before it is sent (deterministic in `n`).
#[derive(Clone, Debug)]
struct Plan {
    route: Route,
    pickup: bool,
    store: &'static str,
    /// What this process puts in the webhook (the simulator chooses its own customers).
    name: String,
    phone: String,
    positions: usize,
}

fn plan(n: usize, late_count: usize) -> Plan {
    let mut rng = Rng::new(0xB0A2D ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let route = if n < late_count {
        Route::Late
    } else if n % 10 == 5 {
        Route::Simulator(Fate::of(n / 10))
    } else {
        Route::Webhook
    };
    let pickup = route == Route::Late || rng.next_u64() % 100 < PICKUP_PERCENT;
    let total: u64 = STORES.iter().map(|(_, w)| w).sum();
    let mut pick = rng.next_u64() % total;
    let mut store = STORES[0].0;
    for (s, w) in STORES {
        if pick < w {
            store = s;
            break;
        }
        pick -= w;
    }
    let female = rng.next_u64().is_multiple_of(2);
    let first = if female { FIRST_FEMALE } else { FIRST_MALE };
    let first = first[(rng.next_u64() % first.len() as u64) as usize];
    let surname = SURNAMES[(rng.next_u64() % SURNAMES.len() as u64) as usize];
    let surname = if female { format!("{surname}а") } else { surname.to_string() };
    let name = match rng.next_u64() % 20 {
        0 => first.to_string(),
        1 | 2 => format!("{surname} {first}"),
        _ => format!("{first} {surname}"),
    };
    Plan {
        route,
        pickup,
        store,
        name,
        phone: phone_of(n),
        positions: 1 + (rng.next_u64() % MAX_POSITIONS as u64) as usize,
    }
}

/// `+79XXXXXXXXX`, a different one for every `n` below 10⁹: the multiplier is odd and not a
/// multiple of 5, so it permutes the residues modulo 10⁹ (and the numbers do not look serial).
fn phone_of(n: usize) -> String {
    let k = ((n as u64).wrapping_mul(7_919_000_023) + 12_345_678) % 1_000_000_000;
    format!("+79{k:09}")
}

/// The same number as a person would type it, in another format than the stored one.
fn phone_typed(stored: &str, variant: u64) -> String {
    let digits: String = stored.chars().filter(char::is_ascii_digit).collect();
    let d = &digits[digits.len().saturating_sub(10)..];
    if d.len() < 10 {
        return stored.to_string();
    }
    let (a, b, c, e) = (&d[..3], &d[3..6], &d[6..8], &d[8..]);
    match variant % 4 {
        0 => format!("8 ({a}) {b}-{c}-{e}"),
        1 => format!("+7 {a} {b} {c} {e}"),
        2 => format!("{a}-{b}-{c}-{e}"),
        _ => format!("8{d}"),
    }
}

/// An order as it is in the gateway once seeding is over.
#[derive(Clone, Debug)]
struct Seeded {
    /// Kuper's id (`originalOrderId`), what the board links to.
    reference: String,
    name: String,
    phone: String,
    store: &'static str,
    state: &'static str,
    late: bool,
}

/// `order.created` bodies: the fixture with 1..=MAX_POSITIONS positions and correct totals,
/// for Kuper delivery and for pickup, dated now.
struct Bodies {
    delivery: Vec<Value>,
    pickup: Vec<Value>,
    now: chrono::DateTime<chrono::FixedOffset>,
}

impl Bodies {
    fn new() -> Result<Bodies> {
        let moscow = chrono::FixedOffset::east_opt(3 * 3600).ok_or_else(|| anyhow!("bad offset"))?;
        let now = chrono::Utc::now().with_timezone(&moscow);
        let mut delivery = Vec::new();
        let mut pickup = Vec::new();
        for n in 1..=MAX_POSITIONS {
            let v: Value = serde_json::from_str(&body::order_created_template_at(n, now)?)?;
            let mut p = v.clone();
            let payload = p["payload"].as_object_mut().ok_or_else(|| anyhow!("the fixture has no payload"))?;
            payload.insert("shipmentMethod".into(), json!("pickup"));
            payload.remove("address");
            payload.insert("paymentMethods".into(), json!(["cash_desk"]));
            delivery.push(v);
            pickup.push(p);
        }
        Ok(Bodies { delivery, pickup, now })
    }

    fn body(&self, p: &Plan, reference: &str) -> Result<String> {
        let templates = if p.pickup { &self.pickup } else { &self.delivery };
        let mut v = templates
            .get(p.positions.saturating_sub(1))
            .cloned()
            .ok_or_else(|| anyhow!("no template with {} positions", p.positions))?;
        let at = |d: chrono::DateTime<chrono::FixedOffset>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        if p.route == Route::Late {
            // Placed three hours ago, to be collected one to two hours ago: missed.
            v["timestamp"] = json!(at(self.now - chrono::Duration::hours(3)));
            v["payload"]["delivery"]["expectedFrom"] = json!(at(self.now - chrono::Duration::hours(2)));
            v["payload"]["delivery"]["expectedTo"] = json!(at(self.now - chrono::Duration::hours(1)));
        }
        let payload = v["payload"].as_object_mut().ok_or_else(|| anyhow!("the fixture has no payload"))?;
        payload.insert("originalOrderId".into(), json!(reference));
        payload.insert("orderUUID".into(), json!(format!("bench:{}", uuid::Uuid::new_v4())));
        payload.insert("storeID".into(), json!(p.store));
        payload.insert("customer".into(), json!({"name": p.name, "phone": p.phone}));
        Ok(serde_json::to_string(&v)?)
    }
}

struct Seeding {
    orders: Vec<Seeded>,
    webhooks: usize,
    webhook_latency: Summary,
    via_simulator: usize,
    seconds: f64,
    actions: usize,
    actions_seconds: f64,
    drain_seconds: f64,
}

/// Posts `order.created` for one planned order; the answer must be `200` with `created`.
async fn post_webhook(http: &reqwest::Client, url: &str, body: String) -> Result<()> {
    let resp = http
        .post(url)
        .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let created = serde_json::from_str::<Value>(&text).ok().is_some_and(|v| v["status"] == "created");
    if status != 200 || !created {
        bail!("order.created answered HTTP {status}: {text}");
    }
    Ok(())
}

/// Kuper places an order with the gateway (through its webhook); returns Kuper's id and the
/// customer the simulator chose.
async fn place_through_simulator(ctl: &Ctl, p: &Plan) -> Result<(String, String, String)> {
    let request = json!({
        "target": format!("{}/kuper-webhook", ctl.app),
        "auth": {"basic": format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")},
        "store": p.store,
        "shipmentMethod": if p.pickup { "pickup" } else { "by_courier" },
    });
    let resp = ctl.http.post(format!("{}/sim/v1/orders", ctl.sim)).json(&request).send().await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.context("the simulator's answer is not JSON")?;
    if status != 201 || v["merchantAnswer"]["status"] != 200 || v["check"]["ok"] != true {
        bail!("placing an order through the simulator failed (HTTP {status}): {v}");
    }
    let id = v["originalOrderId"].as_str().ok_or_else(|| anyhow!("no originalOrderId in {v}"))?.to_string();
    let view: Value =
        ctl.http.get(format!("{}/sim/v1/orders/{id}", ctl.sim)).send().await?.error_for_status()?.json().await?;
    let customer = &view["order"]["customer"];
    let text = |k: &str| customer[k].as_str().unwrap_or("").to_string();
    Ok((id, text("name"), text("phone")))
}

async fn act(ctl: &Ctl, reference: &str, action: &str, body: &'static str) -> Result<()> {
    let resp = ctl
        .http
        .post(format!("{}/api/v1/orders/{reference}/{action}", ctl.app))
        .bearer_auth(super::API_KEY)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    if status != 202 {
        bail!("{action} on {reference} answered HTTP {status}: {text}");
    }
    Ok(())
}

/// Runs `work(i)` for i in 0..count on `concurrency` tasks; stops at the first error.
async fn in_parallel<T, F, Fut>(count: usize, concurrency: usize, work: F) -> Result<Vec<(usize, T)>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (next, failed, work) = (next.clone(), failed.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    return Ok(out);
                }
                match work(i).await {
                    Ok(v) => out.push((i, v)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.context("a task panicked")??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all)
}

/// Prints how far a long step is, every 10 s, until dropped.
struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    fn start(what: &'static str, total: usize, done: Arc<AtomicUsize>) -> Ticker {
        let started = Instant::now();
        Ticker(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = done.load(Ordering::Relaxed);
                let s = started.elapsed().as_secs_f64();
                progress(format!(
                    "  {what}: {} of {} ({:.0} /s)",
                    thousands(n as f64),
                    thousands(total as f64),
                    n as f64 / s
                ));
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn seed(ctl: &Ctl, count: usize) -> Result<Seeding> {
    let late_count = (count / 50).max(1);
    let bodies = Arc::new(Bodies::new()?);
    let url = Arc::new(format!("{}/kuper-webhook", ctl.app));
    let ctl_arc = Arc::new(Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: ctl.app.clone() });
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let done = Arc::new(AtomicUsize::new(0));
    let ticker = Ticker::start("seeded", count, done.clone());
    let started = Instant::now();
    // The late orders first: they are the oldest in a real database too, and the deadline
    // sweep meets them while the rest is seeded.
    let work = {
        let (bodies, url, ctl, latencies, done) =
            (bodies.clone(), url.clone(), ctl_arc.clone(), latencies.clone(), done.clone());
        move |n: usize| {
            let (bodies, url, ctl, latencies, done) =
                (bodies.clone(), url.clone(), ctl.clone(), latencies.clone(), done.clone());
            async move {
                let p = plan(n, late_count);
                let seeded = match p.route {
                    Route::Simulator(fate) => {
                        let (reference, name, phone) = place_through_simulator(&ctl, &p).await?;
                        Seeded { reference, name, phone, store: p.store, state: fate.state(), late: false }
                    }
                    Route::Webhook | Route::Late => {
                        let reference = body::order_id(n as u64);
                        let payload = bodies.body(&p, &reference)?;
                        let t = Instant::now();
                        post_webhook(&ctl.http, &url, payload).await?;
                        if let Ok(mut l) = latencies.lock() {
                            l.push(t.elapsed());
                        }
                        Seeded {
                            reference,
                            name: p.name,
                            phone: p.phone,
                            store: p.store,
                            state: "created",
                            late: p.route == Route::Late,
                        }
                    }
                };
                done.fetch_add(1, Ordering::Relaxed);
                Ok((seeded, p.route))
            }
        }
    };
    let seeded = in_parallel(count, SEED_CONCURRENCY, work).await?;
    let seconds = started.elapsed().as_secs_f64();
    drop(ticker);
    let webhook_latency = Summary::of(latencies.lock().map(|l| l.clone()).unwrap_or_default());
    let via_simulator = seeded.iter().filter(|(_, (_, r))| matches!(r, Route::Simulator(_))).count();
    progress(format!(
        "seeded {} orders in {seconds:.1} s ({:.0} /s): {} webhooks (p50 {}, p99 {}), {} placed through the simulator",
        thousands(count as f64),
        count as f64 / seconds,
        thousands(webhook_latency.count as f64),
        fmt_ms(webhook_latency.p50),
        fmt_ms(webhook_latency.p99),
        thousands(via_simulator as f64),
    ));

    // The store moves the simulator's orders on, 32 orders at a time, each order's actions in turn.
    let to_move: Vec<(String, Fate)> = seeded
        .iter()
        .filter_map(|(_, (s, r))| match r {
            Route::Simulator(f) => Some((s.reference.clone(), *f)),
            _ => None,
        })
        .collect();
    let actions: usize = to_move.iter().map(|(_, f)| f.actions().len()).sum();
    let to_move = Arc::new(to_move);
    let done = Arc::new(AtomicUsize::new(0));
    let ticker = Ticker::start("actions", actions, done.clone());
    let t = Instant::now();
    let work = {
        let (to_move, ctl, done) = (to_move.clone(), ctl_arc.clone(), done.clone());
        move |i: usize| {
            let (to_move, ctl, done) = (to_move.clone(), ctl.clone(), done.clone());
            async move {
                let (reference, fate) = to_move.get(i).cloned().ok_or_else(|| anyhow!("no order {i}"))?;
                for (action, body) in fate.actions() {
                    act(&ctl, &reference, action, body).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    };
    in_parallel(to_move.len(), SEED_CONCURRENCY, work).await?;
    let actions_seconds = t.elapsed().as_secs_f64();
    drop(ticker);
    progress(format!("{actions} actions in {actions_seconds:.1} s; waiting for the notifications to reach Kuper"));
    let t = Instant::now();
    ctl.wait_drained(Duration::from_secs(600)).await?;
    let drain_seconds = t.elapsed().as_secs_f64();
    Ok(Seeding {
        orders: seeded.into_iter().map(|(_, (s, _))| s).collect(),
        webhooks: webhook_latency.count,
        webhook_latency,
        via_simulator,
        seconds,
        actions,
        actions_seconds,
        drain_seconds,
    })
}

// ---------------------------------------------------------------------------------------------
// The operator

/// `kuper-bridge --config PATH operators add bench --role admin`, the password on stdin.
async fn add_operator(bin: &Path, dir: &Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config")
        .arg(dir.join("kuper-bridge.toml"))
        .args(["operators", "add", OPERATOR, "--role", "admin"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KUPER_BRIDGE_") {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot run {} operators add", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that refuses before reading closes stdin first: its exit status says why.
        let _ = stdin.write_all(format!("{OPERATOR_PASSWORD}\n").as_bytes()).await;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "`kuper-bridge operators add {OPERATOR} --role admin` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Logs in through the form; returns the `Cookie` header value of the session.
async fn login(http: &reqwest::Client, base: &str) -> Result<String> {
    let resp = http
        .post(format!("{base}/ui/login"))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("login={OPERATOR}&password={OPERATOR_PASSWORD}"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let token = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next()?.trim().strip_prefix("kb_session=").map(str::to_string));
    match token {
        Some(t) if (300..400).contains(&status) && !t.is_empty() => Ok(format!("kb_session={t}")),
        _ => bail!("logging in at {base}/ui/login answered HTTP {status} without a kb_session cookie"),
    }
}

// ---------------------------------------------------------------------------------------------
// The pages and what each answer must hold

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Board,
    State,
    Attention,
    Store,
    Phone,
    Surname,
    KuperId,
    Deep,
    Rows,
    Order,
}

impl Page {
    const ALL: [Page; 10] = [
        Page::Board,
        Page::State,
        Page::Attention,
        Page::Store,
        Page::Phone,
        Page::Surname,
        Page::KuperId,
        Page::Deep,
        Page::Rows,
        Page::Order,
    ];

    fn slug(self) -> &'static str {
        match self {
            Page::Board => "board",
            Page::State => "state",
            Page::Attention => "attention",
            Page::Store => "store",
            Page::Phone => "phone",
            Page::Surname => "surname",
            Page::KuperId => "kuper_id",
            Page::Deep => "deep_page",
            Page::Rows => "rows",
            Page::Order => "order_page",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Page::Board => "board, first page `/ui/orders`",
            Page::State => "board by state `?state=in_work`",
            Page::Attention => "needs attention `?attention=1`",
            Page::Store => "board by store `?store=…`",
            Page::Phone => "search: a phone in another format `?q=8 (9xx) …`",
            Page::Surname => "search: part of a surname `?q=Смирн`",
            Page::KuperId => "search: a Kuper id `?q=H…`",
            Page::Deep => "a deep page `?before=…`",
            Page::Rows => "live update `/ui/orders/rows`",
            Page::Order => "order page `/ui/orders/{ref}`",
        }
    }
}

/// What an answer must contain.
#[derive(Clone, Debug)]
enum Expect {
    /// A board page: this many rows, every row in this state (if any), needing attention (if
    /// set), the named order among them (if any), every name containing this text (if any);
    /// the "all" count exactly `total`, or at least `total` when `at_least`.
    Board(BoardExpect),
    /// The table body alone.
    Fragment { rows: usize },
    /// An order's page.
    Order { reference: String, state: &'static str },
}

#[derive(Clone, Debug, Default)]
struct BoardExpect {
    rows: usize,
    state: Option<&'static str>,
    state_count: Option<usize>,
    attention: bool,
    contains: Option<String>,
    name_part: Option<String>,
    total: usize,
    at_least: bool,
}

#[derive(Clone, Debug)]
struct Request {
    path: String,
    expect: Expect,
}

/// Percent-encodes a query value (everything but the unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name as the board compares it: lower case, `ё` as `е`.
fn fold(name: &str) -> String {
    name.to_lowercase().replace('ё', "е")
}

/// What the board's name search finds: a name with a word that starts with the typed text
/// (words split at anything but a letter or digit).
fn has_word_starting(folded_name: &str, folded_part: &str) -> bool {
    folded_name.split(|c: char| !c.is_alphanumeric()).any(|w| w.starts_with(folded_part))
}

/// The part of a surname a person types: its first five letters, as written.
fn surname_part(name: &str) -> Option<String> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let surname = words.iter().find(|w| SURNAMES.iter().any(|s| w.starts_with(s)))?;
    Some(surname.chars().take(5).collect())
}

/// The seeded world, as the requests' expectations need it.
struct World<'a> {
    orders: &'a [Seeded],
    /// Each order's name in lower case, as the gateway stores it for the search.
    lower_names: Vec<String>,
    by_state: HashMap<&'static str, usize>,
    by_store: HashMap<&'static str, usize>,
    late: usize,
    /// The gateway's id of the newest order (from the board's next-page link), for cursors.
    newest_id: i64,
}

impl World<'_> {
    fn requests(&self, page: Page, count: usize, seed: u64) -> Vec<Request> {
        let mut rng = Rng::new(seed);
        let n = self.orders.len();
        let full = |total: usize| total.min(PAGE_SIZE);
        let board = |total: usize| Expect::Board(BoardExpect { rows: full(total), total, ..Default::default() });
        (0..count)
            .map(|i| {
                let random = self.orders[(rng.next_u64() % n as u64) as usize].clone();
                match page {
                    Page::Board => Request { path: "/ui/orders".into(), expect: board(n) },
                    Page::State => {
                        let count = self.by_state.get("in_work").copied().unwrap_or(0);
                        Request {
                            path: "/ui/orders?state=in_work".into(),
                            expect: Expect::Board(BoardExpect {
                                rows: full(count),
                                state: Some("in_work"),
                                state_count: Some(count),
                                total: n,
                                ..Default::default()
                            }),
                        }
                    }
                    Page::Attention => Request {
                        path: "/ui/orders?attention=1".into(),
                        expect: Expect::Board(BoardExpect {
                            rows: full(self.late),
                            attention: true,
                            total: self.late,
                            at_least: true,
                            ..Default::default()
                        }),
                    },
                    Page::Store => {
                        let store = STORES[i % STORES.len()].0;
                        let count = self.by_store.get(store).copied().unwrap_or(0);
                        Request { path: format!("/ui/orders?store={store}"), expect: board(count) }
                    }
                    Page::Phone => Request {
                        path: format!("/ui/orders?q={}", encode(&phone_typed(&random.phone, rng.next_u64()))),
                        expect: Expect::Board(BoardExpect {
                            rows: 0,
                            contains: Some(random.reference.clone()),
                            total: 1,
                            at_least: true,
                            ..Default::default()
                        }),
                    },
                    Page::Surname => {
                        let part = surname_part(&random.name)
                            .or_else(|| self.orders.iter().find_map(|o| surname_part(&o.name)))
                            .unwrap_or_else(|| "Иван".into());
                        let lower = fold(&part);
                        let total = self.lower_names.iter().filter(|n| has_word_starting(n, &lower)).count();
                        Request {
                            path: format!("/ui/orders?q={}", encode(&part)),
                            expect: Expect::Board(BoardExpect {
                                rows: full(total),
                                name_part: Some(lower),
                                total,
                                ..Default::default()
                            }),
                        }
                    }
                    Page::KuperId => Request {
                        path: format!("/ui/orders?q={}", encode(&random.reference)),
                        expect: Expect::Board(BoardExpect {
                            rows: 1,
                            contains: Some(random.reference.clone()),
                            total: 1,
                            ..Default::default()
                        }),
                    },
                    Page::Deep => {
                        // Somewhere in the older half of the orders.
                        let low = (PAGE_SIZE as i64 * 2).min(self.newest_id);
                        let span = (self.newest_id / 2 - low).max(1) as u64;
                        let before = low + (rng.next_u64() % span) as i64;
                        Request { path: format!("/ui/orders?before={before}"), expect: board(n) }
                    }
                    Page::Rows => {
                        Request { path: "/ui/orders/rows".into(), expect: Expect::Fragment { rows: full(n) } }
                    }
                    Page::Order => Request {
                        path: format!("/ui/orders/{}", encode(&random.reference)),
                        expect: Expect::Order { reference: random.reference.clone(), state: random.state },
                    },
                }
            })
            .collect()
    }
}

/// The number after `data-count-state="{state}">` (the board's per-state chips; "" is all).
fn chip_count(html: &str, state: &str) -> Option<usize> {
    let marker = format!("data-count-state=\"{state}\">");
    let at = html.find(&marker)? + marker.len();
    let digits: String = html[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The board's rows: each row's reference and its HTML (up to the next row).
fn board_rows(html: &str) -> Vec<(&str, &str)> {
    const MARK: &str = " data-order=\"";
    let starts: Vec<usize> = html.match_indices(MARK).map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .filter_map(|(k, &i)| {
            let rest = &html[i + MARK.len()..];
            let reference = &rest[..rest.find('"')?];
            let end = starts.get(k + 1).copied().unwrap_or(html.len());
            Some((reference, &html[i..end]))
        })
        .collect()
}

/// The text inside `<span class="name">…</span>` of a row.
fn row_name(row: &str) -> Option<&str> {
    const MARK: &str = "class=\"name\">";
    let at = row.find(MARK)? + MARK.len();
    let rest = &row[at..];
    Some(&rest[..rest.find('<')?])
}

/// Every `data-state="…"` value of a page, in order.
fn states(html: &str) -> Vec<&str> {
    const MARK: &str = "data-state=\"";
    html.match_indices(MARK)
        .filter_map(|(i, _)| {
            let rest = &html[i + MARK.len()..];
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

/// Why an answer is wrong, if it is.
fn check(expect: &Expect, html: &str) -> Option<String> {
    match expect {
        Expect::Board(BoardExpect { rows, state, state_count, attention, contains, name_part, total, at_least }) => {
            let found = board_rows(html);
            if contains.is_none() && found.len() != *rows {
                return Some(format!("{} rows, expected {rows}", found.len()));
            }
            if let Some(reference) = contains {
                if !found.iter().any(|(r, _)| r == reference) {
                    return Some(format!("order {reference} is not among the {} rows", found.len()));
                }
                if !*at_least && found.len() != 1 {
                    return Some(format!("{} rows, expected only {reference}", found.len()));
                }
            }
            match chip_count(html, "") {
                Some(all) if (*at_least && all >= *total) || all == *total => {}
                Some(all) => return Some(format!("the \"all\" count says {all}, expected {total}")),
                None => return Some("no \"all\" count (data-count-state=\"\")".into()),
            }
            if let Some(state) = state {
                if let Some(bad) = found.iter().find(|(_, row)| !row.contains(&format!("data-state=\"{state}\""))) {
                    return Some(format!("order {} is not {state}", bad.0));
                }
                if let Some(expected) = state_count {
                    let shown = chip_count(html, state);
                    if shown != Some(*expected) {
                        return Some(format!("the {state} count says {shown:?}, expected {expected}"));
                    }
                }
            }
            if *attention {
                if let Some(bad) = found.iter().find(|(_, row)| !row.contains("data-attention=\"")) {
                    return Some(format!("order {} is shown without an attention flag", bad.0));
                }
            }
            if let Some(part) = name_part {
                let bad =
                    found.iter().find(|(_, row)| !row_name(row).is_some_and(|n| has_word_starting(&fold(n), part)));
                if let Some((reference, row)) = bad {
                    return Some(format!("order {reference} ({:?}) does not match {part:?}", row_name(row)));
                }
            }
            None
        }
        Expect::Fragment { rows } => {
            if !html.trim_start().starts_with("<tbody") {
                return Some("not a table body".into());
            }
            let found = board_rows(html).len();
            (found != *rows).then(|| format!("{found} rows, expected {rows}"))
        }
        Expect::Order { reference, state } => {
            if !html.contains(reference.as_str()) {
                return Some(format!("the page does not name {reference}"));
            }
            match states(html).first() {
                Some(s) if s == state => None,
                other => Some(format!("the order's state is {other:?}, expected {state}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

struct Client {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Client {
    /// One request: its time to the last byte and its body, or why the answer is wrong.
    async fn get(&self, r: &Request) -> Result<(Duration, usize), String> {
        let t = Instant::now();
        let resp = self
            .http
            .get(format!("{}{}", self.base, r.path))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", r.path))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("GET {}: {e}", r.path))?;
        let took = t.elapsed();
        if status != 200 {
            let start: String = body.chars().take(300).collect();
            return Err(format!("GET {} answered HTTP {status}: {start}", r.path));
        }
        match check(&r.expect, &body) {
            Some(why) => Err(format!("GET {}: {why}", r.path)),
            None => Ok((took, body.len())),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Figure {
    latency: Summary,
    p90: Duration,
    bytes_mean: f64,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
}

impl Figure {
    fn met(&self) -> bool {
        self.latency.count > 0 && self.latency.p99 < GOAL_P99
    }

    fn to_json(&self) -> Value {
        let mut v = self.latency.to_json();
        v["p90_ms"] = json!(kuper_bridge_bench::stats::ms(self.p90));
        v["bytes_mean"] = json!(self.bytes_mean.round());
        v["errors"] = json!(self.errors);
        v["first_error"] = json!(self.first_error);
        v["rps"] = json!(self.latency.count as f64 / self.wall.as_secs_f64().max(1e-9));
        v["goal_met"] = json!(self.met());
        v
    }
}

async fn measure(client: &Arc<Client>, requests: Vec<Request>, concurrency: usize) -> Figure {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(requests.len().max(1)) {
        let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = requests.get(i) else { return out };
                out.push(client.get(r).await);
            }
        }));
    }
    let mut samples = Vec::new();
    let mut bytes = 0usize;
    let mut figure = Figure::default();
    for t in tasks {
        for r in t.await.unwrap_or_default() {
            match r {
                Ok((took, size)) => {
                    samples.push(took);
                    bytes += size;
                }
                Err(e) => {
                    figure.errors += 1;
                    figure.first_error.get_or_insert(e);
                }
            }
        }
    }
    figure.wall = started.elapsed();
    figure.bytes_mean = bytes as f64 / samples.len().max(1) as f64;
    let mut sorted = samples.clone();
    sorted.sort_unstable();
    figure.p90 = percentile(&sorted, 90.0).unwrap_or_default();
    figure.latency = Summary::of(samples);
    figure
}

/// `perf record -g` of the gateway for 10 s while `requests` are sent one at a time, then
/// the top of `perf report --stdio`, written to `out`.
async fn profile(client: &Arc<Client>, pid: u32, requests: &[Request], out: &Path) -> Result<()> {
    let data = out.with_extension("data");
    let mut perf = tokio::process::Command::new("perf")
        .args(["record", "-g", "-F", "499", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string(), "--", "sleep", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot run perf (is it installed?)")?;
    let until = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while Instant::now() < until && !requests.is_empty() {
        let _ = client.get(&requests[i % requests.len()]).await;
        i += 1;
    }
    let status = perf.wait().await?;
    if !status.success() {
        bail!("perf record failed ({status})");
    }
    // The flat list first (where the time goes), then the call graphs (how it got there).
    let mut text = format!("{i} requests in 10 s\n");
    for (graph, lines) in [("none", 40), ("graph,0.5,caller", 120)] {
        let report = tokio::process::Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--percent-limit", "1", "-g", graph, "-i"])
            .arg(&data)
            .output()
            .await?;
        let out = String::from_utf8_lossy(&report.stdout);
        text.extend(
            out.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).take(lines).map(|l| format!("{l}\n")),
        );
        text.push('\n');
    }
    std::fs::write(out, text)?;
    let _ = std::fs::remove_file(&data);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One backend

struct Report {
    correct: bool,
    json: Value,
}

/// The newest order's id: the board's next-page cursor is the 50th newest.
fn newest_id(first_page: &str) -> Option<i64> {
    const MARK: &str = "before=";
    let page_link = first_page.find("data-page=\"next\"").map(|i| &first_page[..i]).unwrap_or(first_page);
    let at = page_link.rfind(MARK)? + MARK.len();
    let digits: String = page_link[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<i64>().ok().map(|id| id + PAGE_SIZE as i64 - 1)
}

async fn run_backend(args: &BoardArgs, bin: &Path, backend: Backend) -> Result<Report> {
    let machine = machine();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = kuper_bridge_bench::scratch::ScratchDir::new_in(&parent, "kuper-bridge-board-")
        .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))?;
    let dir = tmp.path().to_path_buf();
    let db = Database::create(backend, &dir, "kb_board").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
    let sim_url = sim.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(SEED_CONCURRENCY * 2)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let result = match spawn_gateway(bin, &dir, &db.url, &sim_url, &http).await {
        Ok(mut gw) => {
            progress(format!(
                "gateway pid {} at {} on {} ({}), simulator at {sim_url}",
                gw.pid,
                gw.url,
                backend.label(),
                db.pg_name().map(str::to_string).unwrap_or_else(|| dir.display().to_string())
            ));
            let r = run_gateway(args, bin, backend, &mut gw, &http, &sim_url, &dir).await;
            let r = r.map_err(|e| e.context(format!("gateway log tail:\n{}", gw.log_tail())));
            let _ = gw.child.kill().await;
            r
        }
        Err(e) => Err(e),
    };
    sim.shutdown().await;
    crate::keep_or_drop(args.keep, tmp, &db).await;
    let (mut json, correct) = result?;
    json["backend"] = json!(format!("{backend:?}").to_lowercase());
    json["date"] = json!(date);
    json["machine"] = machine;
    json["machine"]["loadavg_end"] = json!(loadavg());
    print_report(&json, backend);
    Ok(Report { correct, json })
}

async fn vacuum_analyze(url: &str) -> Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut c).await?;
    let _ = c.close().await;
    Ok(())
}

async fn run_gateway(
    args: &BoardArgs,
    bin: &Path,
    backend: Backend,
    gw: &mut Gateway,
    http: &reqwest::Client,
    sim_url: &str,
    dir: &Path,
) -> Result<(Value, bool)> {
    add_operator(bin, dir).await?;
    let ctl = Ctl { http: http.clone(), sim: sim_url.to_string(), app: gw.url.clone() };
    let empty_db = gw.db_size().await;
    let seeding = seed(&ctl, args.orders).await?;
    gw.check_alive()?;
    let dead: Value = http
        .get(format!("{}/api/v1/outbox?status=dead&limit=1", gw.url))
        .bearer_auth(super::API_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let dead_letters = dead["records"].as_array().map_or(0, Vec::len);
    let vacuumed = if backend == Backend::Postgres && !args.no_vacuum {
        // Without statistics the planner misjudges every filtered query of the board, and
        // without a visibility map no count is index-only: a server with autovacuum on has
        // both by the time 100,000 orders are in. The test server has it off.
        let t = Instant::now();
        vacuum_analyze(&gw.db_url).await?;
        progress(format!("VACUUM ANALYZE in {:.1} s", t.elapsed().as_secs_f64()));
        true
    } else {
        false
    };

    let cookie = login(http, &gw.url).await?;
    let client = Arc::new(Client { http: http.clone(), base: gw.url.clone(), cookie });
    let orders = &seeding.orders;
    let late = orders.iter().filter(|o| o.late).count();
    let mut by_state: HashMap<&'static str, usize> = HashMap::new();
    let mut by_store: HashMap<&'static str, usize> = HashMap::new();
    for o in orders {
        *by_state.entry(o.state).or_default() += 1;
        *by_store.entry(o.store).or_default() += 1;
    }

    // The deadline sweep runs every 15 s over every open order; the late orders are
    // flagged by the first one that meets them.
    progress(format!("waiting for the deadline sweep to flag the {late} late pickup orders"));
    let wait_from = Instant::now();
    loop {
        let resp = http
            .get(format!("{}/ui/orders?attention=1", gw.url))
            .header(reqwest::header::COOKIE, &client.cookie)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let html = resp.text().await?;
        if status != 200 {
            bail!("GET /ui/orders?attention=1 answered HTTP {status}: {}", html.chars().take(300).collect::<String>());
        }
        let flagged = chip_count(&html, "").unwrap_or(0);
        if flagged >= late {
            progress(format!("{flagged} orders need attention after {:.1} s", wait_from.elapsed().as_secs_f64()));
            break;
        }
        if wait_from.elapsed() > Duration::from_secs(180) {
            bail!("after 180 s only {flagged} of the {late} late orders need attention on the board");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let idle_cpu = if args.orders >= IDLE_CPU_MIN_ORDERS {
        progress(format!(
            "gateway CPU over {} s idle (the deadline sweep over the open orders)",
            SWEEP_WINDOW.as_secs()
        ));
        let c0 = gw.cpu_secs().unwrap_or(0.0);
        tokio::time::sleep(SWEEP_WINDOW).await;
        Some((gw.cpu_secs().unwrap_or(0.0) - c0) / SWEEP_WINDOW.as_secs_f64())
    } else {
        None
    };

    let first =
        http.get(format!("{}/ui/orders", gw.url)).header(reqwest::header::COOKIE, &client.cookie).send().await?;
    let first = first.text().await?;
    let newest = newest_id(&first).ok_or_else(|| anyhow!("the board's first page has no next-page link"))?;
    let lower_names = orders.iter().map(|o| fold(&o.name)).collect();
    let world =
        World { orders, lower_names, by_state: by_state.clone(), by_store: by_store.clone(), late, newest_id: newest };

    let rss_before = gw.rss();
    let cpu_before = gw.cpu_secs().unwrap_or(0.0);
    let mut figures: Vec<(Page, Figure, Figure, String)> = Vec::new();
    let mut correct = dead_letters == 0;
    for (k, page) in Page::ALL.into_iter().enumerate() {
        let seq = world.requests(page, args.requests, 1000 + k as u64);
        let conc = world.requests(page, args.requests, 2000 + k as u64);
        // Other work on the machine shows in the tail: each page's table row says how much.
        let load = loadavg();
        let one = measure(&client, seq, 1).await;
        let many = measure(&client, conc, args.concurrency).await;
        progress(format!(
            "{:<10} 1 at a time p50 {} p99 {} · {} at once p50 {} p99 {} · load average {load}{}",
            page.slug(),
            fmt_ms(one.latency.p50),
            fmt_ms(one.latency.p99),
            args.concurrency,
            fmt_ms(many.latency.p50),
            fmt_ms(many.latency.p99),
            match one.first_error.as_ref().or(many.first_error.as_ref()) {
                Some(e) => format!(" · WRONG: {e}"),
                None => String::new(),
            }
        ));
        correct &= one.errors == 0 && many.errors == 0;
        figures.push((page, one, many, load));
    }
    let cpu_measure = gw.cpu_secs().unwrap_or(0.0) - cpu_before;

    let mut profiles = serde_json::Map::new();
    if let Some(out_dir) = &args.perf {
        std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
        for (k, (page, one, _, _)) in figures.iter().enumerate() {
            if one.met() {
                continue;
            }
            let backend_slug = format!("{backend:?}").to_lowercase();
            let out = out_dir.join(format!("perf-{backend_slug}-{}.txt", page.slug()));
            progress(format!("profiling {} for 10 s → {}", page.slug(), out.display()));
            let requests = world.requests(*page, 200, 3000 + k as u64);
            match profile(&client, gw.pid, &requests, &out).await {
                Ok(()) => {
                    profiles.insert(page.slug().into(), json!(out.display().to_string()));
                }
                Err(e) => progress(format!("profiling {} failed: {e:#}", page.slug())),
            }
        }
    }

    let db_size = gw.db_size().await;
    let mut pages = serde_json::Map::new();
    for (page, one, many, load) in &figures {
        pages.insert(
            page.slug().into(),
            json!({"label": page.label(), "loadavg": load, "sequential": one.to_json(), "concurrent": many.to_json()}),
        );
    }
    let json = json!({
        "orders": orders.len(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "goal_p99_ms": GOAL_P99.as_millis() as u64,
        "seeding": {
            "seconds": seeding.seconds,
            "rate": orders.len() as f64 / seeding.seconds,
            "webhooks": seeding.webhooks,
            "webhook_latency": seeding.webhook_latency.to_json(),
            "via_simulator": seeding.via_simulator,
            "actions": seeding.actions,
            "actions_seconds": seeding.actions_seconds,
            "drain_seconds": seeding.drain_seconds,
            "dead_letters": dead_letters,
        },
        "states": by_state,
        "stores": by_store,
        "late": late,
        "vacuum_analyze": vacuumed,
        "newest_id": newest,
        "pages": pages,
        "profiles": profiles,
        "rss_mib": {"before_pages": mib(rss_before), "after_pages": mib(gw.rss()), "peak": mib(gw.peak_rss())},
        "cpu_during_pages_s": cpu_measure,
        "idle_cpu_per_s": idle_cpu,
        "db_bytes": {"empty": empty_db.total, "total": db_size.total, "part": db_size.part},
    });
    Ok((json, correct))
}

// ---------------------------------------------------------------------------------------------
// Output

fn print_report(j: &Value, backend: Backend) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let m = &j["machine"];
    println!();
    println!(
        "kuper-bridge console benchmark · {} · {} · {} orders · {} requests per page · {} × {} · kernel {} · load average {} → {}",
        j["date"].as_str().unwrap_or("?"),
        backend.label(),
        thousands(f(&j["orders"])),
        j["requests"],
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
    );
    println!();
    println!("| page | in flight | p50 | p90 | p99 | max | size | p99 < {} ms | load average |", GOAL_P99.as_millis());
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for page in Page::ALL {
        let p = &j["pages"][page.slug()];
        for (key, flight) in [("sequential", "1".to_string()), ("concurrent", j["concurrency"].to_string())] {
            let v = &p[key];
            let ms = |k: &str| fmt_ms(Duration::from_secs_f64(f(&v[k]).max(0.0) / 1e3));
            let wrong = v["errors"].as_u64().unwrap_or(0);
            let verdict = if wrong > 0 {
                format!("WRONG ({wrong} answers)")
            } else {
                mark(v["goal_met"].as_bool().unwrap_or(false)).to_string()
            };
            let first = key == "sequential";
            println!(
                "| {} | {flight} | {} | {} | {} | {} | {:.1} KiB | {verdict} | {} |",
                if first { page.label() } else { "" },
                ms("p50_ms"),
                ms("p90_ms"),
                ms("p99_ms"),
                ms("max_ms"),
                f(&v["bytes_mean"]) / 1024.0,
                if first { p["loadavg"].as_str().unwrap_or("") } else { "" },
            );
        }
    }
    println!();
    let s = &j["seeding"];
    println!(
        "- seeding: {} orders in {:.1} s ({:.0} /s): {} `order.created` posted by 32 connections (p50 {:.2} ms, p99 {:.1} ms), {} placed through the simulator; then {} REST actions in {:.1} s and {:.1} s more until the outbox was empty; dead letters: {}",
        thousands(f(&j["orders"])),
        f(&s["seconds"]),
        f(&s["rate"]),
        thousands(f(&s["webhooks"])),
        f(&s["webhook_latency"]["p50_ms"]),
        f(&s["webhook_latency"]["p99_ms"]),
        thousands(f(&s["via_simulator"])),
        thousands(f(&s["actions"])),
        f(&s["actions_seconds"]),
        f(&s["drain_seconds"]),
        s["dead_letters"],
    );
    println!("- states: {}; late pickup orders (need attention): {}", j["states"], j["late"]);
    if backend == Backend::Postgres {
        let vacuumed = j["vacuum_analyze"].as_bool().unwrap_or(false);
        println!(
            "- {}",
            if vacuumed {
                "`VACUUM ANALYZE` after seeding, before the pages (statistics and visibility map as autovacuum leaves them)"
            } else {
                "no `VACUUM ANALYZE` after seeding (--no-vacuum): no statistics and no visibility map unless autovacuum ran"
            }
        );
    }
    println!(
        "- gateway RSS: {:.1} MiB before the pages, {:.1} MiB after, peak {:.1} MiB; CPU during the pages {:.1} CPU-s",
        f(&j["rss_mib"]["before_pages"]),
        f(&j["rss_mib"]["after_pages"]),
        f(&j["rss_mib"]["peak"]),
        f(&j["cpu_during_pages_s"]),
    );
    match j["idle_cpu_per_s"].as_f64() {
        Some(c) => println!("- gateway CPU idle (deadline sweep every 15 s over the open orders): {c:.3} CPU-s per s"),
        None => println!("- gateway CPU idle: not measured below {} orders", thousands(IDLE_CPU_MIN_ORDERS as f64)),
    }
    let db = &j["db_bytes"];
    let part = match backend {
        Backend::Sqlite => "-wal",
        Backend::Postgres => "tables with indexes and TOAST",
    };
    println!(
        "- database: {:.0} MiB ({part} {:.0} MiB); {:.1} MiB per 1,000 orders",
        f(&db["total"]) / 1024.0 / 1024.0,
        f(&db["part"]) / 1024.0 / 1024.0,
        (f(&db["total"]) - f(&db["empty"])) / 1024.0 / 1024.0 / f(&j["orders"]) * 1000.0,
    );
    if let Some(p) = j["profiles"].as_object().filter(|p| !p.is_empty()) {
        for (page, file) in p {
            println!("- profile of {page}: {}", file.as_str().unwrap_or("?"));
        }
    }
    println!();
}

fn print_side_by_side(reports: &[(Backend, Report)]) {
    println!();
    println!("Console pages, p99 one request at a time (and with {} in flight):", reports[0].1.json["concurrency"]);
    println!();
    let header: Vec<String> = reports.iter().map(|(b, _)| b.label().to_string()).collect();
    println!("| page | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(reports.len()));
    for page in Page::ALL {
        let cells: Vec<String> = reports
            .iter()
            .map(|(_, r)| {
                let p = &r.json["pages"][page.slug()];
                let ms =
                    |k: &str| fmt_ms(Duration::from_secs_f64(p[k]["p99_ms"].as_f64().unwrap_or(0.0).max(0.0) / 1e3));
                format!(
                    "{} ({}) {}",
                    ms("sequential"),
                    ms("concurrent"),
                    mark(p["sequential"]["goal_met"].as_bool().unwrap_or(false))
                )
            })
            .collect();
        println!("| {} | {} |", page.label(), cells.join(" | "));
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_distinct_and_typed_in_other_formats() {
        let phones: std::collections::HashSet<String> = (0..200_000).map(phone_of).collect();
        assert_eq!(phones.len(), 200_000);
        let p = phone_of(7);
        assert!(p.starts_with("+79") && p.len() == 12, "{p}");
        for v in 0..4 {
            let typed = phone_typed(&p, v);
            assert_ne!(typed, p);
            let digits: String = typed.chars().filter(char::is_ascii_digit).collect();
            assert!(digits.ends_with(&p[2..]), "{typed} is not {p}");
        }
    }

    #[test]
    fn plans_mix_routes_stores_and_schemes() {
        let plans: Vec<Plan> = (0..10_000).map(|n| plan(n, 200)).collect();
        assert!(plans[..200].iter().all(|p| p.route == Route::Late && p.pickup));
        let sim = plans.iter().filter(|p| matches!(p.route, Route::Simulator(_))).count();
        assert!((950..=1000).contains(&sim), "{sim}");
        let pickup = plans.iter().filter(|p| p.pickup).count();
        assert!((2_500..=3_500).contains(&pickup), "{pickup}");
        for (store, _) in STORES {
            assert!(plans.iter().any(|p| p.store == store), "{store}");
        }
        assert!(plans.iter().all(|p| (1..=MAX_POSITIONS).contains(&p.positions)));
        assert_eq!(plan(42, 200).name, plan(42, 200).name, "deterministic");
    }

    #[test]
    fn surname_parts_come_from_the_surname() {
        assert_eq!(surname_part("Мария Смирнова").as_deref(), Some("Смирн"));
        assert_eq!(surname_part("Фёдоров Илья").as_deref(), Some("Фёдор"));
        assert_eq!(surname_part("Олег"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("8 (916) 123-45-67"), "8%20%28916%29%20123-45-67");
        assert_eq!(encode("+7"), "%2B7");
        assert_eq!(encode("Ив"), "%D0%98%D0%B2");
    }

    const PAGE: &str = r#"<nav class="chips"><a class="chip current" href="/ui/orders?">Все <span class="count" data-count-state="">3</span></a><a data-chip="in_work">В работе <span class="count" data-count-state="in_work">2</span></a></nav>
<tbody id="board-rows"><tr class="attention" data-order="H1" data-href="/ui/orders/H1"><td><span class="state state-in_work" data-state="in_work">В работе</span></td><td class="customer"><span class="name">Мария Смирнова</span></td><td><span class="badge" data-attention="deadline_missed">Просрочен</span></td></tr>
<tr data-order="H2" data-href="/ui/orders/H2"><td><span data-state="in_work">В работе</span></td><td class="customer"><span class="name">Иван Петров</span></td></tr></tbody>
<a class="button secondary" href="/ui/orders?before=7" data-page="next" rel="next">Следующие 50</a>"#;

    fn board(rows: usize, total: usize) -> Expect {
        Expect::Board(BoardExpect { rows, total, ..Default::default() })
    }

    #[test]
    fn board_pages_are_read_back() {
        assert_eq!(chip_count(PAGE, ""), Some(3));
        assert_eq!(chip_count(PAGE, "in_work"), Some(2));
        let rows = board_rows(PAGE);
        assert_eq!(rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(), ["H1", "H2"]);
        assert_eq!(row_name(rows[0].1), Some("Мария Смирнова"));
        assert_eq!(newest_id(PAGE), Some(7 + PAGE_SIZE as i64 - 1));
    }

    #[test]
    fn wrong_answers_are_caught() {
        assert_eq!(check(&board(2, 3), PAGE), None);
        assert!(check(&board(2, 4), PAGE).is_some(), "wrong total");
        assert!(check(&board(3, 3), PAGE).is_some(), "wrong number of rows");
        let state = |s: &'static str, n| {
            Expect::Board(BoardExpect { rows: 2, state: Some(s), state_count: Some(n), total: 3, ..Default::default() })
        };
        assert_eq!(check(&state("in_work", 2), PAGE), None);
        assert!(check(&state("in_work", 5), PAGE).is_some());
        assert!(check(&state("ready", 2), PAGE).is_some());
        let attention =
            Expect::Board(BoardExpect { rows: 2, attention: true, total: 1, at_least: true, ..Default::default() });
        assert!(check(&attention, PAGE).unwrap_or_default().contains("H2"), "H2 has no flag");
        let name = |part: &str| {
            Expect::Board(BoardExpect { rows: 2, name_part: Some(part.into()), total: 3, ..Default::default() })
        };
        assert!(check(&name("смирн"), PAGE).is_some(), "Петров does not match");
        let contains = |r: &str, at_least| {
            Expect::Board(BoardExpect { rows: 0, contains: Some(r.into()), total: 1, at_least, ..Default::default() })
        };
        assert_eq!(check(&contains("H2", true), PAGE), None);
        assert!(check(&contains("H9", true), PAGE).is_some());
        assert!(check(&contains("H2", false), PAGE).is_some(), "two rows where one was expected");
        let order = |s: &'static str| Expect::Order { reference: "H1".into(), state: s };
        assert_eq!(check(&order("in_work"), PAGE), None);
        assert!(check(&order("ready"), PAGE).is_some());
        assert!(check(&Expect::Fragment { rows: 2 }, PAGE).is_some(), "not a tbody");
        let fragment = &PAGE[PAGE.find("<tbody").unwrap_or(0)..];
        assert_eq!(check(&Expect::Fragment { rows: 2 }, fragment), None);
    }
}
