//! Statements whose SQL is the same on both backends, written once. A [`Stmt`] is SQL text
//! plus its values; its placeholders are numbered for the backend that runs it (`?1` on
//! SQLite, whose writer is a rusqlite connection, `$1` on PostgreSQL through sqlx). What
//! differs stays in the backend: locks (`FOR UPDATE`), how a new order gets its id, TEXT
//! without NUL on PostgreSQL.

use crate::units::RecordChange;
use sqlx::postgres::PgArguments;
use sqlx::Postgres;

/// Whose placeholders a statement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound value. Text and integers may be NULL; booleans never are here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    /// A document: compressed on SQLite when that is smaller ([`crate::packed`]), text on
    /// PostgreSQL.
    Doc(Option<String>),
    Bool(bool),
}

impl Arg {
    pub(crate) fn doc(text: impl Into<Option<String>>) -> Self {
        Arg::Doc(text.into())
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => v.to_sql(),
            Arg::Text(v) => v.to_sql(),
            Arg::Doc(Some(text)) => match crate::packed::pack(text) {
                Some(packed) => Ok(rusqlite::types::ToSqlOutput::Owned(rusqlite::types::Value::Blob(packed))),
                None => text.to_sql(),
            },
            Arg::Doc(None) => Ok(rusqlite::types::ToSqlOutput::Owned(rusqlite::types::Value::Null)),
            Arg::Bool(v) => v.to_sql(),
        }
    }
}

/// SQL text and its values, placeholders numbered for one backend.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub args: Vec<Arg>,
    dialect: Dialect,
}

impl Stmt {
    pub(crate) fn new(dialect: Dialect, sql: &str) -> Self {
        Stmt { sql: sql.to_string(), args: Vec::new(), dialect }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        let mark = match self.dialect {
            Dialect::Sqlite => '?',
            Dialect::Postgres => '$',
        };
        self.sql.push(mark);
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// Appends placeholders for `values`, separated by commas.
    pub(crate) fn bind_list<A: Into<Arg>>(&mut self, values: impl IntoIterator<Item = A>) -> &mut Self {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self
    }

    /// The statement as an sqlx query on PostgreSQL.
    pub(crate) fn pg(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        debug_assert_eq!(self.dialect, Dialect::Postgres);
        self.args.iter().fold(sqlx::query(&self.sql), |q, arg| match arg {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) | Arg::Doc(v) => q.bind(v.as_deref()),
            Arg::Bool(v) => q.bind(*v),
        })
    }

    /// Runs the statement on the SQLite writer's connection; the number of rows changed.
    pub(crate) fn execute(&self, conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
        debug_assert_eq!(self.dialect, Dialect::Sqlite);
        conn.prepare_cached(&self.sql)?.execute(rusqlite::params_from_iter(self.args.iter()))
    }

    /// The first column of the first row, on the SQLite writer's connection.
    pub(crate) fn query_row<T: rusqlite::types::FromSql>(&self, conn: &rusqlite::Connection) -> rusqlite::Result<T> {
        debug_assert_eq!(self.dialect, Dialect::Sqlite);
        conn.prepare_cached(&self.sql)?.query_row(rusqlite::params_from_iter(self.args.iter()), |row| row.get(0))
    }
}

/// An outbox record's new state (`units::RecordChange`).
pub(crate) fn record_change(d: Dialect, id: i64, change: &RecordChange, now: i64) -> Stmt {
    let mut q = Stmt::new(d, "UPDATE outbox SET updated_at = ");
    q.bind(now);
    match change {
        RecordChange::Sent { last_status } => {
            q.push(", status = 'sent', sent_at = ").bind(now);
            q.push(", lease_until = NULL, lease_owner = NULL, last_error = NULL, last_status = ").bind(*last_status);
        }
        RecordChange::Retry { next_attempt_at, in_doubt, last_status, error } => {
            q.push(", next_attempt_at = ").bind(*next_attempt_at);
            q.push(", lease_until = NULL, lease_owner = NULL, last_status = ").bind(*last_status);
            q.push(", last_error = ").bind(error.clone());
            q.push(", in_doubt = CASE WHEN ").bind(*in_doubt).push(" THEN TRUE ELSE in_doubt END");
        }
        RecordChange::GivenUp { status, last_status, error } => {
            q.push(", status = ").bind(status.as_str().to_string());
            q.push(", lease_until = NULL, lease_owner = NULL, last_status = ").bind(*last_status);
            q.push(", last_error = ").bind(error.clone());
        }
        // A replay starts a fresh retry schedule and give-up clock; the attempts so far stay
        // in the timeline.
        RecordChange::Decided { status } => {
            q.push(", status = ").bind(status.as_str().to_string());
            q.push(", next_attempt_at = ").bind(now);
            q.push(", retry_since = ").bind(now);
            q.push(", attempts = 0, in_doubt = FALSE");
        }
    }
    q.push(" WHERE id = ").bind(id);
    q
}

/// A deadline stage reached, once: a concurrent sweep inserting the same stage waits for the
/// first transaction and then inserts nothing.
pub(crate) fn insert_deadline(
    d: Dialect,
    order_id: i64,
    kind: kuper_bridge_domain::deadlines::DeadlineKind,
    stage: kuper_bridge_domain::deadlines::DeadlineStage,
    due_at: i64,
    now: i64,
) -> Stmt {
    let mut q = Stmt::new(d, "INSERT INTO order_deadlines (order_id, kind, stage, due_at, at) VALUES (");
    q.bind(order_id)
        .push(", ")
        .bind(kind.as_str())
        .push(", ")
        .bind(stage.as_str())
        .push(", ")
        .bind(due_at)
        .push(", ")
        .bind(now);
    q.push(") ON CONFLICT (order_id, kind, stage) DO NOTHING");
    q
}

/// The request an Idempotency-Key was first used for: `(request_hash, order_id, outbox_ids)`.
pub(crate) fn earlier_request(d: Dialect, key: &str) -> Stmt {
    let mut q = Stmt::new(d, "SELECT request_hash, order_id, outbox_ids FROM idempotency_keys WHERE key = ");
    q.bind(key);
    q
}

pub(crate) fn remember_request(
    d: Dialect,
    key: &crate::IdempotencyKey,
    order_id: i64,
    outbox_ids: &[i64],
    now: i64,
) -> crate::Result<Stmt> {
    let mut q =
        Stmt::new(d, "INSERT INTO idempotency_keys (key, request_hash, order_id, outbox_ids, created_at) VALUES (");
    q.bind(key.key.as_str()).push(", ").bind(key.request_hash.as_str()).push(", ").bind(order_id);
    q.push(", ").bind(serde_json::to_string(outbox_ids)?).push(", ").bind(now).push(")");
    Ok(q)
}

pub(crate) fn number_taken(d: Dialect, number: &str) -> Stmt {
    let mut q = Stmt::new(d, "SELECT COUNT(*) FROM orders WHERE number = ");
    q.bind(number);
    q
}

/// Makes the first open record of the queue due if it was waiting: run by every unit that
/// may have made a record final (sent, skipped, dead letter skipped or superseded).
pub(crate) fn promote_queue_head(d: Dialect, order_id: i64, destination: &crate::Destination, now: i64) -> Stmt {
    let mut q = Stmt::new(d, "UPDATE outbox SET next_attempt_at = ");
    q.bind(now);
    q.push(" WHERE id = (SELECT MIN(p.id) FROM outbox p WHERE p.order_id = ").bind(order_id);
    q.push(" AND p.destination = ").bind(destination.as_str());
    q.push(" AND p.status IN ('pending', 'dead')) AND status = 'pending' AND next_attempt_at = ");
    q.bind(crate::common::WAITING);
    q
}

/// A claimed record that does not read back (a damaged row): a dead letter with the reason, so
/// it holds only its own order's queue instead of failing every claim that takes it.
pub(crate) fn unreadable_record(d: Dialect, id: i64, why: &str, now: i64) -> Stmt {
    let mut q =
        Stmt::new(d, "UPDATE outbox SET status = 'dead', lease_until = NULL, lease_owner = NULL, last_error = ");
    q.bind(format!("stored record unreadable: {why}"));
    q.push(", updated_at = ").bind(now);
    q.push(" WHERE id = ").bind(id);
    q
}

/// Kuper ended the order: its queued notifications would only be refused (protocol.md §5).
/// A record in flight (leased) is left to its sender. On PostgreSQL a record being claimed
/// right now is locked by the claim: this waits for it and then sees its live lease.
pub(crate) fn supersede_pending(d: Dialect, order_id: i64, reason: &str, now: i64) -> Stmt {
    let mut q = Stmt::new(d, "UPDATE outbox SET status = 'skipped', last_error = ");
    q.bind(reason);
    q.push(", updated_at = ").bind(now);
    q.push(" WHERE order_id = ").bind(order_id);
    q.push(" AND destination = 'kuper' AND status IN ('pending', 'dead') AND (lease_until IS NULL OR lease_until <= ");
    q.bind(now).push(")");
    q
}

/// One record queued behind the order's open records of the same destination (or at the head
/// of an empty queue), returning the record as stored: the caller answers with it, without
/// reading it back.
pub(crate) fn insert_outbox(d: Dialect, order_id: i64, row: &crate::common::OutboxRow, now: i64) -> Stmt {
    let mut q = Stmt::new(
        d,
        "INSERT INTO outbox (order_id, kind, destination, event, body, status, next_attempt_at, created_at, updated_at, retry_since, idempotency_key) VALUES (",
    );
    q.bind(order_id).push(", ");
    q.bind(row.destination.kind().as_str()).push(", ");
    q.bind(row.destination.as_str()).push(", ");
    q.bind(row.event.clone()).push(", ");
    q.bind(Arg::doc(row.body.clone()))
        .push(", 'pending', CASE WHEN EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = ");
    q.bind(order_id).push(" AND p.destination = ").bind(row.destination.as_str());
    q.push(" AND p.status IN ('pending', 'dead')) THEN ").bind(crate::common::WAITING);
    q.push(" ELSE ").bind(now).push(" END, ");
    q.bind(now).push(", ").bind(now).push(", ").bind(now).push(", ").bind(format!("kb-{}", uuid::Uuid::new_v4()));
    q.push(") RETURNING ").push(crate::common::OUTBOX_COLUMNS);
    q
}

/// A timeline entry. The exchange must already be redacted by the caller (and, on
/// PostgreSQL, without NUL).
pub(crate) fn insert_event(
    d: Dialect,
    order_id: Option<i64>,
    outbox_id: Option<i64>,
    at: i64,
    e: &crate::Exchange,
) -> Stmt {
    let mut q = Stmt::new(
        d,
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id, actor) VALUES (",
    );
    let values: [Arg; 17] = [
        order_id.into(),
        outbox_id.into(),
        at.into(),
        e.kind.clone().into(),
        e.direction.clone().into(),
        e.event.clone().into(),
        e.outcome.clone().into(),
        e.method.clone().into(),
        e.path.clone().into(),
        e.status.into(),
        e.latency_ms.into(),
        Arg::doc(e.headers.clone()),
        Arg::doc(e.body.clone()),
        Arg::doc(e.response.clone()),
        e.detail.clone().into(),
        e.request_id.clone().into(),
        e.actor.as_ref().map(crate::Actor::label).into(),
    ];
    q.bind_list(values);
    q.push(")");
    q
}

/// "Never" in `orders.deadline_check_at`: nothing to record until the order is written again.
const NO_DEADLINE_CHECK: i64 = i64::MAX;

/// One statement for a page of deadline checks (both backends name a VALUES list's columns
/// `column1`, `column2`, …). The `updated_at` condition leaves an order written since it was
/// read due, as that write made it; an unchanged check is not rewritten (on PostgreSQL that
/// would copy the whole row).
pub(crate) fn deadline_checks(d: Dialect, checks: &[crate::DeadlineCheck]) -> Stmt {
    let mut q = Stmt::new(d, "UPDATE orders SET deadline_check_at = v.column3 FROM (VALUES ");
    for (i, c) in checks.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        q.bind(c.order_id).push(", ").bind(c.read_updated_at).push(", ");
        q.bind(c.next_at.unwrap_or(NO_DEADLINE_CHECK)).push(")");
    }
    q.push(") AS v WHERE orders.id = v.column1 AND orders.updated_at = v.column2 AND orders.deadline_check_at <> v.column3");
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_each_dialect() {
        for (d, want) in [
            (Dialect::Sqlite, "UPDATE outbox SET next_attempt_at = ?1 WHERE id = (SELECT MIN(p.id) FROM outbox p WHERE p.order_id = ?2 AND p.destination = ?3"),
            (Dialect::Postgres, "UPDATE outbox SET next_attempt_at = $1 WHERE id = (SELECT MIN(p.id) FROM outbox p WHERE p.order_id = $2 AND p.destination = $3"),
        ] {
            let st = promote_queue_head(d, 7, &crate::Destination::kuper(), 100);
            assert!(st.sql.starts_with(want), "{}", st.sql);
            assert_eq!(st.args[..3], [Arg::Int(Some(100)), Arg::Int(Some(7)), Arg::Text(Some("kuper".into()))]);
            assert_eq!(st.sql.matches(if d == Dialect::Sqlite { '?' } else { '$' }).count(), st.args.len());
        }
    }

    #[test]
    fn a_page_of_deadline_checks_is_one_statement() {
        let checks = [
            crate::DeadlineCheck { order_id: 1, read_updated_at: 10, next_at: Some(20) },
            crate::DeadlineCheck { order_id: 2, read_updated_at: 11, next_at: None },
        ];
        let st = deadline_checks(Dialect::Sqlite, &checks);
        assert!(st.sql.contains("(VALUES (?1, ?2, ?3), (?4, ?5, ?6)) AS v"), "{}", st.sql);
        assert_eq!(st.args[5], Arg::Int(Some(NO_DEADLINE_CHECK)));
    }
}
