//! `Subscribe` tails: catch up from storage, then follow the live bus.
//!
//! The bus receiver is taken before the first storage read, so an event committed
//! during catch-up is either in a storage page or on the bus (or both: the bus copy is
//! skipped by sequence number). A tail that lags behind the bus, because its client
//! reads slowly, goes back to storage from its last position; publishers never wait
//! for it and it never skips an event. This needs only that the bus carries committed
//! events in sequence order, which holds too when the relay feeds it with every
//! replica's commits (`relay.rs`).

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio::sync::{
    broadcast::{Receiver, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    bus::{Bus, LiveEvent},
    convert,
    error::{Error, Result},
    filter::Filter,
    proto::{self, SubscribeResponse, subscribe_response::Kind},
    store::{Store, events::EventQuery},
    time,
};

/// Events read from storage per query while catching up.
const CATCH_UP_PAGE: u64 = 500;
/// Messages buffered per tail towards its client.
const CLIENT_BUFFER: usize = 64;

/// Where a tail starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Live,
    Earliest,
    AfterSeq(i64),
    SinceMicros(i64),
}

pub fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("c1:{seq}"))
}

pub fn decode_cursor(field: &str, cursor: &str) -> Result<i64> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("c1:").and_then(|n| n.parse::<i64>().ok()))
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::invalid(field, "is not a cursor returned by this server"))
}

/// Everything a tail needs; built by the handler after validation.
pub struct Tail {
    pub store: Store,
    pub bus: Arc<Bus>,
    pub query: EventQuery,
    pub filter: Filter,
    pub start: Start,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    /// The key that opened the tail: a revoked key (or a deleted tenant) ends it.
    pub key_id: String,
}

/// How often (at most) an open tail checks that its key is still valid; more often when
/// heartbeats are more frequent.
const RECHECK_KEY_EVERY: Duration = Duration::from_secs(10);

type Sink = mpsc::Sender<Result<SubscribeResponse, Status>>;

impl Tail {
    /// Starts the tail; the stream ends when the client goes away or the server stops.
    /// The bus subscription and the start position are fixed before this returns (so
    /// before Subscribe answers): a live tail gets every event stored after that.
    pub async fn spawn(self) -> Result<ReceiverStream<Result<SubscribeResponse, Status>>> {
        // Subscribe before reading anything; see the module doc.
        let live = self.bus.subscribe();
        let last = match self.start {
            Start::Live => self.store.head_seq().await?,
            Start::Earliest => 0,
            Start::AfterSeq(seq) => seq,
            Start::SinceMicros(t) => self.store.seq_before_time(&self.query.tenant_id, t).await?,
        };
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        tokio::spawn(async move {
            let err_tx = tx.clone();
            if let Err(err) = self.run(tx, live, last).await {
                let _ = err_tx.send(Err(err.into())).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    async fn run(self, tx: Sink, mut live: Receiver<Arc<LiveEvent>>, mut last: i64) -> Result<()> {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.reset();
        let mut recheck = tokio::time::interval(self.heartbeat.min(RECHECK_KEY_EVERY));
        recheck.reset();
        'catch_up: loop {
            loop {
                let page = self
                    .store
                    .events_after(&self.query, last, CATCH_UP_PAGE)
                    .await?;
                let full = page.len() as u64 == CATCH_UP_PAGE;
                for event in &page {
                    last = event.seq;
                    if !send(&tx, &self.shutdown, event_message(event)).await {
                        return Ok(());
                    }
                }
                if !page.is_empty() {
                    heartbeat.reset();
                }
                if !full {
                    break;
                }
            }
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tx.closed() => return Ok(()),
                    _ = recheck.tick() => {
                        if !self.store.key_still_valid(&self.key_id, &self.query.tenant_id).await? {
                            return Err(Error::Unauthenticated(
                                "the API key was revoked or its tenant deleted".into(),
                            ));
                        }
                    }
                    _ = heartbeat.tick() => {
                        let beat = Kind::Heartbeat(proto::Heartbeat {
                            time: Some(time::to_timestamp(time::now_micros())),
                        });
                        if !send(&tx, &self.shutdown, SubscribeResponse::new(beat)).await {
                            return Ok(());
                        }
                    }
                    received = live.recv() => match received {
                        Ok(event) => {
                            if event.seq <= last {
                                continue;
                            }
                            // Bus order is sequence order: everything of this tenant up to
                            // here has been seen, matching or not.
                            last = event.seq;
                            if !self.wants(&event) {
                                continue;
                            }
                            let message = SubscribeResponse::encoded_event(event.encoded.clone());
                            if !send(&tx, &self.shutdown, message).await {
                                return Ok(());
                            }
                            heartbeat.reset();
                        }
                        Err(RecvError::Lagged(_)) => continue 'catch_up,
                        Err(RecvError::Closed) => return Ok(()),
                    },
                }
            }
        }
    }

    fn wants(&self, event: &LiveEvent) -> bool {
        event.tenant_id == self.query.tenant_id
            && self
                .query
                .environment
                .as_ref()
                .is_none_or(|env| *env == event.environment)
            && self.filter.matches(&event.event_type)
    }
}

fn event_message(event: &crate::store::entities::event::Model) -> SubscribeResponse {
    SubscribeResponse::new(Kind::Event(convert::event(event)))
}

/// Sends one message; false when the tail should end (client gone or shutdown).
async fn send(tx: &Sink, shutdown: &CancellationToken, message: SubscribeResponse) -> bool {
    tokio::select! {
        sent = tx.send(Ok(message)) => sent.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor("c", &encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("c", "nope").is_err());
        assert!(decode_cursor("c", &URL_SAFE_NO_PAD.encode("c1:-3")).is_err());
    }
}
