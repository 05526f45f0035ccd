//! Timing the pages: one at a time or several at once, and `perf` on a page that misses
//! the goal.

use super::pages::{check, Request};
use super::GOAL_P99;
use anyhow::{bail, Context, Result};
use kuper_bridge_bench::stats::{percentile, Summary};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) cookie: String,
}

impl Client {
    /// One request: its time to the last byte and its body, or why the answer is wrong.
    pub(super) async fn get(&self, r: &Request) -> Result<(Duration, usize), String> {
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
pub(super) struct Figure {
    pub(super) latency: Summary,
    pub(super) p90: Duration,
    pub(super) bytes_mean: f64,
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
    pub(super) wall: Duration,
}

impl Figure {
    pub(super) fn met(&self) -> bool {
        self.latency.count > 0 && self.latency.p99 < GOAL_P99
    }

    pub(super) fn to_json(&self) -> Value {
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

pub(super) async fn measure(client: &Arc<Client>, requests: Vec<Request>, concurrency: usize) -> Figure {
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
pub(super) async fn profile(client: &Arc<Client>, pid: u32, requests: &[Request], out: &Path) -> Result<()> {
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
