//! The database full or unreachable: webhooks are answered 503 (never 200 for something not
//! stored), REST calls fail cleanly, and the gateway recovers by itself when the database
//! returns, without a restart. (A database locked by another process is in bad_input.rs.)
//!
//! Both tests run in every pass of the suite: the full-disk one on its own SQLite file, the
//! unreachable one on its own PostgreSQL database behind a TCP proxy that can cut the line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Asks the simulator for a new order; returns (the gateway's status, the order id).
async fn try_create(env: &Env) -> (u64, String) {
    let v = env.try_create_order(json!({"store": "1184"})).await;
    (v["merchantAnswer"]["status"].as_u64().unwrap_or(0), id_of(&v))
}

async fn get_order_status(env: &Env, id: &str) -> u16 {
    env.call("GET", &format!("/api/v1/orders/{id}"), None, READ_KEY).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_answers_503_and_recovers_when_space_returns() {
    // Its own file whatever the pass: a full disk is a SQLite fault (SQLITE_FULL).
    let full = TestDatabase::new(Backend::Sqlite).await;
    let env = Env::with(|c| {
        c.database.url = full.url().to_string();
        c.database.sqlite_max_size_mb = 1;
    })
    .await;
    let first = id_of(&env.create_order(json!({"store": "1184"})).await);
    // Fill the file: each order.created stores the order and the raw webhook.
    let mut refused = None;
    for _ in 0..400 {
        let (status, id) = try_create(&env).await;
        match status {
            200 => continue,
            503 => {
                refused = Some(id);
                break;
            }
            other => panic!("a full database must give 503, got {other}"),
        }
    }
    let refused = refused.expect("the 1 MiB cap was reached");
    // Nothing half-stored: the refused order is absent; reads still work.
    assert_eq!(get_order_status(&env, &refused).await, 404, "a 503 stored nothing");
    assert_eq!(get_order_status(&env, &first).await, 200, "reads still work");
    // Kuper retries: still no room, still 503 (small writes may still fit; this one does not).
    assert_eq!(env.kuper_sends(&refused, "order.created").await, 503);
    assert_eq!(get_order_status(&env, &refused).await, 404);
    // Space returns (an operator deletes old audit entries): no restart needed.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&env.config.database.url).await.unwrap();
        let freed = sqlx::query("DELETE FROM events WHERE kind = 'webhook'").execute(&mut c).await.unwrap();
        assert!(freed.rows_affected() > 10);
        c.close().await.unwrap();
    }
    // Kuper's retry of the refused order.created now goes through.
    assert_eq!(env.kuper_sends(&refused, "order.created").await, 200);
    assert_eq!(get_order_status(&env, &refused).await, 200);
    assert_eq!(env.act(&first, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&first, &["order.in_work"]).await;
    env.shutdown().await;
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, live2, upstream) = (up.clone(), live.clone(), upstream.to_string());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // the line is down: closed at once
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                live2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, up, live }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.live.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_answers_503_and_recovers_without_a_restart() {
    // Skipped (loudly) only on a developer machine without PostgreSQL; CI runs it.
    let Some(db) = TestDatabase::postgres().await else { return };
    let (server, name) = (kuper_bridge_testkit::pg_server(), db.pg_name().expect("a PostgreSQL database"));
    let host = server.split('@').nth(1).and_then(|h| h.split('/').next()).unwrap_or("127.0.0.1:5432").to_string();
    let proxy = Proxy::start(&host).await;
    let user = server.trim_start_matches("postgres://").split('@').next().unwrap_or("postgres").to_string();
    let url = format!("postgres://{user}@127.0.0.1:{}/{name}", proxy.port);
    let env = Env::with(|c| c.database.url = url.clone()).await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);

    proxy.cut();
    let paid = env.kuper_sends(&id, "order.paid").await;
    assert_eq!(paid, 503, "nothing stored, so never 200");
    let (status, v) = env.act(&id, "start-assembly", json!({})).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "storage_unavailable");
    let (ready, _) = env.call("GET", "/readyz", None, READ_KEY).await;
    assert_eq!(ready, 503, "not ready without its database");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = env.call("GET", "/readyz", None, READ_KEY).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(env.kuper_sends(&id, "order.paid").await, 200, "Kuper's retry is stored");
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    assert_eq!(env.order(&id).await["paymentState"], "paid");
    env.shutdown().await;
}
