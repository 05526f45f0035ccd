//! The `kuper-bridge` binary's library half: configuration and process wiring, so tests can
//! start the whole service in-process on a loopback port.

pub mod config;

use config::{Config, Resolved};
use kuper_bridge_app::{AppMetrics, AppState, VerifyLimiter};
use kuper_bridge_dispatcher::{
    DeadlineMetrics, DeadlineSweeper, DispatchMetrics, Dispatcher, ReconcileMetrics, Reconciler,
};
use kuper_bridge_storage::Store;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started service: the HTTP server and (unless disabled) the dispatcher.
pub struct Running {
    pub addr: SocketAddr,
    /// Held while serving: one dispatching process per SQLite database (the OS drops it
    /// when the process dies, even by SIGKILL).
    _lock: Option<std::fs::File>,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
    /// The reconciliation job of a process that runs the worker (roles `all` and `worker`),
    /// whether or not its periodic task is enabled: tests and operators' embeddings can run a
    /// pass by hand with [`Reconciler::run_once`].
    pub reconciler: Option<Arc<Reconciler>>,
    /// The certificate of a process serving HTTPS (`[server.tls]`): `serve` reloads it on SIGHUP.
    pub tls: Option<Arc<kuper_bridge_app::ServerCert>>,
}

impl Running {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Reads `[server.tls]`'s files again: new handshakes present the new certificate, open
    /// connections keep theirs. A failure keeps the old certificate and is logged.
    pub fn reload_tls(&self) {
        let Some(cert) = &self.tls else {
            tracing::info!("SIGHUP: nothing to reload (no [server.tls]; the configuration file is read at start only)");
            return;
        };
        let files = cert.files();
        match cert.reload() {
            Ok(summary) => tracing::info!(
                cert_file = %files.cert_file.display(),
                chain = summary.chain_len,
                "TLS certificate reloaded; new connections use it"
            ),
            Err(problems) => tracing::error!(
                cert_file = %files.cert_file.display(),
                error = %problems.join("; "),
                "TLS certificate reload failed; still serving the previous certificate"
            ),
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens storage, applies migrations and starts serving on `listener`.
pub async fn start(config: &Config, resolved: Resolved, listener: tokio::net::TcpListener) -> anyhow::Result<Running> {
    // Every role: an API-only process beside a serving one would still break the one-writer
    // assumption of the SQLite backend (several processes need PostgreSQL).
    let lock = lock_sqlite(&config.database.url)?;
    let mut store_options = config.database.store_options();
    store_options.forwarding = resolved.forwarding.clone();
    let store = kuper_bridge_storage::open(&config.database.url, &store_options).await?;
    store.migrate().await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let app_metrics = AppMetrics::default();
    app_metrics.register(&mut registry);
    let dispatch_metrics = DispatchMetrics::default();
    dispatch_metrics.register(&mut registry);
    let deadline_metrics = DeadlineMetrics::default();
    deadline_metrics.register(&mut registry);
    let reconcile_metrics = ReconcileMetrics::default();
    reconcile_metrics.register(&mut registry);
    // sqlite_file also makes a path of a postgres:// URL.
    let sqlite = config.database.url.starts_with("sqlite:");
    if let Some(file) = sqlite.then(|| kuper_bridge_storage::sqlite_file(&config.database.url)).flatten() {
        let collector = kuper_bridge_app::metrics::SqliteFileCollector::new(file, store_options.sqlite_max_size_bytes);
        registry.register_collector(Box::new(collector));
    }
    let policy = Arc::new(resolved.policy);

    let state = AppState {
        store: store.clone(),
        policy: policy.clone(),
        webhook_auth: Arc::new(resolved.webhook_auth),
        api_keys: Arc::new(resolved.api_keys),
        webhook_path: config.server.webhook_path.clone(),
        body_limit: config.server.body_limit,
        metrics: app_metrics,
        registry: Arc::new(registry),
        verify_limiter: Arc::new(VerifyLimiter::new(config.pickup.client_failures_per_minute)),
        unauthenticated_audit: Arc::new(kuper_bridge_app::AuditBudget::new(60)),
        acceptance: resolved.acceptance.map(|hook| Arc::new(kuper_bridge_app::AcceptanceClient::new(hook))),
        console: Arc::new(kuper_bridge_app::ui::Console::new(
            config.console.settings(&config.database.url, config.kuper.auth.0),
        )),
    };
    let mut tasks = Vec::new();
    let app = if config.server.serves_api() {
        kuper_bridge_app::router(state)
    } else {
        kuper_bridge_app::worker_router(state)
    };
    let (token, limits) = (shutdown.clone(), config.server.limits());
    let tls = resolved.tls;
    let acceptor = tls.as_ref().map(|cert| cert.acceptor()).transpose().map_err(|e| anyhow::anyhow!(e))?;
    tasks.push(tokio::spawn(async move {
        if let Err(e) =
            kuper_bridge_app::serve(listener, app, limits, acceptor, async move { token.cancelled().await }).await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    // Always: besides the audit log (kept forever when retention_days = 0), the pass expires
    // Idempotency-Keys after a day.
    {
        let (store, token, days) = (store.clone(), shutdown.clone(), i64::from(config.audit.retention_days));
        tasks.push(tokio::spawn(async move { purge_audit(store, days, token).await }));
    }
    if config.server.runs_dispatcher() {
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), resolved.dispatcher, dispatch_metrics, owner)?);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { dispatcher.run(token).await }));
        // Beside the dispatcher: with several workers on PostgreSQL each sweeps, and storage
        // records every warning and miss once.
        if let Some(sweep) = resolved.deadline_sweep {
            let sweeper = DeadlineSweeper::new(store.clone(), sweep, deadline_metrics);
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move { sweeper.run(token).await }));
        }
    }
    let mut reconciler = None;
    if config.server.runs_dispatcher() {
        let job = Arc::new(Reconciler::new(store.clone(), policy, resolved.reconciliation, reconcile_metrics)?);
        if resolved.reconciliation_enabled {
            let (job, token) = (job.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move { job.run(token).await }));
        }
        reconciler = Some(job);
    }
    Ok(Running { addr, _lock: lock, store, shutdown, tasks, reconciler, tls })
}

/// Keeps the audit log to its retention period (`days`; 0 keeps it forever) and expires
/// Idempotency-Keys: once a minute after start, then hourly.
async fn purge_audit(store: Arc<dyn Store>, days: i64, shutdown: CancellationToken) {
    let mut wait = std::time::Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let before = if days > 0 { kuper_bridge_storage::now_ms() - days * 86_400_000 } else { i64::MIN };
        match store.purge_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, retention_days = days, "audit log entries past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "audit retention purge failed; will retry"),
        }
        wait = std::time::Duration::from_secs(3600);
    }
}

/// SQLite leases assume one dispatcher per database file: a second `serve` on the same file
/// would release the first one's leases at start and send notifications twice. Also taken by
/// `serve --sandbox --fresh` while it deletes the file.
pub fn lock_sqlite(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    if !url.starts_with("sqlite:") {
        return Ok(None);
    }
    let Some(file) = kuper_bridge_storage::sqlite_file(url) else { return Ok(None) };
    // The same file however the URL spells it (relative, percent-encoded, ./…).
    let file = file.canonicalize().unwrap_or(file);
    let path = file.display().to_string();
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("cannot open {lock_path}: {e}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another kuper-bridge process is serving {path} (lock {lock_path}); SQLite supports one serving process per database"
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("cannot lock {lock_path}: {e}")),
    }
}
