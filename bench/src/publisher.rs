//! The load generator: N events over C concurrent callers, each on its own HTTP/2
//! connection (like independent clients), in one of three modes:
//!
//! - `unary`: one `Publish` call per event; latency per call.
//! - `batch`: `PublishBatch` calls of B events; latency per call.
//! - `stream`: one `PublishStream` per caller with up to `window` items in flight;
//!   latency per item, from sending it to its answer.
//!
//! Callers take the next sequence numbers from one shared counter, so the work spreads
//! evenly however fast each caller is. Before an event is sent, its send time is stored in
//! `sent_at[seq]`, the reference for every publish → arrival latency.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::ValueEnum;
use herald::proto::{
    PublishBatchRequest, PublishRequest, PublishResponse, PublishStreamRequest,
    event_service_client::EventServiceClient, publish_stream_response,
};
use serde::Serialize;
use tokio::sync::Semaphore;
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::{
    payload::Payloads,
    scenarios::Plan,
    stats::sample,
    target::{authed, bearer, connect},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Unary,
    Batch,
    Stream,
}

/// How to publish.
#[derive(Clone, Debug)]
pub struct Load {
    pub mode: Mode,
    pub callers: usize,
    pub batch: usize,
    pub window: usize,
    /// Events per second over all callers; `None`: as fast as Herald answers.
    pub rate: Option<f64>,
}

/// Counters shared with the progress bar and the report.
pub struct Progress {
    pub published: AtomicU64,
    pub errors: AtomicU64,
    /// Published events whose `deliveries` differed from the plan's.
    pub mismatched: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            published: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn error(&self, count: u64, what: impl FnOnce() -> String) {
        if self.errors.fetch_add(count, Relaxed) == 0 {
            *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(what());
        }
    }
}

/// What the publishing phase measured.
pub struct Outcome {
    /// Per call (unary, batch) or per item (stream), in microseconds.
    pub latencies: Vec<u32>,
    pub calls: u64,
    /// When the first event was sent (µs since the epoch), connections being open.
    pub started_at: u64,
    pub seconds: f64,
    /// `ok[seq]`: the event was stored (errors are not waited for).
    pub ok: Vec<bool>,
}

/// Everything one caller needs.
struct Caller {
    client: EventServiceClient<Channel>,
    key: MetadataValue<tonic::metadata::Ascii>,
    tenant_id: String,
    plan: Arc<Plan>,
    payloads: Arc<Payloads>,
    next: Arc<AtomicU64>,
    sent_at: Arc<[AtomicU64]>,
    ok: Arc<[AtomicBool]>,
    progress: Arc<Progress>,
    epoch: Instant,
    /// With `--rate`: when the run started and the time between two events.
    pace: Option<(tokio::time::Instant, Duration)>,
}

impl Caller {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn request(&self, seq: u64) -> PublishRequest {
        PublishRequest {
            tenant_id: self.tenant_id.clone(),
            type_name: self.plan.event_type(seq).into(),
            payload_json: self.payloads.payload(seq),
            // The harness reads only `deliveries` from the answer: the echo of each
            // payload would cost Herald and the harness for nothing.
            omit_payload: true,
            ..Default::default()
        }
    }

    /// Takes up to `n` sequence numbers; with `--rate`, waits until the first is due
    /// (event `s` is due `s` intervals after the start: an open-loop schedule, so a slow
    /// answer is followed by a catch-up, not by a lower rate).
    async fn take(&self, n: u64) -> Option<std::ops::Range<u64>> {
        let start = self.next.fetch_add(n, Relaxed);
        if start >= self.plan.events {
            return None;
        }
        if let Some((t0, interval)) = self.pace {
            let due = t0 + interval.mul_f64(start as f64);
            tokio::time::sleep_until(due).await;
        }
        Some(start..(start + n).min(self.plan.events))
    }

    fn published(&self, seq: u64, response: &PublishResponse) {
        self.ok[seq as usize].store(true, Relaxed);
        if response.deliveries != self.plan.deliveries_for(seq) {
            self.progress.mismatched.fetch_add(1, Relaxed);
        }
        self.progress.published.fetch_add(1, Relaxed);
    }

    async fn unary(mut self) -> (Vec<u32>, u64) {
        let mut latencies = Vec::new();
        while let Some(range) = self.take(1).await {
            let seq = range.start;
            let request = authed(&self.key, self.request(seq));
            let t0 = self.now();
            self.sent_at[seq as usize].store(t0, Relaxed);
            let result = self.client.publish(request).await;
            latencies.push(sample(self.now() - t0));
            match result {
                Ok(r) => self.published(seq, r.get_ref()),
                Err(status) => self.progress.error(1, || format!("Publish: {status}")),
            }
        }
        let calls = latencies.len() as u64;
        (latencies, calls)
    }

    async fn batch(mut self, size: usize) -> (Vec<u32>, u64) {
        let mut latencies = Vec::new();
        while let Some(range) = self.take(size as u64).await {
            let events: Vec<_> = range.clone().map(|seq| self.request(seq)).collect();
            let request = authed(&self.key, PublishBatchRequest { events });
            let t0 = self.now();
            for seq in range.clone() {
                self.sent_at[seq as usize].store(t0, Relaxed);
            }
            let result = self.client.publish_batch(request).await;
            latencies.push(sample(self.now() - t0));
            match result {
                Ok(r) => {
                    let results = &r.get_ref().results;
                    for (seq, response) in range.clone().zip(results) {
                        self.published(seq, response);
                    }
                    let missing = (range.end - range.start).saturating_sub(results.len() as u64);
                    if missing > 0 {
                        self.progress
                            .error(missing, || "PublishBatch: fewer results than events".into());
                    }
                }
                Err(status) => self.progress.error(range.end - range.start, || {
                    format!("PublishBatch: {status}")
                }),
            }
        }
        let calls = latencies.len() as u64;
        (latencies, calls)
    }

    async fn stream(self, window: usize) -> (Vec<u32>, u64) {
        let (tx, rx) = tokio::sync::mpsc::channel::<PublishStreamRequest>(window);
        let room = Arc::new(Semaphore::new(window));
        let request = authed(&self.key, tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut client = self.client.clone();
        let mut responses = match client.publish_stream(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.progress
                    .error(1, || format!("PublishStream: {status}"));
                return (Vec::new(), 0);
            }
        };
        let this = Arc::new(self);
        let sender = {
            let (this, room) = (this.clone(), room.clone());
            tokio::spawn(async move {
                while let Some(range) = this.take(1).await {
                    let seq = range.start;
                    let Ok(permit) = room.acquire().await else {
                        break;
                    };
                    permit.forget();
                    let item = PublishStreamRequest {
                        request_id: seq.to_string(),
                        event: Some(this.request(seq)),
                    };
                    this.sent_at[seq as usize].store(this.now(), Relaxed);
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
                // Dropping `tx` ends the request stream; the server then ends its answers.
            })
        };
        let mut latencies = Vec::new();
        loop {
            match responses.message().await {
                Ok(Some(answer)) => {
                    room.add_permits(1);
                    let Ok(seq) = answer.request_id.parse::<u64>() else {
                        this.progress
                            .error(1, || "PublishStream: unknown request_id".into());
                        continue;
                    };
                    let sent = this.sent_at[seq as usize].load(Relaxed);
                    latencies.push(sample(this.now().saturating_sub(sent)));
                    match answer.result {
                        Some(publish_stream_response::Result::Published(r)) => {
                            this.published(seq, &r)
                        }
                        Some(publish_stream_response::Result::Error(e)) => this
                            .progress
                            .error(1, || format!("PublishStream item: {}", e.message)),
                        None => this
                            .progress
                            .error(1, || "PublishStream: empty answer".into()),
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    this.progress
                        .error(1, || format!("PublishStream: {status}"));
                    room.close();
                    break;
                }
            }
        }
        let _ = sender.await;
        (latencies, 1)
    }
}

/// Publishes every event of `plan` and returns when each has its answer.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    uri: &str,
    publisher_key: &str,
    tenant_id: &str,
    plan: Arc<Plan>,
    payloads: Arc<Payloads>,
    load: &Load,
    sent_at: Arc<[AtomicU64]>,
    progress: Arc<Progress>,
    epoch: Instant,
) -> anyhow::Result<Outcome> {
    let key = bearer(publisher_key)?;
    let next = Arc::new(AtomicU64::new(0));
    let ok: Arc<[AtomicBool]> = (0..plan.events).map(|_| AtomicBool::new(false)).collect();
    let mut clients = Vec::with_capacity(load.callers);
    for _ in 0..load.callers {
        let channel = connect(uri).await?;
        clients.push(
            EventServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        );
    }
    let started = Instant::now();
    let started_at = epoch.elapsed().as_micros() as u64;
    let pace = load.rate.map(|r| {
        (
            tokio::time::Instant::now(),
            Duration::from_secs_f64(1.0 / r),
        )
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let caller = Caller {
                client,
                key: key.clone(),
                tenant_id: tenant_id.to_string(),
                plan: plan.clone(),
                payloads: payloads.clone(),
                next: next.clone(),
                sent_at: sent_at.clone(),
                ok: ok.clone(),
                progress: progress.clone(),
                epoch,
                pace,
            };
            let load = load.clone();
            tokio::spawn(async move {
                match load.mode {
                    Mode::Unary => caller.unary().await,
                    Mode::Batch => caller.batch(load.batch).await,
                    Mode::Stream => caller.stream(load.window).await,
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut calls = 0;
    for task in tasks {
        let (l, c) = task.await.context("a publishing task panicked")?;
        latencies.extend(l);
        calls += c;
    }
    Ok(Outcome {
        latencies,
        calls,
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        ok: ok.iter().map(|v| v.load(Relaxed)).collect(),
    })
}
