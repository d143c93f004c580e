//! Herald as several real processes (the `herald` binary, configured through `HERALD_*`
//! variables as in production) on one fresh PostgreSQL database and one Redis queue:
//! API and worker roles, deliveries shared by the worker replicas, a replica SIGKILLed
//! under load, a replica joining late, the background lease moving to a live replica, and
//! Redis restarted (empty) under load. What is checked is what an operator would look at:
//! the receiver's requests, the replicas' logs, the lease key, the API's delivery states.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald::proto::{
    CreateEndpointRequest, CreateTenantRequest, DeliveryStatus, ListDeliveriesRequest,
    PublishBatchRequest, PublishRequest, SubscribeRequest, SubscribeResponse,
    admin_service_client::AdminServiceClient, delivery_service_client::DeliveryServiceClient,
    endpoint_service_client::EndpointServiceClient, event_service_client::EventServiceClient,
    subscribe_request::Start,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::Notify,
};
use tonic::{Streaming, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{authed, clean_up_blocking, create_pg_database, publish_request, redis_url},
    receiver::{Received, Receiver, Reply},
    subscribe::{assert_no_more, take},
};

const EVENT: &str = "license.created";
const TENANT: &str = "acme";
const POLL: Duration = Duration::from_millis(100);
/// `delivery_concurrency` of the replicas: no replica has more attempts than this sent
/// and not yet recorded, which bounds the duplicates a killed replica can cause.
const DELIVERY_CONCURRENCY: usize = 64;

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// One `herald serve` process; killed when dropped.
struct Replica {
    name: String,
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts `herald serve <flags>` with exactly `env` and waits until it listens.
    async fn start(name: &str, flags: &[&str], env: &[(String, String)]) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .args(flags)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the herald binary");
        let pid = child.id().expect("a running process");
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        collect(child.stdout.take().unwrap(), log.clone(), arrived.clone());
        collect(child.stderr.take().unwrap(), log.clone(), arrived.clone());

        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let notified = arrived.notified();
            let found = log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("herald listening"))
                .cloned();
            if let Some(line) = found {
                break field(&line, "addr")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{name} did not start listening; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Replica {
            name: name.into(),
            child,
            pid,
            addr,
            log,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn logged(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.contains(text))
    }

    /// Attempts this replica recorded, from its `recorded attempts` debug lines.
    fn recorded(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.contains("recorded attempts"))
            .filter_map(|l| field(l, "attempts")?.parse::<usize>().ok())
            .sum()
    }

    /// SIGKILL: no shutdown, no lease given back, attempts in flight abandoned.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

/// Appends each line of `stream` to `log`, without terminal colours.
fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(strip_ansi(&line));
            arrived.notify_waiters();
        }
    });
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

/// A redis-server of this test alone, without persistence, on a free port.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again: empty) and waits until it answers.
    async fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on the PATH");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deliveries queued under `prefix` that no worker holds: ready in the stream but not
    /// handed out, or scheduled for later. Redis alone knows of them.
    async fn unclaimed(&self, prefix: &str) -> u64 {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("private Redis");
        let stream = format!("{{{prefix}}}:ready");
        let (len, scheduled): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&stream)
            .cmd("ZCARD")
            .arg(format!("{{{prefix}}}:scheduled"))
            .query_async(&mut conn)
            .await
            .expect("XLEN/ZCARD");
        let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(herald::queue::redis::GROUP)
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        len.saturating_sub(pending.count() as u64) + scheduled
    }

    /// SIGKILL: everything in it is gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("reaped");
        }
    }
}

/// A fresh PostgreSQL database, dropped with the value.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> TestDb {
        let (name, url) = create_pg_database().await;
        TestDb { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        clean_up_blocking(Some(self.name.clone()), None);
    }
}

/// Deletes a prefix's keys from the shared Redis when dropped.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        clean_up_blocking(None, Some(self.0.clone()));
    }
}

// ---------------------------------------------------------------------------------------
// The deployment
// ---------------------------------------------------------------------------------------

/// The configuration every replica gets, as environment variables. A 1 s webhook timeout
/// and a 4 s delivery lease make a killed replica's deliveries come back within seconds.
fn cluster_env(
    database_url: &str,
    redis: &str,
    prefix: &str,
    admin_key: &str,
) -> Vec<(String, String)> {
    [
        ("HERALD_LISTEN_ADDR", "127.0.0.1:0"),
        ("HERALD_DATABASE_URL", database_url),
        ("HERALD_REDIS_URL", redis),
        ("HERALD_REDIS_PREFIX", prefix),
        ("HERALD_ADMIN_KEY", admin_key),
        ("HERALD_ALLOW_HTTP_ENDPOINTS", "true"),
        ("HERALD_EGRESS_ALLOW_CIDRS", r#"["127.0.0.1/32"]"#),
        ("HERALD_WEBHOOK_TIMEOUT_SECS", "1"),
        ("HERALD_DELIVERY_LEASE_SECS", "4"),
        ("HERALD_REQUEUE_AFTER_SECS", "2"),
        ("HERALD_RETRY_SCHEDULE_SECS", "[1, 1, 1]"),
        ("HERALD_ENDPOINT_CONCURRENCY", "16"),
        ("HERALD_DELIVERY_CONCURRENCY", "64"),
        // Each replica logs every batch of attempts it records.
        ("HERALD_LOG", "info,herald::delivery::recorder=debug"),
        ("NO_COLOR", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What a deployment on the shared Redis needs: a fresh database, a key prefix of its own
/// (with the guard that deletes its keys), the Redis URL, an admin key and a receiver.
async fn shared_deployment() -> (TestDb, String, RedisKeys, String, String, Receiver) {
    let prefix = unique("herald-test");
    (
        TestDb::create().await,
        prefix.clone(),
        RedisKeys(prefix),
        redis_url(),
        unique("test-admin"),
        Receiver::start().await,
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Creates the tenant and an endpoint on the receiver through `api`; returns the endpoint.
/// A live `Subscribe` on the test tenant through `replica`.
async fn live_tail(replica: &Replica, admin_key: &str) -> Streaming<SubscribeResponse> {
    EventServiceClient::new(replica.channel().await)
        .subscribe(authed(
            admin_key,
            SubscribeRequest {
                tenant_id: TENANT.into(),
                start: Some(Start::Live(true)),
                ..Default::default()
            },
        ))
        .await
        .expect("subscribe")
        .into_inner()
}

async fn setup(api: &Replica, admin_key: &str, receiver: &Receiver) -> String {
    let channel = api.channel().await;
    AdminServiceClient::new(channel.clone())
        .create_tenant(authed(
            admin_key,
            CreateTenantRequest {
                id: TENANT.into(),
                name: "Acme".into(),
            },
        ))
        .await
        .expect("create tenant");
    EndpointServiceClient::new(channel)
        .create_endpoint(authed(
            admin_key,
            CreateEndpointRequest {
                tenant_id: TENANT.into(),
                url: receiver.url("/hook"),
                filters: vec!["license.*".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
        .id
}

/// Publishes `events` events (`ev-0`, `ev-1`, …) in batches of 20 every 100 ms, round
/// robin over `apis`: steady load while the test breaks things.
fn publish_load(
    apis: Vec<Channel>,
    admin_key: String,
    events: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut clients: Vec<_> = apis.into_iter().map(EventServiceClient::new).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for (n, start) in (0..events).step_by(20).enumerate() {
            tick.tick().await;
            let batch = (start..(start + 20).min(events))
                .map(|i| PublishRequest {
                    tenant_id: TENANT.into(),
                    ..publish_request(EVENT, &format!("ev-{i}"))
                })
                .collect();
            let count = clients.len();
            let client = &mut clients[n % count];
            let results = client
                .publish_batch(authed(&admin_key, PublishBatchRequest { events: batch }))
                .await
                .expect("publish batch")
                .into_inner()
                .results;
            assert!(
                results.iter().all(|r| r.deliveries == 1),
                "one delivery each"
            );
        }
    })
}

/// The resource id (`ev-N`) of the event a Keygen-format webhook carries.
fn resource_id(r: &Received) -> String {
    let body = r.json();
    let payload = body["data"]["attributes"]["payload"]
        .as_str()
        .expect("the payload as a JSON string");
    let payload: serde_json::Value = serde_json::from_str(payload).expect("payload JSON");
    payload["data"]["id"].as_str().expect("data.id").to_string()
}

/// Waits until every one of `events` events reached the receiver; returns how many
/// requests each event took.
async fn wait_all_received(
    receiver: &Receiver,
    events: usize,
    timeout: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in receiver.received() {
            *seen.entry(resource_id(&r)).or_default() += 1;
        }
        if seen.len() >= events {
            for i in 0..events {
                assert!(
                    seen.contains_key(&format!("ev-{i}")),
                    "ev-{i} never arrived"
                );
            }
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {events} events received within {timeout:?}",
            seen.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Deliveries of `endpoint` in `status`, through the API (all pages).
async fn count_deliveries(
    channel: Channel,
    admin_key: &str,
    endpoint: &str,
    status: DeliveryStatus,
) -> usize {
    let mut client = DeliveryServiceClient::new(channel);
    let (mut count, mut token) = (0, String::new());
    loop {
        let page = client
            .list_deliveries(authed(
                admin_key,
                ListDeliveriesRequest {
                    tenant_id: TENANT.into(),
                    endpoint_id: endpoint.into(),
                    status: status as i32,
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .expect("list deliveries")
            .into_inner();
        count += page.deliveries.len();
        if page.next_page_token.is_empty() {
            return count;
        }
        token = page.next_page_token;
    }
}

/// Polls until every delivery is DELIVERED according to the API.
async fn wait_all_delivered(api: &Replica, admin_key: &str, endpoint: &str, events: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let delivered = count_deliveries(
            api.channel().await,
            admin_key,
            endpoint,
            DeliveryStatus::Delivered,
        )
        .await;
        if delivered == events {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {events} deliveries DELIVERED"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The replica id holding the background lease (`GET {prefix}:lease`), if any.
async fn lease_holder(redis: &str, prefix: &str) -> Option<String> {
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    redis::cmd("GET")
        .arg(herald::lease::key(prefix))
        .query_async(&mut conn)
        .await
        .expect("GET lease")
}

/// The process id in a replica id (`<pid>-<ulid>`).
fn holder_pid(holder: &str) -> u32 {
    holder
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("replica id {holder:?}"))
}

/// Polls the lease key until `accept` takes its holder.
async fn wait_holder(
    redis: &str,
    prefix: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let holder = lease_holder(redis, prefix).await;
        if let Some(holder) = holder.as_deref().filter(|h| accept(h)) {
            return holder.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "lease not moved within {timeout:?}; holder {holder:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `replica` logged `text` (its log is read as it comes).
async fn wait_logged(replica: &Replica, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica.logged(text) {
        assert!(
            Instant::now() < deadline,
            "{} never logged {text:?}; its log:\n{}",
            replica.name,
            replica.lines().join("\n")
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `replica` has recorded attempts.
async fn wait_recorded(replica: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.recorded() == 0 {
        assert!(
            Instant::now() < deadline,
            "{} recorded no attempt; its log:\n{}",
            replica.name,
            replica.lines().join("\n")
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_replicas_share_deliveries_and_survive_a_killed_lease_holder() {
    const EVENTS: usize = 600;
    let (db, prefix, _keys, redis, admin_key, receiver) = shared_deployment().await;
    // 200 ms a request: the workers (16 at a time each, 80/s) fall behind publishing
    // (200 events/s), so their endpoint slots stay full and the replica killed below has
    // attempts in flight.
    receiver.set_default(Reply::Hang(Duration::from_millis(200)));
    let env = cluster_env(&db.url, &redis, &prefix, &admin_key);

    // The API replica first: it migrates the fresh database and stores the admin key.
    let api = Replica::start("api", &["--api"], &env).await;
    let (w1, w2) = tokio::join!(
        Replica::start("worker-1", &["--worker"], &env),
        Replica::start("worker-2", &["--worker"], &env),
    );
    let mut workers = vec![w1, w2];
    assert!(api.logged("roles=api"), "{:?}", api.lines());
    assert!(workers.iter().all(|w| w.logged("roles=worker")));

    // A worker replica answers health but serves no API.
    let worker_channel = workers[0].channel().await;
    let health = HealthClient::new(worker_channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health on a worker replica")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let refused = EventServiceClient::new(worker_channel)
        .publish(authed(&admin_key, publish_request(EVENT, "nope")))
        .await
        .expect_err("no API on a worker replica");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    // The background lease goes to a worker replica: the API replica runs no background
    // work and never takes it.
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    let holder = wait_holder(&redis, &prefix, Duration::from_secs(10), |h| {
        worker_pids.contains(&holder_pid(h))
    })
    .await;

    let endpoint = setup(&api, &admin_key, &receiver).await;
    let load = publish_load(vec![api.channel().await], admin_key.clone(), EVENTS);

    // Under load, SIGKILL the lease holder.
    receiver.wait_for(EVENTS / 5, Duration::from_secs(20)).await;
    let victim = workers
        .iter()
        .position(|w| w.pid == holder_pid(&holder))
        .unwrap();
    let mut victim = workers.remove(victim);
    victim.kill().await;
    let killed_at = Instant::now();
    let survivor = workers.pop().unwrap();

    // A replica started now joins in.
    let late = Replica::start("worker-3", &["--worker"], &env).await;

    // The lease moves to a live replica within its TTL and a renewal period.
    let live = [survivor.pid, late.pid];
    let new_holder = wait_holder(&redis, &prefix, Duration::from_secs(20), |h| {
        live.contains(&holder_pid(h))
    })
    .await;
    let moved_after = killed_at.elapsed();
    assert!(
        moved_after <= herald::lease::TTL + herald::lease::RENEW_EVERY + Duration::from_secs(1),
        "lease moved after {moved_after:?}"
    );
    let taker = [&survivor, &late]
        .into_iter()
        .find(|r| r.pid == holder_pid(&new_holder))
        .unwrap();
    wait_logged(taker, "took the background lease").await;

    load.await.expect("publishing went through");
    wait_all_received(&receiver, EVENTS, Duration::from_secs(40)).await;
    wait_all_delivered(&api, &admin_key, &endpoint, EVENTS).await;
    // Counted once all are delivered: the killed replica's unrecorded attempts are sent
    // again only when their leases expire, which may be after every event arrived once.
    let seen = wait_all_received(&receiver, EVENTS, Duration::ZERO).await;

    // Duplicates are the attempts the killed replica had sent and not recorded: it had
    // some (its slots were busy), and no more than its attempts in flight.
    let requests: usize = seen.values().sum();
    let duplicates = requests - EVENTS;
    assert!(
        (1..=DELIVERY_CONCURRENCY).contains(&duplicates),
        "{duplicates} duplicate requests"
    );

    // Every worker replica did part of the work, the API replica none.
    assert!(victim.recorded() > 0, "the killed replica worked before");
    wait_recorded(&survivor).await;
    wait_recorded(&late).await;
    assert_eq!(api.recorded(), 0, "the API replica delivered");

    // A graceful stop (SIGTERM) gives the lease back: the other live replica takes it at
    // its next try instead of waiting for the key to expire.
    let other = if taker.pid == survivor.pid {
        late.pid
    } else {
        survivor.pid
    };
    let stopping = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &taker.pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    wait_holder(&redis, &prefix, Duration::from_secs(10), |h| {
        holder_pid(h) == other
    })
    .await;
    let handed_over = stopping.elapsed();
    assert!(
        handed_over < herald::lease::RENEW_EVERY + Duration::from_secs(2),
        "lease handed over after {handed_over:?}"
    );
    wait_logged(taker, "gave the background lease back").await;
    eprintln!(
        "{EVENTS} events, {requests} requests ({duplicates} duplicates); recorded: killed {}, \
         survivor {}, late {}; lease moved after {moved_after:?}, handed over in {handed_over:?}",
        victim.recorded(),
        survivor.recorded(),
        late.recorded()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_load_loses_no_delivery() {
    const EVENTS: usize = 600;
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let admin_key = unique("test-admin");
    let receiver = Receiver::start().await;
    // Much slower than publishing (two replicas deliver 64/s, 200 events/s come in): a
    // backlog builds up that only Redis holds.
    receiver.set_default(Reply::Hang(Duration::from_millis(500)));
    let env = cluster_env(&db.url, &redis.url(), "herald", &admin_key);

    // Two replicas with both roles (no flag).
    let a = Replica::start("herald-1", &[], &env).await;
    let b = Replica::start("herald-2", &[], &env).await;
    assert!(a.logged("roles=api,worker") && b.logged("roles=api,worker"));
    let endpoint = setup(&a, &admin_key, &receiver).await;
    // A live tail on each process: each must see every event, published on either.
    let mut tails = Vec::new();
    for replica in [&a, &b] {
        tails.push(live_tail(replica, &admin_key).await);
    }
    let load = publish_load(
        vec![a.channel().await, b.channel().await],
        admin_key.clone(),
        EVENTS,
    );

    // Under load, Redis dies and comes back empty, with deliveries that only it held.
    let deadline = Instant::now() + Duration::from_secs(15);
    let lost = loop {
        let unclaimed = redis.unclaimed("herald").await;
        if unclaimed >= 50 {
            break unclaimed;
        }
        assert!(Instant::now() < deadline, "no backlog in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    redis.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;

    load.await.expect("publishing went on while Redis was down");
    let seen = wait_all_received(&receiver, EVENTS, Duration::from_secs(40)).await;
    wait_all_delivered(&a, &admin_key, &endpoint, EVENTS).await;
    // The reconciler noticed the loss and enqueued everything due again.
    assert!(
        [&a, &b].iter().any(|r| r
            .lines()
            .iter()
            .any(|l| l.contains("re-enqueued deliveries") && l.contains("full=true"))),
        "no full sweep logged:\n{}\n{}",
        a.lines().join("\n"),
        b.lines().join("\n")
    );
    let requests: usize = seen.values().sum();
    let duplicates = requests - EVENTS;
    assert!(
        duplicates <= 2 * DELIVERY_CONCURRENCY,
        "{duplicates} duplicate requests"
    );
    // Across processes, and through Redis's restart (announcements lost meanwhile), each
    // tail got every event once, in sequence order.
    for (name, tail) in ["herald-1", "herald-2"].iter().zip(&mut tails) {
        let events = take(tail, EVENTS, Duration::from_secs(20)).await;
        let seqs: Vec<i64> = events
            .iter()
            .map(|e| herald::tail::decode_cursor("cursor", &e.cursor).expect("a cursor"))
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{name}: events out of sequence order"
        );
        let resources: std::collections::HashSet<String> = events
            .iter()
            .map(|e| {
                let payload: serde_json::Value =
                    serde_json::from_str(&e.payload_json).expect("payload JSON");
                payload["data"]["id"].as_str().expect("data.id").to_string()
            })
            .collect();
        assert_eq!(resources.len(), EVENTS, "{name}: every event once");
        assert_no_more(tail).await;
    }
    eprintln!(
        "Redis restarted, losing {lost} queued deliveries: {EVENTS} events, {requests} requests \
         ({duplicates} duplicates)"
    );
}

/// A delivery that a publish handed to its own process's worker (stored claimed, never
/// queued) survives that process dying mid-request: the claim lapses, and another
/// replica's reconciler finds the delivery overdue, queues it and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_handed_to_a_killed_replica_is_delivered_by_another() {
    let (db, prefix, _keys, redis, admin_key, receiver) = shared_deployment().await;
    // The first request hangs until the replica sending it is killed; the rest succeed.
    receiver.script(vec![Reply::Hang(Duration::from_secs(60))]);
    let mut env = cluster_env(&db.url, &redis, &prefix, &admin_key);
    // Long enough that the hanging request is still in flight when the replica dies.
    for (key, value) in [
        ("HERALD_WEBHOOK_TIMEOUT_SECS", "5"),
        ("HERALD_DELIVERY_LEASE_SECS", "7"),
        ("HERALD_REQUEUE_AFTER_SECS", "5"),
    ] {
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }

    let mut first = Replica::start("herald-1", &[], &env).await;
    let endpoint = setup(&first, &admin_key, &receiver).await;
    EventServiceClient::new(first.channel().await)
        .publish(authed(
            &admin_key,
            PublishRequest {
                tenant_id: TENANT.into(),
                ..publish_request(EVENT, "ev-0")
            },
        ))
        .await
        .expect("publish");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    // The worker got it from the publish, not through the queue.
    assert_eq!(queued_ever(&redis, &prefix).await, 0, "queued");
    first.kill().await;

    let second = Replica::start("herald-2", &[], &env).await;
    // The claim lapses after 7 s, the dead replica's background lease after 10 s; then
    // the second replica's sweep finds the delivery.
    let got = receiver.wait_for(2, Duration::from_secs(40)).await;
    assert!(
        got.iter().all(|r| resource_id(r) == "ev-0"),
        "the abandoned request, then the delivery"
    );
    wait_all_delivered(&second, &admin_key, &endpoint, 1).await;
    assert_eq!(queued_ever(&redis, &prefix).await, 1, "queued by the sweep");
    assert!(
        second.logged("re-enqueued deliveries"),
        "{}",
        second.lines().join("\n")
    );
}

/// How many entries the ready stream of `prefix` was ever given (`XINFO STREAM`'s
/// `entries-added`; 0 if it does not exist).
async fn queued_ever(redis: &str, prefix: &str) -> u64 {
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let info: Result<HashMap<String, redis::Value>, _> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(format!("{{{prefix}}}:ready"))
        .query_async(&mut conn)
        .await;
    match info.ok().and_then(|i| i.get("entries-added").cloned()) {
        Some(redis::Value::Int(n)) => n as u64,
        _ => 0,
    }
}

#[tokio::test]
async fn a_role_split_without_redis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    for flag in ["--api", "--worker"] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", flag])
            .env_clear()
            .env("HERALD_DATABASE_URL", &database)
            .env("HERALD_LISTEN_ADDR", "127.0.0.1:0")
            .output()
            .await
            .expect("run herald");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains("roles") && stderr.contains("redis_url"),
            "{flag}: {stderr}"
        );
    }
    // Roles from the environment are checked the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env_clear()
        .env("HERALD_DATABASE_URL", &database)
        .env("HERALD_ROLES", "worker")
        .output()
        .await
        .expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis_url"));
}
