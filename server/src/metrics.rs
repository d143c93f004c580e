//! Prometheus metrics: every metric's name, help, labels and label bounds, the helpers the
//! rest of the code calls (one line at each call site), the periodic queue sample, and the
//! `/metrics` HTTP listener (`metrics_addr`).
//!
//! Names start with `herald_` and carry their unit (`_seconds`, `_total`). Label values come
//! from closed sets (catalog event types, outcomes, error kinds), except endpoint ids,
//! which are bounded: the first [`MAX_ENDPOINT_LABELS`] endpoints that fail in a process get
//! a series of their own, later ones share `endpoint="other"`, so a tenant creating
//! endpoints cannot grow the scrape without limit.
//!
//! Recording goes through the `metrics` facade to one process-wide Prometheus recorder,
//! installed by the first [`install`]. Hot paths use cached handles (an atomic add, no
//! allocation, no lock); series appear once first used. Histograms are drained by the
//! sampler's upkeep every few seconds, so they cost fixed memory whether or not anyone
//! scrapes.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::catalog,
    delivery::{
        outcome::{AttemptResult, Decision},
        status,
    },
    error::Error,
    queue::Queue,
};

/// Events answered by Publish, PublishBatch and PublishStream; labels `type` (catalog
/// name, or `unknown`) and `outcome` (`stored`, `duplicate`, `rejected`, `error`).
pub const EVENTS_PUBLISHED: &str = "herald_events_published_total";
/// Deliveries that reached an end; label `outcome` (`delivered`, `failed`, `skipped`).
pub const DELIVERIES: &str = "herald_deliveries_total";
/// Webhook attempts; label `outcome` (`success`, `http_3xx`, `http_4xx`, `http_5xx`,
/// `http_other`, or the transport error kind: `timeout`, `connection_refused`, ...).
pub const ATTEMPTS: &str = "herald_delivery_attempts_total";
/// How long one attempt took, connection to last body byte.
pub const ATTEMPT_DURATION: &str = "herald_delivery_attempt_duration_seconds";
/// From the event's arrival (`received_at`) to the end of its successful attempt.
pub const DELIVERY_LATENCY: &str = "herald_delivery_latency_seconds";
/// Failed attempts by endpoint; label `endpoint` (an endpoint id, or `other`).
pub const ENDPOINT_FAILURES: &str = "herald_endpoint_failures_total";
/// Deliveries taken from the queue while their endpoint's line was full; label `to`:
/// `parked` (kept beside the line until it has room) or `queue` (put back for later).
/// A steady rate means endpoints that cannot keep up with what is published to them.
pub const DELIVERIES_DEFERRED: &str = "herald_deliveries_deferred_total";
/// Queue entries; label `state` (`ready`, `scheduled`, `leased`). Sampled.
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
/// How long the longest-waiting due queue entry has waited (0 when none). Sampled.
pub const QUEUE_OLDEST_DUE_AGE: &str = "herald_queue_oldest_due_age_seconds";
/// Open `Subscribe` tails.
pub const ACTIVE_TAILS: &str = "herald_active_tails";
/// Database errors; label `kind` (`connection`, `query`).
pub const DATABASE_ERRORS: &str = "herald_database_errors_total";
/// Redis errors; label `kind` (`connection`, `command`).
pub const REDIS_ERRORS: &str = "herald_redis_errors_total";

/// Endpoints with a failure series of their own, per process.
pub const MAX_ENDPOINT_LABELS: usize = 100;
/// How often queue sizes are sampled and histograms drained.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Attempt durations: a fast receiver answers in milliseconds, the timeout is at most 300 s.
const ATTEMPT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// End-to-end latencies: milliseconds when healthy, up to the three days of retries.
const LATENCY_BUCKETS: [f64; 18] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
    21600.0, 86400.0, 259200.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle). `None` if another recorder was installed first: metrics then go there.
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ATTEMPT_DURATION.into()), &ATTEMPT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_LATENCY.into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| b.install_recorder());
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events answered by the publish RPCs, by type and outcome"
    );
    describe_counter!(DELIVERIES, "Deliveries that reached an end, by outcome");
    describe_counter!(ATTEMPTS, "Webhook attempts, by outcome");
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of one webhook attempt"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Event received to successful webhook attempt"
    );
    describe_counter!(
        ENDPOINT_FAILURES,
        "Failed attempts by endpoint (the first 100 failing endpoints, then \"other\")"
    );
    describe_counter!(
        DELIVERIES_DEFERRED,
        "Deliveries taken from the queue while their endpoint's line was full, by where they went"
    );
    describe_gauge!(QUEUE_DEPTH, "Delivery queue entries by state");
    describe_gauge!(
        QUEUE_OLDEST_DUE_AGE,
        Unit::Seconds,
        "Wait of the longest-waiting due queue entry"
    );
    describe_gauge!(ACTIVE_TAILS, "Open Subscribe tails");
    describe_counter!(DATABASE_ERRORS, "Database errors by kind");
    describe_counter!(REDIS_ERRORS, "Redis errors by kind");
}

/// A series registered on first use, then an atomic add.
struct Lazy<T>(OnceLock<T>);

impl<T> Lazy<T> {
    const fn new() -> Self {
        Lazy(OnceLock::new())
    }

    fn get(&self, make: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(make)
    }
}

/// Outcome of one published event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Stored,
    Duplicate,
    /// The request was refused (invalid, not allowed, unknown tenant).
    Rejected,
    /// Herald could not store it (database down, shutting down).
    Error,
}

const PUBLISHED_OUTCOMES: [&str; 4] = ["stored", "duplicate", "rejected", "error"];

type PublishedCells = [Lazy<Counter>; 4];

fn published_cells() -> &'static HashMap<&'static str, PublishedCells> {
    static CELLS: OnceLock<HashMap<&'static str, PublishedCells>> = OnceLock::new();
    CELLS.get_or_init(|| {
        catalog()
            .all()
            .iter()
            .map(|t| (t.name.as_str(), Default::default()))
            .chain([(UNKNOWN_TYPE, Default::default())])
            .collect()
    })
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy::new()
    }
}

const UNKNOWN_TYPE: &str = "unknown";

/// The `type` label of a publish request: its catalog name, or `unknown`.
pub fn event_type_label(type_name: &str, type_value: i32) -> &'static str {
    let known = if type_name.is_empty() {
        catalog().by_value(type_value)
    } else {
        catalog().by_name(type_name)
    };
    known.map_or(UNKNOWN_TYPE, |t| t.name.as_str())
}

/// Counts one published event of `event_type` (a catalog name or a label from
/// [`event_type_label`]).
pub fn event_published(event_type: &str, outcome: Published) {
    let cells = published_cells();
    let (label, cells) = match cells.get_key_value(event_type) {
        Some((label, cells)) => (*label, cells),
        None => (UNKNOWN_TYPE, &cells[UNKNOWN_TYPE]),
    };
    let i = outcome as usize;
    cells[i]
        .get(|| {
            metrics::counter!(EVENTS_PUBLISHED, "type" => label, "outcome" => PUBLISHED_OUTCOMES[i])
        })
        .increment(1);
}

/// Counts an event whose publish failed with `err`: rejected, or an error of Herald's.
pub fn event_refused(event_type: &str, err: &Error) {
    let outcome = match err {
        Error::Database(_) | Error::Internal(_) | Error::Unavailable(_) => Published::Error,
        _ => Published::Rejected,
    };
    event_published(event_type, outcome);
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryEnd {
    Delivered,
    Failed,
    /// Ended without an attempt (its endpoint was disabled or deleted).
    Skipped,
}

/// Counts a delivery that reached its end.
pub fn delivery_ended(end: DeliveryEnd) {
    static CELLS: [Lazy<Counter>; 3] = [Lazy::new(), Lazy::new(), Lazy::new()];
    const OUTCOMES: [&str; 3] = ["delivered", "failed", "skipped"];
    let i = end as usize;
    CELLS[i]
        .get(|| metrics::counter!(DELIVERIES, "outcome" => OUTCOMES[i]))
        .increment(1);
}

/// Where deliveries that found their endpoint's line full went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// Kept in memory beside the line, unclaimed, until the line has room.
    Parked,
    /// Put back in the queue until the endpoint has likely caught up.
    Queue,
}

/// Counts `n` deliveries deferred because their endpoint's line was full.
pub fn deliveries_deferred(to: Deferred, n: usize) {
    static CELLS: [Lazy<Counter>; 2] = [Lazy::new(), Lazy::new()];
    const TO: [&str; 2] = ["parked", "queue"];
    let i = to as usize;
    CELLS[i]
        .get(|| metrics::counter!(DELIVERIES_DEFERRED, "to" => TO[i]))
        .increment(n as u64);
}

/// The `outcome` label values of attempts: success, the status class of a failure, or
/// the transport error kind (`egress::client::ErrorKind`, plus `invalid_request` for a
/// request that could not be built); an unlisted kind is `other`.
const ATTEMPT_OUTCOMES: [&str; 14] = [
    "success",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "http_other",
    "timeout",
    "connection_refused",
    "dns",
    "tls",
    "blocked_address",
    "invalid_url",
    "connection",
    "invalid_request",
    "other",
];

/// An attempt's outcome, an index into [`ATTEMPT_OUTCOMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptOutcome(usize);

impl AttemptOutcome {
    /// Classifies an attempt's result.
    pub fn of(succeeded: bool, status_code: Option<u16>, error_kind: Option<&str>) -> Self {
        let label = if succeeded {
            "success"
        } else if let Some(kind) = error_kind {
            kind
        } else {
            match status_code {
                Some(300..=399) => "http_3xx",
                Some(400..=499) => "http_4xx",
                Some(500..=599) => "http_5xx",
                _ => "http_other",
            }
        };
        let other = ATTEMPT_OUTCOMES.len() - 1;
        AttemptOutcome(
            ATTEMPT_OUTCOMES
                .iter()
                .position(|o| *o == label)
                .unwrap_or(other),
        )
    }

    pub fn label(self) -> &'static str {
        ATTEMPT_OUTCOMES[self.0]
    }
}

/// Counts one finished attempt: its outcome, its duration, and a failure of its endpoint.
pub fn attempt_finished(outcome: AttemptOutcome, duration: Duration, endpoint_id: &str) {
    static COUNTERS: [Lazy<Counter>; ATTEMPT_OUTCOMES.len()] =
        [const { Lazy::new() }; ATTEMPT_OUTCOMES.len()];
    static DURATION: Lazy<Histogram> = Lazy::new();
    COUNTERS[outcome.0]
        .get(|| metrics::counter!(ATTEMPTS, "outcome" => outcome.label()))
        .increment(1);
    DURATION
        .get(|| metrics::histogram!(ATTEMPT_DURATION))
        .record(duration.as_secs_f64());
    if outcome.0 != 0 {
        endpoint_failed(endpoint_id);
    }
}

/// Counts what an attempt came to, once its outcome is decided: the attempt (outcome,
/// duration, endpoint failure), and the delivery if it ended, with its end-to-end latency
/// from `received_at` (the event's arrival, Unix microseconds) when it was delivered.
pub fn attempt_decided(
    result: &AttemptResult,
    decision: &Decision,
    duration: Duration,
    endpoint_id: &str,
    received_at: Option<i64>,
) {
    let outcome = AttemptOutcome::of(
        result.succeeded(),
        result.status_code,
        result.error_kind.as_deref(),
    );
    attempt_finished(outcome, duration, endpoint_id);
    match decision.status {
        status::DELIVERED => {
            delivery_ended(DeliveryEnd::Delivered);
            if let Some(received_at) = received_at {
                let micros = crate::time::now_micros().saturating_sub(received_at).max(0);
                delivered_after(Duration::from_micros(micros as u64));
            }
        }
        status::FAILED => delivery_ended(DeliveryEnd::Failed),
        _ => {}
    }
}

/// Records the end-to-end latency of a delivered event.
pub fn delivered_after(latency: Duration) {
    static LATENCY: Lazy<Histogram> = Lazy::new();
    LATENCY
        .get(|| metrics::histogram!(DELIVERY_LATENCY))
        .record(latency.as_secs_f64());
}

fn endpoint_failed(endpoint_id: &str) {
    static SERIES: OnceLock<Mutex<HashMap<String, Counter>>> = OnceLock::new();
    static OTHER: Lazy<Counter> = Lazy::new();
    let counter = {
        let mut series = SERIES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match series.get(endpoint_id) {
            Some(counter) => Some(counter.clone()),
            None if series.len() < MAX_ENDPOINT_LABELS => {
                let counter =
                    metrics::counter!(ENDPOINT_FAILURES, "endpoint" => endpoint_id.to_string());
                series.insert(endpoint_id.to_string(), counter.clone());
                Some(counter)
            }
            None => None,
        }
    };
    counter
        .unwrap_or_else(|| {
            OTHER
                .get(|| metrics::counter!(ENDPOINT_FAILURES, "endpoint" => "other"))
                .clone()
        })
        .increment(1);
}

/// Counts a database error; `connection` when the database could not be reached.
pub fn database_error(connection: bool) {
    static CELLS: [Lazy<Counter>; 2] = [Lazy::new(), Lazy::new()];
    let (i, kind) = if connection {
        (0, "connection")
    } else {
        (1, "query")
    };
    CELLS[i]
        .get(|| metrics::counter!(DATABASE_ERRORS, "kind" => kind))
        .increment(1);
}

/// Counts a Redis error; `connection` when Redis could not be reached.
pub fn redis_error(connection: bool) {
    static CELLS: [Lazy<Counter>; 2] = [Lazy::new(), Lazy::new()];
    let (i, kind) = if connection {
        (0, "connection")
    } else {
        (1, "command")
    };
    CELLS[i]
        .get(|| metrics::counter!(REDIS_ERRORS, "kind" => kind))
        .increment(1);
}

fn active_tails() -> &'static Gauge {
    static GAUGE: Lazy<Gauge> = Lazy::new();
    GAUGE.get(|| metrics::gauge!(ACTIVE_TAILS))
}

/// Counts an open tail for as long as it lives.
pub struct ActiveTail(());

impl ActiveTail {
    #[allow(clippy::new_without_default)]
    pub fn new() -> ActiveTail {
        active_tails().increment(1.0);
        ActiveTail(())
    }
}

impl Drop for ActiveTail {
    fn drop(&mut self) {
        active_tails().decrement(1.0);
    }
}

/// Every [`SAMPLE_EVERY`] until `shutdown`: samples the queue's sizes and oldest due
/// entry, and drains histograms into their buckets.
pub async fn sample(queue: Arc<dyn Queue>, shutdown: CancellationToken) {
    let depth = [
        metrics::gauge!(QUEUE_DEPTH, "state" => "ready"),
        metrics::gauge!(QUEUE_DEPTH, "state" => "scheduled"),
        metrics::gauge!(QUEUE_DEPTH, "state" => "leased"),
    ];
    let oldest = metrics::gauge!(QUEUE_OLDEST_DUE_AGE);
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Some(handle) = RECORDER.get().and_then(Option::as_ref) {
            handle.run_upkeep();
        }
        // Errors are counted where they happen (Redis) and health reports them; the
        // gauges keep their last values meanwhile.
        if let Ok(d) = queue.depth().await {
            depth[0].set(d.ready as f64);
            depth[1].set(d.scheduled as f64);
            depth[2].set(d.leased as f64);
        }
        let now = crate::time::now_micros();
        if let Ok(since) = queue.oldest_due(now).await {
            let age = since.map_or(0, |since| now.saturating_sub(since).max(0));
            oldest.set(age as f64 / 1e6);
        }
    }
}

/// Binds the metrics listener (before the server reports itself started, so a taken
/// port fails start-up).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics_addr): {e}"))
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_outcomes_are_a_closed_set() {
        let label = |ok, status, kind| AttemptOutcome::of(ok, status, kind).label();
        assert_eq!(label(true, Some(204), None), "success");
        assert_eq!(label(false, Some(410), None), "http_4xx");
        assert_eq!(label(false, Some(503), None), "http_5xx");
        assert_eq!(label(false, Some(302), None), "http_3xx");
        assert_eq!(label(false, None, None), "http_other");
        assert_eq!(label(false, None, Some("timeout")), "timeout");
        assert_eq!(
            label(false, None, Some("invalid_request")),
            "invalid_request"
        );
        assert_eq!(label(false, None, Some("new-kind")), "other");
    }

    #[test]
    fn every_transport_error_kind_has_its_label() {
        use crate::egress::client::ErrorKind::{self, *};
        // A new kind fails to compile here until it is listed in ATTEMPT_OUTCOMES.
        fn listed(kind: ErrorKind) {
            match kind {
                Timeout | ConnectionRefused | Dns | Tls | BlockedAddress | InvalidUrl
                | Connection | Other => {}
            }
        }
        let kinds = [
            Timeout,
            ConnectionRefused,
            Dns,
            Tls,
            BlockedAddress,
            InvalidUrl,
            Connection,
            Other,
        ];
        for kind in kinds {
            listed(kind);
            let outcome = AttemptOutcome::of(false, None, Some(kind.as_str()));
            assert_eq!(outcome.label(), kind.as_str());
        }
    }

    #[test]
    fn type_labels_are_catalog_names() {
        assert_eq!(event_type_label("license.created", 0), "license.created");
        assert_eq!(event_type_label("license.nope", 0), "unknown");
        let first = &catalog().all()[0];
        assert_eq!(event_type_label("", first.r#type), first.name);
        assert_eq!(event_type_label("", 0), "unknown");
    }
}
