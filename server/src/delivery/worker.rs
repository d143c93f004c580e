//! The delivery worker: queue → claim → render, sign, send → record → retry or done.
//!
//! Concurrency is limited per endpoint and per process. An endpoint's limit adapts, as
//! TCP's window does (additive increase, multiplicative decrease): it starts at
//! `endpoint_concurrency`, grows by one for every half-limit of successful requests made
//! while deliveries waited for a place, up to `endpoint_concurrency_max`, and halves (not
//! below the start) on each failure (an error status, a timeout, a refused connection). A
//! receiver that keeps up gets more requests at once; one that struggles gets fewer, and a
//! dead or hanging one stays at the start.
//!
//! Each endpoint has a slot: the deliveries it is sending, and a line of claimed
//! deliveries waiting for one of those to finish. A task that finishes a request takes
//! the next one of its endpoint's line, so a busy endpoint runs at its limit without going
//! back to the queue. The line is as long as the endpoint can work through in half a
//! lease at its observed speed (a fast receiver gets thousands, a hanging one twice its
//! cap). What does not fit in the line of an endpoint whose requests are finishing is
//! *parked* beside it: its queue entry is held, unclaimed and unacked, and fed to the line
//! a claim's batch at a time as the line drains (no second trip through the queue, no
//! guess of when the line has room). The rest (a hanging endpoint's backlog, or more than
//! can be claimed within a quarter lease) is put back in the queue until the endpoint has
//! likely worked through what it holds (a minute at most), so a slow or dead endpoint's
//! backlog neither blocks the loop nor fills memory, and other endpoints are never held
//! up. That wait is a guess; an endpoint whose line drains sooner, its requests
//! finishing, has what it put back made ready at once (`Worker::hasten`), a stuck one's
//! once it answers again. A stuck endpoint's new deliveries skip that trip: the publish
//! schedules them for when a dispatch would have put them back (`Worker::deferrals`).
//! Recording an attempt happens off the endpoint's slot: finished attempts go to the
//! `recorder`, which writes them in batches while the next requests are already under
//! way.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    outcome::{self, AttemptResult},
    recorder::{Finished, Recorder},
    request::{self, RequestParts},
    retry::RetryPolicy,
    slot::{MAX_LATER, MAX_LINE, MAX_PARKED, Slot},
};
use crate::{
    egress::client::Sender,
    error::Result,
    queue::{Lease, Queue, QueueItem},
    store::{
        Store,
        deliveries::{AttemptContext, AttemptRecord},
        entities::delivery,
    },
    time::now_micros,
};

/// Deliveries popped per queue read.
pub(super) const POP_BATCH: usize = 256;
/// Batches being claimed at once.
const DISPATCHERS: usize = 2;
/// How long a pop waits for work before looking at shutdown again.
const POP_WAIT: Duration = Duration::from_millis(500);
/// How often scheduled retries are moved to the ready queue.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// A pop smaller than this, made while another batch is being claimed, waits for that
/// claim (up to `CLAIM_LINGER`) and takes what arrived meanwhile: under moderate load two
/// claims at once would each carry a delivery or two, and a claim costs the database
/// about as much for one delivery as for ten. Without a claim under way, nothing waits.
const CLAIM_LINGER_BELOW: usize = 16;
const CLAIM_LINGER: Duration = Duration::from_millis(2);
/// How long after a claim lapses a queue entry for it is due: the queue may keep due
/// times in milliseconds, and an entry handed out before the claim lapsed is dropped.
const AFTER_CLAIM_MICROS: i64 = 1_000;
/// Slack when claiming: an entry promoted a moment early is still due.
const DUE_SLACK_MICROS: i64 = 1_000_000;
/// The most deliveries waiting in all lines together (each holds its delivery row):
/// beyond it, a line does not grow and what does not fit waits as if it were full.
const MAX_LINED_TOTAL: usize = 4 * MAX_LINE;
/// Slots kept (idle ones remember their endpoint's speed) before idle ones are dropped.
const MAX_IDLE_SLOTS: usize = 10_000;
/// A claim must outlast the request timeout by this much for the request to start.
const CLAIM_MARGIN: Duration = Duration::from_secs(1);
/// The most deliveries parked beside the lines of all endpoints together: each is a queue
/// entry, about 200 bytes, so at most about 13 MB.
const MAX_PARKED_TOTAL: usize = 4 * MAX_PARKED;
/// The most put-back deliveries remembered by all endpoints together (see `Slot::later`).
const MAX_LATER_TOTAL: usize = 4 * MAX_LATER;
/// The most of those that stuck endpoints may hold: a few hanging endpoints with large
/// backlogs must not leave no room for endpoints whose requests are finishing.
const MAX_LATER_STUCK: usize = MAX_LATER_TOTAL / 2;
/// How often parked deliveries are looked at when no request of their endpoint finishes.
const PARK_SWEEP_EVERY: Duration = Duration::from_millis(100);

pub struct WorkerConfig {
    pub concurrency: usize,
    /// An endpoint's starting and lowest limit of requests in flight.
    pub endpoint_concurrency: usize,
    /// The highest its limit grows to while its requests succeed.
    pub endpoint_concurrency_max: usize,
    /// How long a claimed delivery stays ours: longer than the request timeout.
    pub lease: Duration,
    /// The whole-exchange timeout of one request.
    pub request_timeout: Duration,
    /// How long a delivery waits in the queue when its endpoint's line is full.
    pub busy_endpoint_delay: Duration,
    pub policy: RetryPolicy,
    pub auto_disable_after: Duration,
    pub user_agent: String,
}

/// Where a delivery reserved by `Worker::admit` will go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// A request can start at once.
    Now,
    /// It waits in its endpoint's line.
    InLine,
}

/// A claimed delivery with what its attempt needs.
pub(super) struct Job {
    pub delivery: delivery::Model,
    /// Its queue entry; `None` for a delivery a publish handed over (see `handoff`).
    pub lease: Option<Lease>,
    pub context: Arc<AttemptContext>,
}

pub struct Worker {
    store: Store,
    queue: Arc<dyn Queue>,
    sender: Sender,
    config: WorkerConfig,
    global: Arc<Semaphore>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Parked deliveries of all slots (changed with the slots locked).
    parked_total: AtomicUsize,
    /// Put-back deliveries remembered by all slots (changed with the slots locked).
    later_total: AtomicUsize,
    /// The last pop took all the queue had ready (fewer than a batch): the worker is
    /// about to run out of work, so put-back deliveries may be hastened.
    drained: AtomicBool,
    /// Deliveries waiting in all lines (changed with the slots locked).
    lined_total: AtomicUsize,
    recorder: Recorder,
    /// Set at shutdown: publishes hand this worker nothing more (`admit`).
    stopped: AtomicBool,
}

/// What sending a job came to.
enum Sent {
    /// No request was made: the delivery ends with this reason.
    Skipped(String),
    /// A request was made (or could not be built).
    Attempted {
        started_at: i64,
        result: AttemptResult,
        body: String,
        duration: Duration,
    },
}

impl Worker {
    pub fn new(store: Store, queue: Arc<dyn Queue>, sender: Sender, config: WorkerConfig) -> Self {
        Worker {
            sender,
            global: Arc::new(Semaphore::new(config.concurrency)),
            slots: Mutex::new(HashMap::new()),
            parked_total: AtomicUsize::new(0),
            later_total: AtomicUsize::new(0),
            drained: AtomicBool::new(false),
            lined_total: AtomicUsize::new(0),
            recorder: Recorder::spawn(store.clone(), queue.clone()),
            stopped: AtomicBool::new(false),
            store,
            queue,
            config,
        }
    }

    /// Runs until `shutdown`; attempts in flight then finish on their own.
    ///
    /// Up to `DISPATCHERS` batches are claimed at once, so the next batch's database
    /// round trips overlap the previous one's.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let stop = shutdown.clone();
        let worker = self.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            worker.stopped.store(true, Ordering::Relaxed);
        });
        let promoter = tokio::spawn(promote_loop(self.queue.clone(), shutdown.clone()));
        let sweeper = tokio::spawn(self.clone().sweep_parked_loop(shutdown.clone()));
        let dispatchers = Arc::new(Semaphore::new(DISPATCHERS));
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let Ok(dispatcher) = dispatchers.clone().acquire_owned().await else {
                break;
            };
            // Wait for room before popping, so nothing is claimed that cannot start.
            let Ok(room) = self.global.clone().acquire_owned().await else {
                break;
            };
            drop(room);
            let leases = tokio::select! {
                _ = shutdown.cancelled() => break,
                popped = self.queue.pop(POP_BATCH, POP_WAIT) => popped,
            };
            if let Ok(leases) = &leases {
                self.drained
                    .store(leases.len() < POP_BATCH, Ordering::Relaxed);
            }
            match leases {
                Ok(leases) if leases.is_empty() => backoff.reset(),
                Ok(mut leases) => {
                    backoff.reset();
                    if leases.len() < CLAIM_LINGER_BELOW && dispatchers.available_permits() == 0 {
                        self.top_up(&dispatchers, &mut leases).await;
                    }
                    let worker = self.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(err) = worker.dispatch(leases, false).await {
                            tracing::warn!(error = %err, "delivery batch failed; its entries will be retried");
                            // Holding the dispatcher slows the loop down while the
                            // database or queue is failing.
                            Backoff { failures: 3 }.wait(&shutdown).await;
                        }
                        drop(dispatcher);
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "delivery queue unavailable");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        promoter.abort();
        sweeper.abort();
        // Nothing is parked from now on (a dispatch still under way would otherwise park
        // after the unparking below).
        self.stopped.store(true, Ordering::Relaxed);
        self.unpark_all().await;
    }

    /// Waits for the claim under way (at most `CLAIM_LINGER`), then adds to `leases`
    /// whatever the queue holds by then, without waiting for more.
    async fn top_up(&self, dispatchers: &Semaphore, leases: &mut Vec<Lease>) {
        let _ = tokio::time::timeout(CLAIM_LINGER, dispatchers.acquire()).await;
        match self
            .queue
            .pop(POP_BATCH - leases.len(), Duration::ZERO)
            .await
        {
            Ok(more) => leases.extend(more),
            // What is in hand goes ahead; the next pop reports the queue's state.
            Err(err) => tracing::debug!(error = %err, "queue read after a claim's wait failed"),
        }
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims and places popped leases (`fed`: leases of one endpoint that were parked,
    /// see `feed`).
    async fn dispatch(self: &Arc<Self>, leases: Vec<Lease>, fed: bool) -> Result<()> {
        let mut planned: HashMap<String, usize> = HashMap::new();
        let result = self.dispatch_planned(leases, fed, &mut planned).await;
        // Whatever this dispatch reserved is placed or dropped by now.
        self.unreserve(planned);
        result
    }

    /// Gives back places reserved per endpoint (by a dispatch or a publish's handoff),
    /// once their deliveries are placed or dropped.
    pub(super) fn unreserve(&self, planned: HashMap<String, usize>) {
        let mut slots = self.lock_slots();
        for (endpoint, n) in planned {
            if let Some(slot) = slots.get_mut(&endpoint) {
                slot.reserved = slot.reserved.saturating_sub(n);
            }
        }
    }

    /// Reserves a place for a delivery to `endpoint_id` that a publish is about to store
    /// claimed, as a dispatch reserves one for a popped delivery: at once if the endpoint
    /// is under its limit of requests in flight, else in its line if the line has room.
    /// `None` (the delivery goes through the queue) when neither has room. As for a
    /// popped delivery, the process's limit of requests is applied when it is sent.
    pub(super) fn admit(&self, endpoint_id: &str) -> Option<Placement> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let cap = self.config.endpoint_concurrency;
        let mut slots = self.lock_slots();
        let slot = match slots.get_mut(endpoint_id) {
            Some(slot) => slot,
            None => slots.entry(endpoint_id.to_string()).or_default(),
        };
        if !slot.parked.is_empty() {
            // Deliveries wait beside the line: this one queues behind them.
            return None;
        }
        let load = slot.load();
        let limit = slot.limit(cap);
        let placement = if load < limit {
            Placement::Now
        } else if !self.no_place(slot, load, limit) {
            Placement::InLine
        } else {
            return None;
        };
        slot.reserved += 1;
        Some(placement)
    }

    /// For each delivery a publish just stored and did not hand over, the time (Unix
    /// microseconds) until which a dispatch would put it back in the queue the moment it
    /// popped it, if it would: its endpoint is stuck (requests in flight, none finishing)
    /// and its line full. The publish's pusher schedules those for that time instead of
    /// pushing them, sparing a pop, a put-back and an ack per delivery that could not be
    /// sent anyway: a hanging endpoint's share of the work beside the healthy ones (d).
    /// A stuck endpoint is not flowing, so nothing would have been parked. They are
    /// remembered as put back (`Slot::later`): should the endpoint answer again sooner
    /// than guessed, they are made ready once its line drains.
    pub(super) fn deferrals(&self, items: &[QueueItem]) -> Vec<Option<i64>> {
        if self.stopped.load(Ordering::Relaxed) {
            return vec![None; items.len()];
        }
        let cap = self.config.endpoint_concurrency;
        let now = now_micros();
        let mut slots = self.lock_slots();
        items
            .iter()
            .map(|item| {
                let slot = slots.get_mut(&item.endpoint_id)?;
                if !slot.stuck() {
                    return None;
                }
                let load = slot.load();
                let limit = slot.limit(cap);
                if !self.no_place(slot, load, limit) {
                    return None;
                }
                let due =
                    now + micros(slot.busy_delay(load, limit, self.config.busy_endpoint_delay));
                self.put_back(slot, item, due);
                Some(due)
            })
            .collect()
    }

    /// How long a claimed delivery that starts at once stays ours; one that waits in a
    /// line is held twice as long (see `dispatch_planned`).
    pub(super) fn lease(&self) -> Duration {
        self.config.lease
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Starts claimed jobs where their endpoint's limit allows and lines up the rest
    /// (their places were reserved before they were claimed).
    pub(super) fn place(self: &Arc<Self>, jobs: Vec<Job>) {
        let cap = self.config.endpoint_concurrency;
        let mut start = Vec::new();
        {
            let mut slots = self.lock_slots();
            for job in jobs {
                let slot = slots.entry(job.delivery.endpoint_id.clone()).or_default();
                if slot.running < slot.limit(cap) {
                    if slot.running == 0 {
                        slot.last_progress = Some(std::time::Instant::now());
                    }
                    slot.running += 1;
                    start.push(job);
                } else {
                    slot.waiting.push_back(job);
                    self.lined_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for job in start {
            tokio::spawn(self.clone().drive(job));
        }
    }

    async fn dispatch_planned(
        self: &Arc<Self>,
        leases: Vec<Lease>,
        fed: bool,
        planned: &mut HashMap<String, usize>,
    ) -> Result<()> {
        let now = now_micros();
        let cap = self.config.endpoint_concurrency;
        // Take what the endpoints' slots and lines have room for, reserving it in the
        // slot so that a concurrent dispatch sees it taken.
        let mut accepted: HashMap<String, Lease> = HashMap::new();
        // Deliveries that can start at once are held for one lease; those that go to a
        // line for as many leases as they may wait rounds (a crash frees the former
        // sooner).
        let (mut start_now, mut in_line) = (Vec::new(), Vec::new());
        let mut endpoint_ids = Vec::new();
        let mut busy = Vec::new();
        let mut parked_at: Vec<String> = Vec::new();
        let mut parked = 0;
        let mut done = Vec::new();
        {
            let mut slots = self.lock_slots();
            if slots.len() > MAX_IDLE_SLOTS {
                slots.retain(|_, s| {
                    let keep = s.busy();
                    if !keep {
                        self.later_changed(s.later.len(), 0);
                    }
                    keep
                });
            }
            for lease in leases {
                if accepted.contains_key(&lease.item.delivery_id) {
                    done.push(lease); // the same delivery twice in one batch
                    continue;
                }
                let endpoint = &lease.item.endpoint_id;
                let slot = slots.entry(endpoint.clone()).or_default();
                let load = slot.load();
                let limit = slot.limit(cap);
                let full = self.no_place(slot, load, limit);
                // Behind what is parked already, so that the line's room goes to those.
                let behind = !fed && !slot.parked.is_empty();
                if (full || behind) && self.may_park(slot, limit) {
                    if parked_at.last() != Some(endpoint) {
                        parked_at.push(endpoint.clone());
                    }
                    slot.parked.push_back((lease, std::time::Instant::now()));
                    self.parked_total.fetch_add(1, Ordering::Relaxed);
                    parked += 1;
                    continue;
                }
                if full {
                    let wait = slot.busy_delay(load, limit, self.config.busy_endpoint_delay);
                    self.put_back(slot, &lease.item, now + micros(wait));
                    busy.push((lease, wait));
                    continue;
                }
                slot.reserved += 1;
                *planned.entry(endpoint.clone()).or_default() += 1;
                endpoint_ids.push(endpoint.clone());
                if load < limit {
                    start_now.push(lease.item.delivery_id.clone());
                } else {
                    in_line.push(lease.item.delivery_id.clone());
                }
                accepted.insert(lease.item.delivery_id.clone(), lease);
            }
            // A line with room already takes what was parked behind others at once.
            for endpoint in parked_at {
                if let Some(slot) = slots.get_mut(&endpoint) {
                    self.feed(&endpoint, slot);
                }
            }
        }
        crate::metrics::deliveries_deferred(crate::metrics::Deferred::Parked, parked);
        crate::metrics::deliveries_deferred(crate::metrics::Deferred::Queue, busy.len());
        self.requeue_later(busy).await?;
        let due_by = now + DUE_SLACK_MICROS;
        // A line is sized to be worked through in half a lease; a delivery whose claim
        // nonetheless runs short is dropped before sending (see `drive`).
        let (claimed, context) = self
            .store
            .claim_for_attempts(
                start_now,
                in_line,
                endpoint_ids,
                due_by,
                now + micros(self.config.lease),
                now + micros(self.config.lease * 2),
            )
            .await?;
        let context = Arc::new(context);
        let jobs = claimed
            .into_iter()
            .filter_map(|delivery| {
                let lease = accepted.remove(&delivery.id)?;
                Some(Job {
                    delivery,
                    lease: Some(lease),
                    context: context.clone(),
                })
            })
            .collect();
        self.place(jobs);
        // Entries whose delivery was not claimable: finished, deleted, held by another
        // worker, or not due (a stale copy of a rescheduled retry). Drop them.
        done.extend(accepted.into_values());
        if !done.is_empty() {
            self.queue.ack(&done).await?;
        }
        Ok(())
    }

    /// Sends `job`, then the jobs waiting in its endpoint's line, one after another;
    /// each is recorded by a task of its own.
    async fn drive(self: Arc<Self>, mut job: Job) {
        loop {
            let Ok(permit) = self.global.clone().acquire_owned().await else {
                return;
            };
            let endpoint_id = job.delivery.endpoint_id.clone();
            if !self.claim_outlasts_attempt(&job) {
                // The endpoint slowed down while this waited: our claim may lapse before
                // the request ends, and another worker could then send it too. Leave it
                // unacked; the queue hands it out again once its lease expires.
                tracing::debug!(delivery = %job.delivery.id, "claim ran short in line; requeued");
                if job.lease.is_none() {
                    let worker = self.clone();
                    let delivery = job.delivery.clone();
                    tokio::spawn(async move {
                        worker
                            .requeue_after_claims(std::slice::from_ref(&delivery))
                            .await;
                    });
                }
                drop(permit);
                match self.next_in_line(&endpoint_id, None, None) {
                    Some(next) => {
                        job = next;
                        continue;
                    }
                    None => return,
                }
            }
            let started = std::time::Instant::now();
            let d = &job.delivery;
            let span = tracing::info_span!(
                "attempt",
                delivery_id = %d.id,
                event_id = %d.event_id,
                endpoint_id = %d.endpoint_id,
                tenant_id = %d.tenant_id,
                attempt = d.attempts + 1
            );
            let sent = self.send(&job).instrument(span).await;
            let took = started.elapsed();
            let healthy = match &sent {
                Sent::Attempted { result, .. } => Some(result.succeeded()),
                Sent::Skipped(_) => None,
            };
            self.finish(job, sent, permit);
            match self.next_in_line(&endpoint_id, Some(took), healthy) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Queues handed-over deliveries (they have no queue entry) for when their claims
    /// lapse. If that fails, the reconciler finds them overdue.
    pub(super) async fn requeue_after_claims(&self, deliveries: &[delivery::Model]) {
        let items: Vec<(QueueItem, i64)> = deliveries
            .iter()
            .map(|d| {
                let lapses = d.locked_until.unwrap_or_else(now_micros);
                (QueueItem::from(d), lapses + AFTER_CLAIM_MICROS)
            })
            .collect();
        if let Err(err) = self.queue.schedule(&items).await {
            tracing::warn!(error = %err, count = items.len(), "could not queue handed-over deliveries for when their claims lapse; the reconciler will");
        }
    }

    /// Takes the first job of `slot`'s line.
    fn next_waiting(&self, slot: &mut Slot) -> Option<Job> {
        let job = slot.waiting.pop_front()?;
        self.lined_total.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    /// Whether a delivery to `slot` (holding `load`, allowed `limit` requests at once)
    /// finds no place: its line is as long as it may be, or its requests are at their
    /// limit and the lines together hold as many deliveries as they may.
    fn no_place(&self, slot: &Slot, load: usize, limit: usize) -> bool {
        load >= slot.room(limit, self.line_budget()) || load >= limit && self.lines_full()
    }

    /// Whether the lines together hold as many deliveries as they may.
    fn lines_full(&self) -> bool {
        self.lined_total.load(Ordering::Relaxed) >= MAX_LINED_TOTAL
    }

    /// Half a lease: what a line may take to work through.
    fn line_budget(&self) -> Duration {
        self.config.lease / 2
    }

    /// How long a delivery may stay parked: well inside the queue's lease, after which
    /// the queue would hand its entry out again.
    fn park_limit(&self) -> Duration {
        self.config.lease / 4
    }

    /// Whether a delivery popped while `slot`'s line is full may be parked beside it
    /// (see `Slot::may_park`), within the bound of all slots together.
    fn may_park(&self, slot: &Slot, limit: usize) -> bool {
        !self.stopped.load(Ordering::Relaxed)
            && self.parked_total.load(Ordering::Relaxed) < MAX_PARKED_TOTAL
            && slot.may_park(limit, self.park_limit())
    }

    /// Dispatches the endpoint's parked deliveries once its line has room for a claim's
    /// worth of them (all of them, or a pop's batch): one claim statement per batch, as
    /// for a pop. Called with the slots locked; one such dispatch per endpoint at a time.
    fn feed(self: &Arc<Self>, endpoint_id: &str, slot: &mut Slot) {
        if slot.parked.is_empty() || slot.feeding || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let limit = slot.limit(self.config.endpoint_concurrency);
        let room = slot
            .room(limit, self.line_budget())
            .saturating_sub(slot.load());
        let batch = slot.parked.len().min(POP_BATCH);
        if room < batch || self.lines_full() {
            return;
        }
        let leases: Vec<Lease> = slot.parked.drain(..batch).map(|(l, _)| l).collect();
        self.parked_total.fetch_sub(batch, Ordering::Relaxed);
        slot.feeding = true;
        let worker = self.clone();
        let endpoint_id = endpoint_id.to_string();
        tokio::spawn(async move {
            let fed = worker.dispatch(leases, true).await;
            if let Err(err) = &fed {
                // Unacked: the queue hands them out again when their lease expires.
                tracing::warn!(error = %err, "dispatch of parked deliveries failed; their entries will be retried");
            }
            let mut slots = worker.lock_slots();
            if let Some(slot) = slots.get_mut(&endpoint_id) {
                slot.feeding = false;
                // After a failure the sweep feeds the rest, a moment later: no tight
                // loop of failing claims while the database is down.
                if fed.is_ok() {
                    worker.feed(&endpoint_id, slot);
                }
            }
        });
    }

    /// Remembers a delivery put back for `slot`'s full line (see `Slot::later`), within
    /// the bound of all slots together (half of it for endpoints whose requests are not
    /// finishing). A stuck endpoint's too: they are hastened once its requests finish
    /// again (its wait was guessed from how long they had gone unanswered, which says
    /// nothing of an endpoint that was only slow to start).
    fn put_back(&self, slot: &mut Slot, item: &QueueItem, due: i64) {
        let bound = if slot.flowing() {
            MAX_LATER_TOTAL
        } else {
            MAX_LATER_STUCK
        };
        if self.later_total.load(Ordering::Relaxed) >= bound {
            return;
        }
        let before = slot.later.len();
        slot.put_back(item.clone(), due, now_micros());
        self.later_changed(before, slot.later.len());
    }

    /// Keeps `later_total` in step with a slot's `later` that went from `before` entries
    /// to `after`.
    fn later_changed(&self, before: usize, after: usize) {
        if after >= before {
            self.later_total
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.later_total
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Makes ready at once the deliveries this endpoint put back for a full line, once
    /// the line has nearly drained with nothing parked (see `Slot::hasten`): their wait
    /// was guessed from the endpoint's speed when they were put back, and a guess made
    /// while the machine was busiest (a burst being published) overshoots, leaving the
    /// endpoint idle while they wait. Called with the slots locked.
    ///
    /// Only while the queue has nothing more ready: a worker that still pops full batches
    /// is not about to idle, and what it hastened would find the line full again (a
    /// receiver that is down and fails at once, with a backlog of a million, built it
    /// 15% slower).
    fn hasten(self: &Arc<Self>, endpoint_id: &str, slot: &mut Slot) {
        if slot.later.is_empty()
            || !self.drained.load(Ordering::Relaxed)
            || self.stopped.load(Ordering::Relaxed)
        {
            return;
        }
        let limit = slot.limit(self.config.endpoint_concurrency);
        let room = slot.room(limit, self.line_budget());
        // Enough still in line to cover a pop and a claim.
        let low = POP_BATCH.max(2 * limit);
        let before = slot.later.len();
        let items = slot.hasten(room, low, now_micros(), micros(PROMOTE_EVERY));
        self.later_changed(before, slot.later.len());
        if items.is_empty() {
            return;
        }
        slot.hastening = true;
        let worker = self.clone();
        let endpoint_id = endpoint_id.to_string();
        tokio::spawn(async move {
            let moved = match worker.queue.hasten(&items).await {
                Ok(moved) => moved,
                Err(err) => {
                    // They come back at their due time.
                    tracing::debug!(error = %err, "making put-back deliveries ready early failed");
                    0
                }
            };
            let mut slots = worker.lock_slots();
            if let Some(slot) = slots.get_mut(&endpoint_id) {
                slot.hastening = false;
                // Nothing is on its way to an endpoint whose last request may have
                // finished meanwhile: look at the rest now, not at its next request.
                if moved == 0 {
                    worker.hasten(&endpoint_id, slot);
                }
            }
        });
    }

    /// Feeds lines that drained without a request finishing (a claim failed, say), and
    /// puts back in the queue the parked deliveries that waited `park_limit`: their
    /// endpoint slowed down since they were parked.
    async fn sweep_parked_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PARK_SWEEP_EVERY) => {}
            }
            if self.parked_total.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let cap = self.config.endpoint_concurrency;
            let mut stale = Vec::new();
            {
                let mut slots = self.lock_slots();
                for (endpoint_id, slot) in slots.iter_mut() {
                    let n = slot
                        .parked
                        .iter()
                        .take_while(|(_, at)| at.elapsed() >= self.park_limit())
                        .count();
                    if n > 0 {
                        let limit = slot.limit(cap);
                        let load = slot.load() + slot.parked.len();
                        let wait = slot.busy_delay(load, limit, self.config.busy_endpoint_delay);
                        let due = now_micros() + micros(wait);
                        let overdue: Vec<_> = slot.parked.drain(..n).collect();
                        for (lease, _) in overdue {
                            self.put_back(slot, &lease.item, due);
                            stale.push((lease, wait));
                        }
                        self.parked_total.fetch_sub(n, Ordering::Relaxed);
                    }
                    self.feed(endpoint_id, slot);
                }
            }
            if let Err(err) = self.requeue_later(stale).await {
                tracing::warn!(error = %err, "parked deliveries not put back; their entries will be retried");
            }
        }
    }

    /// Puts every parked delivery back in the queue, ready at once, at shutdown: another
    /// process (or the next start) takes them without waiting for their leases to expire.
    async fn unpark_all(&self) {
        let parked: Vec<(Lease, Duration)> = {
            let mut slots = self.lock_slots();
            let parked = slots
                .values_mut()
                .flat_map(|slot| slot.parked.drain(..))
                .map(|(lease, _)| (lease, Duration::ZERO))
                .collect();
            self.parked_total.store(0, Ordering::Relaxed);
            parked
        };
        if let Err(err) = self.requeue_later(parked).await {
            tracing::warn!(error = %err, "parked deliveries not put back at shutdown; their entries will be retried");
        }
    }

    /// Moves leased entries back to the queue's schedule, each due after its wait.
    async fn requeue_later(&self, leases: Vec<(Lease, Duration)>) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let now = now_micros();
        let later: Vec<_> = leases
            .iter()
            .map(|(l, wait)| (l.item.clone(), now + micros(*wait)))
            .collect();
        self.queue.schedule(&later).await?;
        let leases: Vec<Lease> = leases.into_iter().map(|(l, _)| l).collect();
        self.queue.ack(&leases).await
    }

    /// Whether the job's database claim lasts until its request can have ended.
    fn claim_outlasts_attempt(&self, job: &Job) -> bool {
        let needed = now_micros() + micros(self.config.request_timeout + CLAIM_MARGIN);
        job.delivery
            .locked_until
            .is_some_and(|until| until >= needed)
    }

    /// The next job of the endpoint's line, recording how long the last request took and
    /// adapting the endpoint's limit to how it went. When the limit grew, the jobs that now
    /// have a place start on tasks of their own.
    fn next_in_line(
        self: &Arc<Self>,
        endpoint_id: &str,
        took: Option<Duration>,
        healthy: Option<bool>,
    ) -> Option<Job> {
        let cap = self.config.endpoint_concurrency;
        let mut slots = self.lock_slots();
        let slot = slots.get_mut(endpoint_id)?;
        slot.adapt(healthy, cap, self.config.endpoint_concurrency_max);
        // This task keeps its place; the rest of the room goes to new tasks.
        while slot.running < slot.limit(cap) && slot.waiting.len() > 1 {
            let Some(job) = self.next_waiting(slot) else {
                break;
            };
            slot.running += 1;
            tokio::spawn(self.clone().drive(job));
        }
        if let Some(took) = took {
            slot.last_progress = Some(std::time::Instant::now());
            let took = took.as_secs_f64();
            slot.latency = Some(match slot.latency {
                Some(avg) => avg * 0.8 + took * 0.2,
                None => took,
            });
        }
        self.feed(endpoint_id, slot);
        self.hasten(endpoint_id, slot);
        // Over the limit (it just shrank): this task gives its place up.
        if slot.running <= slot.limit(cap)
            && let Some(job) = self.next_waiting(slot)
        {
            return Some(job);
        }
        // The slot stays when idle: it remembers the endpoint's speed for its next burst.
        slot.running -= 1;
        None
    }

    async fn send(&self, job: &Job) -> Sent {
        let d = &job.delivery;
        let (Some(endpoint), Some(event), Some(tenant)) = (
            job.context.endpoints.get(&d.endpoint_id),
            job.context.events.get(&d.event_id),
            job.context.tenants.get(&d.tenant_id),
        ) else {
            // Deleted meanwhile (the delivery row went with it) or pruned.
            return Sent::Skipped("its event or endpoint no longer exists".into());
        };
        if !endpoint.enabled {
            return Sent::Skipped(format!("endpoint disabled: {}", endpoint.disabled_reason));
        }
        let started_at = now_micros();
        let parts = RequestParts {
            delivery_id: &d.id,
            event_type: &event.event_type,
            payload_json: &event.payload,
            idempotency_token: &d.idempotency_token,
            created_at_micros: d.created_at,
            occurred_at_micros: event.occurred_at,
        };
        match request::build(endpoint, tenant, &parts, &self.config.user_agent) {
            Ok((url, headers, payload)) => {
                let outcome = self.sender.post(&url, headers, payload).await;
                Sent::Attempted {
                    started_at,
                    result: AttemptResult {
                        status_code: outcome.status,
                        retry_after: outcome.retry_after,
                        error_kind: outcome.error.as_ref().map(|e| e.kind.as_str().to_string()),
                        error_message: outcome.error.as_ref().map(|e| e.message.clone()),
                    },
                    body: outcome.body,
                    duration: outcome.elapsed,
                }
            }
            Err(message) => Sent::Attempted {
                started_at,
                result: AttemptResult {
                    error_kind: Some("invalid_request".into()),
                    error_message: Some(message),
                    ..Default::default()
                },
                body: String::new(),
                duration: Duration::ZERO,
            },
        }
    }

    /// Hands what `send` came to to the recorder, which records it, schedules the
    /// retry and acks the queue entry. The permit is released once it is recorded.
    fn finish(self: &Arc<Self>, job: Job, sent: Sent, permit: OwnedSemaphorePermit) {
        let d = &job.delivery;
        let (started_at, result, body, duration) = match sent {
            Sent::Skipped(reason) => {
                let worker = self.clone();
                crate::metrics::delivery_ended(crate::metrics::DeliveryEnd::Skipped);
                tokio::spawn(async move {
                    let done = async {
                        worker
                            .store
                            .fail_without_attempt(&job.delivery.id, &reason)
                            .await?;
                        match &job.lease {
                            Some(lease) => worker.queue.ack(std::slice::from_ref(lease)).await,
                            None => Ok(()),
                        }
                    };
                    // Not acked on error: the lease expires and the entry comes back.
                    if let Err(err) = done.await {
                        tracing::warn!(delivery = %job.delivery.id, error = %err, "skipped delivery not recorded");
                    }
                    drop(permit);
                });
                return;
            }
            Sent::Attempted {
                started_at,
                result,
                body,
                duration,
            } => (started_at, result, body, duration),
        };
        let endpoint = job.context.endpoints.get(&d.endpoint_id);
        // The endpoint's own retry schedule, if it has one, replaces the server's.
        let schedule = endpoint
            .map(|e| e.retry_schedule_secs())
            .unwrap_or_default();
        let policy = if schedule.is_empty() {
            self.config.policy.clone()
        } else {
            RetryPolicy::from_secs(&schedule)
        };
        let decision = outcome::decide(
            &result,
            (d.attempts + 1) as u32,
            now_micros(),
            &policy,
            endpoint.and_then(|e| e.failing_since),
            self.config.auto_disable_after,
        );
        let received_at = job.context.events.get(&d.event_id).map(|e| e.received_at);
        crate::metrics::attempt_decided(&result, &decision, duration, &d.endpoint_id, received_at);
        self.recorder.record(Finished {
            record: AttemptRecord {
                delivery: job.delivery,
                started_at,
                duration_micros: micros(duration),
                status_code: result.status_code,
                error_kind: result.error_kind,
                error_message: result.error_message,
                response_body: body,
                decision,
            },
            lease: job.lease,
            permit,
        });
    }
}

pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

async fn promote_loop(queue: Arc<dyn Queue>, shutdown: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROMOTE_EVERY) => {}
        }
        match queue.promote_due(now_micros()).await {
            Ok(_) => backoff.reset(),
            Err(err) => {
                tracing::warn!(error = %err, "moving due retries failed");
                backoff.wait(&shutdown).await;
            }
        }
    }
}

/// Exponential pause after errors: 100 ms doubling to 30 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    async fn wait(&mut self, shutdown: &CancellationToken) {
        let delay =
            Duration::from_millis(100u64 << self.failures.min(9)).min(Duration::from_secs(30));
        self.failures += 1;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
