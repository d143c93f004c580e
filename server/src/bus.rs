//! The live feed: committed events, in sequence order, to every tail of this process.
//!
//! A tokio broadcast channel: publishers never wait for tails, and a tail that falls
//! more than `tail_buffer` events behind is told it lagged and goes back to storage.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::sync::broadcast;

use crate::{convert, store::events::Committed};

/// One committed event as tails need it: the routing fields and the `herald.v1.Event`
/// message, encoded once however many tails receive it (see `wire.rs`).
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: i64,
    pub tenant_id: String,
    pub event_type: String,
    pub environment: String,
    pub encoded: Bytes,
}

pub struct Bus {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl Bus {
    pub fn new(capacity: usize) -> Bus {
        let (tx, _) = broadcast::channel(capacity);
        Bus { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Announces newly stored events (duplicates were stored before and are skipped).
    pub fn publish_committed(&self, committed: &[Committed]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for c in committed.iter().filter(|c| !c.duplicate) {
            let live = LiveEvent {
                seq: c.event.seq,
                tenant_id: c.event.tenant_id.clone(),
                event_type: c.event.event_type.clone(),
                environment: c.event.environment.clone(),
                encoded: convert::event(&c.event).encode_to_vec().into(),
            };
            // No receiver is not an error: nobody is tailing right now.
            let _ = self.tx.send(Arc::new(live));
        }
    }
}
