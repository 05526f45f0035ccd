//! SQLite backend: WAL, `synchronous=FULL` (durable commits), one writer connection (SQLite
//! has one writer anyway; queuing in-process avoids busy-waiting) and a small reader pool.
//! Write transactions start with `BEGIN IMMEDIATE` so another process's writer is waited for
//! (busy_timeout) instead of failing on lock upgrade.

use crate::common::{self, event_from_row, order_from_row, outbox_from_row};
use crate::statements;
use crate::units::{self, RecordChange, UnitTx};
use crate::{
    now_ms, AcceptanceDecision, ActionRequest, ActionResult, AttemptReport, EventRecord, Exchange, IngestResult,
    OrderFilter, OutboxRecord, OutboxStats, OutboxStatus, PickupVerification, Result, Store, StoreError, StoredOrder,
};
use async_trait::async_trait;
use kuper_bridge_domain::{Order, Policy};
use kuper_bridge_wire::WebhookEnvelope;
use rand::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: SqlitePool,
    /// Every write goes through here (group commit: one fsync for many writers).
    group: crate::group_commit::GroupWriter,
    reader: SqlitePool,
    signal: Arc<Notify>,
    forwarding: Arc<crate::Forwarding>,
}

/// SQLite's default page size, which kuper-bridge never changes.
const SQLITE_PAGE_SIZE: u64 = 4096;
const ORDER_COLUMNS: &str = "id, data, created_at, updated_at";
const OUTBOX_COLUMNS: &str =
    "id, order_id, kind, destination, event, body, status, attempts, next_attempt_at, in_doubt, last_status, last_error, created_at, sent_at, lease_owner, retry_since, idempotency_key";
/// A pending record that is the head of its order's queue (no earlier pending or dead record:
/// per-order FIFO, protocol.md §9), due, and not under a live lease. Binds ?1 = now.
/// Without statistics SQLite would rather walk `outbox_status_id` over every pending record
/// (the waiting ones too) and sort; the due-heads index is the plan, so it is named.
pub(crate) const CLAIM_FROM: &str = "outbox o INDEXED BY outbox_pending_due";
pub(crate) const HEAD_DUE: &str = "o.status = 'pending' AND o.next_attempt_at <= ?1 AND (o.lease_until IS NULL OR o.lease_until <= ?1)
    AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))";
const EVENT_COLUMNS: &str = "id, order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id, actor";

impl SqliteStore {
    async fn change_operator(&self, name: &str, change: common::OperatorChange<'_>) -> Result<crate::Operator> {
        let mut tx = self.begin().await?;
        // A disabled account or a changed password ends every session of the account.
        sqlx::query("DELETE FROM sessions WHERE operator_id IN (SELECT id FROM operators WHERE name = ?1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let query = format!(
            "UPDATE operators SET {} = ?2, updated_at = ?3 WHERE name = ?1 RETURNING {}",
            change.column(),
            common::OPERATOR_COLUMNS
        );
        let query = sqlx::query(&query).bind(name);
        let query = match change {
            common::OperatorChange::Disabled(disabled) => query.bind(disabled),
            common::OperatorChange::PasswordHash(hash) => query.bind(hash),
        };
        let row = query.bind(now_ms()).fetch_optional(&mut *tx).await?;
        let updated = row.as_ref().map(common::operator_from_row).transpose()?;
        tx.commit().await?;
        updated.ok_or_else(|| StoreError::OperatorNotFound(name.to_string()))
    }

    pub async fn open(url: &str, store_options: &crate::StoreOptions) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(store_options.busy_timeout);
        // SQLite's own cap (per connection, so on every one): past it a write fails with
        // SQLITE_FULL exactly as on a full disk, and is answered 503.
        let options = match store_options.sqlite_max_size_bytes {
            Some(bytes) => options.pragma("max_page_count", (bytes / SQLITE_PAGE_SIZE).max(1).to_string()),
            None => options,
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            group: crate::group_commit::GroupWriter::new(writer.clone()),
            writer,
            reader,
            signal: Arc::new(Notify::new()),
            forwarding: Arc::new(store_options.forwarding.clone()),
        })
    }

    /// A write: its own savepoint in the shared group-commit transaction.
    async fn begin(&self) -> Result<crate::group_commit::GroupTx> {
        self.group.begin().await
    }

    /// A unit of work (`units`) in its own savepoint.
    async fn unit(&self) -> Result<SqliteUnit> {
        Ok(SqliteUnit(self.begin().await?))
    }

    /// A unit's answer, after waking the dispatcher if it queued or freed a notification.
    fn woken<T>(&self, done: units::Done<T>) -> T {
        if done.wake {
            self.signal.notify_one();
        }
        done.value
    }
}

/// The primitives of the units of work on SQLite. One writer at a time holds the write
/// connection, so nothing needs a row lock.
struct SqliteUnit(crate::group_commit::GroupTx);

#[async_trait]
impl UnitTx for SqliteUnit {
    async fn order_by_identity(&mut self, env: &WebhookEnvelope) -> Result<Option<StoredOrder>> {
        find_by_identity(&mut self.0, env).await
    }

    async fn order_by_reference(&mut self, reference: &str) -> Result<Option<StoredOrder>> {
        find_order_in(&mut self.0, reference).await
    }

    async fn order_by_id(&mut self, id: i64) -> Result<Option<StoredOrder>> {
        let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    async fn record_and_order(&mut self, outbox_id: i64) -> Result<(OutboxRecord, StoredOrder)> {
        let record = fetch_outbox(&mut self.0, outbox_id).await?;
        let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?"))
            .bind(record.order_id)
            .fetch_one(&mut *self.0)
            .await?;
        Ok((record, order_from_row(&row)?))
    }

    async fn record(&mut self, outbox_id: i64) -> Result<OutboxRecord> {
        fetch_outbox(&mut self.0, outbox_id).await
    }

    async fn number_taken(&mut self, number: &str) -> Result<bool> {
        let taken: i64 =
            statements::number_taken::<sqlx::Sqlite>(number).build_query_scalar().fetch_one(&mut *self.0).await?;
        Ok(taken > 0)
    }

    async fn pickup_code_in_use(&mut self, store_id: &str, code: &str, except_order: i64) -> Result<bool> {
        pickup_code_in_use(&mut self.0, store_id, code, except_order).await
    }

    async fn earlier_request(&mut self, key: &str) -> Result<Option<(String, i64, Vec<i64>)>> {
        let earlier: Option<(String, i64, String)> =
            statements::earlier_request::<sqlx::Sqlite>(key).build_query_as().fetch_optional(&mut *self.0).await?;
        earlier.map(|(hash, order_id, ids)| Ok((hash, order_id, serde_json::from_str(&ids)?))).transpose()
    }

    async fn create_order(&mut self, draft: &Order, prefix: &str, now: i64) -> Result<Option<(i64, Order)>> {
        // The number is `{prefix}{id}` and the id comes from the insert; a unique placeholder
        // holds the number's place until the update in the same transaction.
        let placeholder = format!("pending-{now}-{}", rand::rng().random::<u64>());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?) RETURNING id",
        )
        .bind(&draft.original_order_id)
        .bind(&draft.order_uuid)
        .bind(&placeholder)
        .bind(&draft.store_id)
        .bind(draft.scheme.as_str())
        .bind(draft.state.as_str())
        .bind(now)
        .bind(now)
        .fetch_one(&mut *self.0)
        .await?;
        let order = Order { number: format!("{prefix}{id}"), ..draft.clone() };
        save_order(&mut self.0, id, &order, now).await?;
        Ok(Some((id, order)))
    }

    async fn save_order(&mut self, id: i64, order: &Order, now: i64) -> Result<()> {
        save_order(&mut self.0, id, order, now).await
    }

    async fn change_record(&mut self, id: i64, change: &RecordChange, now: i64) -> Result<()> {
        statements::record_change::<sqlx::Sqlite>(id, change, now).build().execute(&mut *self.0).await?;
        Ok(())
    }

    async fn supersede_pending(&mut self, order_id: i64, reason: &str, now: i64) -> Result<u64> {
        supersede_pending(&mut self.0, order_id, now, reason).await
    }

    async fn promote_queue_head(&mut self, order_id: i64, destination: &str, now: i64) -> Result<()> {
        promote_queue_head(&mut self.0, order_id, destination, now).await
    }

    async fn insert_outbox(&mut self, order_id: i64, rows: &[common::OutboxRow], now: i64) -> Result<Vec<i64>> {
        insert_outbox(&mut self.0, order_id, rows, now).await
    }

    async fn insert_event(
        &mut self,
        order_id: Option<i64>,
        outbox_id: Option<i64>,
        exchange: &Exchange,
        now: i64,
    ) -> Result<()> {
        insert_event(&mut self.0, order_id, outbox_id, now, exchange).await
    }

    async fn insert_deadline(&mut self, order_id: i64, kind: &str, stage: &str, due_at: i64, now: i64) -> Result<bool> {
        let done = statements::insert_deadline::<sqlx::Sqlite>(order_id, kind, stage, due_at, now)
            .build()
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remember_request(
        &mut self,
        key: &crate::IdempotencyKey,
        order_id: i64,
        outbox_ids: &[i64],
        now: i64,
    ) -> Result<()> {
        statements::remember_request::<sqlx::Sqlite>(key, order_id, outbox_ids, now)?
            .build()
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        self.0.commit().await
    }
}

async fn insert_event(
    conn: &mut SqliteConnection,
    order_id: Option<i64>,
    outbox_id: Option<i64>,
    at: i64,
    e: &Exchange,
) -> Result<()> {
    statements::insert_event::<sqlx::Sqlite>(order_id, outbox_id, at, e).build().execute(conn).await?;
    Ok(())
}

async fn find_order_in(conn: &mut SqliteConnection, reference: &str) -> Result<Option<StoredOrder>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE original_order_id = ?1 OR order_uuid = ?1 OR number = ?1 ORDER BY id LIMIT 1"
    ))
    .bind(reference)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

async fn find_by_identity(conn: &mut SqliteConnection, env: &WebhookEnvelope) -> Result<Option<StoredOrder>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE (?1 IS NOT NULL AND original_order_id = ?1) OR (?2 IS NOT NULL AND order_uuid = ?2) ORDER BY id LIMIT 1"
    ))
    .bind(&env.identity.original_order_id)
    .bind(&env.identity.order_uuid)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

async fn save_order(conn: &mut SqliteConnection, id: i64, order: &Order, now: i64) -> Result<()> {
    let keys = common::search_keys(order);
    sqlx::query(
        "UPDATE orders SET state = ?, data = ?, updated_at = ?, original_order_id = COALESCE(original_order_id, ?), order_uuid = COALESCE(order_uuid, ?),
             phone_key = ?, customer_name = ?, pickup_code = ?, anomalies = ?, deadline_check_at = 0, number = ? WHERE id = ?",
    )
    .bind(order.state.as_str())
    .bind(serde_json::to_string(order)?)
    .bind(now)
    .bind(&order.original_order_id)
    .bind(&order.order_uuid)
    .bind(&keys.phone_key)
    .bind(&keys.customer_name)
    .bind(&keys.pickup_code)
    .bind(keys.anomalies)
    .bind(&order.number)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Fills in the search columns of orders stored before they existed (migration 0009), a
/// page at a time; new and changed orders get them in `save_order`.
async fn backfill_search_keys(store: &SqliteStore) -> Result<u64> {
    let mut done = 0;
    loop {
        let rows = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE customer_name IS NULL LIMIT 500"))
            .fetch_all(&store.reader)
            .await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut tx = store.begin().await?;
        for row in &rows {
            let stored = order_from_row(row)?;
            let keys = common::search_keys(&stored.order);
            sqlx::query(
                "UPDATE orders SET phone_key = ?, customer_name = ?, pickup_code = ?, anomalies = ? WHERE id = ?",
            )
            .bind(&keys.phone_key)
            .bind(&keys.customer_name)
            .bind(&keys.pickup_code)
            .bind(keys.anomalies)
            .bind(stored.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        done += rows.len() as u64;
    }
}

async fn fetch_outbox(conn: &mut SqliteConnection, id: i64) -> Result<OutboxRecord> {
    let row = sqlx::query(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::OutboxNotFound(id))?;
    outbox_from_row(&row)
}

/// Queues rows behind the order's open records of the same destination (or at the head of
/// an empty queue); returns their ids.
async fn insert_outbox(
    conn: &mut SqliteConnection,
    order_id: i64,
    rows: &[common::OutboxRow],
    now: i64,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(
            statements::insert_outbox::<sqlx::Sqlite>(order_id, row, now)
                .build_query_scalar()
                .fetch_one(&mut *conn)
                .await?,
        );
    }
    Ok(ids)
}

/// Makes the first open record of the order due if it was waiting: called by every commit
/// that may have made a record final (sent, skipped, dead letter skipped or superseded).
async fn promote_queue_head(conn: &mut SqliteConnection, order_id: i64, destination: &str, now: i64) -> Result<()> {
    statements::promote_queue_head::<sqlx::Sqlite>(order_id, destination, now).build().execute(conn).await?;
    Ok(())
}

/// Kuper ended the order: queued notifications would only be refused (protocol.md §5).
async fn supersede_pending(conn: &mut SqliteConnection, order_id: i64, now: i64, reason: &str) -> Result<u64> {
    let done = statements::supersede_pending::<sqlx::Sqlite>(order_id, reason, now).build().execute(&mut *conn).await?;
    Ok(done.rows_affected())
}

async fn pickup_code_in_use(
    conn: &mut SqliteConnection,
    store_id: &str,
    code: &str,
    except_order: i64,
) -> Result<bool> {
    let clash: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE store_id = ? AND id <> ? AND state NOT IN ('delivered', 'canceled')
         AND json_extract(data, '$.pickup.code') = ?",
    )
    .bind(store_id)
    .bind(except_order)
    .bind(code)
    .fetch_one(conn)
    .await?;
    Ok(clash > 0)
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        // Unknown applied migrations (a newer release ran first) are not an error.
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.set_ignore_missing(true);
        migrator.run(&self.writer).await?;
        let filled = backfill_search_keys(self).await?;
        if filled > 0 {
            tracing::info!(orders = filled, "filled in the search columns of orders stored by an older version");
        }
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&self.reader)
            .await?;
        let expected = MIGRATOR.iter().count() as i64;
        if applied < expected {
            return Err(StoreError::Unavailable(format!("{applied} of {expected} migrations applied")));
        }
        Ok(())
    }

    fn outbox_signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }

    async fn ingest_webhook_with(
        &self,
        env: &WebhookEnvelope,
        exchange: Exchange,
        policy: &Policy,
        respond: &(dyn for<'r> Fn(&'r IngestResult) -> (u16, String) + Send + Sync),
        acceptance: Option<AcceptanceDecision>,
    ) -> Result<IngestResult> {
        let tx = self.unit().await?;
        let done = units::ingest(tx, &self.forwarding, env, exchange, policy, respond, acceptance, now_ms()).await?;
        Ok(self.woken(done))
    }

    async fn record_exchange(&self, order_id: Option<i64>, exchange: Exchange) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_event(&mut tx, order_id, None, now_ms(), &exchange).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_action_keyed(
        &self,
        reference: &str,
        request: ActionRequest,
        policy: &Policy,
        exchange: Exchange,
        idempotency: Option<crate::IdempotencyKey>,
    ) -> Result<ActionResult> {
        let tx = self.unit().await?;
        let done =
            units::apply_action(tx, &self.forwarding, reference, request, policy, exchange, idempotency, now_ms())
                .await?;
        Ok(self.woken(done))
    }

    async fn verify_pickup_code(
        &self,
        reference: &str,
        code: &str,
        policy: &Policy,
        exchange: Exchange,
    ) -> Result<PickupVerification> {
        units::verify_pickup_code(self.unit().await?, reference, code, policy, exchange, now_ms()).await
    }

    async fn find_order(&self, reference: &str) -> Result<Option<StoredOrder>> {
        let mut conn = self.reader.acquire().await?;
        find_order_in(&mut conn, reference).await
    }

    async fn list_orders(&self, f: &OrderFilter) -> Result<Vec<StoredOrder>> {
        // Only the filters given become conditions, so the (state, id), (scheme, id) and
        // (store_id, id) indexes serve them; the SQL text is built from constants, values are bound.
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        common::push_order_page(&mut q, ORDER_COLUMNS, f, common::NameIndex::Fts5);
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn order_events(&self, order_id: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ? ORDER BY id"))
            .bind(order_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn claim_due(&self, owner: &str, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<OutboxRecord>> {
        // A read first: an idle dispatcher must not take the write lock every poll.
        let due: Option<i64> = sqlx::query_scalar(&format!("SELECT o.id FROM {CLAIM_FROM} WHERE {HEAD_DUE} LIMIT 1"))
            .bind(now)
            .fetch_optional(&self.reader)
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        // Each claim gets its own lease token (owner/id/attempt), so a result that comes back
        // after its lease expired and the record was claimed again is recognised as late.
        let rows = sqlx::query(&format!(
            "UPDATE outbox SET lease_until = ?1 + ?2, lease_owner = ?3 || '/' || id || '/' || ?1, attempts = attempts + 1,
                 in_doubt = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE in_doubt END, updated_at = ?1
             WHERE id IN (SELECT o.id FROM {CLAIM_FROM} WHERE {HEAD_DUE} ORDER BY o.next_attempt_at, o.id LIMIT ?4)
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(now)
        .bind(lease_ms)
        .bind(owner)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // RETURNING has no order in SQLite; oldest due first, as on PostgreSQL.
        let mut records = rows.iter().map(outbox_from_row).collect::<Result<Vec<_>>>()?;
        records.sort_by_key(|r| (r.next_attempt_at, r.id));
        Ok(records)
    }

    async fn complete_attempt(&self, id: i64, lease: &str, report: AttemptReport) -> Result<()> {
        let tx = self.unit().await?;
        let done = units::complete_attempt(tx, &self.forwarding, id, lease, report, now_ms()).await?;
        self.woken(done);
        Ok(())
    }

    async fn next_due_at(&self, now: i64) -> Result<Option<i64>> {
        // Only heads of queues can become due; a record waiting behind another is woken by
        // the commit that finishes its predecessor.
        Ok(sqlx::query_scalar(
            "SELECT MIN(CASE WHEN o.lease_until IS NOT NULL AND o.lease_until > ?1 THEN o.lease_until ELSE o.next_attempt_at END)
             FROM outbox o INDEXED BY outbox_pending_due WHERE o.status = 'pending' AND o.next_attempt_at < ?2
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))",
        )
        .bind(now)
        .bind(common::WAITING)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn repair_queue_heads(&self, now: i64) -> Result<u64> {
        // A read first: with nothing to repair (always, unless an older version wrote to the
        // outbox) the writer is not taken.
        let stranded: Vec<i64> = sqlx::query_scalar(
            "SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at = ?1
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))
             LIMIT 1000",
        )
        .bind(common::WAITING)
        .fetch_all(&self.reader)
        .await?;
        let mut repaired = 0;
        for id in stranded {
            let mut tx = self.begin().await?;
            let queue: Option<(i64, String)> = sqlx::query_as("SELECT order_id, destination FROM outbox WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((order_id, destination)) = queue {
                promote_queue_head(&mut tx, order_id, &destination, now).await?;
                repaired += 1;
            }
            tx.commit().await?;
        }
        if repaired > 0 {
            self.signal.notify_one();
        }
        Ok(repaired)
    }

    async fn release_stale_leases(&self, owner: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        let prefix = format!("{owner}/");
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = NULL, lease_owner = NULL, in_doubt = 1
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND substr(lease_owner, 1, length(?1)) <> ?1",
        )
        .bind(&prefix)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn list_outbox(&self, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxRecord>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox"));
        if let Some(status) = status {
            q.push(" WHERE status = ").push_bind(status.as_str());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit.clamp(1, 10_000));
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn get_outbox(&self, outbox_id: i64) -> Result<Option<OutboxRecord>> {
        let row = sqlx::query(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?"))
            .bind(outbox_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_attempts(&self, outbox_id: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE outbox_id = ? ORDER BY id"))
            .bind(outbox_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn replay(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord> {
        let tx = self.unit().await?;
        let done =
            units::operator_decision(tx, outbox_id, exchange, OutboxStatus::Pending, "replayed by operator", now_ms())
                .await?;
        Ok(self.woken(done))
    }

    async fn skip(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord> {
        let tx = self.unit().await?;
        let done =
            units::operator_decision(tx, outbox_id, exchange, OutboxStatus::Skipped, "skipped by operator", now_ms())
                .await?;
        Ok(self.woken(done))
    }

    async fn purge_events(&self, before_ms: i64) -> Result<u64> {
        // Idempotency keys live a day, whatever the audit retention.
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(now_ms() - crate::IDEMPOTENCY_TTL_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let (mut total, mut batches) = (0, 0);
        loop {
            // The history of an open order or of a notification still waiting stays.
            let mut tx = self.begin().await?;
            let done = sqlx::query(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.at < ?
                   AND (e.order_id IS NULL OR e.order_id IN (SELECT o.id FROM orders o WHERE o.state IN ('delivered', 'canceled')))
                   AND (e.outbox_id IS NULL OR e.outbox_id NOT IN (SELECT x.id FROM outbox x WHERE x.status IN ('pending', 'dead')))
                   LIMIT 2000)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            total += done.rows_affected();
            batches += 1;
            // Bounded per call: the hourly task comes back for the rest, and shutdown never
            // waits behind a long backlog.
            if done.rows_affected() < 2000 || batches >= 50 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(status = 'pending'), 0) AS pending, COALESCE(SUM(status = 'dead'), 0) AS dead,
                    MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest FROM outbox WHERE status IN ('pending', 'dead')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            dead: row.try_get("dead")?,
            oldest_pending_at: row.try_get("oldest")?,
        })
    }

    async fn orders_due_for_deadlines(
        &self,
        now: i64,
        after: crate::DeadlineCursor,
        limit: i64,
    ) -> Result<Vec<crate::DeadlineCandidate>> {
        // The predicate and the order are the partial index's own (orders_deadline_check):
        // only due open orders are read.
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS}, deadline_check_at FROM orders
             WHERE state NOT IN ('delivered', 'canceled') AND deadline_check_at <= ?1 AND (deadline_check_at, id) > (?2, ?3)
             ORDER BY deadline_check_at, id LIMIT ?4"
        ))
        .bind(now)
        .bind(after.check_at)
        .bind(after.order_id)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.reader)
        .await?;
        let orders = rows
            .iter()
            .map(|r| Ok((order_from_row(r)?, r.try_get::<i64, _>("deadline_check_at")?)))
            .collect::<Result<Vec<_>>>()?;
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = orders.iter().map(|(o, _)| o.id).collect();
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        common::push_recorded_deadlines(&mut q, &ids);
        let recorded = q
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("order_id")?, r.try_get("kind")?, r.try_get("stage")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(common::deadline_candidates(orders, recorded))
    }

    async fn set_deadline_checks(&self, checks: &[crate::DeadlineCheck]) -> Result<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        common::push_deadline_checks(&mut q, checks);
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn past_due_counts(&self) -> Result<Vec<(kuper_bridge_domain::deadlines::DeadlineKind, i64)>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        common::push_past_due_counts(&mut q);
        let rows = q.build().fetch_all(&self.reader).await?;
        let mut out = Vec::new();
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            if let Some(kind) = kuper_bridge_domain::deadlines::DeadlineKind::parse(&kind) {
                out.push((kind, r.try_get("n")?));
            }
        }
        Ok(out)
    }

    async fn record_deadline(
        &self,
        order_id: i64,
        kind: &str,
        stage: &str,
        due_at: i64,
        exchange: Exchange,
    ) -> Result<bool> {
        let tx = self.unit().await?;
        let done =
            units::record_deadline(tx, &self.forwarding, order_id, kind, stage, due_at, exchange, now_ms()).await?;
        Ok(self.woken(done))
    }

    async fn create_operator(&self, new: &crate::NewOperator) -> Result<crate::Operator> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        // DO NOTHING, not an error: a unique violation would poison the shared group-commit
        // transaction's savepoint handling for nothing; an empty RETURNING says "taken".
        let row = sqlx::query(&format!(
            "INSERT INTO operators (name, role, password_hash, disabled, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4) ON CONFLICT (name) DO NOTHING RETURNING {}",
            common::OPERATOR_COLUMNS
        ))
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(&new.password_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let created = row.as_ref().map(common::operator_from_row).transpose()?;
        tx.commit().await?;
        created.ok_or_else(|| StoreError::OperatorExists(new.name.clone()))
    }

    async fn find_operator(&self, name: &str) -> Result<Option<crate::Operator>> {
        let row = sqlx::query(&format!("SELECT {} FROM operators WHERE name = ?1", common::OPERATOR_COLUMNS))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(common::operator_from_row).transpose()
    }

    async fn list_operators(&self) -> Result<Vec<crate::Operator>> {
        let rows = sqlx::query(&format!("SELECT {} FROM operators ORDER BY name", common::OPERATOR_COLUMNS))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(common::operator_from_row).collect()
    }

    async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<crate::Operator> {
        self.change_operator(name, common::OperatorChange::Disabled(disabled)).await
    }

    async fn set_operator_password_hash(&self, name: &str, password_hash: &str) -> Result<crate::Operator> {
        self.change_operator(name, common::OperatorChange::PasswordHash(password_hash)).await
    }

    async fn count_orders_by_state(&self, f: &OrderFilter) -> Result<Vec<(String, i64)>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT state, COUNT(*) AS n FROM orders");
        common::push_order_filter(&mut q, f, false, common::NameIndex::Fts5);
        q.push(" GROUP BY state ORDER BY state");
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
    }

    async fn attention_of(&self, ids: &[i64]) -> Result<std::collections::HashMap<i64, Vec<crate::Attention>>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        common::push_attention_of(&mut q, ids);
        let rows = q.build().fetch_all(&self.reader).await?;
        let mut flags = Vec::with_capacity(rows.len());
        for r in &rows {
            let flag: String = r.try_get(1)?;
            if let Some(a) = common::attention_flag(&flag) {
                flags.push((r.try_get(0)?, a));
            }
        }
        Ok(common::attention_map(flags))
    }

    async fn list_outbox_by(&self, f: &crate::OutboxFilter) -> Result<Vec<OutboxRecord>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox"));
        common::push_outbox_filter(&mut q, f);
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_destinations(&self) -> Result<Vec<crate::DestinationStats>> {
        let rows = sqlx::query(common::DESTINATIONS_SQL).fetch_all(&self.reader).await?;
        let open = rows.iter().map(common::destination_from_row).collect::<Result<Vec<_>>>()?;
        Ok(common::destinations(&self.forwarding, open))
    }

    async fn refused_webhooks(&self, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE order_id IS NULL AND {} ORDER BY id DESC LIMIT ?1",
            common::REFUSED_WEBHOOK_SQL
        ))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn health_snapshot(&self, now: i64) -> Result<crate::HealthSnapshot> {
        let last_kuper_success_at: Option<i64> =
            sqlx::query_scalar(common::LAST_KUPER_SUCCESS_SQL).fetch_optional(&self.reader).await?.flatten();
        let last_kuper_error =
            sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE {}", common::LAST_KUPER_ERROR_WHERE))
                .fetch_optional(&self.reader)
                .await?;
        let webhook_errors_15min: i64 = sqlx::query_scalar(common::WEBHOOK_ERRORS_SINCE_SQL)
            .bind(now - 15 * 60 * 1000)
            .fetch_one(&self.reader)
            .await?;
        let orders_needing_attention: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({})", common::ATTENTION_IDS_SQL))
                .fetch_one(&self.reader)
                .await?;
        let last_reconciliation = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE kind = 'reconciliation' ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&self.reader)
        .await?;
        Ok(crate::HealthSnapshot {
            last_kuper_success_at,
            last_kuper_error: last_kuper_error.as_ref().map(event_from_row).transpose()?,
            webhook_errors_15min,
            orders_needing_attention,
            last_reconciliation: last_reconciliation.as_ref().map(event_from_row).transpose()?,
            destinations: self.outbox_destinations().await?,
        })
    }

    async fn create_session(&self, token_hash: &str, operator_id: i64, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO sessions (token_hash, operator_id, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)")
            .bind(token_hash)
            .bind(operator_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<crate::SessionRecord>> {
        let row = sqlx::query(&format!("{} WHERE s.token_hash = ?1", common::SESSION_SELECT))
            .bind(token_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(common::session_from_row).transpose()
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1")
            .bind(token_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?1").bind(token_hash).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn purge_sessions(&self, created_before: i64, seen_before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM sessions WHERE created_at < ?1 OR last_seen_at < ?2")
            .bind(created_before)
            .bind(seen_before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
