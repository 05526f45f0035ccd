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
//!   the others' work is unaffected. Drop cannot run SQL, so it marks the savepoint for
//!   rollback and the next holder of the lock does it before anything else.
//! - When SQLite rolls the whole transaction back by itself (SQLITE_FULL, an I/O error), or a
//!   COMMIT fails, every writer of that transaction gets the error: nothing of it is stored.
//! - The commit runs in a task of its own, so a writer whose request is cancelled after its
//!   work still gets that work committed (and the write lock is never left held).

use crate::{Result, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, Sqlite, SqliteConnection, SqlitePool};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};
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
    /// The number of the open (or next) transaction; writers join it by number.
    current: u64,
    /// Every transaction numbered below this has ended (committed or failed).
    ended_below: u64,
    /// Why recent transactions failed.
    failed: BTreeMap<u64, String>,
    /// A writer left without finishing: its savepoint must be rolled back first.
    dirty: bool,
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

    /// Ends the open transaction as failed: its writers get `why`.
    fn fail_current(&mut self, why: String) {
        self.failed.insert(self.current, why);
        while self.failed.len() > FAILED_KEPT {
            self.failed.pop_first();
        }
        self.open = false;
        self.current += 1;
        self.ended_below = self.current;
    }

    /// Rolls back a savepoint a writer left behind. If that is impossible the transaction is
    /// gone (SQLite rolled it back by itself): it fails for all its writers.
    async fn clean(&mut self, pool: &SqlitePool) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if !self.open {
            return;
        }
        let rolled_back = match self.conn(pool).await {
            Ok(c) => c.execute("ROLLBACK TO w; RELEASE w").await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = rolled_back {
            self.abandon(format!("transaction lost after a failed write: {e}")).await;
        }
    }

    /// The transaction cannot go on: roll back what is left, fail it for its writers and
    /// replace the connection if it is broken.
    async fn abandon(&mut self, why: String) {
        if let Some(c) = self.conn.as_deref_mut() {
            if c.execute("ROLLBACK").await.is_err() {
                // "no transaction is active" is fine; anything else we cannot tell apart from
                // a broken connection, so a fresh one is taken next time.
            }
        }
        if let Some(mut c) = self.conn.take() {
            // A fresh connection costs a millisecond; a connection in an unknown state could
            // cost the database.
            c.close_on_drop();
        }
        self.fail_current(why);
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
pub(crate) struct GroupTx<'a> {
    guard: Option<MutexGuard<'a, Group>>,
    writer: &'a GroupWriter,
}

impl GroupWriter {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool, group: Arc::default() }
    }

    pub(crate) async fn begin(&self) -> Result<GroupTx<'_>> {
        let mut g = self.group.lock().await;
        g.clean(&self.pool).await;
        if !g.open {
            // IMMEDIATE: take the write lock now, waiting up to busy_timeout for another
            // process; a later lock upgrade could fail with SQLITE_BUSY mid-transaction.
            let begun = g.conn(&self.pool).await?.execute("BEGIN IMMEDIATE").await;
            if let Err(e) = begun {
                if matches!(e, sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed) {
                    if let Some(mut c) = g.conn.take() {
                        c.close_on_drop();
                    }
                }
                return Err(e.into());
            }
            g.open = true;
        }
        if let Err(e) = g.conn(&self.pool).await?.execute("SAVEPOINT w").await {
            g.abandon(format!("could not start a savepoint: {e}")).await;
            return Err(e.into());
        }
        Ok(GroupTx { guard: Some(g), writer: self })
    }
}

impl GroupWriter {
    /// (successful COMMITs, writes released into transactions) so far.
    #[cfg(test)]
    async fn counts(&self) -> (u64, u64) {
        let g = self.group.lock().await;
        (g.commits, g.writes)
    }
}

impl GroupTx<'_> {
    /// Keeps this write in the shared transaction and returns once a COMMIT containing it has
    /// returned (durable), or with the error that lost it.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let Some(mut g) = self.guard.take() else {
            return Err(StoreError::Unavailable("write already finished".into()));
        };
        let released = g.conn(&self.writer.pool).await?.execute("RELEASE w").await;
        if let Err(e) = released {
            g.dirty = true;
            g.clean(&self.writer.pool).await;
            return Err(e.into());
        }
        let mine = g.current;
        g.writes += 1;
        drop(g);
        // In a task of its own: the work above is in the transaction now, and must be
        // committed even if this writer's caller goes away.
        let group = self.writer.group.clone();
        let pool = self.writer.pool.clone();
        let committing = tokio::spawn(async move {
            let mut g = group.lock().await;
            if g.ended_below <= mine {
                g.clean(&pool).await;
            }
            if g.ended_below <= mine {
                // Nobody has committed our transaction yet: we do, for everyone in it.
                let committed = match g.conn(&pool).await {
                    Ok(c) => c.execute("COMMIT").await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match committed {
                    Ok(()) => {
                        g.commits += 1;
                        g.open = false;
                        g.current += 1;
                        g.ended_below = g.current;
                    }
                    Err(e) => {
                        warn!(error = %e, "group commit failed; its writes are lost and answered 503");
                        g.abandon(format!("commit failed: {e}")).await;
                    }
                }
            }
            match g.failed.get(&mine) {
                Some(why) => Err(StoreError::Unavailable(why.clone())),
                None => Ok(()),
            }
        });
        committing.await.map_err(|e| StoreError::Unavailable(format!("commit task failed: {e}")))?
    }
}

impl Drop for GroupTx<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.dirty = true;
        }
    }
}

impl Deref for GroupTx<'_> {
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

impl DerefMut for GroupTx<'_> {
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
}
