//! Observability as an operator sees it: `/metrics` scraped over HTTP after events were
//! published and delivered to a real receiver, request ids on every call, and health
//! going `NOT_SERVING` while PostgreSQL or Redis is unreachable (and back).
//!
//! Metrics are process-wide: these tests rely on nextest running each test in a process
//! of its own, as `scripts/test` does, for exact counts.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use herald::{
    proto::{
        CreateEndpointRequest, ListEventTypesRequest, PublishRequest, SubscribeRequest,
        subscribe_request,
    },
    server::DELIVERY_HEALTH,
};
use sea_orm::{ConnectionTrait, Database};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    both_backends,
    helpers::{
        Backend, TenantKeys, TestApp, authed, eventually, postgres_server, publish_request,
        spawn_app_with,
    },
    receiver::{Receiver, Reply},
};

const WAIT: Duration = Duration::from_secs(20);
const DELIVERIES: &str = "herald_deliveries_total";
const ATTEMPTS: &str = "herald_delivery_attempts_total";
const ENDPOINT_FAILURES: &str = "herald_endpoint_failures_total";

async fn metrics_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| {
        c.metrics_addr = Some(([127, 0, 0, 1], 0).into());
    })
    .await
}

/// `GET /metrics` as Prometheus does: the status, content type and body.
pub(crate) async fn scrape(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("metrics_addr is set");
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the sample `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok())?
        })
}

pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

async fn create_endpoint(app: &TestApp, keys: &TenantKeys, url: &str) -> String {
    app.endpoints()
        .await
        .create_endpoint(authed(
            &keys.manager,
            CreateEndpointRequest {
                url: url.into(),
                filters: vec!["license.*".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .unwrap()
        .id
}

async fn publish(app: &TestApp, key: &str, request: PublishRequest) -> Result<(), tonic::Status> {
    app.events()
        .await
        .publish(authed(key, request))
        .await
        .map(|_| ())
}

/// Publishes stored, duplicate and rejected events, delivers to a healthy and a failing
/// endpoint, and reads every metric an operator would graph from one scrape.
async fn metrics_after_publishing_and_delivering(backend: Backend) {
    // Retries of the failing endpoint wait in the queue for the rest of the test.
    let app = spawn_app_with(backend, |c| {
        c.metrics_addr = Some(([127, 0, 0, 1], 0).into());
        c.retry_schedule_secs = vec![60];
    })
    .await;
    let keys = app.tenant("acme").await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_default(Reply::Status(503));
    create_endpoint(&app, &keys, &ok.url("/ok")).await;
    let failing_id = create_endpoint(&app, &keys, &failing.url("/failing")).await;

    let mut first = publish_request("license.created", "lic-1");
    first.idempotency_key = "lic-1-created".into();
    publish(&app, &keys.publisher, first.clone()).await.unwrap();
    publish(&app, &keys.publisher, first).await.unwrap(); // a duplicate
    let second = publish_request("license.created", "lic-2");
    publish(&app, &keys.publisher, second).await.unwrap();
    let mut bad = publish_request("license.created", "lic-3");
    bad.payload_json = "{\"data\": []}".into();
    let refused = publish(&app, &keys.publisher, bad).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    ok.wait_for(2, WAIT).await;
    failing.wait_for(2, WAIT).await;
    // The queue is sampled every 5 s: wait for a sample that saw both retries.
    let text = eventually("deliveries counted and retries sampled", WAIT, || async {
        let text = scrape(&app).await;
        let delivered = value(&text, DELIVERIES, &[("outcome", "delivered")]);
        let scheduled = value(&text, "herald_queue_depth", &[("state", "scheduled")]);
        if delivered >= 2.0 && scheduled >= 2.0 {
            Ok(text)
        } else {
            Err(format!(
                "delivered {delivered}, {scheduled} retries scheduled"
            ))
        }
    })
    .await;

    let published = |outcome| {
        let labels = [("type", "license.created"), ("outcome", outcome)];
        value(&text, "herald_events_published_total", &labels)
    };
    assert_eq!(published("stored"), 2.0, "{text}");
    assert_eq!(published("duplicate"), 1.0, "{text}");
    assert_eq!(published("rejected"), 1.0, "{text}");
    let delivered = value(&text, DELIVERIES, &[("outcome", "delivered")]);
    assert_eq!(delivered, 2.0, "{text}");
    let attempts = |outcome| value(&text, ATTEMPTS, &[("outcome", outcome)]);
    assert_eq!(attempts("success"), 2.0, "{text}");
    assert_eq!(attempts("http_5xx"), 2.0, "{text}");
    let failures = value(&text, ENDPOINT_FAILURES, &[("endpoint", &failing_id)]);
    assert_eq!(failures, 2.0, "the failing endpoint's attempts: {text}");

    // Histograms: every attempt timed, both deliveries' latency from arrival.
    let timed = value(&text, "herald_delivery_attempt_duration_seconds_count", &[]);
    assert_eq!(timed, 4.0, "{text}");
    let bucket = "herald_delivery_attempt_duration_seconds_bucket";
    assert_eq!(value(&text, bucket, &[("le", "+Inf")]), 4.0, "{text}");
    let latencies = value(&text, "herald_delivery_latency_seconds_count", &[]);
    assert_eq!(latencies, 2.0, "{text}");
    let latency = value(&text, "herald_delivery_latency_seconds_sum", &[]);
    assert!(
        latency > 0.0 && latency < 2.0 * WAIT.as_secs_f64(),
        "{text}"
    );
    assert!(
        text.contains("# TYPE herald_delivery_latency_seconds histogram"),
        "{text}"
    );

    // Sampled from the queue: two retries not due yet, nothing waiting.
    let depth = |state| sample(&text, "herald_queue_depth", &[("state", state)]);
    assert_eq!(depth("scheduled"), Some(2.0), "{text}");
    assert_eq!(depth("ready"), Some(0.0), "{text}");
    let oldest = sample(&text, "herald_queue_oldest_due_age_seconds", &[]);
    assert_eq!(oldest, Some(0.0), "{text}");

    // Anything but /metrics is not found.
    let addr = app.metrics_addr.unwrap();
    let other = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(other.status(), 404);
}

/// The active tails gauge follows tails opening and closing.
async fn active_tails_gauge(backend: Backend) {
    let app = metrics_app(backend).await;
    let keys = app.tenant("acme").await;
    let tails = |want: f64| {
        let app = &app;
        async move {
            let text = scrape(app).await;
            let open = value(&text, "herald_active_tails", &[]);
            if open == want {
                Ok(())
            } else {
                Err(format!("{open} open tails"))
            }
        }
    };
    let mut events = app.events().await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let request = SubscribeRequest {
            start: Some(subscribe_request::Start::Live(true)),
            ..Default::default()
        };
        streams.push(
            events
                .subscribe(authed(&keys.subscriber, request))
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    eventually("two open tails", WAIT, || tails(2.0)).await;
    drop(streams);
    eventually("no open tail", WAIT, || tails(0.0)).await;
}

both_backends!(metrics_after_publishing_and_delivering, active_tails_gauge);

fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("x-request-id in the response")
        .to_str()
        .unwrap()
        .to_string()
}

/// A given `x-request-id` comes back; a missing one is generated; errors carry it too;
/// an unusable one is refused naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let mut events = app.events().await;
    let list = || ListEventTypesRequest::default();

    let mut given = authed(&app.admin_key, list());
    given.metadata_mut().insert(
        "x-request-id",
        MetadataValue::from_static("trace-4f2a-given"),
    );
    let answer = events.list_event_types(given).await.unwrap();
    assert_eq!(request_id_of(answer.metadata()), "trace-4f2a-given");

    let answer = events
        .list_event_types(authed(&app.admin_key, list()))
        .await
        .unwrap();
    let generated = request_id_of(answer.metadata());
    assert!(ulid::Ulid::from_string(&generated).is_ok(), "{generated}");
    let again = events
        .list_event_types(authed(&app.admin_key, list()))
        .await
        .unwrap();
    assert_ne!(request_id_of(again.metadata()), generated);

    // An error answer (no key) still names the request.
    let mut unauthenticated = Request::new(list());
    unauthenticated
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("trace-no-key"));
    let status = events.list_event_types(unauthenticated).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(request_id_of(status.metadata()), "trace-no-key");

    let mut unusable = authed(&app.admin_key, list());
    unusable
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("has a space"));
    let status = events.list_event_types(unusable).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("x-request-id"), "{status:?}");

    // Health and reflection go through the same layer.
    let mut health = HealthClient::new(app.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert!(!request_id_of(answer.metadata()).is_empty());
}

pub(crate) async fn health_of(addr: SocketAddr, service: &str) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.into_inner().status())
}

pub(crate) async fn wait_health(addr: SocketAddr, service: &str, want: ServingStatus) {
    eventually(
        &format!("health of '{service}' is {want:?}"),
        WAIT,
        || async {
            match health_of(addr, service).await {
                Ok(status) if status == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// While PostgreSQL refuses Herald's connections, every health name reports NOT_SERVING
/// and database errors are counted; once it accepts them again, SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let app = metrics_app(Backend::Postgres).await;
    wait_health(app.addr, "", ServingStatus::Serving).await;
    let name = app.pg_database().unwrap().to_string();
    let admin = Database::connect(format!("{}/postgres", postgres_server()))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    for service in ["", "herald.v1.EventService", DELIVERY_HEALTH] {
        wait_health(app.addr, service, ServingStatus::NotServing).await;
    }
    let text = scrape(&app).await;
    assert!(
        value(
            &text,
            "herald_database_errors_total",
            &[("kind", "connection")]
        ) >= 1.0,
        "{text}"
    );

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    for service in ["", "herald.v1.EventService", DELIVERY_HEALTH] {
        wait_health(app.addr, service, ServingStatus::Serving).await;
    }
    admin.close().await.ok();
}

/// A Redis of the test's own, which it can stop and start again on the same port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = OwnRedis { port, child: None };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// While Redis is down, delivery reports NOT_SERVING (and Redis errors are counted) but
/// the API stays SERVING: publishes are stored and the reconciler enqueues them later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_for_delivery_only() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.redis_url = Some(herald::config::Secret::new(url));
        c.metrics_addr = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::Serving).await;

    redis.stop();
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::NotServing).await;
    assert_eq!(
        health_of(app.addr, "").await.unwrap(),
        ServingStatus::Serving
    );
    let text = scrape(&app).await;
    assert!(
        value(
            &text,
            "herald_redis_errors_total",
            &[("kind", "connection")]
        ) >= 1.0,
        "{text}"
    );

    redis.restart();
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::Serving).await;
}
