//! Storage ceilings: what raw SQLite or PostgreSQL sustains from this process, on a synthetic
//! schema, next to the gateway's database. The schema is written here, not taken from
//! `crates/storage/migrations`: it copies the two tables an `order.created` writes (`orders`,
//! `events`) with the indexes they had in the migrations named below, and nothing else, so a
//! ceiling is the cost of the write itself; a later migration does not change it unless this
//! file is changed too. The printed report says so ("synthetic schema").

use crate::session::progress;
use anyhow::{Context, Result};
use kuper_bridge_bench::body;
use kuper_bridge_bench::database::{Backend, Database};
use kuper_bridge_bench::stats::{fmt_ms, Summary};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Orders per transaction of the group-commit storage reference (SQLite).
pub(crate) const GROUP: usize = 32;
/// Connections of the gateway's PostgreSQL pool (storage/src/postgres.rs), and of the
/// concurrent PostgreSQL storage reference.
pub(crate) const PG_POOL: usize = 10;

pub(crate) struct StorageCeiling {
    /// What was measured, for the table.
    pub(crate) name: String,
    /// Orders written (rows, or gateway-shaped order inserts).
    pub(crate) orders: usize,
    pub(crate) commits: usize,
    /// Orders per second.
    pub(crate) rps: f64,
    /// Per transaction.
    pub(crate) latency: Summary,
    pub(crate) row_bytes: usize,
}

impl StorageCeiling {
    pub(crate) fn to_json(&self) -> Value {
        json!({"name": self.name, "orders": self.orders, "commits": self.commits, "rps": self.rps, "latency": self.latency.to_json(), "row_bytes": self.row_bytes})
    }
}

/// What one transaction of a storage reference writes, on the synthetic schema.
#[derive(Clone, Copy)]
pub(crate) enum TxShape {
    /// One row holding the body twice (raw in the audit log, parsed in the order document):
    /// the bare cost of a durable commit of that many bytes.
    OneRow,
    /// What the gateway does for a new `order.created` (storage/src/sqlite.rs, postgres.rs):
    /// look the order up, insert it (SQLite: then write its number and document), insert the
    /// audit event — `per_tx` orders per COMMIT. SQLite with `per_tx` > 1 wraps each order in
    /// a SAVEPOINT, as the gateway's group commit does (storage/src/group_commit.rs).
    Gateway { per_tx: usize },
}

/// One storage reference: a shape, on this many connections at once (each its own loop of
/// transactions; PostgreSQL only — SQLite has one writer).
#[derive(Clone, Copy)]
pub(crate) struct RefSpec {
    pub(crate) shape: TxShape,
    pub(crate) connections: usize,
}

impl RefSpec {
    pub(crate) fn name(&self, backend: Backend) -> String {
        let what = match self.shape {
            TxShape::OneRow => "1 row/commit".to_string(),
            TxShape::Gateway { per_tx: 1 } => "the gateway's order.created transaction, 1 order/commit".to_string(),
            TxShape::Gateway { per_tx } => {
                format!("the gateway's order.created transaction, {per_tx} orders/commit, a SAVEPOINT each")
            }
        };
        match backend {
            Backend::Sqlite => what,
            Backend::Postgres => format!(
                "{what}, {} connection{}",
                self.connections,
                if self.connections == 1 { "" } else { "s at once" }
            ),
        }
    }
}

/// The references measured on each backend.
pub(crate) fn ref_specs(backend: Backend) -> Vec<RefSpec> {
    match backend {
        Backend::Sqlite => vec![
            RefSpec { shape: TxShape::OneRow, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: GROUP }, connections: 1 },
        ],
        Backend::Postgres => vec![
            RefSpec { shape: TxShape::OneRow, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: 1 },
            RefSpec { shape: TxShape::Gateway { per_tx: 1 }, connections: PG_POOL },
        ],
    }
}

/// How the report names what the ceilings were measured on.
pub(crate) const SYNTHETIC: &str = "synthetic schema";

/// The synthetic SQLite schema of the ceilings: `rows` for the one-row commit, and copies of
/// the gateway's `orders` and `events` as storage migrations/sqlite 0001 and 0006 made them
/// (later migrations' columns and indexes are not here).
pub(crate) const SYNTHETIC_SCHEMA_SQLITE: &[&str] = &[
    "CREATE TABLE rows (id INTEGER PRIMARY KEY, original_order_id TEXT UNIQUE, at INTEGER NOT NULL, data TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, original_order_id TEXT UNIQUE, order_uuid TEXT UNIQUE, number TEXT NOT NULL UNIQUE,
        store_id TEXT NOT NULL, scheme TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
    "CREATE INDEX orders_state ON orders (state, id)",
    "CREATE INDEX orders_store ON orders (store_id, id)",
    "CREATE INDEX orders_open_for_deadlines ON orders (id) WHERE state NOT IN ('delivered', 'canceled')",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders (id), outbox_id INTEGER, at INTEGER NOT NULL,
        kind TEXT NOT NULL, direction TEXT NOT NULL, event TEXT, outcome TEXT, method TEXT, path TEXT, status INTEGER, latency_ms INTEGER,
        headers TEXT, body TEXT, response TEXT, detail TEXT, request_id TEXT)",
    "CREATE INDEX events_order ON events (order_id, id)",
    "CREATE INDEX events_outbox ON events (outbox_id)",
    "CREATE INDEX events_at ON events (at)",
];

/// The same synthetic tables in PostgreSQL types (after storage migrations/postgres 0001, 0005).
pub(crate) const SYNTHETIC_SCHEMA_PG: &[&str] = &[
    "DROP TABLE IF EXISTS rows, events, orders",
    "CREATE TABLE rows (id BIGSERIAL PRIMARY KEY, original_order_id TEXT UNIQUE, at BIGINT NOT NULL, data TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, original_order_id TEXT UNIQUE, order_uuid TEXT UNIQUE, number TEXT NOT NULL UNIQUE,
        store_id TEXT NOT NULL, scheme TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE INDEX orders_state ON orders (state, id)",
    "CREATE INDEX orders_store ON orders (store_id, id)",
    "CREATE INDEX orders_open_for_deadlines ON orders (id) WHERE state NOT IN ('delivered', 'canceled')",
    "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, order_id BIGINT REFERENCES orders (id), outbox_id BIGINT, at BIGINT NOT NULL,
        kind TEXT NOT NULL, direction TEXT NOT NULL, event TEXT, outcome TEXT, method TEXT, path TEXT, status BIGINT, latency_ms BIGINT,
        headers TEXT, body TEXT, response TEXT, detail TEXT, request_id TEXT)",
    "CREATE INDEX events_order ON events (order_id, id)",
    "CREATE INDEX events_outbox ON events (outbox_id)",
    "CREATE INDEX events_at ON events (at)",
];

pub(crate) const REF_HEADERS: &str =
    r#"{"authorization":"[redacted]","content-type":"application/json","host":"127.0.0.1"}"#;
pub(crate) const REF_RESPONSE: &str =
    r#"{"status":"created","number":"KB-1","expectedAssemblyTime":"2026-03-14T10:32:11+03:00"}"#;

pub(crate) async fn gateway_shaped_insert(conn: &mut sqlx::SqliteConnection, i: u64, payload: &str) -> Result<()> {
    let oid = body::order_id(i);
    let uuid = format!("bench:{i}");
    let _found = sqlx::query(
        "SELECT id, data, created_at, updated_at FROM orders WHERE (?1 IS NOT NULL AND original_order_id = ?1) OR (?2 IS NOT NULL AND order_uuid = ?2) ORDER BY id LIMIT 1",
    )
    .bind(&oid)
    .bind(&uuid)
    .fetch_optional(&mut *conn)
    .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
         VALUES (?, ?, ?, '1184', 'a', 'created', '{}', ?, ?) RETURNING id",
    )
    .bind(&oid)
    .bind(&uuid)
    .bind(format!("pending-{i}"))
    .bind(i as i64)
    .bind(i as i64)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE orders SET number = ?, data = ? WHERE id = ?")
        .bind(format!("KB-{id}"))
        .bind(payload)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id)
         VALUES (?, NULL, ?, 'webhook', 'in', 'order.created', 'created', 'POST', '/kuper-webhook', 200, 0, ?, ?, ?, NULL, ?)",
    )
    .bind(id)
    .bind(i as i64)
    .bind(REF_HEADERS)
    .bind(payload)
    .bind(REF_RESPONSE)
    .bind(uuid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the gateway's PostgreSQL store does for a new `order.created`: the lookup `FOR
/// UPDATE`, the id from the sequence, one insert with the number and document, the audit event.
pub(crate) async fn gateway_shaped_insert_pg(conn: &mut sqlx::PgConnection, i: u64, payload: &str) -> Result<()> {
    let oid = body::order_id(i);
    let uuid = format!("bench:{i}");
    let _found = sqlx::query(
        "SELECT id, data, created_at, updated_at FROM orders WHERE ($1::text IS NOT NULL AND original_order_id = $1) OR ($2::text IS NOT NULL AND order_uuid = $2) ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .bind(&oid)
    .bind(&uuid)
    .fetch_optional(&mut *conn)
    .await?;
    let id: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))").fetch_one(&mut *conn).await?;
    let _inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO orders (id, original_order_id, order_uuid, number, store_id, scheme, state, data, created_at, updated_at)
         VALUES ($1, $2, $3, $4, '1184', 'a', 'created', $5, $6, $6) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&oid)
    .bind(&uuid)
    .bind(format!("KB-{id}"))
    .bind(payload)
    .bind(i as i64)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO events (order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id)
         VALUES ($1, NULL, $2, 'webhook', 'in', 'order.created', 'created', 'POST', '/kuper-webhook', 200, 0, $3, $4, $5, NULL, $6)",
    )
    .bind(id)
    .bind(i as i64)
    .bind(REF_HEADERS)
    .bind(payload)
    .bind(REF_RESPONSE)
    .bind(uuid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Raw SQLite in this process, on a file next to the gateway's database: WAL,
/// synchronous=FULL, one connection, `BEGIN IMMEDIATE` … `COMMIT` per transaction.
pub(crate) async fn storage_ceiling_sqlite(
    dir: &Path,
    payload: &str,
    spec: RefSpec,
    orders: usize,
    cap: Duration,
) -> Result<StorageCeiling> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection};
    let path = dir.join("ceiling.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    let mut conn = options.connect().await.with_context(|| format!("cannot open {}", path.display()))?;
    for ddl in SYNTHETIC_SCHEMA_SQLITE {
        sqlx::query(ddl).execute(&mut conn).await?;
    }
    let per_tx = match spec.shape {
        TxShape::OneRow => 1,
        TxShape::Gateway { per_tx } => per_tx.max(1),
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut written = 0usize;
    while written < orders && started.elapsed() < cap {
        let t = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for _ in 0..per_tx {
            let i = written as u64;
            match spec.shape {
                TxShape::OneRow => {
                    sqlx::query("INSERT INTO rows (original_order_id, at, data, body) VALUES (?, ?, ?, ?)")
                        .bind(body::order_id(i))
                        .bind(i as i64)
                        .bind(payload)
                        .bind(payload)
                        .execute(&mut *tx)
                        .await?;
                }
                TxShape::Gateway { per_tx: 1 } => gateway_shaped_insert(&mut tx, i, payload).await?,
                TxShape::Gateway { .. } => {
                    sqlx::query("SAVEPOINT w").execute(&mut *tx).await?;
                    gateway_shaped_insert(&mut tx, i, payload).await?;
                    sqlx::query("RELEASE w").execute(&mut *tx).await?;
                }
            }
            written += 1;
        }
        tx.commit().await?;
        samples.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    Ok(StorageCeiling {
        name: spec.name(Backend::Sqlite),
        orders: written,
        commits: samples.len(),
        rps: written as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples),
        row_bytes: payload.len() * 2,
    })
}

/// Raw PostgreSQL from this process, in a database of its own on the same server
/// (`KUPER_BRIDGE_TEST_PG`), with the server's settings: `spec.connections` connections, each
/// running `BEGIN` … `COMMIT` transactions one after the other.
pub(crate) async fn storage_ceiling_pg(
    url: &str,
    payload: &str,
    spec: RefSpec,
    orders: usize,
    cap: Duration,
) -> Result<StorageCeiling> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    for ddl in SYNTHETIC_SCHEMA_PG {
        sqlx::query(ddl).execute(&mut admin).await?;
    }
    let _ = admin.close().await;
    let next = Arc::new(AtomicUsize::new(0));
    let payload = Arc::new(payload.to_string());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (next, payload) = (next.clone(), payload.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < cap {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let t = Instant::now();
                let mut tx = conn.begin().await?;
                match spec.shape {
                    TxShape::OneRow => {
                        sqlx::query("INSERT INTO rows (original_order_id, at, data, body) VALUES ($1, $2, $3, $4)")
                            .bind(body::order_id(i as u64))
                            .bind(i as i64)
                            .bind(payload.as_str())
                            .bind(payload.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                    TxShape::Gateway { .. } => gateway_shaped_insert_pg(&mut tx, i as u64, &payload).await?,
                }
                tx.commit().await?;
                samples.push(t.elapsed());
            }
            let _ = conn.close().await;
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.context("a storage reference task panicked")??);
    }
    let elapsed = started.elapsed();
    let written = samples.len();
    Ok(StorageCeiling {
        name: spec.name(Backend::Postgres),
        orders: written,
        commits: written,
        rps: written as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(samples),
        row_bytes: payload.len() * 2,
    })
}

/// Every reference of `backend` in turn, while the gateway is idle: SQLite on a file in `dir`,
/// PostgreSQL in a database of its own, dropped at the end.
pub(crate) async fn storage_ceilings(
    backend: Backend,
    dir: &Path,
    sample_body: &str,
    orders: usize,
    cap: Duration,
) -> Result<Vec<StorageCeiling>> {
    let ref_db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Database::create(Backend::Postgres, Some(dir), "kb_bench_ref").await?),
    };
    let mut storage = Vec::new();
    let mut failed = None;
    for spec in ref_specs(backend) {
        progress(format!(
            "storage reference, {} {} ({SYNTHETIC}): {orders} orders",
            backend.label(),
            spec.name(backend)
        ));
        let c = match &ref_db {
            None => storage_ceiling_sqlite(dir, sample_body, spec, orders, cap).await,
            Some(db) => storage_ceiling_pg(db.url(), sample_body, spec, orders, cap).await,
        };
        match c {
            Ok(c) => {
                progress(format!(
                    "  {:.0} orders/s, {} commits, p50 {}, p99 {} per commit",
                    c.rps,
                    c.commits,
                    fmt_ms(c.latency.p50),
                    fmt_ms(c.latency.p99)
                ));
                storage.push(c);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(db) = &ref_db {
        if let Err(e) = db.drop_database().await {
            progress(format!("could not drop the reference database: {e:#}"));
        }
    }
    match failed {
        Some(e) => Err(e.context("storage reference")),
        None => Ok(storage),
    }
}
