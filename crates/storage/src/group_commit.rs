//! Group commit for SQLite: many writers, one transaction, one fsync.
//!
//! SQLite has one writer at a time, and in durable mode (`synchronous = FULL`) every COMMIT
//! waits for an fsync: one webhook per fsync caps ingest at the disk's fsync rate. Here every
//! write (a [`GroupTx`]) runs inside a SAVEPOINT of a shared transaction on the single writer
//! connection. A writer finishes its work, releases the lock, then asks for the commit of the
//! transaction it joined. The lock is fair, so writers that queued meanwhile do their work
//! first, and the first of them to reach the commit phase commits for all: N writers, one
//! fsync. Nobody answers before the COMMIT that contains its work has returned, so "answered =
//! durable" holds exactly as before.
//!
//! - A writer that fails (or whose future is dropped) rolls back to its own savepoint only;
//!   the others' work is unaffected. An open transaction with nobody's work in it is ended, so
//!   the database's write lock is never held idle.
//! - When SQLite rolls the whole transaction back by itself (SQLITE_FULL, an I/O error), or a
//!   COMMIT fails, every writer of that transaction gets the error: nothing of it is stored.
//! - Callers can be cancelled at any await (a client hangs up, a timeout fires). So every step
//!   that changes the connection's transaction state (BEGIN, SAVEPOINT, RELEASE, COMMIT, the
//!   rollback of an abandoned write) runs in a task of its own that the caller cannot cancel.
//!   If even such a step is interrupted (runtime shutdown), the state is marked unknown and the
//!   next holder of the lock ends the transaction (its writers get an error) on a fresh
//!   connection.

use crate::{Result, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, Sqlite, SqliteConnection, SqlitePool};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::warn;

/// How many failed transactions are remembered for writers that have not looked yet.
const FAILED_KEPT: usize = 1024;

#[derive(Default)]
struct Group {
    /// COMMITs that succeeded, and writes they carried (for tests and the benchmark's notes).
    commits: u64,
    writes: u64,
    conn: Option<PoolConnection<Sqlite>>,
    /// A transaction is open on `conn`.
    open: bool,
    /// Writes released into the open transaction, waiting for its COMMIT.
    members: usize,
    /// The number of the open (or next) transaction; writers join it by number.
    current: u64,
    /// Every transaction numbered below this has ended (committed or failed).
    ended_below: u64,
    /// Why recent transactions failed.
    failed: BTreeMap<u64, String>,
    /// Failures of transactions below this may have been forgotten (`FAILED_KEPT`): a writer
    /// of one of them that looks only now is told "unknown", never "committed".
    forgotten_below: u64,
    /// A writer went away without finishing: its savepoint must be rolled back first.
    dirty: bool,
    /// A statement changing the transaction state was interrupted: the state is unknown.
    suspect: bool,
}

impl Group {
    async fn conn(&mut self, pool: &SqlitePool) -> Result<&mut SqliteConnection> {
        if self.conn.is_none() {
            self.conn = Some(pool.acquire().await?);
        }
        match self.conn.as_deref_mut() {
            Some(c) => Ok(c),
            None => Err(StoreError::Unavailable("no SQLite writer connection".into())),
        }
    }

    /// Runs a statement that changes the transaction state, marking the state unknown while
    /// it runs (see the module doc).
    async fn exec(&mut self, pool: &SqlitePool, sql: &str) -> std::result::Result<(), String> {
        self.suspect = true;
        let done = match self.conn(pool).await {
            Ok(c) => c.execute(sql).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.suspect = false;
        done
    }

    /// Ends the open transaction as failed: its writers get `why`.
    fn fail_current(&mut self, why: String) {
        self.failed.insert(self.current, why);
        while self.failed.len() > FAILED_KEPT {
            if let Some((forgotten, _)) = self.failed.pop_first() {
                self.forgotten_below = self.forgotten_below.max(forgotten + 1);
            }
        }
        self.open = false;
        self.members = 0;
        self.current += 1;
        self.ended_below = self.current;
    }

    /// The transaction cannot go on: roll back what is left, fail it for its writers (if it
    /// had any) and take a fresh connection next time.
    async fn abandon(&mut self, why: String) {
        self.suspect = false;
        self.dirty = false;
        if let Some(c) = self.conn.as_deref_mut() {
            // "no transaction is active" is fine; whatever else happened, this connection is
            // replaced below.
            let _ = c.execute("ROLLBACK").await;
        }
        if let Some(mut c) = self.conn.take() {
            c.close_on_drop();
        }
        if self.open || self.members > 0 {
            warn!(reason = %why, "SQLite group transaction abandoned; its writes are answered 503");
            self.fail_current(why);
        }
        self.open = false;
    }

    /// Puts the connection back in a known state before anything else is done with it.
    async fn recover(&mut self, pool: &SqlitePool) {
        if self.suspect {
            self.abandon("a transaction step was interrupted".into()).await;
            return;
        }
        if self.dirty {
            if self.open {
                if let Err(e) = self.exec(pool, "ROLLBACK TO w; RELEASE w").await {
                    self.abandon(format!("transaction lost after a failed write: {e}")).await;
                    return;
                }
            }
            self.dirty = false;
        }
    }

    /// Ends an open transaction that holds nobody's work (its only writer went away), so the
    /// write lock is not held while nothing happens.
    async fn end_if_empty(&mut self, pool: &SqlitePool) {
        if self.open && self.members == 0 && !self.dirty && !self.suspect {
            match self.exec(pool, "ROLLBACK").await {
                Ok(()) => self.open = false,
                Err(e) => self.abandon(format!("could not end an empty transaction: {e}")).await,
            }
        }
    }

    /// What a writer of transaction `mine` is told once that transaction has ended.
    fn outcome(&self, mine: u64) -> Result<()> {
        match self.failed.get(&mine) {
            Some(why) => Err(StoreError::Unavailable(why.clone())),
            None if mine < self.forgotten_below => {
                Err(StoreError::Unavailable("the outcome of this write is unknown; retry".into()))
            }
            None => Ok(()),
        }
    }
}

/// The single SQLite writer, shared by every write of the store.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    pool: SqlitePool,
    group: Arc<Mutex<Group>>,
}

/// One write: a savepoint in the shared transaction, holding the writer lock until
/// [`GroupTx::commit`] (or drop, which rolls it back).
pub(crate) struct GroupTx {
    guard: Option<OwnedMutexGuard<Group>>,
    writer: GroupWriter,
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("SQLite writer task failed: {e}"))
}

impl GroupWriter {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool, group: Arc::default() }
    }

    pub(crate) async fn begin(&self) -> Result<GroupTx> {
        let writer = self.clone();
        // In its own task: if our caller goes away meanwhile, the task still finishes, and the
        // GroupTx it returns is dropped, which rolls its savepoint back.
        tokio::spawn(async move {
            let mut g = writer.group.clone().lock_owned().await;
            g.recover(&writer.pool).await;
            if !g.open {
                // IMMEDIATE: take the write lock now, waiting up to busy_timeout for another
                // process; a later lock upgrade could fail with SQLITE_BUSY mid-transaction.
                g.conn(&writer.pool).await?;
                if let Err(e) = g.exec(&writer.pool, "BEGIN IMMEDIATE").await {
                    // Busy (another process holds the lock) leaves no transaction; anything
                    // else may have, so the connection is replaced.
                    if !e.contains("database is locked") && !e.contains("busy") {
                        g.abandon(format!("BEGIN failed: {e}")).await;
                    }
                    return Err(StoreError::Unavailable(e));
                }
                g.open = true;
            }
            if let Err(e) = g.exec(&writer.pool, "SAVEPOINT w").await {
                g.abandon(format!("could not start a savepoint: {e}")).await;
                return Err(StoreError::Unavailable(e));
            }
            Ok(GroupTx { guard: Some(g), writer })
        })
        .await
        .map_err(join_error)?
    }

    /// (successful COMMITs, writes released into transactions) so far.
    #[cfg(test)]
    async fn counts(&self) -> (u64, u64) {
        let g = self.group.lock().await;
        (g.commits, g.writes)
    }
}

impl GroupTx {
    /// Keeps this write in the shared transaction and returns once a COMMIT containing it has
    /// returned (durable), or with the error that lost it.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let Some(mut g) = self.guard.take() else {
            return Err(StoreError::Unavailable("write already finished".into()));
        };
        let writer = self.writer.clone();
        // In its own task: once released, the work must be committed (or reported lost) even
        // if this writer's caller goes away.
        tokio::spawn(async move {
            if let Err(e) = g.exec(&writer.pool, "RELEASE w").await {
                g.dirty = true;
                g.recover(&writer.pool).await;
                g.end_if_empty(&writer.pool).await;
                return Err(StoreError::Unavailable(e));
            }
            let mine = g.current;
            g.writes += 1;
            g.members += 1;
            drop(g);
            let mut g = writer.group.clone().lock_owned().await;
            if g.ended_below <= mine {
                g.recover(&writer.pool).await;
            }
            if g.ended_below <= mine {
                // Nobody has committed our transaction yet: we do, for everyone in it.
                match g.exec(&writer.pool, "COMMIT").await {
                    Ok(()) => {
                        g.commits += 1;
                        g.open = false;
                        g.members = 0;
                        g.current += 1;
                        g.ended_below = g.current;
                    }
                    Err(e) => g.abandon(format!("commit failed: {e}")).await,
                }
            }
            g.outcome(mine)
        })
        .await
        .map_err(join_error)?
    }
}

impl Drop for GroupTx {
    fn drop(&mut self) {
        let Some(mut g) = self.guard.take() else { return };
        g.dirty = true;
        // Roll the abandoned savepoint back now, and end the transaction if nobody else's
        // work is in it (otherwise the next holder of the lock does the rollback).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.writer.pool.clone();
            runtime.spawn(async move {
                g.recover(&pool).await;
                g.end_if_empty(&pool).await;
            });
        }
    }
}

impl Deref for GroupTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // `begin` put a connection there and only `abandon` takes it, which no holder of a
        // live GroupTx reaches before the GroupTx ends.
        match self.guard.as_ref().and_then(|g| g.conn.as_deref()) {
            Some(c) => c,
            None => unreachable!("a live GroupTx always holds the writer connection"),
        }
    }
}

impl DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self.guard.as_mut().and_then(|g| g.conn.as_deref_mut()) {
            Some(c) => c,
            None => unreachable!("a live GroupTx always holds the writer connection"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    use sqlx::Connection;

    async fn writer(dir: &std::path::Path) -> (GroupWriter, SqlitePool) {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("g.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY)").execute(&pool).await.unwrap();
        let reader = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        (GroupWriter::new(pool), reader)
    }

    async fn rows(reader: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM t ORDER BY n").fetch_all(reader).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_commits_and_a_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (w, reader) = writer(dir.path()).await;
        let mut tasks = Vec::new();
        for n in 0..64i64 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = w.begin().await?;
                sqlx::query("INSERT INTO t (n) VALUES (?)").bind(n).execute(&mut *tx).await?;
                if n % 10 == 3 {
                    // A write that fails after doing something: only its own savepoint goes.
                    sqlx::query("INSERT INTO t (n) VALUES (?)").bind(n).execute(&mut *tx).await?;
                }
                tx.commit().await
            }));
        }
        let mut ok = Vec::new();
        for (n, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap().is_ok() {
                ok.push(n as i64);
            }
        }
        let expected: Vec<i64> = (0..64).filter(|n| n % 10 != 3).collect();
        assert_eq!(ok, expected, "only the failing writes failed");
        assert_eq!(rows(&reader).await, expected, "every answered write is stored, no failed one");
        let (commits, writes) = w.counts().await;
        assert_eq!(writes, expected.len() as u64);
        assert!(commits < writes, "writers shared commits: {commits} commits for {writes} writes");
    }

    #[tokio::test]
    async fn an_abandoned_write_is_rolled_back_and_the_next_one_is_unaffected() {
        let dir = tempfile::tempdir().unwrap();
        let (w, reader) = writer(dir.path()).await;
        {
            let mut tx = w.begin().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (1)").execute(&mut *tx).await.unwrap();
            // dropped without commit: a cancelled request
        }
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (2)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&reader).await, vec![2]);
    }

    #[tokio::test]
    async fn a_lost_transaction_fails_every_write_in_it_and_the_writer_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (w, reader) = writer(dir.path()).await;
        // Writer 1 does its work; before anyone commits, the transaction disappears (as when
        // SQLite rolls back by itself after SQLITE_FULL).
        let mut first = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (1)").execute(&mut *first).await.unwrap();
        sqlx::query("RELEASE w").execute(&mut *first).await.unwrap();
        sqlx::query("ROLLBACK").execute(&mut *first).await.unwrap();
        sqlx::query("SAVEPOINT w").execute(&mut *first).await.unwrap(); // a fresh autocommit savepoint
        sqlx::query("ROLLBACK TO w; RELEASE w").execute(&mut *first).await.unwrap();
        let err = first.commit().await;
        assert!(err.is_err(), "its COMMIT cannot succeed: {err:?}");
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (2)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&reader).await, vec![2], "nothing of the lost transaction, the next one stored");
    }

    /// Another process must be able to write once our writers are gone: an abandoned write
    /// (a cancelled request) must not leave the database's write lock held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_or_cancelled_writes_never_leave_the_write_lock_held() {
        let dir = tempfile::tempdir().unwrap();
        let (w, reader) = writer(dir.path()).await;
        {
            let mut tx = w.begin().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (1)").execute(&mut *tx).await.unwrap();
        }
        // A commit whose caller is cancelled as soon as it starts.
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (2)").execute(&mut *tx).await.unwrap();
        let cancelled = tokio::spawn(tx.commit());
        tokio::task::yield_now().await;
        cancelled.abort();
        // A begin whose caller goes away.
        let gone = tokio::spawn({
            let w = w.clone();
            async move { w.begin().await.map(|_| ()) }
        });
        gone.abort();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let other_process = SqliteConnectOptions::new()
            .filename(dir.path().join("g.db"))
            .busy_timeout(std::time::Duration::from_millis(1000));
        let mut other = sqlx::SqliteConnection::connect_with(&other_process).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.expect("the write lock is free");
        sqlx::query("INSERT INTO t (n) VALUES (3)").execute(&mut other).await.unwrap();
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        drop(other);
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (4)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let stored = rows(&reader).await;
        assert!(!stored.contains(&1), "the abandoned write was rolled back: {stored:?}");
        assert!(stored.contains(&3) && stored.contains(&4), "{stored:?}");
    }
}
