//! `--perf DIR`: a whole-machine CPU profile of a measured phase (`perf record -a -g`), so that
//! a figure that misses its goal comes with where the two CPUs went during it: the gateway's
//! threads, PostgreSQL's backends, the load generator and the simulator in this process.

use crate::session::progress;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A `perf record` running while a phase runs; `finish` stops it and writes the report.
pub(crate) struct Recording {
    child: tokio::process::Child,
    data: PathBuf,
    report: PathBuf,
    gateway_pid: u32,
}

/// Starts recording every CPU (99 Hz per CPU is enough for shares, and light) when `dir` is
/// given; `None` otherwise. The report goes to `DIR/perf-<name>.txt`.
pub(crate) async fn start(dir: Option<&Path>, name: &str, gateway_pid: u32) -> Result<Option<Recording>> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data = dir.join(format!("perf-{name}.data"));
    let child = tokio::process::Command::new("perf")
        .args(["record", "-a", "-g", "-F", "499", "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run perf (is linux-perf installed?)")?;
    // perf needs a moment to open its events; a phase that started at once would be missed.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok(Some(Recording { child, data, report: dir.join(format!("perf-{name}.txt")), gateway_pid }))
}

impl Recording {
    /// Stops perf (SIGINT, so it writes its file), then writes: CPU by process and thread name,
    /// the gateway's hottest functions, and its call graphs.
    pub(crate) async fn finish(mut self) -> Result<()> {
        let pid = self.child.id().context("perf exited early")?;
        let status = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await?;
        if !status.success() {
            bail!("cannot stop perf (pid {pid})");
        }
        self.child.wait().await?;
        let gateway = self.gateway_pid.to_string();
        // Whole-machine shares first (idle is `swapper`; the gateway's threads are
        // `tokio-rt-worker` and `sqlite-writer`, this process's `tokio-runtime-w`), then the
        // gateway alone, as shares of its own samples, and PostgreSQL's server processes.
        let sections: [(&str, Vec<&str>, usize); 6] = [
            ("CPU by thread name, whole machine (swapper = idle)", vec!["--sort", "comm", "-g", "none"], 15),
            ("CPU by thread name and binary, whole machine", vec!["--sort", "comm,dso", "-g", "none"], 25),
            (
                "the gateway's functions (share of the gateway's samples)",
                vec!["--pid", &gateway, "--percentage", "relative", "--sort", "sym", "-g", "none"],
                50,
            ),
            (
                "the gateway's call graphs (share of the gateway's samples)",
                vec!["--pid", &gateway, "--percentage", "relative", "--sort", "sym", "-g", "graph,1,caller"],
                200,
            ),
            (
                "the SQLite writer thread's functions (share of its samples; none on PostgreSQL)",
                vec!["--comm", "sqlite-writer", "--percentage", "relative", "--sort", "sym", "-g", "none"],
                40,
            ),
            (
                "PostgreSQL's functions, its processes together (share of their samples; none on SQLite)",
                vec!["--comm", "postgres", "--percentage", "relative", "--sort", "sym", "-g", "none"],
                40,
            ),
        ];
        let mut text = String::new();
        for (title, args, lines) in sections {
            let out = tokio::process::Command::new("perf")
                .args(["report", "--stdio", "--no-children", "--percent-limit", "0.5", "-i"])
                .arg(&self.data)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .await?;
            text.push_str(&format!("== {title}\n"));
            let out = String::from_utf8_lossy(&out.stdout);
            for line in out.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).take(lines) {
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        std::fs::write(&self.report, text).with_context(|| format!("cannot write {}", self.report.display()))?;
        let _ = std::fs::remove_file(&self.data);
        progress(format!("  profile written to {}", self.report.display()));
        Ok(())
    }
}
