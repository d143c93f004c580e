//! The delivery queue: which deliveries are ready to attempt, and which wait for a retry.
//!
//! Entries carry ids only (the delivery and its endpoint); payloads stay in the database,
//! so a backlog of millions costs Redis little. The database is the source of truth: the
//! reconciler (`delivery::reconciler`) re-enqueues anything due that the queue lost, so an
//! implementation may lose entries (Redis without persistence) but must report it through
//! [`Queue::lost_data`] when it can tell.
//!
//! Two implementations behind one trait: [`redis::RedisQueue`] (a Stream read through a
//! consumer group, retries in a sorted set moved to the stream by a Lua script, reclaim of
//! a crashed worker's entries with XAUTOCLAIM) and [`memory::MemoryQueue`] (in-process, for
//! the embedded default).
//!
//! Entries carry the endpoint id so that per-endpoint FIFO (an ordering key) can be added
//! by sharding on it, without changing callers.

pub mod memory;
pub mod redis;

use std::time::Duration;

use crate::error::Result;

/// One queued delivery.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueItem {
    pub delivery_id: String,
    /// The ordering key (future per-endpoint FIFO) and the unit of concurrency caps.
    pub endpoint_id: String,
}

/// An item handed to a consumer. It stays leased to that consumer until [`Queue::ack`];
/// a lease not acked within the queue's lease time is handed out again (at-least-once).
#[derive(Clone, Debug)]
pub struct Lease {
    pub item: QueueItem,
    /// Implementation-specific handle (the stream entry id for Redis).
    pub token: String,
}

/// Queue sizes, for metrics and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Ready entries not yet handed out.
    pub ready: u64,
    /// Entries waiting for their retry time.
    pub scheduled: u64,
    /// Entries handed out and not yet acked.
    pub leased: u64,
}

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Makes `items` ready now (one round trip for the whole slice).
    async fn push(&self, items: &[QueueItem]) -> Result<()>;

    /// Makes each item ready at its time (Unix microseconds); earlier or equal to now
    /// means ready at the next [`Queue::promote_due`].
    ///
    /// A queue with a bounded schedule may keep only the items due first and *spill* the
    /// rest: the database holds their due time, and [`Queue::refill_room`] tells the
    /// reconciler when to bring them back. While some are left out it keeps no item due
    /// after them, so that items due later cannot hold them back.
    async fn schedule(&self, items: &[(QueueItem, i64)]) -> Result<()>;

    /// `None` unless the schedule spilled. After a spill: `Some(0)` while the queue is
    /// still full, or `Some(n)` once it has room again, meaning "schedule the `n`
    /// pending deliveries due first, from the database". `Some(n)` clears the spill; the
    /// caller calls [`Queue::mark_spilled`] if the database held `n` or more (some are
    /// still left out, due no earlier than the last one read). Unbounded queues always
    /// answer `None`.
    async fn refill_room(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Records that pending deliveries due at `from_micros` or later are left out of the
    /// schedule; items due after that leave it too (the database holds them).
    async fn mark_spilled(&self, _from_micros: i64) -> Result<()> {
        Ok(())
    }

    /// Makes ready now those of `items` that wait in the schedule, whatever their due
    /// time: a delivery put back because its endpoint's line was full, once the line
    /// drained sooner than guessed. An item not in the schedule (promoted already, or
    /// left out of a bounded schedule: the database holds it) is left alone. Returns how
    /// many moved.
    async fn hasten(&self, items: &[QueueItem]) -> Result<u64>;

    /// Moves scheduled items due at `now_micros` to ready, atomically (an item is never
    /// in both, never in neither). Returns how many moved.
    async fn promote_due(&self, now_micros: i64) -> Result<u64>;

    /// Up to `max` ready items, waiting up to `wait` for the first one. Also hands out
    /// again the items whose lease expired (a crashed consumer's).
    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Lease>>;

    /// Finishes leases: their items leave the queue.
    async fn ack(&self, leases: &[Lease]) -> Result<()>;

    /// True once after the queue noticed that it lost its data (for Redis: a restart
    /// without persistence, FLUSHALL, or a lost consumer group). The reconciler then
    /// re-enqueues every due delivery at once instead of waiting for them to look overdue.
    async fn lost_data(&self) -> Result<bool>;

    /// Current sizes.
    async fn depth(&self) -> Result<Depth>;

    /// Since when (Unix microseconds) the longest-waiting due entry has waited: the
    /// oldest ready entry not handed out yet (ready since it was pushed or promoted), or
    /// a scheduled retry due at `now_micros` and not promoted yet. `None` when nothing
    /// waits. Cheap (a few reads), for the periodic metrics sample.
    async fn oldest_due(&self, now_micros: i64) -> Result<Option<i64>>;
}

/// Behaviour every [`Queue`] must have, checked by each implementation's own tests
/// against a fresh queue of its kind.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn item(n: u32) -> QueueItem {
        QueueItem {
            delivery_id: format!("dlv_c{n}"),
            endpoint_id: "ep_c".into(),
        }
    }

    /// `oldest_due`: the ready entry waiting longest, or a retry due and not yet promoted.
    pub async fn oldest_due_is_the_longest_waiting_entry(q: &dyn Queue) {
        let start = crate::time::now_micros();
        assert_eq!(q.oldest_due(start).await.unwrap(), None);
        q.push(&[item(1)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.push(&[item(2)]).await.unwrap();
        let now = crate::time::now_micros();
        let oldest = q
            .oldest_due(now)
            .await
            .unwrap()
            .expect("ready entries wait");
        // Millisecond precision in Redis.
        assert!(
            oldest >= start - 1_000 && oldest <= now - 15_000,
            "{start} {oldest} {now}"
        );
        // The first is handed out: the second is the oldest waiting now.
        let got = q.pop(1, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        let second = q.oldest_due(now).await.unwrap().unwrap();
        assert!(second > oldest + 15_000, "{oldest} {second}");
        // A retry due long ago and not promoted yet is the oldest; one not due is not.
        let long_ago = now - 60_000_000;
        q.schedule(&[(item(3), long_ago), (item(4), now + 60_000_000)])
            .await
            .unwrap();
        // Scheduled times may be kept in milliseconds (Redis).
        let due = q.oldest_due(now).await.unwrap().unwrap();
        assert!(
            due <= long_ago && due > long_ago - 1_000,
            "{long_ago} {due}"
        );
        q.promote_due(now).await.unwrap();
        let rest = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(q.oldest_due(now).await.unwrap(), None);
    }

    /// `hasten`: scheduled items become ready at once, whatever their due time; items
    /// not scheduled (ready, handed out, or never queued) are left alone.
    pub async fn hasten_makes_only_scheduled_items_ready(q: &dyn Queue) {
        let now = crate::time::now_micros();
        let hour = 3_600_000_000;
        q.schedule(&[(item(1), now + hour), (item(2), now + hour)])
            .await
            .unwrap();
        q.push(&[item(3)]).await.unwrap();
        let moved = q.hasten(&[item(1), item(3), item(4)]).await.unwrap();
        assert_eq!(moved, 1);
        let mut got: Vec<String> = q
            .pop(10, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.item.delivery_id)
            .collect();
        got.sort();
        assert_eq!(got, ["dlv_c1", "dlv_c3"]);
        // The other one still waits for its time; hastened twice, an item moves once.
        assert_eq!(q.depth().await.unwrap().scheduled, 1);
        assert_eq!(q.hasten(&[item(1)]).await.unwrap(), 0);
        assert_eq!(q.promote_due(now).await.unwrap(), 0);
    }
}
