//! Slow clients (issue #14): connections that send half a request head and stop, or idle after
//! a response, are closed by `[server]`'s deadlines, and connections beyond
//! `server.max_connections` wait for a slot, while Kuper's webhooks are still answered.
//!
//! No assertion here depends on how fast the machine is: deadlines are checked with margins of
//! many seconds, or set so long that the test ends long before they could pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use base64::Engine;
use common::{Env, WEBHOOK_USER};
use serde_json::{json, Value};
use std::io::ErrorKind;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far beyond any deadline a test sets: only a server that never closes runs into it.
const MARGIN: Duration = Duration::from_secs(20);

/// How many half-head connections a test opens: 2,000, fewer if the file limit is low (two
/// descriptors each, client and server side, in this process, and two such tests may run
/// at once).
fn crowd() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20_000);
    let n = 2_000.min(soft.saturating_sub(1_000) / 4);
    assert!(n >= 200, "ulimit -n is {soft}: too low to open a crowd of slow clients; raise it");
    n
}

/// A webhook's start: request line and some headers, never the blank line that ends the head.
fn half_head() -> String {
    format!(
        "POST /kuper-webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: appl",
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_USER)
    )
}

async fn connect(env: &Env) -> TcpStream {
    let addr = env.app_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect to the gateway")
}

/// `n` connections that each sent half a request head, with when each started connecting.
async fn open_half_heads(env: &Env, n: usize) -> Vec<(TcpStream, Instant)> {
    let head = half_head();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut s = connect(env).await;
        s.write_all(head.as_bytes()).await.expect("send half a head");
        out.push((s, started));
    }
    out
}

/// Waits until the server closes `s` (EOF or reset; whatever it sent first is skipped).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return,
                Err(e) => panic!("reading from the gateway: {e}"),
            }
        }
    })
    .await
    .is_ok()
}

/// Whether the server still holds `s` open (nothing to read, no EOF).
fn still_open(s: &TcpStream) -> bool {
    matches!(s.try_read(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// One request on a kept-alive connection; returns the status code once the whole response
/// (Content-Length bodies only, which is all `/healthz` sends) has been read.
async fn get_keep_alive(s: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send request");
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(MARGIN, s.read(&mut buf)).await.expect("response in time").expect("read");
        assert!(n > 0, "the gateway closed the connection instead of answering {path}");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|v| v.parse::<usize>().ok())
            .expect("a Content-Length");
        if data.len() >= end + 4 + length {
            assert_eq!(data.len(), end + 4 + length, "nothing follows the response");
            return text[9..12].parse().expect("a status code");
        }
    }
}

/// The measurement: thousands of half-head clients (held open by a head deadline
/// longer than the test) do not keep a real webhook from being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_answered_while_thousands_of_half_heads_are_held() {
    let env = Env::with(|c| c.server.header_read_timeout_ms = 600_000).await;
    let n = crowd();
    let slow = open_half_heads(&env, n).await;

    let started = Instant::now();
    let created = tokio::time::timeout(MARGIN, env.create_order(json!({"store": "1184"})))
        .await
        .expect("order.created answered while the slow clients are connected");
    eprintln!("order.created answered in {:?} beside {n} half-head connections", started.elapsed());
    assert_eq!(created["merchantAnswer"]["status"], 200);
    let open = slow.iter().filter(|(s, _)| still_open(s)).count();
    assert_eq!(open, n, "the slow clients were held open meanwhile (their deadline is 10 minutes)");

    // Clients that hang up free their connections: stopping then waits for nothing.
    drop(slow);
    tokio::time::timeout(MARGIN, env.shutdown()).await.expect("the gateway stops");
}

/// With a 1 s head deadline every half-head client is disconnected: not before the deadline
/// (counted from before it connected) and well within it plus a wide margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_heads_are_closed_after_the_header_read_timeout() {
    let deadline = Duration::from_secs(1);
    let env = Env::with(|c| c.server.header_read_timeout_ms = 1_000).await;
    let slow = open_half_heads(&env, crowd()).await;

    let mut waits = tokio::task::JoinSet::new();
    for (mut s, started) in slow {
        waits.spawn(async move { (closed_within(&mut s, deadline + MARGIN).await, started.elapsed()) });
    }
    while let Some(done) = waits.join_next().await {
        let (closed, after) = done.expect("join");
        assert!(closed, "a half-head client was still connected {after:?} after connecting");
        // The timer starts at accept, which follows the client's connect; tokio's timers
        // never fire early.
        assert!(after >= deadline, "a half-head client was disconnected after only {after:?}");
    }

    // The gateway is none the worse for it.
    let created = tokio::time::timeout(MARGIN, env.create_order(json!({"store": "1184"}))).await.expect("answered");
    assert_eq!(created["merchantAnswer"]["status"], 200);
    env.shutdown().await;
}

/// A kept-alive connection left idle is closed by `keep_alive_idle_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let env = Env::with(|c| {
        c.server.keep_alive_idle_ms = 1_000;
        c.server.header_read_timeout_ms = 600_000;
    })
    .await;
    let mut s = connect(&env).await;
    assert_eq!(get_keep_alive(&mut s, "/healthz").await, 200);
    assert_eq!(get_keep_alive(&mut s, "/healthz").await, 200, "the connection is kept alive");
    assert!(closed_within(&mut s, Duration::from_secs(1) + MARGIN).await, "the idle connection was not closed");
    env.shutdown().await;
}

/// The head deadline is not an idle deadline: a kept-alive connection may idle past it, but
/// once the next head starts it must be complete within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_may_idle_longer_than_the_head_deadline() {
    let env = Env::with(|c| {
        c.server.header_read_timeout_ms = 1_000;
        c.server.keep_alive_idle_ms = 600_000;
    })
    .await;
    let mut s = connect(&env).await;
    assert_eq!(get_keep_alive(&mut s, "/healthz").await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get_keep_alive(&mut s, "/healthz").await, 200, "idle for twice the head deadline, still open");

    s.write_all(half_head().as_bytes()).await.expect("send half a head");
    // The idle deadline is 10 minutes away: only the head deadline can close it this soon.
    assert!(closed_within(&mut s, MARGIN).await, "half a head on a kept-alive connection was not cut off");
    env.shutdown().await;
}

/// Beyond `max_connections` a connection is not refused: it waits in the listen backlog and is
/// served as soon as a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let env = Env::with(|c| {
        c.server.max_connections = 4;
        c.server.header_read_timeout_ms = 600_000;
    })
    .await;
    // Connected first, so accepted first: they take every slot and keep it.
    let mut slow = open_half_heads(&env, 4).await;

    let (http, sim_url, target) = (env.http.clone(), env.sim_url.clone(), env.webhook_url());
    let webhook = tokio::spawn(async move {
        let body = json!({"store": "1184", "target": target, "auth": {"basic": WEBHOOK_USER}});
        let resp = http.post(format!("{sim_url}/sim/v1/orders")).json(&body).send().await.expect("sim create");
        resp.json::<Value>().await.expect("sim json")
    });
    // No slot can free by itself for 10 minutes, so however slow the machine, an answer by
    // now would mean the cap was not applied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!webhook.is_finished(), "order.created was answered beyond max_connections");

    drop(slow.pop());
    let created = tokio::time::timeout(MARGIN, webhook).await.expect("served once a slot freed").expect("join");
    assert_eq!(created["merchantAnswer"]["status"], 200, "{created}");
    drop(slow);
    env.shutdown().await;
}

/// Stopping does not wait for clients still sending a head: they are disconnected at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_does_not_wait_for_half_heads() {
    let env = Env::with(|c| c.server.header_read_timeout_ms = 600_000).await;
    let mut slow = open_half_heads(&env, 50).await;
    // The head deadline is 10 minutes: only the shutdown can end these connections in time.
    tokio::time::timeout(MARGIN, env.shutdown()).await.expect("stopped without waiting for the slow clients");
    for (s, _) in &mut slow {
        assert!(closed_within(s, MARGIN).await, "a half-head client was left connected");
    }
}
