//! The soak's verdict from what it gathered, and its printed report.

use super::orders::{get, lock, Shared};
use super::outage::OutageReport;
use super::process::KillStats;
use super::{utc, Plan, SoakArgs, SCHEDULE_MS, THROTTLE_FLOOR_MS};
use crate::sampling::loadavg;
use kuper_bridge_bench::database::Backend;
use kuper_bridge_bench::stats::{fmt_ms, thousands, Summary};
use kuper_bridge_bench::verdict::{StoredTally, Tally};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Report {
    pub(super) rows: Vec<(String, String, &'static str)>,
    pub(super) notes: Vec<String>,
    pub(super) problems: Vec<String>,
    pub(super) json: Value,
    pub(super) ok: bool,
}

/// What one soak gathered by the end, from Kuper's side and the gateway's, for the verdict.
pub(super) struct Outcome {
    pub(super) sh: Arc<Shared>,
    /// Orders Kuper placed.
    pub(super) placed: usize,
    pub(super) t: Tally,
    pub(super) st: StoredTally,
    pub(super) kills: KillStats,
    pub(super) failed_starts: usize,
    pub(super) outage: OutageReport,
    pub(super) refused_attempts: usize,
    pub(super) never_accepted: usize,
    pub(super) last_refused_after: Option<Duration>,
    /// Rows and distinct Kuper orders in the gateway's `orders` table.
    pub(super) db_rows: i64,
    pub(super) db_distinct: i64,
    pub(super) outbox_by_status: BTreeMap<String, i64>,
    pub(super) rss_now: Option<u64>,
    pub(super) log_lines: usize,
    pub(super) log_bytes: usize,
    /// Secrets of the run found in the gateway's log.
    pub(super) leaked: usize,
    pub(super) drained: bool,
    pub(super) final_drain: Duration,
    pub(super) driven: Duration,
}

/// How many problem lines of each kind (delivery, stuck orders) a report keeps.
const PROBLEMS_PER_KIND: usize = 100;

/// The verdict: every invariant checked, and the rows, notes and JSON that show it.
pub(super) fn verdict(plan: &Plan, args: &SoakArgs, o: Outcome) -> Report {
    let Outcome {
        sh,
        placed,
        t,
        st,
        kills,
        failed_starts,
        outage: outage_rep,
        refused_attempts,
        never_accepted,
        last_refused_after,
        db_rows,
        db_distinct,
        outbox_by_status,
        rss_now,
        log_lines,
        log_bytes,
        leaked,
        drained,
        final_drain,
        driven,
    } = o;
    let dead = outbox_by_status.get("dead").copied().unwrap_or(0);
    let pending = outbox_by_status.get("pending").copied().unwrap_or(0);
    let skipped = outbox_by_status.get("skipped").copied().unwrap_or(0);
    let sent = outbox_by_status.get("sent").copied().unwrap_or(0);
    let client_problems = lock(&sh.problems).clone();
    let failed = get(&sh.c.failed);
    let outage_ok = !outage_rep.planned || outage_rep.drained_after.is_some();
    let kills_ok = plan.kill_every.is_zero() || kills.kills > 0;
    let db_ok = db_rows as usize == placed && db_distinct as usize == placed;
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
        && placed == plan.orders;
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
        ("orders placed by Kuper".into(), format!("{} ({per_kind})", thousands(placed as f64)), mark(placed == plan.orders)),
        ("orders finished by the clients".into(), format!("{} (failed {failed})", thousands(get(&sh.c.done) as f64)), mark(failed == 0)),
        ("expected notifications".into(), thousands(t.kuper.expected as f64), ""),
        ("delivered (accepted by Kuper)".into(), thousands(t.kuper.delivered as f64), mark(t.kuper.delivered == t.kuper.expected)),
        ("lost".into(), thousands(t.kuper.lost as f64), mark(t.kuper.lost == 0)),
        (
            "duplicates seen by Kuper (at-least-once resends: `repeat` 422 / `repeat_accepted`; allowed)".into(),
            thousands(t.kuper.repeats as f64),
            "",
        ),
        ("FIFO violations (per order, in Kuper's arrival order)".into(), thousands(t.kuper.fifo_violations as f64), mark(t.kuper.fifo_violations == 0)),
        ("orders whose accepted sequence is not the expected one".into(), format!("{} (unexpected notifications {})", t.kuper.out_of_order, t.kuper.unexpected), mark(t.kuper.out_of_order == 0 && t.kuper.unexpected == 0)),
        (
            "rejected by Kuper (any other rule)".into(),
            format!("{}{}", t.kuper.rejected, if t.kuper.rejected_rules.is_empty() { String::new() } else { format!(" {:?}", t.kuper.rejected_rules) }),
            mark(t.kuper.rejected == 0),
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
                (log_bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
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
                failed_starts
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
            placed as f64 / driven.as_secs_f64().max(1e-9),
            final_drain.as_secs_f64()
        ),
        "",
    ));
    let mut notes = vec![
        format!("gateway config: production settings except the dispatcher — {}", plan.schedule_text()),
        "the schedule is compressed (why: with production's steps a notification that already failed four times waits 2 min, then 5 min, then 15 min for its next try, and under a kill every few seconds plus an outage that happens easily, so the soak would mostly measure waiting); the retry code, the jitter, the FIFO rule and the in-doubt handling are the production code paths, only the delays are shorter".into(),
        format!("gateway RSS at the end {:.1} MiB", rss_now.map_or(f64::NAN, |b| b as f64 / 1024.0 / 1024.0)),
        format!("faults answered by Kuper (by rule): {:?}", t.kuper.faults),
    ];
    if args.backend == Backend::Postgres {
        notes.push(format!(
            "PostgreSQL: a killed process's claims are taken over after the lease, 5 × {} ms + {} ms",
            plan.request_timeout_ms, plan.lease_margin_ms
        ));
    }
    let mut problems: Vec<String> = client_problems;
    // Delivery problems first, then the stuck orders, each list cut on its own so that a long
    // one cannot push the other out of the report's first 200 (the JSON's `problems`).
    problems.extend(t.kuper.problems.iter().take(PROBLEMS_PER_KIND).cloned());
    problems.extend(t.problems.iter().take(PROBLEMS_PER_KIND).cloned());
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
        "orders": placed,
        "per_kind": t.per_kind.iter().map(|(k, n)| (k.label().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "expected_notifications": t.kuper.expected,
        "delivered": t.kuper.delivered,
        "lost": t.kuper.lost,
        "duplicates_seen_by_kuper": t.kuper.repeats,
        "fifo_violations": t.kuper.fifo_violations,
        "out_of_order_orders": t.kuper.out_of_order,
        "unexpected_notifications": t.kuper.unexpected,
        "rejected": t.kuper.rejected,
        "rejected_rules": t.kuper.rejected_rules,
        "faults": t.kuper.faults,
        "stuck": t.stuck,
        "stuck_states": t.stuck_states,
        "secrets_in_log": leaked,
        "gateway_log_lines": log_lines,
        "stored": {"unfinished": st.unfinished, "unfinished_states": st.unfinished_states, "api_rows": st.rows, "api_distinct": st.distinct, "sql_rows": db_rows, "sql_distinct": db_distinct,
                   "duplicates": st.duplicates, "missing": st.missing, "extra": st.extra, "number_mismatches": st.number_mismatches},
        "outbox_end": outbox_by_status,
        "kills": {"count": kills.kills, "mean_every_ms": plan.kill_every.as_millis() as u64, "mean_life_s": mean_life,
                  "downtime": down.to_json(), "failed_starts": failed_starts},
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
    Report { rows, notes, problems, json, ok }
}

pub(super) fn print_report(r: &Report, date: &str, m: &Value, fs: &str, device: &str, wall: Duration) {
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
