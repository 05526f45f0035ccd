//! A fake Kuper for end-to-end tests and `kuper-bridge sim serve`.
//!
//! It issues OAuth tokens, judges every notification the way Kuper does (protocol.md §5–§9),
//! keeps Kuper's view of each order, sends webhooks to the merchant on request, and fails on
//! command. Everything is driven over real HTTP: Kuper's endpoints plus a control API under
//! `/sim/v1`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = kuper_bridge_sim::start(listener, kuper_bridge_sim::SimConfig::default()).await?;
//! println!("fake Kuper at {}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod driver;
mod faults;
mod generate;
mod http;
mod model;
mod money;
mod net;
mod ops;
pub mod runner;
mod tokens;
pub mod validate;
mod world;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Profile, RepeatPolicy, SimConfig};
pub use driver::TargetAuth;
pub use faults::{FaultPath, FaultSpec};
pub use generate::{generate, GenerateError, GeneratedOrder, OrderParams};
pub use model::{EventKind, Integration, KuperState, OrderPosition, PaymentState, Scheme};

use http::App;
use net::{ConnHandle, SimListener};

/// How long [`SimHandle::shutdown`] waits for requests in flight (a `delay_ms` fault, a slow
/// merchant) before it stops the server anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A simulator running in the background; see [`start`].
pub struct SimHandle {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`; a wildcard bind address is reported as loopback, since that
    /// is where a local client can reach it.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops accepting connections, lets requests in flight finish (hung ones are released
    /// and dropped), and waits at most a few seconds for that.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.app.begin_shutdown();
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for SimHandle {
    /// A dropped handle stops its simulator: tests that forget `shutdown` leak nothing.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.app.begin_shutdown();
        }
    }
}

/// Starts a simulator on `listener` in a background task.
pub async fn start(listener: TcpListener, config: SimConfig) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let app = App::new(config)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, app.clone(), async move {
        // A dropped sender means the handle is gone: stop as well.
        let _ = stopped.await;
    }));
    Ok(SimHandle { addr, app, stop: Some(stop), task })
}

/// Serves a simulator until `shutdown` completes (for the CLI).
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = App::new(config)?;
    run(listener, app, shutdown).await
}

async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = http::router(app.clone());
    let signal = async move {
        shutdown.await;
        app.begin_shutdown();
    };
    axum::serve(SimListener::new(listener), router.into_make_service_with_connect_info::<ConnHandle>())
        .with_graceful_shutdown(signal)
        .await
}
