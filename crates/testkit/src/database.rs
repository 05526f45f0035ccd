//! A test's own database, dropped with the test (as crates.io's `crates_io_test_db`).

use anyhow::{Context, Result};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// `postgres` runs a suite's PostgreSQL pass (CI runs both passes); anything else, or unset,
/// the SQLite pass.
pub const BACKEND_ENV: &str = "KUPER_BRIDGE_TEST_BACKEND";
/// The PostgreSQL server (a URL naming an existing database, used for `CREATE DATABASE` and
/// `DROP DATABASE`); [`DEFAULT_PG`] when unset.
pub const PG_ENV: &str = "KUPER_BRIDGE_TEST_PG";
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of this pass of the suite: PostgreSQL with `KUPER_BRIDGE_TEST_BACKEND=postgres`,
    /// SQLite otherwise.
    pub fn of_this_pass() -> Backend {
        if std::env::var(BACKEND_ENV).is_ok_and(|b| b == "postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn is_postgres(self) -> bool {
        self == Backend::Postgres
    }

    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The name in file names and JSON keys: `sqlite`, `postgres`.
    pub fn slug(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL server URL (`KUPER_BRIDGE_TEST_PG`, else [`DEFAULT_PG`]).
pub fn pg_server() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| DEFAULT_PG.into())
}

/// Whether a PostgreSQL test fails, rather than being skipped (loudly), when the server is
/// unreachable: always in CI (`CI` set and not `false`), when `KUPER_BRIDGE_TEST_PG` names a
/// server, and in the PostgreSQL pass. Only a developer machine without PostgreSQL skips.
pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
        || std::env::var(PG_ENV).is_ok()
        || Backend::of_this_pass().is_postgres()
}

/// `postgres://u@h:p/postgres` + `kb_x` → `postgres://u@h:p/kb_x` (a query string is kept).
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = server.split_once('?').map_or((server, None), |(b, q)| (b, Some(q)));
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[host_start..].find('/').map_or(base.len(), |i| host_start + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{name}{query}", &base[..path_start])
}

/// A database of one test (or one benchmark run): a SQLite file, or a PostgreSQL database
/// `<prefix>_<32 hex>` on [`pg_server`]. Dropped when it goes out of scope, best effort and
/// never panicking (PostgreSQL: `DROP DATABASE … WITH (FORCE)` through the server's
/// maintenance database, on a thread of its own since `Drop` cannot await; SQLite: the
/// directory the kit made for it). [`Self::drop_database`] drops it now and reports a
/// failure; [`Self::keep`] leaves it in place.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    url: String,
    /// PostgreSQL: the server (admin connections) and the database's name.
    pg: Option<(String, String)>,
    /// SQLite in a directory the kit made: removed with the database.
    own_dir: Option<PathBuf>,
    /// Dropped already, or kept: `Drop` does nothing.
    disarmed: AtomicBool,
}

impl TestDatabase {
    /// A fresh database on `backend` (SQLite: `kuper-bridge.db` in a new directory under the
    /// system's temporary directory). Panics if it cannot be made: PostgreSQL tests that may
    /// skip use [`Self::postgres`].
    pub async fn new(backend: Backend) -> TestDatabase {
        Self::create(backend, None, "kb_t")
            .await
            .unwrap_or_else(|e| panic!("a test database on {}: {e:#}", backend.label()))
    }

    /// As [`Self::new`], the SQLite file `kuper-bridge.db` in `dir` (the test's directory; left
    /// there, the directory is the caller's).
    pub async fn in_dir(backend: Backend, dir: &Path) -> TestDatabase {
        Self::create(backend, Some(dir), "kb_t")
            .await
            .unwrap_or_else(|e| panic!("a test database on {}: {e:#}", backend.label()))
    }

    /// A fresh database of this pass's backend ([`Backend::of_this_pass`]), in `dir` for SQLite.
    pub async fn of_this_pass(dir: &Path) -> TestDatabase {
        Self::in_dir(Backend::of_this_pass(), dir).await
    }

    /// A fresh PostgreSQL database, or `None` when the server is unreachable and
    /// [`postgres_required`] is false (the test is then skipped, and says so on stderr). An
    /// unreachable server in CI or in the PostgreSQL pass panics.
    pub async fn postgres() -> Option<TestDatabase> {
        let server = pg_server();
        match sqlx::PgConnection::connect(&server).await {
            Ok(admin) => {
                let _ = admin.close().await;
            }
            Err(e) if !postgres_required() => {
                eprintln!(
                    "SKIPPED: no PostgreSQL at {server} ({e}); CI runs these tests (set {PG_ENV} to use another server)"
                );
                return None;
            }
            Err(e) => {
                panic!("PostgreSQL tests need a server at {server} (set {PG_ENV} to another one; CI starts it): {e}")
            }
        }
        Some(Self::new(Backend::Postgres).await)
    }

    /// The fallible form, for a caller that reports errors (the benchmark): SQLite at
    /// `dir/kuper-bridge.db` (`dir` `None`: a new directory of the kit's own), or a new
    /// PostgreSQL database `<prefix>_<32 hex>`.
    pub async fn create(backend: Backend, dir: Option<&Path>, prefix: &str) -> Result<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let (dir, own_dir) = match dir {
                    Some(dir) => (dir.to_path_buf(), None),
                    None => {
                        let dir = std::env::temp_dir().join(format!("kb-test-{}", uuid::Uuid::new_v4().simple()));
                        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
                        (dir.clone(), Some(dir))
                    }
                };
                let url = format!("sqlite://{}", dir.join("kuper-bridge.db").display());
                Ok(TestDatabase { backend, url, pg: None, own_dir, disarmed: AtomicBool::new(false) })
            }
            Backend::Postgres => {
                let server = pg_server();
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .with_context(|| format!("PostgreSQL at {server} is unreachable (set {PG_ENV})"))?;
                let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
                // The name is ours (a prefix and hex), not input: identifiers cannot be bound.
                let created = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await;
                let _ = admin.close().await;
                created.with_context(|| format!("CREATE DATABASE {name} on {server}"))?;
                Ok(TestDatabase {
                    backend,
                    url: with_database(&server, &name),
                    pg: Some((server, name)),
                    disarmed: AtomicBool::new(false),
                    own_dir: None,
                })
            }
        }
    }

    /// Takes back a database [`Self::keep`] left, by its URL, to drop it (a test that holds
    /// only the URL). `None` for SQLite: the file goes with its directory.
    pub fn reclaim(url: &str) -> Option<TestDatabase> {
        if !url.starts_with("postgres") {
            return None;
        }
        let path = url.split('?').next().unwrap_or(url);
        // Only a database the kit named (`<prefix>_<32 hex>`, letters, digits and `_`): a URL
        // of anything else is never dropped.
        let name = path.rsplit_once('/').map(|(_, n)| n).filter(|n| is_kit_name(n))?;
        let pg = Some((pg_server(), name.to_string()));
        let url = url.to_string();
        Some(TestDatabase { backend: Backend::Postgres, url, pg, own_dir: None, disarmed: AtomicBool::new(false) })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What a store, or the gateway's `[database] url`, gets.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL database's name, if any.
    pub fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, n)| n.as_str())
    }

    /// The SQLite file, if any.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Drops the database now (PostgreSQL: its connections are closed by force; SQLite: the
    /// kit's own directory is removed, a caller's file is left to its directory). Once only:
    /// later calls, and `Drop`, do nothing.
    pub async fn drop_database(&self) -> Result<()> {
        if self.disarmed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((server, name)) = &self.pg {
            drop_pg(server, name).await?;
        }
        Ok(())
    }

    /// Leaves the database in place (a run kept for inspection, or a test that drops it by URL
    /// with [`Self::reclaim`]); returns its URL.
    pub fn keep(&self) -> String {
        self.disarmed.store(true, Ordering::SeqCst);
        self.url.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.disarmed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(dir) = self.own_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let Some((server, name)) = self.pg.take() else { return };
        // Drop cannot await (and may run inside a runtime): a runtime of its own on a thread of
        // its own. Every failure is ignored: a leftover database is only litter.
        let dropper = std::thread::Builder::new().name("drop-test-db".into()).spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(drop_pg(&server, &name));
            }
        });
        if let Ok(handle) = dropper {
            let _ = handle.join();
        }
    }
}

/// A name [`TestDatabase::create`] gives: a prefix of lowercase letters, digits and `_`, then
/// `_` and 32 hex digits.
fn is_kit_name(name: &str) -> bool {
    name.rsplit_once('_').is_some_and(|(prefix, hex)| {
        !prefix.is_empty()
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

async fn drop_pg(server: &str, name: &str) -> Result<()> {
    // Bounded: a test must not hang in `Drop` on a server that stopped answering.
    let connect = tokio::time::timeout(std::time::Duration::from_secs(10), sqlx::PgConnection::connect(server));
    let mut admin = connect
        .await
        .map_err(|_| anyhow::anyhow!("connect to {server}: timed out"))?
        .with_context(|| format!("connect to {server}"))?;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
    let _ = admin.close().await;
    dropped.with_context(|| format!("DROP DATABASE {name} on {server}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_databases_the_kit_named_are_reclaimed() {
        let kit = format!("kb_t_{}", "0123456789abcdef".repeat(2));
        assert!(TestDatabase::reclaim(&format!("postgres://u@h/{kit}?sslmode=disable")).is_some_and(|d| {
            d.disarmed.store(true, Ordering::SeqCst);
            d.pg_name() == Some(kit.as_str())
        }));
        for url in [
            "postgres://u@h/postgres",
            "postgres://u@h/test",
            "postgres://u@h/kb_t_x; DROP TABLE y",
            "sqlite:///tmp/x.db",
        ] {
            assert!(TestDatabase::reclaim(url).is_none(), "{url}");
        }
    }

    #[test]
    fn the_database_replaces_the_servers_and_a_query_string_is_kept() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "kb_x"), "postgres://u@h:5432/kb_x");
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "kb_x"),
            "postgres://u@h:5432/kb_x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "kb_x"), "postgres://u@h:5432/kb_x");
    }

    #[tokio::test]
    async fn a_sqlite_database_of_its_own_goes_with_it() {
        let db = TestDatabase::new(Backend::Sqlite).await;
        let file = db.sqlite_file().unwrap();
        let dir = file.parent().unwrap().to_path_buf();
        std::fs::write(&file, b"x").unwrap();
        drop(db);
        assert!(!dir.exists());
    }

    async fn exists(name: &str) -> bool {
        let mut admin = sqlx::PgConnection::connect(&pg_server()).await.unwrap();
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
        found.is_some()
    }

    /// Dropped in `Drop` even while a connection to it is open, on either runtime flavour.
    #[tokio::test]
    async fn a_postgres_database_is_dropped_with_the_test() {
        let Some(db) = TestDatabase::postgres().await else { return };
        let name = db.pg_name().unwrap().to_string();
        let open = sqlx::PgConnection::connect(db.url()).await.unwrap();
        assert!(exists(&name).await);
        drop(db);
        assert!(!exists(&name).await);
        drop(open);

        let db = TestDatabase::postgres().await.unwrap();
        let name = db.pg_name().unwrap().to_string();
        db.drop_database().await.unwrap();
        assert!(!exists(&name).await);

        let url = TestDatabase::new(Backend::Postgres).await.keep();
        let name = url.rsplit_once('/').unwrap().1.to_string();
        assert!(exists(&name).await, "kept");
        TestDatabase::reclaim(&url).unwrap().drop_database().await.unwrap();
        assert!(!exists(&name).await);
    }
}
