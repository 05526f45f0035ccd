//! SQLite backend: WAL, `synchronous=FULL` (durable commits). Every write goes to one writer
//! thread that owns the only write connection ([`SqliteWriter`]: a unit of work per crossing,
//! group commit); reads go to a small sqlx pool. The writer's transactions start with
//! `BEGIN IMMEDIATE` so another process's writer is waited for (busy_timeout) instead of
//! failing on lock upgrade.

use crate::common::{self, order_from_row, outbox_from_row, Lite};
use crate::reads;
use crate::sqlite_writer::SqliteWriter;
use crate::statements::{self, Dialect::Sqlite};
use crate::units::{self, RecordChange, UnitTx};
use crate::{
    now_ms, AcceptanceDecision, ActionRequest, ActionResult, AttemptReport, EventRecord, Exchange, IngestResult,
    OrderFilter, OutboxRecord, OutboxStats, OutboxStatus, PickupVerification, Respond, Result, Store, StoreError,
    StoredOrder,
};
use async_trait::async_trait;
use kuper_bridge_domain::{Order, Policy};
use kuper_bridge_wire::WebhookEnvelope;
use rusqlite::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    /// sqlx's migrator's connection; nothing else writes through it.
    admin: SqlitePool,
    writer: SqliteWriter,
    reader: SqlitePool,
    signal: Arc<Notify>,
    forwarding: Arc<crate::Forwarding>,
}

/// SQLite's default page size, which kuper-bridge never changes.
const SQLITE_PAGE_SIZE: u64 = 4096;
use common::ORDER_COLUMNS;
use common::OUTBOX_COLUMNS;
const ORDER_BY_ID: &str = concat!("SELECT ", order_columns!(), " FROM orders WHERE id = ?1");
const ORDER_BY_REFERENCE: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE original_order_id = ?1 OR order_uuid = ?1 OR number = ?1 ORDER BY id LIMIT 1"
);
const ORDER_BY_IDENTITY: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE (?1 IS NOT NULL AND original_order_id = ?1) OR (?2 IS NOT NULL AND order_uuid = ?2) ORDER BY id LIMIT 1"
);
const OUTBOX_BY_ID: &str = concat!("SELECT ", outbox_columns!(), " FROM outbox WHERE id = ?1");
/// The id a new order gets: the writer is the only one, so nobody can take it before the insert
/// in the same transaction (what SQLite would pick itself for an INTEGER PRIMARY KEY). Knowing it
/// first lets the number `{prefix}{id}` go in with the row: one insert, not an insert and an
/// update of the row and its name index.
const NEXT_ORDER_ID: &str = "SELECT COALESCE(MAX(id), 0) + 1 FROM orders";
const INSERT_ORDER: &str = "INSERT INTO orders (id, original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at,
         phone_key, customer_name, pickup_code, anomalies)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)";
const SAVE_ORDER: &str =
    "UPDATE orders SET state = ?1, data = ?2, updated_at = ?3, original_order_id = COALESCE(original_order_id, ?4),
     order_uuid = COALESCE(order_uuid, ?5), phone_key = ?6, customer_name = ?7, pickup_code = ?8, anomalies = ?9,
     deadline_check_at = 0, number = ?10 WHERE id = ?11";
const PICKUP_CODE_CLASH: &str =
    "SELECT COUNT(*) FROM orders WHERE store_id = ?1 AND id <> ?2 AND state NOT IN ('delivered', 'canceled')
     AND pickup_code = ?3";
/// A pending record that is the head of its order's queue (no earlier pending or dead record:
/// per-order FIFO, protocol.md §9), due, and not under a live lease. Binds ?1 = now.
/// Without statistics SQLite would rather walk `outbox_status_id` over every pending record
/// (the waiting ones too) and sort; the due-heads index is the plan, so it is named.
pub(crate) const CLAIM_FROM: &str = "outbox o INDEXED BY outbox_pending_due";
pub(crate) const HEAD_DUE: &str = "o.status = 'pending' AND o.next_attempt_at <= ?1 AND (o.lease_until IS NULL OR o.lease_until <= ?1)
    AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))";
/// The claim, built once: it runs on the writer for every batch the dispatcher takes.
static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE outbox SET lease_until = ?1 + ?2, lease_owner = ?3 || '/' || id || '/' || ?1, attempts = attempts + 1,
             in_doubt = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE in_doubt END, updated_at = ?1
         WHERE id IN (SELECT o.id FROM {CLAIM_FROM} WHERE {HEAD_DUE} ORDER BY o.next_attempt_at, o.id LIMIT ?4)
         RETURNING {OUTBOX_COLUMNS}"
    )
});

/// Runs a unit of work (`units`) on the writer's connection. Its primitives are synchronous
/// (rusqlite), so the unit never waits and one poll completes it.
fn run_unit<T>(unit: impl Future<Output = Result<T>>) -> Result<T> {
    let mut unit = std::pin::pin!(unit);
    match unit.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(done) => done,
        std::task::Poll::Pending => {
            Err(StoreError::Unavailable("a SQLite unit of work waited inside the writer".into()))
        }
    }
}

/// Opens the writer's connection with the pragmas every SQLite connection here gets.
fn writer_connection(file: &std::path::Path, store_options: &crate::StoreOptions) -> Result<Connection> {
    let conn = Connection::open(file)?;
    conn.busy_timeout(store_options.busy_timeout)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")?;
    if let Some(bytes) = store_options.sqlite_max_size_bytes {
        conn.execute_batch(&format!("PRAGMA max_page_count = {}", (bytes / SQLITE_PAGE_SIZE).max(1)))?;
    }
    // Every statement of the units, claims and sweeps stays compiled.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// The console's read queries on the read-only connections (`reads`, shared with PostgreSQL).
    fn reads(&self) -> reads::Reads<'_, sqlx::Sqlite> {
        reads::Reads { pool: &self.reader, names: common::NameIndex::Fts5, bindable: OrderFilter::clone }
    }

    async fn change_operator(&self, name: &str, change: common::OperatorChange<'_>) -> Result<crate::Operator> {
        let update = format!(
            "UPDATE operators SET {} = ?2, updated_at = ?3 WHERE name = ?1 RETURNING {}",
            change.column(),
            common::OPERATOR_COLUMNS
        );
        let value: statements::Arg = match change {
            common::OperatorChange::Disabled(disabled) => disabled.into(),
            common::OperatorChange::PasswordHash(hash) => hash.into(),
        };
        let owned = name.to_string();
        let updated = self
            .writer
            .write(move |c| {
                // A disabled account or a changed password ends every session of the account.
                c.prepare_cached(
                    "DELETE FROM sessions WHERE operator_id IN (SELECT id FROM operators WHERE name = ?1)",
                )?
                .execute([&owned])?;
                let mut st = c.prepare_cached(&update)?;
                let mut rows = st.query(rusqlite::params![owned, value, now_ms()])?;
                rows.next()?.map(|row| common::operator_from_row(&Lite(row))).transpose()
            })
            .await?;
        updated.ok_or_else(|| StoreError::OperatorNotFound(name.to_string()))
    }

    pub async fn open(url: &str, store_options: &crate::StoreOptions) -> Result<Self> {
        let file = crate::sqlite_file(url).ok_or_else(|| {
            StoreError::Config(
                "database.url: SQLite needs a database file (an in-memory database is lost at exit)".into(),
            )
        })?;
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
        // This first connection creates the file (and switches it to WAL) before the writer
        // opens it.
        let admin = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let writer = SqliteWriter::start(writer_connection(&file, store_options)?)?;
        Ok(Self {
            admin,
            writer,
            reader,
            signal: Arc::new(Notify::new()),
            forwarding: Arc::new(store_options.forwarding.clone()),
        })
    }

    async fn operator_decision(
        &self,
        outbox_id: i64,
        exchange: Exchange,
        to: OutboxStatus,
        note: &'static str,
    ) -> Result<OutboxRecord> {
        let done = self
            .writer
            .write(move |c| run_unit(units::operator_decision(SqliteUnit(c), outbox_id, exchange, to, note, now_ms())))
            .await?;
        Ok(self.woken(done))
    }

    /// A unit's answer, after waking the dispatcher if it queued or freed a notification.
    fn woken<T>(&self, done: units::Done<T>) -> T {
        if done.wake {
            self.signal.notify_one();
        }
        done.value
    }
}

/// The primitives of the units of work on the writer's connection, inside the writer's
/// transaction. One writer, so nothing needs a row lock; the writer commits, so `commit` has
/// nothing left to do.
struct SqliteUnit<'c>(&'c mut Connection);

impl SqliteUnit<'_> {
    fn order(&self, sql: &str, params: impl rusqlite::Params) -> Result<Option<StoredOrder>> {
        let mut st = self.0.prepare_cached(sql)?;
        let mut rows = st.query(params)?;
        rows.next()?.map(|row| order_from_row(&Lite(row))).transpose()
    }

    fn outbox(&self, id: i64) -> Result<OutboxRecord> {
        let mut st = self.0.prepare_cached(OUTBOX_BY_ID)?;
        let mut rows = st.query([id])?;
        match rows.next()? {
            Some(row) => outbox_from_row(&Lite(row)),
            None => Err(StoreError::OutboxNotFound(id)),
        }
    }
}

#[async_trait]
impl UnitTx for SqliteUnit<'_> {
    async fn order_by_identity(&mut self, env: &WebhookEnvelope) -> Result<Option<StoredOrder>> {
        let identity = (env.identity.original_order_id.as_deref(), env.identity.order_uuid.as_deref());
        self.order(ORDER_BY_IDENTITY, identity)
    }

    async fn order_by_reference(&mut self, reference: &str) -> Result<Option<StoredOrder>> {
        self.order(ORDER_BY_REFERENCE, [reference])
    }

    async fn order_by_id(&mut self, id: i64) -> Result<Option<StoredOrder>> {
        self.order(ORDER_BY_ID, [id])
    }

    async fn record_and_order(&mut self, outbox_id: i64) -> Result<(OutboxRecord, StoredOrder)> {
        let record = self.outbox(outbox_id)?;
        let order = self
            .order(ORDER_BY_ID, [record.order_id])?
            .ok_or_else(|| StoreError::Unavailable(format!("outbox record {outbox_id} has no order")))?;
        Ok((record, order))
    }

    async fn record(&mut self, outbox_id: i64) -> Result<OutboxRecord> {
        self.outbox(outbox_id)
    }

    async fn number_taken(&mut self, number: &str) -> Result<bool> {
        Ok(statements::number_taken(Sqlite, number).query_row::<i64>(self.0)? > 0)
    }

    async fn pickup_code_in_use(&mut self, store_id: &str, code: &str, except_order: i64) -> Result<bool> {
        let clash: i64 = self
            .0
            .prepare_cached(PICKUP_CODE_CLASH)?
            .query_row(rusqlite::params![store_id, except_order, code], |r| r.get(0))?;
        Ok(clash > 0)
    }

    async fn earlier_request(&mut self, key: &str) -> Result<Option<(String, i64, Vec<i64>)>> {
        let q = statements::earlier_request(Sqlite, key);
        let mut st = self.0.prepare_cached(&q.sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(q.args.iter()))?;
        match rows.next()? {
            Some(row) => {
                let ids: String = row.get(2)?;
                Ok(Some((row.get(0)?, row.get(1)?, serde_json::from_str(&ids)?)))
            }
            None => Ok(None),
        }
    }

    async fn create_order(&mut self, draft: &Order, prefix: &str, now: i64) -> Result<Option<(i64, Order)>> {
        let id: i64 = self.0.prepare_cached(NEXT_ORDER_ID)?.query_row([], |r| r.get(0))?;
        let mut order = draft.clone();
        order.number = format!("{prefix}{id}");
        let keys = common::search_keys(&order);
        self.0.prepare_cached(INSERT_ORDER)?.execute(rusqlite::params![
            id,
            order.original_order_id,
            order.order_uuid,
            order.number,
            order.store_id,
            order.scheme.as_str(),
            order.state().as_str(),
            statements::Arg::doc(serde_json::to_string(&order)?),
            now,
            keys.phone_key,
            keys.customer_name,
            keys.pickup_code,
            keys.anomalies
        ])?;
        Ok(Some((id, order)))
    }

    async fn save_order(&mut self, id: i64, order: &Order, now: i64) -> Result<()> {
        save_order(self.0, id, order, now)
    }

    async fn change_record(&mut self, id: i64, change: &RecordChange, now: i64) -> Result<()> {
        statements::record_change(Sqlite, id, change, now).execute(self.0)?;
        Ok(())
    }

    async fn supersede_pending(&mut self, order_id: i64, reason: &str, now: i64) -> Result<u64> {
        Ok(statements::supersede_pending(Sqlite, order_id, reason, now).execute(self.0)? as u64)
    }

    async fn promote_queue_head(&mut self, order_id: i64, destination: &crate::Destination, now: i64) -> Result<()> {
        statements::promote_queue_head(Sqlite, order_id, destination, now).execute(self.0)?;
        Ok(())
    }

    async fn insert_outbox(
        &mut self,
        order_id: i64,
        rows: &[common::OutboxRow],
        now: i64,
    ) -> Result<Vec<OutboxRecord>> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let q = statements::insert_outbox(Sqlite, order_id, row, now);
            let mut st = self.0.prepare_cached(&q.sql)?;
            let mut inserted = st.query(rusqlite::params_from_iter(q.args.iter()))?;
            let row =
                inserted.next()?.ok_or_else(|| StoreError::Unavailable("an outbox insert returned no row".into()))?;
            records.push(outbox_from_row(&Lite(row))?);
        }
        Ok(records)
    }

    async fn insert_event(
        &mut self,
        order_id: Option<i64>,
        outbox_id: Option<i64>,
        exchange: &Exchange,
        now: i64,
    ) -> Result<()> {
        statements::insert_event(Sqlite, order_id, outbox_id, now, exchange).execute(self.0)?;
        Ok(())
    }

    async fn insert_deadline(
        &mut self,
        order_id: i64,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
        due_at: i64,
        now: i64,
    ) -> Result<bool> {
        Ok(statements::insert_deadline(Sqlite, order_id, kind, stage, due_at, now).execute(self.0)? == 1)
    }

    async fn remember_request(
        &mut self,
        key: &crate::IdempotencyKey,
        order_id: i64,
        outbox_ids: &[i64],
        now: i64,
    ) -> Result<()> {
        statements::remember_request(Sqlite, key, order_id, outbox_ids, now)?.execute(self.0)?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        Ok(())
    }
}

fn save_order(conn: &Connection, id: i64, order: &Order, now: i64) -> Result<()> {
    let keys = common::search_keys(order);
    conn.prepare_cached(SAVE_ORDER)?.execute(rusqlite::params![
        order.state().as_str(),
        statements::Arg::doc(serde_json::to_string(order)?),
        now,
        order.original_order_id,
        order.order_uuid,
        keys.phone_key,
        keys.customer_name,
        keys.pickup_code,
        keys.anomalies,
        order.number,
        id
    ])?;
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
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            let stored = order_from_row(row)?;
            page.push((stored.id, common::search_keys(&stored.order)));
        }
        done += page.len() as u64;
        store
            .writer
            .write(move |c| {
                let mut st = c.prepare_cached(
                    "UPDATE orders SET phone_key = ?1, customer_name = ?2, pickup_code = ?3, anomalies = ?4 WHERE id = ?5",
                )?;
                for (id, keys) in page {
                    st.execute(rusqlite::params![keys.phone_key, keys.customer_name, keys.pickup_code, keys.anomalies, id])?;
                }
                Ok(())
            })
            .await?;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        // Unknown applied migrations (a newer release ran first) are not an error.
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.set_ignore_missing(true);
        migrator.run(&self.admin).await?;
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
        respond: Respond,
        acceptance: Option<AcceptanceDecision>,
    ) -> Result<IngestResult> {
        let (forwarding, env, policy) = (self.forwarding.clone(), env.clone(), policy.clone());
        let done = self
            .writer
            .write(move |c| {
                run_unit(units::ingest(
                    SqliteUnit(c),
                    &forwarding,
                    &env,
                    exchange,
                    &policy,
                    respond,
                    acceptance,
                    now_ms(),
                ))
            })
            .await?;
        Ok(self.woken(done))
    }

    async fn record_exchange(&self, order_id: Option<i64>, exchange: Exchange) -> Result<()> {
        self.writer
            .write(move |c| {
                statements::insert_event(Sqlite, order_id, None, now_ms(), &exchange).execute(c)?;
                Ok(())
            })
            .await
    }

    async fn apply_action_keyed(
        &self,
        reference: &str,
        request: ActionRequest,
        policy: &Policy,
        exchange: Exchange,
        idempotency: Option<crate::IdempotencyKey>,
    ) -> Result<ActionResult> {
        let (forwarding, reference, policy) = (self.forwarding.clone(), reference.to_string(), policy.clone());
        let done = self
            .writer
            .write(move |c| {
                run_unit(units::apply_action(
                    SqliteUnit(c),
                    &forwarding,
                    &reference,
                    request,
                    &policy,
                    exchange,
                    idempotency,
                    now_ms(),
                ))
            })
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
        let (reference, code, policy) = (reference.to_string(), code.to_string(), policy.clone());
        self.writer
            .write(move |c| {
                run_unit(units::verify_pickup_code(SqliteUnit(c), &reference, &code, &policy, exchange, now_ms()))
            })
            .await?
    }

    async fn find_order(&self, reference: &str) -> Result<Option<StoredOrder>> {
        let row = sqlx::query(ORDER_BY_REFERENCE).bind(reference).fetch_optional(&self.reader).await?;
        row.as_ref().map(order_from_row).transpose()
    }

    async fn list_orders(&self, f: &OrderFilter) -> Result<Vec<StoredOrder>> {
        self.reads().list_orders(f).await
    }

    async fn order_events(&self, order_id: i64) -> Result<Vec<EventRecord>> {
        self.reads().order_events(order_id).await
    }

    async fn claim_due(&self, owner: &str, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<crate::Claimed>> {
        // A read first: an idle dispatcher must not take the write lock every poll.
        let due: Option<i64> = sqlx::query_scalar(&format!("SELECT o.id FROM {CLAIM_FROM} WHERE {HEAD_DUE} LIMIT 1"))
            .bind(now)
            .fetch_optional(&self.reader)
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let owner = owner.to_string();
        let mut records = self
            .writer
            .write(move |c| {
                // Each claim gets its own lease token (owner/id/attempt), so a result that comes
                // back after its lease expired and the record was claimed again is recognised as late.
                let mut st = c.prepare_cached(&CLAIM)?;
                let mut rows = st.query(rusqlite::params![now, lease_ms, owner, limit])?;
                let (mut records, mut unreadable) = (Vec::new(), Vec::new());
                while let Some(row) = rows.next()? {
                    match outbox_from_row(&Lite(row)) {
                        Ok(record) => records.push(record),
                        Err(e) => unreadable.push((row.get::<_, i64>("id")?, e.to_string())),
                    }
                }
                drop(rows);
                for (id, why) in &unreadable {
                    tracing::error!(outbox_id = id, error = %why, "a claimed outbox record does not read back; dead-lettered");
                    statements::unreadable_record(Sqlite, *id, why, now).execute(c)?;
                }
                Ok(records)
            })
            .await?;
        // RETURNING has no order in SQLite; oldest due first, as on PostgreSQL.
        records.sort_by_key(|r| (r.next_attempt_at, r.id));
        records.into_iter().map(crate::Claimed::from_claim).collect()
    }

    async fn complete_attempt(&self, id: i64, lease: &str, report: AttemptReport) -> Result<()> {
        let (forwarding, lease) = (self.forwarding.clone(), lease.to_string());
        let done = self
            .writer
            .write(move |c| run_unit(units::complete_attempt(SqliteUnit(c), &forwarding, id, &lease, report, now_ms())))
            .await?;
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
            let promoted = self
                .writer
                .write(move |c| {
                    let mut st = c.prepare_cached("SELECT order_id, destination FROM outbox WHERE id = ?1")?;
                    let mut rows = st.query([id])?;
                    let Some(row) = rows.next()? else { return Ok(false) };
                    let (order_id, destination): (i64, String) = (row.get(0)?, row.get(1)?);
                    let destination = common::stored_destination(&destination)?;
                    statements::promote_queue_head(Sqlite, order_id, &destination, now).execute(c)?;
                    Ok(true)
                })
                .await?;
            repaired += u64::from(promoted);
        }
        if repaired > 0 {
            self.signal.notify_one();
        }
        Ok(repaired)
    }

    async fn release_stale_leases(&self, owner: &str) -> Result<u64> {
        let prefix = format!("{owner}/");
        self.writer
            .write(move |c| {
                let released = c
                    .prepare_cached(
                        "UPDATE outbox SET lease_until = NULL, lease_owner = NULL, in_doubt = 1
                         WHERE status = 'pending' AND lease_owner IS NOT NULL AND substr(lease_owner, 1, length(?1)) <> ?1",
                    )?
                    .execute([&prefix])?;
                Ok(released as u64)
            })
            .await
    }

    async fn list_outbox(&self, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxRecord>> {
        self.reads().list_outbox(status, limit).await
    }

    async fn get_outbox(&self, outbox_id: i64) -> Result<Option<OutboxRecord>> {
        self.reads().get_outbox(outbox_id).await
    }

    async fn outbox_attempts(&self, outbox_id: i64) -> Result<Vec<EventRecord>> {
        self.reads().outbox_attempts(outbox_id).await
    }

    async fn replay(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord> {
        self.operator_decision(outbox_id, exchange, OutboxStatus::Pending, "replayed by operator").await
    }

    async fn skip(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord> {
        self.operator_decision(outbox_id, exchange, OutboxStatus::Skipped, "skipped by operator").await
    }

    async fn purge_events(&self, before_ms: i64) -> Result<u64> {
        // Idempotency keys live a day, whatever the audit retention.
        self.writer
            .write(|c| {
                c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([now_ms() - crate::IDEMPOTENCY_TTL_MS])?;
                Ok(())
            })
            .await?;
        let (mut total, mut batches) = (0, 0);
        loop {
            // The history of an open order or of a notification still waiting stays. One
            // batch per unit: the writer serves others between batches.
            let deleted = self
                .writer
                .write(move |c| {
                    let deleted = c
                        .prepare_cached(
                            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.at < ?1
                               AND (e.order_id IS NULL OR e.order_id IN (SELECT o.id FROM orders o WHERE o.state IN ('delivered', 'canceled')))
                               AND (e.outbox_id IS NULL OR e.outbox_id NOT IN (SELECT x.id FROM outbox x WHERE x.status IN ('pending', 'dead')))
                               LIMIT 2000)",
                        )?
                        .execute([before_ms])?;
                    Ok(deleted as u64)
                })
                .await?;
            total += deleted;
            batches += 1;
            // Bounded per call: the hourly task comes back for the rest, and shutdown never
            // waits behind a long backlog.
            if deleted < 2000 || batches >= 50 {
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
        self.reads().orders_due_for_deadlines(now, after, limit).await
    }

    async fn set_deadline_checks(&self, checks: &[crate::DeadlineCheck]) -> Result<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let update = statements::deadline_checks(Sqlite, checks);
        self.writer
            .write(move |c| {
                update.execute(c)?;
                Ok(())
            })
            .await
    }

    async fn past_due_counts(&self) -> Result<Vec<(kuper_bridge_domain::deadlines::DeadlineKind, i64)>> {
        self.reads().past_due_counts().await
    }

    async fn record_deadline(
        &self,
        order_id: i64,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
        due_at: i64,
        exchange: Exchange,
    ) -> Result<bool> {
        let forwarding = self.forwarding.clone();
        let done = self
            .writer
            .write(move |c| {
                run_unit(units::record_deadline(
                    SqliteUnit(c),
                    &forwarding,
                    order_id,
                    kind,
                    stage,
                    due_at,
                    exchange,
                    now_ms(),
                ))
            })
            .await?;
        Ok(self.woken(done))
    }

    async fn create_operator(&self, new: &crate::NewOperator) -> Result<crate::Operator> {
        let insert = format!(
            "INSERT INTO operators (name, role, password_hash, disabled, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4) ON CONFLICT (name) DO NOTHING RETURNING {}",
            common::OPERATOR_COLUMNS
        );
        let (name, role, hash) = (new.name.clone(), new.role.as_str(), new.password_hash.clone());
        // DO NOTHING, not an error: an empty RETURNING says "taken".
        let created = self
            .writer
            .write(move |c| {
                let mut st = c.prepare_cached(&insert)?;
                let mut rows = st.query(rusqlite::params![name, role, hash, now_ms()])?;
                rows.next()?.map(|row| common::operator_from_row(&Lite(row))).transpose()
            })
            .await?;
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
        self.reads().count_orders_by_state(f).await
    }

    async fn attention_of(&self, ids: &[i64]) -> Result<std::collections::HashMap<i64, Vec<crate::Attention>>> {
        self.reads().attention_of(ids).await
    }

    async fn list_outbox_by(&self, f: &crate::OutboxFilter) -> Result<Vec<OutboxRecord>> {
        self.reads().list_outbox_by(f).await
    }

    async fn outbox_destinations(&self) -> Result<Vec<crate::DestinationStats>> {
        self.reads().outbox_destinations(&self.forwarding).await
    }

    async fn refused_webhooks(&self, limit: i64) -> Result<Vec<EventRecord>> {
        self.reads().refused_webhooks(limit).await
    }

    async fn health_snapshot(&self, now: i64) -> Result<crate::HealthSnapshot> {
        self.reads().health_snapshot(&self.forwarding, now).await
    }

    async fn create_session(&self, token_hash: &str, operator_id: i64, now: i64) -> Result<()> {
        let token_hash = token_hash.to_string();
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO sessions (token_hash, operator_id, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
                )?
                .execute(rusqlite::params![token_hash, operator_id, now])?;
                Ok(())
            })
            .await
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<crate::SessionRecord>> {
        let row = sqlx::query(&format!("{} WHERE s.token_hash = ?1", common::SESSION_SELECT))
            .bind(token_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(common::session_from_row).transpose()
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()> {
        let token_hash = token_hash.to_string();
        self.writer
            .write(move |c| {
                c.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1")?
                    .execute(rusqlite::params![token_hash, now])?;
                Ok(())
            })
            .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let token_hash = token_hash.to_string();
        self.writer
            .write(move |c| {
                c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([token_hash])?;
                Ok(())
            })
            .await
    }

    async fn purge_sessions(&self, created_before: i64, seen_before: i64) -> Result<u64> {
        self.writer
            .write(move |c| {
                let purged = c
                    .prepare_cached("DELETE FROM sessions WHERE created_at < ?1 OR last_seen_at < ?2")?
                    .execute([created_before, seen_before])?;
                Ok(purged as u64)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use kuper_bridge_wire::WebhookEnvelope;

    const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");

    fn respond(_: &IngestResult) -> (u16, String) {
        (200, "{}".into())
    }

    fn raw(file: &std::path::Path, sql: &str) -> Vec<(String, String)> {
        let conn = Connection::open(file).unwrap();
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    /// Issue #12 item 6: the order document and the webhook's body go in compressed, short
    /// values stay text, and rows written as text before compression existed read as they were.
    #[tokio::test]
    async fn documents_are_stored_compressed_and_old_text_rows_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kb.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let store = SqliteStore::open(&url, &crate::StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let env = WebhookEnvelope::parse(CREATED.as_bytes()).unwrap();
        let exchange = Exchange { body: Some(CREATED.into()), headers: Some("{}".into()), ..Exchange::default() };
        let result = store.ingest_webhook(&env, exchange, &Policy::default(), respond).await.unwrap();
        let order_id = result.order_id().unwrap();

        let kinds =
            raw(&file, "SELECT typeof(o.data), typeof(e.body) FROM orders o JOIN events e ON e.order_id = o.id");
        assert_eq!(kinds, [("blob".to_string(), "blob".to_string())]);
        let small = raw(&file, "SELECT typeof(headers), typeof(response) FROM events");
        assert_eq!(small, [("text".to_string(), "text".to_string())]);
        let events = store.order_events(order_id).await.unwrap();
        assert_eq!(events[0].exchange.body.as_deref(), Some(CREATED), "every byte Kuper sent, back");
        let stored = store.find_order("H48210377615").await.unwrap().expect("the order");

        // The same order as an older release stored it: plain text.
        let text = serde_json::to_string(&stored.order).unwrap();
        let conn = Connection::open(&file).unwrap();
        conn.execute("UPDATE orders SET data = ?1 WHERE id = ?2", rusqlite::params![text, order_id]).unwrap();
        conn.execute("UPDATE events SET body = ?1", [CREATED]).unwrap();
        drop(conn);
        assert_eq!(raw(&file, "SELECT typeof(data), typeof(data) FROM orders")[0].0, "text");
        assert_eq!(store.find_order("H48210377615").await.unwrap().unwrap().order, stored.order);
        assert_eq!(store.order_events(order_id).await.unwrap()[0].exchange.body.as_deref(), Some(CREATED));

        // A damaged compressed document is an unreadable document, not "retry later".
        let conn = Connection::open(&file).unwrap();
        conn.execute("UPDATE orders SET data = x'28b52ffd00' WHERE id = ?1", [order_id]).unwrap();
        drop(conn);
        let err = store.find_order("H48210377615").await.unwrap_err();
        assert!(matches!(err, StoreError::DocumentDamaged(_)), "{err:?}");
        assert!(!err.is_unavailable());
    }

    /// A claimed record whose stored body does not read back is dead-lettered with the reason:
    /// the other due records still go out, and the claim does not fail every time.
    #[tokio::test]
    async fn a_damaged_outbox_record_is_dead_lettered_and_the_rest_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kb.db");
        let store =
            SqliteStore::open(&format!("sqlite://{}?mode=rwc", file.display()), &crate::StoreOptions::default())
                .await
                .unwrap();
        store.migrate().await.unwrap();
        let mut queued = Vec::new();
        for n in 0..2 {
            let mut body: serde_json::Value = serde_json::from_str(CREATED).unwrap();
            body["payload"]["originalOrderId"] = format!("H{n}").into();
            body["payload"]["orderUUID"] = format!("u{n}").into();
            let env = WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap();
            store.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
            let request = crate::ActionRequest::Action(kuper_bridge_domain::Action::StartAssembly);
            let done =
                store.apply_action(&format!("H{n}"), request, &Policy::default(), Exchange::default()).await.unwrap();
            queued.push(done.notifications[0].id);
        }
        let conn = Connection::open(&file).unwrap();
        conn.execute("UPDATE outbox SET body = x'28b52ffd00' WHERE id = ?1", [queued[0]]).unwrap();
        let claimed = store.claim_due("t", now_ms() + 1000, 30_000, 10).await.unwrap();
        assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [queued[1]], "the readable one");
        let (status, why): (String, String) = conn
            .query_row("SELECT status, last_error FROM outbox WHERE id = ?1", [queued[0]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(status, "dead");
        assert!(why.starts_with("stored record unreadable"), "{why}");
        assert!(store.claim_due("t", now_ms() + 1000, 30_000, 10).await.unwrap().is_empty());
    }
}
