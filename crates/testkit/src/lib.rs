//! The test kit (dev-only, never in the gateway's binary): what the test suites of several
//! crates share.
//!
//! - [`TestDatabase`]: a test's own database on either backend, a SQLite file in a directory
//!   of its own or a fresh PostgreSQL database with a unique name, dropped with the test.
//! - [`delivery`]: the simulator's notification records judged against what each order must
//!   have received: every expected notification accepted once, in order, nothing refused
//!   (Kuper's at-least-once repeats apart).
//! - [`flows`]: the order kinds the end-to-end checks drive (a scheme each, plus a restaurant),
//!   with their actions and the notifications Kuper must accept for them.
//!
//! It speaks URLs, not stores: the storage crate's own tests use it, and a dependency on
//! storage here would link a second copy of that crate into them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a broken fixture should stop the test

mod database;
pub mod delivery;
pub mod flows;

pub use database::{
    pg_server, postgres_required, with_database, Backend, TestDatabase, BACKEND_ENV, DEFAULT_PG, PG_ENV,
};
