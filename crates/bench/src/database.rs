//! The database a run of the benchmark or the soak gives the gateway: a SQLite file in the
//! run's temporary directory, or a fresh PostgreSQL database `<prefix>_<hex>` on
//! `KUPER_BRIDGE_TEST_PG` (default [`database::DEFAULT_PG`]), dropped at the end.

use anyhow::{Context, Result};
use sqlx::Connection;
use std::path::Path;

/// The PostgreSQL server used when `KUPER_BRIDGE_TEST_PG` is not set (as the tests do).
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The PostgreSQL server URL (an existing database to connect to for admin work).
pub fn pg_server() -> String {
    std::env::var("KUPER_BRIDGE_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.into())
}

/// `postgres://u@h:p/postgres` + `kb_x` → `postgres://u@h:p/kb_x` (a query string is kept).
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

pub struct Database {
    pub backend: Backend,
    /// What the gateway's `[database] url` gets.
    pub url: String,
    /// PostgreSQL: (server URL for admin work, database name) to drop at the end.
    pub pg: Option<(String, String)>,
}

impl Database {
    /// `sqlite://DIR/kuper-bridge.db`, or a new PostgreSQL database `<prefix>_<12 hex>`.
    pub async fn create(backend: Backend, dir: &Path, prefix: &str) -> Result<Database> {
        match backend {
            Backend::Sqlite => {
                Ok(Database { backend, url: format!("sqlite://{}", dir.join("kuper-bridge.db").display()), pg: None })
            }
            Backend::Postgres => {
                let server = pg_server();
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .with_context(|| format!("PostgreSQL at {server} is unreachable (set KUPER_BRIDGE_TEST_PG)"))?;
                let name = format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                let _ = admin.close().await;
                Ok(Database { backend, url: with_database(&server, &name), pg: Some((server, name)) })
            }
        }
    }

    /// The PostgreSQL database's name, if any.
    pub fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, n)| n.as_str())
    }

    /// Drops the PostgreSQL database (its connections are closed by force). No-op for SQLite.
    pub async fn drop_database(&self) -> Result<()> {
        if let Some((server, name)) = &self.pg {
            let mut admin = sqlx::PgConnection::connect(server).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
            let _ = admin.close().await;
        }
        Ok(())
    }
}
