//! `serve --sandbox`: a fake Kuper in the same process, so a newcomer sees live orders of
//! every scheme within the first minute, with nothing but this binary.

use kuper_bridge::config::{Config, StoreConfig};
use kuper_bridge::Running;
use kuper_bridge_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};

pub const MERCHANT_STORE: &str = "sandbox-merchant";
pub const RESTAURANT_STORE: &str = "sandbox-restaurant";

/// Starts the fake Kuper and points the gateway's outbound side at it.
pub async fn start(config: &mut Config, listen: &str) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox: cannot listen on {listen}: {e}"))?;
    let sim_config = SimConfig::default();
    let sim = kuper_bridge_sim::start(listener, sim_config.clone()).await?;
    config.kuper.base_url = sim.base_url();
    config.kuper.auth = "oauth".into();
    config.kuper.client_id = sim_config.client_id;
    config.kuper.client_secret = sim_config.client_secret;
    config.kuper.client_secret_file = None;
    for (id, delivery, restaurant) in [(MERCHANT_STORE, "merchant", false), (RESTAURANT_STORE, "kuper", true)] {
        if !config.stores.iter().any(|s| s.id == id) {
            config.stores.push(StoreConfig {
                id: id.into(),
                delivery: Some(delivery.into()),
                restaurant: Some(restaurant),
            });
        }
    }
    // The fake Kuper serves the pull API, so the sandbox shows reconciliation too.
    config.reconciliation.enabled = true;
    tracing::warn!(kuper = %sim.base_url(), "SANDBOX: notifications go to a fake Kuper in this process, not to Kuper");
    Ok(sim)
}

/// Sends demo orders of every scheme through the fake Kuper to the gateway's webhook.
pub async fn feed(config: &Config, running: &Running, sim: &SimHandle, per_scheme: u32) {
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
        ("A, Kuper delivery", json!({"store": "1184", "shipmentMethod": "by_courier"})),
        ("B, pickup", json!({"store": "1184", "shipmentMethod": "pickup"})),
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
                    tracing::info!(scheme = label, kuper_order = %v["originalOrderId"].as_str().unwrap_or("?"), number = %v["number"].as_str().unwrap_or("?"), "sandbox: demo order sent");
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
        "sandbox ready: list the orders with the next command (API_KEY = the key of that name in your config)"
    );
}
