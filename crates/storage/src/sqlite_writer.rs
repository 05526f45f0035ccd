//! The SQLite writer: one thread owns the database's only write connection (rusqlite), and a
//! caller hands it a whole unit of work in one crossing (issue #12, item 2). Before, every
//! statement of a unit crossed to sqlx's SQLite worker thread and back; under load those
//! hand-offs were about 40 % of the gateway's CPU, SQLite's own work under 3 %.
//!
//! Group commit, as before: the thread takes whatever work is queued, runs each unit in a
//! SAVEPOINT of one transaction and COMMITs them together, one fsync for many writers
//! (`synchronous = FULL`). Nobody is answered before the COMMIT that holds their work has
//! returned, so "answered = durable" holds.
//!
//! - A unit that fails rolls back to its own savepoint; the others in the batch are unaffected.
//! - When SQLite rolls the whole transaction back by itself (SQLITE_FULL, an I/O error), or
//!   the COMMIT fails, every unit of that transaction gets the error: nothing of it is stored.
//! - A caller that goes away (a client hangs up) cannot interrupt its unit: the unit runs and
//!   commits, unanswered, exactly as if the process had stopped after the COMMIT. So no write
//!   is ever half-done and the write lock is never held by nobody.
//! - A unit that panics is rolled back and answered as an error; the thread goes on.

use crate::{Result, StoreError};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tracing::warn;

/// Units committed together at most: a bound on how long the first of them waits.
const MAX_BATCH: usize = 256;

/// How a unit's caller is answered once its transaction has committed (`Ok`) or failed.
type Settle = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

trait Job: Send {
    /// Runs the unit inside the open transaction: whether its savepoint is kept, and how to
    /// answer its caller when the transaction's fate is known.
    fn run(self: Box<Self>, conn: &mut Connection) -> (bool, Settle);
    /// The unit was not run.
    fn refuse(self: Box<Self>, why: String);
}

struct Write<F, R> {
    work: F,
    reply: tokio::sync::oneshot::Sender<Result<R>>,
}

impl<F, R> Job for Write<F, R>
where
    F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> (bool, Settle) {
        let Write { work, reply } = *self;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("a SQLite write panicked; it was rolled back".into())));
        let kept = outcome.is_ok();
        let settle: Settle = Box::new(move |committed| {
            let answer = match (outcome, committed) {
                (Err(e), _) => Err(e),
                (Ok(value), Ok(())) => Ok(value),
                (Ok(_), Err(why)) => Err(StoreError::Unavailable(why)),
            };
            // The caller may have gone away: its work stands, unanswered.
            let _ = reply.send(answer);
        });
        (kept, settle)
    }

    fn refuse(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable(why)));
    }
}

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The handle callers use; the thread ends when the last handle is dropped.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Read by the tests that check grouping.
    #[cfg_attr(not(test), allow(dead_code))]
    counts: Arc<Counts>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

impl SqliteWriter {
    /// Starts the thread that owns `conn`, which must be set up (pragmas) already.
    pub(crate) fn start(conn: Connection) -> Result<Self> {
        // Unbounded: the work queued is bounded by the requests in flight, which the HTTP
        // layer limits; a bounded queue would block an async caller's thread.
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queue, &thread_counts))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs, counts })
    }

    /// Runs `work` in its own savepoint of the writer's transaction and answers after the
    /// COMMIT that holds it (or with the error that lost it).
    pub(crate) async fn write<R, F>(&self, work: F) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.send(Box::new(Write { work, reply })).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// COMMITs that succeeded, and the units they carried.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.counts.commits.load(Ordering::Relaxed), self.counts.writes.load(Ordering::Relaxed))
    }
}

fn run(mut conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, counts: &Counts) {
    while let Ok(first) = queue.recv() {
        // IMMEDIATE: another process's writer (a CLI command) is waited for (busy_timeout)
        // here, not discovered halfway through a unit.
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Everyone queued now would wait out the same lock, one busy_timeout after another:
            // they are answered at once, and the next unit to arrive tries again.
            let why = format!("cannot start a write transaction: {e}");
            first.refuse(why.clone());
            while let Ok(queued) = queue.try_recv() {
                queued.refuse(why.clone());
            }
            continue;
        }
        let mut members: Vec<Settle> = Vec::new();
        let mut lost = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if let Err(e) = conn.execute_batch("SAVEPOINT w") {
                job.refuse(format!("write transaction lost: {e}"));
                lost = Some(format!("write transaction lost: {e}"));
                break;
            }
            let (kept, settle) = job.run(&mut conn);
            members.push(settle);
            let end = conn.execute_batch(if kept { "RELEASE w" } else { "ROLLBACK TO w; RELEASE w" });
            if let Err(e) = end {
                lost = Some(format!("write transaction lost: {e}"));
                break;
            }
            if conn.is_autocommit() {
                lost = Some("SQLite rolled the write transaction back".into());
                break;
            }
            if members.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        let fate = match lost {
            Some(why) => {
                // "no transaction is active" is fine: SQLite may have ended it already.
                let _ = conn.execute_batch("ROLLBACK");
                warn!(reason = %why, writes = members.len(), "SQLite group transaction lost; its writes are answered 503");
                Err(why)
            }
            None => match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    counts.commits.fetch_add(1, Ordering::Relaxed);
                    counts.writes.fetch_add(members.len() as u64, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    warn!(error = %e, writes = members.len(), "SQLite COMMIT failed; its writes are answered 503");
                    Err(format!("commit failed: {e}"))
                }
            },
        };
        for settle in members {
            settle(fate.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (SqliteWriter, std::path::PathBuf) {
        let path = dir.join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL UNIQUE)").unwrap();
        (SqliteWriter::start(conn).unwrap(), path)
    }

    fn rows(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut st = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }

    fn insert(v: i64) -> impl FnOnce(&mut Connection) -> Result<()> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_commits_and_a_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(dir.path());
        let w = Arc::new(w);
        let mut tasks = Vec::new();
        for v in 0..200 {
            let w = w.clone();
            // 77 twice: the second insert breaks UNIQUE and must fail alone.
            let v = if v == 100 { 77 } else { v };
            tasks.push(tokio::spawn(async move { w.write(insert(v)).await }));
        }
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        let stored = rows(&path);
        assert_eq!(stored.len(), 199);
        let (commits, writes) = w.counts();
        assert_eq!(writes, 200, "the failed write's transaction committed too");
        assert!(commits < writes, "{commits} commits for {writes} writes: no grouping");
    }

    #[tokio::test]
    async fn a_panicking_write_is_rolled_back_and_the_next_one_is_unaffected() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(dir.path());
        let panicked = w
            .write(|c: &mut Connection| -> Result<()> {
                c.execute("INSERT INTO t (v) VALUES (1)", [])?;
                panic!("a bug in a unit of work");
            })
            .await;
        assert!(matches!(panicked, Err(StoreError::Unavailable(_))), "{panicked:?}");
        w.write(insert(2)).await.unwrap();
        assert_eq!(rows(&path), vec![2]);
    }

    #[tokio::test]
    async fn a_lost_transaction_fails_every_write_in_it_and_the_writer_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(dir.path());
        // A unit that ends the transaction behind the writer's back stands for SQLite rolling
        // it back by itself (SQLITE_FULL, an I/O error): nothing of it may be reported stored.
        let lost = w
            .write(|c: &mut Connection| -> Result<()> {
                c.execute("INSERT INTO t (v) VALUES (1)", [])?;
                c.execute_batch("ROLLBACK")?;
                Ok(())
            })
            .await;
        assert!(matches!(lost, Err(StoreError::Unavailable(_))), "{lost:?}");
        w.write(insert(3)).await.unwrap();
        assert_eq!(rows(&path), vec![3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_never_leaves_the_write_lock_held() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(dir.path());
        let w = Arc::new(w);
        let mut kept = Vec::new();
        for v in 0..50 {
            let w2 = w.clone();
            let task = tokio::spawn(async move { w2.write(insert(v)).await });
            if v % 2 == 0 {
                task.abort();
            } else {
                kept.push(task);
            }
        }
        // The callers that were not cancelled are answered (a spawned task may not even have
        // handed its unit over yet when the writes below are made).
        for task in kept {
            task.await.unwrap().unwrap();
        }
        // Another connection can take the write lock once the writer is idle: nobody holds it.
        w.write(insert(1000)).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (2000); COMMIT").unwrap();
        // A cancelled caller's unit, once handed over, runs all the same (as if the process
        // stopped after its COMMIT); every caller that was not cancelled got its value stored.
        let stored = rows(&path);
        assert!((1..50).step_by(2).all(|v| stored.contains(&v)), "{stored:?}");
        assert!(stored.contains(&1000) && stored.contains(&2000), "{stored:?}");
    }
}
