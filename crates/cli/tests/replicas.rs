//! Three gateway processes on one PostgreSQL database, the simulator as Kuper, ≥ 1,000 orders
//! through every scheme with webhooks and actions spread across the replicas (concurrent
//! duplicate `order.created` deliveries included), one replica killed with SIGKILL mid-run and
//! restarted. From the simulator's records: every expected notification applied exactly once,
//! none out of order, no duplicate orders. Runs in the PostgreSQL pass of the suite
//! (`KUPER_BRIDGE_TEST_BACKEND=postgres`); the order count can be raised with
//! `KUPER_BRIDGE_TEST_REPLICA_ORDERS`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_testkit::flows::{event_of, pickup_code_for, Kind, Stores};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stores of the test gateway, for [`Kind::params`].
const STORES: Stores<'static> = Stores { kuper: "1184", merchant: MERCHANT_STORE, restaurant: RESTAURANT_STORE };

struct Cluster {
    http: reqwest::Client,
    urls: Vec<String>,
    alive: Vec<AtomicBool>,
}

impl Cluster {
    /// A live replica, spread by `n`; a dead one is skipped (a load balancer would).
    fn pick(&self, n: usize) -> &str {
        for k in 0..self.urls.len() {
            let i = (n + k) % self.urls.len();
            if self.alive[i].load(Ordering::SeqCst) {
                return &self.urls[i];
            }
        }
        &self.urls[0]
    }

    async fn act(&self, n: usize, id: &str, action: &str, body: &Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut k = n;
        loop {
            let url = format!("{}/api/v1/orders/{id}/{action}", self.pick(k));
            match self.http.post(url).bearer_auth(ADMIN_KEY).json(body).send().await {
                Ok(r) if r.status().as_u16() == 202 => return,
                Ok(r) if r.status().as_u16() == 409 => {
                    // A retry of a request that the killed replica had committed before it died:
                    // the order's `notified` list says whether our action happened.
                    let v: Value = r.json().await.unwrap_or_default();
                    let order: Value = self
                        .http
                        .get(format!("{}/api/v1/orders/{id}", self.pick(k)))
                        .bearer_auth(ADMIN_KEY)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let applied = order["notified"].as_array().is_some_and(|n| n.iter().any(|e| e == event_of(action)));
                    assert!(applied, "{action} on {id} refused: {v}");
                    return;
                }
                other => {
                    // A killed replica (connection refused or reset): try another.
                    let why = match other {
                        Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(e) => e.to_string(),
                    };
                    assert!(Instant::now() < deadline, "{action} on {id} never accepted: {why}");
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The customer shows the code at the counter: checked on any live replica (checking it
    /// again after a replica died mid-request finds it valid again).
    async fn verify(&self, n: usize, id: &str, code: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut k = n;
        loop {
            let url = format!("{}/api/v1/orders/{id}/pickup-code/verify", self.pick(k));
            let why = match self.http.post(url).bearer_auth(ADMIN_KEY).json(&json!({"code": code})).send().await {
                Ok(r) if r.status().as_u16() == 200 => {
                    let v: Value = r.json().await.unwrap_or_default();
                    assert_eq!(v["valid"], true, "the code of {id} was not found valid: {v}");
                    return;
                }
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "the code of {id} was never checked: {why}");
            k += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_nothing_lost_doubled_or_reordered() {
    if !backend_is_postgres() {
        eprintln!("SKIPPED here: runs in the PostgreSQL pass (KUPER_BRIDGE_TEST_BACKEND=postgres)");
        return;
    }
    let orders: usize =
        std::env::var("KUPER_BRIDGE_TEST_REPLICA_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let sim = start_sim(kuper_bridge_sim::SimConfig::default()).await;
    let sim_url = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = test_config(dir.path(), &sim_url).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let mut children = Vec::new();
    let mut urls = Vec::new();
    let mut configs = Vec::new();
    for i in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut c = base_config_copy(&config);
        c.server.listen = format!("127.0.0.1:{port}");
        let path = dir.path().join(format!("replica{i}.toml"));
        std::fs::write(&path, toml_of(&c)).unwrap();
        children.push(Some(spawn_gateway(&path, dir.path()).await));
        urls.push(format!("http://127.0.0.1:{port}"));
        configs.push(path);
    }
    for u in &urls {
        wait_healthy(&http, u).await;
    }
    let cluster = Arc::new(Cluster {
        http: http.clone(),
        urls: urls.clone(),
        alive: (0..3).map(|_| AtomicBool::new(true)).collect(),
    });

    let kinds = [Kind::A, Kind::B, Kind::C, Kind::Restaurant];
    let done = Arc::new(AtomicUsize::new(0));
    let created: Arc<tokio::sync::Mutex<HashMap<String, (Kind, String)>>> = Default::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(24));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..orders {
        let kind = kinds[n % kinds.len()];
        let (cluster, http, sim_url, created, done, permits) =
            (cluster.clone(), http.clone(), sim_url.clone(), created.clone(), done.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            // Kuper sends order.created to one replica...
            let mut body = kind.params(STORES);
            body["target"] = json!(format!("{}/kuper-webhook", cluster.pick(n)));
            body["auth"] = json!({"basic": WEBHOOK_USER});
            let v: Value =
                http.post(format!("{sim_url}/sim/v1/orders")).json(&body).send().await.unwrap().json().await.unwrap();
            let id = v["originalOrderId"].as_str().unwrap().to_string();
            let number = if v["merchantAnswer"]["status"] == 200 {
                v["merchantAnswer"]["body"]["number"].as_str().unwrap_or("").to_string()
            } else {
                // The replica was being killed: Kuper retries order.created until it is answered.
                send_webhook(&http, &sim_url, &id, "order.created").await
            };
            // ...and, every fifth order, redelivers it to the other two at the same moment.
            let payload =
                http.get(format!("{sim_url}/sim/v1/orders/{id}")).send().await.unwrap().json::<Value>().await.unwrap()
                    ["order"]
                    .clone();
            let mut numbers = vec![number.clone()];
            if n % 5 == 0 {
                let envelope = json!({"event_type": "order.created", "payload": payload});
                let redeliver = |k: usize| {
                    let url = format!("{}/kuper-webhook", cluster.pick(n + k));
                    let (http, envelope) = (http.clone(), envelope.clone());
                    async move {
                        let r = http.post(url).basic_auth("kuper", Some("secret")).json(&envelope).send().await.ok()?;
                        let v: Value = r.json().await.ok()?;
                        v["number"].as_str().map(str::to_string)
                    }
                };
                // Both at the same moment: the deliveries must race.
                let (a, b) = tokio::join!(redeliver(1), redeliver(2));
                numbers.extend([a, b].into_iter().flatten());
            }
            let first = numbers.iter().find(|x| !x.is_empty()).cloned().unwrap_or_default();
            assert!(numbers.iter().all(|x| x.is_empty() || *x == first), "{id}: different numbers {numbers:?}");
            created.lock().await.insert(id.clone(), (kind, first));
            for (k, (action, body)) in kind.actions().iter().enumerate() {
                if *action == "delivered" && kind == Kind::B {
                    cluster.verify(n + k, &id, &pickup_code_for(&id)).await;
                }
                let body = if *action == "pickup-code" { &json!({"code": pickup_code_for(&id)}) } else { body };
                cluster.act(n + k, &id, action, body).await;
                if *action == "ready" && matches!(kind, Kind::A | Kind::Restaurant) {
                    // Kuper pays and its courier takes the order only after ready_for_delivery.
                    wait_for(&http, &sim_url, &id, kind.expected().len()).await;
                    for e in ["order.paid", "order.received", "order.delivering", "order.delivered"] {
                        send_webhook(&http, &sim_url, &id, e).await;
                    }
                }
                if *action == "ready" && matches!(kind, Kind::C | Kind::B) {
                    send_webhook(&http, &sim_url, &id, "order.paid").await;
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
    }

    // Kill one replica with SIGKILL a third of the way through; a supervisor restarts it.
    while done.load(Ordering::SeqCst) < orders / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.alive[1].store(false, Ordering::SeqCst);
    let mut victim = children[1].take().unwrap();
    victim.kill().await.unwrap();
    let _ = victim.wait().await;
    let killed_at = done.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    children[1] = Some(spawn_gateway(&configs[1], dir.path()).await);
    wait_healthy(&http, &urls[1]).await;
    cluster.alive[1].store(true, Ordering::SeqCst);

    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let driven = started.elapsed();

    // Every expected notification must reach Kuper; wait for the queues to drain.
    let created = created.lock().await.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let log = loop {
        let log: Vec<Value> =
            http.get(format!("{sim_url}/sim/v1/notifications")).send().await.unwrap().json().await.unwrap();
        let accepted = log.iter().filter(|n| n["verdict"] == "accepted").count();
        let expected: usize = created.values().map(|(k, _)| k.expected().len()).sum();
        if accepted >= expected || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let tally = delivery::tally(created.iter().map(|(id, (kind, _))| (id.as_str(), kind.expected())), &log);
    let (_, list) = {
        let r = http.get(format!("{}/api/v1/orders?limit=500", urls[0])).bearer_auth(ADMIN_KEY).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let rows = text_rows(&config.database.url, "SELECT original_order_id FROM orders").await;
    let mut ids: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
    let total_rows = ids.len();
    ids.sort();
    ids.dedup();
    let duplicate_orders = total_rows - ids.len();
    println!(
        "replicas: {orders} orders ({} notifications expected) driven in {:.1} s across 3 replicas; replica 1 SIGKILLed after {killed_at} orders and restarted",
        tally.expected,
        driven.as_secs_f64()
    );
    println!(
        "replicas: delivered {} / {}, lost {}, out of order {}, FIFO violations {}, rejected {}, \
         at-least-once repeats answered by Kuper {}, orders stored {total_rows}, duplicate orders {duplicate_orders}",
        tally.delivered,
        tally.expected,
        tally.lost,
        tally.out_of_order,
        tally.fifo_violations,
        tally.rejected,
        tally.repeats
    );
    assert!(list["orders"].is_array());
    assert_eq!(total_rows, orders, "one order per Kuper order");
    assert_eq!(duplicate_orders, 0);
    tally.assert_clean();

    for c in children.iter_mut().flatten() {
        let _ = c.kill().await;
    }
    sim.shutdown().await;
}

fn base_config_copy(c: &kuper_bridge::config::Config) -> kuper_bridge::config::Config {
    c.clone()
}

async fn wait_for(http: &reqwest::Client, sim_url: &str, id: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = http.get(format!("{sim_url}/sim/v1/orders/{id}")).send().await.unwrap().json().await.unwrap();
        if accepted_events(&v).len() >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{id}: only {:?} reached Kuper", accepted_events(&v));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Sends a webhook through the simulator until the merchant answers 200; returns the answer's
/// `number` (for order.created).
async fn send_webhook(http: &reqwest::Client, sim_url: &str, id: &str, event: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .post(format!("{sim_url}/sim/v1/orders/{id}/webhooks"))
            .json(&json!({"event": event}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap_or_default();
        if v["status"] == 200 {
            return v["body"]["number"].as_str().unwrap_or("").to_string();
        }
        // The order's replica is being restarted: Kuper retries.
        assert!(Instant::now() < deadline, "{event} for {id} never accepted: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
