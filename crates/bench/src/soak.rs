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

use super::{
    find_gateway, free_port, gateway_config, loadavg, machine, progress, API_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER,
};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::procfs;
use kuper_bridge_bench::soak::{
    event_of, pickup_code_for, prom_value, ready_for_courier, stored_tally, tally, Kind, Rng, StoredOrder, StoredTally,
    Tally, COURIER_WEBHOOKS, MERCHANT_STORE, RESTAURANT_STORE,
};
use kuper_bridge_bench::stats::{fmt_ms, thousands, Summary};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

fn at_ms(record: &Value) -> Option<i64> {
    let at = record["at"].as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp_millis())
}

// ---------------------------------------------------------------------------------------------
// The gateway process, killed and restarted

struct GatewayProc {
    bin: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    url: String,
    child: Option<tokio::process::Child>,
    probe: reqwest::Client,
    failed_starts: usize,
    log_level: String,
}

impl GatewayProc {
    fn note(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(f, "{{\"bench\":{}}}", serde_json::to_string(line).unwrap_or_default());
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).arg("serve").current_dir(&self.dir);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KUPER_BRIDGE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", &self.log_level)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().with_context(|| format!("cannot start {}", self.bin.display()))?);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Starts the gateway and waits for `/healthz`; a process that exits during start-up is
    /// started again (counted in `failed_starts`).
    async fn start(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        self.spawn()?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.failed_starts += 1;
                    self.note(&format!("the gateway exited during start-up ({status}); starting it again"));
                    if Instant::now() > deadline {
                        bail!("the gateway keeps exiting at start-up ({status}); its log:\n{}", self.log_tail());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.spawn()?;
                    continue;
                }
            }
            if let Ok(r) = self.probe.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the gateway did not answer /healthz within 60 s; its log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL (tokio's `Child::kill`), and reap it.
    async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("SIGKILL")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct KillStats {
    kills: usize,
    /// SIGKILL → the new process answers /healthz.
    downtime: Vec<Duration>,
    /// /healthz → SIGKILL.
    lives: Vec<Duration>,
}

/// Kills the gateway at seeded random moments and restarts it at once, until `stop`.
async fn supervise(
    mut gw: GatewayProc,
    mean: Duration,
    seed: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(GatewayProc, KillStats)> {
    let mut stats = KillStats::default();
    if mean.is_zero() {
        let _ = stop.wait_for(|s| *s).await;
        return Ok((gw, stats));
    }
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    loop {
        let life = rng.jittered(mean, 0.5);
        tokio::select! {
            _ = tokio::time::sleep(life) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let pid = gw.pid().unwrap_or(0);
        let killed = Instant::now();
        gw.kill9().await?;
        stats.kills += 1;
        stats.lives.push(life);
        gw.note(&format!("kill #{} (SIGKILL to pid {pid}) at {}; restarting", stats.kills, utc(now_ms())));
        gw.start().await?;
        stats.downtime.push(killed.elapsed());
    }
    Ok((gw, stats))
}

// ---------------------------------------------------------------------------------------------
// Kuper and the store, through the restarts

#[derive(Default)]
struct Counters {
    action_calls: AtomicUsize,
    action_retries: AtomicUsize,
    applied_earlier: AtomicUsize,
    /// Retries answered from the Idempotency-Key record (the first attempt was committed).
    replayed: AtomicUsize,
    webhook_calls: AtomicUsize,
    webhook_retries: AtomicUsize,
    created_resends: AtomicUsize,
    redeliveries: AtomicUsize,
    redelivery_failures: AtomicUsize,
    placed: AtomicUsize,
    created: AtomicUsize,
    done: AtomicUsize,
    parked: AtomicUsize,
    failed: AtomicUsize,
}

fn add(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicUsize) -> usize {
    c.load(Ordering::Relaxed)
}

struct Shared {
    http: reqwest::Client,
    sim: String,
    app: String,
    c: Counters,
    problems: Mutex<Vec<String>>,
    /// Scheme A orders waiting for Kuper to accept ready_for_delivery.
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Every order Kuper placed: its kind and the numbers the gateway answered.
    placed: Mutex<Vec<(String, Kind, Vec<String>)>>,
    wait_limit: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn problem(&self, p: String) {
        lock(&self.problems).push(p);
    }

    fn webhook_url(&self) -> String {
        format!("{}/kuper-webhook", self.app)
    }

    /// Kuper sends `event` through the simulator until the gateway answers 200 (a killed
    /// gateway: connection refused or reset → again). Any other answer is a failure.
    async fn kuper_sends(&self, id: &str, event: &str) -> Result<Value> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            add(&self.c.webhook_calls);
            let v: Value = self
                .http
                .post(format!("{}/sim/v1/orders/{id}/webhooks", self.sim))
                .json(&json!({"event": event}))
                .send()
                .await
                .context("the simulator's control API")?
                .json()
                .await?;
            let why = match v["status"].as_u64() {
                Some(200) => return Ok(v["body"].clone()),
                None => v["error"].as_str().unwrap_or("no answer").to_string(),
                Some(s) if s >= 500 => format!("HTTP {s} {}", v["body"]),
                Some(s) => bail!("{event} for {id}: the gateway answered {s}: {}", v["body"]),
            };
            add(&self.c.webhook_retries);
            if Instant::now() > deadline {
                bail!("{event} for {id} never answered 200 in {STEP_DEADLINE:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn gateway_order(&self, id: &str) -> Result<Value> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            match self.http.get(format!("{}/api/v1/orders/{id}", self.app)).bearer_auth(API_KEY).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) if r.status().is_client_error() => bail!("GET order {id}: HTTP {}", r.status()),
                _ if Instant::now() > deadline => bail!("GET order {id}: no answer in {STEP_DEADLINE:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The customer's pickup code checked at the counter, retried through restarts (checking
    /// a code again after an answer was lost finds it valid again).
    async fn verify_pickup_code(&self, id: &str, code: &str) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let url = format!("{}/api/v1/orders/{id}/pickup-code/verify", self.app);
            let why = match self.http.post(url).bearer_auth(API_KEY).json(&json!({ "code": code })).send().await {
                Ok(r) if r.status().as_u16() == 200 => {
                    let v: Value = r.json().await?;
                    if v["valid"] != true {
                        bail!("the pickup code of {id} was not found valid: {v}");
                    }
                    return Ok(());
                }
                Ok(r) if r.status().is_server_error() => {
                    format!("HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Ok(r) => {
                    bail!("pickup-code/verify on {id}: HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("pickup-code/verify on {id}: no answer in {STEP_DEADLINE:?} ({why})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The store's action through the REST API, retried through restarts. A `409` after an
    /// attempt that may have been committed counts as applied when the order's `notified`
    /// list holds the action's event.
    async fn act(&self, id: &str, action: &str, body: &Value) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        let mut in_doubt = false;
        loop {
            add(&self.c.action_calls);
            let url = format!("{}/api/v1/orders/{id}/{action}", self.app);
            // One key for every attempt of this action: a retry after a lost answer is replayed.
            let key = format!("soak-{id}-{action}");
            let sent = self.http.post(url).bearer_auth(API_KEY).header("idempotency-key", key).json(body).send().await;
            let why = match sent {
                Ok(r) if r.status().as_u16() == 202 => {
                    if r.headers().contains_key("idempotent-replayed") {
                        add(&self.c.replayed);
                    }
                    return Ok(());
                }
                Ok(r) if r.status().as_u16() == 409 && in_doubt => {
                    let refusal = r.text().await.unwrap_or_default();
                    let order = self.gateway_order(id).await?;
                    let event = event_of(action);
                    if order["notified"].as_array().is_some_and(|n| n.iter().any(|e| e == event)) {
                        add(&self.c.applied_earlier);
                        return Ok(());
                    }
                    bail!("{action} on {id}: 409 {refusal}; {event} is not in notified {}", order["notified"]);
                }
                Ok(r) if r.status().is_server_error() => {
                    in_doubt = true;
                    format!("HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Ok(r) => bail!("{action} on {id}: HTTP {} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => {
                    // Refused: the request never reached the gateway. Anything else may have.
                    in_doubt |= !e.is_connect();
                    format!("{e:#}")
                }
            };
            add(&self.c.action_retries);
            if Instant::now() > deadline {
                bail!("{action} on {id} never answered 202 in {STEP_DEADLINE:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kuper's courier can come only once Kuper has every notification up to
    /// ready_for_delivery; waits (without holding a work permit) until it has.
    async fn wait_courier_ready(&self, id: &str, expected: &[&str]) -> Result<()> {
        let deadline = Instant::now() + self.wait_limit;
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            lock(&self.waiters).insert(id.to_string(), tx);
            tokio::select! {
                _ = rx => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    lock(&self.waiters).remove(id);
                    bail!("{id}: Kuper did not get ready_for_delivery within {:?}", self.wait_limit);
                }
            }
            let v: Value = self
                .http
                .get(format!("{}/sim/v1/orders/{id}", self.sim))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let accepted: Vec<&str> =
                v["accepted"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if expected.iter().all(|e| accepted.contains(e)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{id}: Kuper is {} but accepted only {accepted:?}", v["state"]);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn set_numbers(&self, index: usize, numbers: Vec<String>) {
        if let Some(p) = lock(&self.placed).get_mut(index) {
            p.2 = numbers;
        }
    }
}

/// Wakes the waiting scheme A orders whose ready_for_delivery Kuper has accepted, from one
/// `GET /sim/v1/orders` every 250 ms (not one poll per order).
async fn courier_dispatcher(sh: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if lock(&sh.waiters).is_empty() {
            continue;
        }
        let Ok(resp) = sh.http.get(format!("{}/sim/v1/orders", sh.sim)).send().await else { continue };
        let Ok(list) = resp.json::<Vec<Value>>().await else { continue };
        let mut waiters = lock(&sh.waiters);
        for o in &list {
            if ready_for_courier(o["state"].as_str().unwrap_or("")) {
                if let Some(tx) = o["originalOrderId"].as_str().and_then(|id| waiters.remove(id)) {
                    let _ = tx.send(());
                }
            }
        }
    }
}

async fn drive_order(sh: Arc<Shared>, n: usize, permits: Arc<tokio::sync::Semaphore>) {
    let kind = Kind::of(n);
    if let Err(e) = drive(&sh, n, kind, &permits).await {
        add(&sh.c.failed);
        sh.problem(format!("order #{n} ({}): {e:#}", kind.label()));
    }
}

async fn drive(sh: &Shared, n: usize, kind: Kind, permits: &Arc<tokio::sync::Semaphore>) -> Result<()> {
    let mut permit = permits.clone().acquire_owned().await?;
    // Kuper places the order and sends order.created.
    let mut body = kind.params();
    body["target"] = json!(sh.webhook_url());
    body["auth"] = json!({"basic": format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")});
    let v: Value = sh
        .http
        .post(format!("{}/sim/v1/orders", sh.sim))
        .json(&body)
        .send()
        .await
        .context("the simulator's control API")?
        .json()
        .await?;
    let id = v["originalOrderId"].as_str().ok_or_else(|| anyhow!("the simulator placed no order: {v}"))?.to_string();
    let index = {
        let mut placed = lock(&sh.placed);
        placed.push((id.clone(), kind, Vec::new()));
        placed.len() - 1
    };
    add(&sh.c.placed);
    let mut numbers = Vec::new();
    if v["merchantAnswer"]["status"] == 200 {
        numbers.push(v["merchantAnswer"]["body"]["number"].as_str().unwrap_or("").to_string());
    } else {
        // The gateway was down or being killed: Kuper retries order.created.
        add(&sh.c.created_resends);
        let answer = sh.kuper_sends(&id, "order.created").await?;
        numbers.push(answer["number"].as_str().unwrap_or("").to_string());
    }
    add(&sh.c.created);
    // Every fifth order: Kuper delivers order.created twice more, at the same moment.
    if n.is_multiple_of(5) {
        let view: Value = sh.http.get(format!("{}/sim/v1/orders/{id}", sh.sim)).send().await?.json().await?;
        let envelope = json!({"event_type": "order.created", "payload": view["order"]});
        let once = || async {
            let r = sh
                .http
                .post(sh.webhook_url())
                .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
                .json(&envelope)
                .send()
                .await
                .ok()?;
            if r.status().as_u16() != 200 {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            v["number"].as_str().map(str::to_string)
        };
        let (a, b) = tokio::join!(once(), once());
        for r in [a, b] {
            add(&sh.c.redeliveries);
            match r {
                Some(number) => numbers.push(number),
                None => add(&sh.c.redelivery_failures),
            }
        }
    }
    sh.set_numbers(index, numbers);

    for (action, body) in kind.actions() {
        let body = if action == "pickup-code" { json!({"code": pickup_code_for(&id)}) } else { body };
        if action == "delivered" && kind == Kind::B {
            // The customer shows the code at the counter: the hand-over needs it verified.
            sh.verify_pickup_code(&id, &pickup_code_for(&id)).await?;
        }
        sh.act(&id, action, &body).await?;
        if action != "ready" {
            continue;
        }
        if kind.kuper_delivers() {
            drop(permit);
            add(&sh.c.parked);
            let waited = sh.wait_courier_ready(&id, &kind.expected()).await;
            sh.c.parked.fetch_sub(1, Ordering::Relaxed);
            waited?;
            permit = permits.clone().acquire_owned().await?;
            for e in COURIER_WEBHOOKS {
                sh.kuper_sends(&id, e).await?;
            }
        } else {
            sh.kuper_sends(&id, "order.paid").await?;
        }
    }
    drop(permit);
    add(&sh.c.done);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The outage

#[derive(Default, Clone)]
struct OutageReport {
    planned: bool,
    description: String,
    start_ms: i64,
    end_ms: i64,
    placed_at_start: usize,
    placed_during: usize,
    done_during: usize,
    pending_peak: Option<f64>,
    pending_at_end: Option<f64>,
    /// Outage end → no notification queued before the end is still pending at the gateway.
    drained_after: Option<Duration>,
    drain_note: String,
}

async fn metrics(sh: &Shared) -> Option<(f64, f64)> {
    let r = sh.http.get(format!("{}/metrics", sh.app)).bearer_auth(API_KEY).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let text = r.text().await.ok()?;
    Some((
        prom_value(&text, "kuper_bridge_outbox_pending")?,
        prom_value(&text, "kuper_bridge_outbox_oldest_pending_age_seconds")?,
    ))
}

async fn run_outage(sh: Arc<Shared>, plan: Arc<Plan>) -> Result<OutageReport> {
    let mut rep = OutageReport { planned: !plan.outage.is_zero(), ..OutageReport::default() };
    if plan.outage.is_zero() {
        return Ok(rep);
    }
    rep.description = plan.outage_kind.describe(plan.outage);
    while get(&sh.c.placed) < plan.outage_at.max(1) && get(&sh.c.done) + get(&sh.c.failed) < plan.orders {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |body: Value| {
        let sh = sh.clone();
        async move {
            sh.http
                .post(format!("{}/sim/v1/outage", sh.sim))
                .json(&body)
                .send()
                .await?
                .error_for_status()
                .context("POST /sim/v1/outage")?;
            Ok::<_, anyhow::Error>(())
        }
    };
    let total_ms = plan.outage.as_millis() as u64;
    let started = Instant::now();
    rep.start_ms = now_ms();
    rep.placed_at_start = get(&sh.c.placed);
    let done0 = get(&sh.c.done);
    progress(format!("outage: Kuper {} from now ({} orders placed)", rep.description, rep.placed_at_start));
    match plan.outage_kind {
        OutageKind::Status503 => post(json!({"status": 503, "for_ms": total_ms})).await?,
        OutageKind::Hang => post(json!({"hang_ms": total_ms})).await?,
        OutageKind::Mixed => post(json!({"status": 503, "for_ms": total_ms / 2})).await?,
    }
    let end = started + plan.outage;
    let mut switched = plan.outage_kind != OutageKind::Mixed;
    let mut peak: Option<f64> = None;
    while Instant::now() < end {
        if !switched && started.elapsed() >= plan.outage / 2 {
            let rest = end.saturating_duration_since(Instant::now()).as_millis() as u64;
            post(json!({"hang_ms": rest.max(1)})).await?;
            progress(format!("outage: now hanging for {:.1} s", rest as f64 / 1000.0));
            switched = true;
        }
        if let Some((pending, _)) = metrics(&sh).await {
            peak = Some(peak.map_or(pending, |p: f64| p.max(pending)));
        }
        let step = if switched { end } else { started + plan.outage / 2 };
        tokio::time::sleep_until(tokio::time::Instant::from_std(step.min(Instant::now() + Duration::from_millis(500))))
            .await;
    }
    rep.end_ms = rep.start_ms + total_ms as i64;
    rep.placed_during = get(&sh.c.placed) - rep.placed_at_start;
    rep.done_during = get(&sh.c.done) - done0;
    progress(format!(
        "outage over: {} orders placed and {} finished during it; waiting for the backlog to drain",
        rep.placed_during, rep.done_during
    ));
    let deadline = Instant::now() + plan.drain_timeout;
    loop {
        let sent_at = now_ms();
        if let Some((pending, age_s)) = metrics(&sh).await {
            peak = Some(peak.map_or(pending, |p: f64| p.max(pending)));
            if rep.pending_at_end.is_none() {
                rep.pending_at_end = Some(pending);
            }
            // The oldest pending notification was queued after the outage's end (or none is
            // pending): the backlog of the outage is gone.
            let oldest_queued_at = sent_at - (age_s * 1000.0) as i64;
            if pending == 0.0 || oldest_queued_at > rep.end_ms {
                rep.drained_after = Some(Duration::from_millis((now_ms() - rep.end_ms).max(0) as u64));
                rep.drain_note = format!(
                    "{} pending then, the oldest queued {}",
                    pending,
                    if pending == 0.0 {
                        "-".to_string()
                    } else {
                        format!("{:.1} s after the end", (oldest_queued_at - rep.end_ms) as f64 / 1e3)
                    }
                );
                break;
            }
        }
        if Instant::now() > deadline {
            rep.drain_note = format!("not drained {:?} after the outage", plan.drain_timeout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rep.pending_peak = peak;
    if let Some(d) = rep.drained_after {
        progress(format!("outage backlog drained {:.1} s after the outage's end", d.as_secs_f64()));
    }
    Ok(rep)
}

/// From the simulator's log: the notifications refused during the outage, and how long after
/// its end the last of them was accepted (the first non-fault arrival after its last refusal).
fn outage_from_log(log: &[Value], rep: &OutageReport) -> (usize, usize, Option<Duration>) {
    // (order, event) → seq of its last refusal by the outage.
    let mut refused: HashMap<(String, String), u64> = HashMap::new();
    let mut attempts = 0;
    for r in log {
        if r["verdict"] == "fault" && (r["rule"] == "outage" || r["rule"] == "outage_hang") {
            attempts += 1;
            if let (Some(o), Some(e)) = (r["originalOrderId"].as_str(), r["event"].as_str()) {
                let seq = r["seq"].as_u64().unwrap_or(0);
                let last = refused.entry((o.to_string(), e.to_string())).or_insert(seq);
                *last = (*last).max(seq);
            }
        }
    }
    let mut last: Option<i64> = None;
    for r in log {
        if r["verdict"] == "fault" {
            continue;
        }
        let key =
            (r["originalOrderId"].as_str().unwrap_or("").to_string(), r["event"].as_str().unwrap_or("").to_string());
        let seq = r["seq"].as_u64().unwrap_or(0);
        if refused.get(&key).is_some_and(|refused_at| seq > *refused_at) {
            refused.remove(&key);
            if let Some(at) = at_ms(r) {
                last = Some(last.map_or(at, |l| l.max(at)));
            }
        }
    }
    let after = last.map(|l| Duration::from_millis((l - rep.end_ms).max(0) as u64));
    (attempts, refused.len(), after)
}

// ---------------------------------------------------------------------------------------------
// The database

/// Rows and distinct Kuper orders in the `orders` table, and outbox rows by status, read from
/// the database itself.
async fn database_counts(url: &str) -> Result<(i64, i64, BTreeMap<String, i64>)> {
    use sqlx::{Connection, Row};
    const ORDERS: &str =
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(DISTINCT original_order_id) AS BIGINT) AS d FROM orders";
    const OUTBOX: &str = "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM outbox GROUP BY status";
    let mut by_status = BTreeMap::new();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        let r = sqlx::query(ORDERS).fetch_one(&mut c).await?;
        for row in sqlx::query(OUTBOX).fetch_all(&mut c).await? {
            by_status.insert(row.try_get::<String, _>("status")?, row.try_get::<i64, _>("n")?);
        }
        Ok((r.try_get("n")?, r.try_get("d")?, by_status))
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        let r = sqlx::query(ORDERS).fetch_one(&mut c).await?;
        for row in sqlx::query(OUTBOX).fetch_all(&mut c).await? {
            by_status.insert(row.try_get::<String, _>("status")?, row.try_get::<i64, _>("n")?);
        }
        Ok((r.try_get("n")?, r.try_get("d")?, by_status))
    }
}

/// Every order through the REST API, `limit=500` pages following `nextCursor`.
async fn stored_orders(sh: &Shared) -> Result<Vec<StoredOrder>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/orders?limit=500", sh.app);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = sh.http.get(url).bearer_auth(API_KEY).send().await?.error_for_status()?.json().await?;
        for o in v["orders"].as_array().ok_or_else(|| anyhow!("no orders array: {v}"))? {
            out.push(StoredOrder {
                original_order_id: o["originalOrderId"].as_str().unwrap_or("").to_string(),
                number: o["number"].as_str().unwrap_or("").to_string(),
                state: o["state"].as_str().unwrap_or("?").to_string(),
                payment: o["paymentState"].as_str().unwrap_or("?").to_string(),
            });
        }
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

async fn pending_count(sh: &Shared, status: &str, limit: usize) -> Result<usize> {
    let v: Value = sh
        .http
        .get(format!("{}/api/v1/outbox?status={status}&limit={limit}", sh.app))
        .bearer_auth(API_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["records"].as_array().map_or(0, Vec::len))
}

// ---------------------------------------------------------------------------------------------
// The run

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
    let db = Database::create(args.backend, &dir, "kb_soak").await?;
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
        if db.pg.is_some() { db.url.clone() } else { dir.display().to_string() },
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
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&report.json)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                progress(format!("figures written to {}", path.display()));
            }
            Ok(report.ok)
        }
        Err(e) => Err(e),
    };
    if args.keep {
        let kept = tmp.keep();
        progress(format!(
            "kept {}{}",
            kept.display(),
            db.pg.as_ref().map(|(_, n)| format!(" and database {n}")).unwrap_or_default()
        ));
    } else if let Err(e) = db.drop_database().await {
        progress(format!("could not drop the soak database: {e:#}"));
    }
    progress(format!("done in {:.1} s", run_started.elapsed().as_secs_f64()));
    outcome
}

struct Report {
    rows: Vec<(String, String, &'static str)>,
    notes: Vec<String>,
    problems: Vec<String>,
    json: Value,
    ok: bool,
}

async fn soak(plan: &Arc<Plan>, args: &SoakArgs, bin: &Path, dir: &Path, db: &Database) -> Result<Report> {
    // The simulator: Kuper, in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim_config = kuper_bridge_sim::SimConfig { seed: args.seed, ..kuper_bridge_sim::SimConfig::default() };
    let sim = kuper_bridge_sim::start(listener, sim_config).await?;
    let sim_url = sim.base_url();

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    // Production settings except the dispatcher's compressed retry schedule (RELIABILITY.md).
    let extra = format!(
        r#"
[dispatcher]
{dispatcher}
[[stores]]
id = "{MERCHANT_STORE}"
delivery = "merchant"

[[stores]]
id = "{RESTAURANT_STORE}"
delivery = "kuper"
restaurant = true
"#,
        dispatcher = plan.dispatcher_toml(),
    );
    let config = gateway_config(port, &db.url, &sim_url, "soak", &args.log_level, &extra);
    let config_path = dir.join("kuper-bridge.toml");
    std::fs::write(&config_path, &config).with_context(|| format!("cannot write {}", config_path.display()))?;
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).pool_max_idle_per_host(0).build()?;
    let mut gw = GatewayProc {
        bin: bin.to_path_buf(),
        config: config_path,
        dir: dir.to_path_buf(),
        log: dir.join("gateway.log"),
        url: url.clone(),
        child: None,
        probe,
        failed_starts: 0,
        log_level: args.log_level.clone(),
    };
    gw.start().await?;
    progress(format!("gateway pid {} at {url}, simulator at {sim_url}", gw.pid().unwrap_or(0)));

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).tcp_nodelay(true).build()?;
    let sh = Arc::new(Shared {
        http,
        sim: sim_url.clone(),
        app: url.clone(),
        c: Counters::default(),
        problems: Mutex::new(Vec::new()),
        waiters: Mutex::new(HashMap::new()),
        placed: Mutex::new(Vec::with_capacity(plan.orders)),
        wait_limit: plan.outage + plan.drain_timeout,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (courier_stop_tx, courier_stop_rx) = tokio::sync::watch::channel(false);
    let courier = tokio::spawn(courier_dispatcher(sh.clone(), courier_stop_rx));
    let killer = tokio::spawn(supervise(gw, plan.kill_every, args.seed, stop_rx));
    let outage = tokio::spawn(run_outage(sh.clone(), plan.clone()));

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.orders {
        tasks.spawn(drive_order(sh.clone(), n, permits.clone()));
    }
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(r) => r.context("an order task panicked")?,
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if killer.is_finished() {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            progress(format!(
                "{:.0} s: {} placed, {} done, {} waiting for Kuper, {} failed; action retries {}, webhook retries {}",
                started.elapsed().as_secs_f64(),
                get(&sh.c.placed),
                get(&sh.c.done),
                get(&sh.c.parked),
                get(&sh.c.failed),
                get(&sh.c.action_retries),
                get(&sh.c.webhook_retries),
            ));
        }
    }
    let driven = started.elapsed();
    let _ = stop_tx.send(true);
    let (gw, kills) = killer.await.context("the kill supervisor panicked")??;
    tasks.abort_all();
    let _ = courier_stop_tx.send(true);
    let _ = courier.await;
    progress(format!(
        "orders driven in {:.1} s; {} kills; waiting for the outbox to drain",
        driven.as_secs_f64(),
        kills.kills
    ));
    let outage_rep = outage.await.context("the outage task panicked")??;

    // The end: let the outbox drain with the gateway left alone.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + plan.drain_timeout;
    let drained = loop {
        match pending_count(&sh, "pending", 1).await {
            Ok(0) => break true,
            _ if Instant::now() > drain_deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let final_drain = drain_started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kuper's records.
    let log: Vec<Value> =
        sh.http.get(format!("{sim_url}/sim/v1/notifications")).send().await?.error_for_status()?.json().await?;
    let summaries: Vec<Value> =
        sh.http.get(format!("{sim_url}/sim/v1/orders")).send().await?.error_for_status()?.json().await?;
    let placed = lock(&sh.placed).clone();
    let kinds: Vec<(String, Kind)> = placed.iter().map(|(id, k, _)| (id.clone(), *k)).collect();
    let t: Tally = tally(&kinds, &log, &summaries);
    let (refused_attempts, never_accepted, last_refused_after) = outage_from_log(&log, &outage_rep);

    // The gateway's database.
    let answered: Vec<(String, Vec<String>)> =
        placed.iter().map(|(id, _, n)| (id.clone(), n.iter().filter(|x| !x.is_empty()).cloned().collect())).collect();
    let stored = stored_orders(&sh).await?;
    let st: StoredTally = stored_tally(&answered, &stored);
    let (db_rows, db_distinct, outbox_by_status) = database_counts(&db.url).await?;
    let dead = outbox_by_status.get("dead").copied().unwrap_or(0);
    let pending = outbox_by_status.get("pending").copied().unwrap_or(0);
    let skipped = outbox_by_status.get("skipped").copied().unwrap_or(0);
    let sent = outbox_by_status.get("sent").copied().unwrap_or(0);

    let mut gw = gw;
    let rss = gw.pid().and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok());
    let rss_now = rss.as_deref().and_then(|s| procfs::status_bytes(s, "VmRSS"));
    gw.kill9().await.ok();
    sim.shutdown().await;
    // Nothing secret in what the gateway wrote (stdout and stderr of every life, at --log-level).
    let log_text = std::fs::read_to_string(&gw.log).unwrap_or_default();
    let log_lines = log_text.lines().count();
    let leaked: usize =
        [API_KEY, "sim-secret", BASIC_CREDENTIALS_B64].iter().map(|s| log_text.matches(s).count()).sum();

    // ---- verdict
    let client_problems = lock(&sh.problems).clone();
    let failed = get(&sh.c.failed);
    let outage_ok = !outage_rep.planned || outage_rep.drained_after.is_some();
    let kills_ok = plan.kill_every.is_zero() || kills.kills > 0;
    let db_ok = db_rows as usize == placed.len() && db_distinct as usize == placed.len();
    let ok = t.clean()
        && st.clean()
        && leaked == 0
        && db_ok
        && drained
        && pending == 0
        && dead == 0
        && failed == 0
        && outage_ok
        && kills_ok
        && placed.len() == plan.orders;
    let mark = |good: bool| if good { "✓" } else { "✗" };

    let per_kind = t
        .per_kind
        .iter()
        .map(|(k, n)| format!("{} {}", k.label(), thousands(*n as f64)))
        .collect::<Vec<_>>()
        .join(" · ");
    let down = Summary::of(kills.downtime.clone());
    let mean_life = if kills.lives.is_empty() {
        0.0
    } else {
        kills.lives.iter().map(Duration::as_secs_f64).sum::<f64>() / kills.lives.len() as f64
    };
    let mut rows: Vec<(String, String, &'static str)> = vec![
        ("orders placed by Kuper".into(), format!("{} ({per_kind})", thousands(placed.len() as f64)), mark(placed.len() == plan.orders)),
        ("orders finished by the clients".into(), format!("{} (failed {failed})", thousands(get(&sh.c.done) as f64)), mark(failed == 0)),
        ("expected notifications".into(), thousands(t.expected as f64), ""),
        ("delivered (accepted by Kuper)".into(), thousands(t.delivered as f64), mark(t.delivered == t.expected)),
        ("lost".into(), thousands(t.lost as f64), mark(t.lost == 0)),
        (
            "duplicates seen by Kuper (at-least-once resends: `repeat` 422 / `repeat_accepted`; allowed)".into(),
            thousands(t.duplicates as f64),
            "",
        ),
        ("FIFO violations (per order, in Kuper's arrival order)".into(), thousands(t.fifo_violations as f64), mark(t.fifo_violations == 0)),
        ("orders whose accepted sequence is not the expected one".into(), format!("{} (unexpected notifications {})", t.out_of_order, t.unexpected), mark(t.out_of_order == 0 && t.unexpected == 0)),
        (
            "rejected by Kuper (any other rule)".into(),
            format!("{}{}", t.rejected, if t.rejected_rules.is_empty() { String::new() } else { format!(" {:?}", t.rejected_rules) }),
            mark(t.rejected == 0),
        ),
        (
            "orders in the gateway's database (API pages / SQL)".into(),
            format!(
                "{} rows, {} distinct / {} rows, {} distinct; missing {}, extra {}",
                thousands(st.rows as f64),
                thousands(st.distinct as f64),
                thousands(db_rows as f64),
                thousands(db_distinct as f64),
                st.missing,
                st.extra
            ),
            mark(st.clean() && db_ok),
        ),
        ("duplicate orders".into(), format!("{}", st.duplicates.max(db_rows.saturating_sub(db_distinct) as usize)), mark(st.duplicates == 0 && db_rows == db_distinct)),
        (
            "order.created answers with another number than the stored one".into(),
            format!("{} (redeliveries {}, of which unanswered {})", st.number_mismatches, get(&sh.c.redeliveries), get(&sh.c.redelivery_failures)),
            mark(st.number_mismatches == 0),
        ),
        (
            "orders not delivered + paid in the gateway's database (a 2xx whose effect is missing)".into(),
            format!(
                "{}{}",
                st.unfinished,
                if st.unfinished_states.is_empty() { String::new() } else { format!(" {:?}", st.unfinished_states) }
            ),
            mark(st.unfinished == 0),
        ),
        (
            "secrets in the gateway's log (API key, OAuth client secret, webhook Basic credentials)".into(),
            format!(
                "{leaked} occurrence(s) in {} lines ({} MiB, level {}, all {} process lives)",
                thousands(log_lines as f64),
                (log_text.len() as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
                args.log_level,
                kills.kills + 1
            ),
            mark(leaked == 0),
        ),
        (
            "orders stuck (Kuper's view not shipped + paid)".into(),
            format!("{}{}", t.stuck, if t.stuck_states.is_empty() { String::new() } else { format!(" {:?}", t.stuck_states) }),
            mark(t.stuck == 0),
        ),
        (
            "outbox at the end (pending / dead / skipped / sent)".into(),
            format!("{pending} / {dead} / {skipped} / {}", thousands(sent as f64)),
            mark(pending == 0 && dead == 0 && drained),
        ),
        (
            "gateway SIGKILLs".into(),
            format!(
                "{} (mean life {:.2} s; SIGKILL → /healthz p50 {}, p99 {}, max {}; failed starts {})",
                kills.kills,
                mean_life,
                fmt_ms(down.p50),
                fmt_ms(down.p99),
                fmt_ms(down.max),
                gw.failed_starts
            ),
            mark(kills_ok),
        ),
        (
            "client retries through the restarts".into(),
            format!(
                "actions {} of {} calls ({} replayed by their Idempotency-Key, {} answered 409 after a committed first attempt); webhooks {} of {} sends; order.created re-sent for {} orders",
                thousands(get(&sh.c.action_retries) as f64),
                thousands(get(&sh.c.action_calls) as f64),
                get(&sh.c.replayed),
                get(&sh.c.applied_earlier),
                thousands(get(&sh.c.webhook_retries) as f64),
                thousands(get(&sh.c.webhook_calls) as f64),
                get(&sh.c.created_resends)
            ),
            "",
        ),
    ];
    if outage_rep.planned {
        rows.push((
            "Kuper outage".into(),
            format!(
                "{}, {}–{} UTC; {} orders placed and {} finished during it; {} notification attempts refused; gateway outbox pending: peak {}, {} at the end",
                outage_rep.description,
                utc(outage_rep.start_ms),
                utc(outage_rep.end_ms),
                outage_rep.placed_during,
                outage_rep.done_during,
                thousands(refused_attempts as f64),
                outage_rep.pending_peak.map_or("-".into(), thousands),
                outage_rep.pending_at_end.map_or("-".into(), thousands),
            ),
            "",
        ));
        rows.push((
            "outage end → backlog drained".into(),
            match outage_rep.drained_after {
                Some(d) => format!(
                    "**{:.1} s** (gateway: nothing queued before the end still pending; {}); Kuper: the last notification refused during the outage accepted {} after the end{}",
                    d.as_secs_f64(),
                    outage_rep.drain_note,
                    last_refused_after.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                    if never_accepted > 0 { format!(", {never_accepted} never accepted") } else { String::new() }
                ),
                None => outage_rep.drain_note.clone(),
            },
            mark(outage_ok && never_accepted == 0),
        ));
    }
    rows.push((
        "wall time".into(),
        format!(
            "orders driven in {:.1} s ({:.0} orders/s); final drain {:.1} s",
            driven.as_secs_f64(),
            placed.len() as f64 / driven.as_secs_f64().max(1e-9),
            final_drain.as_secs_f64()
        ),
        "",
    ));
    let mut notes = vec![
        format!("gateway config: production settings except the dispatcher — {}", plan.schedule_text()),
        "the schedule is compressed (why: with production's steps a notification that already failed four times waits 2 min, then 5 min, then 15 min for its next try, and under a kill every few seconds plus an outage that happens easily, so the soak would mostly measure waiting); the retry code, the jitter, the FIFO rule and the in-doubt handling are the production code paths, only the delays are shorter".into(),
        format!("gateway RSS at the end {:.1} MiB", rss_now.map_or(f64::NAN, |b| b as f64 / 1024.0 / 1024.0)),
        format!("faults answered by Kuper (by rule): {:?}", t.faults),
    ];
    if args.backend == Backend::Postgres {
        notes.push(format!(
            "PostgreSQL: a killed process's claims are taken over after the lease, 5 × {} ms + {} ms",
            plan.request_timeout_ms, plan.lease_margin_ms
        ));
    }
    let mut problems: Vec<String> = client_problems;
    problems.extend(t.problems.iter().cloned());
    problems.extend(st.problems.iter().cloned());
    if !drained {
        problems.push(format!(
            "the outbox still had pending notifications {:?} after the orders were driven",
            plan.drain_timeout
        ));
    }
    if !outage_ok {
        problems.push(format!("the outage backlog did not drain: {}", outage_rep.drain_note));
    }
    let json = json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "backend": format!("{:?}", args.backend).to_lowercase(),
        "seed": args.seed,
        "orders": placed.len(),
        "per_kind": t.per_kind.iter().map(|(k, n)| (k.label().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "expected_notifications": t.expected,
        "delivered": t.delivered,
        "lost": t.lost,
        "duplicates_seen_by_kuper": t.duplicates,
        "fifo_violations": t.fifo_violations,
        "out_of_order_orders": t.out_of_order,
        "unexpected_notifications": t.unexpected,
        "rejected": t.rejected,
        "rejected_rules": t.rejected_rules,
        "faults": t.faults,
        "stuck": t.stuck,
        "stuck_states": t.stuck_states,
        "secrets_in_log": leaked,
        "gateway_log_lines": log_lines,
        "stored": {"unfinished": st.unfinished, "unfinished_states": st.unfinished_states, "api_rows": st.rows, "api_distinct": st.distinct, "sql_rows": db_rows, "sql_distinct": db_distinct,
                   "duplicates": st.duplicates, "missing": st.missing, "extra": st.extra, "number_mismatches": st.number_mismatches},
        "outbox_end": outbox_by_status,
        "kills": {"count": kills.kills, "mean_every_ms": plan.kill_every.as_millis() as u64, "mean_life_s": mean_life,
                  "downtime": down.to_json(), "failed_starts": gw.failed_starts},
        "clients": {
            "action_calls": get(&sh.c.action_calls), "action_retries": get(&sh.c.action_retries),
            "applied_earlier_409": get(&sh.c.applied_earlier), "replayed_by_idempotency_key": get(&sh.c.replayed), "webhook_calls": get(&sh.c.webhook_calls),
            "webhook_retries": get(&sh.c.webhook_retries), "created_resends": get(&sh.c.created_resends),
            "redeliveries": get(&sh.c.redeliveries), "redelivery_failures": get(&sh.c.redelivery_failures),
            "failed_orders": failed,
        },
        "outage": {
            "planned": outage_rep.planned, "kind": outage_rep.description, "start_ms": outage_rep.start_ms, "end_ms": outage_rep.end_ms,
            "placed_during": outage_rep.placed_during, "done_during": outage_rep.done_during,
            "refused_attempts": refused_attempts, "pending_peak": outage_rep.pending_peak, "pending_at_end": outage_rep.pending_at_end,
            "drained_after_s": outage_rep.drained_after.map(|d| d.as_secs_f64()),
            "last_refused_accepted_after_s": last_refused_after.map(|d| d.as_secs_f64()),
            "refused_never_accepted": never_accepted,
        },
        "dispatcher": {"retry_schedule_ms": SCHEDULE_MS, "throttle_floor_ms": THROTTLE_FLOOR_MS,
                       "request_timeout_ms": plan.request_timeout_ms, "lease_margin_ms": plan.lease_margin_ms},
        "driven_s": driven.as_secs_f64(),
        "final_drain_s": final_drain.as_secs_f64(),
        "problems": problems.iter().take(200).collect::<Vec<_>>(),
        "ok": ok,
    });
    Ok(Report { rows, notes, problems, json, ok })
}

fn print_report(r: &Report, date: &str, m: &Value, fs: &str, device: &str, wall: Duration) {
    println!();
    println!(
        "kuper-bridge crash soak · {date} · {} mode · {} · seed {} · {} × {} · {:.1} GiB · kernel {} · database dir on {fs} ({device}) · load average {} → {} · {:.0} s",
        r.json["mode"].as_str().unwrap_or("?"),
        r.json["backend"].as_str().unwrap_or("?"),
        r.json["seed"],
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_gib"].as_f64().unwrap_or(f64::NAN),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        loadavg(),
        wall.as_secs_f64(),
    );
    println!();
    println!("| figure | value | |");
    println!("| --- | --- | --- |");
    for (figure, value, mark) in &r.rows {
        println!("| {figure} | {value} | {mark} |");
    }
    println!();
    for n in &r.notes {
        println!("- {n}");
    }
    if !r.problems.is_empty() {
        println!();
        println!("{} problem(s), the first ones:", r.problems.len());
        for p in r.problems.iter().take(30) {
            println!("  - {p}");
        }
    }
    println!();
    println!("verdict: {}", if r.ok { "PASS — every invariant held" } else { "FAIL — an invariant broke (see above)" });
}
