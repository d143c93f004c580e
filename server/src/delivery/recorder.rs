//! The attempt recorder: one task per process writes finished attempts in batches.
//!
//! Attempts that finish while the previous batch is being written are recorded together:
//! one transaction (one commit, one fsync) for the batch, then one queue call schedules
//! their retries and one acks them all. Recording attempt by attempt capped delivery at
//! the database's commit rate. An attempt keeps its worker permit until it is recorded,
//! so a slow database slows the senders rather than piling up results in memory.
//!
//! Under moderate load a batch would hold two or three attempts, and each batch costs the
//! database a statement and a commit whatever its size (most of its work at that size).
//! So a small batch waits a moment (`LINGER`) for company before it is written: only the
//! delivery log and the queue's ack are that much later; the webhooks are already sent.
//!
//! A batch that cannot be written is not acked: its queue leases expire and the
//! deliveries are attempted again (at-least-once), as after a crash. Deliveries handed
//! over by a publish have no queue entry: their database claims expire and the reconciler
//! queues them again.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::{
    queue::{Lease, Queue, QueueItem},
    store::{
        Store,
        deliveries::{AttemptRecord, Recorded},
    },
};

/// Most attempts written in one transaction.
const MAX_BATCH: usize = 1000;
/// A batch smaller than this waits `LINGER` for more attempts before it is written.
const LINGER_BELOW: usize = 32;
/// How long a small batch waits for company.
const LINGER: Duration = Duration::from_millis(2);

/// A finished attempt waiting to be recorded.
pub struct Finished {
    pub record: AttemptRecord,
    /// Its queue entry, acked once recorded; `None` for a delivery handed over by a
    /// publish (it has none).
    pub lease: Option<Lease>,
    /// Held until the attempt is recorded.
    pub permit: OwnedSemaphorePermit,
}

/// Handle to the recorder task; it stops once every handle is dropped and the
/// attempts sent before are written.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Finished>,
}

impl Recorder {
    pub fn spawn(store: Store, queue: Arc<dyn Queue>) -> Recorder {
        // Unbounded is bounded in practice: every entry holds a worker permit.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, queue, rx));
        Recorder { tx }
    }

    pub fn record(&self, finished: Finished) {
        if let Err(lost) = self.tx.send(finished) {
            // Only at shutdown: the lease expires and the delivery comes back.
            tracing::debug!(delivery = %lost.0.record.delivery.id, "recorder stopped; attempt not recorded");
        }
    }
}

async fn run(store: Store, queue: Arc<dyn Queue>, mut rx: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < LINGER_BELOW {
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(finished) => batch.push(finished),
                    Err(_) => break,
                }
            }
        }
        write(&store, queue.as_ref(), std::mem::take(&mut batch)).await;
    }
}

async fn write(store: &Store, queue: &dyn Queue, batch: Vec<Finished>) {
    let mut records = Vec::with_capacity(batch.len());
    let mut leases = Vec::with_capacity(batch.len());
    // Released when this function returns, once the batch is written (or given up).
    let mut _permits = Vec::with_capacity(batch.len());
    for f in batch {
        records.push(f.record);
        leases.extend(f.lease);
        _permits.push(f.permit);
    }
    let outcome = match store.record_attempts(&records).await {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::warn!(error = %err, count = records.len(), "attempts not recorded; they will be retried");
            return;
        }
    };
    // Per batch, not per attempt; which replica did the work shows in its own log.
    tracing::debug!(attempts = records.len(), "recorded attempts");
    let retries: Vec<_> = records
        .iter()
        .zip(&outcome)
        .filter_map(|(r, o)| match o {
            Recorded::Applied {
                next_attempt_at: Some(at),
            } => Some((QueueItem::from(&r.delivery), *at)),
            _ => None,
        })
        .collect();
    // If this fails the reconciler finds the retries once they are overdue.
    if !retries.is_empty()
        && let Err(err) = queue.schedule(&retries).await
    {
        tracing::warn!(error = %err, count = retries.len(), "could not schedule retries");
    }
    if !leases.is_empty()
        && let Err(err) = queue.ack(&leases).await
    {
        // The entries come back when their leases expire; their claims are released,
        // so the deliveries are attempted again only if still pending.
        tracing::warn!(error = %err, count = leases.len(), "could not ack recorded attempts");
    }
}
