//! Kuper's outage: the simulator answers 503 or hangs for a while, and what the simulator's log
//! says about the gateway's retries around it.

use super::orders::{get, Shared};
use super::{now_ms, OutageKind, Plan};
use crate::ctl::at_ms;
use crate::gateway::API_KEY;
use crate::session::progress;
use anyhow::{Context, Result};
use kuper_bridge_bench::verdict::prom_value;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
pub(super) struct OutageReport {
    pub(super) planned: bool,
    pub(super) description: String,
    pub(super) start_ms: i64,
    pub(super) end_ms: i64,
    pub(super) placed_at_start: usize,
    pub(super) placed_during: usize,
    pub(super) done_during: usize,
    pub(super) pending_peak: Option<f64>,
    pub(super) pending_at_end: Option<f64>,
    /// Outage end → no notification queued before the end is still pending at the gateway.
    pub(super) drained_after: Option<Duration>,
    pub(super) drain_note: String,
}

pub(super) async fn metrics(sh: &Shared) -> Option<(f64, f64)> {
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

pub(super) async fn run_outage(sh: Arc<Shared>, plan: Arc<Plan>) -> Result<OutageReport> {
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
pub(super) fn outage_from_log(log: &[Value], rep: &OutageReport) -> (usize, usize, Option<Duration>) {
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
