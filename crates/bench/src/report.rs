//! The main benchmark's report: its rows, notes and JSON from the figures of the phases, the
//! table of one backend, and the backends side by side.

use crate::ceiling::{StorageCeiling, GROUP, SYNTHETIC};
use crate::cli::Plan;
use crate::load::{ClosedLoop, POSITIONS};
use crate::probes::A_FLOW;
use crate::run::Figures;
use crate::sampling::MIB;
use kuper_bridge_bench::database::{pg_server, Backend};
use kuper_bridge_bench::stats::{fmt_ms, thousands};
use serde_json::{json, Value};
use std::time::Duration;

// Targets (the benchmark issue).
const TARGET_INGEST_RPS: f64 = 5000.0;
const TARGET_P99_AT_1000: Duration = Duration::from_millis(20);
const TARGET_ACTION_P50: Duration = Duration::from_millis(5);
const TARGET_DISPATCH_RPS: f64 = 2000.0;
const TARGET_IDLE_RSS_MIB: f64 = 30.0;
const TARGET_PEAK_RSS_MIB: f64 = 150.0;

pub(crate) fn mib(bytes: Option<u64>) -> f64 {
    bytes.map(|b| b as f64 / MIB).unwrap_or(f64::NAN)
}

pub(crate) fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) value: String,
    pub(crate) target: String,
    pub(crate) mark: String,
}

fn row(figure: impl Into<String>, value: impl Into<String>, target: impl Into<String>, mark: impl Into<String>) -> Row {
    Row { figure: figure.into(), value: value.into(), target: target.into(), mark: mark.into() }
}

pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
    pub(crate) json: Value,
    pub(crate) correct: bool,
}

/// The rows, notes and JSON of one backend, and whether its correctness checks passed.
pub(crate) fn report(plan: &Plan, f: &Figures) -> Report {
    let mut notes = failures(f);
    let correct = notes.is_empty();
    let derived = Derived::of(f);
    let rows = rows(f, &derived);
    notes.extend(notes_of(f));
    let json = json_of(plan, f, &derived, correct);
    Report { rows, notes, json, correct }
}

/// Figures computed from several phases, for the table and the JSON alike.
#[derive(Clone, Copy)]
struct Derived {
    best_ingest: f64,
    cpu_per_k_ingest: f64,
    cpu_per_k_life: f64,
    db_per_k_ingest: f64,
    db_per_k_life: f64,
}

impl Derived {
    fn of(f: &Figures) -> Self {
        let db_idle = f.idle.db;
        let (ingest, ingest_cpu, ingest_ok, db_after_ingest) =
            (&f.ingest.runs, f.ingest.cpu, f.ingest.ok, f.ingest.db_after);
        let (d, lifecycle_cpu) = (&f.dispatch.d, f.dispatch.cpu);
        let (db0, db1) = (f.dispatch.db_before, f.dispatch.db_after);
        let best_ingest = ingest.iter().map(|r| r.rps).fold(0.0, f64::max);
        let cpu_per_k_ingest = ingest_cpu / ingest_ok.max(1) as f64 * 1000.0;
        let cpu_per_k_life = lifecycle_cpu / d.orders.max(1) as f64 * 1000.0;
        let ingest_orders = (f.ingest.warm_ok + ingest_ok).max(1) as f64;
        let db_per_k_ingest = db_after_ingest.total.saturating_sub(db_idle.total) as f64 / ingest_orders * 1000.0 / MIB;
        let db_per_k_life = db1.total.saturating_sub(db0.total) as f64 / d.orders.max(1) as f64 * 1000.0 / MIB;
        Derived { best_ingest, cpu_per_k_ingest, cpu_per_k_life, db_per_k_ingest, db_per_k_life }
    }
}

/// What makes the run fail: webhooks not answered `200 created`, and notifications lost,
/// refused or out of order.
fn failures(f: &Figures) -> Vec<String> {
    let (fixed, b) = (&f.fixed, &f.backlog);
    let ingest = &f.ingest.runs;
    let loaded_run = &f.under_load.load;
    let d = &f.dispatch.d;
    let mut notes = Vec::new();
    let ingest_errors: usize = ingest.iter().map(|r| r.errors).sum::<usize>()
        + fixed.iter().map(|r| r.errors).sum::<usize>()
        + loaded_run.errors;
    if ingest_errors > 0 {
        notes.push(format!("{ingest_errors} webhook(s) were not answered 200 created"));
    }
    if b.fifo_violations > 0 || b.incomplete > 0 || b.rejected > 0 || b.action_errors > 0 || b.accepted < b.expected {
        notes.push(format!(
            "dispatch of a backlog: {} FIFO violation(s), {} incomplete order(s), {} rejection(s), {} action error(s)",
            b.fifo_violations, b.incomplete, b.rejected, b.action_errors
        ));
    }
    if d.fifo_violations > 0 || d.incomplete > 0 || d.rejected > 0 || d.action_errors > 0 || d.accepted < d.expected {
        notes.push(format!(
            "dispatch: {} FIFO violation(s), {} incomplete order(s), {} rejection(s), {} action error(s)",
            d.fifo_violations, d.incomplete, d.rejected, d.action_errors
        ));
    }
    notes
}

fn rows(f: &Figures, derived: &Derived) -> Vec<Row> {
    let backend = f.backend;
    let rss_idle = f.idle.rss;
    let (storage, ceilings, fixed, lat, b) = (&f.storage, &f.healthz, &f.fixed, &f.idle_actions, &f.backlog);
    let ingest = &f.ingest.runs;
    let (load_rate, loaded_run, loaded) = (f.under_load.rate, &f.under_load.load, &f.under_load.actions);
    let d = &f.dispatch.d;
    let (idle_cpu, rss_after, rss_peak, db_end) = (f.after.idle_cpu, f.after.rss, f.after.rss_peak, f.after.db);
    let stored_orders = f.stored_orders;
    let Derived { best_ingest, cpu_per_k_ingest, cpu_per_k_life, db_per_k_ingest, db_per_k_life } = *derived;
    let mut rows = Vec::new();
    for r in ingest {
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
    for r in fixed {
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
    for (r, h) in ingest.iter().zip(ceilings) {
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
            format!("ref: {} {}, {SYNTHETIC}{label}", backend.label(), c.name),
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
    rows
}

fn notes_of(f: &Figures) -> Vec<String> {
    let (fixed, lat) = (&f.fixed, &f.idle_actions);
    let ingest = &f.ingest.runs;
    let (d, create_elapsed) = (&f.dispatch.d, f.dispatch.create_elapsed);
    let mut notes = Vec::new();
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
    notes
}

fn json_of(plan: &Plan, f: &Figures, derived: &Derived, correct: bool) -> Value {
    let backend = f.backend;
    let (rss_idle, db_idle) = (f.idle.rss, f.idle.db);
    let (storage, ceilings, fixed, lat, b) = (&f.storage, &f.healthz, &f.fixed, &f.idle_actions, &f.backlog);
    let ingest = &f.ingest.runs;
    let (load_rate, loaded_run, loaded) = (f.under_load.rate, &f.under_load.load, &f.under_load.actions);
    let (d, create_elapsed) = (&f.dispatch.d, f.dispatch.create_elapsed);
    let (idle_cpu, rss_after, rss_peak, db_end) = (f.after.idle_cpu, f.after.rss, f.after.rss_peak, f.after.db);
    let stored_orders = f.stored_orders;
    let Derived { best_ingest, cpu_per_k_ingest, cpu_per_k_life, db_per_k_ingest, db_per_k_life } = *derived;
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
        "body_bytes": f.sample_body_bytes,
        "positions": POSITIONS,
        "correct": correct,
    });
    json
}

pub(crate) fn print_table(report: &Report, backend: Backend, date: &str, fs: &str, device: &str) {
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
pub(crate) fn pg_server_host() -> String {
    let server = pg_server();
    let rest = server.split_once("://").map_or(server.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// Both backends side by side: the headline figures and their ratios to the references.
pub(crate) fn print_summary(reports: &[(Backend, Report)]) {
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
            "best order.created ÷ storage ceiling (1 row/commit, synthetic schema)",
            "",
            Box::new(|j| {
                let c = f(&j["storage"][0]["rps"]);
                format!("{:.2}× (of {} /s)", best_ingest(j) / c, thousands(c))
            }),
        ),
        (
            "best order.created ÷ gateway-shaped tx on the synthetic schema, 1 order/commit, 1 connection",
            "",
            Box::new(|j| {
                let c = f(&j["storage"][1]["rps"]);
                format!("{:.2}× (of {} /s)", best_ingest(j) / c, thousands(c))
            }),
        ),
        (
            "best order.created ÷ gateway-shaped tx on the synthetic schema, batched (SQLite 32/commit; PostgreSQL 10 connections)",
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
