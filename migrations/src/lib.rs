//! Herald's schema, as sea-orm migrations that run unchanged on SQLite and PostgreSQL.
//!
//! Times are stored as microseconds since the Unix epoch (BIGINT): they sort and compare
//! the same way on both databases, which text timestamps in SQLite do not.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_init;
mod m20261127_000002_leaner_indexes;
mod m20261128_000003_endpoints_version;
mod m20261128_000004_pending_index;
mod m20261128_000005_attempt_context_version;
mod m20261128_000006_statement_level_references;
mod m20261129_000007_bytewise_keys;
mod m20261129_000008_due_index;
mod m20261129_000009_latest_attempt;

/// The connection, on PostgreSQL only: what a PostgreSQL-only migration (triggers,
/// functions) runs on; `None` on SQLite, where it does nothing.
fn postgres_only<'a, 'c>(
    manager: &'a SchemaManager<'c>,
) -> Option<&'a SchemaManagerConnection<'c>> {
    (manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres)
        .then(|| manager.get_connection())
}

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_init::Migration),
            Box::new(m20261127_000002_leaner_indexes::Migration),
            Box::new(m20261128_000003_endpoints_version::Migration),
            Box::new(m20261128_000004_pending_index::Migration),
            Box::new(m20261128_000005_attempt_context_version::Migration),
            Box::new(m20261128_000006_statement_level_references::Migration),
            Box::new(m20261129_000007_bytewise_keys::Migration),
            Box::new(m20261129_000008_due_index::Migration),
            Box::new(m20261129_000009_latest_attempt::Migration),
        ]
    }
}
