//! Load generation: the requests (`order.created` webhooks, `GET /healthz`) and the two ways of
//! sending them, closed loop (as fast as answered) and open loop (at a fixed rate).

use crate::gateway::{Gateway, WEBHOOK_PASSWORD, WEBHOOK_USER};
use crate::sampling::own_cpu_secs;
use anyhow::{Context, Result};
use kuper_bridge_bench::body;
use kuper_bridge_bench::stats::Summary;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const POSITIONS: usize = 20;

#[derive(Clone)]
pub(crate) enum Target {
    Webhook { url: String, template: Arc<String>, seq: Arc<AtomicU64> },
    Healthz { url: String },
}

#[derive(serde::Deserialize)]
pub(crate) struct CreatedAnswer {
    pub(crate) status: String,
}

impl Target {
    pub(crate) async fn send(&self, client: &reqwest::Client) -> Result<(), String> {
        match self {
            Target::Webhook { url, template, seq } => {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let uuid = format!("bench:{}", uuid::Uuid::new_v4());
                let payload = body::fill(template, &body::order_id(n), &uuid);
                let resp = client
                    .post(url)
                    .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| format!("transport: {e}"))?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
                if status != 200 {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
                }
                match serde_json::from_slice::<CreatedAnswer>(&bytes) {
                    Ok(a) if a.status == "created" => Ok(()),
                    _ => Err(format!("200 without status created: {}", String::from_utf8_lossy(&bytes))),
                }
            }
            Target::Healthz { url } => {
                let resp = client.get(url).send().await.map_err(|e| format!("transport: {e}"))?;
                let status = resp.status().as_u16();
                let _ = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
        }
    }
}

pub(crate) fn load_client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

pub(crate) struct ClosedLoop {
    pub(crate) concurrency: usize,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) rps: f64,
    pub(crate) latency: Summary,
    /// Throughput of the first and the second half of the successful requests: a gateway
    /// that slows down as its database grows shows it here.
    pub(crate) halves: (f64, f64),
    pub(crate) client_cpu_s: f64,
    pub(crate) gateway_cpu_s: f64,
    pub(crate) gateway_runq_wait_s: f64,
}

impl ClosedLoop {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps,
            "latency": self.latency.to_json(),
            "rps_first_half": self.halves.0,
            "rps_second_half": self.halves.1,
            "client_cpu_s": self.client_cpu_s,
            "gateway_cpu_s": self.gateway_cpu_s,
            "gateway_runq_wait_s": self.gateway_runq_wait_s,
        })
    }
}

/// `concurrency` connections, each sending its next request as soon as the previous one is
/// answered, until `count` requests were sent or `cap` has passed.
pub(crate) async fn closed_loop(
    target: &Target,
    concurrency: usize,
    count: usize,
    cap: Duration,
    gw: &Gateway,
) -> Result<ClosedLoop> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (cpu0, own0, wait0) = (gw.cpu_secs().unwrap_or(0.0), own_cpu_secs(), gw.runq_wait_secs());
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = load_client(1)?;
        let target = target.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < count && started.elapsed() < cap {
                let t = Instant::now();
                match target.send(&client).await {
                    Ok(()) => samples.push((t.elapsed(), started.elapsed())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (s, e, f) = w.await.context("a load worker panicked")?;
        samples.extend(s);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed();
    let mut done: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    done.sort_unstable();
    let halves = halves(&done);
    let ok = samples.len();
    Ok(ClosedLoop {
        concurrency,
        ok,
        errors,
        first_error,
        elapsed,
        rps: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples.into_iter().map(|s| s.0).collect()),
        halves,
        client_cpu_s: own_cpu_secs() - own0,
        gateway_cpu_s: gw.cpu_secs().unwrap_or(0.0) - cpu0,
        gateway_runq_wait_s: gw.runq_wait_secs() - wait0,
    })
}

pub(crate) fn halves(done: &[Duration]) -> (f64, f64) {
    let n = done.len();
    if n < 4 {
        return (0.0, 0.0);
    }
    let mid = n / 2;
    let t_mid = done[mid - 1].as_secs_f64().max(1e-9);
    let t_end = done[n - 1].as_secs_f64();
    (mid as f64 / t_mid, (n - mid) as f64 / (t_end - t_mid).max(1e-9))
}

pub(crate) struct OpenLoop {
    pub(crate) rate: u32,
    pub(crate) sent: usize,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) achieved_rps: f64,
    /// From the request's scheduled send time: includes any queueing (no coordinated omission).
    pub(crate) latency: Summary,
    /// From the moment the request actually left.
    pub(crate) service: Summary,
    /// 100 ms windows (by scheduled send time) holding a request slower than 20 ms:
    /// (window start in s, such requests, slowest in ms). Shows whether the tail is a few
    /// stalls or spread out.
    pub(crate) slow_windows: Vec<(f64, usize, f64)>,
    pub(crate) gateway_cpu_s: f64,
    /// Time the gateway's threads were ready to run but waiting for a CPU.
    pub(crate) gateway_runq_wait_s: f64,
}

/// Requests at a fixed rate whatever the answers (open loop), at most 512 in flight.
pub(crate) async fn open_loop(target: &Target, rate: u32, duration: Duration, gw: &Gateway) -> Result<OpenLoop> {
    let (cpu0, wait0) = (gw.cpu_secs().unwrap_or(0.0), gw.runq_wait_secs());
    let client = load_client(512)?;
    let inflight = Arc::new(tokio::sync::Semaphore::new(512));
    let n = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let scheduled = started + period * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled).await;
        let (client, target, inflight) = (client.clone(), target.clone(), inflight.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = inflight.acquire_owned().await;
            let sent = tokio::time::Instant::now();
            let r = target.send(&client).await;
            let now = tokio::time::Instant::now();
            (r, now - scheduled, now - sent, now, scheduled - started)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut service = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    let mut last = started;
    let mut windows: std::collections::BTreeMap<u64, (usize, Duration)> = std::collections::BTreeMap::new();
    for t in tasks {
        let (r, l, s, at, offset) = t.await.context("a request task panicked")?;
        last = last.max(at);
        match r {
            Ok(()) => {
                if l > Duration::from_millis(20) {
                    let w = windows.entry(offset.as_millis() as u64 / 100).or_default();
                    w.0 += 1;
                    w.1 = w.1.max(l);
                }
                lat.push(l);
                service.push(s);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let ok = lat.len();
    Ok(OpenLoop {
        rate,
        sent: n,
        ok,
        errors,
        first_error,
        achieved_rps: ok as f64 / (last - started).as_secs_f64().max(1e-9),
        latency: Summary::of(lat),
        service: Summary::of(service),
        slow_windows: windows
            .into_iter()
            .map(|(w, (count, max))| (w as f64 / 10.0, count, kuper_bridge_bench::stats::ms(max)))
            .collect(),
        gateway_cpu_s: gw.cpu_secs().unwrap_or(0.0) - cpu0,
        gateway_runq_wait_s: gw.runq_wait_secs() - wait0,
    })
}
