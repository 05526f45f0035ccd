//! The probes of the gateway's way to Kuper: action → notification latency, dispatch
//! throughput with FIFO checked, and the dispatch of a backlog.

use crate::ctl::{at_ms, ms_duration, unix_ms, Ctl};
use crate::gateway::{spawn_gateway_as, Gateway};
use crate::profile;
use crate::session::progress;
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::fifo;
use kuper_bridge_bench::stats::Summary;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub(crate) const A_FLOW: [&str; 3] = ["order.in_work", "order.assembled", "order.ready_for_delivery"];
pub(crate) const A_ACTIONS: [&str; 3] = ["start-assembly", "assembled", "ready"];

// ---------------------------------------------------------------------------------------------
// Action → Kuper latency

pub(crate) struct ActionLatency {
    pub(crate) samples: usize,
    /// REST call: request sent → 202.
    pub(crate) round_trip: Summary,
    /// 202 → the simulator's arrival timestamp (1 ms resolution, +0.5 ms mid-point).
    pub(crate) to_kuper: Summary,
    /// Request sent → arrival: what a store system waits for, end to end.
    pub(crate) end_to_end: Summary,
    /// 202 → seen by polling the simulator every ~1 ms (an upper bound).
    pub(crate) polled: Summary,
    /// Notifications that arrived before the 202 reached the client.
    pub(crate) before_202: usize,
}

pub(crate) async fn action_latency(ctl: &Ctl, ids: &[String], gap: Duration) -> Result<ActionLatency> {
    action_latency_until(ctl, ids, gap, None).await
}

/// [`action_latency`], stopping early once `until` has passed.
pub(crate) async fn action_latency_until(
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

pub(crate) struct Dispatch {
    pub(crate) orders: usize,
    pub(crate) expected: usize,
    pub(crate) accepted: usize,
    pub(crate) rejected: usize,
    pub(crate) faults: usize,
    pub(crate) fifo_violations: usize,
    pub(crate) incomplete: usize,
    pub(crate) action_errors: usize,
    pub(crate) actions_elapsed: Duration,
    pub(crate) actions_rps: f64,
    /// First action sent → last notification accepted by the simulator.
    pub(crate) elapsed: Duration,
    pub(crate) rps: f64,
    /// Last action answered → last notification accepted.
    pub(crate) tail: Duration,
    pub(crate) gateway_cpu_s: f64,
}

/// Posts every order's three actions (in sequence per order, orders at once from
/// `concurrency` connections); returns how many were not answered 202.
pub(crate) async fn post_actions(ctl: &Ctl, ids: &[String], concurrency: usize) -> Result<usize> {
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

pub(crate) async fn dispatch(ctl: &Ctl, ids: &[String], concurrency: usize, gw: &Gateway) -> Result<Dispatch> {
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
pub(crate) struct Backlog {
    pub(crate) expected: usize,
    pub(crate) accepted: usize,
    pub(crate) fifo_violations: usize,
    pub(crate) incomplete: usize,
    pub(crate) rejected: usize,
    pub(crate) action_errors: usize,
    /// First arrival → last arrival.
    pub(crate) elapsed: Duration,
    pub(crate) rps: f64,
}

/// `orders` orders of a fresh database get their three actions through a gateway without a
/// dispatcher (`role = "api"`), so their notifications pile up; then a gateway in role `all`
/// starts on that database and sends them. From the first arrival to the last is dispatch
/// alone: not bounded by how fast actions are posted (the `dispatch` run is, on two cores).
pub(crate) async fn dispatch_backlog(
    bin: &Path,
    backend: Backend,
    dir: &Path,
    ctl: &Ctl,
    positions: &Value,
    orders: usize,
    perf: Option<&Path>,
) -> Result<Backlog> {
    let bdir = dir.join("backlog");
    std::fs::create_dir_all(&bdir).with_context(|| format!("cannot create {}", bdir.display()))?;
    let db = Database::create(backend, Some(&bdir), "kb_bench_backlog").await?;
    let result = async {
        let mut api = spawn_gateway_as(bin, &bdir, db.url(), &ctl.sim, &ctl.http, "api").await?;
        let on_api = Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: api.url.clone() };
        let ids = on_api.create_sim_orders(positions, orders, 16).await?;
        let action_errors = post_actions(&on_api, &ids, 32).await?;
        api.child.kill().await.context("cannot stop the api gateway")?;
        // Recording starts before the gateway: it drains the backlog from its first second.
        let recording = profile::start(perf, &format!("{}-backlog", backend.slug())).await?;
        let mut all = spawn_gateway_as(bin, &bdir, db.url(), &ctl.sim, &ctl.http, "all").await?;
        let on_all = Ctl { http: ctl.http.clone(), sim: ctl.sim.clone(), app: all.url.clone() };
        let drained = on_all.wait_drained(Duration::from_secs(300)).await;
        if let Some(recording) = recording {
            recording.finish(all.pid).await?;
        }
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
