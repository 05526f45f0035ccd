//! The database a run of the benchmark or the soak gives the gateway: a SQLite file in the
//! run's temporary directory, or a fresh PostgreSQL database `<prefix>_<hex>` on
//! `KUPER_BRIDGE_TEST_PG` (default [`DEFAULT_PG`]), dropped at the end. The same throwaway
//! databases as the test suites', from the test kit (issue #15 item 3); a run kept with `--keep`
//! calls [`Database::keep`].

pub use kuper_bridge_testkit::{pg_server, with_database, Backend, TestDatabase as Database, DEFAULT_PG};
