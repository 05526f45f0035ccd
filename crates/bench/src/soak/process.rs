//! The gateway process of the soak: started on the soak's configuration, killed with SIGKILL at
//! seeded random moments and restarted at once.

use super::{now_ms, utc};
use anyhow::{bail, Context, Result};
use kuper_bridge_bench::rng::Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(super) struct GatewayProc {
    pub(super) bin: PathBuf,
    pub(super) config: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) log: PathBuf,
    pub(super) url: String,
    pub(super) child: Option<tokio::process::Child>,
    pub(super) probe: reqwest::Client,
    pub(super) failed_starts: usize,
    pub(super) log_level: String,
}

impl GatewayProc {
    pub(super) fn note(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(f, "{{\"bench\":{}}}", serde_json::to_string(line).unwrap_or_default());
        }
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(super) fn spawn(&mut self) -> Result<()> {
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

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Starts the gateway and waits for `/healthz`; a process that exits during start-up is
    /// started again (counted in `failed_starts`).
    pub(super) async fn start(&mut self) -> Result<()> {
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
    pub(super) async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("SIGKILL")?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct KillStats {
    pub(super) kills: usize,
    /// SIGKILL → the new process answers /healthz.
    pub(super) downtime: Vec<Duration>,
    /// /healthz → SIGKILL.
    pub(super) lives: Vec<Duration>,
}

/// Kills the gateway at seeded random moments and restarts it at once, until `stop`.
pub(super) async fn supervise(
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
