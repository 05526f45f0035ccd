//! A store on a test's own database (kuper-bridge-testkit's `TestDatabase`), and the macro
//! that runs one test body on both backends. Shared by every storage test file.
#![allow(dead_code)]

/// A test's own database on each backend.
pub mod db {
    use kuper_bridge_storage::{Store, StoreOptions};
    use kuper_bridge_testkit::{Backend, TestDatabase as Db};
    use std::sync::Arc;

    /// A store on a database (one pool: one replica), migrated.
    pub(crate) trait Open {
        async fn store(&self) -> Arc<dyn Store>;
    }

    impl Open for Db {
        async fn store(&self) -> Arc<dyn Store> {
            let s = kuper_bridge_storage::open(self.url(), &StoreOptions::default()).await.unwrap();
            s.migrate().await.unwrap();
            s
        }
    }

    /// A SQLite database of the test's own and a store on it; the file goes with the database.
    pub async fn sqlite() -> (Arc<dyn Store>, Db) {
        let db = Db::new(Backend::Sqlite).await;
        (db.store().await, db)
    }

    /// A fresh PostgreSQL database, or `None` (the test is skipped, loudly) only on a developer
    /// machine without PostgreSQL: in CI (`CI` set), or when a PostgreSQL run is asked for
    /// (`KUPER_BRIDGE_TEST_PG` or `KUPER_BRIDGE_TEST_BACKEND=postgres`), an absent server fails.
    pub async fn postgres() -> Option<Db> {
        Db::postgres().await
    }
}

/// Each named `async fn(&dyn Store)` becomes a test on SQLite and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (s, _db) = crate::db::sqlite().await;
                    crate::$name(&*s).await;
                }
            )*
        }
        mod postgres {
            use crate::db::Open;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = crate::db::postgres().await else { return };
                    let s = db.store().await;
                    crate::$name(&*s).await;
                    drop(s);
                    db.drop_database().await.expect("drop the test database");
                }
            )*
        }
    };
}
