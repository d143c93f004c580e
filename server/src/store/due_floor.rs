//! The due floor: a time below which no delivery is pending, so that the readers of the
//! pending deliveries by due time (the reconciler's sweeps and refills) walk the due
//! index from there instead of from its start.
//!
//! `deliveries_due` (migration 8) indexes every delivery, finished or not: a finished
//! delivery keeps its last due time, so that recording its attempt changes no indexed
//! column and is a HOT update on PostgreSQL. The floor, `sequences.due_floor`, skips the
//! finished ones. Only the reconciler raises it (`raise_due_floor`), from a walk of the
//! index that starts at the old floor and stops at the first pending delivery:
//!
//! - It never passes a pending delivery, held by a worker or not: the walk reads every
//!   status, whatever the lock.
//! - It never passes `cutoff`, which the caller takes from its clock before the walk,
//!   at least `requeue_after` back. A delivery that the walk could not see (its write
//!   committed later) was written with a due time from its writer's clock at the write,
//!   and a write that commits within `requeue_after` of reading that clock is therefore
//!   due above the floor. A write that took longer is what the periodic sweep already
//!   counts as lost (`requeue_after` is the time after which a pending delivery that no
//!   worker holds is assumed to have left the queue); its own queue entry or handoff,
//!   made after its commit, still delivers it, and the full sweep after a queue loss
//!   looks `LATE_WRITES` further back. The same holds between replicas whose clocks
//!   differ by less than `requeue_after` (NTP keeps them milliseconds apart).
//! - Raising it is monotonic (`value < new`): two reconcilers during a lease handover
//!   may both raise it, and the greater of two floors that hold also holds.

use sea_orm::{EntityTrait, QueryFilter, QueryOrder, QuerySelect, prelude::*};

use super::{
    Store,
    entities::{delivery, sequence},
};
use crate::{delivery::status, error::Result};

/// How far below the floor a full sweep after a queue loss looks, for writes that took
/// longer than `requeue_after` to commit (a connection waited for, a stalled database).
pub const LATE_WRITES: i64 = 15 * 60 * 1_000_000;

/// The floor's row in `sequences` (migration 8).
const DUE_FLOOR: &str = "due_floor";

impl Store {
    /// The current floor (Unix microseconds): no delivery due before it is pending.
    pub async fn due_floor(&self) -> Result<i64> {
        let row = sequence::Entity::find_by_id(DUE_FLOOR)
            .one(&self.db)
            .await?;
        Ok(row.map_or(0, |r| r.value))
    }

    /// Raises the floor to the earliest pending delivery's due time, or to `cutoff` if
    /// none is pending before it; returns the floor. `cutoff` must be read from the
    /// clock before this call and be at least `requeue_after` in the past (see the
    /// module's documentation).
    pub async fn raise_due_floor(&self, cutoff: i64) -> Result<i64> {
        let floor = self.due_floor().await?;
        if cutoff <= floor {
            return Ok(floor);
        }
        let earliest: Option<Option<i64>> = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::NextAttemptAt)
            .filter(delivery::Column::NextAttemptAt.gte(floor))
            .filter(delivery::Column::NextAttemptAt.lte(cutoff))
            .filter(delivery::Column::Status.is_in(status::PENDING))
            .order_by_asc(delivery::Column::NextAttemptAt)
            .into_tuple()
            .one(&self.db)
            .await?;
        let raised = earliest.flatten().unwrap_or(cutoff);
        if raised <= floor {
            return Ok(floor);
        }
        sequence::Entity::update_many()
            .col_expr(sequence::Column::Value, Expr::value(raised))
            .filter(sequence::Column::Name.eq(DUE_FLOOR))
            .filter(sequence::Column::Value.lt(raised))
            .exec(&self.db)
            .await?;
        Ok(raised)
    }
}
