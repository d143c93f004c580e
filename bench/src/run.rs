//! The phases of one run: receiver → Herald → tenant and endpoints (or tails) → publish →
//! wait for every expected arrival → optional floor → report → clean up.
//!
//! ## The backlog scenario
//! "The receiver is down" must not make Herald give up, must not make it retry in a loop
//! while the backlog builds, and must leave every delivery due *at the same moment* when the
//! receiver comes back, or the drain rate would only echo the publish rate. The receiver
//! therefore answers every first attempt `503 Service Unavailable` with
//! `Retry-After: <HTTP-date>` naming one whole second G (`--down-secs` after the start), as a
//! receiver in a maintenance window would. Herald honours `Retry-After` on 503 (as an
//! HTTP-date too), so each delivery fails once and its retry is scheduled for G exactly, no
//! jitter: the backlog sits in Herald's retry schedule (Redis sorted set, or the in-process
//! queue) and in the database. From G on the receiver answers 204 and the whole backlog is
//! due at once; the drain rate is deliveries / (last arrival − G).
//!
//! Limits: every delivery costs one failed attempt before it is queued (that is what a real
//! outage does too), so the build phase measures publish + a failed attempt, not publish
//! alone; and G is fixed up front: if publishing and the failed attempts are not done by G,
//! the rest are delivered directly, `queued_while_down` is smaller than `deliveries`, and a
//! warning says to raise `--down-secs`. The endpoint's own retry schedule has three 300 s
//! delays, so a delivery is never given up during the run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    Args,
    floor::{self},
    payload::{Marker, Payloads},
    procstat::{self, Sampler, ThreadCpu},
    publisher::{self, Load, Mode, Progress},
    receiver::Receiver,
    report::{
        BacklogReport, DeliveryReport, HangingReport, Params, PublishReport, RedisReport, Report,
        Resources, TailsReport, mb,
    },
    scenarios::{Plan, Scenario},
    stats::{Latency, rate, sample},
    tails::Tails,
    target::{InProcess, Target},
};

/// Fewest requests of a `--floor` measurement.
const FLOOR_MIN: u64 = 20_000;

/// Starts everything, measures, and always stops what it started.
pub async fn run(args: Args, herald_rt: Option<tokio::runtime::Handle>) -> anyhow::Result<Report> {
    let events = match args.scenario {
        Scenario::Backlog => args.backlog.unwrap_or(args.events),
        _ => args.events,
    };
    if events == 0 {
        anyhow::bail!("nothing to publish: -n must be at least 1");
    }
    let plan = Arc::new(Plan::new(args.scenario, events, args.endpoints));
    let marker = Marker::new(rand::random());
    let epoch = Instant::now();
    let receiver = Receiver::start(args.receiver_bind, &plan, marker.clone(), epoch).await?;
    let target = match (&args.addr, herald_rt) {
        (Some(addr), _) => Target::remote(
            addr,
            args.admin_key.clone().unwrap_or_default(),
            args.pid,
            args.redis_url.clone(),
        ),
        (None, Some(runtime)) => {
            Target::start(InProcess {
                runtime,
                database_url: args.database_url.clone(),
                redis_url: args.redis_url.clone(),
                config_file: args.herald_config.clone(),
            })
            .await?
        }
        (None, None) => anyhow::bail!("no runtime for the in-process Herald"),
    };
    let result = measure(&args, plan, marker, epoch, &target, &receiver).await;
    receiver.stop();
    if let Err(err) = target.shutdown().await {
        tracing::warn!(error = %err, "cleaning up after the run failed");
    }
    result
}

/// Counts that move, for the progress bars.
struct Bars {
    multi: MultiProgress,
    publish: ProgressBar,
    arrive: ProgressBar,
}

impl Bars {
    fn new(hidden: bool, events: u64, arrivals: u64, what: &str) -> Bars {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {human_pos}/{human_len} {rate:>9} {msg}",
        )
        .expect("a valid template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        let publish = multi.add(ProgressBar::new(events).with_style(style.clone()));
        publish.set_prefix("published");
        let arrive = multi.add(ProgressBar::new(arrivals).with_style(style));
        arrive.set_prefix(what.to_string());
        Bars {
            multi,
            publish,
            arrive,
        }
    }

    fn finish(&self) {
        self.publish.abandon();
        self.arrive.abandon();
        let _ = self.multi.clear();
    }
}

/// Waits until `count()` reaches `target`; gives up after `stall` without progress, or at
/// `deadline`. Returns whether it was reached.
async fn wait_for(
    count: impl Fn() -> u64,
    target: u64,
    stall: Duration,
    deadline: Option<Instant>,
) -> bool {
    let mut last = count();
    let mut moved = Instant::now();
    loop {
        let now_count = count();
        if now_count >= target {
            return true;
        }
        if now_count != last {
            last = now_count;
            moved = Instant::now();
        } else if moved.elapsed() > stall {
            return false;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first whole second at least `secs` from now, as a time and as micros on `epoch`.
fn gate(epoch: Instant, secs: u64) -> (SystemTime, u64) {
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(secs);
    let whole = Duration::from_secs(since.as_secs() + u64::from(since.subsec_nanos() > 0));
    let until = UNIX_EPOCH + whole;
    let ahead = until.duration_since(now).unwrap_or_default();
    (until, (epoch.elapsed() + ahead).as_micros() as u64)
}

async fn redis_conn(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

async fn measure(
    args: &Args,
    plan: Arc<Plan>,
    marker: Marker,
    epoch: Instant,
    target: &Target,
    receiver: &Receiver,
) -> anyhow::Result<Report> {
    let now = || epoch.elapsed().as_micros() as u64;
    let payloads = Arc::new(Payloads::new(marker.clone()));
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    // Setup.
    let tenant = target.create_tenant().await?;
    let endpoint_ids = target
        .create_endpoints(&tenant, &plan.endpoints, |i| {
            receiver.url(&plan.endpoints[i].path(i))
        })
        .await?;
    let sent_at: Arc<[AtomicU64]> = (0..plan.events).map(|_| AtomicU64::new(0)).collect();
    let tails = match plan.scenario {
        Scenario::Tails => Some(
            Tails::open(
                &target.uri,
                &tenant.subscriber,
                &tenant.id,
                args.tails,
                plan.events,
                marker.clone(),
                sent_at.clone(),
                epoch,
            )
            .await?,
        ),
        _ => None,
    };
    let mut redis = match &target.redis_url {
        Some(url) => Some(redis_conn(url).await?),
        None => None,
    };
    let redis_before = match redis.as_mut() {
        Some(conn) => procstat::redis_memory(conn).await,
        None => None,
    };
    // Whose /proc: this process in-process, `--pid` for a remote one, else nobody.
    let proc: Option<Option<u32>> = if target.in_process {
        Some(None)
    } else {
        target.pid.map(Some)
    };
    let sampler = Sampler::start(proc, redis.clone());
    let backlog_gate = (plan.scenario == Scenario::Backlog).then(|| {
        let down = args.down_secs.unwrap_or(5 + plan.events / 1000);
        let (until, at) = gate(epoch, down);
        receiver.close_until(until);
        (down, at)
    });

    let planned_arrivals = match plan.scenario {
        Scenario::Tails => plan.events * args.tails as u64,
        _ => plan.expected_deliveries(),
    };
    let arrivals_label = if tails.is_some() {
        "tail reads"
    } else {
        "delivered"
    };
    let bars = Bars::new(
        args.no_progress,
        plan.events,
        planned_arrivals,
        arrivals_label,
    );
    let progress = Arc::new(Progress::new());
    let arrived = {
        let shared = receiver.shared.clone();
        let counters = tails.as_ref().map(|t| t.counters.clone());
        move || match &counters {
            Some(c) => c.received.load(Relaxed),
            None => shared.delivered.load(Relaxed),
        }
    };
    let ticker = {
        let (bars_p, bars_a, progress, arrived) = (
            bars.publish.clone(),
            bars.arrive.clone(),
            progress.clone(),
            arrived.clone(),
        );
        tokio::spawn(async move {
            loop {
                bars_p
                    .set_position(progress.published.load(Relaxed) + progress.errors.load(Relaxed));
                bars_a.set_position(arrived());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Measure.
    let proc_before = proc.and_then(|p| procstat::sample(p).ok());
    let threads_before = target.in_process.then(ThreadCpu::read);
    let load = Load {
        mode: args.mode,
        callers: args.concurrency.max(1),
        batch: args.batch_size as usize,
        window: args.window.max(1),
        rate: args.rate,
    };
    let outcome = publisher::publish(
        &target.uri,
        &tenant.publisher,
        &tenant.id,
        plan.clone(),
        payloads.clone(),
        &load,
        sent_at.clone(),
        progress.clone(),
        epoch,
    )
    .await?;
    let published: u64 = outcome.ok.iter().filter(|ok| **ok).count() as u64;
    let publish_start = outcome.started_at;

    // Backlog: wait for every first attempt to fail, then for the gate to open.
    let mut backlog_state = None;
    if let Some((down, gate_at)) = backlog_gate {
        let gate_instant = epoch + Duration::from_micros(gate_at);
        bars.arrive
            .set_message("receiver down: building the backlog");
        let shared = receiver.shared.clone();
        let built = wait_for(
            || shared.rejected.load(Relaxed),
            published,
            Duration::from_secs(args.stall_secs),
            Some(gate_instant),
        )
        .await;
        let built_at = now();
        let queued = receiver.shared.rejected.load(Relaxed).min(published);
        if !built {
            warnings.push(format!(
                "only {queued} of {published} deliveries had failed once when the receiver came back after {down} s: raise --down-secs"
            ));
        }
        let rss = proc
            .and_then(|p| procstat::sample(p).ok())
            .map(|s| s.rss_bytes);
        let redis_used = match redis.as_mut() {
            Some(conn) => procstat::redis_memory(conn).await.map(|(u, _)| u),
            None => None,
        };
        bars.arrive
            .set_message("waiting for the receiver to come back");
        tokio::time::sleep_until(gate_instant.into()).await;
        bars.arrive.set_message("draining");
        backlog_state = Some((down, gate_at, built_at, queued, rss, redis_used));
    }

    // Wait for every expected arrival.
    let expected: u64 = match &tails {
        Some(_) => published * args.tails as u64,
        None => receiver
            .shared
            .endpoints
            .iter()
            .flatten()
            .map(|slots| {
                (0..plan.events)
                    .filter(|s| outcome.ok[*s as usize] && slots.expects(*s))
                    .count() as u64
            })
            .sum(),
    };
    bars.arrive.set_length(expected);
    let complete = wait_for(
        arrived.clone(),
        expected,
        Duration::from_secs(args.stall_secs),
        None,
    )
    .await;
    let end = now();
    let proc_after = proc.and_then(|p| procstat::sample(p).ok());
    let threads_after = target.in_process.then(ThreadCpu::read);
    if !complete {
        warnings.push(format!(
            "gave up after {} s without progress: {} of {expected} arrived",
            args.stall_secs,
            arrived()
        ));
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    ticker.abort();
    bars.publish
        .set_position(progress.published.load(Relaxed) + progress.errors.load(Relaxed));
    bars.arrive.set_position(arrived());
    bars.finish();
    let peaks = sampler.peaks();
    drop(sampler);

    // Publish figures.
    let mut latencies = outcome.latencies;
    let errors = progress.errors.load(Relaxed);
    let mismatched = progress.mismatched.load(Relaxed);
    let publish = PublishReport {
        published,
        errors,
        deliveries_mismatched: mismatched,
        calls: outcome.calls,
        seconds: outcome.seconds,
        events_per_sec: rate(published, outcome.seconds),
        latency: Latency::of(&mut latencies),
        first_error: progress.first_error(),
    };
    if errors > 0 {
        problems.push(format!(
            "{errors} publish errors (first: {})",
            publish.first_error.clone().unwrap_or_default()
        ));
    }
    if published + errors < plan.events {
        problems.push(format!(
            "{} events were never published",
            plan.events - published - errors
        ));
    }
    if mismatched > 0 {
        problems.push(format!(
            "{mismatched} publishes queued a different number of deliveries than the scenario's filters imply"
        ));
    }

    // Delivery figures.
    let mut delivery = None;
    if tails.is_none() {
        let shared = &receiver.shared;
        let mut latencies = Vec::with_capacity(expected as usize);
        let mut last_arrival = publish_start;
        let mut missing = Vec::new();
        let mut lost = 0u64;
        for (index, slots) in shared.endpoints.iter().enumerate() {
            let Some(slots) = slots else { continue };
            for seq in 0..plan.events {
                if !outcome.ok[seq as usize] || !slots.expects(seq) {
                    continue;
                }
                match slots.arrival(seq) {
                    Some(at) => {
                        last_arrival = last_arrival.max(at);
                        let sent = sent_at[seq as usize].load(Relaxed);
                        latencies.push(sample(at.saturating_sub(sent)));
                    }
                    None => {
                        lost += 1;
                        if missing.len() < 10 {
                            missing.push(format!("{}/{seq}", endpoint_ids[index]));
                        }
                    }
                }
            }
        }
        let delivered = expected - lost;
        let seconds = (last_arrival - publish_start) as f64 / 1e6;
        let unexpected = shared.unexpected.load(Relaxed);
        if lost > 0 {
            problems.push(format!("{lost} deliveries lost (never arrived)"));
        }
        if unexpected > 0 {
            problems.push(format!("{unexpected} unexpected requests at the receiver"));
        }
        delivery = Some(DeliveryReport {
            expected,
            delivered,
            lost,
            duplicates: shared.duplicates.load(Relaxed),
            unexpected,
            seconds,
            delivered_per_sec: rate(delivered, seconds),
            latency: if backlog_state.is_some() {
                Latency::default()
            } else {
                Latency::of(&mut latencies)
            },
            first_unexpected: shared
                .first_unexpected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            missing_sample: missing,
        });
    }

    let backlog = backlog_state.map(|(down, gate_at, built_at, queued, rss, redis_used)| {
        let d = delivery.as_ref();
        let delivered = d.map_or(0, |d| d.delivered);
        let last = publish_start + d.map_or(0, |d| (d.seconds * 1e6) as u64);
        let drain_seconds = last.saturating_sub(gate_at) as f64 / 1e6;
        BacklogReport {
            deliveries: expected,
            queued_while_down: queued,
            build_seconds: built_at.saturating_sub(publish_start) as f64 / 1e6,
            down_seconds: down as f64,
            drain_seconds,
            drain_per_sec: rate(delivered.min(queued), drain_seconds),
            rss_mb_at_full_backlog: rss.map_or(0.0, mb),
            redis_used_mb_at_full_backlog: redis_used.map(mb),
        }
    });

    let hanging = (plan.scenario == Scenario::Hanging).then(|| HangingReport {
        requests: receiver.shared.hanging.load(Relaxed),
    });

    let tails_report = match tails {
        Some(t) => {
            let counters = t.counters.clone();
            let mut results = t.close().await;
            let received = counters.received.load(Relaxed);
            let lost = expected.saturating_sub(received);
            let tail_errors = counters.errors.load(Relaxed);
            let unexpected = counters.unexpected.load(Relaxed);
            if lost > 0 {
                problems.push(format!("{lost} tail reads lost"));
            }
            if tail_errors > 0 {
                problems.push(format!("{tail_errors} tails ended with an error"));
            }
            if unexpected > 0 {
                problems.push(format!("{unexpected} unexpected events on tails"));
            }
            Some(TailsReport {
                tails: args.tails,
                expected,
                received,
                lost,
                duplicates: counters.duplicates.load(Relaxed),
                unexpected,
                errors: tail_errors,
                seconds: (end - publish_start) as f64 / 1e6,
                reads_per_sec: rate(received, (end - publish_start) as f64 / 1e6),
                latency: Latency::of(&mut results.latencies),
            })
        }
        None => None,
    };

    // The receiver alone, after Herald is done (so they do not compete).
    let floor = match (&delivery, args.floor) {
        (Some(d), true) => {
            // At least FLOOR_MIN requests: a tiny N would time a few milliseconds.
            let n = d.expected.max(plan.events).max(FLOOR_MIN);
            let mut f = floor::measure(
                receiver.url("/f"),
                plan.clone(),
                payloads.clone(),
                n,
                load.callers,
                Arc::new(AtomicU64::new(0)),
            )
            .await?;
            if f.errors > 0 {
                problems.push(format!("{} floor requests failed", f.errors));
            }
            f.herald_fraction = (f.per_sec > 0.0).then(|| d.delivered_per_sec / f.per_sec);
            Some(f)
        }
        (None, true) => {
            warnings.push("--floor measures webhooks; the tails scenario has none".into());
            None
        }
        _ => None,
    };

    // Resources.
    let resources = match (proc, proc_before, proc_after) {
        (Some(pid), Some(before), Some(after)) => Resources {
            scope: match pid {
                None => "this process: in-process Herald + receiver + load generator".into(),
                Some(pid) => format!("pid {pid}"),
            },
            cpu_seconds: Some(after.cpu_secs - before.cpu_secs),
            cpu_seconds_by_thread: threads_before.zip(threads_after).map(|(b, a)| a.since(&b)),
            peak_rss_mb: Some(mb(after.hwm_bytes)),
            max_rss_mb_sampled: Some(mb(peaks.rss_bytes.max(after.rss_bytes))),
            harness_data_mb: pid.is_none().then(|| {
                let n = plan.events;
                let measured = receiver.shared.endpoints.iter().flatten().count() as u64;
                let tails = match plan.scenario {
                    Scenario::Tails => args.tails as u64 * (n / 8 + 4 * n),
                    _ => 0,
                };
                mb(8 * n + 2 * n + 8 * n * measured + 4 * (outcome.calls + expected) + tails)
            }),
        },
        _ => Resources {
            scope: "unavailable: a remote Herald (pass --pid when it runs on this machine)".into(),
            cpu_seconds: None,
            cpu_seconds_by_thread: None,
            peak_rss_mb: None,
            max_rss_mb_sampled: None,
            harness_data_mb: None,
        },
    };
    let redis_report = match (redis.as_mut(), redis_before) {
        (Some(conn), Some((before, _))) => {
            let after = procstat::redis_memory(conn).await.unwrap_or_default();
            Some(RedisReport {
                used_mb_before: mb(before),
                used_mb_max_sampled: mb(peaks.redis_used_bytes.max(after.0)),
                used_mb_after: mb(after.0),
                used_peak_mb: mb(after.1),
            })
        }
        _ => None,
    };

    if target.keeps_data()
        && !args.keep
        && !endpoint_ids.is_empty()
        && let Err(err) = target.delete_endpoints(&tenant, &endpoint_ids).await
    {
        warnings.push(format!("could not delete the endpoints: {err:#}"));
    }

    let ok = problems.is_empty();
    Ok(Report {
        scenario: plan.scenario,
        backend: target.description.clone(),
        params: Params {
            events: plan.events,
            mode: args.mode,
            concurrency: load.callers,
            batch_size: (args.mode == Mode::Batch).then_some(load.batch),
            stream_window: (args.mode == Mode::Stream).then_some(load.window),
            rate: load.rate,
            endpoints: plan.endpoints.len(),
            tails: (plan.scenario == Scenario::Tails).then_some(args.tails),
            payload_bytes: payloads.payload(0).len(),
        },
        publish,
        delivery,
        hanging,
        tails: tails_report,
        backlog,
        floor,
        resources,
        redis: redis_report,
        problems,
        warnings,
        ok,
    })
}
