//! `kuper-bridge-bench ingest`: `order.created` ingest driven by an external load generator
//! (wrk with `scripts/unique_orders.lua`), judged by the gateway's own counters.
//!
//! The built-in client is itself a process on the same CPUs, written by us; an independent
//! generator is the check on its figure. What a generator cannot tell is what the gateway did
//! with each request: a repeated order id is answered 200 from the stored first answer, far
//! cheaper than a new order, so a script that repeats ids reports a flattering rate. The
//! gateway counts every webhook by outcome (`kuper_bridge_webhooks_total`); the run fails
//! unless every request of the window was a new order.
//!
//! Two ways to drive it: with no command, the gateway waits for load from anywhere and the
//! window ends when no webhook has arrived for `--idle` seconds (or at Ctrl-C); with a command
//! after `--`, that command is the load, run once the gateway is ready, with `{url}` and
//! `{body}` replaced (what a script wants: no port or file to discover).

use crate::cli::RunArgs;
use crate::gateway::{find_gateway, spawn_gateway, Gateway, API_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER};
use crate::load::{closed_loop, Target, POSITIONS};
use crate::sampling::{loadavg, machine};
use crate::session::{keep_or_drop, progress};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::body;
use kuper_bridge_bench::database::{pg_server, Backend, Database};
use kuper_bridge_bench::stats::thousands;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The gateway's default `server.webhook_path`, which the benchmark's config keeps.
const WEBHOOK_PATH: &str = "/kuper-webhook";
const COUNTER: &str = "kuper_bridge_webhooks_total";
/// Often enough that the window's ends are off by a few per cent of a 10 s run at most; each
/// scrape is one small read of the gateway's database, nothing against the load.
const POLL: Duration = Duration::from_millis(250);
/// After the command has exited: requests it abandoned may still be in the gateway.
const SETTLE: Duration = Duration::from_secs(1);
const SCRIPT: &str = "crates/bench/scripts/unique_orders.lua";

/// Ingest driven by an external load generator: starts the gateway as the benchmark does,
/// prints the `wrk` command to run against it, and at the end reads the gateway's webhook
/// counters. Exit 1 unless every webhook was a new order (no duplicate, error or refusal).
///
/// `kuper-bridge-bench ingest -- wrk -t2 -c32 -d20s -s crates/bench/scripts/unique_orders.lua
/// {url} -- {body}` runs the load itself once the gateway is ready.
#[derive(clap::Args)]
#[command(mut_arg("dir", |a| a.help(
    "Where the temporary directory (SQLite database, config, request body, gateway log) is created"
)))]
pub struct IngestArgs {
    /// The gateway's database: sqlite (a file in the temporary directory) or postgres (a fresh
    /// database kb_ingest_<hex> on KUPER_BRIDGE_TEST_PG, dropped at the end).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// order.created sent by the built-in client before the window, not counted: the first
    /// requests of a cold gateway are slower, and they prove the body is accepted.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// The load is over when no webhook has arrived for this many seconds after the first one.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    idle: f64,
    /// Stop waiting this many seconds after the gateway is ready, whatever the load.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    #[command(flatten)]
    run: RunArgs,
    /// The load generator, run once the gateway is ready; `{url}` becomes the webhook URL and
    /// `{body}` the request body file (also in KB_BODY). The window ends when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub async fn run(args: IngestArgs) -> Result<bool> {
    if !(args.idle.is_finite() && args.idle > 0.0) {
        bail!("--idle needs a positive number of seconds");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration needs a positive number of seconds");
    }
    let bin = find_gateway(args.run.gateway_bin.as_deref())?;
    let tmp = args.run.scratch("kuper-bridge-ingest-")?;
    let dir = tmp.path().to_path_buf();
    let db = Database::create(args.backend, Some(&dir), "kb_ingest").await?;
    match args.backend {
        Backend::Sqlite => progress(format!("database directory {}", dir.display())),
        Backend::Postgres => progress(format!("database {} on {}", db.pg_name().unwrap_or("?"), pg_server())),
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let result = match spawn_gateway(&bin, &dir, db.url(), &sim.base_url(), &http).await {
        Ok(mut gw) => {
            let r = drive(&args, &mut gw, &http, &dir).await;
            let r = r.map_err(|e| e.context(format!("gateway log tail:\n{}", gw.log_tail())));
            let _ = gw.child.kill().await;
            r
        }
        Err(e) => Err(e),
    };
    sim.shutdown().await;
    keep_or_drop(args.run.keep, tmp, &db).await;
    result
}

async fn drive(args: &IngestArgs, gw: &mut Gateway, http: &reqwest::Client, dir: &Path) -> Result<bool> {
    let url = format!("{}{WEBHOOK_PATH}", gw.url);
    let msk = chrono::FixedOffset::east_opt(3 * 3600).ok_or_else(|| anyhow!("UTC+3"))?;
    // The built-in client's body, so that the two generators' figures compare.
    let template = body::order_created_template_at(POSITIONS, chrono::Utc::now().with_timezone(&msk))?;
    let body_path = dir.join("order.created.json");
    std::fs::write(&body_path, &template).with_context(|| format!("cannot write {}", body_path.display()))?;

    if args.warmup > 0 {
        progress(format!("warm-up: {} order.created from the built-in client", args.warmup));
        let webhook = Target::Webhook {
            url: url.clone(),
            template: Arc::new(template.clone()),
            seq: Arc::new(AtomicU64::new(1)),
        };
        let warm = closed_loop(&webhook, 8, args.warmup, Duration::from_secs(120), gw).await?;
        if warm.errors > 0 || warm.ok != args.warmup {
            bail!(
                "warm-up: {} of {} webhooks failed: {}",
                args.warmup - warm.ok,
                args.warmup,
                warm.first_error.unwrap_or_default()
            );
        }
    }
    let base = scrape(http, gw).await?;

    let body_arg = shell_word(&body_path.display().to_string());
    let wrk = format!("wrk -t2 -c32 -d20s -s {} {url} -- {body_arg}", script_path());
    let load_start = loadavg();
    println!("gateway:      {} (pid {}, {})", gw.url, gw.pid, args.backend.label());
    println!("webhook:      POST {url}");
    println!("basic auth:   {WEBHOOK_USER}:{WEBHOOK_PASSWORD} (the script's default; KB_WEBHOOK_AUTH=user:password)");
    println!("metrics:      GET {}/metrics with Authorization: Bearer {API_KEY}", gw.url);
    println!("body:         {} ({} B, {POSITIONS} positions)", body_path.display(), template.len());
    let body_str = body_path.display().to_string();
    let fill = |a: &str| a.replace("{url}", &url).replace("{body}", &body_str);
    let command: Vec<String> = args.command.iter().map(|a| fill(a)).collect();
    if command.is_empty() {
        println!("run:          {wrk}");
        println!(
            "waiting for webhooks; the window ends {} s after the last one{} (or at Ctrl-C)",
            args.idle,
            args.duration.map(|d| format!(", at the latest {d} s from now")).unwrap_or_default()
        );
    } else {
        println!("load:         {}", command.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" "));
    }

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut window = Window::default();
    let mut child = match command.as_slice() {
        [] => None,
        [program, rest @ ..] => {
            let child = tokio::process::Command::new(program)
                .args(rest)
                .env("KB_BODY", &body_path)
                .env("KB_WEBHOOK_AUTH", format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}"))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot run {program}"))?;
            Some(child)
        }
    };
    let mut command_status = None;
    let mut exited_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut stopped_by = "idle";
    let mut latest = WebhookCounters::default();
    loop {
        tokio::select! {
            _ = &mut interrupted => {
                stopped_by = "Ctrl-C";
                break;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        let polled = match gw.check_alive() {
            Ok(()) => scrape(http, gw).await,
            Err(e) => Err(e),
        };
        let now = match polled {
            Ok(c) => c.since(&base),
            Err(e) => {
                // A Ctrl-C at the terminal reaches the gateway too, and it may stop before
                // this loop has seen the signal.
                tokio::select! {
                    _ = &mut interrupted => {
                        stopped_by = "Ctrl-C";
                        break;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(500)) => return Err(e),
                }
            }
        };
        latest = now.clone();
        let t = started.elapsed().as_secs_f64();
        window.observe(t, now.received(), gw.cpu_secs().unwrap_or(0.0), gw.runq_wait_secs());
        if let Some(c) = child.as_mut() {
            if command_status.is_none() {
                if let Some(status) = c.try_wait()? {
                    command_status = Some(status);
                    exited_at = Some(Instant::now());
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(5) && window.first.is_some() {
            last_progress = Instant::now();
            progress(format!("{} webhooks so far", thousands(now.received() as f64)));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stopped_by = "--duration";
            break;
        }
        if let Some(at) = exited_at {
            let quiet = window.first.is_none() || window.idle_for(t) >= SETTLE.as_secs_f64();
            if at.elapsed() >= SETTLE && quiet {
                stopped_by = "the command's exit";
                break;
            }
        } else if child.is_none() && window.idle_for(t) >= args.idle {
            break;
        }
    }
    if let Some(mut c) = child {
        if command_status.is_none() {
            // Ctrl-C reached the command too (same process group); give it time to print.
            command_status = tokio::time::timeout(Duration::from_secs(5), c.wait()).await.ok().transpose()?;
            let _ = c.kill().await;
        }
    }
    let counts = match scrape(http, gw).await {
        Ok(c) => c.since(&base),
        // The gateway got the Ctrl-C as well; the last poll is at most one interval old.
        Err(_) if stopped_by == "Ctrl-C" => latest,
        Err(e) => return Err(e),
    };
    let verdict = counts.verdict();
    let load_end = loadavg();

    let mut failures = verdict.failures();
    if let Some(status) = command_status.filter(|s| !s.success()) {
        failures.push(format!("the load command exited with {status}"));
    } else if !command.is_empty() && command_status.is_none() {
        failures.push("the load command did not finish".into());
    }
    let rate = window.rate();
    println!();
    println!("## Ingest driven by an external load generator — {}", args.backend.label());
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| webhooks received (gateway's counter, after the warm-up) | {} |", thousands(verdict.received as f64));
    println!("| new orders created | {} |", thousands(verdict.created as f64));
    println!("| duplicates | {} |", thousands(verdict.duplicates as f64));
    println!("| errors | {} |", thousands(verdict.errors as f64));
    let other: Vec<String> = verdict.other.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("| other outcomes | {} |", if other.is_empty() { "0".into() } else { other.join(", ") });
    match &rate {
        Some(r) => {
            println!(
                "| window (first to last counter change, polled every {} ms) | {:.2} s, {} webhooks |",
                POLL.as_millis(),
                r.secs,
                thousands(r.webhooks as f64)
            );
            println!("| rate over the window | {} webhooks/s |", thousands(r.per_sec()));
            println!(
                "| gateway CPU over the window | {:.2} CPU-s ({:.2} cores), {:.2} CPU-ms per webhook |",
                r.cpu_secs,
                r.cpu_secs / r.secs,
                r.cpu_ms_per_webhook()
            );
            println!("| gateway run-queue wait over the window | {:.2} s |", r.runq_wait_secs);
        }
        None => println!("| rate over the window | - (the counter moved in fewer than two polls) |"),
    }
    println!("| load average, start → end | {load_start} → {load_end} |");
    println!("| stopped by | {stopped_by} |");
    println!();
    if failures.is_empty() {
        println!("every request was a new order ✓");
    } else {
        for f in &failures {
            println!("✗ {f}");
        }
    }

    if let Some(path) = &args.run.json {
        let doc = json!({
            "backend": format!("{:?}", args.backend).to_lowercase(),
            "machine": machine(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "warmup": args.warmup,
            "body_bytes": template.len(),
            "counters": counts.to_json(),
            "received": verdict.received,
            "created": verdict.created,
            "duplicates": verdict.duplicates,
            "errors": verdict.errors,
            "other": verdict.other,
            "window": rate.as_ref().map(|r| json!({
                "secs": r.secs,
                "webhooks": r.webhooks,
                "per_sec": r.per_sec(),
                "gateway_cpu_s": r.cpu_secs,
                "gateway_cpu_ms_per_webhook": r.cpu_ms_per_webhook(),
                "gateway_runq_wait_s": r.runq_wait_secs,
            })),
            "stopped_by": stopped_by,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    Ok(failures.is_empty())
}

async fn scrape(http: &reqwest::Client, gw: &Gateway) -> Result<WebhookCounters> {
    let resp = http.get(format!("{}/metrics", gw.url)).bearer_auth(API_KEY).send().await.context("GET /metrics")?;
    let status = resp.status();
    let text = resp.text().await.context("GET /metrics: body")?;
    if !status.is_success() {
        bail!("GET /metrics: HTTP {status}: {text}");
    }
    Ok(WebhookCounters::parse(&text))
}

/// The script as the user should type it: relative when run from the repository root.
fn script_path() -> String {
    if Path::new(SCRIPT).is_file() {
        return SCRIPT.into();
    }
    let beside_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/unique_orders.lua");
    if beside_source.is_file() {
        return shell_word(&beside_source.display().to_string());
    }
    SCRIPT.into()
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// The pure part

/// `kuper_bridge_webhooks_total` from a `/metrics` text, by (event, outcome).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WebhookCounters(BTreeMap<(String, String), u64>);

impl WebhookCounters {
    fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(COUNTER).and_then(|r| r.strip_prefix('{')) else { continue };
            let Some((labels, value)) = parse_labels(rest) else { continue };
            let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
            let event = labels.get("event").cloned().unwrap_or_default();
            let outcome = labels.get("outcome").cloned().unwrap_or_default();
            *out.entry((event, outcome)).or_insert(0) += value.max(0.0).round() as u64;
        }
        Self(out)
    }

    /// What happened after `base` (counters only grow while one gateway runs).
    fn since(&self, base: &Self) -> Self {
        let mut out = BTreeMap::new();
        for (key, n) in &self.0 {
            let d = n.saturating_sub(base.0.get(key).copied().unwrap_or(0));
            if d > 0 {
                out.insert(key.clone(), d);
            }
        }
        Self(out)
    }

    fn received(&self) -> u64 {
        self.0.values().sum()
    }

    fn verdict(&self) -> Verdict {
        let mut v = Verdict::default();
        for ((event, outcome), &n) in &self.0 {
            v.received += n;
            match (event.as_str(), outcome.as_str()) {
                ("order.created", "created") => v.created += n,
                (_, "duplicate") => v.duplicates += n,
                (_, "error") => v.errors += n,
                _ => *v.other.entry(format!("{event}/{outcome}")).or_insert(0) += n,
            }
        }
        v
    }

    fn to_json(&self) -> Value {
        Value::Array(self.0.iter().map(|((e, o), n)| json!({"event": e, "outcome": o, "count": n})).collect())
    }
}

/// The labels between `{` and `}` (the `{` already taken) and what follows the `}`.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_string(), value);
        rest = &after[1 + end + 1..];
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    received: u64,
    /// `order.created` that created an order.
    created: u64,
    /// Answered from an earlier delivery of the same order: cheap, and not a new order.
    duplicates: u64,
    /// The gateway failed to store it (answered 503).
    errors: u64,
    /// Every other outcome (refused, another event, an unknown order), by `event/outcome`.
    other: BTreeMap<String, u64>,
}

impl Verdict {
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.received == 0 {
            out.push("no webhook arrived: nothing was measured".into());
        }
        if self.duplicates > 0 {
            out.push(format!(
                "{} duplicate(s): the load repeated order ids; duplicates are cheap and inflate the figure",
                self.duplicates
            ));
        }
        if self.errors > 0 {
            out.push(format!("{} error(s): the gateway could not store them", self.errors));
        }
        for (what, n) in &self.other {
            out.push(format!("{n} webhook(s) with outcome {what}, not a new order"));
        }
        out
    }
}

/// The measured window from a series of polls: from the first poll that saw the counter move
/// to the last poll that saw it change. Requests and CPU between those two polls, over the
/// time between them: both ends are observations, so a slow start or a long wait for the load
/// does not dilute the rate.
#[derive(Debug, Default)]
struct Window {
    /// The first poll that saw the counter move.
    first: Option<Sample>,
    /// The last poll that saw it change (after `first`).
    last: Option<Sample>,
    /// What the previous poll saw.
    previous: Option<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Seconds since the gateway was ready.
    t: f64,
    received: u64,
    cpu: f64,
    runq: f64,
}

#[derive(Debug, PartialEq)]
struct Rate {
    secs: f64,
    webhooks: u64,
    cpu_secs: f64,
    runq_wait_secs: f64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.webhooks as f64 / self.secs
    }

    fn cpu_ms_per_webhook(&self) -> f64 {
        if self.webhooks == 0 {
            f64::NAN
        } else {
            self.cpu_secs * 1e3 / self.webhooks as f64
        }
    }
}

impl Window {
    fn observe(&mut self, t: f64, received: u64, cpu: f64, runq: f64) {
        let s = Sample { t, received, cpu, runq };
        let moved = self.previous.map_or(received > 0, |p| received > p.received);
        if moved {
            if self.first.is_none() {
                self.first = Some(s);
            } else {
                self.last = Some(s);
            }
        }
        self.previous = Some(s);
    }

    /// Seconds since the counter last changed; 0 before the first webhook (waiting for the
    /// load to start is not idleness).
    fn idle_for(&self, t: f64) -> f64 {
        match (self.first, self.last) {
            (None, _) => 0.0,
            (Some(f), None) => t - f.t,
            (Some(_), Some(l)) => t - l.t,
        }
    }

    fn rate(&self) -> Option<Rate> {
        let (f, l) = (self.first?, self.last?);
        let secs = l.t - f.t;
        (secs > 0.0).then(|| Rate {
            secs,
            webhooks: l.received - f.received,
            cpu_secs: l.cpu - f.cpu,
            runq_wait_secs: l.runq - f.runq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP kuper_bridge_webhooks Kuper webhooks received by event and outcome.
# TYPE kuper_bridge_webhooks counter
kuper_bridge_webhooks_total{event="order.created",outcome="created"} 1200
kuper_bridge_webhooks_total{event="order.created",outcome="duplicate"} 3
kuper_bridge_webhooks_total{event="unknown",outcome="unauthorized"} 1
kuper_bridge_webhooks_total{event="order.paid",outcome="error"} 2
# HELP kuper_bridge_outbox_pending Notifications waiting to be delivered.
kuper_bridge_outbox_pending 0
kuper_bridge_webhooks_totally_else{event="order.created",outcome="created"} 99
# EOF
"#;

    fn key(e: &str, o: &str) -> (String, String) {
        (e.to_string(), o.to_string())
    }

    #[test]
    fn parses_the_webhook_counter_only() {
        let c = WebhookCounters::parse(METRICS);
        assert_eq!(c.0.len(), 4);
        assert_eq!(c.0[&key("order.created", "created")], 1200);
        assert_eq!(c.0[&key("order.created", "duplicate")], 3);
        assert_eq!(c.0[&key("unknown", "unauthorized")], 1);
        assert_eq!(c.received(), 1206);
        assert_eq!(WebhookCounters::parse("# EOF\n"), WebhookCounters::default());
    }

    #[test]
    fn labels_in_any_order_with_escapes() {
        let text = "kuper_bridge_webhooks_total{outcome=\"created\",event=\"order.\\\"x\\\\\"} 7.0\n";
        let c = WebhookCounters::parse(text);
        assert_eq!(c.0[&key("order.\"x\\", "created")], 7);
        // A truncated line is skipped, not misread.
        assert_eq!(WebhookCounters::parse("kuper_bridge_webhooks_total{event=\"order.cre"), WebhookCounters::default());
    }

    #[test]
    fn counts_since_the_warm_up() {
        let base =
            WebhookCounters::parse("kuper_bridge_webhooks_total{event=\"order.created\",outcome=\"created\"} 200\n");
        let now = WebhookCounters::parse(METRICS).since(&base);
        assert_eq!(now.0[&key("order.created", "created")], 1000);
        assert_eq!(now.received(), 1006);
        assert_eq!(WebhookCounters::parse(METRICS).since(&WebhookCounters::parse(METRICS)).received(), 0);
    }

    #[test]
    fn only_new_orders_pass() {
        let v = WebhookCounters::parse(METRICS).verdict();
        assert_eq!((v.received, v.created, v.duplicates, v.errors), (1206, 1200, 3, 2));
        assert_eq!(v.other, BTreeMap::from([("unknown/unauthorized".to_string(), 1)]));
        assert_eq!(v.failures().len(), 3);

        let clean =
            WebhookCounters::parse("kuper_bridge_webhooks_total{event=\"order.created\",outcome=\"created\"} 5\n")
                .verdict();
        assert!(clean.failures().is_empty(), "{:?}", clean.failures());
        assert_eq!(Verdict::default().failures(), vec!["no webhook arrived: nothing was measured".to_string()]);
        // Another event that applied cleanly is still not a new order.
        let applied =
            WebhookCounters::parse("kuper_bridge_webhooks_total{event=\"order.paid\",outcome=\"applied\"} 1\n")
                .verdict();
        assert_eq!(applied.failures().len(), 1);
    }

    #[test]
    fn window_runs_from_first_movement_to_last_change() {
        let mut w = Window::default();
        w.observe(0.25, 0, 1.0, 0.0);
        w.observe(0.50, 0, 1.0, 0.0);
        assert_eq!(w.idle_for(30.0), 0.0, "waiting for the load is not idleness");
        w.observe(0.75, 100, 1.2, 0.1);
        assert!(w.rate().is_none(), "one movement is no window");
        assert_eq!(w.idle_for(1.0), 0.25);
        w.observe(1.00, 400, 1.5, 0.2);
        w.observe(1.25, 700, 1.8, 0.3);
        w.observe(1.50, 700, 1.8, 0.3);
        w.observe(1.75, 700, 1.8, 0.3);
        assert_eq!(w.idle_for(1.75), 0.5);
        let r = w.rate().unwrap();
        assert_eq!(r.webhooks, 600);
        assert!((r.secs - 0.5).abs() < 1e-9);
        assert!((r.per_sec() - 1200.0).abs() < 1e-6);
        assert!((r.cpu_secs - 0.6).abs() < 1e-9);
        assert!((r.cpu_ms_per_webhook() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/tmp/kb-1/order.created.json"), "/tmp/kb-1/order.created.json");
        assert_eq!(shell_word("/tmp/a b/it's"), r"'/tmp/a b/it'\''s'");
    }
}
