//! Pruning: events older than the retention period go, with their deliveries and
//! attempts (the database cascades them: foreign keys, or triggers on PostgreSQL), a
//! batch at a time with pauses, so publishers are never locked out for long.
//!
//! With several replicas only the holder of the background lease prunes (`crate::lease`):
//! N replicas deleting the same rows would only contend on their locks.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{lease::BackgroundLease, store::Store, time::now_micros};

const BATCH: u64 = 1000;
const PAUSE: Duration = Duration::from_millis(50);

pub struct Pruner {
    pub store: Store,
    pub retention: Duration,
    pub interval: Duration,
    /// Pruning runs only while this replica holds it.
    pub lease: BackgroundLease,
}

impl Pruner {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.lease.acquired() => {}
            }
            match self.prune_once(&shutdown).await {
                Ok(n) if n > 0 => tracing::info!(count = n, "pruned events past retention"),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "pruning failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Deletes everything older than the retention period; returns the events deleted.
    pub async fn prune_once(&self, shutdown: &CancellationToken) -> crate::error::Result<u64> {
        let before =
            now_micros() - i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX / 2);
        let mut total = 0;
        loop {
            let n = self.store.prune_events(before, BATCH).await?;
            total += n;
            // A lease lost half-way leaves the rest to the next holder.
            if n < BATCH || shutdown.is_cancelled() || !self.lease.is_held() {
                return Ok(total);
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}
