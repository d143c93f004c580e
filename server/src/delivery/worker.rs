//! The delivery worker: queue → claim → render, sign, send → record → retry or done.
//!
//! Each attempt runs in its own task. Two semaphores bound them: one per endpoint (so a
//! slow or dead endpoint holds at most `endpoint_concurrency` attempts and cannot starve
//! the others) and one per process. A popped delivery whose endpoint is already at its
//! cap is put back in the queue for a little later rather than waiting in memory, so a
//! hanging endpoint's backlog never blocks the loop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    outcome::{self, AttemptResult},
    request::{self, RequestParts},
    retry::RetryPolicy,
};
use crate::{
    egress::client::Sender,
    error::Result,
    queue::{Lease, Queue},
    store::{
        Store,
        deliveries::{AttemptContext, AttemptRecord},
        entities::delivery,
    },
    time::now_micros,
};

/// Deliveries popped per queue read.
const POP_BATCH: usize = 128;
/// How long a pop waits for work before looking at shutdown again.
const POP_WAIT: Duration = Duration::from_millis(500);
/// How often scheduled retries are moved to the ready queue.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// Slack when claiming: an entry promoted a moment early is still due.
const DUE_SLACK_MICROS: i64 = 1_000_000;

pub struct WorkerConfig {
    pub concurrency: usize,
    pub endpoint_concurrency: usize,
    /// How long a claimed delivery stays ours: longer than the request timeout.
    pub lease: Duration,
    /// How long a delivery waits when its endpoint is at its cap.
    pub busy_endpoint_delay: Duration,
    pub policy: RetryPolicy,
    pub auto_disable_after: Duration,
    pub user_agent: String,
}

pub struct Worker {
    store: Store,
    queue: Arc<dyn Queue>,
    sender: Sender,
    config: WorkerConfig,
    global: Arc<Semaphore>,
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Worker {
    pub fn new(store: Store, queue: Arc<dyn Queue>, sender: Sender, config: WorkerConfig) -> Self {
        Worker {
            store,
            queue,
            sender,
            global: Arc::new(Semaphore::new(config.concurrency)),
            per_endpoint: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// Runs until `shutdown`; attempts in flight then finish on their own.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let promoter = tokio::spawn(promote_loop(self.queue.clone(), shutdown.clone()));
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            // Wait for room before popping, so nothing is claimed that cannot start.
            let Ok(room) = self.global.clone().acquire_owned().await else {
                break;
            };
            drop(room);
            let leases = tokio::select! {
                _ = shutdown.cancelled() => break,
                popped = self.queue.pop(POP_BATCH, POP_WAIT) => popped,
            };
            match leases {
                Ok(leases) if leases.is_empty() => backoff.reset(),
                Ok(leases) => {
                    backoff.reset();
                    if let Err(err) = self.dispatch(leases).await {
                        tracing::warn!(error = %err, "delivery batch failed; its entries will be retried");
                        backoff.wait(&shutdown).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "delivery queue unavailable");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        promoter.abort();
    }

    fn endpoint_semaphore(&self, endpoint_id: &str) -> Arc<Semaphore> {
        let mut map = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        // Drop idle entries now and then so deleted endpoints don't accumulate.
        if map.len() > 10_000 {
            let cap = self.config.endpoint_concurrency;
            map.retain(|_, s| s.available_permits() < cap);
        }
        map.entry(endpoint_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.endpoint_concurrency)))
            .clone()
    }

    async fn dispatch(&self, leases: Vec<Lease>) -> Result<()> {
        let now = now_micros();
        let mut runnable: HashMap<String, (Lease, OwnedSemaphorePermit)> = HashMap::new();
        let mut busy = Vec::new();
        let mut done = Vec::new();
        for lease in leases {
            if runnable.contains_key(&lease.item.delivery_id) {
                done.push(lease); // the same delivery twice in one batch
                continue;
            }
            match self
                .endpoint_semaphore(&lease.item.endpoint_id)
                .try_acquire_owned()
            {
                Ok(permit) => {
                    runnable.insert(lease.item.delivery_id.clone(), (lease, permit));
                }
                Err(_) => busy.push(lease),
            }
        }
        if !busy.is_empty() {
            let at = now + micros(self.config.busy_endpoint_delay);
            let later: Vec<_> = busy.iter().map(|l| (l.item.clone(), at)).collect();
            self.queue.schedule(&later).await?;
            self.queue.ack(&busy).await?;
        }
        let claimed = self
            .store
            .claim_deliveries(
                runnable.keys().cloned().collect(),
                now + DUE_SLACK_MICROS,
                now + micros(self.config.lease),
            )
            .await?;
        let context = Arc::new(self.store.attempt_context(&claimed).await?);
        for delivery in claimed {
            let Some((lease, endpoint_permit)) = runnable.remove(&delivery.id) else {
                continue;
            };
            let Ok(global_permit) = self.global.clone().acquire_owned().await else {
                break;
            };
            let job = Attempt {
                worker: self.clone_parts(),
                context: context.clone(),
                delivery,
                lease,
            };
            tokio::spawn(async move {
                job.run().await;
                drop((endpoint_permit, global_permit));
            });
        }
        // Entries whose delivery was not claimable: finished, deleted, held by another
        // worker, or not due (a stale copy of a rescheduled retry). Drop them.
        done.extend(runnable.into_values().map(|(lease, _)| lease));
        if !done.is_empty() {
            self.queue.ack(&done).await?;
        }
        Ok(())
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            store: self.store.clone(),
            queue: self.queue.clone(),
            sender: self.sender.clone(),
            policy: self.config.policy.clone(),
            auto_disable_after: self.config.auto_disable_after,
            user_agent: self.config.user_agent.clone(),
        }
    }
}

/// What an attempt task needs of the worker.
struct Parts {
    store: Store,
    queue: Arc<dyn Queue>,
    sender: Sender,
    policy: RetryPolicy,
    auto_disable_after: Duration,
    user_agent: String,
}

struct Attempt {
    worker: Parts,
    context: Arc<AttemptContext>,
    delivery: delivery::Model,
    lease: Lease,
}

impl Attempt {
    async fn run(self) {
        let id = self.delivery.id.clone();
        match self.attempt().await {
            Ok(()) => {}
            // Not acked: the lease expires and the entry comes back (at-least-once).
            Err(err) => tracing::warn!(delivery = %id, error = %err, "attempt not recorded"),
        }
    }

    async fn attempt(&self) -> Result<()> {
        let w = &self.worker;
        let d = &self.delivery;
        let (Some(endpoint), Some(event), Some(tenant)) = (
            self.context.endpoints.get(&d.endpoint_id),
            self.context.events.get(&d.event_id),
            self.context.tenants.get(&d.tenant_id),
        ) else {
            // Deleted meanwhile (the delivery row went with it) or pruned.
            w.store
                .fail_without_attempt(&d.id, "its event or endpoint no longer exists")
                .await?;
            return w.queue.ack(std::slice::from_ref(&self.lease)).await;
        };
        if !endpoint.enabled {
            let reason = format!("endpoint disabled: {}", endpoint.disabled_reason);
            w.store.fail_without_attempt(&d.id, &reason).await?;
            return w.queue.ack(std::slice::from_ref(&self.lease)).await;
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
        let (result, body, duration) = match request::build(endpoint, tenant, &parts, &w.user_agent)
        {
            Ok((url, headers, payload)) => {
                let outcome = w.sender.post(&url, headers, payload).await;
                let result = AttemptResult {
                    status_code: outcome.status,
                    retry_after: outcome.retry_after,
                    error_kind: outcome.error.as_ref().map(|e| e.kind.as_str().to_string()),
                    error_message: outcome.error.as_ref().map(|e| e.message.clone()),
                };
                (result, outcome.body, outcome.elapsed)
            }
            Err(message) => (
                AttemptResult {
                    error_kind: Some("invalid_request".into()),
                    error_message: Some(message),
                    ..Default::default()
                },
                String::new(),
                Duration::ZERO,
            ),
        };
        // The endpoint's own retry schedule, if it has one, replaces the server's.
        let schedule = endpoint.retry_schedule_secs();
        let policy = if schedule.is_empty() {
            w.policy.clone()
        } else {
            RetryPolicy::from_secs(&schedule)
        };
        let decision = outcome::decide(
            &result,
            (d.attempts + 1) as u32,
            now_micros(),
            &policy,
            endpoint.failing_since,
            w.auto_disable_after,
        );
        // The delivery as recorded: a superseded one gets no retry.
        let recorded = w
            .store
            .record_attempt(AttemptRecord {
                delivery: d.clone(),
                started_at,
                duration_micros: micros(duration),
                status_code: result.status_code,
                error_kind: result.error_kind,
                error_message: result.error_message,
                response_body: body,
                decision,
            })
            .await?;
        if let Some(at) = recorded.next_attempt_at {
            // If this fails the reconciler finds the retry once it is overdue.
            if let Err(err) = w.queue.schedule(&[(self.lease.item.clone(), at)]).await {
                tracing::warn!(delivery = %d.id, error = %err, "could not schedule the retry");
            }
        }
        w.queue.ack(std::slice::from_ref(&self.lease)).await
    }
}

fn micros(d: Duration) -> i64 {
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
