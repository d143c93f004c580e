//! The live feed: committed events, in sequence order, to every tail of this process.
//!
//! A tokio broadcast channel: publishers never wait for tails, and a tail that falls
//! more than `tail_buffer` events behind is told it lagged and goes back to storage.
//!
//! Who sends on it depends on the deployment. A single process (no Redis) sends its own
//! commits straight after each one: they are all the commits there are, and the writer
//! makes them in sequence order. Replicas sharing PostgreSQL and Redis hand their commits
//! to the relay (`relay.rs`) instead, which is then the only sender and interleaves them
//! with the other replicas' commits in sequence order.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::{
    relay::{Inlet, LocalCommit},
    store::{entities::event, events::Committed},
    wire,
};

/// One committed event as tails need it: the routing fields and the `herald.v1.Event`
/// message, encoded once however many tails receive it (see `wire`).
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: i64,
    pub tenant_id: String,
    pub event_type: String,
    pub environment: String,
    pub encoded: Bytes,
}

impl LiveEvent {
    pub fn of(event: &event::Model) -> LiveEvent {
        LiveEvent {
            seq: event.seq,
            tenant_id: event.tenant_id.clone(),
            event_type: event.event_type.clone(),
            environment: event.environment.clone(),
            encoded: wire::encode_event(event),
        }
    }
}

pub struct Bus {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Set when replicas share storage: local commits go to the relay, which alone
    /// sends on `tx`.
    relay: Option<Inlet>,
}

impl Bus {
    /// A bus fed directly by this process's writer.
    pub fn new(capacity: usize) -> Bus {
        let (tx, _) = broadcast::channel(capacity);
        Bus { tx, relay: None }
    }

    /// A bus fed by the relay; the writer's commits go through `relay`.
    pub(crate) fn relayed(capacity: usize, relay: Inlet) -> Bus {
        let (tx, _) = broadcast::channel(capacity);
        Bus {
            tx,
            relay: Some(relay),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Tails following the bus right now.
    pub(crate) fn receiver_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Sends one event; the caller keeps sequence order.
    pub(crate) fn send(&self, event: Arc<LiveEvent>) {
        // No receiver is not an error: nobody is tailing right now.
        let _ = self.tx.send(event);
    }

    /// Announces newly stored events (duplicates were stored before and are skipped).
    pub fn publish_committed(&self, committed: &[Committed]) {
        let fresh = committed.iter().filter(|c| !c.duplicate).map(|c| &c.event);
        let Some(relay) = &self.relay else {
            if self.tx.receiver_count() == 0 {
                return;
            }
            for event in fresh {
                self.send(Arc::new(LiveEvent::of(event)));
            }
            return;
        };
        let (mut first, mut last, mut count) = (None, 0, 0);
        for event in fresh.clone() {
            first.get_or_insert(event.seq);
            last = event.seq;
            count += 1;
        }
        let Some(first) = first else {
            return;
        };
        // The relay can send these without reading them back only if no other
        // replica's event can sit between them, and only tails need the messages.
        let consecutive = last - first + 1 == count;
        let events = if consecutive && self.tx.receiver_count() > 0 {
            fresh.map(|e| Arc::new(LiveEvent::of(e))).collect()
        } else {
            Vec::new()
        };
        relay.hand(LocalCommit {
            after: first - 1,
            last,
            events,
        });
    }
}
