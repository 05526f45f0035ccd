//! PostgreSQL backend: several gateway replicas on one database. A pool of connections;
//! every write is one transaction that first locks its order's row (`SELECT … FOR UPDATE`),
//! so two replicas acting on the same order serialise while the engine decides, and then
//! touches that order's outbox rows (one lock order everywhere: order, then outbox rows; claims
//! lock outbox rows only and never wait). Commits that queue or unblock outbox work wake every
//! replica's dispatcher through `NOTIFY`.

use crate::common::{self, order_from_row, outbox_from_row};
use crate::reads;
use crate::statements::{self, Dialect::Postgres};
use crate::units::{self, RecordChange, UnitTx};
use crate::{
    now_ms, AcceptanceDecision, ActionRequest, ActionResult, AttemptReport, EventRecord, Exchange, IngestResult,
    OrderFilter, OutboxRecord, OutboxStats, OutboxStatus, PickupVerification, Respond, Result, Store, StoreError,
    StoredOrder,
};
use async_trait::async_trait;
use kuper_bridge_domain::{Order, Policy};
use kuper_bridge_wire::WebhookEnvelope;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tracing::warn;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which a commit that queues or unblocks outbox work wakes every replica.
const CHANNEL: &str = "kuper_bridge_outbox";
/// Our statements are small; one that runs this long is stuck (the webhook is answered 503).
const STATEMENT_TIMEOUT: &str = "15s";
/// No transaction waits on the network, so an idle one is leaked: end it and free its locks.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";
/// Advisory lock class (first key of `pg_advisory_xact_lock(int, int)`) for a store's pickup
/// codes; the second key is the store id's hash.
const PICKUP_CODES_LOCK: i32 = 0x6b62_0001;

pub struct PgStore {
    pool: PgPool,
    signal: Arc<Notify>,
    forwarding: Arc<crate::Forwarding>,
    /// Dropped with the store, which stops the listener task.
    _listener: oneshot::Sender<()>,
}

use common::ORDER_COLUMNS;
use common::OUTBOX_COLUMNS;
/// A pending record that is the head of its order's queue (no earlier pending or dead record:
/// per-order FIFO, protocol.md §9), due, and not under a live lease. Binds $1 = now.
pub(crate) const CLAIM_FROM: &str = "outbox o";
pub(crate) const HEAD_DUE: &str = "o.status = 'pending' AND o.next_attempt_at <= $1 AND (o.lease_until IS NULL OR o.lease_until <= $1)
    AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))";

impl PgStore {
    async fn run_migrations(&self) -> Result<()> {
        // Without the pool's timeouts: a migration may rewrite a large table or wait for
        // another replica's migration (sqlx serialises them with an advisory lock).
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SET statement_timeout = 0").execute(&mut conn).await?;
        sqlx::query("SET lock_timeout = 0").execute(&mut conn).await?;
        // run_direct: sqlx's own way around `run`'s "Acquire is not general enough" in a Send future.
        // A replica of the previous release must still start after a newer one migrated:
        // migrations only add, and unknown applied migrations are not an error.
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.set_ignore_missing(true);
        migrator.run_direct(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// Fills in the search columns of orders stored before they existed (migration 0008), a
    /// page at a time; new and changed orders get them in `save_order`.
    async fn backfill_search_keys(&self) -> Result<u64> {
        let mut done = 0;
        loop {
            let rows =
                sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE customer_name IS NULL LIMIT 500"))
                    .fetch_all(&self.pool)
                    .await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut tx = self.begin().await?;
            for row in &rows {
                let stored = order_from_row(row)?;
                let keys = pg_search_keys(&stored.order);
                sqlx::query(
                    "UPDATE orders SET phone_key = $1, customer_name = $2, pickup_code = $3, anomalies = $4 WHERE id = $5",
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

    async fn change_operator(&self, name: &str, change: common::OperatorChange<'_>) -> Result<crate::Operator> {
        let query = format!(
            "UPDATE operators SET {} = $2, updated_at = $3 WHERE name = $1 RETURNING {}",
            change.column(),
            common::OPERATOR_COLUMNS
        );
        let query = sqlx::query(&query).bind(no_nul(name));
        let query = match change {
            common::OperatorChange::Disabled(disabled) => query.bind(disabled),
            common::OperatorChange::PasswordHash(hash) => query.bind(hash),
        };
        let mut tx = self.begin().await?;
        // A disabled account or a changed password ends every session of the account.
        sqlx::query("DELETE FROM sessions WHERE operator_id IN (SELECT id FROM operators WHERE name = $1)")
            .bind(no_nul(name))
            .execute(&mut *tx)
            .await?;
        let row = query.bind(now_ms()).fetch_optional(&mut *tx).await?;
        let updated = row.as_ref().map(common::operator_from_row).transpose()?;
        tx.commit().await?;
        updated.ok_or_else(|| StoreError::OperatorNotFound(name.to_string()))
    }

    /// Connects (failing when the server is unreachable) and subscribes to the wake-up
    /// channel before returning, so no other replica's commit after `open` goes unnoticed.
    pub async fn open(url: &str, store_options: &crate::StoreOptions) -> Result<Self> {
        // `lock_timeout` plays SQLite's busy_timeout: a write waiting longer than that for
        // another replica's lock on the same order fails, and the webhook is answered 503.
        let lock_timeout = format!("{}ms", store_options.busy_timeout.as_millis().max(1));
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?
            .application_name("kuper-bridge")
            .options([
                ("lock_timeout", lock_timeout.as_str()),
                ("statement_timeout", STATEMENT_TIMEOUT),
                ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
            ]);
        // One plain connection first: a pool keeps retrying a refused connection until its
        // acquire timeout, and a wrong URL or a server that is down should fail `serve` at once.
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        let signal = Arc::new(Notify::new());
        let listener = listen(&options).await?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(relay_wake_ups(listener, options, signal.clone(), stopped));
        Ok(Self { pool, signal, forwarding: Arc::new(store_options.forwarding.clone()), _listener: stop })
    }

    /// The console's read queries on this pool (`reads`, shared with SQLite).
    fn reads(&self) -> reads::Reads<'_, sqlx::Postgres> {
        reads::Reads { pool: &self.pool, names: common::NameIndex::TsVector, bindable: pg_filter }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        // READ COMMITTED: each statement sees what was committed before it started, and the
        // order row lock taken first serialises the writers of one order.
        // The pickup-code and claim reasoning assume READ COMMITTED, whatever the server's default.
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?)
    }

    /// A unit of work (`units`) in its own transaction.
    async fn unit(&self) -> Result<PgUnit> {
        Ok(PgUnit { tx: self.begin().await?, woke: false })
    }

    /// A unit's answer, after waking this process's dispatcher if it queued or freed a
    /// notification (other replicas are woken by the unit's NOTIFY at commit).
    fn woken<T>(&self, done: units::Done<T>) -> T {
        if done.wake {
            self.signal.notify_one();
        }
        done.value
    }
}

/// The primitives of the units of work on PostgreSQL. Every order read here is locked until
/// commit (`FOR UPDATE`): the writers of one order, on any replica, take turns.
struct PgUnit {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The transaction already wakes the other replicas at commit (see `insert_outbox`).
    woke: bool,
}

#[async_trait]
impl UnitTx for PgUnit {
    async fn order_by_identity(&mut self, env: &WebhookEnvelope) -> Result<Option<StoredOrder>> {
        find_by_identity(&mut self.tx, env).await
    }

    async fn order_by_reference(&mut self, reference: &str) -> Result<Option<StoredOrder>> {
        find_order_in(&mut self.tx, reference, true).await
    }

    async fn order_by_id(&mut self, id: i64) -> Result<Option<StoredOrder>> {
        let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    async fn record_and_order(&mut self, outbox_id: i64) -> Result<(OutboxRecord, StoredOrder)> {
        let stored = lock_order_of(&mut self.tx, outbox_id).await?;
        let record = fetch_outbox(&mut self.tx, outbox_id, true).await?;
        Ok((record, stored))
    }

    async fn record(&mut self, outbox_id: i64) -> Result<OutboxRecord> {
        fetch_outbox(&mut self.tx, outbox_id, false).await
    }

    async fn number_taken(&mut self, number: &str) -> Result<bool> {
        let taken: i64 = statements::number_taken(Postgres, number).pg().fetch_one(&mut *self.tx).await?.try_get(0)?;
        Ok(taken > 0)
    }

    async fn lock_pickup_codes(&mut self, store_id: &str) -> Result<()> {
        lock_pickup_codes(&mut self.tx, store_id).await
    }

    async fn pickup_code_in_use(&mut self, store_id: &str, code: &str, except_order: i64) -> Result<bool> {
        pickup_code_in_use(&mut self.tx, store_id, code, except_order).await
    }

    async fn earlier_request(&mut self, key: &str) -> Result<Option<(String, i64, Vec<i64>)>> {
        let q = statements::earlier_request(Postgres, key);
        let Some(row) = q.pg().fetch_optional(&mut *self.tx).await? else { return Ok(None) };
        let ids: String = row.try_get(2)?;
        Ok(Some((row.try_get(0)?, row.try_get(1)?, serde_json::from_str(&ids)?)))
    }

    async fn create_order(&mut self, draft: &Order, prefix: &str, now: i64) -> Result<Option<(i64, Order)>> {
        // The id first, so the number `{prefix}{id}` goes in with the row: one insert that
        // either creates the order or finds that someone else just did (it waits for their
        // commit).
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
            .fetch_one(&mut *self.tx)
            .await?;
        let mut order = draft.clone();
        order.number = format!("{prefix}{id}");
        let keys = pg_search_keys(&order);
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO orders (id, original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at,
                 phone_key, customer_name, pickup_code, anomalies)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(&order.original_order_id)
        .bind(&order.order_uuid)
        .bind(&order.number)
        .bind(&order.store_id)
        .bind(order.scheme.as_str())
        .bind(order.state().as_str())
        .bind(serde_json::to_string(&order)?)
        .bind(now)
        .bind(&keys.phone_key)
        .bind(&keys.customer_name)
        .bind(&keys.pickup_code)
        .bind(keys.anomalies)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(inserted.map(|id| (id, order)))
    }

    async fn save_order(&mut self, id: i64, order: &Order, now: i64) -> Result<()> {
        save_order(&mut self.tx, id, order, now).await
    }

    async fn change_record(&mut self, id: i64, change: &RecordChange, now: i64) -> Result<()> {
        statements::record_change(Postgres, id, &without_nul(change), now).pg().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn supersede_pending(&mut self, order_id: i64, reason: &str, now: i64) -> Result<u64> {
        supersede_pending(&mut self.tx, order_id, now, &no_nul(reason)).await
    }

    async fn promote_queue_head(&mut self, order_id: i64, destination: &crate::Destination, now: i64) -> Result<()> {
        promote_queue_head(&mut self.tx, order_id, destination, now).await
    }

    /// Queues rows behind the order's open records of the same destination (or at the head of
    /// an empty queue). Called under the order's row lock: the ids of one queue grow in commit
    /// order, which the head-of-queue rule of `claim_due` relies on.
    async fn insert_outbox(
        &mut self,
        order_id: i64,
        rows: &[common::OutboxRow],
        now: i64,
    ) -> Result<Vec<OutboxRecord>> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let mut insert = statements::insert_outbox(Postgres, order_id, row, now);
            let wakes = !self.woke;
            if wakes {
                // The replicas' wake-up rides on the insert instead of a statement of its own
                // at commit: one round trip fewer per action (NOTIFY is delivered at commit).
                // `pg_notify` is volatile, so the planner keeps the subquery although its
                // column is not selected (`postgres_a_commit_on_one_replica_wakes_the_others`
                // fails if it ever stops running).
                insert.sql = format!(
                    "WITH inserted AS ({}) SELECT inserted.* FROM inserted, (SELECT pg_notify('{CHANNEL}', '')) AS wake",
                    insert.sql
                );
            }
            records.push(outbox_from_row(&insert.pg().fetch_one(&mut *self.tx).await?)?);
            self.woke |= wakes;
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
        insert_event(&mut self.tx, order_id, outbox_id, now, exchange).await
    }

    async fn insert_deadline(
        &mut self,
        order_id: i64,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
        due_at: i64,
        now: i64,
    ) -> Result<bool> {
        let done = statements::insert_deadline(Postgres, order_id, kind, stage, due_at, now)
            .pg()
            .execute(&mut *self.tx)
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
        statements::remember_request(Postgres, key, order_id, outbox_ids, now)?.pg().execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn wake_replicas(&mut self) -> Result<()> {
        if self.woke {
            return Ok(());
        }
        notify_replicas(&mut self.tx).await
    }

    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

/// A listener on [`CHANNEL`] on a connection of its own (outside the pool, so it never takes
/// one of the pool's connections and has no idle or lifetime limit).
async fn listen(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Turns other replicas' `NOTIFY`s into wake-ups of this process's dispatcher until the store
/// is dropped (`stop`). A lost connection is re-established with backoff; since notifications
/// sent meanwhile are lost, every reconnection wakes the dispatcher once (and its 1 s poll is
/// the safety net for a connection that dies silently).
async fn relay_wake_ups(
    listener: PgListener,
    options: PgConnectOptions,
    signal: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut listener = Some(listener);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(active) = listener.as_mut() else {
            let reconnected = tokio::select! {
                _ = &mut stop => return,
                r = async {
                    tokio::time::sleep(backoff).await;
                    listen(&options).await
                } => r,
            };
            match reconnected {
                Ok(l) => {
                    listener = Some(l);
                    backoff = FIRST_BACKOFF;
                    signal.notify_one();
                }
                Err(e) => {
                    warn!(error = %e, "outbox wake-up listener: reconnect failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let received = tokio::select! {
            _ = &mut stop => return,
            r = active.try_recv() => r,
        };
        match received {
            Ok(Some(_)) => signal.notify_one(),
            // The connection was lost and re-established: anything sent meanwhile is gone.
            Ok(None) => signal.notify_one(),
            Err(e) => {
                warn!(error = %e, "outbox wake-up listener lost its connection; reconnecting");
                listener = None;
            }
        }
    }
}

/// Wakes every replica's dispatcher when the transaction commits (`NOTIFY` is delivered at
/// commit, and not at all on rollback). This process is woken in-process after the commit.
async fn notify_replicas(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(conn).await?;
    Ok(())
}

/// An outbox record's new state with its texts as PostgreSQL TEXT can hold them.
fn without_nul(change: &RecordChange) -> RecordChange {
    match change {
        RecordChange::Retry { next_attempt_at, in_doubt, last_status, error } => RecordChange::Retry {
            next_attempt_at: *next_attempt_at,
            in_doubt: *in_doubt,
            last_status: *last_status,
            error: error.as_deref().map(no_nul),
        },
        RecordChange::GivenUp { status, last_status, error } => {
            RecordChange::GivenUp { status: *status, last_status: *last_status, error: no_nul(error) }
        }
        other => other.clone(),
    }
}

/// NUL is the one character PostgreSQL TEXT refuses; it becomes U+FFFD in what we keep.
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

async fn insert_event(
    conn: &mut PgConnection,
    order_id: Option<i64>,
    outbox_id: Option<i64>,
    at: i64,
    e: &Exchange,
) -> Result<()> {
    // PostgreSQL TEXT cannot hold NUL; Kuper's answers and refused bodies may contain one.
    let e = &Exchange {
        kind: no_nul(&e.kind),
        direction: no_nul(&e.direction),
        event: e.event.as_deref().map(no_nul),
        outcome: e.outcome.as_deref().map(no_nul),
        method: e.method.as_deref().map(no_nul),
        path: e.path.as_deref().map(no_nul),
        status: e.status,
        latency_ms: e.latency_ms,
        headers: e.headers.as_deref().map(no_nul),
        body: e.body.as_deref().map(no_nul),
        response: e.response.as_deref().map(no_nul),
        detail: e.detail.as_deref().map(no_nul),
        request_id: e.request_id.as_deref().map(no_nul),
        actor: e.actor.as_ref().map(|a| match a {
            crate::Actor::Operator(n) => crate::Actor::Operator(no_nul(n)),
            crate::Actor::ApiKey(n) => crate::Actor::ApiKey(no_nul(n)),
            crate::Actor::Cli => crate::Actor::Cli,
        }),
    };
    statements::insert_event(Postgres, order_id, outbox_id, at, e).pg().execute(conn).await?;
    Ok(())
}

/// `lock`: inside a write transaction, lock the order's row until commit.
async fn find_order_in(conn: &mut PgConnection, reference: &str, lock: bool) -> Result<Option<StoredOrder>> {
    if reference.contains('\0') {
        // No stored id can contain NUL (the parser refuses it), and PostgreSQL would refuse the bind.
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE original_order_id = $1 OR order_uuid = $1 OR number = $1 ORDER BY id LIMIT 1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(reference)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

/// The order a webhook names, locked until commit.
async fn find_by_identity(conn: &mut PgConnection, env: &WebhookEnvelope) -> Result<Option<StoredOrder>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE ($1::text IS NOT NULL AND original_order_id = $1) OR ($2::text IS NOT NULL AND order_uuid = $2) ORDER BY id LIMIT 1 FOR UPDATE"
    ))
    .bind(&env.identity.original_order_id)
    .bind(&env.identity.order_uuid)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

/// Locks the order an outbox record belongs to (before the record itself: one lock order for
/// every writer) and returns it.
async fn lock_order_of(conn: &mut PgConnection, outbox_id: i64) -> Result<StoredOrder> {
    let order_id: i64 = sqlx::query_scalar("SELECT order_id FROM outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::OutboxNotFound(outbox_id))?;
    let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"))
        .bind(order_id)
        .fetch_one(conn)
        .await?;
    order_from_row(&row)
}

/// A board filter as PostgreSQL can bind it: TEXT cannot hold NUL (and no stored value has one).
fn pg_filter(f: &OrderFilter) -> OrderFilter {
    OrderFilter {
        state: f.state.as_deref().map(no_nul),
        scheme: f.scheme.as_deref().map(no_nul),
        store: f.store.as_deref().map(no_nul),
        search: f.search.as_deref().map(no_nul),
        ..f.clone()
    }
}

/// The search columns as PostgreSQL TEXT can hold them (no NUL).
fn pg_search_keys(order: &Order) -> common::SearchKeys {
    let keys = common::search_keys(order);
    common::SearchKeys {
        phone_key: keys.phone_key,
        customer_name: no_nul(&keys.customer_name),
        pickup_code: keys.pickup_code.as_deref().map(no_nul),
        anomalies: keys.anomalies,
    }
}

async fn save_order(conn: &mut PgConnection, id: i64, order: &Order, now: i64) -> Result<()> {
    let keys = pg_search_keys(order);
    sqlx::query(
        "UPDATE orders SET state = $1, data = $2, updated_at = $3, original_order_id = COALESCE(original_order_id, $4), order_uuid = COALESCE(order_uuid, $5),
             phone_key = $7, customer_name = $8, pickup_code = $9, anomalies = $10, deadline_check_at = 0, number = $11 WHERE id = $6",
    )
    .bind(order.state().as_str())
    .bind(serde_json::to_string(order)?)
    .bind(now)
    .bind(&order.original_order_id)
    .bind(&order.order_uuid)
    .bind(id)
    .bind(&keys.phone_key)
    .bind(&keys.customer_name)
    .bind(&keys.pickup_code)
    .bind(keys.anomalies)
    .bind(&order.number)
    .execute(conn)
    .await?;
    Ok(())
}

/// `lock`: hold the record's row until commit, so a claim by another replica (whose lease
/// check this read must not race) skips it meanwhile.
async fn fetch_outbox(conn: &mut PgConnection, id: i64, lock: bool) -> Result<OutboxRecord> {
    let row = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::OutboxNotFound(id))?;
    outbox_from_row(&row)
}

/// Makes the first open record of the order due if it was waiting: called by every commit
/// that may have made a record final (sent, skipped, dead letter skipped or superseded).
async fn promote_queue_head(
    conn: &mut PgConnection,
    order_id: i64,
    destination: &crate::Destination,
    now: i64,
) -> Result<()> {
    statements::promote_queue_head(Postgres, order_id, destination, now).pg().execute(conn).await?;
    Ok(())
}

/// Kuper ended the order: queued notifications would only be refused (protocol.md §5).
async fn supersede_pending(conn: &mut PgConnection, order_id: i64, now: i64, reason: &str) -> Result<u64> {
    let done = statements::supersede_pending(Postgres, order_id, reason, now).pg().execute(&mut *conn).await?;
    Ok(done.rows_affected())
}

/// Pickup codes are unique among a store's active orders, but two replicas giving codes to
/// two orders of one store at once hold two different order locks and would each see the
/// other's code as free: the check runs under a per-store lock held until commit.
async fn lock_pickup_codes(conn: &mut PgConnection, store_id: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(PICKUP_CODES_LOCK)
        .bind(store_id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn pickup_code_in_use(conn: &mut PgConnection, store_id: &str, code: &str, except_order: i64) -> Result<bool> {
    let clash: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE store_id = $1 AND id <> $2 AND state NOT IN ('delivered', 'canceled')
         AND pickup_code = $3",
    )
    .bind(store_id)
    .bind(except_order)
    .bind(code)
    .fetch_one(conn)
    .await?;
    Ok(clash > 0)
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        self.run_migrations().await?;
        let filled = self.backfill_search_keys().await?;
        if filled > 0 {
            tracing::info!(orders = filled, "filled in the search columns of orders stored by an older version");
        }
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
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
        let tx = self.unit().await?;
        let done = units::ingest(tx, &self.forwarding, env, exchange, policy, respond, acceptance, now_ms()).await?;
        Ok(self.woken(done))
    }

    async fn record_exchange(&self, order_id: Option<i64>, exchange: Exchange) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_event(&mut conn, order_id, None, now_ms(), &exchange).await
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
        units::verify_pickup_code(self.unit().await?, reference, code, policy, exchange, now_ms()).await?
    }

    async fn find_order(&self, reference: &str) -> Result<Option<StoredOrder>> {
        let mut conn = self.pool.acquire().await?;
        find_order_in(&mut conn, reference, false).await
    }

    async fn list_orders(&self, f: &OrderFilter) -> Result<Vec<StoredOrder>> {
        self.reads().list_orders(f).await
    }

    async fn order_events(&self, order_id: i64) -> Result<Vec<EventRecord>> {
        self.reads().order_events(order_id).await
    }

    async fn claim_due(&self, owner: &str, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<crate::Claimed>> {
        // One statement; with nothing due it locks and writes nothing, so an idle poll is a
        // read. Why two replicas claiming at once can neither share an order nor a record,
        // under READ COMMITTED and without a per-order lock:
        // - A record is leased only by an UPDATE of its row, and the subquery takes the row
        //   lock first (FOR UPDATE) skipping rows another claim holds (SKIP LOCKED). A row
        //   changed by a transaction that committed after this statement's snapshot is
        //   re-read at its newest version and the conditions on it (pending, lease absent or
        //   expired) re-checked before it is locked, so a record whose lease another replica
        //   just took (or which was just completed or skipped) is passed over: no record is
        //   leased twice while a lease is live.
        // - The head rule reads the snapshot: a record is eligible only if every earlier
        //   record of its order looked final (sent or skipped) there. Final is for good
        //   (replay and skip only move dead letters), so a stale snapshot can only make us
        //   pass over a head, never claim a record behind a non-final one. An in-flight head
        //   is pending (leased) until the commit that completes it, so the record behind it
        //   is not a head before that commit: e.g. replica 1 completing A while replica 2
        //   claims sees either A pending (B not a head) or A sent (B is the head, rightly).
        // - Records of one order are inserted under that order's row lock (`apply_action`),
        //   so their ids grow in commit order: a snapshot that sees a record sees every
        //   earlier record of its order.
        // Hence at most one record per order is ever leased at a time, and in id order.
        // (Locking the order row here, or an advisory lock per order, would add nothing but
        // waits on the merchant's and Kuper's writes.)
        // Each claim gets its own lease token (owner/id/attempt), so a result that comes back
        // after its lease expired and the record was claimed again is recognised as late.
        let rows = sqlx::query(&format!(
            "UPDATE outbox SET lease_until = $1 + $2, lease_owner = $3 || '/' || id || '/' || $1, attempts = attempts + 1,
                 in_doubt = CASE WHEN lease_until IS NOT NULL THEN TRUE ELSE in_doubt END, updated_at = $1
             WHERE id IN (SELECT o.id FROM {CLAIM_FROM} WHERE {HEAD_DUE} ORDER BY o.next_attempt_at, o.id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(now)
        .bind(lease_ms)
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox_from_row(row) {
                Ok(record) => claimed.push(record),
                Err(e) => {
                    let (id, why): (i64, String) = (row.try_get("id")?, e.to_string());
                    tracing::error!(outbox_id = id, error = %why, "a claimed outbox record does not read back; dead-lettered");
                    statements::unreadable_record(Postgres, id, &no_nul(&why), now).pg().execute(&self.pool).await?;
                }
            }
        }
        // RETURNING has no order; hand them out oldest due first, as SQLite does.
        claimed.sort_by_key(|r| (r.next_attempt_at, r.id));
        claimed.into_iter().map(crate::Claimed::from_claim).collect()
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
            "SELECT MIN(CASE WHEN o.lease_until IS NOT NULL AND o.lease_until > $1 THEN o.lease_until ELSE o.next_attempt_at END)
             FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at < $2
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))",
        )
        .bind(now)
        .bind(common::WAITING)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn repair_queue_heads(&self, now: i64) -> Result<u64> {
        // A read first: with nothing to repair (always, unless an older version wrote to the
        // outbox) the writer is not taken.
        let stranded: Vec<i64> = sqlx::query_scalar(
            "SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at = $1
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.destination = o.destination AND p.id < o.id AND p.status IN ('pending', 'dead'))
             LIMIT 1000",
        )
        .bind(common::WAITING)
        .fetch_all(&self.pool)
        .await?;
        let mut repaired = 0;
        for id in stranded {
            // Under the order's lock, like every other change to its queue.
            let mut tx = self.begin().await?;
            let order = lock_order_of(&mut tx, id).await?;
            let destination: String =
                sqlx::query_scalar("SELECT destination FROM outbox WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
            let destination = common::stored_destination(&destination)?;
            promote_queue_head(&mut tx, order.id, &destination, now).await?;
            notify_replicas(&mut tx).await?;
            tx.commit().await?;
            repaired += 1;
        }
        if repaired > 0 {
            self.signal.notify_one();
        }
        Ok(repaired)
    }

    async fn release_stale_leases(&self, _owner: &str) -> Result<u64> {
        // Several replicas share the database: a lease we do not recognise may be another
        // live replica's, and releasing it would send its record twice. A dead replica's
        // leases simply expire (lease = attempt budget + 30 s).
        Ok(0)
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
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now_ms() - crate::IDEMPOTENCY_TTL_MS)
            .execute(&self.pool)
            .await?;
        let (mut total, mut batches) = (0, 0);
        loop {
            // The history of an open order or of a notification still waiting stays.
            let done = sqlx::query(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.at < $1
                   AND (e.order_id IS NULL OR e.order_id IN (SELECT o.id FROM orders o WHERE o.state IN ('delivered', 'canceled')))
                   AND (e.outbox_id IS NULL OR e.outbox_id NOT IN (SELECT x.id FROM outbox x WHERE x.status IN ('pending', 'dead')))
                   LIMIT 2000)",
            )
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
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
            "SELECT COUNT(*) FILTER (WHERE status = 'pending') AS pending, COUNT(*) FILTER (WHERE status = 'dead') AS dead,
                    MIN(created_at) FILTER (WHERE status = 'pending') AS oldest FROM outbox WHERE status IN ('pending', 'dead')",
        )
        .fetch_one(&self.pool)
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
        let mut tx = self.begin().await?;
        statements::deadline_checks(Postgres, checks).pg().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
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
        let tx = self.unit().await?;
        let done =
            units::record_deadline(tx, &self.forwarding, order_id, kind, stage, due_at, exchange, now_ms()).await?;
        Ok(self.woken(done))
    }

    // Each operator write is one statement: autocommit on a pool connection, no row lock to
    // order against the order/outbox writers.

    async fn create_operator(&self, new: &crate::NewOperator) -> Result<crate::Operator> {
        let now = now_ms();
        // Two replicas adding the same name at once: one inserts, the other gets no row back
        // (ON CONFLICT waits for the first to commit) and reports the name as taken.
        let row = sqlx::query(&format!(
            "INSERT INTO operators (name, role, password_hash, disabled, created_at, updated_at)
             VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (name) DO NOTHING RETURNING {}",
            common::OPERATOR_COLUMNS
        ))
        .bind(no_nul(&new.name))
        .bind(new.role.as_str())
        .bind(&new.password_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(common::operator_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::OperatorExists(new.name.clone()))
    }

    async fn find_operator(&self, name: &str) -> Result<Option<crate::Operator>> {
        let row = sqlx::query(&format!("SELECT {} FROM operators WHERE name = $1", common::OPERATOR_COLUMNS))
            .bind(no_nul(name))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::operator_from_row).transpose()
    }

    async fn list_operators(&self) -> Result<Vec<crate::Operator>> {
        // COLLATE "C": byte order, the same as SQLite's, whatever the database's locale.
        let rows =
            sqlx::query(&format!("SELECT {} FROM operators ORDER BY name COLLATE \"C\"", common::OPERATOR_COLUMNS))
                .fetch_all(&self.pool)
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
        sqlx::query("INSERT INTO sessions (token_hash, operator_id, created_at, last_seen_at) VALUES ($1, $2, $3, $3)")
            .bind(no_nul(token_hash))
            .bind(operator_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<crate::SessionRecord>> {
        let row = sqlx::query(&format!("{} WHERE s.token_hash = $1", common::SESSION_SELECT))
            .bind(no_nul(token_hash))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::session_from_row).transpose()
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
            .bind(no_nul(token_hash))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(no_nul(token_hash)).execute(&self.pool).await?;
        Ok(())
    }

    async fn purge_sessions(&self, created_before: i64, seen_before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE created_at < $1 OR last_seen_at < $2")
            .bind(created_before)
            .bind(seen_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
