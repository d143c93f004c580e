//! The group-commit writer: one task per process stores every publish.
//!
//! Concurrent publishes queue here and are committed together, one transaction for
//! whatever arrived while the previous one was committing, so a busy server pays one
//! commit (one fsync) per batch rather than per event. After each commit the new
//! events go to the live bus in sequence order, which is what lets tails switch from
//! storage to live without a gap.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{
    bus::Bus,
    error::{Error, Result},
    store::{
        Store,
        events::{Committed, NewEvent},
    },
};

/// Most events committed in one transaction.
const MAX_BATCH_EVENTS: usize = 2000;
/// Publishes that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

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
    /// Starts the writer; it stops once every `Writer` handle is dropped.
    pub fn spawn(store: Store, bus: Arc<Bus>, idempotency_window_micros: i64) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, bus, idempotency_window_micros, rx));
        Writer { tx }
    }

    /// Stores `events` atomically (with their deliveries) and returns what became of
    /// each, in order.
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<Vec<Committed>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { events, reply })
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?
    }
}

async fn run(store: Store, bus: Arc<Bus>, window: i64, mut rx: mpsc::Receiver<Job>) {
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
        commit_jobs(&store, &bus, window, jobs).await;
    }
}

async fn commit_jobs(store: &Store, bus: &Bus, window: i64, jobs: Vec<Job>) {
    let all: Vec<NewEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
    match store.commit_events(all, window).await {
        Ok(mut committed) => {
            bus.publish_committed(&committed);
            for job in jobs {
                let rest = committed.split_off(job.events.len());
                let mine = std::mem::replace(&mut committed, rest);
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(err) if jobs.len() == 1 => {
            let _ = jobs.into_iter().next().map(|j| j.reply.send(Err(err)));
        }
        // One job's failure (say, its tenant was just deleted) must not fail the
        // others that happened to share its transaction: retry each on its own.
        Err(_) => {
            for job in jobs {
                let result = store.commit_events(job.events, window).await;
                if let Ok(committed) = &result {
                    bus.publish_committed(committed);
                }
                let _ = job.reply.send(result);
            }
        }
    }
}
