//! Fewer index entries per published event, found by the benchmarks: every index on
//! `events` and `deliveries` is written for each event and delivery, and again on each
//! update of a delivery that changes its status.
//!
//! - `events_tenant_idempotency` only needs the events that carry a key: it becomes
//!   partial, as `events_idempotency_key` (`WHERE idempotency_key IS NOT NULL`; both
//!   databases use it for the `idempotency_key IN (...)` lookup).
//! - `deliveries_endpoint_event` goes: listing an endpoint's deliveries by type walks
//!   `deliveries_endpoint` (endpoint, id) and filters, newest first, as it pages anyway.
//! - PostgreSQL leaves room in each `deliveries` page (fillfactor 70), so that claiming a
//!   delivery (which changes only `locked_until`, in no index) is a HOT update: no new
//!   index entries.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX events_idempotency_key ON events (tenant_id, idempotency_key) \
             WHERE idempotency_key IS NOT NULL",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS events_tenant_idempotency")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_endpoint_event")
            .await?;
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            db.execute_unprepared("ALTER TABLE deliveries SET (fillfactor = 70)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX events_tenant_idempotency ON events (tenant_id, idempotency_key)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS events_idempotency_key")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX deliveries_endpoint_event ON deliveries (endpoint_id, event_type)",
        )
        .await?;
        Ok(())
    }
}
