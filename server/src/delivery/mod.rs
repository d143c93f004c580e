//! Webhook delivery: draining the outbox that publishes write.
//!
//! - `worker`: pops queued deliveries, claims them in the database, renders, signs and
//!   sends them (one task per attempt, capped per endpoint and per process), records
//!   every attempt, schedules retries.
//! - `handoff`: fresh deliveries a publish stores already claimed for this process's
//!   worker, handed over in memory (no queue, no claim).
//! - `recorder`: writes finished attempts in batches, schedules retries, acks.
//! - `slot`: one endpoint's requests in flight, line and parked deliveries (the worker's
//!   bookkeeping).
//! - `retry`: the backoff schedule.
//! - `reconciler`: re-enqueues due deliveries the queue lost (the database is the truth).
//! - `retention`: prunes old events, deliveries and attempts.
//! - `outcome`: what an attempt's result does to the delivery and its endpoint.

pub mod handoff;
pub mod outcome;
pub mod reconciler;
pub mod recorder;
pub mod request;
pub mod retention;
pub mod retry;
pub mod slot;
pub mod worker;

/// Delivery statuses, as Keygen names them.
pub mod status {
    pub const DELIVERING: &str = "DELIVERING";
    pub const DELIVERED: &str = "DELIVERED";
    pub const FAILING: &str = "FAILING";
    pub const FAILED: &str = "FAILED";
    /// Statuses with an attempt still to come.
    pub const PENDING: [&str; 2] = [DELIVERING, FAILING];
}
