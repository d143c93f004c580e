//! A due index that a finished delivery does not leave, so that recording an attempt
//! is a HOT update on PostgreSQL.
//!
//! `deliveries_pending` (migration 4) named `status` in its predicate and
//! `next_attempt_at` in its key. An update that changes a column an index names, in its
//! key or its predicate, cannot be HOT: it writes a new entry into every index of the
//! table (five here), and recording a delivery's first attempt changed `status`. Now:
//! - `deliveries_due` is `(next_attempt_at)` over every delivery, and a finished
//!   delivery keeps its last due time, so a success changes no indexed column;
//! - readers that want the pending deliveries by due time walk it from a low-water mark,
//!   `sequences.due_floor`, below which no delivery is pending (`store::due_floor`);
//! - on PostgreSQL `deliveries` leaves half of each page free (fillfactor 50): a HOT
//!   update puts the new version on the row's own page, and a row is updated once or
//!   twice (a claim, a record) soon after it was written. At 70% only about half of the
//!   updates found room; at 50 all of them did in the benchmarks, and 40 was no faster.
//!
//! Measured (docs/BENCHMARKS.md, *Seventeenth round*): PostgreSQL's CPU per delivery −24%
//! in the batch publish benchmark, −21% in the fan-out one.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Everything pending is due at or after the earliest pending due time now.
        db.execute_unprepared(
            "INSERT INTO sequences (name, value) SELECT 'due_floor', \
             COALESCE(MIN(next_attempt_at), 0) FROM deliveries \
             WHERE status IN ('DELIVERING', 'FAILING')",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX deliveries_due ON deliveries (next_attempt_at)")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_pending")
            .await?;
        if let Some(db) = crate::postgres_only(manager) {
            db.execute_unprepared("ALTER TABLE deliveries SET (fillfactor = 50)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if let Some(db) = crate::postgres_only(manager) {
            db.execute_unprepared("ALTER TABLE deliveries RESET (fillfactor)")
                .await?;
        }
        // Finished deliveries kept their last due time; the partial index ignores it.
        db.execute_unprepared(
            "CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) \
             WHERE status IN ('DELIVERING', 'FAILING')",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_due")
            .await?;
        db.execute_unprepared("DELETE FROM sequences WHERE name = 'due_floor'")
            .await?;
        Ok(())
    }
}
