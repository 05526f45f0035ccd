//! Test harness: the real gateway (in-process, real SQLite file, loopback HTTP) and the
//! Kuper simulator (in-process, loopback HTTP). Nothing is mocked.
#![allow(dead_code)]

use kuper_bridge::config::{ApiKeyConfig, Config, StoreConfig};
use kuper_bridge::Running;
use kuper_bridge_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const READ_KEY: &str = "test-read-key-0123456789";
pub const WEBHOOK_USER: &str = "kuper:secret";
/// The stores the shipped kuper-bridge.toml lists, which the conformance runner names by default.
pub const MERCHANT_STORE: &str = kuper_bridge_sim::runner::SANDBOX_MERCHANT_STORE;
pub const RESTAURANT_STORE: &str = kuper_bridge_sim::runner::SANDBOX_RESTAURANT_STORE;

pub struct Env {
    pub sim: Option<SimHandle>,
    pub sim_url: String,
    pub app: Option<Running>,
    pub app_url: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub http: reqwest::Client,
}

/// The suite runs on SQLite by default and on PostgreSQL with
/// `KUPER_BRIDGE_TEST_BACKEND=postgres` (CI runs both). Each test gets its own database.
pub fn backend_is_postgres() -> bool {
    std::env::var("KUPER_BRIDGE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

fn pg_server() -> String {
    std::env::var("KUPER_BRIDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database for one test.
pub async fn test_database_url(dir: &std::path::Path) -> String {
    if !backend_is_postgres() {
        return format!("sqlite://{}", dir.join("kuper-bridge.db").display());
    }
    use sqlx::Connection;
    let server = pg_server();
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("KUPER_BRIDGE_TEST_BACKEND=postgres but {server} is unreachable: {e}"));
    let name = format!("kb_e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    let base = server.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(server);
    format!("{base}/{name}")
}

/// Drops a test's PostgreSQL database (best effort; SQLite files go with the temp dir).
pub async fn drop_test_database(url: &str) {
    if !url.starts_with("postgres") {
        return;
    }
    use sqlx::Connection;
    if let (Ok(mut admin), Some((_, name))) = (sqlx::PgConnection::connect(&pg_server()).await, url.rsplit_once('/')) {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
    }
}

/// Text columns of a query, on whichever backend the test runs (for checks that read the
/// database directly, like the audit-log secrets test).
pub async fn text_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::{Connection, Row};
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        let rows = sqlx::query(sql).fetch_all(&mut c).await.expect("query");
        rows.iter().map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i).ok().flatten()).collect()).collect()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
        let rows = sqlx::query(sql).fetch_all(&mut c).await.expect("query");
        rows.iter().map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i).ok().flatten()).collect()).collect()
    }
}

pub async fn base_config(dir: &std::path::Path, sim_url: &str) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.database.url = test_database_url(dir).await;
    c.kuper.base_url = sim_url.to_string();
    c.kuper.client_id = "sim-client".into();
    c.kuper.client_secret = "sim-secret".into();
    c.webhook_auth.basic = vec![WEBHOOK_USER.into()];
    c.webhook_auth.bearer = vec!["kuper-bearer-token".into()];
    c.webhook_auth.header_tokens = vec!["kuper-client-token".into()];
    c.api_keys = vec![
        ApiKeyConfig { name: "admin".into(), key: ADMIN_KEY.into(), key_file: None, scopes: vec!["admin".into()] },
        ApiKeyConfig { name: "dashboard".into(), key: READ_KEY.into(), key_file: None, scopes: vec!["read".into()] },
    ];
    c.stores = vec![
        StoreConfig { id: MERCHANT_STORE.into(), delivery: Some("merchant".into()), restaurant: None },
        StoreConfig { id: RESTAURANT_STORE.into(), delivery: Some("kuper".into()), restaurant: Some(true) },
    ];
    // Fast retries so fault tests take seconds; the production schedule is unit-tested.
    c.dispatcher.retry_schedule_ms = vec![50, 100, 200, 300];
    c.dispatcher.throttle_floor_ms = 100;
    c.dispatcher.request_timeout_ms = 800;
    c.dispatcher.connect_timeout_ms = 300;
    c.dispatcher.poll_interval_ms = 200;
    // A killed replica's claims are taken over after 5 × 800 ms + 1 s, not 34 s.
    c.dispatcher.lease_margin_ms = 1_000;
    c
}

pub async fn start_sim(config: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    kuper_bridge_sim::start(listener, config).await.expect("start sim")
}

pub async fn start_app(config: &Config) -> Running {
    let resolved = config.resolve().expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    kuper_bridge::start(config, resolved, listener).await.expect("start app")
}

impl Env {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut Config)) -> Self {
        Self::with_sim(SimConfig::default(), tune).await
    }

    pub async fn with_sim(sim_config: SimConfig, tune: impl FnOnce(&mut Config)) -> Self {
        let sim = start_sim(sim_config).await;
        let sim_url = sim.base_url();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(dir.path(), &sim_url).await;
        tune(&mut config);
        let app = start_app(&config).await;
        let app_url = app.url();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        Self { sim: Some(sim), sim_url, app: Some(app), app_url, dir, config, http }
    }

    /// Stops the gateway (gracefully) and starts it again on the same database.
    pub async fn restart_app(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        let app = start_app(&self.config).await;
        self.app_url = app.url();
        self.app = Some(app);
    }

    pub fn webhook_url(&self) -> String {
        format!("{}{}", self.app_url, self.config.server.webhook_path)
    }

    /// Asks the simulator to create an order aimed at the gateway (it sends order.created).
    pub async fn create_order(&self, params: Value) -> Value {
        let mut body = params;
        body["target"] = json!(self.webhook_url());
        body["auth"] = json!({"basic": WEBHOOK_USER});
        let resp =
            self.http.post(format!("{}/sim/v1/orders", self.sim_url)).json(&body).send().await.expect("sim create");
        assert_eq!(resp.status().as_u16(), 201, "sim refused to create an order");
        let v: Value = resp.json().await.expect("sim json");
        assert_eq!(v["merchantAnswer"]["status"], 200, "gateway answer to order.created: {v}");
        assert_eq!(v["check"]["ok"], true, "the simulator found problems in the created answer: {v}");
        v
    }

    /// Sends a Kuper webhook through the simulator; returns the gateway's HTTP status.
    pub async fn kuper_sends(&self, order: &str, event: &str) -> u16 {
        self.kuper_sends_with(order, json!({"event": event})).await
    }

    pub async fn kuper_sends_with(&self, order: &str, body: Value) -> u16 {
        let resp = self
            .http
            .post(format!("{}/sim/v1/orders/{order}/webhooks", self.sim_url))
            .json(&body)
            .send()
            .await
            .expect("sim webhook");
        assert!(resp.status().is_success(), "sim could not send the webhook: {}", resp.status());
        let v: Value = resp.json().await.expect("json");
        v["status"].as_u64().unwrap_or(0) as u16
    }

    pub async fn act(&self, reference: &str, action: &str, body: Value) -> (u16, Value) {
        self.call("POST", &format!("/api/v1/orders/{reference}/{action}"), Some(body), ADMIN_KEY).await
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>, key: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.app_url);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        req = req.bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("gateway call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn order(&self, reference: &str) -> Value {
        let (status, v) = self.call("GET", &format!("/api/v1/orders/{reference}"), None, READ_KEY).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Waits until the gateway's view of the order satisfies `pred` (it records Kuper's
    /// acknowledgement a moment after Kuper has it).
    pub async fn wait_order(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.order(id).await;
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {v:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn sim_order(&self, id: &str) -> Value {
        let resp = self.http.get(format!("{}/sim/v1/orders/{id}", self.sim_url)).send().await.expect("sim get");
        resp.json().await.expect("json")
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}{path}", self.sim_url)).json(&body).send().await.expect("sim post");
        assert!(resp.status().is_success(), "sim {path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    pub async fn sim_delete(&self, path: &str) {
        let _ = self.http.delete(format!("{}{path}", self.sim_url)).send().await;
    }

    /// Waits until the simulator has accepted `events` (in this order) for the order; any
    /// refusal fails the test.
    pub async fn wait_accepted(&self, id: &str, events: &[&str]) -> Value {
        self.wait_accepted_past(id, events, None).await
    }

    /// As `wait_accepted`, for a test that provokes refusals under the simulator's rule
    /// `expected` (e.g. `unauthorized` after a revoked token): those are part of the scenario.
    pub async fn wait_accepted_past(&self, id: &str, events: &[&str], expected: Option<&str>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.sim_order(id).await;
            let accepted = accepted_events(&v);
            if accepted.len() >= events.len() {
                assert_eq!(accepted, events, "Kuper's view of {id}: {v:#}");
                return v;
            }
            let unexpected = |x: &&Value| x["verdict"] == "rejected" && expected.is_none_or(|rule| x["rule"] != rule);
            if let Some(rejected) = v["notifications"].as_array().and_then(|n| n.iter().find(unexpected)) {
                panic!("the simulator rejected a notification of {id}: {rejected:#}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {events:?} on {id}; Kuper saw {accepted:?}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the gateway's outbox satisfies `pred`.
    pub async fn wait_outbox(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = self.call("GET", "/api/v1/outbox?limit=1000", None, READ_KEY).await;
            let records = v["records"].as_array().cloned().unwrap_or_default();
            if pred(&records) {
                return records;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {records:#?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        drop_test_database(&self.config.database.url).await;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }
}

pub fn accepted_events(sim_order: &Value) -> Vec<String> {
    sim_order["notifications"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter(|x| x["verdict"] == "accepted" || x["verdict"] == "repeat_accepted")
                .filter_map(|x| x["event"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn id_of(created: &Value) -> String {
    created["originalOrderId"].as_str().expect("originalOrderId").to_string()
}

/// The real binary, for tests that kill it.
pub async fn spawn_gateway(config: &std::path::Path, dir: &std::path::Path) -> tokio::process::Child {
    spawn_gateway_logging(config, dir, "warn", None).await
}

/// The binary with its log level, its stdout and stderr written to `log` (or discarded).
pub async fn spawn_gateway_logging(
    config: &std::path::Path,
    dir: &std::path::Path,
    level: &str,
    log: Option<&std::path::Path>,
) -> tokio::process::Child {
    let out = |log: Option<&std::path::Path>| match log {
        Some(p) => {
            std::process::Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).expect("log file"))
        }
        None => std::process::Stdio::null(),
    };
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(dir)
        .env("RUST_LOG", level)
        .stdout(out(log))
        .stderr(out(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kuper-bridge")
}

pub async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kuper-bridge did not come up at {url}");
}

pub fn toml_of(c: &kuper_bridge::config::Config) -> String {
    // The config types serialize to exactly what `load` reads back.
    let value = serde_json::to_value(c).unwrap();
    json_to_toml(&value, "")
}

/// Minimal JSON → TOML for the test's own config (tables, arrays of tables, scalars).
fn json_to_toml(v: &Value, prefix: &str) -> String {
    let Value::Object(map) = v else { return String::new() };
    let mut out = String::new();
    let scalar = |x: &Value| match x {
        Value::String(s) => Some(format!("{s:?}")),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) if a.iter().all(|e| !e.is_object()) => Some(format!(
            "[{}]",
            a.iter()
                .map(|e| match e {
                    Value::String(s) => format!("{s:?}"),
                    o => o.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => None,
    };
    for (k, x) in map {
        if let Some(s) = scalar(x) {
            out.push_str(&format!("{k} = {s}\n"));
        }
    }
    for (k, x) in map {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match x {
            Value::Object(_) => {
                out.push_str(&format!("\n[{name}]\n"));
                out.push_str(&json_to_toml(x, &name));
            }
            Value::Array(a) if a.iter().any(Value::is_object) => {
                for e in a {
                    out.push_str(&format!("\n[[{name}]]\n"));
                    out.push_str(&json_to_toml(e, &name));
                }
            }
            _ => {}
        }
    }
    out
}

/// An RFC 3339 time `minutes` from now, in Moscow time. The API refuses a promised time
/// (`expectedAssemblyTime`, `at`) that has already passed, so tests never send fixed dates.
pub fn moscow_in(minutes: i64) -> String {
    let msk = chrono::FixedOffset::east_opt(3 * 3600).expect("+03:00 is a valid offset");
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .with_timezone(&msk)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
