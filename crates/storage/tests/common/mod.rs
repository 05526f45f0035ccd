//! A test's own database on each backend, and the macro that runs one test body on both.
//! Shared by every storage test file.
#![allow(dead_code)]

/// A test's own database on each backend.
pub mod db {
    use kuper_bridge_storage::{Store, StoreOptions};
    use sqlx::Connection;
    use std::sync::Arc;

    pub async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = kuper_bridge_storage::open(&url, &StoreOptions::default()).await.unwrap();
        s.migrate().await.unwrap();
        (s, dir)
    }

    fn server() -> String {
        std::env::var("KUPER_BRIDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// The server URL with its database replaced by `name` (a query string is kept).
    fn database_url(server: &str, name: &str) -> String {
        let (base, query) = server.split_once('?').map_or((server, None), |(b, q)| (b, Some(q)));
        let host_start = base.find("://").map_or(0, |i| i + 3);
        let path_start = base[host_start..].find('/').map_or(base.len(), |i| host_start + i);
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}/{name}{query}", &base[..path_start])
    }

    /// A fresh PostgreSQL database, dropped by [`PgDb::drop_db`] (or, after a failed test,
    /// best effort when dropped).
    pub struct PgDb {
        server: String,
        name: String,
        pub url: String,
        dropped: bool,
    }

    impl PgDb {
        /// `None` (the test is skipped, loudly) only on a developer machine without PostgreSQL;
        /// in CI (`CI` set), or when a PostgreSQL run is asked for, an absent server fails.
        pub async fn create() -> Option<Self> {
            let server = server();
            let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
                || std::env::var("KUPER_BRIDGE_TEST_PG").is_ok()
                || std::env::var("KUPER_BRIDGE_TEST_BACKEND").is_ok_and(|b| b == "postgres");
            let mut admin = match sqlx::PgConnection::connect(&server).await {
                Ok(c) => c,
                Err(e) if !required => {
                    eprintln!("SKIPPED: no PostgreSQL at {server} ({e}); CI runs these tests (set KUPER_BRIDGE_TEST_PG to use another server)");
                    return None;
                }
                Err(e) => panic!(
                    "PostgreSQL tests need a server at {server} (set KUPER_BRIDGE_TEST_PG to another one; \
                     CI starts it): {e}"
                ),
            };
            let name = format!("kb_t_{}", uuid::Uuid::new_v4().simple());
            // The name is ours (hex), not input: identifiers cannot be bound.
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server}: {e}"));
            let _ = admin.close().await;
            let url = database_url(&server, &name);
            Some(Self { server, name, url, dropped: false })
        }

        /// A store on this database (one pool: one replica), migrated.
        pub async fn store(&self) -> Arc<dyn Store> {
            let s = kuper_bridge_storage::open(&self.url, &StoreOptions::default()).await.unwrap();
            s.migrate().await.unwrap();
            s
        }

        pub async fn drop_db(mut self) {
            self.dropped = true;
            drop_database(&self.server, &self.name).await;
        }
    }

    impl Drop for PgDb {
        fn drop(&mut self) {
            if self.dropped {
                return;
            }
            // Drop cannot await: a runtime of its own on a thread of its own.
            let (server, name) = (self.server.clone(), self.name.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(drop_database(&server, &name));
                }
            })
            .join();
        }
    }

    async fn drop_database(server: &str, name: &str) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(server).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
            let _ = admin.close().await;
        }
    }
}

/// Each named `async fn(&dyn Store)` becomes a test on SQLite and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (s, _dir) = crate::db::sqlite().await;
                    crate::$name(&*s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = crate::db::PgDb::create().await else { return };
                    let s = db.store().await;
                    crate::$name(&*s).await;
                    drop(s);
                    db.drop_db().await;
                }
            )*
        }
    };
}
