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

use crate::cli::{backends_of, BackendChoice, RunArgs};
use crate::ctl::Ctl;
use crate::gateway::{find_gateway, spawn_gateway, Gateway};
use crate::report::mib;
use crate::sampling::{loadavg, machine};
use crate::session::{keep_or_drop, progress};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::stats::{fmt_ms, thousands};
use pages::{chip_count, fold, Page, World};
use print::{print_report, print_side_by_side};
use seed::{add_operator, login, seed};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timing::{measure, profile, Client, Figure};

mod pages;
mod print;
mod seed;
mod timing;

/// The goal for the board and the order page.
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
/// Below this many orders the idle CPU (one deadline sweep) is not measured unless asked for
/// (`--idle-secs`): it would be most of a smoke run's time.
const IDLE_CPU_MIN_ORDERS: usize = 20_000;
/// The deadline sweep's period: the default idle window holds one sweep.
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
#[command(
    mut_arg("json", |a| a.help("Also write every figure as JSON here, keyed by backend")),
    mut_arg("keep", |a| a.help("Keep the temporary directory and the PostgreSQL database (to look at the query plans)"))
)]
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
    /// Measure the gateway's idle CPU (the deadline sweep) over this many seconds, whatever the
    /// number of orders (default: 15 s, and only from 20,000 orders). Compare `--orders 1000`
    /// with `--orders 100000`: the sweep reads only what is due, so the two should agree.
    #[arg(long, value_name = "SECONDS")]
    idle_secs: Option<u64>,
    #[command(flatten)]
    run: RunArgs,
}

pub async fn run(args: BoardArgs) -> Result<bool> {
    if args.orders < 500 {
        bail!("--orders: at least 500 (the board's pages and filters need that many to mean anything)");
    }
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency need positive numbers");
    }
    let bin = find_gateway(args.run.gateway_bin.as_deref())?;
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
    if let Some(path) = &args.run.json {
        let all: serde_json::Map<String, Value> =
            reports.iter().map(|(b, r)| (format!("{b:?}").to_lowercase(), r.json.clone())).collect();
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(all))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    progress(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(correct)
}

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
    let tmp = args.run.scratch("kuper-bridge-board-")?;
    let dir = tmp.path().to_path_buf();
    let db = Database::create(backend, Some(&dir), "kb_board").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
    let sim_url = sim.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(SEED_CONCURRENCY * 2)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let result = match spawn_gateway(bin, &dir, db.url(), &sim_url, &http).await {
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
    keep_or_drop(args.run.keep, tmp, &db).await;
    let (mut json, correct) = result?;
    json["backend"] = json!(backend.slug());
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
    let dead_letters = crate::ctl::outbox_count(http, &gw.url, "dead", 1).await?;
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

    let idle_window = match args.idle_secs {
        Some(secs) => Some(Duration::from_secs(secs.max(1))),
        None => (args.orders >= IDLE_CPU_MIN_ORDERS).then_some(SWEEP_WINDOW),
    };
    let idle_cpu = match idle_window {
        Some(window) => {
            // The orders written in the last sweep interval are judged by the next sweep (every
            // write makes its order due): wait for it, so that the window holds only what an
            // idle gateway does, not the catch-up of the seeding.
            progress(format!(
                "waiting {} s for the sweep to judge the orders written last",
                SWEEP_WINDOW.as_secs() + 1
            ));
            tokio::time::sleep(SWEEP_WINDOW + Duration::from_secs(1)).await;
            progress(format!("gateway CPU over {} s idle (the deadline sweep over the open orders)", window.as_secs()));
            let c0 = gw.cpu_secs().unwrap_or(0.0);
            tokio::time::sleep(window).await;
            Some((gw.cpu_secs().unwrap_or(0.0) - c0) / window.as_secs_f64())
        }
        None => None,
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
            let backend_slug = backend.slug();
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
        "idle_window_s": idle_window.map(|w| w.as_secs_f64()),
        "db_bytes": {"empty": empty_db.total, "total": db_size.total, "part": db_size.part},
    });
    Ok((json, correct))
}
