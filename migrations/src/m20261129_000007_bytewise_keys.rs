//! Ids and other keys compare byte by byte on PostgreSQL (`COLLATE "C"`).
//!
//! Every lookup by id walks a B-tree whose text comparisons follow the column's
//! collation, the database's default unless the column says otherwise. Under a
//! linguistic collation (`en_US.UTF-8`, and on PostgreSQL 15 even `C.UTF-8`) each
//! comparison goes through `strcoll`; comparing bytes instead took 7% off PostgreSQL's
//! CPU per delivery in the batch publish benchmark (docs/BENCHMARKS.md, *Twelfth round*). Keys are
//! ASCII and are only ever matched or paged through, never shown sorted by language, so
//! byte order is all they need.
//!
//! Every key column changes at once: an index is only used by a comparison in its own
//! collation, so an id compared with a reference to it in another collation would stop
//! using the index. SQLite already compares bytes (`BINARY`).

use sea_orm_migration::prelude::*;

use crate::m20261128_000003_endpoints_version::UPDATE_TRIGGER;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The key columns, by table: primary keys, references to them, and looked-up keys.
const KEYS: &[(&str, &[&str])] = &[
    ("tenants", &["id"]),
    ("api_keys", &["id", "tenant_id", "key_hash"]),
    ("sequences", &["name"]),
    ("events", &["id", "tenant_id", "idempotency_key"]),
    ("endpoints", &["id", "tenant_id"]),
    (
        "deliveries",
        &["id", "tenant_id", "event_id", "endpoint_id"],
    ),
    (
        "attempts",
        &["id", "delivery_id", "tenant_id", "endpoint_id"],
    ),
];

/// Gives every key column `collation`. The table's indexes on them are rebuilt; its rows
/// are not rewritten. A trigger whose condition names a column blocks a change of its
/// type, so the one that does goes and comes back.
async fn collate(manager: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    let Some(db) = crate::postgres_only(manager) else {
        return Ok(());
    };
    db.execute_unprepared("DROP TRIGGER IF EXISTS endpoints_version_update ON endpoints")
        .await?;
    for (table, columns) in KEYS {
        let changes: Vec<String> = columns
            .iter()
            .map(|column| format!("ALTER COLUMN {column} TYPE varchar COLLATE {collation}"))
            .collect();
        db.execute_unprepared(&format!("ALTER TABLE {table} {}", changes.join(", ")))
            .await?;
    }
    db.execute_unprepared(UPDATE_TRIGGER).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "\"C\"").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "\"default\"").await
    }
}
