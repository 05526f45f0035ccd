//! Statements of the unit primitives (`units::UnitTx`) whose SQL is the same on both
//! backends, written once: `QueryBuilder` numbers the placeholders for each (`?` on SQLite,
//! `$n` on PostgreSQL). What differs stays in the backend: locks (`FOR UPDATE`), how a new
//! order gets its id, TEXT without NUL on PostgreSQL.

use crate::units::RecordChange;
use sqlx::QueryBuilder;

/// An outbox record's new state (`units::RecordChange`).
pub(crate) fn record_change<'a, DB>(id: i64, change: &RecordChange, now: i64) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    bool: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE outbox SET updated_at = ");
    q.push_bind(now);
    match change {
        RecordChange::Sent { last_status } => {
            q.push(", status = 'sent', sent_at = ").push_bind(now);
            q.push(", lease_until = NULL, lease_owner = NULL, last_error = NULL, last_status = ")
                .push_bind(*last_status);
        }
        RecordChange::Retry { next_attempt_at, in_doubt, last_status, error } => {
            q.push(", next_attempt_at = ").push_bind(*next_attempt_at);
            q.push(", lease_until = NULL, lease_owner = NULL, last_status = ").push_bind(*last_status);
            q.push(", last_error = ").push_bind(error.clone());
            q.push(", in_doubt = CASE WHEN ").push_bind(*in_doubt).push(" THEN TRUE ELSE in_doubt END");
        }
        RecordChange::GivenUp { status, last_status, error } => {
            q.push(", status = ").push_bind(status.as_str().to_string());
            q.push(", lease_until = NULL, lease_owner = NULL, last_status = ").push_bind(*last_status);
            q.push(", last_error = ").push_bind(error.clone());
        }
        // A replay starts a fresh retry schedule and give-up clock; the attempts so far stay
        // in the timeline.
        RecordChange::Decided { status } => {
            q.push(", status = ").push_bind(status.as_str().to_string());
            q.push(", next_attempt_at = ").push_bind(now);
            q.push(", retry_since = ").push_bind(now);
            q.push(", attempts = 0, in_doubt = FALSE");
        }
    }
    q.push(" WHERE id = ").push_bind(id);
    q
}

/// A deadline stage reached, once: a concurrent sweep inserting the same stage waits for the
/// first transaction and then inserts nothing.
pub(crate) fn insert_deadline<'a, DB>(
    order_id: i64,
    kind: &str,
    stage: &str,
    due_at: i64,
    now: i64,
) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO order_deadlines (order_id, kind, stage, due_at, at) VALUES (");
    let mut values = q.separated(", ");
    values
        .push_bind(order_id)
        .push_bind(kind.to_string())
        .push_bind(stage.to_string())
        .push_bind(due_at)
        .push_bind(now);
    q.push(") ON CONFLICT (order_id, kind, stage) DO NOTHING");
    q
}

/// The request an Idempotency-Key was first used for: `(request_hash, order_id, outbox_ids)`.
pub(crate) fn earlier_request<'a, DB>(key: &str) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT request_hash, order_id, outbox_ids FROM idempotency_keys WHERE key = ");
    q.push_bind(key.to_string());
    q
}

pub(crate) fn remember_request<'a, DB>(
    key: &crate::IdempotencyKey,
    order_id: i64,
    outbox_ids: &[i64],
    now: i64,
) -> crate::Result<QueryBuilder<'a, DB>>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO idempotency_keys (key, request_hash, order_id, outbox_ids, created_at) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(key.key.clone())
        .push_bind(key.request_hash.clone())
        .push_bind(order_id)
        .push_bind(serde_json::to_string(outbox_ids)?)
        .push_bind(now);
    q.push(")");
    Ok(q)
}

pub(crate) fn number_taken<'a, DB>(number: &str) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT COUNT(*) FROM orders WHERE number = ");
    q.push_bind(number.to_string());
    q
}

/// Makes the first open record of the queue due if it was waiting: run by every unit that
/// may have made a record final (sent, skipped, dead letter skipped or superseded).
pub(crate) fn promote_queue_head<'a, DB>(order_id: i64, destination: &str, now: i64) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE outbox SET next_attempt_at = ");
    q.push_bind(now);
    q.push(" WHERE id = (SELECT MIN(p.id) FROM outbox p WHERE p.order_id = ").push_bind(order_id);
    q.push(" AND p.destination = ").push_bind(destination.to_string());
    q.push(" AND p.status IN ('pending', 'dead')) AND status = 'pending' AND next_attempt_at = ");
    q.push_bind(crate::common::WAITING);
    q
}

/// Kuper ended the order: its queued notifications would only be refused (protocol.md §5).
/// A record in flight (leased) is left to its sender. On PostgreSQL a record being claimed
/// right now is locked by the claim: this waits for it and then sees its live lease.
pub(crate) fn supersede_pending<'a, DB>(order_id: i64, reason: &str, now: i64) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE outbox SET status = 'skipped', last_error = ");
    q.push_bind(reason.to_string());
    q.push(", updated_at = ").push_bind(now);
    q.push(" WHERE order_id = ").push_bind(order_id);
    q.push(" AND destination = 'kuper' AND status IN ('pending', 'dead') AND (lease_until IS NULL OR lease_until <= ");
    q.push_bind(now).push(")");
    q
}

/// One record queued behind the order's open records of the same destination (or at the head
/// of an empty queue), returning its id.
pub(crate) fn insert_outbox<'a, DB>(order_id: i64, row: &crate::common::OutboxRow, now: i64) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO outbox (order_id, kind, destination, event, body, status, next_attempt_at, created_at, updated_at, retry_since, idempotency_key) VALUES (",
    );
    q.push_bind(order_id).push(", ");
    q.push_bind(row.kind.to_string()).push(", ");
    q.push_bind(row.destination.clone()).push(", ");
    q.push_bind(row.event.clone()).push(", ");
    q.push_bind(row.body.clone()).push(", 'pending', CASE WHEN EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = ");
    q.push_bind(order_id).push(" AND p.destination = ").push_bind(row.destination.clone());
    q.push(" AND p.status IN ('pending', 'dead')) THEN ").push_bind(crate::common::WAITING);
    q.push(" ELSE ").push_bind(now).push(" END, ");
    let mut times = q.separated(", ");
    times.push_bind(now).push_bind(now).push_bind(now).push_bind(format!("kb-{}", uuid::Uuid::new_v4()));
    q.push(") RETURNING id");
    q
}

/// A timeline entry. The exchange must already be redacted by the caller (and, on
/// PostgreSQL, without NUL).
pub(crate) fn insert_event<'a, DB>(
    order_id: Option<i64>,
    outbox_id: Option<i64>,
    at: i64,
    e: &crate::Exchange,
) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id, actor) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(order_id)
        .push_bind(outbox_id)
        .push_bind(at)
        .push_bind(e.kind.clone())
        .push_bind(e.direction.clone())
        .push_bind(e.event.clone())
        .push_bind(e.outcome.clone())
        .push_bind(e.method.clone())
        .push_bind(e.path.clone())
        .push_bind(e.status)
        .push_bind(e.latency_ms)
        .push_bind(e.headers.clone())
        .push_bind(e.body.clone())
        .push_bind(e.response.clone())
        .push_bind(e.detail.clone())
        .push_bind(e.request_id.clone())
        .push_bind(e.actor.as_ref().map(crate::Actor::label));
    q.push(")");
    q
}
