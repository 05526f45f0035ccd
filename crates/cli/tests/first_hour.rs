//! The first hour, as a newcomer lives it: the real binary, the shipped `kuper-bridge.toml`
//! copied as it is, and the README's commands. Only the ports (and, on the PostgreSQL pass,
//! the database) are moved by the documented `KUPER_BRIDGE_*` overrides, so the suite never
//! fights a developer's own sandbox for 8080 and 9090.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SHIPPED_CONFIG: &str = include_str!("../../../kuper-bridge.toml");
const DEV_KEY: &str = "dev-key-change-me-0000";

/// The README's demo orders, fixed by the sandbox's seed on a fresh database.
const README_DEMO_ORDERS: [&str; 4] = ["H15258694906", "H48668235335", "H61537225862", "H13412788837"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Gateway {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl Gateway {
    /// `kuper-bridge serve [extra…]` in `dir` (which holds the shipped config), output to `log`.
    async fn start(dir: &Path, port: u16, kuper_port: u16, database: &str, extra: &[&str], log: &str) -> Self {
        let log = dir.join(log);
        let out = || Stdio::from(std::fs::File::create(&log).expect("log file"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
            .arg("serve")
            .args(extra)
            .current_dir(dir)
            .env("KUPER_BRIDGE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("KUPER_BRIDGE_KUPER__BASE_URL", format!("http://127.0.0.1:{kuper_port}"))
            .env("KUPER_BRIDGE_DATABASE__URL", database)
            .stdout(out())
            .stderr(out())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kuper-bridge serve");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "serve did not come up:\n{}", std::fs::read_to_string(&log).unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Gateway { child, url, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) -> String {
        // SIGKILL: the OS releases the SQLite lock as it would after a crash or Ctrl-C.
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        self.output()
    }

    async fn orders(&self) -> Vec<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/orders?limit=100", self.url))
            .bearer_auth(DEV_KEY)
            .send()
            .await
            .expect("GET /api/v1/orders");
        let v: Value = r.json().await.expect("json");
        v["orders"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the gateway holds `count` orders.
    async fn wait_orders(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let orders = self.orders().await;
            if orders.len() >= count {
                return orders;
            }
            assert!(Instant::now() < deadline, "{} of {count} orders:\n{}", orders.len(), self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn kuper_ids(orders: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> =
        orders.iter().map(|o| o["originalOrderId"].as_str().unwrap_or_default().to_owned()).collect();
    ids.sort();
    ids
}

/// `kuper-bridge sim run` with the README's flags; returns (exit code, table, progress).
async fn sim_run(dir: &Path, gateway: &Gateway, kuper_port: u16, extra: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
        .args(["sim", "run", "--target"])
        .arg(format!("{}/kuper-webhook", gateway.url))
        .arg("--listen")
        .arg(format!("127.0.0.1:{kuper_port}"))
        .arg("--merchant-api")
        .arg(&gateway.url)
        .args(["--api-key", DEV_KEY])
        .args(extra)
        .current_dir(dir)
        .output()
        .await
        .expect("run kuper-bridge sim run");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_conformance_run_passes_twice_against_serve_with_the_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kuper-bridge.toml"), SHIPPED_CONFIG).unwrap();
    let database = test_database_url(dir.path()).await;
    let (port, kuper_port) = (free_port(), free_port());
    let gateway = Gateway::start(dir.path(), port, kuper_port, &database, &[], "serve.log").await;
    let total = kuper_bridge_sim::runner::catalogue().len();
    // The same seed twice (the default), then a new seed: the second and third runs meet a
    // gateway that holds every earlier order and a token of an earlier fake Kuper.
    for (run, extra) in [("first", &[][..]), ("second", &[][..]), ("third, another seed", &["--seed", "7"][..])] {
        let (code, table, progress) = sim_run(dir.path(), &gateway, kuper_port, extra).await;
        assert_eq!(
            code,
            0,
            "{run} run: {}/{total} passed\n{table}\n{progress}\ngateway:\n{}",
            progress.matches(" PASS ").count(),
            gateway.output()
        );
        assert_eq!(progress.matches(" PASS ").count(), total, "{run} run: every scenario passed:\n{progress}");
    }
    gateway.stop().await;
    drop_test_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_whose_store_the_gateway_lacks_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kuper-bridge.toml"), SHIPPED_CONFIG).unwrap();
    let database = test_database_url(dir.path()).await;
    let (port, kuper_port) = (free_port(), free_port());
    let gateway = Gateway::start(dir.path(), port, kuper_port, &database, &[], "serve.log").await;
    // The runner's stores of old, which the shipped config does not list.
    let extra = ["--stores", "merchant=merchant-1", "--scenario", "c-happy-path"];
    let (code, table, progress) = sim_run(dir.path(), &gateway, kuper_port, &extra).await;
    assert_eq!(code, 1, "{table}\n{progress}");
    assert!(table.contains("store_configuration"), "{table}");
    assert!(table.contains("\"merchant-1\""), "the store is named: {table}");
    assert!(table.contains("delivery = \"merchant\""), "and how to configure it: {table}");
    gateway.stop().await;
    drop_test_database(&database).await;
}

/// The sandbox is the embedded default: SQLite, on both passes of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_restart_says_what_it_found_and_fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kuper-bridge.toml"), SHIPPED_CONFIG).unwrap();
    let database = "sqlite://kuper-bridge.db";
    let (port, kuper_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{kuper_port}");
    let sandbox = ["--sandbox", "--sandbox-listen", listen.as_str()];

    let first = Gateway::start(dir.path(), port, kuper_port, database, &sandbox, "first.log").await;
    let orders = first.wait_orders(4).await;
    assert_eq!(kuper_ids(&orders), kuper_ids_of(&README_DEMO_ORDERS), "the README's table on a fresh database");
    first.stop().await;

    let again = Gateway::start(dir.path(), port, kuper_port, database, &sandbox, "again.log").await;
    let orders = again.wait_orders(8).await;
    let log = again.stop().await;
    assert!(log.contains("earlier sandbox run"), "a restart says what it found:\n{log}");
    assert!(log.contains("--fresh"), "and how to start clean:\n{log}");
    let ids = kuper_ids(&orders);
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "new demo orders, no duplicates of the old ones: {ids:?}");
    assert!(!log.contains("did not take a demo order"), "{log}");

    let fresh = ["--sandbox", "--sandbox-listen", listen.as_str(), "--fresh"];
    let clean = Gateway::start(dir.path(), port, kuper_port, database, &fresh, "fresh.log").await;
    let orders = clean.wait_orders(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let orders_later = clean.orders().await;
    let log = clean.stop().await;
    assert_eq!(orders_later.len(), 4, "only the new sandbox's orders: {log}");
    assert_eq!(kuper_ids(&orders), kuper_ids_of(&README_DEMO_ORDERS), "the README's table again");
    assert!(!log.contains("earlier sandbox run"), "{log}");
}

fn kuper_ids_of(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}
