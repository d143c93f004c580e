//! Scenario (e): K live `Subscribe` tails, each expecting every published event.
//!
//! Tails share HTTP/2 connections, 100 per connection (servers commonly cap concurrent
//! streams per connection at 100–200). Herald fixes a live tail's start position before
//! `Subscribe` answers, so once every call has its response headers, no event published
//! afterwards can be missed; publishing starts only then. Each tail keeps its own
//! latencies (arrival − `sent_at[seq]`) and a bitmap for duplicates, so nothing is shared
//! on the hot path but two counters.
//!
//! The tails decode only what they read (`payload_json`, for the marker): with 1,000 tails
//! the harness decodes a thousand messages per event, and decoding the `Struct` form of
//! every payload would make the harness, not Herald, what the scenario measures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use anyhow::Context;
use herald::proto::{SubscribeRequest, subscribe_request};
use tokio_util::sync::CancellationToken;
use tonic::{client::Grpc, transport::Channel};

use crate::{
    payload::Marker,
    stats::sample,
    target::{authed, bearer, connect},
};

const TAILS_PER_CONNECTION: usize = 100;

/// `herald.v1.SubscribeResponse` as far as the tails read it; other fields are skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct LightResponse {
    #[prost(message, optional, tag = "1")]
    event: Option<LightEvent>,
}

/// `herald.v1.Event`'s `payload_json` (field 9); the `Struct` payload is skipped unread.
#[derive(Clone, PartialEq, prost::Message)]
struct LightEvent {
    #[prost(string, tag = "9")]
    payload_json: String,
}

/// `EventService.Subscribe`, answered as [`LightResponse`]s.
async fn subscribe(
    channel: Channel,
    request: tonic::Request<SubscribeRequest>,
) -> Result<tonic::Streaming<LightResponse>, tonic::Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/herald.v1.EventService/Subscribe");
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, LightResponse>::default();
    Ok(grpc
        .server_streaming(request, path, codec)
        .await?
        .into_inner())
}

/// Shared counters, for the progress bar and the report.
#[derive(Default)]
pub struct Counters {
    /// First arrivals, over all tails.
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub unexpected: AtomicU64,
    pub errors: AtomicU64,
}

/// What the tails saw, once they stopped.
pub struct TailResults {
    pub latencies: Vec<u32>,
}

/// Running tails.
pub struct Tails {
    pub counters: Arc<Counters>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>,
}

impl Tails {
    /// Opens `k` live tails on the tenant and returns once all of them are subscribed.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        uri: &str,
        subscriber_key: &str,
        tenant_id: &str,
        k: usize,
        events: u64,
        marker: Marker,
        sent_at: Arc<[AtomicU64]>,
        epoch: Instant,
    ) -> anyhow::Result<Tails> {
        let key = bearer(subscriber_key)?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let mut clients = Vec::new();
        for _ in 0..k.div_ceil(TAILS_PER_CONNECTION) {
            clients.push(connect(uri).await?);
        }
        // Subscribe every tail first (in parallel), then start reading.
        let subscribing: Vec<_> = (0..k)
            .map(|i| {
                let channel = clients[i / TAILS_PER_CONNECTION].clone();
                let request = authed(
                    &key,
                    SubscribeRequest {
                        tenant_id: tenant_id.to_string(),
                        start: Some(subscribe_request::Start::Live(true)),
                        ..Default::default()
                    },
                );
                tokio::spawn(subscribe(channel, request))
            })
            .collect();
        let mut tasks = Vec::with_capacity(k);
        for call in subscribing {
            let stream = call.await?.context("Subscribe")?;
            let (counters, stop, marker, sent_at) = (
                counters.clone(),
                stop.clone(),
                marker.clone(),
                sent_at.clone(),
            );
            tasks.push(tokio::spawn(async move {
                follow(stream, events, marker, sent_at, epoch, counters, stop).await
            }));
        }
        Ok(Tails {
            counters,
            stop,
            tasks,
        })
    }

    /// Stops every tail still waiting for events (those that got everything have ended
    /// by themselves) and gathers their latencies.
    pub async fn close(self) -> TailResults {
        self.stop.cancel();
        let mut latencies = Vec::new();
        for task in self.tasks {
            if let Ok(l) = task.await {
                latencies.extend(l);
            }
        }
        TailResults { latencies }
    }
}

async fn follow(
    mut stream: tonic::Streaming<LightResponse>,
    events: u64,
    marker: Marker,
    sent_at: Arc<[AtomicU64]>,
    epoch: Instant,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Vec<u32> {
    let mut seen = vec![0u64; (events as usize).div_ceil(64)];
    let mut latencies = Vec::with_capacity(events as usize);
    let mut got = 0u64;
    while got < events {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            m = stream.message() => m,
        };
        let event = match message {
            Ok(Some(m)) => match m.event {
                Some(e) => e,
                None => continue, // heartbeat
            },
            Ok(None) => break,
            Err(_) => {
                counters.errors.fetch_add(1, Relaxed);
                break;
            }
        };
        let now = epoch.elapsed().as_micros() as u64;
        let Some(seq) = marker
            .find(event.payload_json.as_bytes())
            .filter(|s| *s < events)
        else {
            counters.unexpected.fetch_add(1, Relaxed);
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if seen[word] & bit != 0 {
            counters.duplicates.fetch_add(1, Relaxed);
            continue;
        }
        seen[word] |= bit;
        got += 1;
        counters.received.fetch_add(1, Relaxed);
        let sent = sent_at[seq as usize].load(Relaxed);
        latencies.push(sample(now.saturating_sub(sent)));
    }
    latencies
}
