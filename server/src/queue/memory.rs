//! In-process queue for the embedded default (no Redis).
//!
//! Mirrors the Redis queue's semantics so that the delivery worker cannot tell them apart:
//! every ready entry gets an id (the lease token, like a stream entry id), a lease not acked
//! within the lease time is handed out again with the same token, and an ack with any
//! holder's token finishes the entry. Nothing survives a restart, which is fine: the
//! database is the truth and the reconciler re-enqueues due deliveries at startup.
//!
//! Unlike the Redis queue it dedupes: a delivery already ready or scheduled is not queued
//! twice (pushing a scheduled delivery makes it ready now; scheduling it again replaces the
//! earlier time; scheduling a ready delivery is a no-op, it is attempted sooner anyway).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Depth, Lease, Queue, QueueItem};
use crate::error::Result;

pub struct MemoryQueue {
    lease: Duration,
    state: Mutex<State>,
    /// Woken when entries become ready (push, promote).
    ready: Notify,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Ready entries, oldest first: (entry id, item, ready since in Unix microseconds).
    ready: VecDeque<(u64, QueueItem, i64)>,
    /// Delivery ids in `ready`.
    ready_ids: HashSet<String>,
    /// Scheduled items by (due time in Unix microseconds, entry id).
    scheduled: BTreeMap<(i64, u64), QueueItem>,
    /// Delivery id → its key in `scheduled`.
    scheduled_at: HashMap<String, (i64, u64)>,
    /// Handed-out entries by entry id: the item and when its lease expires.
    leased: HashMap<u64, (QueueItem, Instant)>,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn unschedule(&mut self, delivery_id: &str) {
        if let Some(key) = self.scheduled_at.remove(delivery_id) {
            self.scheduled.remove(&key);
        }
    }

    /// Appends `item` to ready (waiting since `since`) unless it is there already. True
    /// if it was added.
    fn make_ready(&mut self, item: QueueItem, since: i64) -> bool {
        if self.ready_ids.contains(&item.delivery_id) {
            return false;
        }
        self.unschedule(&item.delivery_id);
        let id = self.next_id();
        self.ready_ids.insert(item.delivery_id.clone());
        self.ready.push_back((id, item, since));
        true
    }

    /// Up to `max` leases: expired leases first (handed out again, same token), then
    /// ready entries.
    fn take(&mut self, max: usize, now: Instant, lease: Duration) -> Vec<Lease> {
        let expiry = now + lease;
        let mut expired: Vec<u64> = self
            .leased
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        let mut out = Vec::with_capacity(max.min(64));
        for id in expired {
            if let Some((item, until)) = self.leased.get_mut(&id) {
                *until = expiry;
                out.push(Lease {
                    item: item.clone(),
                    token: id.to_string(),
                });
            }
        }
        while out.len() < max {
            let Some((id, item, _)) = self.ready.pop_front() else {
                break;
            };
            self.ready_ids.remove(&item.delivery_id);
            out.push(Lease {
                item: item.clone(),
                token: id.to_string(),
            });
            self.leased.insert(id, (item, expiry));
        }
        out
    }

    fn next_lease_expiry(&self) -> Option<Instant> {
        self.leased.values().map(|(_, until)| *until).min()
    }
}

impl MemoryQueue {
    /// `lease`: how long a handed-out entry stays with its consumer before it is handed
    /// out again.
    pub fn new(lease: Duration) -> MemoryQueue {
        MemoryQueue {
            lease,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, but a poisoned lock must not take the
        // queue down with it: the state is still consistent between calls.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Queue for MemoryQueue {
    async fn push(&self, items: &[QueueItem]) -> Result<()> {
        let now = crate::time::now_micros();
        let added = {
            let mut state = self.state();
            let mut added = false;
            for item in items {
                added |= state.make_ready(item.clone(), now);
            }
            added
        };
        if added {
            self.ready.notify_waiters();
        }
        Ok(())
    }

    async fn schedule(&self, items: &[(QueueItem, i64)]) -> Result<()> {
        let mut state = self.state();
        for (item, at) in items {
            if state.ready_ids.contains(&item.delivery_id) {
                continue;
            }
            state.unschedule(&item.delivery_id);
            let key = (*at, state.next_id());
            state.scheduled_at.insert(item.delivery_id.clone(), key);
            state.scheduled.insert(key, item.clone());
        }
        Ok(())
    }

    async fn hasten(&self, items: &[QueueItem]) -> Result<u64> {
        let moved = {
            let mut state = self.state();
            let now = crate::time::now_micros();
            let mut moved = 0;
            for item in items {
                if state.scheduled_at.contains_key(&item.delivery_id)
                    && state.make_ready(item.clone(), now)
                {
                    moved += 1;
                }
            }
            moved
        };
        if moved > 0 {
            self.ready.notify_waiters();
        }
        Ok(moved)
    }

    async fn promote_due(&self, now_micros: i64) -> Result<u64> {
        let moved = {
            let mut state = self.state();
            let mut moved = 0;
            while let Some(entry) = state.scheduled.first_entry() {
                if entry.key().0 > now_micros {
                    break;
                }
                let item = entry.remove();
                state.scheduled_at.remove(&item.delivery_id);
                if state.make_ready(item, now_micros) {
                    moved += 1;
                }
            }
            moved
        };
        if moved > 0 {
            self.ready.notify_waiters();
        }
        Ok(moved)
    }

    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Lease>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking at the state, so a push between the look and the
            // wait still wakes us.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let next_expiry = {
                let mut state = self.state();
                let out = state.take(max, now, self.lease);
                if !out.is_empty() {
                    return Ok(out);
                }
                state.next_lease_expiry()
            };
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Wake for a push, the deadline, or the next lease to expire.
            let until = next_expiry.map_or(deadline, |e| e.min(deadline));
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        let mut state = self.state();
        for lease in leases {
            if let Ok(id) = lease.token.parse::<u64>() {
                state.leased.remove(&id);
            }
        }
        Ok(())
    }

    async fn lost_data(&self) -> Result<bool> {
        Ok(false)
    }

    async fn depth(&self) -> Result<Depth> {
        let state = self.state();
        Ok(Depth {
            ready: state.ready.len() as u64,
            scheduled: state.scheduled.len() as u64,
            leased: state.leased.len() as u64,
        })
    }

    async fn oldest_due(&self, now_micros: i64) -> Result<Option<i64>> {
        let state = self.state();
        // Entries are ready from when they were pushed or promoted (as in the Redis
        // stream), so the front is the oldest; retries not promoted yet count from their
        // due time.
        let ready = state.ready.front().map(|(_, _, since)| *since);
        let overdue = state
            .scheduled
            .first_key_value()
            .map(|((at, _), _)| *at)
            .filter(|at| *at <= now_micros);
        Ok(ready.into_iter().chain(overdue).min())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn item(n: u32) -> QueueItem {
        QueueItem {
            delivery_id: format!("dlv_{n}"),
            endpoint_id: format!("ep_{}", n % 3),
        }
    }

    fn ids(leases: &[Lease]) -> Vec<String> {
        leases.iter().map(|l| l.item.delivery_id.clone()).collect()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn hasten_makes_only_scheduled_items_ready() {
        super::super::contract::hasten_makes_only_scheduled_items_ready(&MemoryQueue::new(LONG))
            .await;
    }

    #[tokio::test]
    async fn oldest_due_is_the_longest_waiting_entry() {
        super::super::contract::oldest_due_is_the_longest_waiting_entry(&MemoryQueue::new(LONG))
            .await;
    }

    #[tokio::test]
    async fn push_pop_ack_in_order() {
        let q = MemoryQueue::new(LONG);
        q.push(&[item(1), item(2), item(3)]).await.unwrap();
        let first = q.pop(2, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&first), ["dlv_1", "dlv_2"]);
        assert_eq!(first[0].item, item(1));
        let rest = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&rest), ["dlv_3"]);
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 0,
                scheduled: 0,
                leased: 3
            }
        );
        q.ack(&first).await.unwrap();
        q.ack(&rest).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Depth::default());
        assert!(!q.lost_data().await.unwrap());
        assert!(q.pop(0, Duration::from_secs(1)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn push_dedupes_ready_deliveries() {
        let q = MemoryQueue::new(LONG);
        q.push(&[item(1), item(1)]).await.unwrap();
        q.push(&[item(1), item(2)]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().ready, 2);
        // Once handed out, the delivery may be queued again (e.g. by the reconciler).
        let leases = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&leases), ["dlv_1", "dlv_2"]);
        q.push(&[item(1)]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().ready, 1);
    }

    #[tokio::test]
    async fn pop_waits_then_returns_empty() {
        let q = MemoryQueue::new(LONG);
        let start = Instant::now();
        assert!(
            q.pop(5, Duration::from_millis(300))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn pop_wakes_on_push() {
        let q = Arc::new(MemoryQueue::new(LONG));
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                q.push(&[item(7)]).await.unwrap();
            })
        };
        let start = std::time::Instant::now();
        let leases = q.pop(5, Duration::from_secs(10)).await.unwrap();
        assert_eq!(ids(&leases), ["dlv_7"]);
        assert!(start.elapsed() < Duration::from_secs(5));
        pusher.await.unwrap();
    }

    #[tokio::test]
    async fn pop_wakes_on_promote() {
        let q = Arc::new(MemoryQueue::new(LONG));
        q.schedule(&[(item(1), 1_000)]).await.unwrap();
        let promoter = {
            let q = q.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(q.promote_due(1_000).await.unwrap(), 1);
            })
        };
        let leases = q.pop(5, Duration::from_secs(10)).await.unwrap();
        assert_eq!(ids(&leases), ["dlv_1"]);
        promoter.await.unwrap();
    }

    #[tokio::test]
    async fn promote_moves_only_due_items() {
        let q = MemoryQueue::new(LONG);
        q.schedule(&[(item(1), 100), (item(2), 200), (item(3), 300)])
            .await
            .unwrap();
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(q.promote_due(99).await.unwrap(), 0);
        assert_eq!(q.promote_due(200).await.unwrap(), 2);
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 2,
                scheduled: 1,
                leased: 0
            }
        );
        assert_eq!(
            ids(&q.pop(10, Duration::ZERO).await.unwrap()),
            ["dlv_1", "dlv_2"]
        );
        assert_eq!(q.promote_due(1_000).await.unwrap(), 1);
        assert_eq!(ids(&q.pop(10, Duration::ZERO).await.unwrap()), ["dlv_3"]);
    }

    #[tokio::test]
    async fn schedule_replaces_and_push_takes_over() {
        let q = MemoryQueue::new(LONG);
        q.schedule(&[(item(1), 100)]).await.unwrap();
        // A later schedule of the same delivery replaces the earlier one.
        q.schedule(&[(item(1), 500)]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().scheduled, 1);
        assert_eq!(q.promote_due(100).await.unwrap(), 0);
        assert_eq!(q.promote_due(500).await.unwrap(), 1);

        // Pushing a scheduled delivery makes it ready now, once.
        q.schedule(&[(item(2), 100)]).await.unwrap();
        q.push(&[item(2)]).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 2,
                scheduled: 0,
                leased: 0
            }
        );
        // Scheduling a ready delivery doesn't queue it twice.
        q.schedule(&[(item(2), 100)]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().scheduled, 0);
        assert_eq!(q.promote_due(1_000).await.unwrap(), 0);
        assert_eq!(
            ids(&q.pop(10, Duration::ZERO).await.unwrap()),
            ["dlv_1", "dlv_2"]
        );
    }

    #[tokio::test]
    async fn expired_lease_is_offered_again() {
        let q = MemoryQueue::new(Duration::from_millis(200));
        q.push(&[item(1), item(2)]).await.unwrap();
        let first = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 2);
        q.ack(&first[1..]).await.unwrap();
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());

        // A waiting pop wakes when the unacked lease expires, and gets it with the same token.
        let start = Instant::now();
        let again = q.pop(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ids(&again), ["dlv_1"]);
        assert_eq!(again[0].token, first[0].token);
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(q.depth().await.unwrap().leased, 1);

        // The re-lease is fresh: not offered again right away.
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
        // An ack by the first holder finishes it too.
        q.ack(&first[..1]).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Depth::default());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ack_ignores_unknown_tokens() {
        let q = MemoryQueue::new(LONG);
        q.push(&[item(1)]).await.unwrap();
        let leases = q.pop(1, Duration::ZERO).await.unwrap();
        let bogus = Lease {
            item: item(1),
            token: "not-a-token".into(),
        };
        q.ack(&[bogus]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().leased, 1);
        q.ack(&leases).await.unwrap();
        q.ack(&leases).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Depth::default());
    }
}
