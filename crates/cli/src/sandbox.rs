//! `serve --sandbox`: a fake Kuper in the same process, so a newcomer sees live orders of
//! every scheme within the first minute, with nothing but this binary.

use kuper_bridge::config::{Choice, Config, StoreConfig};
use kuper_bridge::Running;
use kuper_bridge_app::ui::KuperAuthMode;
use kuper_bridge_domain::Delivery;
use kuper_bridge_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};

// The conformance runner's default stores are these, so `sim run` passes against a gateway
// started with the shipped kuper-bridge.toml (which lists them) or with `serve --sandbox`.
pub use kuper_bridge_sim::runner::{
    DEFAULT_KUPER_STORE as KUPER_STORE, SANDBOX_MERCHANT_STORE as MERCHANT_STORE,
    SANDBOX_RESTAURANT_STORE as RESTAURANT_STORE,
};

/// What the sandbox found in its database before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No orders: the demo orders are the fixed ones of the README's table.
    Empty,
    /// Orders of an earlier run (at least this many). The new fake Kuper knows none of them.
    EarlierOrders(usize),
}

/// `--fresh`: deletes the sandbox's SQLite database (and its WAL files) so the sandbox starts
/// as on a new machine. Refuses a PostgreSQL database (never dropped by a flag) and a file
/// another process is serving.
pub fn wipe(config: &Config) -> anyhow::Result<()> {
    let url = &config.database.url;
    let Some(file) = kuper_bridge_storage::sqlite_file(url) else {
        anyhow::bail!(
            "--fresh deletes the sandbox's SQLite database; {} is not a SQLite file (drop a PostgreSQL database yourself)",
            kuper_bridge_storage::redact_url(url)
        );
    };
    // Held while deleting: a gateway serving this file keeps its lock, and its data.
    let _lock = kuper_bridge::lock_sqlite(url)?;
    let mut removed = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("--fresh: cannot delete {}: {e}", path.display()),
        }
    }
    if removed.is_empty() {
        tracing::info!(database = %file.display(), "sandbox --fresh: no earlier database; starting empty");
    } else {
        tracing::warn!(deleted = %removed.join(", "), "sandbox --fresh: the earlier sandbox database was deleted");
    }
    Ok(())
}

/// Looks at the database before the sandbox starts, so a restart on an old sandbox says what
/// it found instead of replaying the same demo orders as duplicates.
pub async fn inspect(config: &Config) -> anyhow::Result<Found> {
    if let Some(file) = kuper_bridge_storage::sqlite_file(&config.database.url) {
        if !file.exists() {
            return Ok(Found::Empty);
        }
    }
    let store = kuper_bridge_storage::open(&config.database.url, &config.database.store_options()).await?;
    store.migrate().await?;
    const ENOUGH_TO_SAY: i64 = 10_000;
    let filter = kuper_bridge_storage::OrderFilter { limit: ENOUGH_TO_SAY, ..Default::default() };
    let orders = store.list_orders(&filter).await?.len();
    Ok(if orders == 0 { Found::Empty } else { Found::EarlierOrders(orders) })
}

/// Starts the fake Kuper and points the gateway's outbound side at it. On a database that
/// already holds orders the fake Kuper draws other order ids than the fixed demo ones: the
/// same ids again would reach the gateway as duplicates of orders this new fake Kuper never
/// saw, and reconciliation would then report them as disagreements.
pub async fn start(config: &mut Config, listen: &str, found: Found) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox: cannot listen on {listen}: {e}"))?;
    let mut sim_config = SimConfig::default();
    if let Found::EarlierOrders(count) = found {
        sim_config.seed = rand::random();
        tracing::warn!(
            orders = count,
            database = %kuper_bridge_storage::redact_url(&config.database.url),
            "sandbox: this database holds orders of an earlier sandbox run; the new fake Kuper knows none of them \
             (their notifications will be refused as unknown orders). New demo orders get new ids, not the README's. \
             For a clean sandbox: serve --sandbox --fresh"
        );
    }
    let sim = kuper_bridge_sim::start(listener, sim_config.clone()).await?;
    config.kuper.base_url = sim.base_url();
    config.kuper.auth = Choice(KuperAuthMode::OAuth);
    config.kuper.client_id = sim_config.client_id;
    config.kuper.client_secret = sim_config.client_secret;
    config.kuper.client_secret_file = None;
    for (id, delivery, restaurant) in
        [(MERCHANT_STORE, Delivery::Merchant, false), (RESTAURANT_STORE, Delivery::Kuper, true)]
    {
        if !config.stores.iter().any(|s| s.id == id) {
            config.stores.push(StoreConfig {
                id: id.into(),
                delivery: Some(Choice(delivery)),
                restaurant: Some(restaurant),
            });
        }
    }
    // The fake Kuper serves the pull API, so the sandbox shows reconciliation too.
    config.reconciliation.enabled = true;
    tracing::warn!(kuper = %sim.base_url(), "SANDBOX: notifications go to a fake Kuper in this process, not to Kuper");
    Ok(sim)
}

/// The sandbox's console login: public on purpose (printed at start and in the README), and
/// made only by `serve --sandbox`, never by a plain `serve`.
pub const DEMO_OPERATOR: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-sandbox-1";

/// Creates the demo operator (role `operator`) when the database has no account of that name.
/// An existing one is left as it is: whoever changed its password or disabled it meant it.
pub async fn ensure_demo_operator(store: &dyn kuper_bridge_storage::Store) -> anyhow::Result<()> {
    if store.find_operator(DEMO_OPERATOR).await?.is_some() {
        return Ok(());
    }
    let password_hash = kuper_bridge_app::operators::hash_password(DEMO_PASSWORD)?;
    let new = kuper_bridge_storage::NewOperator {
        name: DEMO_OPERATOR.into(),
        role: kuper_bridge_storage::OperatorRole::Operator,
        password_hash,
    };
    match store.create_operator(&new).await {
        // Another process made it meanwhile: the same outcome.
        Ok(_) | Err(kuper_bridge_storage::StoreError::OperatorExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends demo orders of every scheme through the fake Kuper to the gateway's webhook.
pub async fn feed(config: &Config, running: &Running, sim: &SimHandle, per_scheme: u32) {
    if let Err(e) = ensure_demo_operator(running.store.as_ref()).await {
        tracing::warn!(error = %e, "sandbox: the demo console operator could not be created");
    }
    let auth = if let Some(b) = config.webhook_auth.basic.first() {
        json!({"basic": b})
    } else if let Some(b) = config.webhook_auth.bearer.first() {
        json!({"bearer": b})
    } else if let Some(t) = config.webhook_auth.header_tokens.first() {
        json!({"header_token": t})
    } else {
        tracing::warn!("sandbox: no webhook credential configured; demo orders not sent");
        return;
    };
    let target = format!("{}{}", running.url(), config.server.webhook_path);
    let http = reqwest::Client::new();
    let kinds = [
        ("A, Kuper delivery", json!({"store": KUPER_STORE, "shipmentMethod": "by_courier"})),
        ("B, pickup", json!({"store": KUPER_STORE, "shipmentMethod": "pickup"})),
        ("C, merchant delivery", json!({"store": MERCHANT_STORE, "integration": "delivery_by_merchant"})),
        ("A, restaurant", json!({"store": RESTAURANT_STORE, "restaurant": true})),
    ];
    for _ in 0..per_scheme {
        for (label, params) in &kinds {
            let mut body = params.clone();
            body["target"] = json!(target);
            body["auth"] = auth.clone();
            match http.post(format!("{}/sim/v1/orders", sim.base_url())).json(&body).send().await {
                Ok(r) => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let kuper_order = v["originalOrderId"].as_str().unwrap_or("?");
                    match v["number"].as_str() {
                        Some(number) => {
                            tracing::info!(scheme = label, kuper_order, number, "sandbox: demo order created")
                        }
                        None => {
                            tracing::warn!(scheme = label, kuper_order, answer = %v, "sandbox: the gateway did not take a demo order")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sandbox: could not send a demo order"),
            }
        }
    }
    let key = config.api_keys.first().map(|k| k.name.as_str()).unwrap_or("<none configured>");
    tracing::info!(
        next = %format!("curl -H \"Authorization: Bearer $API_KEY\" {}/api/v1/orders", running.url()),
        api_key_name = key,
        fake_kuper = %format!("{}/sim/v1/orders", sim.base_url()),
        console = %format!("{}/ui/", running.url()),
        console_login = %format!("{DEMO_OPERATOR} / {DEMO_PASSWORD}"),
        "sandbox ready: list the orders with the next command (API_KEY = the key of that name in your config)"
    );
    tracing::info!(
        console = %format!("{}/ui/", running.url()),
        login = DEMO_OPERATOR,
        password = DEMO_PASSWORD,
        "sandbox console: open the console in a browser and sign in with the demo operator (sandbox only)"
    );
}
