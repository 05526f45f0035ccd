//! The `kuper-bridge` binary's library half: configuration and process wiring, so tests can
//! start the whole service in-process on a loopback port.

pub mod config;

use config::{Config, Resolved};
use kuper_bridge_app::{AppMetrics, AppState, VerifyLimiter};
use kuper_bridge_dispatcher::{DispatchMetrics, Dispatcher};
use kuper_bridge_storage::Store;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started service: the HTTP server and (unless disabled) the dispatcher.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
    let store = kuper_bridge_storage::open(&config.database.url, &config.database.store_options()).await?;
    store.migrate().await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let app_metrics = AppMetrics::default();
    app_metrics.register(&mut registry);
    let dispatch_metrics = DispatchMetrics::default();
    dispatch_metrics.register(&mut registry);

    let state = AppState {
        store: store.clone(),
        policy: Arc::new(resolved.policy),
        webhook_auth: Arc::new(resolved.webhook_auth),
        api_keys: Arc::new(resolved.api_keys),
        webhook_path: config.server.webhook_path.clone(),
        body_limit: config.server.body_limit,
        metrics: app_metrics,
        registry: Arc::new(registry),
        verify_limiter: Arc::new(VerifyLimiter::new(config.pickup.client_failures_per_minute)),
    };
    let mut tasks = Vec::new();
    let app = kuper_bridge_app::router(state);
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = kuper_bridge_app::serve(listener, app, async move { token.cancelled().await }).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    if config.server.dispatcher {
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), resolved.dispatcher, dispatch_metrics, owner)?);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { dispatcher.run(token).await }));
    }
    Ok(Running { addr, store, shutdown, tasks })
}
