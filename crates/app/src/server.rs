//! The HTTP/1 accept loop, with the limits `axum::serve` lacks: a request-head deadline, an
//! idle keep-alive deadline and a cap on open connections (issue #14: 3,000 clients that sent
//! half a request head were otherwise held for as long as they liked, toward the file limit).
//!
//! The two deadlines, per connection:
//! - head: a request head must be complete within `header_read_timeout` of the connection's
//!   accept (first request) or of the first byte of the head (later requests);
//! - idle: a kept-alive connection must start its next request head within `keep_alive_idle`
//!   of the previous response, and finish it within that too (hyper's own head timer).
//!
//! hyper's `header_read_timeout` restarts whenever the connection waits for a head, idle time
//! included, so it alone cannot tell "idle between requests" from "sending a head slowly". It
//! keeps the idle one; the shorter head deadline is enforced here, on the socket's reads.
//!
//! With `[server.tls]` the TLS handshake runs under the first request's head deadline too (its
//! reads go through the same guarded socket), so a client that opens a connection and never
//! finishes a handshake holds its slot no longer than one that never sends a head.

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Connection limits of [`serve`] (`[server]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request head not complete within this is answered by closing the connection.
    pub header_read_timeout: Duration,
    /// A kept-alive connection without a new request head within this is closed.
    pub keep_alive_idle: Duration,
    /// Open connections at most; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves until `shutdown` resolves; in-flight requests finish, and connections still sending
/// a request head (or still in their TLS handshake) are closed rather than waited for. With
/// `tls`, every connection speaks HTTPS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Waiting for a slot instead of accepting and closing: a connection beyond the cap stays
    // in the kernel's backlog and is served once a slot frees — at the latest when the
    // slowest client's head deadline passes — whereas a closed one is a failed webhook
    // that Kuper retries later. Not accepting also costs no file descriptor.
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    // `Instant + Duration` panics on overflow; no deadline needs to be longer than a day.
    let limits = ServeLimits {
        header_read_timeout: limits.header_read_timeout.min(DAY),
        keep_alive_idle: limits.keep_alive_idle.min(DAY),
        ..limits
    };
    let draining = Arc::new(AtomicBool::new(false));
    // A handshake is not yet a hyper connection that graceful shutdown could tell to stop;
    // it waits on this instead (a watch, so a handshake that starts late still sees it).
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.keep_alive_idle);
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed, so this is unreachable; stopping is the safe answer.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let head = Arc::new(HeadClock::new(limits.header_read_timeout));
        let io = Guarded::new(stream, head.clone(), draining.clone(), slot);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            head.head_received();
            let head = head.clone();
            let mut request = request.map(Body::new);
            // As axum::serve's `into_make_service_with_connect_info` would: the console's login
            // throttle counts failures per client address.
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await;
                head.response_ready();
                response
            }
        });
        let Some(tls) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
            });
            continue;
        };
        // Taken now, not in the task: a watcher holds graceful shutdown open until dropped,
        // so a handshake in progress is waited for (and told to stop) like a request.
        let (watcher, handshake, http) = (graceful.watcher(), tls.accept(io), http.clone());
        let mut drain = drain_rx.clone();
        tokio::spawn(async move {
            let stream = tokio::select! {
                stream = handshake => match stream {
                    Ok(stream) => stream,
                    // Scanners and plain-HTTP clients on the HTTPS port: not the server's problem.
                    Err(e) => {
                        tracing::debug!(error = %e, client = %peer, "TLS handshake failed");
                        return;
                    }
                },
                _ = drain.wait_for(|draining| *draining) => return,
            };
            if let Err(e) = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    draining.store(true, Ordering::Release);
    let _ = drain_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// As `axum::serve` does: errors of one connection are skipped; others (out of file
/// descriptors, above all) are logged and retried after a pause instead of spinning.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where a connection is in the request cycle, as far as the head deadline cares.
#[derive(Debug, Clone, Copy)]
enum Head {
    /// Between requests: no deadline of ours (hyper's idle one runs).
    Awaiting,
    /// A head is arriving and must be complete by this instant.
    Receiving(Instant),
    /// The head was parsed; the handler and the body are bounded elsewhere.
    Served,
}

/// Shared by a connection's socket wrapper and its service, which hyper polls on one task.
struct HeadClock {
    timeout: Duration,
    state: Mutex<Head>,
}

impl HeadClock {
    fn new(timeout: Duration) -> Self {
        // The first request's clock starts at accept: silence before it is not keep-alive.
        Self { timeout, state: Mutex::new(Head::Receiving(Instant::now() + timeout)) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Head) -> T) -> T {
        // The state is a plain enum, valid whatever a panicking holder left behind.
        f(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn head_received(&self) {
        self.with(|s| *s = Head::Served);
    }

    /// Reads after this start the next head's clock. Request body bytes drained after an early
    /// answer start it too, which can only close a connection sooner, never hold it longer.
    fn response_ready(&self) {
        self.with(|s| *s = Head::Awaiting);
    }

    /// The deadline for the read just made, which returned `got_bytes` or nothing yet.
    fn deadline(&self, got_bytes: bool) -> Option<Instant> {
        self.with(|s| match *s {
            Head::Awaiting if got_bytes => {
                let deadline = Instant::now() + self.timeout;
                *s = Head::Receiving(deadline);
                Some(deadline)
            }
            Head::Receiving(deadline) => Some(deadline),
            Head::Awaiting | Head::Served => None,
        })
    }
}

/// The accepted socket: fails a read that waits past the head deadline (hyper then closes the
/// connection) and holds the connection's slot until dropped.
struct Guarded {
    stream: TcpStream,
    head: Arc<HeadClock>,
    draining: Arc<AtomicBool>,
    timer: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(stream: TcpStream, head: Arc<HeadClock>, draining: Arc<AtomicBool>, slot: OwnedSemaphorePermit) -> Self {
        Self { stream, head, draining, timer: None, _slot: slot }
    }

    /// Whether `deadline` has passed; if not, this task is woken when it does.
    fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let got_bytes = buf.filled().len() > before;
        let Some(deadline) = self.head.deadline(got_bytes) else { return read };
        // Only a read that waits is failed: bytes already here are parsed, however late the
        // server got to them, and a client trickling a head still makes hyper wait in between.
        if read.is_pending() {
            if self.draining.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "shutting down mid request head")));
            }
            if self.expired(deadline, cx) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")));
            }
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
