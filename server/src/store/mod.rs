//! Storage through sea-orm: SQLite (embedded default) or PostgreSQL, chosen by URL.
//!
//! Each submodule is a set of tenant-scoped query helpers for one table: callers pass
//! the tenant they are authorised for, and a row of another tenant is simply not found.

pub mod attempt_copy;
pub mod deliveries;
pub mod due_floor;
pub mod endpoints;
pub mod entities;
pub mod events;
mod events_pg;
pub mod keys;
pub mod page;
pub mod pg;
pub mod subscribers;
pub mod tenants;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, TransactionTrait};

use self::attempt_copy::AttemptCopy;
use crate::error::Result;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub db: DatabaseConnection,
    /// The delivery worker's copy of the endpoints it sends to (PostgreSQL; see
    /// [`attempt_copy`]), shared by the clones of this handle.
    attempt_copy: Arc<Mutex<AttemptCopy>>,
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`).
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store::new(connect_postgres(url).await?));
        }
        let mut options = ConnectOptions::new(url.to_string());
        options
            .sqlx_logging(false)
            .test_before_acquire(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            // WAL lets tails read while the writer commits; NORMAL sync is durable in WAL
            // mode across process crashes (only an OS crash can lose the last commits).
            options.max_connections(8).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
            });
        }
        let db = Database::connect(options).await?;
        Ok(Store::new(db))
    }

    fn new(db: DatabaseConnection) -> Store {
        Store {
            db,
            attempt_copy: Arc::default(),
        }
    }

    /// The worker's copy of the endpoints; held only for a lookup, never across an await.
    fn attempt_copy(&self) -> std::sync::MutexGuard<'_, AttemptCopy> {
        self.attempt_copy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies pending migrations.
    ///
    /// On SQLite in one transaction, so on one connection: a pooled connection keeps the
    /// schema it last read, and SQLite checks a `CREATE INDEX` against that copy before
    /// looking for changes, so an index that one migration dropped on one connection and
    /// a later one creates again on another was still there (migrations 4 and 8,
    /// `deliveries_due`). And an upgrade that fails leaves the database as it was.
    /// PostgreSQL runs each migration in a transaction of its own (sea-orm-migration).
    pub async fn migrate(&self) -> Result<()> {
        if pg::is_postgres(&self.db) {
            Migrator::up(&self.db, None).await?;
            return Ok(());
        }
        let txn = self.db.begin().await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Cheap liveness probe used by health checks.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }
}

/// The PostgreSQL pool, built with sqlx itself for what sea-orm's options do not reach:
/// each connection gives back its buffers' excess when it returns to the pool. A
/// connection keeps its read and write buffers at the largest message it ever carried,
/// and the publish writer's statement for a batch of 2,000 events is megabytes: over a
/// long run every pooled connection carries one, and the 1,000,000-delivery backlog
/// benchmark peaked at 277 MB of RSS, above its 256 MB bound.
///
/// Each session also runs with `enable_seqscan = off` (see `store::pg`, *Plans*): a
/// sequential scan is then chosen only where no index can serve, so that a plan made
/// while a table was still small does not keep scanning it whole once it has grown.
async fn connect_postgres(url: &str) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::{
        ConnectOptions as _, Connection as _,
        postgres::{PgConnectOptions, PgPoolOptions},
    };
    let connect = url
        .parse::<PgConnectOptions>()
        .map_err(conn_err)?
        .disable_statement_logging()
        .options([("enable_seqscan", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .min_connections(2)
        // sqlx pings every connection it hands out by default: one more round trip per
        // transaction (it was a third of a publish batch's time). A connection that broke
        // while idle fails its statement instead, and is replaced.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .after_release(|conn, _| {
            Box::pin(async move {
                conn.shrink_buffers();
                Ok(true)
            })
        })
        .connect_with(connect)
        .await
        .map_err(conn_err)?;
    Ok(sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
        pool,
    ))
}

/// As sea-orm reports a failed connection.
fn conn_err(e: sea_orm::sqlx::Error) -> sea_orm::DbErr {
    sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))
}
