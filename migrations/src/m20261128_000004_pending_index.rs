//! `deliveries_pending` replaces `deliveries_due`: the pending deliveries only, by due time.
//!
//! `deliveries_due` was `(status, next_attempt_at)` over every delivery: each finished delivery kept an
//! entry for good (and had one written when it finished), and `status IN (pending) ORDER
//! BY next_attempt_at` could not walk it in order across two statuses, so the reconciler's
//! reads (the overdue sweep, the refill of a spilled schedule) sorted every pending
//! delivery each time: with a backlog of a million, a seq scan and an external sort per
//! refill. As `(next_attempt_at) WHERE status IN ('DELIVERING', 'FAILING')` the index is as
//! large as the backlog, finishing a delivery writes nothing to it, and those reads walk
//! it in order and stop at their limit. Queries name the statuses literally
//! (`store::deliveries::PENDING_SQL`) so that both databases match the predicate.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) \
             WHERE status IN ('DELIVERING', 'FAILING')",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_due")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_pending")
            .await?;
        Ok(())
    }
}
