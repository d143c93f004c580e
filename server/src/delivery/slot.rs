//! An endpoint's slot in the delivery worker: its requests in flight and their limit
//! (adapted as TCP's window is), its line of claimed deliveries, the deliveries parked
//! beside a full line, and the speed estimates that size the line and decide where a
//! delivery that does not fit goes (parked, or back to the queue for how long). Pure
//! bookkeeping under the worker's lock: no I/O.

use std::{collections::VecDeque, time::Duration};

use super::worker::{Job, POP_BATCH};
use crate::queue::{Lease, QueueItem};

/// The shortest line (times the cap), for endpoints of unknown or slow speed.
const MIN_LINE_PER_CAP: usize = 2;
/// The longest line of one endpoint: a burst to a fast endpoint is mostly handed over
/// by the publish (stored claimed) instead of queued and claimed by a statement of its own.
pub(super) const MAX_LINE: usize = 16_384;
/// The longest a delivery is put back for when its endpoint's line is full.
const MAX_BUSY_DELAY: Duration = Duration::from_secs(60);
/// The shortest a delivery is put back for when the line of an endpoint whose requests are
/// finishing is full: about when the line has room again (its drain time), not the
/// configured delay meant for endpoints that hang. The queue promotes scheduled entries
/// every `PROMOTE_EVERY` (`worker.rs`), so anything shorter rounds up to that.
const FLOWING_BUSY_DELAY: Duration = Duration::from_millis(50);
/// An endpoint is flowing while one of its requests finished this recently.
const FLOWING_WITHIN: Duration = Duration::from_millis(250);
/// An endpoint is stuck once it has requests in flight and none finished for this long
/// (see `Slot::stuck`).
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// The most deliveries one flowing endpoint keeps parked beside its full line: a long
/// burst to a fast endpoint then adds 30% fewer entries to the queue (a2
/// with 150,000 events, docs/BENCHMARKS.md, *Thirteenth round*). An endpoint that answers
/// 503 at once counts as flowing too; with the schedule's spill fixed, a million-delivery
/// outage still gets every first attempt made (before the fix this bound made a quarter
/// fewer, *Twelfth round*).
pub(super) const MAX_PARKED: usize = 65_536;
/// The most put-back deliveries one endpoint remembers, to make them ready early when its
/// line drains sooner than guessed (about 150 bytes each).
pub(super) const MAX_LATER: usize = 65_536;

/// One endpoint's requests in flight, its line, and how long its requests take.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) running: usize,
    pub(super) waiting: VecDeque<Job>,
    /// Deliveries accepted by a dispatch that is still claiming them.
    pub(super) reserved: usize,
    /// Moving average of request durations, in seconds; `None` until one finished.
    pub(super) latency: Option<f64>,
    /// When a request last finished, or the slot last started from idle: how long its
    /// requests have been stuck when none finishes (a hanging endpoint's first wave).
    pub(super) last_progress: Option<std::time::Instant>,
    /// Requests in flight allowed now (0: not adapted yet, the starting limit).
    pub(super) limit: usize,
    /// Successes since the limit last changed.
    pub(super) streak: usize,
    /// Deliveries popped while the line of this flowing endpoint was full, unclaimed and
    /// unacked, with when they were popped: they feed the line as it drains, instead of
    /// going back to the queue for a guessed drain time (see `Worker::feed`).
    pub(super) parked: VecDeque<(Lease, std::time::Instant)>,
    /// A dispatch of parked deliveries is under way.
    pub(super) feeding: bool,
    /// Deliveries put back in the queue's schedule because the line was full, with when
    /// they are due (Unix microseconds), earliest first: when the line drains sooner
    /// than guessed they are made ready at once (`Worker::hasten`) instead of leaving
    /// the endpoint idle until then.
    pub(super) later: VecDeque<(QueueItem, i64)>,
    /// A call making some of `later` ready is under way.
    pub(super) hastening: bool,
}

impl Slot {
    /// Requests this endpoint may have in flight now.
    pub(super) fn limit(&self, cap: usize) -> usize {
        self.limit.max(cap)
    }

    /// Deliveries in flight, in line, or accepted by a claim under way.
    pub(super) fn load(&self) -> usize {
        self.running + self.waiting.len() + self.reserved
    }

    /// Whether the slot holds anything: an idle one may be dropped.
    pub(super) fn busy(&self) -> bool {
        self.running > 0 || self.reserved > 0 || !self.waiting.is_empty() || !self.parked.is_empty()
    }

    /// Adapts the limit to a finished request: `Some(true)` a success, `Some(false)` a
    /// failure, `None` no request. It only grows while deliveries wait for a place (a
    /// limit that is not reached says nothing about the receiver).
    pub(super) fn adapt(&mut self, healthy: Option<bool>, cap: usize, max: usize) {
        let limit = self.limit(cap);
        match healthy {
            Some(true) if !self.waiting.is_empty() && limit < max => {
                self.streak += 1;
                if self.streak * 2 >= limit {
                    self.limit = limit + 1;
                    self.streak = 0;
                }
            }
            Some(false) => {
                self.limit = (limit / 2).max(cap);
                self.streak = 0;
            }
            _ => {}
        }
    }

    /// How many deliveries this endpoint may have in flight and in line.
    pub(super) fn room(&self, cap: usize, budget: Duration) -> usize {
        let line = match self.latency {
            Some(latency) if latency > 0.0 => {
                ((budget.as_secs_f64() / latency) * cap as f64) as usize
            }
            Some(_) => MAX_LINE,
            None => 0,
        };
        cap + line.clamp(cap * MIN_LINE_PER_CAP, MAX_LINE)
    }

    /// Whether this endpoint's requests are finishing: its speed is known and one
    /// finished lately (a hanging endpoint's have not).
    pub(super) fn flowing(&self) -> bool {
        self.latency.is_some()
            && self
                .last_progress
                .is_some_and(|at| at.elapsed() < FLOWING_WITHIN)
    }

    /// Whether this endpoint's requests are stuck: some are in flight and none finished
    /// (nor did the slot start from idle) for `STUCK_AFTER`, as a hanging receiver's.
    /// Unlike "not flowing", a slot whose speed is not known yet is not stuck: a burst to
    /// a new endpoint is not held back before its first requests could answer.
    pub(super) fn stuck(&self) -> bool {
        self.running > 0
            && self
                .last_progress
                .is_some_and(|at| at.elapsed() >= STUCK_AFTER)
    }

    /// How long a delivery that finds this endpoint's line full is put back for: until
    /// the slot has likely worked through what it holds. A hanging endpoint's backlog
    /// comes round every few timeouts and never sooner than `slow_floor` (churning it
    /// through the queue cost the healthy endpoints throughput); a fast endpoint's as
    /// soon as its line has room (a fixed `slow_floor` left the worker idle at the end of
    /// a burst, the line long drained and the rest of the burst not yet due).
    pub(super) fn busy_delay(&self, load: usize, cap: usize, slow_floor: Duration) -> Duration {
        let floor = if self.flowing() {
            FLOWING_BUSY_DELAY
        } else {
            slow_floor
        };
        self.drain_time(load, cap)
            .clamp(floor, MAX_BUSY_DELAY.max(floor))
    }

    /// Whether a delivery that finds the line full may wait beside it, parked, until
    /// there is room: only while the endpoint's requests are finishing (a hanging one's
    /// backlog goes back to the queue), and if it will be claimed within `park_limit`.
    /// The line is fed a pop's batch at a time, so the last one parked is claimed once
    /// the line has worked through what is parked ahead of it and one batch more.
    pub(super) fn may_park(&self, limit: usize, park_limit: Duration) -> bool {
        self.flowing()
            && self.parked.len() < MAX_PARKED
            && self.drain_time(self.parked.len() + POP_BATCH, limit) < park_limit
    }

    /// Remembers a delivery put back until `due` for a full line (see `later`), and
    /// forgets those due by `now` (promoted already). Beyond `MAX_LATER` the one due
    /// first is forgotten: it comes back at its time.
    pub(super) fn put_back(&mut self, item: QueueItem, due: i64, now: i64) {
        while self.later.front().is_some_and(|(_, d)| *d <= now) {
            self.later.pop_front();
        }
        if self.later.len() >= MAX_LATER {
            self.later.pop_front();
        }
        // Put-backs are mostly in due order; one that is not goes where it belongs.
        let at = self.later.partition_point(|(_, d)| *d <= due);
        self.later.insert(at, (item, due));
    }

    /// The put-back deliveries to make ready now, if the line has drained to fewer than
    /// `low` waiting with nothing parked while requests are finishing: as many as the
    /// line has room for, dropping those that come due within `soon_micros` anyway.
    pub(super) fn hasten(
        &mut self,
        room: usize,
        low: usize,
        now: i64,
        soon_micros: i64,
    ) -> Vec<QueueItem> {
        if self.later.is_empty()
            || self.hastening
            || !self.parked.is_empty()
            || self.waiting.len() + self.reserved >= low
            || !self.flowing()
        {
            return Vec::new();
        }
        while self
            .later
            .front()
            .is_some_and(|(_, due)| *due <= now + soon_micros)
        {
            self.later.pop_front();
        }
        let n = room.saturating_sub(self.load()).min(self.later.len());
        self.later.drain(..n).map(|(item, _)| item).collect()
    }

    /// About how long this endpoint takes to work through `load` deliveries.
    pub(super) fn drain_time(&self, load: usize, cap: usize) -> Duration {
        let stuck = match self.last_progress {
            Some(at) if self.running > 0 => at.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let per_request = self.latency.unwrap_or(0.0).max(stuck);
        Duration::from_secs_f64((per_request * load as f64 / cap.max(1) as f64).min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::queue::QueueItem;

    const SLOW_FLOOR: Duration = Duration::from_secs(1);

    /// A slot whose requests take `latency` seconds, the last one finished `ago`.
    fn slot(latency: Option<f64>, ago: Option<Duration>, running: usize) -> Slot {
        Slot {
            running,
            latency,
            last_progress: ago.map(|ago| Instant::now().checked_sub(ago).unwrap()),
            ..Slot::default()
        }
    }

    #[test]
    fn a_flowing_endpoint_is_retried_when_its_line_has_room() {
        let fast = slot(Some(0.001), Some(Duration::ZERO), 16);
        assert!(fast.flowing());
        // 4,200 deliveries at 16 in flight and 1 ms each: 262.5 ms.
        assert_eq!(
            fast.busy_delay(4_200, 16, SLOW_FLOOR),
            Duration::from_micros(262_500)
        );
        // A line that drains at once still waits for the queue's next promotion or so.
        assert_eq!(fast.busy_delay(10, 16, SLOW_FLOOR), FLOWING_BUSY_DELAY);
    }

    #[test]
    fn a_hanging_or_unknown_endpoint_waits_at_least_the_configured_delay() {
        // Requests in flight and none finished for 2 s: it counts as 2 s per request.
        let hanging = slot(Some(0.001), Some(Duration::from_secs(2)), 16);
        assert!(!hanging.flowing());
        assert_eq!(hanging.busy_delay(4_200, 16, SLOW_FLOOR), MAX_BUSY_DELAY);
        assert_eq!(hanging.busy_delay(1, 16, SLOW_FLOOR), SLOW_FLOOR);
        let unknown = slot(None, None, 0);
        assert!(!unknown.flowing());
        assert_eq!(unknown.busy_delay(4_200, 16, SLOW_FLOOR), SLOW_FLOOR);
    }

    #[test]
    fn an_endpoint_is_stuck_only_with_requests_in_flight_and_none_finishing() {
        assert!(slot(None, Some(Duration::from_secs(2)), 16).stuck());
        assert!(slot(Some(0.001), Some(Duration::from_secs(2)), 1).stuck());
        // Just started, or a request finished lately: not yet.
        assert!(!slot(None, Some(Duration::from_millis(100)), 16).stuck());
        // Nothing in flight: idle, not stuck.
        assert!(!slot(Some(0.001), Some(Duration::from_secs(2)), 0).stuck());
        assert!(!slot(None, None, 0).stuck());
    }

    #[test]
    fn only_a_flowing_endpoint_that_will_claim_them_in_time_gets_deliveries_parked() {
        let limit = Duration::from_secs(10);
        // 1 ms per request, 16 at once: 16,000 a second.
        let mut fast = slot(Some(0.001), Some(Duration::ZERO), 16);
        assert!(fast.may_park(16, limit));
        // Parked as far as it is bounded.
        let lease = Lease {
            item: QueueItem {
                delivery_id: "dlv_1".into(),
                endpoint_id: "ep_1".into(),
            },
            token: "1-0".into(),
        };
        fast.parked = std::iter::repeat_n((lease, Instant::now()), MAX_PARKED).collect();
        assert!(!fast.may_park(16, limit));
        // One at a time and 50 ms each: the last parked would wait 12.8 s or more.
        let slow = slot(Some(0.05), Some(Duration::ZERO), 1);
        assert!(!slow.may_park(1, limit));
        // Hanging or of unknown speed: back to the queue.
        let hanging = slot(Some(0.001), Some(Duration::from_secs(2)), 16);
        assert!(!hanging.may_park(16, limit));
        assert!(!slot(None, None, 0).may_park(16, limit));
    }

    fn item(n: u32) -> QueueItem {
        QueueItem {
            delivery_id: format!("dlv_{n}"),
            endpoint_id: "ep_1".into(),
        }
    }

    #[test]
    fn put_back_deliveries_are_hastened_once_a_flowing_line_nearly_drained() {
        let now = 1_000_000_000;
        let mut s = slot(Some(0.001), Some(Duration::ZERO), 16);
        // Out of order: kept earliest due first.
        s.put_back(item(9), now - 1, now - 2);
        s.put_back(item(2), now + 20_000_000, now);
        s.put_back(item(1), now + 10_000_000, now);
        s.put_back(item(3), now + 30_000_000, now);
        s.put_back(item(0), now + 100_000, now);
        // One due already is forgotten.
        assert_eq!(s.later.len(), 4);
        // The line still holds enough: nothing yet.
        s.reserved = 300;
        assert!(s.hasten(1_000, 256, now, 200_000).is_empty());
        s.reserved = 0;
        // Drained: those due soon anyway are dropped, then as many as the line takes.
        let room = 16 + 2; // 16 in flight, room for 2 in line
        let got = s.hasten(room, 256, now, 200_000);
        assert_eq!(got, vec![item(1), item(2)]);
        assert_eq!(s.later.len(), 1);
        // A call under way is not doubled.
        s.hastening = true;
        assert!(s.hasten(1_000, 256, now, 200_000).is_empty());
        s.hastening = false;
        // A hanging endpoint's are left to their time.
        let mut hanging = slot(Some(0.001), Some(Duration::from_secs(2)), 16);
        hanging.put_back(item(5), now + 10_000_000, now);
        assert!(hanging.hasten(1_000, 256, now, 200_000).is_empty());
        assert_eq!(s.hasten(1_000, 256, now, 200_000), vec![item(3)]);
    }

    #[test]
    fn put_back_memory_is_bounded() {
        let mut s = slot(Some(0.001), Some(Duration::ZERO), 0);
        for n in 0..MAX_LATER as u32 + 10 {
            s.put_back(item(n), i64::from(n), 0);
        }
        assert_eq!(s.later.len(), MAX_LATER);
        // The first due were forgotten.
        assert_eq!(s.later.front().unwrap().0, item(10));
    }
}
