//! A version number for the set of endpoints that events are matched against.
//!
//! On PostgreSQL the publish writer keeps the tenants' enabled endpoints in memory and
//! stores a batch in one statement that also checks this version (see
//! `server/src/store/events_pg.rs`): any change that could alter which endpoints an event
//! goes to (an endpoint created, deleted, enabled or disabled, its filters or environment
//! changed) bumps `sequences.endpoints`, by trigger so that no writer can forget it, and a
//! publish made with an older copy stores nothing and is redone with a fresh one. Every
//! replica sees the bump through the database itself; nothing else needs to tell them.
//! SQLite (one process, where publishes keep their transaction) needs neither.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The trigger on updates; its condition names columns, so a migration that changes one
/// of their types (migration 7) drops it and creates it again.
pub(crate) const UPDATE_TRIGGER: &str = "CREATE TRIGGER endpoints_version_update
     AFTER UPDATE ON endpoints FOR EACH ROW
     WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
           OR OLD.filters IS DISTINCT FROM NEW.filters
           OR OLD.environment IS DISTINCT FROM NEW.environment
           OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
     EXECUTE FUNCTION herald_endpoints_changed()";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        db.execute_unprepared(
            "INSERT INTO sequences (name, value) VALUES ('endpoints', 0) ON CONFLICT DO NOTHING",
        )
        .await?;
        db.execute_unprepared(
            "CREATE OR REPLACE FUNCTION herald_endpoints_changed() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN
                 UPDATE sequences SET value = value + 1 WHERE name = 'endpoints';
                 RETURN NULL;
             END $$",
        )
        .await?;
        db.execute_unprepared(
            "CREATE TRIGGER endpoints_version_insert_delete
             AFTER INSERT OR DELETE ON endpoints
             FOR EACH ROW EXECUTE FUNCTION herald_endpoints_changed()",
        )
        .await?;
        db.execute_unprepared(UPDATE_TRIGGER).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        for sql in [
            "DROP TRIGGER IF EXISTS endpoints_version_update ON endpoints",
            "DROP TRIGGER IF EXISTS endpoints_version_insert_delete ON endpoints",
            "DROP FUNCTION IF EXISTS herald_endpoints_changed()",
            "DELETE FROM sequences WHERE name = 'endpoints'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
