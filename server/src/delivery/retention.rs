//! Pruning: events older than the retention period go, with their deliveries and
//! attempts (foreign keys cascade), a batch at a time with pauses, so publishers are
//! never locked out for long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{store::Store, time::now_micros};

const BATCH: u64 = 1000;
const PAUSE: Duration = Duration::from_millis(50);

pub struct Pruner {
    pub store: Store,
    pub retention: Duration,
    pub interval: Duration,
}

impl Pruner {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
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
            if n < BATCH || shutdown.is_cancelled() {
                return Ok(total);
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}
