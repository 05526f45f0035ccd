//! What `/proc` says about the gateway process, this process and the machine, and the
//! PostgreSQL settings a run's figures depend on.

use crate::gateway::Gateway;
use anyhow::Result;
use kuper_bridge_bench::procfs;
use serde_json::{json, Value};

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

impl Gateway {
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        procfs::status_bytes(&text, field)
    }

    pub(crate) fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS")
    }

    pub(crate) fn peak_rss(&self) -> Option<u64> {
        self.status_bytes("VmHWM")
    }

    pub(crate) fn cpu_secs(&self) -> Option<f64> {
        cpu_secs_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Seconds the gateway's threads (those alive now) have spent runnable but not running.
    pub(crate) fn runq_wait_secs(&self) -> f64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else { return 0.0 };
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| procfs::schedstat_wait_ns(&s))
            .sum();
        ns as f64 / 1e9
    }
}

pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

pub(crate) static CLK_TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

pub(crate) fn cpu_secs_of(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    let ticks = procfs::stat_cpu_ticks(&text)?;
    Some(ticks as f64 / *CLK_TCK.get_or_init(clock_ticks))
}

pub(crate) fn own_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat").unwrap_or(0.0)
}

pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = procfs::status_bytes(&meminfo, "MemTotal").map(|b| b as f64 / MIB / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_gib": mem,
        "kernel": kernel,
        "loadavg": loadavg(),
    })
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The PostgreSQL server's version and the settings that decide what a commit costs.
pub(crate) async fn pg_settings(url: &str) -> Result<Value> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    let mut out = serde_json::Map::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "commit_delay",
        "full_page_writes",
        "autovacuum",
        "shared_buffers",
    ] {
        let v: String = sqlx::query_scalar(&format!("SHOW {name}")).fetch_one(&mut c).await?;
        out.insert(name.into(), json!(v));
    }
    let _ = c.close().await;
    Ok(Value::Object(out))
}
