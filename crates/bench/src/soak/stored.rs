//! The gateway's side at the end: its orders through the REST API, its outbox, and the counts
//! read from its database directly.

use super::orders::Shared;
use crate::gateway::API_KEY;
use anyhow::{anyhow, Result};
use kuper_bridge_bench::verdict::StoredOrder;
use serde_json::Value;
use std::collections::BTreeMap;

/// Rows and distinct Kuper orders in the `orders` table, and outbox rows by status, read from
/// the database itself.
pub(super) async fn database_counts(url: &str) -> Result<(i64, i64, BTreeMap<String, i64>)> {
    use sqlx::{Connection, Row};
    const ORDERS: &str =
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(DISTINCT original_order_id) AS BIGINT) AS d FROM orders";
    const OUTBOX: &str = "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM outbox GROUP BY status";
    let mut by_status = BTreeMap::new();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        let r = sqlx::query(ORDERS).fetch_one(&mut c).await?;
        for row in sqlx::query(OUTBOX).fetch_all(&mut c).await? {
            by_status.insert(row.try_get::<String, _>("status")?, row.try_get::<i64, _>("n")?);
        }
        Ok((r.try_get("n")?, r.try_get("d")?, by_status))
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        let r = sqlx::query(ORDERS).fetch_one(&mut c).await?;
        for row in sqlx::query(OUTBOX).fetch_all(&mut c).await? {
            by_status.insert(row.try_get::<String, _>("status")?, row.try_get::<i64, _>("n")?);
        }
        Ok((r.try_get("n")?, r.try_get("d")?, by_status))
    }
}

/// Every order through the REST API, `limit=500` pages following `nextCursor`.
pub(super) async fn stored_orders(sh: &Shared) -> Result<Vec<StoredOrder>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/orders?limit=500", sh.app);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = sh.http.get(url).bearer_auth(API_KEY).send().await?.error_for_status()?.json().await?;
        for o in v["orders"].as_array().ok_or_else(|| anyhow!("no orders array: {v}"))? {
            out.push(StoredOrder {
                original_order_id: o["originalOrderId"].as_str().unwrap_or("").to_string(),
                number: o["number"].as_str().unwrap_or("").to_string(),
                state: o["state"].as_str().unwrap_or("?").to_string(),
                payment: o["paymentState"].as_str().unwrap_or("?").to_string(),
            });
        }
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

pub(super) async fn pending_count(sh: &Shared, status: &str, limit: usize) -> Result<usize> {
    crate::ctl::outbox_count(&sh.http, &sh.app, status, limit).await
}
