//! SQLite backend: WAL, `synchronous=FULL` (durable commits), one writer connection (SQLite
//! has one writer anyway; queuing in-process avoids busy-waiting) and a small reader pool.
//! Write transactions start with `BEGIN IMMEDIATE` so another process's writer is waited for
//! (busy_timeout) instead of failing on lock upgrade.

use crate::common::{self, event_from_row, order_from_row, outbox_from_row, PickupCheck};
use crate::{
    now_ms, AcceptanceDecision, ActionRequest, ActionResult, AttemptOutcome, AttemptReport, EventRecord, Exchange,
    IngestResult, OrderFilter, OutboxRecord, OutboxStats, OutboxStatus, PickupVerification, Result, Store, StoreError,
    StoredOrder,
};
use async_trait::async_trait;
use kuper_bridge_domain::engine::{self, kuper_state_after_ack};
use kuper_bridge_domain::{Action, Order, Policy, WebhookOutcome};
use kuper_bridge_wire::{CreatedAnswer, NotificationEvent, WebhookEnvelope, WebhookEvent};
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
}

async fn insert_event(
    conn: &mut SqliteConnection,
    order_id: Option<i64>,
    outbox_id: Option<i64>,
    at: i64,
    e: &Exchange,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id, actor)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(order_id)
    .bind(outbox_id)
    .bind(at)
    .bind(&e.kind)
    .bind(&e.direction)
    .bind(&e.event)
    .bind(&e.outcome)
    .bind(&e.method)
    .bind(&e.path)
    .bind(e.status)
    .bind(e.latency_ms)
    .bind(&e.headers)
    .bind(&e.body)
    .bind(&e.response)
    .bind(&e.detail)
    .bind(&e.request_id)
    .bind(e.actor.as_ref().map(crate::Actor::label))
    .execute(conn)
    .await?;
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
             phone_key = ?, customer_name = ?, pickup_code = ?, anomalies = ?, deadline_check_at = 0 WHERE id = ?",
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
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (order_id, kind, destination, event, body, status, next_attempt_at, created_at, updated_at, retry_since, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending',
                     CASE WHEN EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = ?1 AND p.destination = ?3 AND p.status IN ('pending', 'dead')) THEN ?8 ELSE ?6 END,
                     ?6, ?6, ?6, ?7) RETURNING id",
        )
        .bind(order_id)
        .bind(row.kind)
        .bind(&row.destination)
        .bind(&row.event)
        .bind(&row.body)
        .bind(now)
        .bind(format!("kb-{}", uuid::Uuid::new_v4()))
        .bind(common::WAITING)
        .fetch_one(&mut *conn)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Makes the first open record of the order due if it was waiting: called by every commit
/// that may have made a record final (sent, skipped, dead letter skipped or superseded).
async fn promote_queue_head(conn: &mut SqliteConnection, order_id: i64, destination: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = ?1
         WHERE id = (SELECT MIN(p.id) FROM outbox p WHERE p.order_id = ?2 AND p.destination = ?4 AND p.status IN ('pending', 'dead'))
           AND status = 'pending' AND next_attempt_at = ?3",
    )
    .bind(now)
    .bind(order_id)
    .bind(common::WAITING)
    .bind(destination)
    .execute(conn)
    .await?;
    Ok(())
}

/// Kuper ended the order: queued notifications would only be refused (protocol.md §5).
async fn supersede_pending(conn: &mut SqliteConnection, order_id: i64, now: i64, reason: &str) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET status = 'skipped', last_error = ?, updated_at = ?
         WHERE order_id = ? AND destination = 'kuper' AND status IN ('pending', 'dead') AND (lease_until IS NULL OR lease_until <= ?)",
    )
    .bind(reason)
    .bind(now)
    .bind(order_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    promote_queue_head(conn, order_id, "kuper", now).await?;
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
        mut exchange: Exchange,
        policy: &Policy,
        respond: &(dyn for<'r> Fn(&'r IngestResult) -> (u16, String) + Send + Sync),
        acceptance: Option<AcceptanceDecision>,
    ) -> Result<IngestResult> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let existing = if env.event.is_some() { find_by_identity(&mut tx, env).await? } else { None };
        let mut order_id = existing.as_ref().map(|o| o.id);
        let mut queued = false;
        let mut notes = Vec::new();
        let result = match (env.event, existing) {
            (None, _) => IngestResult::UnknownEvent,
            (Some(WebhookEvent::OrderCreated), Some(found)) => IngestResult::Created {
                order_id: found.id,
                answer: CreatedAnswer::new(found.order.number.clone(), found.order.expected_assembly_time.clone()),
                duplicate: true,
            },
            (Some(WebhookEvent::OrderCreated), None) => {
                let placeholder = format!("pending-{now}-{}", rand::rng().random::<u64>());
                let order = common::new_order(env, policy, placeholder.clone())?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO orders (original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?) RETURNING id",
                )
                .bind(&order.original_order_id)
                .bind(&order.order_uuid)
                .bind(&placeholder)
                .bind(&order.store_id)
                .bind(order.scheme.as_str())
                .bind(order.state.as_str())
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let mut order = order;
                order.number = format!("{}{id}", policy.number_prefix);
                let wanted = acceptance.as_ref().and_then(common::wanted_number);
                if let Some(wanted) = wanted {
                    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE number = ?")
                        .bind(wanted)
                        .fetch_optional(&mut *tx)
                        .await?;
                    common::take_number(&mut order, wanted, taken.is_some(), &policy.number_prefix, &mut notes);
                }
                let mut rows = common::forwards(
                    &self.forwarding,
                    &order,
                    env.event_type.as_str(),
                    || common::kuper_event(env),
                    now,
                )?;
                if let Some(decision) = &acceptance {
                    let (after, more) =
                        common::apply_acceptance(&order, decision, &self.forwarding, policy, now, &mut notes)?;
                    order = after;
                    rows.extend(more);
                    insert_event(&mut tx, Some(id), None, now, &decision.exchange).await?;
                }
                let keys = common::search_keys(&order);
                sqlx::query(
                    "UPDATE orders SET number = ?, state = ?, data = ?, phone_key = ?, customer_name = ?, pickup_code = ?, anomalies = ? WHERE id = ?",
                )
                .bind(&order.number)
                .bind(order.state.as_str())
                .bind(serde_json::to_string(&order)?)
                .bind(&keys.phone_key)
                .bind(&keys.customer_name)
                .bind(&keys.pickup_code)
                .bind(keys.anomalies)
                .bind(id)
                    .execute(&mut *tx)
                    .await?;
                queued = !insert_outbox(&mut tx, id, &rows, now).await?.is_empty();
                order_id = Some(id);
                // Kuper's answer is `created` even when the hook declined: the cancellation
                // follows as a notification (protocol.md §4).
                IngestResult::Created {
                    order_id: id,
                    answer: CreatedAnswer::new(order.number.clone(), order.expected_assembly_time.clone()),
                    duplicate: false,
                }
            }
            (Some(_), None) => IngestResult::UnknownOrder,
            (Some(_), Some(found)) => {
                let decision = engine::apply_webhook(&found.order, env);
                if decision.order != found.order {
                    save_order(&mut tx, found.id, &decision.order, now).await?;
                }
                if decision.supersede_pending {
                    let reason = format!("superseded: {} from Kuper", env.event_type);
                    let skipped = supersede_pending(&mut tx, found.id, now, &reason).await?;
                    if skipped > 0 {
                        insert_event(&mut tx, Some(found.id), None, now, &common::superseded_note(skipped, &reason))
                            .await?;
                    }
                    queued = skipped > 0;
                }
                if decision.outcome != WebhookOutcome::Duplicate {
                    let rows = common::forwards(
                        &self.forwarding,
                        &decision.order,
                        env.event_type.as_str(),
                        || common::kuper_event(env),
                        now,
                    )?;
                    queued |= !insert_outbox(&mut tx, found.id, &rows, now).await?.is_empty();
                }
                IngestResult::Applied { order_id: found.id, outcome: decision.outcome, note: decision.note }
            }
        };
        common::finish_ingest_exchange(&mut exchange, &result, respond);
        if !notes.is_empty() {
            exchange.detail = Some(notes.join("; "));
        }
        insert_event(&mut tx, order_id, None, now, &exchange).await?;
        tx.commit().await?;
        if queued {
            self.signal.notify_one();
        }
        Ok(result)
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
        mut exchange: Exchange,
        idempotency: Option<crate::IdempotencyKey>,
    ) -> Result<ActionResult> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let found =
            find_order_in(&mut tx, reference).await?.ok_or_else(|| StoreError::OrderNotFound(reference.into()))?;
        if let Some(key) = &idempotency {
            // After the order's lock (PostgreSQL): a concurrent request with the same key waits
            // for this one and then finds its record.
            let earlier: Option<(String, i64, String)> =
                sqlx::query_as("SELECT request_hash, order_id, outbox_ids FROM idempotency_keys WHERE key = ?1")
                    .bind(&key.key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((hash, order_id, ids)) = earlier {
                if hash != key.request_hash || order_id != found.id {
                    return Err(StoreError::Conflict(
                        "this Idempotency-Key was used for another request; use a new key for a new request".into(),
                    ));
                }
                let ids: Vec<i64> = serde_json::from_str(&ids)?;
                let mut notifications = Vec::with_capacity(ids.len());
                for id in ids {
                    notifications.push(fetch_outbox(&mut tx, id).await?);
                }
                tx.commit().await?;
                return Ok(ActionResult { order: found, notifications, replayed: true });
            }
        }
        let supplied_code = matches!(request, ActionRequest::Action(Action::PickupCode { .. }));
        let action = match request {
            ActionRequest::Action(a) => a,
            ActionRequest::GeneratePickupCode => {
                // Unique among the store's active orders, so a code identifies one order at the desk.
                let mut code = common::generate_code(policy.pickup_code_length);
                let mut tries = 0;
                while pickup_code_in_use(&mut tx, &found.order.store_id, &code, found.id).await? {
                    tries += 1;
                    if tries >= 20 {
                        return Err(StoreError::Conflict(
                            "no free pickup code found; the store has too many active codes for pickup.code_length"
                                .into(),
                        ));
                    }
                    code = common::generate_code(policy.pickup_code_length);
                }
                Action::PickupCode { code }
            }
        };
        // The rules first: a refused action is a 409 whatever its input.
        let action_name = action.kind().as_str();
        let decision = engine::apply_action(&found.order, action, policy)?;
        if supplied_code {
            let code = decision.order.pickup.as_ref().map(|p| p.code.clone()).unwrap_or_default();
            if pickup_code_in_use(&mut tx, &found.order.store_id, &code, found.id).await? {
                return Err(StoreError::Conflict(
                    "this pickup code is in use by another active order of the store".into(),
                ));
            }
        }
        save_order(&mut tx, found.id, &decision.order, now).await?;
        let cause = serde_json::json!({ "kind": "merchant", "action": action_name });
        let rows = common::change_rows(
            &self.forwarding,
            &found.order,
            &decision.order,
            &decision.notifications,
            cause,
            policy,
            now,
        )?;
        let mut ids = insert_outbox(&mut tx, found.id, &rows, now).await?;
        // The rows to Kuper come first; the rest are forwards to subscribers.
        ids.truncate(decision.notifications.len());
        if let Some(key) = &idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (key, request_hash, order_id, outbox_ids, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(found.id)
            .bind(serde_json::to_string(&ids)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        exchange.outcome = Some("accepted".into());
        exchange.detail = Some(common::action_detail(&found.order, &decision.order, &decision.notifications));
        insert_event(&mut tx, Some(found.id), None, now, &exchange).await?;
        let mut notifications = Vec::with_capacity(ids.len());
        for id in ids {
            notifications.push(fetch_outbox(&mut tx, id).await?);
        }
        tx.commit().await?;
        if !notifications.is_empty() {
            self.signal.notify_one();
        }
        Ok(ActionResult {
            order: StoredOrder { id: found.id, order: decision.order, created_at: found.created_at, updated_at: now },
            notifications,
            replayed: false,
        })
    }

    async fn verify_pickup_code(
        &self,
        reference: &str,
        code: &str,
        policy: &Policy,
        mut exchange: Exchange,
    ) -> Result<PickupVerification> {
        let now = now_ms();
        let now_s = now / 1000;
        let mut tx = self.begin().await?;
        let found =
            find_order_in(&mut tx, reference).await?.ok_or_else(|| StoreError::OrderNotFound(reference.into()))?;
        match common::check_pickup_code(&found.order, code, policy, now_s, &mut exchange)? {
            PickupCheck::Locked { until } => {
                insert_event(&mut tx, Some(found.id), None, now, &exchange).await?;
                tx.commit().await?;
                Err(StoreError::PickupLocked { until })
            }
            PickupCheck::Checked { order, result } => {
                save_order(&mut tx, found.id, &order, now).await?;
                insert_event(&mut tx, Some(found.id), None, now, &exchange).await?;
                tx.commit().await?;
                Ok(result)
            }
        }
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
        let now = now_ms();
        let mut tx = self.begin().await?;
        let record = fetch_outbox(&mut tx, id).await?;
        if record.lease.as_deref() != Some(lease) || record.status != OutboxStatus::Pending {
            // Our lease expired and someone else owns the record now: keep their result,
            // but keep the evidence of ours.
            insert_event(&mut tx, Some(record.order_id), Some(id), now, &common::late_result(report)).await?;
            tx.commit().await?;
            return Ok(());
        }
        let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?"))
            .bind(record.order_id)
            .fetch_one(&mut *tx)
            .await?;
        let stored = order_from_row(&row)?;
        let to_kuper = record.destination == "kuper";
        let mut forwards = Vec::new();
        match &report.outcome {
            AttemptOutcome::Retry { .. } if to_kuper && common::moot(&stored.order) => {
                // Kuper ended the order while this was in flight: retrying would only be refused.
                sqlx::query(
                    "UPDATE outbox SET status = 'skipped', lease_until = NULL, lease_owner = NULL, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                )
                .bind(report.status)
                .bind(common::moot_reason(&report))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            AttemptOutcome::Delivered => {
                sqlx::query(
                    "UPDATE outbox SET status = 'sent', sent_at = ?, lease_until = NULL, lease_owner = NULL, last_status = ?, last_error = NULL, updated_at = ? WHERE id = ?",
                )
                .bind(now)
                .bind(report.status)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if let Some(event) = NotificationEvent::parse(&record.event).filter(|_| to_kuper) {
                    let mut order = stored.order;
                    let next = kuper_state_after_ack(order.kuper_state, event, order.scheme);
                    if next != order.kuper_state {
                        order.kuper_state = next;
                        save_order(&mut tx, stored.id, &order, now).await?;
                    }
                }
            }
            AttemptOutcome::Retry { next_attempt_at, in_doubt } => {
                sqlx::query(
                    "UPDATE outbox SET next_attempt_at = ?, lease_until = NULL, lease_owner = NULL, last_status = ?, last_error = ?,
                         in_doubt = CASE WHEN ? THEN 1 ELSE in_doubt END, updated_at = ? WHERE id = ?",
                )
                .bind(next_attempt_at)
                .bind(report.status)
                .bind(&report.error)
                .bind(in_doubt)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            AttemptOutcome::Dead => {
                // Kuper ended the order while this was in flight: its refusal is moot.
                let (status, error) = if to_kuper {
                    common::give_up(&record, &stored.order, &report)
                } else {
                    ("dead", report.error.clone().unwrap_or_default())
                };
                if to_kuper && status == "dead" {
                    let event = || common::dead_letter_event(&record, &report);
                    forwards = common::forwards(&self.forwarding, &stored.order, "notification.dead", event, now)?;
                }
                sqlx::query(
                    "UPDATE outbox SET status = ?, lease_until = NULL, lease_owner = NULL, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                )
                .bind(status)
                .bind(report.status)
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        // Sent, skipped or a dead letter that turned out moot: the next record may be the head.
        promote_queue_head(&mut tx, record.order_id, &record.destination, now).await?;
        insert_outbox(&mut tx, record.order_id, &forwards, now).await?;
        insert_event(&mut tx, Some(record.order_id), Some(id), now, &report.exchange).await?;
        tx.commit().await?;
        if matches!(report.outcome, AttemptOutcome::Delivered) || !forwards.is_empty() {
            // The next notification of this order may have become the head of its queue.
            self.signal.notify_one();
        }
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
        operator_decision(self, outbox_id, exchange, "pending", "replayed by operator").await
    }

    async fn skip(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord> {
        operator_decision(self, outbox_id, exchange, "skipped", "skipped by operator").await
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
        let now = now_ms();
        let mut tx = self.begin().await?;
        // A concurrent sweep inserting the same key waits for this transaction and then
        // inserts nothing: exactly one of them writes the timeline entry.
        let done = sqlx::query(
            "INSERT INTO order_deadlines (order_id, kind, stage, due_at, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (order_id, kind, stage) DO NOTHING",
        )
        .bind(order_id)
        .bind(kind)
        .bind(stage)
        .bind(due_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let new = done.rows_affected() == 1;
        let mut queued = false;
        if new {
            insert_event(&mut tx, Some(order_id), None, now, &exchange).await?;
            if !self.forwarding.subscribers.is_empty() {
                // The merchant's systems hear of it too: order.deadline_warning / _missed.
                let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?"))
                    .bind(order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = row {
                    let stored = order_from_row(&row)?;
                    let rows = common::deadline_forwards(&self.forwarding, &stored.order, kind, stage, due_at, now)?;
                    queued = !insert_outbox(&mut tx, order_id, &rows, now).await?.is_empty();
                }
            }
        }

        tx.commit().await?;
        if queued {
            self.signal.notify_one();
        }
        Ok(new)
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

async fn operator_decision(
    store: &SqliteStore,
    outbox_id: i64,
    mut exchange: Exchange,
    to: &str,
    note: &str,
) -> Result<OutboxRecord> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let record = fetch_outbox(&mut tx, outbox_id).await?;
    common::require_dead(&record)?;
    // A replay starts a fresh retry schedule and give-up clock; the attempts so far stay in
    // the timeline.
    sqlx::query("UPDATE outbox SET status = ?, next_attempt_at = ?, attempts = 0, retry_since = ?, in_doubt = 0, updated_at = ? WHERE id = ?")
        .bind(to)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(outbox_id)
        .execute(&mut *tx)
        .await?;
    promote_queue_head(&mut tx, record.order_id, &record.destination, now).await?;
    common::operator_exchange(&mut exchange, &record, to, note);
    insert_event(&mut tx, Some(record.order_id), Some(outbox_id), now, &exchange).await?;
    let updated = fetch_outbox(&mut tx, outbox_id).await?;
    tx.commit().await?;
    // Replay re-queues the record; skip unblocks the records behind it.
    store.signal.notify_one();
    Ok(updated)
}
