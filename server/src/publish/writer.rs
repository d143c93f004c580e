//! The group-commit writer: one task per process stores every publish.
//!
//! Concurrent publishes queue here and are committed together, one transaction for
//! whatever arrived while the previous one was committing, so a busy server pays one
//! commit (one fsync) per batch rather than per event. After each commit the new
//! events go to the live bus in sequence order (through the relay when replicas share
//! storage, see `relay.rs`), which is what lets tails switch from storage to live
//! without a gap. The new deliveries go to the queue, or, those this process's worker has
//! room for, straight to the worker (`delivery::handoff`).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{
    bus::Bus,
    delivery::handoff::Handoff,
    error::{Error, Result},
    queue::{Queue, QueueItem},
    store::{
        Store,
        events::{Committed, NewEvent, NoTakeover, Takeover},
        subscribers::Subscribers,
    },
};

/// Most events committed in one transaction.
const MAX_BATCH_EVENTS: usize = 2000;
/// Publishes that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Committed batches whose deliveries may wait for the pusher before the writer waits.
const PUSH_QUEUE: usize = 64;

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Committed>>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer; it stops once every `Writer` handle is dropped. `handoff` is
    /// this process's worker, if it runs one.
    pub fn spawn(
        store: Store,
        bus: Arc<Bus>,
        queue: Arc<dyn Queue>,
        handoff: Option<Handoff>,
        idempotency_window_micros: i64,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        tokio::spawn(push(queue, handoff.clone(), push_rx));
        let sink = Sink {
            store,
            bus,
            pusher: push_tx,
            subscribers: Subscribers::default(),
            handoff,
        };
        tokio::spawn(run(sink, idempotency_window_micros, rx));
        Writer { tx }
    }

    /// Stores `events` atomically (with their deliveries) and returns what became of
    /// each, in order.
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<Vec<Committed>> {
        self.enqueue(events).await?.await
    }

    /// Queues `events` and returns the wait for their commit. Jobs commit in the order
    /// they were queued, so a caller that queues in order and awaits later keeps its
    /// order while its jobs still share group commits.
    pub async fn enqueue(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Committed>>> + use<>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { events, reply })
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        Ok(async move {
            rx.await
                .map_err(|_| Error::Unavailable("server is shutting down".into()))?
        })
    }
}

/// Where committed events go: storage, then the live bus and (through the pusher) the
/// delivery queue.
struct Sink {
    store: Store,
    bus: Arc<Bus>,
    pusher: mpsc::Sender<Vec<QueueItem>>,
    /// The endpoints publishes are matched against (PostgreSQL; see `store::subscribers`).
    subscribers: Subscribers,
    handoff: Option<Handoff>,
}

impl Sink {
    async fn commit(&mut self, events: Vec<NewEvent>, window: i64) -> Result<Vec<Committed>> {
        // Dropped unused if the commit fails: the places it reserved are given back.
        let mut reservation = self.handoff.as_ref().map(Handoff::reserve);
        let takeover: &mut dyn Takeover = match reservation.as_mut() {
            Some(reservation) => reservation,
            None => &mut NoTakeover,
        };
        let (committed, taken) = self
            .store
            .commit_events(events, window, &mut self.subscribers, takeover)
            .await?;
        self.bus.publish_committed(&committed);
        if let (Some(taken), Some(reservation)) = (taken, reservation) {
            reservation.deliver(taken, committed.iter().map(|c| &c.event));
        }
        Ok(committed)
    }

    /// Hands the new deliveries of a commit to the pusher, so that the next commit
    /// need not wait for the queue's round trip (a publish waiting behind it did).
    async fn enqueue(&self, items: Vec<QueueItem>) {
        if !items.is_empty() && self.pusher.send(items).await.is_err() {
            tracing::debug!("pusher stopped; the reconciler will queue the deliveries");
        }
    }
}

/// Queues committed deliveries, whatever arrived meanwhile in one call. After the commit
/// (and after the publishers got their answers: the push is not theirs to wait for), and
/// allowed to fail: the reconciler enqueues whatever is due and not queued, so a failed
/// push only delays those deliveries. Deliveries to an endpoint that hangs are scheduled
/// for when the worker would take them (`Handoff::deferrals`) instead of made ready now.
async fn push(
    queue: Arc<dyn Queue>,
    handoff: Option<Handoff>,
    mut rx: mpsc::Receiver<Vec<QueueItem>>,
) {
    let mut batches = Vec::new();
    while rx.recv_many(&mut batches, PUSH_QUEUE).await > 0 {
        let items: Vec<QueueItem> = batches.drain(..).flatten().collect();
        let (ready, later) = split_deferred(handoff.as_ref(), items);
        if let Err(err) = queue.schedule(&later).await {
            tracing::warn!(error = %err, count = later.len(), "scheduling after publish failed; the reconciler will queue them");
        }
        if let Err(err) = queue.push(&ready).await {
            tracing::warn!(error = %err, count = ready.len(), "enqueue after publish failed; the reconciler will retry");
        }
    }
}

/// The items to make ready now, and those to schedule (with when).
fn split_deferred(
    handoff: Option<&Handoff>,
    items: Vec<QueueItem>,
) -> (Vec<QueueItem>, Vec<(QueueItem, i64)>) {
    let Some(handoff) = handoff else {
        return (items, Vec::new());
    };
    let due = handoff.deferrals(&items);
    if due.iter().all(Option::is_none) {
        return (items, Vec::new());
    }
    let mut ready = Vec::with_capacity(items.len());
    let mut later = Vec::new();
    for (item, due) in items.into_iter().zip(due) {
        match due {
            Some(at) => later.push((item, at)),
            None => ready.push(item),
        }
    }
    crate::metrics::deliveries_deferred(crate::metrics::Deferred::Queue, later.len());
    (ready, later)
}

async fn run(mut sink: Sink, window: i64, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.events.len();
        let mut jobs = vec![first];
        while size < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        commit_jobs(&mut sink, window, jobs).await;
    }
}

/// The queue items of `committed`, which only the writer needs.
fn take_items(committed: &mut [Committed]) -> Vec<QueueItem> {
    committed
        .iter_mut()
        .flat_map(|c| std::mem::take(&mut c.new_deliveries))
        .collect()
}

async fn commit_jobs(sink: &mut Sink, window: i64, jobs: Vec<Job>) {
    let all: Vec<NewEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
    match sink.commit(all, window).await {
        Ok(mut committed) => {
            let items = take_items(&mut committed);
            for job in jobs {
                let rest = committed.split_off(job.events.len().min(committed.len()));
                let mine = std::mem::replace(&mut committed, rest);
                let _ = job.reply.send(Ok(mine));
            }
            sink.enqueue(items).await;
        }
        Err(err) if jobs.len() == 1 => {
            let _ = jobs.into_iter().next().map(|j| j.reply.send(Err(err)));
        }
        // One job's failure (say, its tenant was just deleted) must not fail the
        // others that happened to share its transaction: retry each on its own.
        Err(_) => {
            for job in jobs {
                let mut result = sink.commit(job.events, window).await;
                let items = result.as_mut().map(|c| take_items(c)).unwrap_or_default();
                let _ = job.reply.send(result);
                sink.enqueue(items).await;
            }
        }
    }
}
