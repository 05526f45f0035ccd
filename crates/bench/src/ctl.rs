//! Control calls: orders placed through the simulator (Kuper's side) and actions and outbox
//! reads through the gateway's REST API (the store's side).

use crate::gateway::{API_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct Ctl {
    pub(crate) http: reqwest::Client,
    pub(crate) sim: String,
    pub(crate) app: String,
}

impl Ctl {
    pub(crate) async fn create_sim_order(&self, positions: &Value) -> Result<String> {
        let body = json!({
            "target": format!("{}/kuper-webhook", self.app),
            "auth": {"basic": format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")},
            "store": "1184",
            "positions": positions,
        });
        let resp = self.http.post(format!("{}/sim/v1/orders", self.sim)).json(&body).send().await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.context("simulator answer is not JSON")?;
        if status != 201 || v["merchantAnswer"]["status"] != 200 || v["check"]["ok"] != true {
            bail!("creating an order through the simulator failed (HTTP {status}): {v}");
        }
        v["originalOrderId"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no originalOrderId in {v}"))
    }

    pub(crate) async fn create_sim_orders(
        &self,
        positions: &Value,
        count: usize,
        concurrency: usize,
    ) -> Result<Vec<String>> {
        let next = Arc::new(AtomicUsize::new(0));
        let ctl = Arc::new(Ctl { http: self.http.clone(), sim: self.sim.clone(), app: self.app.clone() });
        let positions = Arc::new(positions.clone());
        let mut tasks = Vec::new();
        for _ in 0..concurrency.min(count.max(1)) {
            let (next, ctl, positions) = (next.clone(), ctl.clone(), positions.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    ids.push(ctl.create_sim_order(&positions).await?);
                }
                Ok::<_, anyhow::Error>(ids)
            }));
        }
        let mut ids = Vec::with_capacity(count);
        for t in tasks {
            ids.extend(t.await.context("an order-creating task panicked")??);
        }
        Ok(ids)
    }

    pub(crate) async fn act(&self, id: &str, action: &str) -> Result<u16> {
        let resp = self
            .http
            .post(format!("{}/api/v1/orders/{id}/{action}", self.app))
            .bearer_auth(API_KEY)
            .json(&json!({}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let _ = resp.bytes().await?;
        Ok(status)
    }

    /// Whether the gateway's outbox has a pending record. `limit=1`: the check must cost the
    /// gateway next to nothing while it is being measured.
    pub(crate) async fn any_pending(&self) -> Result<bool> {
        Ok(outbox_count(&self.http, &self.app, "pending", 1).await? > 0)
    }

    pub(crate) async fn wait_drained(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.any_pending().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the outbox still has pending notifications after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn sim_order(&self, id: &str) -> Result<Value> {
        Ok(self.http.get(format!("{}/sim/v1/orders/{id}", self.sim)).send().await?.error_for_status()?.json().await?)
    }

    pub(crate) async fn sim_log(&self) -> Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!("{}/sim/v1/notifications", self.sim))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match v {
            Value::Array(a) => Ok(a),
            other => bail!("the simulator log is not an array: {other}"),
        }
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
}

pub(crate) fn at_ms(record: &Value) -> Option<i64> {
    let at = record["at"].as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp_millis())
}

pub(crate) fn ms_duration(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

/// How many of the gateway's outbox records have `status`, counted up to `limit` (the REST
/// listing; a small limit keeps the check cheap for the gateway being measured).
pub(crate) async fn outbox_count(http: &reqwest::Client, app: &str, status: &str, limit: usize) -> Result<usize> {
    let v: Value = http
        .get(format!("{app}/api/v1/outbox?status={status}&limit={limit}"))
        .bearer_auth(API_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["records"].as_array().map_or(0, Vec::len))
}
