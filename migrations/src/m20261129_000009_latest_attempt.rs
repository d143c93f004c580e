//! A delivery's latest attempt kept on its own row (PostgreSQL).
//!
//! Recording an attempt updated the delivery's row and inserted an `attempts` row: a
//! heap tuple, two index entries and the reference trigger's checks. Most deliveries
//! are attempted once. Now the record writes the attempt into these columns of the
//! delivery's row, in the update it made anyway (a HOT update since migration 8), and
//! the attempt that was there before moves to `attempts` in the same statement. So
//! `attempts` holds every attempt but the latest of each delivery whose
//! `last_attempt_id` is set, and `last_attempt_at`, `last_response_code` and `attempts`
//! (its number) complete it. The attempt log (`Store::list_attempts`) reads both.
//!
//! SQLite leaves these columns empty and logs every attempt in `attempts`, as before:
//! it has no HOT updates, and the insert costs it little.
//!
//! Rows written before this migration have no latest attempt here (`last_attempt_id` is
//! null): their attempts are all in `attempts`. Going down moves the latest attempts
//! back there first.
//!
//! Measured (docs/BENCHMARKS.md, *Eighteenth round*): PostgreSQL's CPU per delivery −19%
//! in the batch publish benchmark.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The columns, with their types; `last_attempt_at`, `last_response_code` and
/// `attempts` already exist. The id compares bytes on PostgreSQL, as every key
/// (migration 7).
const COLUMNS: [(&str, &str); 6] = [
    ("last_attempt_id", "VARCHAR"),
    ("last_duration_micros", "BIGINT"),
    ("last_succeeded", "BOOLEAN"),
    ("last_error_kind", "TEXT"),
    ("last_error_message", "TEXT"),
    ("last_response_body", "TEXT"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Nullable without a default: PostgreSQL changes only the catalog.
        let postgres = crate::postgres_only(manager).is_some();
        for (column, kind) in COLUMNS {
            let collation = if postgres && kind == "VARCHAR" {
                " COLLATE \"C\""
            } else {
                ""
            };
            db.execute_unprepared(&format!(
                "ALTER TABLE deliveries ADD COLUMN {column} {kind}{collation} NULL"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt,
                 started_at, duration_micros, status_code, succeeded, error_kind,
                 error_message, response_body)
             SELECT last_attempt_id, id, tenant_id, endpoint_id, attempts,
                    COALESCE(last_attempt_at, 0), COALESCE(last_duration_micros, 0),
                    last_response_code, COALESCE(last_succeeded, false), last_error_kind,
                    last_error_message, COALESCE(last_response_body, '')
             FROM deliveries WHERE last_attempt_id IS NOT NULL",
        )
        .await?;
        for (column, _) in COLUMNS {
            db.execute_unprepared(&format!("ALTER TABLE deliveries DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
