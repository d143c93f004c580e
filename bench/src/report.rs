//! The result of a run: one serde struct, printed as one JSON object (`--json`) or as a
//! short human summary. Sections that do not apply to a scenario are `null` / omitted.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    floor::Floor, procstat::ThreadCpu, publisher::Mode, scenarios::Scenario, stats::Latency,
    target::Backend,
};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub backend: Backend,
    pub params: Params,
    pub publish: PublishReport,
    /// Webhook deliveries (all scenarios but `tails`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
    /// `hanging`: requests held by the hanging endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hanging: Option<HangingReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tails: Option<TailsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
    pub resources: Resources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisReport>,
    /// Why the run failed, empty when it passed.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// No event lost, no error, nothing unexpected.
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Params {
    pub events: u64,
    pub mode: Mode,
    pub concurrency: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_window: Option<usize>,
    /// `--rate`: events per second the publishers were paced at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub endpoints: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tails: Option<usize>,
    pub payload_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub published: u64,
    pub errors: u64,
    /// Events whose `PublishResponse.deliveries` differed from the expected count.
    pub deliveries_mismatched: u64,
    pub calls: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Per call (unary, batch) or per item (stream).
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Requests the receiver did not expect (wrong endpoint, unknown event...).
    pub unexpected: u64,
    /// From the first publish to the last arrival.
    pub seconds: f64,
    /// `delivered / seconds`: end to end, publishing included.
    pub delivered_per_sec: f64,
    /// Publish (request sent) → arrival at the receiver. Empty for `backlog`.
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unexpected: Option<String>,
    /// Up to 10 missing deliveries as `endpoint/event`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_sample: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HangingReport {
    /// Requests the hanging endpoint received (each held until Herald gave up on it).
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct TailsReport {
    pub tails: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub errors: u64,
    /// From the first publish until every tail had read every event (10 ms resolution).
    pub seconds: f64,
    /// Tail reads per second over `seconds`.
    pub reads_per_sec: f64,
    /// Publish (request sent) → event read by a tail, over every (tail, event).
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct BacklogReport {
    pub deliveries: u64,
    /// First attempts answered 503 while the receiver was down (= `deliveries` when the
    /// whole backlog was built before the receiver came back).
    pub queued_while_down: u64,
    /// Seconds from the first publish until every first attempt had failed.
    pub build_seconds: f64,
    /// Seconds the receiver stayed down (`--down-secs`).
    pub down_seconds: f64,
    /// From the receiver coming back (when every retry was due) to the last arrival.
    pub drain_seconds: f64,
    pub drain_per_sec: f64,
    /// RSS and Redis memory when the backlog was complete, before the drain.
    pub rss_mb_at_full_backlog: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_used_mb_at_full_backlog: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Resources {
    /// What the numbers cover: `this process (in-process Herald + harness)` or `pid N`,
    /// or `unavailable` for a remote Herald without `--pid`.
    pub scope: String,
    /// CPU seconds used between the first publish and the last arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// In-process only: the same, split by thread (approximate, see procstat.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_by_thread: Option<ThreadCpu>,
    /// `VmHWM`: the process's peak RSS since it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    /// Highest RSS sampled (every 250 ms) during the measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_mb_sampled: Option<f64>,
    /// In-process only: about how much of that RSS is the harness's own per-event
    /// bookkeeping (send times, arrival slots, latency samples), to subtract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness_data_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RedisReport {
    pub used_mb_before: f64,
    /// Highest `used_memory` sampled (every 250 ms) during the run.
    pub used_mb_max_sampled: f64,
    pub used_mb_after: f64,
    /// `used_memory_peak`: since Redis started, so other users count too.
    pub used_peak_mb: f64,
}

pub fn mb(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

fn lat(l: &Latency) -> String {
    if l.samples == 0 {
        return "-".into();
    }
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
    )
}

impl Report {
    /// A human summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(
            s,
            "herald-bench {:?}: {} events, {:?} x{}{}, {} endpoint(s); Herald {} ({} + {} queue)",
            self.scenario,
            p.events,
            p.mode,
            p.concurrency,
            p.batch_size
                .map(|b| format!(" (batch {b})"))
                .unwrap_or_default()
                + &p.rate
                    .map(|r| format!(" at {r} events/s"))
                    .unwrap_or_default(),
            p.endpoints,
            self.backend.herald,
            self.backend.database,
            self.backend.queue
        );
        let pb = &self.publish;
        let _ = writeln!(
            s,
            "publish   {} ok, {} errors in {:.2} s: {:.0} events/s; latency {}",
            pb.published,
            pb.errors,
            pb.seconds,
            pb.events_per_sec,
            lat(&pb.latency)
        );
        if let Some(d) = &self.delivery {
            let _ = writeln!(
                s,
                "deliver   {}/{} in {:.2} s: {:.0} delivered/s end to end; lost {}, duplicates {}, unexpected {}",
                d.delivered,
                d.expected,
                d.seconds,
                d.delivered_per_sec,
                d.lost,
                d.duplicates,
                d.unexpected
            );
            if d.latency.samples > 0 {
                let _ = writeln!(s, "          publish → arrival {}", lat(&d.latency));
            }
            if !d.missing_sample.is_empty() {
                let _ = writeln!(
                    s,
                    "          missing (endpoint/event): {}",
                    d.missing_sample.join(", ")
                );
            }
            if let Some(first) = &d.first_unexpected {
                let _ = writeln!(s, "          first unexpected: {first}");
            }
        }
        if let Some(h) = &self.hanging {
            let _ = writeln!(
                s,
                "hanging   {} requests held by the hanging endpoint (the 'deliver' line is the healthy one)",
                h.requests
            );
        }
        if let Some(t) = &self.tails {
            let _ = writeln!(
                s,
                "tails     {} tails: {}/{} events read in {:.2} s ({:.0}/s); lost {}, duplicates {}, errors {}; publish → tail {}",
                t.tails,
                t.received,
                t.expected,
                t.seconds,
                t.reads_per_sec,
                t.lost,
                t.duplicates,
                t.errors,
                lat(&t.latency)
            );
        }
        if let Some(b) = &self.backlog {
            let _ = writeln!(
                s,
                "backlog   {} queued while down (built in {:.1} s, down {:.0} s); drained in {:.2} s: {:.0}/s; RSS {:.1} MB{} at full backlog",
                b.queued_while_down,
                b.build_seconds,
                b.down_seconds,
                b.drain_seconds,
                b.drain_per_sec,
                b.rss_mb_at_full_backlog,
                b.redis_used_mb_at_full_backlog
                    .map(|r| format!(", Redis {r:.1} MB"))
                    .unwrap_or_default()
            );
        }
        if let Some(f) = &self.floor {
            let _ = writeln!(
                s,
                "floor     receiver alone: {:.0} POST/s ({} in {:.2} s){}",
                f.per_sec,
                f.requests,
                f.seconds,
                f.herald_fraction
                    .map(|x| format!("; Herald reaches {:.1}% of it", x * 100.0))
                    .unwrap_or_default()
            );
        }
        let r = &self.resources;
        let _ = writeln!(
            s,
            "resources [{}] CPU {}{}; peak RSS {}; max sampled RSS {}{}",
            r.scope,
            r.cpu_seconds
                .map(|c| format!("{c:.2} s"))
                .unwrap_or_else(|| "-".into()),
            r.cpu_seconds_by_thread
                .map(|t| format!(
                    " (Herald threads {:.2} s, harness {:.2} s, other {:.2} s)",
                    t.herald, t.harness, t.other
                ))
                .unwrap_or_default(),
            r.peak_rss_mb
                .map(|m| format!("{m:.1} MB"))
                .unwrap_or_else(|| "-".into()),
            r.max_rss_mb_sampled
                .map(|m| format!("{m:.1} MB"))
                .unwrap_or_else(|| "-".into()),
            r.harness_data_mb
                .map(|m| format!(" (of which ~{m:.1} MB harness data)"))
                .unwrap_or_default(),
        );
        if let Some(r) = &self.redis {
            let _ = writeln!(
                s,
                "redis     used {:.1} MB before, max {:.1} MB sampled, {:.1} MB after; used_memory_peak {:.1} MB",
                r.used_mb_before, r.used_mb_max_sampled, r.used_mb_after, r.used_peak_mb
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning   {w}");
        }
        if self.ok {
            let _ = writeln!(s, "OK");
        } else {
            for problem in &self.problems {
                let _ = writeln!(s, "FAILED    {problem}");
            }
        }
        s
    }
}
