//! What is seeded: the plan of every order (route, store, customer, fate), placing the orders
//! through the webhook or the simulator, moving them on with REST actions, and the operator.

use super::{
    FIRST_FEMALE, FIRST_MALE, MAX_POSITIONS, OPERATOR, OPERATOR_PASSWORD, PICKUP_PERCENT, SEED_CONCURRENCY, STORES,
    SURNAMES,
};
use crate::ctl::Ctl;
use crate::gateway::{API_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER};
use crate::session::progress;
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::body;
use kuper_bridge_bench::rng::Rng;
use kuper_bridge_bench::stats::{fmt_ms, thousands, Summary};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Route {
    /// `order.created` posted to the webhook by this process.
    Webhook,
    /// A pickup order whose delivery window has passed: the deadline sweep flags it.
    Late,
    /// Placed through the simulator (Kuper knows it), then moved on with REST actions.
    Simulator(Fate),
}

/// Where the REST actions take an order placed through the simulator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Fate {
    InWork,
    Ready,
    Canceled,
}

impl Fate {
    pub(super) fn of(k: usize) -> Fate {
        match k % 10 {
            0 => Fate::Canceled,
            1..=3 => Fate::Ready,
            _ => Fate::InWork,
        }
    }

    pub(super) fn actions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Fate::InWork => &[("start-assembly", "{}")],
            Fate::Ready => &[("start-assembly", "{}"), ("assembled", "{}"), ("ready", "{}")],
            Fate::Canceled => &[("cancel", r#"{"reason":"out_of_stock"}"#)],
        }
    }

    pub(super) fn state(self) -> &'static str {
        match self {
            Fate::InWork => "in_work",
            Fate::Ready => "ready",
            Fate::Canceled => "canceled",
        }
    }
}

/// One order as planned before it is sent (deterministic in `n`).
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) route: Route,
    pub(super) pickup: bool,
    pub(super) store: &'static str,
    /// What this process puts in the webhook (the simulator chooses its own customers).
    pub(super) name: String,
    pub(super) phone: String,
    pub(super) positions: usize,
}

pub(super) fn plan(n: usize, late_count: usize) -> Plan {
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
pub(super) fn phone_of(n: usize) -> String {
    let k = ((n as u64).wrapping_mul(7_919_000_023) + 12_345_678) % 1_000_000_000;
    format!("+79{k:09}")
}

/// The same number as a person would type it, in another format than the stored one.
pub(super) fn phone_typed(stored: &str, variant: u64) -> String {
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
pub(super) struct Seeded {
    /// Kuper's id (`originalOrderId`), what the board links to.
    pub(super) reference: String,
    pub(super) name: String,
    pub(super) phone: String,
    pub(super) store: &'static str,
    pub(super) state: &'static str,
    pub(super) late: bool,
}

/// `order.created` bodies: the fixture with 1..=MAX_POSITIONS positions and correct totals,
/// for Kuper delivery and for pickup, dated now.
pub(super) struct Bodies {
    pub(super) delivery: Vec<Value>,
    pub(super) pickup: Vec<Value>,
    pub(super) now: chrono::DateTime<chrono::FixedOffset>,
}

impl Bodies {
    pub(super) fn new() -> Result<Bodies> {
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

    pub(super) fn body(&self, p: &Plan, reference: &str) -> Result<String> {
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

pub(super) struct Seeding {
    pub(super) orders: Vec<Seeded>,
    pub(super) webhooks: usize,
    pub(super) webhook_latency: Summary,
    pub(super) via_simulator: usize,
    pub(super) seconds: f64,
    pub(super) actions: usize,
    pub(super) actions_seconds: f64,
    pub(super) drain_seconds: f64,
}

/// Posts `order.created` for one planned order; the answer must be `200` with `created`.
pub(super) async fn post_webhook(http: &reqwest::Client, url: &str, body: String) -> Result<()> {
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
pub(super) async fn place_through_simulator(ctl: &Ctl, p: &Plan) -> Result<(String, String, String)> {
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

pub(super) async fn act(ctl: &Ctl, reference: &str, action: &str, body: &'static str) -> Result<()> {
    let resp = ctl
        .http
        .post(format!("{}/api/v1/orders/{reference}/{action}", ctl.app))
        .bearer_auth(API_KEY)
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
pub(super) async fn in_parallel<T, F, Fut>(count: usize, concurrency: usize, work: F) -> Result<Vec<(usize, T)>>
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
pub(super) struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    pub(super) fn start(what: &'static str, total: usize, done: Arc<AtomicUsize>) -> Ticker {
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

pub(super) async fn seed(ctl: &Ctl, count: usize) -> Result<Seeding> {
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
pub(super) async fn add_operator(bin: &Path, dir: &Path) -> Result<()> {
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
pub(super) async fn login(http: &reqwest::Client, base: &str) -> Result<String> {
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
}
