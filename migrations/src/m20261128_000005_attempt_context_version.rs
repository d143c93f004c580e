//! A version number for what an attempt reads of endpoints and tenants.
//!
//! On PostgreSQL the delivery worker keeps the endpoints it sends to, with their tenants,
//! in memory (see `server/src/store/attempt_copy.rs`), and every claim reads this
//! version in the same statement: a copy made at an older version is not used. Any
//! change to an endpoint row (URL, secrets, headers, format, retry schedule, failure
//! state...) or to a tenant row (its signing keys) bumps `sequences.attempts`, by
//! trigger so that no writer can forget it and every replica sees it through the
//! database. A new row needs no bump: it is in no copy yet, and a copy that lacks an
//! endpoint loads it. This is wider than `sequences.endpoints` (migration 3), which
//! only tracks what matching reads, so that the publish writer's copy is not dropped
//! each time an endpoint starts or stops failing.
//! SQLite (one process, which reads the endpoints with each claim) needs neither.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        for sql in [
            "INSERT INTO sequences (name, value) VALUES ('attempts', 0) ON CONFLICT DO NOTHING",
            "CREATE OR REPLACE FUNCTION herald_attempt_context_changed() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN
                 UPDATE sequences SET value = value + 1 WHERE name = 'attempts';
                 RETURN NULL;
             END $$",
            // Row triggers with a WHEN: an update that matched no row, or changed
            // nothing (a second `StartFailing` of a run), bumps nothing.
            "CREATE TRIGGER endpoints_attempts_version_update
             AFTER UPDATE ON endpoints FOR EACH ROW
             WHEN (OLD.* IS DISTINCT FROM NEW.*)
             EXECUTE FUNCTION herald_attempt_context_changed()",
            "CREATE TRIGGER endpoints_attempts_version_delete
             AFTER DELETE ON endpoints FOR EACH ROW
             EXECUTE FUNCTION herald_attempt_context_changed()",
            "CREATE TRIGGER tenants_attempts_version_update
             AFTER UPDATE ON tenants FOR EACH ROW
             WHEN (OLD.* IS DISTINCT FROM NEW.*)
             EXECUTE FUNCTION herald_attempt_context_changed()",
            "CREATE TRIGGER tenants_attempts_version_delete
             AFTER DELETE ON tenants FOR EACH ROW
             EXECUTE FUNCTION herald_attempt_context_changed()",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        for sql in [
            "DROP TRIGGER IF EXISTS tenants_attempts_version_delete ON tenants",
            "DROP TRIGGER IF EXISTS tenants_attempts_version_update ON tenants",
            "DROP TRIGGER IF EXISTS endpoints_attempts_version_delete ON endpoints",
            "DROP TRIGGER IF EXISTS endpoints_attempts_version_update ON endpoints",
            "DROP FUNCTION IF EXISTS herald_attempt_context_changed()",
            "DELETE FROM sequences WHERE name = 'attempts'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
