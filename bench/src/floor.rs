//! `--floor`: how fast the built-in receiver takes webhooks when Herald is not involved.
//!
//! C tasks share one HTTP/1.1 client with keep-alive (so C pooled connections, as Herald's
//! sender pools its own) and POST as many Keygen-format bodies as Herald delivered (at
//! least 20,000, so that a tiny N still times something) of the same events to `/f`, where
//! the receiver does the same body search as for a real delivery. Herald's end-to-end
//! delivery rate divided by this rate is the fraction of the floor it reaches: on one
//! machine the receiver is the ceiling no webhook sender can pass. The client here is
//! lighter than Herald's sender (no signing, no database), so the floor is an upper bound.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{payload::Payloads, scenarios::Plan};

#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_sec: f64,
    /// Herald's delivered/s divided by `per_sec`.
    pub herald_fraction: Option<f64>,
}

/// POSTs `n` bodies to `url` from `concurrency` tasks; `done` counts successes as they go.
pub async fn measure(
    url: String,
    plan: Arc<Plan>,
    payloads: Arc<Payloads>,
    n: u64,
    concurrency: usize,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Floor> {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, plan, payloads) =
                (client.clone(), url.clone(), plan.clone(), payloads.clone());
            let (next, errors, done) = (next.clone(), errors.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= n {
                        break;
                    }
                    let seq = i % plan.events.max(1);
                    let body = payloads.keygen_body(seq, plan.event_type(seq), &url);
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/vnd.api+json")
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            done.fetch_add(1, Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ok = done.load(Relaxed);
    Ok(Floor {
        requests: ok,
        errors: errors.load(Relaxed),
        seconds,
        per_sec: crate::stats::rate(ok, seconds),
        herald_fraction: None,
    })
}
