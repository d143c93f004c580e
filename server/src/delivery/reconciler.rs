//! The database is the source of truth; the queue is a cache of what to do next. The
//! reconciler re-enqueues pending deliveries that are overdue by more than
//! `requeue_after` (the queue must have lost them), or every due one at once when the
//! queue reports it lost its data (Redis restarted empty, or the in-process queue of a
//! process that just started).
//!
//! It also brings back retries that a bounded queue left out of its schedule (a spill,
//! see `queue::redis`): a few times a second it asks the queue for room and schedules
//! the earliest pending deliveries from the database again. While the queue is spilled
//! the periodic sweep waits: the refills cover the overdue rows (they are due first), and
//! the sweep would push every spilled row to the ready queue at once.
//!
//! With several replicas, the kinds of sweep are shared differently:
//!
//! - The periodic sweep of overdue deliveries runs on the holder of the background lease
//!   only (`crate::lease`): every replica would find the same overdue rows and enqueue
//!   them once each, N database scans and N queue entries for one lost delivery.
//! - Refills run on the lease holder only, like the periodic sweep.
//! - The full sweep after a loss runs on every replica that notices the loss, lease or
//!   not. A loss is not seen by all replicas: a replica that starts after Redis lost its
//!   data creates the new epoch and is the only one to know; a `NOGROUP` is seen by the
//!   replica whose read hit it; and with the in-process queue the start-up sweep fills the
//!   process's own queue, which nobody else can. Skipping it would delay every due
//!   delivery by `requeue_after`; doing it twice only enqueues duplicates, which the claim
//!   in the database turns into nothing.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    lease::BackgroundLease,
    queue::{Queue, QueueItem},
    store::{Store, due_floor},
    time::now_micros,
};

/// Deliveries enqueued per database read.
const SWEEP_BATCH: u64 = 1000;
/// How often a spilled schedule is looked at (one Redis script call when nothing spilled).
const REFILL_EVERY: Duration = Duration::from_millis(250);

pub struct Reconciler {
    pub store: Store,
    pub queue: Arc<dyn Queue>,
    pub requeue_after: Duration,
    pub interval: Duration,
    /// Sweep everything due at start (the queue starts empty).
    pub queue_starts_empty: bool,
    /// The periodic sweep runs only while this replica holds it. An API-only process
    /// never holds it but still runs the reconciler for the full sweep after a loss: its
    /// queue connection may be the one that notices (it creates the new epoch when it
    /// starts first after Redis lost its data).
    pub lease: BackgroundLease,
}

impl Reconciler {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut lost = self.queue_starts_empty;
        let mut spilled = false;
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep += self.interval;
                lost |= self.queue.lost_data().await.unwrap_or(false);
                if lost || (self.lease.is_held() && !spilled) {
                    match self.sweep(lost).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::info!(count = n, full = lost, "re-enqueued deliveries");
                            }
                            // Retries due later were in the lost schedule too: the
                            // refill brings them back instead of the overdue sweep,
                            // `requeue_after` late.
                            if lost && let Err(err) = self.queue.mark_spilled(now_micros()).await {
                                tracing::warn!(error = %err, "marking the lost schedule failed");
                            }
                            lost = false;
                        }
                        Err(err) => tracing::warn!(error = %err, "reconciler sweep failed"),
                    }
                }
            }
            if self.lease.is_held() {
                match self.refill().await {
                    Ok(still) => spilled = still,
                    Err(err) => tracing::warn!(error = %err, "schedule refill failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFILL_EVERY.min(self.interval)) => {}
            }
        }
    }

    /// Schedules spilled retries again when the queue has room; returns whether the queue
    /// is (still) spilled.
    pub async fn refill(&self) -> crate::error::Result<bool> {
        let Some(room) = self.queue.refill_room().await? else {
            return Ok(false);
        };
        if room == 0 {
            return Ok(true);
        }
        // The spilled rows are pending, so the floor cannot pass them; raising it skips
        // what the drain has finished since (every 250 ms, a short walk).
        let floor = self
            .store
            .raise_due_floor(self.cutoff(now_micros()))
            .await?;
        let due = self.store.earliest_pending(floor, room).await?;
        let left_out = due.len() as u64 >= room;
        self.queue.schedule(&due).await?;
        // What the database still holds is due no earlier than the last row read.
        if left_out && let Some((_, last)) = due.last() {
            self.queue.mark_spilled(*last).await?;
        }
        tracing::debug!(
            count = due.len(),
            left_out,
            "refilled the schedule from the database"
        );
        Ok(left_out)
    }

    /// `requeue_after` before `now`: where the due floor may be raised to (see
    /// `store::due_floor`), and the periodic sweep's cutoff.
    fn cutoff(&self, now: i64) -> i64 {
        now - i64::try_from(self.requeue_after.as_micros()).unwrap_or(i64::MAX / 2)
    }

    /// One sweep; returns how many deliveries were enqueued.
    pub async fn sweep(&self, everything_due: bool) -> crate::error::Result<usize> {
        let now = now_micros();
        let (floor, cutoff) = if everything_due {
            // After a loss, also the writes that took too long to commit for the floor.
            let floor = self.store.due_floor().await?;
            (floor.saturating_sub(due_floor::LATE_WRITES), now)
        } else {
            let cutoff = self.cutoff(now);
            (self.store.raise_due_floor(cutoff).await?, cutoff)
        };
        let (mut from, mut total) = (floor, 0);
        loop {
            let taken = self.store.take_overdue(from, cutoff, SWEEP_BATCH).await?;
            let Some(&(_, last)) = taken.last() else {
                break;
            };
            // The next read starts after the last one's due time, not at the floor again:
            // the finished deliveries between them would be read once per batch. Rows
            // due at that same time and left out by the limit wait for the next sweep.
            from = last + 1;
            let items: Vec<QueueItem> = taken.into_iter().map(|(item, _)| item).collect();
            self.queue.push(&items).await?;
            total += items.len();
            if (items.len() as u64) < SWEEP_BATCH {
                break;
            }
        }
        Ok(total)
    }
}
