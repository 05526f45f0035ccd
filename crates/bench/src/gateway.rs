//! The gateway process: finding the binary, its configuration, starting it and waiting until it
//! answers, its database's size and its log.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) const WEBHOOK_USER: &str = "kuper";
pub(crate) const WEBHOOK_PASSWORD: &str = "secret";
pub(crate) const API_KEY: &str = "bench-admin-key-0123456789";

pub(crate) struct Gateway {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
    /// The gateway's database URL (`sqlite://…` or `postgres://…`).
    pub(crate) db_url: String,
    pub(crate) log: PathBuf,
}

/// The size of the gateway's database: SQLite `.db` + `-wal` files; PostgreSQL
/// `pg_database_size` (and `pg_total_relation_size` of the gateway's tables, indexes and
/// TOAST included).
#[derive(Clone, Copy, Default)]
pub(crate) struct DbSize {
    pub(crate) total: u64,
    /// SQLite: the `-wal` file. PostgreSQL: the gateway's tables (`orders`, `events`, `outbox`).
    pub(crate) part: u64,
}

impl Gateway {
    /// The database's size now (zero when it cannot be read).
    pub(crate) async fn db_size(&self) -> DbSize {
        if self.db_url.starts_with("postgres") {
            use sqlx::{Connection, Row};
            let read = async {
                let mut c = sqlx::PgConnection::connect(&self.db_url).await?;
                let r = sqlx::query(
                    "SELECT pg_database_size(current_database()) AS total,
                            CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) AS tables
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind = 'r'",
                )
                .fetch_one(&mut c)
                .await?;
                let size = DbSize {
                    total: u64::try_from(r.try_get::<i64, _>("total")?).unwrap_or(0),
                    part: u64::try_from(r.try_get::<i64, _>("tables")?).unwrap_or(0),
                };
                let _ = c.close().await;
                Ok::<_, sqlx::Error>(size)
            };
            read.await.unwrap_or_default()
        } else {
            let path = self.db_url.trim_start_matches("sqlite://");
            let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let wal = size(&format!("{path}-wal"));
            DbSize { total: size(path) + wal, part: wal }
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the gateway's last log lines if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the gateway exited ({status}); its last log lines:\n{}", self.log_tail());
        }
        Ok(())
    }
}

pub(crate) fn find_gateway(explicit: Option<&Path>) -> Result<PathBuf> {
    const HINT: &str = "build it first: cargo build --release -p kuper-bridge";
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--gateway-bin {}: no such file; {HINT}", p.display());
    }
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let dir = exe.parent().ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let candidate = dir.join("kuper-bridge");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!("the gateway binary {} is missing; {HINT} (or pass --gateway-bin PATH)", candidate.display())
}

pub(crate) fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The gateway's config for a benchmark or soak run: production settings, the simulator as
/// Kuper, our webhook credentials and API key; `extra` adds whole sections (`[dispatcher]`,
/// `[[stores]]`, …).
pub(crate) fn gateway_config(
    port: u16,
    db_url: &str,
    sim_url: &str,
    key_name: &str,
    log_level: &str,
    extra: &str,
) -> String {
    format!(
        r#"# written by kuper-bridge-bench: production settings unless a section below says otherwise
[server]
listen = "127.0.0.1:{port}"

[database]
url = {db_url}

[kuper]
base_url = {sim}
client_id = "sim-client"
client_secret = "sim-secret"

[webhook_auth]
basic = ["{WEBHOOK_USER}:{WEBHOOK_PASSWORD}"]

[[api_keys]]
name = {key_name}
key = "{API_KEY}"
scopes = ["admin"]

[log]
level = {log_level}
format = "json"
{extra}"#,
        db_url = toml_str(db_url),
        sim = toml_str(sim_url),
        key_name = toml_str(key_name),
        log_level = toml_str(log_level),
    )
}

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

pub(crate) async fn spawn_gateway(
    bin: &Path,
    dir: &Path,
    db_url: &str,
    sim_url: &str,
    http: &reqwest::Client,
) -> Result<Gateway> {
    spawn_gateway_as(bin, dir, db_url, sim_url, http, "all").await
}

/// A gateway in `role` (`all`, `api`: no dispatcher, `worker`).
pub(crate) async fn spawn_gateway_as(
    bin: &Path,
    dir: &Path,
    db_url: &str,
    sim_url: &str,
    http: &reqwest::Client,
    role: &str,
) -> Result<Gateway> {
    let port = free_port()?;
    let config = gateway_config(port, db_url, sim_url, "bench", "warn", "").replacen(
        "[server]\n",
        &format!("[server]\nrole = {}\n", toml_str(role)),
        1,
    );
    let config_path = dir.join("kuper-bridge.toml");
    std::fs::write(&config_path, config).with_context(|| format!("cannot write {}", config_path.display()))?;
    let log = dir.join("gateway.log");
    let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config").arg(&config_path).arg("serve").current_dir(dir);
    // Only our config counts: no environment override may change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KUPER_BRIDGE_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "warn").stdin(std::process::Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("the gateway exited at once"))?;
    let mut gw = Gateway { child, pid, url: format!("http://127.0.0.1:{port}"), db_url: db_url.to_string(), log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        gw.check_alive()?;
        if let Ok(r) = http.get(format!("{}/healthz", gw.url)).send().await {
            if r.status().is_success() {
                return Ok(gw);
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway did not answer /healthz within 30 s; its log:\n{}", gw.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
