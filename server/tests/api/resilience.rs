//! Resilience of webhook delivery: the SSRF guard at delivery time, isolation of a hanging
//! endpoint, a server stopped mid-delivery, Redis losing its data or refusing an enqueue,
//! auto-disable after sustained failure, disabled endpoints, and graceful shutdown.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use herald::config::Config;
use herald::proto::{
    Attempt, CreateEndpointRequest, Delivery, DeliveryStatus, Endpoint, GetDeliveryRequest,
    GetEndpointRequest, ListAttemptsRequest, ListDeliveriesRequest, PublishBatchRequest,
    PublishResponse, UpdateEndpointRequest, delivery_service_client::DeliveryServiceClient,
    endpoint_service_client::EndpointServiceClient, event_service_client::EventServiceClient,
};
use tokio::{io::AsyncReadExt, net::TcpListener};
use tonic::transport::Channel;

use crate::{
    both_backends,
    helpers::{
        Backend, TenantKeys, TestApp, authed, eventually, publish_request, redis_url,
        spawn_app_with,
    },
    observability::{scrape, value},
    receiver::{Received, Receiver, Reply},
};

const EVENT: &str = "license.created";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The gRPC clients of one running app, for one tenant's manager/publisher keys.
struct Api {
    events: EventServiceClient<Channel>,
    endpoints: EndpointServiceClient<Channel>,
    deliveries: DeliveryServiceClient<Channel>,
    keys: TenantKeys,
}

impl Api {
    async fn new(app: &TestApp, keys: TenantKeys) -> Api {
        Api::on(app.channel().await, keys)
    }

    fn on(channel: Channel, keys: TenantKeys) -> Api {
        Api {
            events: EventServiceClient::new(channel.clone()),
            endpoints: EndpointServiceClient::new(channel.clone()),
            deliveries: DeliveryServiceClient::new(channel),
            keys,
        }
    }

    /// Creates an enabled endpoint receiving every event; returns its id.
    async fn create_endpoint(&self, url: &str) -> String {
        self.create_endpoint_with(CreateEndpointRequest {
            url: url.into(),
            ..Default::default()
        })
        .await
    }

    async fn create_endpoint_with(&self, request: CreateEndpointRequest) -> String {
        let url = request.url.clone();
        self.endpoints
            .clone()
            .create_endpoint(authed(&self.keys.manager, request))
            .await
            .unwrap_or_else(|e| panic!("create endpoint {url}: {e}"))
            .into_inner()
            .endpoint
            .expect("created endpoint")
            .id
    }

    async fn endpoint(&self, id: &str) -> Endpoint {
        self.endpoints
            .clone()
            .get_endpoint(authed(
                &self.keys.manager,
                GetEndpointRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("get endpoint")
            .into_inner()
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Endpoint {
        self.endpoints
            .clone()
            .update_endpoint(authed(
                &self.keys.manager,
                UpdateEndpointRequest {
                    id: id.into(),
                    enabled: Some(enabled),
                    ..Default::default()
                },
            ))
            .await
            .expect("update endpoint")
            .into_inner()
    }

    /// Publishes a `license.created` whose resource id is `resource_id`.
    async fn publish(&self, resource_id: &str) -> PublishResponse {
        self.events
            .clone()
            .publish(authed(
                &self.keys.publisher,
                publish_request(EVENT, resource_id),
            ))
            .await
            .expect("publish")
            .into_inner()
    }

    /// Waits until `n` deliveries to `endpoint_id` are DELIVERED.
    async fn wait_delivered(&self, endpoint_id: &str, n: usize, timeout: Duration) {
        eventually("every delivery DELIVERED", timeout, || async {
            let delivered = self
                .deliveries(endpoint_id, DeliveryStatus::Delivered)
                .await
                .len();
            if delivered == n {
                Ok(())
            } else {
                Err(format!("{delivered} of {n}"))
            }
        })
        .await;
    }

    /// Every delivery to `endpoint_id` (all pages), optionally in one status.
    async fn deliveries(&self, endpoint_id: &str, status: DeliveryStatus) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .deliveries
                .clone()
                .list_deliveries(authed(
                    &self.keys.manager,
                    ListDeliveriesRequest {
                        endpoint_id: endpoint_id.into(),
                        status: status as i32,
                        page_size: 1000,
                        page_token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list deliveries")
                .into_inner();
            out.extend(page.deliveries);
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }

    async fn delivery(&self, id: &str) -> Delivery {
        self.deliveries
            .clone()
            .get_delivery(authed(
                &self.keys.manager,
                GetDeliveryRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("get delivery")
            .into_inner()
    }

    async fn attempts(&self, delivery_id: &str) -> Vec<Attempt> {
        self.deliveries
            .clone()
            .list_attempts(authed(
                &self.keys.manager,
                ListAttemptsRequest {
                    delivery_id: delivery_id.into(),
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await
            .expect("list attempts")
            .into_inner()
            .attempts
    }

    /// Waits until every delivery to `endpoint_id` is finished (DELIVERED or FAILED) and
    /// there are `count` of them.
    async fn wait_finished(
        &self,
        endpoint_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Delivery> {
        eventually("deliveries finished", timeout, || async move {
            let all = self
                .deliveries(endpoint_id, DeliveryStatus::Unspecified)
                .await;
            let pending: Vec<String> = all
                .iter()
                .filter(|d| !is(d, DeliveryStatus::Delivered) && !is(d, DeliveryStatus::Failed))
                .map(describe)
                .collect();
            if all.len() == count && pending.is_empty() {
                Ok(all)
            } else {
                Err(format!("{} deliveries, pending: {pending:?}", all.len()))
            }
        })
        .await
    }
}

fn is(d: &Delivery, status: DeliveryStatus) -> bool {
    d.status == status as i32
}

fn describe(d: &Delivery) -> String {
    let status = DeliveryStatus::try_from(d.status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| d.status.to_string());
    format!(
        "{} {status} attempts={} last_error={:?}",
        d.id, d.attempts, d.last_error
    )
}

/// The resource id of the event a (Keygen-format) webhook request carries.
fn resource_id(r: &Received) -> String {
    let body = r.json();
    let payload = body["data"]["attributes"]["payload"]
        .as_str()
        .expect("a Keygen body carries the payload as a JSON string");
    let payload: serde_json::Value = serde_json::from_str(payload).expect("payload JSON");
    payload["data"]["id"]
        .as_str()
        .expect("payload data.id")
        .to_string()
}

/// A raw Redis connection, for looking at or tampering with one app's keys (never others').
async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379")
}

/// `{prefix}:<name>`, the app's queue keys.
fn redis_key(app: &TestApp, name: &str) -> String {
    format!(
        "{{{}}}:{name}",
        app.redis_prefix.as_ref().expect("Redis app")
    )
}

/// Entries in the app's ready stream plus its scheduled set.
async fn redis_backlog(app: &TestApp) -> (u64, u64) {
    redis::pipe()
        .cmd("XLEN")
        .arg(redis_key(app, "ready"))
        .cmd("ZCARD")
        .arg(redis_key(app, "scheduled"))
        .query_async(&mut redis().await)
        .await
        .expect("XLEN/ZCARD")
}

/// An HTTP receiver that never answers: it counts the requests whose headers arrived and
/// whose connection is still open (the sender gives up by closing it), and the most of
/// those at once.
struct HangReceiver {
    addr: std::net::SocketAddr,
    max_in_flight: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl HangReceiver {
    async fn start() -> HangReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let counters = (in_flight.clone(), max_in_flight.clone(), total.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (in_flight, max_in_flight, total) = counters.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    // Read until the peer closes; never write a response.
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !counted {
                            head.extend_from_slice(&buf[..n]);
                            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                // A request that replaces one the client just timed out
                                // may be read before that connection's close is: let
                                // the closes already sent be seen before counting.
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                counted = true;
                                total.fetch_add(1, Ordering::SeqCst);
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                max_in_flight.fetch_max(now, Ordering::SeqCst);
                            }
                        }
                    }
                    if counted {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        HangReceiver {
            addr,
            max_in_flight,
            total,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hang", self.addr)
    }
}

/// A Herald in a runtime of its own, so that it can crash: dropping the runtime drops
/// every task of that server at once, attempts in flight included, as a killed process
/// would (a graceful stop lets in-flight attempts finish and record).
struct CrashableServer {
    addr: std::net::SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CrashableServer {
    async fn start(config: Config) -> CrashableServer {
        let (runtime, addr) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let running = runtime
                .block_on(herald::server::start(config))
                .expect("server starts");
            (runtime, running.addr)
        })
        .await
        .expect("start thread");
        CrashableServer {
            addr,
            runtime: Some(runtime),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the crashable server")
    }

    /// Drops the runtime and with it every task of the server, and waits until they are.
    async fn crash(mut self) {
        let runtime = self.runtime.take().expect("running");
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
            .await
            .expect("crash");
    }
}

impl Drop for CrashableServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests against both backends
// ---------------------------------------------------------------------------------------

both_backends!(
    ssrf_refusals_at_delivery_time,
    hanging_endpoint_does_not_delay_others,
    delivery_interrupted_by_a_stop_completes_after_restart,
    delivery_of_a_crashed_server_completes_after_restart,
    auto_disable_after_sustained_failure,
    success_resets_the_failure_run,
    disabled_endpoints_get_no_deliveries,
    graceful_shutdown_with_a_hanging_webhook,
);

/// Internal destinations in every notation. None is allowlisted by the test default
/// (127.0.0.1/32 only); the guard refuses each before connecting.
const BLOCKED: &[&str] = &[
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://192.0.2.1/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:127.0.0.2]/",
    "http://0x7f.0.0.2/",
    "http://2130706434/",
    "http://0177.0.0.2/",
    "http://127.0.0.2/",
];

/// Every delivery to each endpoint of `urls` (id → URL) ends FAILED after exactly one
/// attempt refused as `blocked_address`.
async fn assert_all_blocked(api: &Api, urls: &HashMap<String, String>) {
    for (endpoint_id, url) in urls {
        let delivery = eventually(
            &format!("the delivery to {url} fails"),
            Duration::from_secs(30),
            || async move {
                let all = api
                    .deliveries(endpoint_id, DeliveryStatus::Unspecified)
                    .await;
                match all.as_slice() {
                    [d] if is(d, DeliveryStatus::Failed) => Ok(d.clone()),
                    other => Err(format!(
                        "{:?}",
                        other.iter().map(describe).collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await;
        assert_eq!(delivery.attempts, 1, "{url}: {}", describe(&delivery));
        assert!(
            delivery.last_error.starts_with("blocked_address"),
            "{url}: {}",
            describe(&delivery)
        );
        let attempts = api.attempts(&delivery.id).await;
        assert_eq!(attempts.len(), 1, "{url}: {attempts:?}");
        let attempt = &attempts[0];
        assert_eq!(attempt.error_kind, "blocked_address", "{url}: {attempt:?}");
        assert_eq!(attempt.status_code, 0, "{url}: {attempt:?}");
        assert!(!attempt.succeeded, "{url}: {attempt:?}");
    }
}

async fn ssrf_refusals_at_delivery_time(backend: Backend) {
    // One attempt per delivery: a refusal fails it for good.
    let app = spawn_app_with(backend, |c| c.retry_schedule_secs = vec![]).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let mut urls = HashMap::new();
    for url in BLOCKED {
        // Accepted at creation: the check happens at connection time.
        let id = api.create_endpoint(url).await;
        urls.insert(id, url.to_string());
    }
    let published = api.publish("ssrf-1").await;
    assert_eq!(published.deliveries as usize, BLOCKED.len());
    assert_all_blocked(&api, &urls).await;

    // With an empty allowlist, loopback is refused too, by name (DNS → 127.0.0.1/::1)
    // and by literal; the receiver listening there gets nothing.
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let strict = spawn_app_with(backend, |c| {
        c.retry_schedule_secs = vec![];
        c.egress_allow_cidrs = vec![];
    })
    .await;
    let api = Api::new(&strict, strict.tenant("acme").await).await;
    let mut urls = HashMap::new();
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
    ] {
        let id = api.create_endpoint(&url).await;
        urls.insert(id, url);
    }
    let published = api.publish("ssrf-2").await;
    assert_eq!(published.deliveries, 2);
    assert_all_blocked(&api, &urls).await;
    assert!(
        receiver.received().is_empty(),
        "the loopback receiver was reached: {:?}",
        receiver.received()
    );
}

async fn hanging_endpoint_does_not_delay_others(backend: Backend) {
    const EVENTS: usize = 60;
    const CAP: usize = 4;
    // Generous for 2 shared cores; an undisturbed delivery takes a few milliseconds.
    const BOUND: Duration = Duration::from_secs(2);
    let app = spawn_app_with(backend, |c| c.endpoint_concurrency = CAP).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    // Hangs far beyond the 3 s webhook timeout: every attempt to it times out.
    let hang = HangReceiver::start().await;
    let healthy = Receiver::start().await;
    api.create_endpoint(&hang.url()).await;
    api.create_endpoint(&healthy.url("/hook")).await;

    let mut published = HashMap::new();
    for i in 0..EVENTS {
        let id = format!("iso-{i}");
        let response = api.publish(&id).await;
        assert_eq!(response.deliveries, 2);
        published.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    let got = healthy.wait_for(EVENTS, Duration::from_secs(30)).await;
    let mut first_arrival: HashMap<String, Instant> = HashMap::new();
    for r in &got {
        let at = first_arrival.entry(resource_id(r)).or_insert(r.at);
        *at = (*at).min(r.at);
    }
    assert_eq!(
        first_arrival.len(),
        EVENTS,
        "every event reached the healthy endpoint"
    );
    let mut late: Vec<(String, Duration)> = first_arrival
        .iter()
        .map(|(id, at)| (id.clone(), at.saturating_duration_since(published[id])))
        .filter(|(_, lag)| *lag > BOUND)
        .collect();
    late.sort();
    let worst = first_arrival
        .iter()
        .map(|(id, at)| at.saturating_duration_since(published[id]))
        .max()
        .unwrap_or_default();
    eprintln!("healthy endpoint: slowest delivery {worst:?} after its publish");
    assert!(
        late.is_empty(),
        "deliveries to the healthy endpoint later than {BOUND:?} after their publish: {late:?}"
    );

    // The hanging endpoint was tried in more than one wave (its first attempts timed out
    // and freed their slots), never with more than its cap in flight.
    let total = hang.total.clone();
    eventually(
        "a second wave of attempts to the hanging endpoint",
        Duration::from_secs(30),
        || {
            let n = total.load(Ordering::SeqCst);
            async move {
                if n >= 2 * CAP {
                    Ok(())
                } else {
                    Err(format!("{n} requests"))
                }
            }
        },
    )
    .await;
    let max = hang.max_in_flight.load(Ordering::SeqCst);
    eprintln!(
        "hanging endpoint: {} requests, at most {max} in flight",
        hang.total.load(Ordering::SeqCst)
    );
    assert!(
        max <= CAP,
        "the hanging endpoint had {max} requests in flight at once (cap {CAP})"
    );
}

async fn delivery_interrupted_by_a_stop_completes_after_restart(backend: Backend) {
    let receiver = Receiver::start().await;
    // The first request hangs past the webhook timeout; later ones get 204.
    receiver.script(vec![Reply::Hang(Duration::from_secs(20))]);
    let mut app = spawn_app_with(backend, |c| {
        c.webhook_timeout_secs = 1;
        c.requeue_after_secs = 1;
    })
    .await;
    let keys = app.tenant("acme").await;
    let api = Api::new(&app, keys.clone()).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    assert_eq!(api.publish("restart-1").await.deliveries, 1);

    receiver.wait_for(1, Duration::from_secs(20)).await;
    // Stopped while that request is in flight; stopping does not wait for it.
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("graceful stop within 15 s with a webhook in flight");
    app.restart().await;
    let api = Api::new(&app, keys).await;

    let delivery = eventually(
        "the interrupted delivery is delivered after the restart",
        Duration::from_secs(90),
        || async {
            let all = api.deliveries(&endpoint, DeliveryStatus::Unspecified).await;
            match all.as_slice() {
                [d] if is(d, DeliveryStatus::Delivered) => Ok(d.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(describe).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    let got = receiver.received();
    assert!(
        got.len() >= 2,
        "the event was sent again: {} requests",
        got.len()
    );
    for r in &got {
        assert_eq!(resource_id(r), "restart-1");
        assert_eq!(
            r.header("webhook-id").as_deref(),
            Some(delivery.idempotency_token.as_str()),
            "every request of the delivery carries the same webhook-id"
        );
    }
    let attempts = api.attempts(&delivery.id).await;
    assert!(attempts.last().is_some_and(|a| a.succeeded), "{attempts:?}");
}

async fn delivery_of_a_crashed_server_completes_after_restart(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Hang(Duration::from_secs(60))]);
    // Default timeout (3 s): the lease in the database (and in Redis) is 18 s.
    let mut app = spawn_app_with(backend, |_| {}).await;
    let keys = app.tenant("acme").await;
    let endpoint = Api::new(&app, keys.clone())
        .await
        .create_endpoint(&receiver.url("/hook"))
        .await;
    app.stop().await;

    // The same server (database, Redis prefix) in a runtime of its own; it crashes while
    // its first request hangs, so the attempt is never recorded and never acked.
    let crashing = CrashableServer::start(app.config.clone()).await;
    let api = Api::on(crashing.channel().await, keys.clone());
    assert_eq!(api.publish("crash-1").await.deliveries, 1);
    receiver.wait_for(1, Duration::from_secs(20)).await;
    drop(api);
    crashing.crash().await;

    app.restart().await;
    let api = Api::new(&app, keys).await;
    let delivery = eventually(
        "the crashed delivery is delivered after the restart",
        Duration::from_secs(90),
        || async {
            let all = api.deliveries(&endpoint, DeliveryStatus::Unspecified).await;
            match all.as_slice() {
                [d] if is(d, DeliveryStatus::Delivered) => Ok(d.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(describe).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    let got = receiver.received();
    assert!(
        got.len() >= 2,
        "the event was sent again: {} requests",
        got.len()
    );
    for r in &got {
        assert_eq!(resource_id(r), "crash-1");
        assert_eq!(
            r.header("webhook-id").as_deref(),
            Some(delivery.idempotency_token.as_str())
        );
    }
    // The crashed attempt left no record; the one after the restart succeeded.
    let attempts = api.attempts(&delivery.id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].succeeded, "{attempts:?}");
}

async fn auto_disable_after_sustained_failure(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app = spawn_app_with(backend, |c| {
        c.auto_disable_after_secs = 2;
        c.retry_schedule_secs = vec![1, 1, 1, 1, 1];
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    for i in 0..3 {
        assert_eq!(api.publish(&format!("fail-{i}")).await.deliveries, 1);
    }

    let disabled = eventually(
        "the endpoint is disabled automatically",
        Duration::from_secs(30),
        || async {
            let ep = api.endpoint(&endpoint).await;
            if ep.enabled {
                Err(format!(
                    "enabled, {} requests so far",
                    receiver.received().len()
                ))
            } else {
                Ok(ep)
            }
        },
    )
    .await;
    let seen_at = Instant::now();
    assert!(
        disabled.disabled_reason.contains("automatically disabled"),
        "{:?}",
        disabled.disabled_reason
    );
    let first_request = receiver.received()[0].at;
    assert!(
        seen_at.duration_since(first_request) >= Duration::from_secs(2),
        "disabled only after failing for auto_disable_after (2 s), not after {:?}",
        seen_at.duration_since(first_request)
    );

    // Attempts that were already in flight when it was disabled may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.received().len();

    // New events create no deliveries for it.
    assert_eq!(api.publish("after-disable").await.deliveries, 0);

    // Its pending deliveries fail without another request.
    let finished = api
        .wait_finished(&endpoint, 3, Duration::from_secs(30))
        .await;
    for d in &finished {
        assert!(is(d, DeliveryStatus::Failed), "{}", describe(d));
        assert!(
            d.last_error.contains("endpoint disabled") && d.last_error.contains("automatically"),
            "{}",
            describe(d)
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        requests,
        "no request reaches a disabled endpoint"
    );

    // Re-enabled, it starts afresh: one failure does not disable it again at once (its
    // earlier run of failures is over), and the retry is delivered.
    receiver.set_default(Reply::Status(204));
    receiver.script(vec![Reply::Status(500)]);
    let enabled = api.set_enabled(&endpoint, true).await;
    assert!(enabled.enabled && enabled.disabled_reason.is_empty());
    assert_eq!(api.publish("after-reenable").await.deliveries, 1);
    let all = api
        .wait_finished(&endpoint, 4, Duration::from_secs(30))
        .await;
    let newest = &all[0];
    assert!(
        is(newest, DeliveryStatus::Delivered) && newest.attempts == 2,
        "{}",
        describe(newest)
    );
    let ep = api.endpoint(&endpoint).await;
    assert!(ep.enabled, "re-disabled: {:?}", ep.disabled_reason);
}

async fn success_resets_the_failure_run(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.script(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(204),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(204),
    ]);
    let app = spawn_app_with(backend, |c| {
        c.auto_disable_after_secs = 3;
        c.retry_schedule_secs = vec![1, 1, 1, 1, 1];
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;

    assert_eq!(api.publish("run-1").await.deliveries, 1);
    api.wait_finished(&endpoint, 1, Duration::from_secs(30))
        .await;
    // The second run's first failure comes more than 3 s after the first run began: had
    // the success not ended that run, it would disable the endpoint.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.publish("run-2").await.deliveries, 1);
    let all = api
        .wait_finished(&endpoint, 2, Duration::from_secs(30))
        .await;
    for d in &all {
        assert!(
            is(d, DeliveryStatus::Delivered) && d.attempts == 3,
            "{}",
            describe(d)
        );
    }
    let requests = receiver.received();
    assert_eq!(requests.len(), 6);
    assert!(
        requests[3].at.duration_since(requests[0].at) > Duration::from_secs(3),
        "the test needs the runs to span more than auto_disable_after"
    );
    let ep = api.endpoint(&endpoint).await;
    assert!(ep.enabled, "disabled: {:?}", ep.disabled_reason);
}

async fn disabled_endpoints_get_no_deliveries(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(backend, |_| {}).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;

    let ep = api.set_enabled(&endpoint, false).await;
    assert!(!ep.enabled);
    assert_eq!(api.publish("while-disabled").await.deliveries, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receiver.received().is_empty());
    assert!(
        api.deliveries(&endpoint, DeliveryStatus::Unspecified)
            .await
            .is_empty()
    );

    // Re-enabled: new events are delivered; the one published meanwhile is not.
    api.set_enabled(&endpoint, true).await;
    assert_eq!(api.publish("re-enabled").await.deliveries, 1);
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(resource_id(&got[0]), "re-enabled");
    let all = api
        .wait_finished(&endpoint, 1, Duration::from_secs(20))
        .await;
    assert!(
        is(&all[0], DeliveryStatus::Delivered),
        "{}",
        describe(&all[0])
    );

    // Disabled by an operator while a delivery waits for its retry: the retry does not
    // happen and the delivery fails, naming the reason.
    let failing_receiver = Receiver::start().await;
    failing_receiver.set_default(Reply::Status(500));
    let retrying = api
        .create_endpoint_with(CreateEndpointRequest {
            url: failing_receiver.url("/retrying"),
            retry_schedule_secs: vec![3],
            ..Default::default()
        })
        .await;
    // Both endpoints receive it.
    assert_eq!(api.publish("pending").await.deliveries, 2);
    let failing = eventually(
        "the first attempt fails",
        Duration::from_secs(20),
        || async {
            let all = api.deliveries(&retrying, DeliveryStatus::Unspecified).await;
            match all.as_slice() {
                [d] if is(d, DeliveryStatus::Failing) => Ok(d.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(describe).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    api.set_enabled(&retrying, false).await;
    assert_eq!(failing_receiver.received().len(), 1);
    let failed = eventually(
        "the pending delivery fails",
        Duration::from_secs(30),
        || async {
            let d = api.delivery(&failing.id).await;
            if is(&d, DeliveryStatus::Failed) {
                Ok(d)
            } else {
                Err(describe(&d))
            }
        },
    )
    .await;
    assert!(
        failed.last_error.contains("endpoint disabled")
            && failed.last_error.contains("disabled by an operator"),
        "{}",
        describe(&failed)
    );
    assert_eq!(failed.attempts, 1, "{}", describe(&failed));
    assert_eq!(
        failing_receiver.received().len(),
        1,
        "no request after the endpoint was disabled"
    );
}

async fn graceful_shutdown_with_a_hanging_webhook(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang(Duration::from_secs(60)));
    // The attempt may take 30 s: stopping must not wait for it.
    let mut app = spawn_app_with(backend, |c| {
        c.webhook_timeout_secs = 30;
        c.requeue_after_secs = 30;
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    api.create_endpoint(&receiver.url("/hook")).await;
    for i in 0..3 {
        api.publish(&format!("hang-{i}")).await;
    }
    receiver.wait_for(3, Duration::from_secs(20)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("graceful stop within 10 s while webhooks hang");
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------

/// Waits until the receiver has seen at least `n` distinct events.
async fn wait_distinct(receiver: &Receiver, n: usize, timeout: Duration) -> HashSet<String> {
    eventually(&format!("{n} distinct events"), timeout, || async {
        let ids: HashSet<String> = receiver.received().iter().map(resource_id).collect();
        if ids.len() >= n {
            Ok(ids)
        } else {
            Err(format!(
                "{} distinct of {} requests",
                ids.len(),
                receiver.received().len()
            ))
        }
    })
    .await
}

/// Waits until the app's queue schedule holds at least `n` deliveries.
async fn wait_scheduled(app: &TestApp, what: &str, n: usize) {
    eventually(what, Duration::from_secs(10), || async {
        let (_, scheduled) = redis_backlog(app).await;
        if scheduled as usize >= n {
            Ok(())
        } else {
            Err(format!("{scheduled} scheduled"))
        }
    })
    .await;
}

/// Entries ever added to the ready stream.
async fn ready_entries_added(app: &TestApp) -> i64 {
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(redis_key(app, "ready"))
        .query_async(&mut redis().await)
        .await
        .expect("XINFO STREAM");
    match info.get("entries-added") {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("entries-added: {other:?}"),
    }
}

/// Herald on PostgreSQL with two requests in flight per endpoint, whose requests time out
/// after `timeout_secs`, and nothing re-queued by the reconciler within a test.
async fn spawn_two_in_flight(timeout_secs: u64) -> TestApp {
    spawn_app_with(Backend::Postgres, |c| {
        c.endpoint_concurrency = 2;
        c.endpoint_concurrency_max = 2;
        c.webhook_timeout_secs = timeout_secs;
        c.requeue_after_secs = 3600;
    })
    .await
}

/// Deliveries published for an endpoint that hangs (requests in flight, none answering for
/// a second) while its line is full wait in the schedule for when the worker would take
/// them, instead of entering the ready stream only to be popped and put back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoints_new_deliveries_wait_in_the_schedule() {
    const LATER: usize = 50;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang(Duration::from_secs(60)));
    let app = spawn_two_in_flight(30).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    api.create_endpoint(&receiver.url("/hook")).await;
    // Two requests in flight and a line of four (twice the cap, its speed unknown).
    for i in 0..6 {
        api.publish(&format!("fill-{i}")).await;
    }
    receiver.wait_for(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let added = ready_entries_added(&app).await;

    for i in 0..LATER {
        assert_eq!(api.publish(&format!("later-{i}")).await.deliveries, 1);
    }
    wait_scheduled(&app, "the new deliveries scheduled", LATER).await;
    // Not one went through the ready stream (the hanging requests last a minute, and
    // the first of the scheduled ones is due seconds from now).
    assert_eq!(ready_entries_added(&app).await, added);
    assert_eq!(receiver.received().len(), 2);
}

/// Deliveries held back for an endpoint that seemed to hang (requests in flight, none
/// answered for seconds) are sent as soon as it answers again and its line drains, not
/// at the time guessed while it was stuck: the endpoint was only slow to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_held_back_for_a_stuck_endpoint_are_sent_once_it_answers() {
    const LATER: usize = 20;
    // Two requests of 5 s in flight and a line of four. Published 3 s into them, the
    // rest is held back for three rounds of those 3 s: 9 s, about 7 s past their end.
    let receiver = SlowReceiver::start(Duration::from_secs(5)).await;
    let app = spawn_two_in_flight(10).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url()).await;
    for i in 0..6 {
        api.publish(&format!("fill-{i}")).await;
    }
    receiver
        .wait_requests("the first two requests", 2, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..LATER {
        api.publish(&format!("later-{i}")).await;
    }
    wait_scheduled(&app, "the new deliveries held back", LATER).await;
    receiver.set_delay(Duration::ZERO);
    let fast_since = Instant::now();
    api.wait_delivered(&endpoint, 6 + LATER, Duration::from_secs(60))
        .await;
    let took = fast_since.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the held-back deliveries waited {took:?} after the endpoint answered"
    );
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        6 + LATER,
        "one request per delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_run_loses_no_delivery() {
    const EVENTS: usize = 100;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang(Duration::from_millis(200)));
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.endpoint_concurrency = 2;
        // Busy deliveries come back after min(timeout, 5 s): keep the backlog moving.
        c.webhook_timeout_secs = 1;
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    for i in 0..EVENTS {
        assert_eq!(api.publish(&format!("flush-{i}")).await.deliveries, 1);
    }

    wait_distinct(&receiver, EVENTS / 4, Duration::from_secs(120)).await;
    let (ready, scheduled) = redis_backlog(&app).await;
    assert!(
        ready + scheduled > 0,
        "a backlog in Redis when it is flushed"
    );
    app.flush_redis().await;
    wait_distinct(&receiver, EVENTS / 2, Duration::from_secs(120)).await;
    app.flush_redis().await;

    let ids = wait_distinct(&receiver, EVENTS, Duration::from_secs(180)).await;
    let requests = receiver.received().len();
    let duplicates = requests - ids.len();
    for i in 0..EVENTS {
        assert!(
            ids.contains(&format!("flush-{i}")),
            "flush-{i} never arrived"
        );
    }
    eventually(
        "every delivery DELIVERED",
        Duration::from_secs(60),
        || async {
            let delivered = api.deliveries(&endpoint, DeliveryStatus::Delivered).await;
            let all = api.deliveries(&endpoint, DeliveryStatus::Unspecified).await;
            if delivered.len() == EVENTS && all.len() == EVENTS {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} delivered ({requests} requests, {duplicates} duplicates)",
                    delivered.len(),
                    all.len()
                ))
            }
        },
    )
    .await;
    eprintln!("redis flushed twice: {EVENTS} events, {requests} requests, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_with_a_retry_pending_still_delivers() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(500)]);
    let app = spawn_app_with(Backend::Postgres, |c| c.retry_schedule_secs = vec![4]).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    assert_eq!(api.publish("retry-1").await.deliveries, 1);

    let failing = eventually(
        "the first attempt fails",
        Duration::from_secs(20),
        || async {
            let all = api.deliveries(&endpoint, DeliveryStatus::Unspecified).await;
            match all.as_slice() {
                [d] if is(d, DeliveryStatus::Failing) => Ok(d.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(describe).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    // The retry waits in the sorted set.
    eventually(
        "the retry is scheduled in Redis",
        Duration::from_secs(5),
        || async {
            match redis_backlog(&app).await {
                (_, 1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    app.flush_redis().await;
    assert_eq!(redis_backlog(&app).await, (0, 0));

    let delivered = eventually(
        "the retry is delivered although Redis lost it",
        Duration::from_secs(60),
        || async {
            let d = api.delivery(&failing.id).await;
            if is(&d, DeliveryStatus::Delivered) {
                Ok(d)
            } else {
                Err(describe(&d))
            }
        },
    )
    .await;
    assert_eq!(delivered.attempts, 2, "{}", describe(&delivered));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| resource_id(r) == "retry-1"));
}

/// A publish whose enqueue fails still gets delivered: the reconciler finds the overdue
/// delivery in the database. Redis is made to refuse XADD on the app's stream (its last
/// id set to the largest possible), while reads keep working and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_enqueue_is_covered_by_the_reconciler() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    // A first delivery, so the stream and its group are in use, then drained.
    assert_eq!(api.publish("warm-up").await.deliveries, 1);
    receiver.wait_for(1, Duration::from_secs(20)).await;
    eventually("the stream is drained", Duration::from_secs(10), || async {
        match redis_backlog(&app).await {
            (0, 0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let ready = redis_key(&app, "ready");
    let mut conn = redis().await;
    let _: () = redis::cmd("XSETID")
        .arg(&ready)
        .arg("18446744073709551615-18446744073709551615")
        .query_async(&mut conn)
        .await
        .expect("XSETID to the last possible id");
    let published = api.publish("unqueued").await;
    // Restore: an id at least as high as anything the group has read.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (len, _): (u64, u64) = redis_backlog(&app).await;
    let _: () = redis::cmd("XSETID")
        .arg(&ready)
        .arg(format!("{}-0", now_ms + 1000))
        .query_async(&mut conn)
        .await
        .expect("XSETID back");
    assert_eq!(published.deliveries, 1, "the publish succeeds anyway");
    assert_eq!(len, 0, "the enqueue really failed");

    let got = eventually(
        "the unqueued delivery arrives",
        Duration::from_secs(60),
        || async {
            let got = receiver.received();
            if got.len() >= 2 {
                Ok(got)
            } else {
                Err(format!("{} requests", got.len()))
            }
        },
    )
    .await;
    assert_eq!(resource_id(&got[1]), "unqueued");
    let all = api
        .wait_finished(&endpoint, 2, Duration::from_secs(20))
        .await;
    assert!(all.iter().all(|d| is(d, DeliveryStatus::Delivered)));
}

/// The Redis schedule holds at most `redis_max_scheduled` retries; the others wait in the
/// database and come back as the schedule drains (not `requeue_after` later), so a long
/// outage of a receiver costs Redis a bounded amount and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_schedule_spills_retries_to_the_database_and_loses_none() {
    const EVENTS: usize = 300;
    const BOUND: u64 = 100;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.redis_max_scheduled = BOUND;
        c.retry_schedule_secs = vec![2; 10];
        // The overdue sweep must not be what brings the spilled retries back.
        c.requeue_after_secs = 3600;
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url("/hook")).await;
    for i in 0..EVENTS {
        assert_eq!(api.publish(&format!("spill-{i}")).await.deliveries, 1);
    }
    // Every first attempt failed: 300 retries for a schedule of 100.
    wait_distinct(&receiver, EVENTS, Duration::from_secs(60)).await;
    let spilled = redis_key(&app, "spilled");
    eventually(
        "the schedule spilled and stayed bounded",
        Duration::from_secs(20),
        || async {
            let (_, scheduled) = redis_backlog(&app).await;
            let flagged: bool = redis::cmd("EXISTS")
                .arg(&spilled)
                .query_async(&mut redis().await)
                .await
                .unwrap();
            assert!(scheduled <= BOUND, "{scheduled} retries in Redis");
            if flagged && scheduled > 0 {
                Ok(())
            } else {
                Err(format!("spilled: {flagged}, {scheduled} scheduled"))
            }
        },
    )
    .await;

    receiver.set_default(Reply::Status(204));
    eventually(
        "every delivery DELIVERED",
        Duration::from_secs(90),
        || async {
            let (_, scheduled) = redis_backlog(&app).await;
            assert!(scheduled <= BOUND, "{scheduled} retries in Redis");
            let delivered = api.deliveries(&endpoint, DeliveryStatus::Delivered).await;
            if delivered.len() == EVENTS {
                Ok(())
            } else {
                Err(format!("{} of {EVENTS} delivered", delivered.len()))
            }
        },
    )
    .await;
}

/// A receiver that answers every request after `delay` (204, or 500 while failing) and
/// records the most requests it had in flight at once, and each event it was sent.
struct SlowReceiver {
    addr: std::net::SocketAddr,
    /// How long each request takes, in milliseconds (`set_delay`).
    delay_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl SlowReceiver {
    async fn start(delay: Duration) -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = SlowReceiver {
            addr: listener.local_addr().unwrap(),
            delay_ms: Arc::new(AtomicU64::new(delay.as_millis() as u64)),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            failing: Arc::default(),
            requests: Arc::default(),
        };
        let (delay_ms, in_flight, max, failing, requests) = (
            receiver.delay_ms.clone(),
            receiver.in_flight.clone(),
            receiver.max_in_flight.clone(),
            receiver.failing.clone(),
            receiver.requests.clone(),
        );
        let app = axum::Router::new().fallback(move || {
            let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
            let (in_flight, max, failing, requests) = (
                in_flight.clone(),
                max.clone(),
                failing.clone(),
                requests.clone(),
            );
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// How long the requests that arrive from now on take.
    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests arrived.
    async fn wait_requests(&self, what: &str, n: usize, timeout: Duration) {
        eventually(what, timeout, || {
            let got = self.requests.load(Ordering::SeqCst);
            async move {
                if got >= n {
                    Ok(())
                } else {
                    Err(format!("{got} requests"))
                }
            }
        })
        .await;
    }
}

/// An endpoint's limit of requests in flight grows from `endpoint_concurrency` while its
/// requests succeed and deliveries wait, never past `endpoint_concurrency_max`, and falls
/// back to the start once they fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_limit_grows_with_successes_and_falls_back_on_failures() {
    const START: usize = 2;
    const MAX: usize = 8;
    const EVENTS: usize = 150;
    let receiver = SlowReceiver::start(Duration::from_millis(40)).await;
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.endpoint_concurrency = START;
        c.endpoint_concurrency_max = MAX;
        c.retry_schedule_secs = vec![30];
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url()).await;
    for i in 0..EVENTS {
        api.publish(&format!("grow-{i}")).await;
    }
    api.wait_delivered(&endpoint, EVENTS, Duration::from_secs(60))
        .await;
    let grown = receiver.max_in_flight.load(Ordering::SeqCst);
    assert!(
        grown > START && grown <= MAX,
        "{grown} requests in flight at most (start {START}, max {MAX})"
    );

    // Failures: the limit halves on each, back to the start.
    receiver.failing.store(true, Ordering::SeqCst);
    for i in 0..EVENTS {
        api.publish(&format!("fail-{i}")).await;
    }
    receiver
        .wait_requests(
            "the first failures",
            EVENTS + 2 * MAX,
            Duration::from_secs(30),
        )
        .await;
    // Whatever was in flight when the limit fell has ended by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.max_in_flight.store(0, Ordering::SeqCst);
    receiver
        .wait_requests(
            "every failing delivery tried once",
            2 * EVENTS,
            Duration::from_secs(60),
        )
        .await;
    let after = receiver.max_in_flight.load(Ordering::SeqCst);
    assert!(
        after <= START,
        "{after} requests in flight while the endpoint failed (start {START})"
    );
}

/// A burst that overflows a fast endpoint's line of claimed deliveries: what the worker
/// takes from the queue meanwhile waits beside the line, in memory, instead of going back
/// to the queue for a guessed while, and feeds the line as it drains. Every delivery
/// arrives once.
/// An app on PostgreSQL (with a metrics listener) whose endpoints take 2 requests at
/// once, no more, with leases of `lease_secs`, and one endpoint at `receiver` whose speed
/// is known: a warm-up delivery went through (an unknown one's overflow goes back to the
/// queue).
async fn two_at_a_time(receiver: &SlowReceiver, lease_secs: u64) -> (TestApp, Api, String) {
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.metrics_addr = Some(([127, 0, 0, 1], 0).into());
        c.endpoint_concurrency = 2;
        c.endpoint_concurrency_max = 2;
        c.webhook_timeout_secs = 1;
        c.delivery_lease_secs = Some(lease_secs);
    })
    .await;
    let api = Api::new(&app, app.tenant("acme").await).await;
    let endpoint = api.create_endpoint(&receiver.url()).await;
    api.publish("warm-up").await;
    receiver
        .wait_requests("the warm-up delivery", 1, Duration::from_secs(20))
        .await;
    (app, api, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_a_fast_endpoints_line_waits_beside_it() {
    const EVENTS: usize = 4_000;
    const BATCH: usize = 100;
    const PUBLISHERS: usize = 4;
    // A line holds what the endpoint works through in half a lease (3 s here): about
    // 2,400 deliveries at 2 requests of 2.5 ms in flight, less than the burst.
    let receiver = SlowReceiver::start(Duration::from_millis(2)).await;
    let (app, api, endpoint) = two_at_a_time(&receiver, 6).await;

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (mut events, key) = (api.events.clone(), api.keys.publisher.clone());
            tokio::spawn(async move {
                for b in (p..EVENTS / BATCH).step_by(PUBLISHERS) {
                    let batch = (b * BATCH..(b + 1) * BATCH)
                        .map(|i| publish_request(EVENT, &format!("burst-{i}")))
                        .collect();
                    events
                        .publish_batch(authed(&key, PublishBatchRequest { events: batch }))
                        .await
                        .expect("publish a batch");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    api.wait_delivered(&endpoint, EVENTS + 1, Duration::from_secs(120))
        .await;
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        EVENTS + 1,
        "one request per delivery"
    );
    let metrics = scrape(&app).await;
    let deferred = "herald_deliveries_deferred_total";
    let parked = value(&metrics, deferred, &[("to", "parked")]);
    assert!(
        parked > 0.0,
        "deliveries taken while the line was full were parked beside it: {parked} parked, {} put back in the queue",
        value(&metrics, deferred, &[("to", "queue")])
    );
}

/// Deliveries put back in the queue because a slow endpoint's line was full are sent as
/// soon as the line drains, not at the time guessed from the slow requests: an endpoint
/// that speeds up (a machine that was busy publishing the burst) is not left idle while
/// they wait.
#[tokio::test]
async fn deliveries_put_back_for_a_full_line_are_sent_once_it_drains() {
    const BURST: usize = 300;
    // 2 requests of 200 ms in flight: a line of what is worked through in half a lease
    // (10 s) holds 100, and the rest of the burst is put back for the line's drain time
    // as guessed then, about 10 s.
    let receiver = SlowReceiver::start(Duration::from_millis(200)).await;
    let (app, api, endpoint) = two_at_a_time(&receiver, 20).await;

    let mut events = api.events.clone();
    for b in 0..BURST / 100 {
        let batch = (b * 100..(b + 1) * 100)
            .map(|i| publish_request(EVENT, &format!("burst-{i}")))
            .collect();
        events
            .publish_batch(authed(
                &api.keys.publisher,
                PublishBatchRequest { events: batch },
            ))
            .await
            .expect("publish a batch");
    }
    let deferred = "herald_deliveries_deferred_total";
    eventually(
        "deliveries put back in the queue",
        Duration::from_secs(20),
        || async {
            let put_back = value(&scrape(&app).await, deferred, &[("to", "queue")]);
            if put_back > 0.0 {
                Ok(())
            } else {
                Err("none yet".to_string())
            }
        },
    )
    .await;
    receiver.set_delay(Duration::ZERO);
    let fast_since = Instant::now();
    api.wait_delivered(&endpoint, BURST + 1, Duration::from_secs(60))
        .await;
    let took = fast_since.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the put-back deliveries waited {took:?} after the line drained"
    );
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        BURST + 1,
        "one request per delivery"
    );
}
