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
}

/// Longest a recording may run: if this process dies without stopping perf, perf stops itself.
const MAX_SECONDS: &str = "900";

/// Starts recording every CPU (499 Hz) when `dir` is given; `None` otherwise. The report goes
/// to `DIR/perf-<name>.txt`. Start it before the phase's gateway, so that none of it is missed.
pub(crate) async fn start(dir: Option<&Path>, name: &str) -> Result<Option<Recording>> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data = dir.join(format!("perf-{name}.data"));
    let stderr = std::fs::File::create(dir.join(format!("perf-{name}.log")))?;
    let mut child = tokio::process::Command::new("perf")
        .args(["record", "-a", "-g", "-F", "499", "-o"])
        .arg(&data)
        .args(["--", "sleep", MAX_SECONDS])
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run perf (is linux-perf installed?)")?;
    // perf needs a moment to open its events; a phase that started at once would be missed.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    if let Some(status) = child.try_wait()? {
        bail!(
            "perf record exited at once ({status}; --perf needs root or kernel.perf_event_paranoid <= -1): see {}",
            dir.join(format!("perf-{name}.log")).display()
        );
    }
    Ok(Some(Recording { child, data, report: dir.join(format!("perf-{name}.txt")) }))
}

impl Recording {
    /// Stops perf (SIGINT, so it writes its file), then writes: CPU by thread name, by thread
    /// and binary, the gateway's (`gateway_pid`) hottest functions and call graphs, the SQLite
    /// writer thread's and PostgreSQL's functions.
    pub(crate) async fn finish(mut self, gateway_pid: u32) -> Result<()> {
        let pid = self.child.id().context("perf exited early")?;
        let status = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await?;
        if !status.success() {
            bail!("cannot stop perf (pid {pid})");
        }
        // perf ends by re-raising the SIGINT, so its exit status says nothing; its file does.
        self.child.wait().await?;
        let recorded = std::fs::metadata(&self.data).map(|m| m.len()).unwrap_or(0);
        if recorded == 0 {
            bail!("perf recorded nothing into {}", self.data.display());
        }
        let gateway = gateway_pid.to_string();
        // Whole-machine shares first (idle is `swapper`; the gateway's threads are
        // `tokio-rt-worker` and `sqlite-writer`, this process's `bench-worker`), then the
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
            if !out.status.success() {
                bail!("perf report failed ({}) on {}", out.status, self.data.display());
            }
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
        let _ = std::fs::remove_file(self.data.with_extension("log"));
        progress(format!("  profile written to {}", self.report.display()));
        Ok(())
    }
}
