//! Fresh deliveries handed from the publish writer to this process's worker in memory.
//!
//! A delivery that goes through the queue costs a push, a pop, a claim in the database
//! (a statement that also reads its event back) and an ack. When the process that
//! publishes also delivers, and the endpoint's slot there has room (a request under its
//! limit, or a place in its line), none of that is needed: the publish stores the
//! delivery already claimed by this worker (`locked_until` set, as a claim would), and
//! after the commit the worker gets the row and its event, which the writer holds anyway.
//!
//! What stays the same:
//! - A delivery is taken only where a popped one would be placed (`Worker::admit`): at
//!   once if its endpoint is under its limit of requests in flight, else in the
//!   endpoint's line if the line has room. The rest, retries and other replicas' work go
//!   through the queue; so does everything when this process runs no worker, and once
//!   it is shutting down (its worker takes no more work, so another replica should).
//! - The claim's clock starts when the batch is built, before the statement runs, as a
//!   dispatch's starts before its claim: a delivery that waits so long that its claim
//!   would lapse during its request is queued for when the claim lapses, not sent.
//! - The database is the truth. A handed-over delivery has no queue entry; if the
//!   process dies, its claim lapses and the reconciler finds it overdue and queues it,
//!   as it does for a push that failed. Its retries are scheduled in the queue as any.
//! - A place is reserved in the endpoint's slot while the batch is built and given back
//!   once the jobs are placed (or the commit failed), as a dispatch does between its pop
//!   and its claim, so concurrent dispatches see the place taken.
//!
//! Only the PostgreSQL publish statement takes deliveries over (`store::events_pg`); the
//! transaction path (SQLite, idempotency keys) queues them all.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::worker::{Job, Placement, Worker, micros};
use crate::{
    queue::QueueItem,
    store::{
        deliveries::AttemptContext,
        entities::event,
        events::{Taken, Takeover},
    },
    time::now_micros,
};

/// The writer's way to this process's worker (only when the process runs both roles).
#[derive(Clone)]
pub struct Handoff {
    worker: Arc<Worker>,
}

impl Handoff {
    pub fn new(worker: Arc<Worker>) -> Handoff {
        Handoff { worker }
    }

    /// For each of `items` (deliveries stored and not taken over), when to queue it if
    /// not now: see `Worker::deferrals`.
    pub fn deferrals(&self, items: &[QueueItem]) -> Vec<Option<i64>> {
        self.worker.deferrals(items)
    }

    /// The places one publish batch takes; given back when dropped.
    pub fn reserve(&self) -> Reservation {
        let now = now_micros();
        let lease = micros(self.worker.lease());
        Reservation {
            worker: self.worker.clone(),
            lock_now: now + lease,
            lock_line: now + 2 * lease,
            planned: HashMap::new(),
        }
    }
}

/// Places reserved in the worker's endpoint slots for one publish batch.
pub struct Reservation {
    worker: Arc<Worker>,
    /// The claim of a delivery taken to start at once: one lease, as a dispatch's.
    lock_now: i64,
    /// The claim of one taken to wait in its endpoint's line: two leases, as a dispatch's.
    lock_line: i64,
    planned: HashMap<String, usize>,
}

impl Takeover for Reservation {
    fn take(&mut self, endpoint_id: &str) -> Option<i64> {
        let placement = self.worker.admit(endpoint_id)?;
        *self.planned.entry(endpoint_id.to_string()).or_default() += 1;
        Some(match placement {
            Placement::Now => self.lock_now,
            Placement::InLine => self.lock_line,
        })
    }

    fn release(&mut self) {
        self.worker.unreserve(std::mem::take(&mut self.planned));
    }
}

impl Reservation {
    /// Hands the committed deliveries `taken` to the worker; `events` holds their events
    /// (others may be there too). The endpoints come from the worker's copy when it is at
    /// the commit's version, else from one read; meanwhile the writer goes on.
    pub fn deliver<'a>(self, taken: Taken, events: impl Iterator<Item = &'a event::Model>) {
        let mut wanted: HashSet<&str> = taken
            .deliveries
            .iter()
            .map(|d| d.event_id.as_str())
            .collect();
        let events: HashMap<String, event::Model> = events
            .filter(|e| wanted.remove(e.id.as_str()))
            .map(|e| (e.id.clone(), e.clone()))
            .collect();
        tokio::spawn(async move {
            let mut endpoint_ids: Vec<String> = taken
                .deliveries
                .iter()
                .map(|d| d.endpoint_id.clone())
                .collect();
            endpoint_ids.sort_unstable();
            endpoint_ids.dedup();
            let store = self.worker.store();
            let loaded = match store
                .attempt_endpoints(Some(taken.context_version), endpoint_ids)
                .await
            {
                Ok(loaded) => loaded,
                Err(err) => {
                    tracing::warn!(error = %err, count = taken.deliveries.len(), "reading endpoints for handed-over deliveries failed; they are queued for when their claims lapse");
                    self.worker.requeue_after_claims(&taken.deliveries).await;
                    return;
                }
            };
            let context = Arc::new(AttemptContext {
                events,
                endpoints: loaded.endpoints,
                tenants: loaded.tenants,
            });
            let jobs = taken
                .deliveries
                .into_iter()
                .map(|delivery| Job {
                    delivery,
                    lease: None,
                    context: context.clone(),
                })
                .collect();
            self.worker.place(jobs);
            // `self` drops here: the places reserved are now the jobs'.
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}
