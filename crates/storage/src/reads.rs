//! The read queries of the console, the API and the deadline sweep, written once for both
//! backends: each runs on the backend's sqlx pool of readers (PostgreSQL's pool, SQLite's
//! read-only connections). Only what differs is passed in: the name index of the order
//! filter, and the filter as the backend can bind it. The hand-written queries use `$N`
//! placeholders, which sqlx-sqlite binds by their number too; a `QueryBuilder` writes `?` on
//! SQLite, so `$N` text must never be pushed into one.

use crate::common::{
    self, event_from_row, order_from_row, outbox_from_row, Columns, NameIndex, EVENT_COLUMNS, ORDER_COLUMNS,
    OUTBOX_COLUMNS,
};
use crate::{EventRecord, OrderFilter, OutboxRecord, OutboxStatus, Result, StoredOrder};
use kuper_bridge_domain::deadlines::DeadlineKind;
use sqlx::{Database, Pool, QueryBuilder, Row};
use std::collections::HashMap;

/// A backend's reader pool, for the queries below, with what differs between backends.
pub(crate) struct Reads<'p, DB: Database> {
    pub pool: &'p Pool<DB>,
    /// How the order filter finds a customer's name: FTS5 on SQLite, a tsvector on PostgreSQL.
    pub names: NameIndex,
    /// The order filter as the backend can bind it (PostgreSQL TEXT cannot hold NUL).
    pub bindable: fn(&OrderFilter) -> OrderFilter,
}

/// The queries, for one concrete backend. A macro rather than a generic `impl<DB: Database>`:
/// `QueryBuilder::build` borrows the builder for the lifetime of its arguments, which a generic
/// backend's arguments type cannot shorten (SQLite's carries a lifetime), so generic code that
/// builds and runs a query in one function does not compile. Expanded once per backend below.
macro_rules! reads_on {
    ($db:ty) => {
        impl Reads<'_, $db> {
            pub async fn list_orders(&self, f: &OrderFilter) -> Result<Vec<StoredOrder>> {
                // Only the filters given become conditions, so the (state, id), (scheme, id) and
                // (store_id, id) indexes serve them; the SQL text is built from constants, values
                // are bound.
                let mut q = QueryBuilder::<$db>::new("");
                common::push_order_page(&mut q, ORDER_COLUMNS, &(self.bindable)(f), self.names);
                let rows = q.build().fetch_all(self.pool).await?;
                rows.iter().map(order_from_row).collect()
            }

            pub async fn order_events(&self, order_id: i64) -> Result<Vec<EventRecord>> {
                let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE order_id = $1 ORDER BY id"))
                    .bind(order_id)
                    .fetch_all(self.pool)
                    .await?;
                rows.iter().map(event_from_row).collect()
            }

            pub async fn list_outbox(&self, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxRecord>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox"));
                if let Some(status) = status {
                    q.push(" WHERE status = ").push_bind(status.as_str());
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(limit.clamp(1, 10_000));
                let rows = q.build().fetch_all(self.pool).await?;
                rows.iter().map(outbox_from_row).collect()
            }

            pub async fn get_outbox(&self, outbox_id: i64) -> Result<Option<OutboxRecord>> {
                let row = sqlx::query(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"))
                    .bind(outbox_id)
                    .fetch_optional(self.pool)
                    .await?;
                row.as_ref().map(outbox_from_row).transpose()
            }

            pub async fn outbox_attempts(&self, outbox_id: i64) -> Result<Vec<EventRecord>> {
                let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE outbox_id = $1 ORDER BY id"))
                    .bind(outbox_id)
                    .fetch_all(self.pool)
                    .await?;
                rows.iter().map(event_from_row).collect()
            }

            pub async fn orders_due_for_deadlines(
                &self,
                now: i64,
                after: crate::DeadlineCursor,
                limit: i64,
            ) -> Result<Vec<crate::DeadlineCandidate>> {
                // The predicate and the order are the partial index's own (orders_deadline_check):
                // only due open orders are read.
                let rows = sqlx::query(&format!(
                    "SELECT {ORDER_COLUMNS}, deadline_check_at FROM orders
                     WHERE state NOT IN ('delivered', 'canceled') AND deadline_check_at <= $1
                       AND (deadline_check_at, id) > ($2, $3)
                     ORDER BY deadline_check_at, id LIMIT $4"
                ))
                .bind(now)
                .bind(after.check_at)
                .bind(after.order_id)
                .bind(limit.clamp(1, 10_000))
                .fetch_all(self.pool)
                .await?;
                let orders = rows
                    .iter()
                    .map(|r| Ok((order_from_row(r)?, r.try_get::<i64, _>("deadline_check_at")?)))
                    .collect::<Result<Vec<_>>>()?;
                if orders.is_empty() {
                    return Ok(Vec::new());
                }
                let ids: Vec<i64> = orders.iter().map(|(o, _)| o.id).collect();
                let mut q = QueryBuilder::<$db>::new("");
                common::push_recorded_deadlines(&mut q, &ids);
                let recorded = q
                    .build()
                    .fetch_all(self.pool)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("order_id")?, r.try_get("kind")?, r.try_get("stage")?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(common::deadline_candidates(orders, recorded))
            }

            pub async fn past_due_counts(&self) -> Result<Vec<(DeadlineKind, i64)>> {
                let mut q = QueryBuilder::<$db>::new("");
                common::push_past_due_counts(&mut q);
                let rows = q.build().fetch_all(self.pool).await?;
                let mut out = Vec::new();
                for r in &rows {
                    let kind: String = r.try_get("kind")?;
                    if let Some(kind) = DeadlineKind::parse(&kind) {
                        out.push((kind, r.try_get("n")?));
                    }
                }
                Ok(out)
            }

            pub async fn count_orders_by_state(&self, f: &OrderFilter) -> Result<Vec<(String, i64)>> {
                let mut q = QueryBuilder::<$db>::new("SELECT state, COUNT(*) AS n FROM orders");
                common::push_order_filter(&mut q, &(self.bindable)(f), false, self.names);
                q.push(" GROUP BY state ORDER BY state");
                let rows = q.build().fetch_all(self.pool).await?;
                rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
            }

            pub async fn attention_of(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<crate::Attention>>> {
                if ids.is_empty() {
                    return Ok(Default::default());
                }
                let mut q = QueryBuilder::<$db>::new("");
                common::push_attention_of(&mut q, ids);
                let rows = q.build().fetch_all(self.pool).await?;
                let mut flags = Vec::with_capacity(rows.len());
                for r in &rows {
                    let flag: String = r.try_get(1)?;
                    if let Some(a) = common::attention_flag(&flag) {
                        flags.push((r.try_get(0)?, a));
                    }
                }
                Ok(common::attention_map(flags))
            }

            pub async fn list_outbox_by(&self, f: &crate::OutboxFilter) -> Result<Vec<OutboxRecord>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox"));
                common::push_outbox_filter(&mut q, f);
                let rows = q.build().fetch_all(self.pool).await?;
                rows.iter().map(outbox_from_row).collect()
            }

            pub async fn outbox_destinations(
                &self,
                forwarding: &crate::Forwarding,
            ) -> Result<Vec<crate::DestinationStats>> {
                let rows = sqlx::query(common::DESTINATIONS_SQL).fetch_all(self.pool).await?;
                let open = rows.iter().map(common::destination_from_row).collect::<Result<Vec<_>>>()?;
                Ok(common::destinations(forwarding, open))
            }

            pub async fn refused_webhooks(&self, limit: i64) -> Result<Vec<EventRecord>> {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE order_id IS NULL AND {} ORDER BY id DESC LIMIT ",
                    common::REFUSED_WEBHOOK_SQL
                ));
                q.push_bind(limit.clamp(1, 1000));
                let rows = q.build().fetch_all(self.pool).await?;
                rows.iter().map(event_from_row).collect()
            }

            pub async fn health_snapshot(
                &self,
                forwarding: &crate::Forwarding,
                now: i64,
            ) -> Result<crate::HealthSnapshot> {
                let last_kuper_success_at =
                    match sqlx::query(common::LAST_KUPER_SUCCESS_SQL).fetch_optional(self.pool).await? {
                        Some(row) => row.int_opt("sent_at")?,
                        None => None,
                    };
                let last_kuper_error = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE {}",
                    common::LAST_KUPER_ERROR_WHERE
                ))
                .fetch_optional(self.pool)
                .await?;
                let webhook_errors_15min: i64 = sqlx::query(common::WEBHOOK_ERRORS_SINCE_SQL)
                    .bind(now - 15 * 60 * 1000)
                    .fetch_one(self.pool)
                    .await?
                    .try_get(0)?;
                let orders_needing_attention: i64 =
                    sqlx::query(&format!("SELECT COUNT(*) FROM ({}) AS attention", common::ATTENTION_IDS_SQL))
                        .fetch_one(self.pool)
                        .await?
                        .try_get(0)?;
                let last_reconciliation = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE kind = 'reconciliation' ORDER BY id DESC LIMIT 1"
                ))
                .fetch_optional(self.pool)
                .await?;
                Ok(crate::HealthSnapshot {
                    last_kuper_success_at,
                    last_kuper_error: last_kuper_error.as_ref().map(event_from_row).transpose()?,
                    webhook_errors_15min,
                    orders_needing_attention,
                    last_reconciliation: last_reconciliation.as_ref().map(event_from_row).transpose()?,
                    destinations: self.outbox_destinations(forwarding).await?,
                })
            }
        }
    };
}

reads_on!(sqlx::Postgres);
reads_on!(sqlx::Sqlite);
