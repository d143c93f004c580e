//! Herald on a Redis Cluster: a private three-master cluster on free ports
//! (`redis-server --cluster-enabled yes` ×3, `redis-cli --cluster create`), PostgreSQL
//! for storage, `redis_url` the comma-separated seeds. What a user checks: webhooks
//! delivered, a retry that waits in the sorted set, a tail on one replica that sees the
//! other's publishes, the background lease held; and the master of Herald's slot killed
//! and restarted: health reports the outage, publishes are kept, and delivery resumes.
//!
//! `redis-server` and `redis-cli` must be on PATH: these tests fail, not skip, without them.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use herald::{
    config::Secret,
    proto::{
        Delivery, DeliveryStatus, Event, ListDeliveriesRequest, SubscribeRequest,
        delivery_service_client::DeliveryServiceClient,
    },
    server::DELIVERY_HEALTH,
};
use redis::{AsyncCommands, aio::MultiplexedConnection, cluster_async::ClusterConnection};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    helpers::{
        Backend, TenantKeys, TestApp, authed, endpoint, eventually, publish_license as publish,
        spawn_app_with,
    },
    observability::{health_of, wait_health},
    receiver::{Receiver, Reply},
    subscribe::{event_by, open_tail},
};

const WAIT: Duration = Duration::from_secs(30);
const MASTERS: usize = 3;

/// A Redis Cluster of this test's own, in a temporary directory; its processes are
/// killed when it is dropped, also when the test fails.
struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
}

/// Fails the test, with a message saying what to install, if `tool` cannot run.
fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the Redis Cluster tests need `{tool}` on PATH (Debian/Ubuntu: apt-get install redis-server \
         redis-tools)"
    );
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        if taken.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        return port;
    }
    panic!("no free port pair for a cluster node");
}

impl Cluster {
    async fn start() -> Cluster {
        require("redis-server");
        require("redis-cli");
        let mut ports = Vec::new();
        for _ in 0..MASTERS {
            ports.push(free_port(&ports));
        }
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            nodes: (0..MASTERS).map(|_| None).collect(),
            ports,
        };
        for node in 0..MASTERS {
            cluster.start_node(node).await;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// Starts node `n` (again): the same port and cluster configuration file, so a
    /// restarted node is the same member, holding the same slots, with no data.
    async fn start_node(&mut self, n: usize) {
        let port = self.ports[n].to_string();
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            // Fail over and recover within seconds rather than the default 15 s.
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join(format!("redis-{port}.log")))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.nodes[n] = Some(child);
        eventually(
            &format!("node {port} accepts connections"),
            WAIT,
            || async { self.node(n).await.map(|_| ()) },
        )
        .await;
    }

    /// Kills node `n` (SIGKILL: no goodbye to the others or to Herald).
    fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.nodes[n].take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Waits until every node says `cluster_state:ok`.
    async fn wait_ok(&self) {
        for n in 0..MASTERS {
            eventually("cluster_state:ok", WAIT, || async {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut self.node(n).await?)
                    .await
                    .map_err(|e| e.to_string())?;
                if info.contains("cluster_state:ok") {
                    Ok(())
                } else {
                    Err(self.log_tail(n, info))
                }
            })
            .await;
        }
    }

    fn log_tail(&self, n: usize, info: String) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join(format!("redis-{}.log", self.ports[n])))
                .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        format!("{info}\nlog: {}", tail.join(" | "))
    }

    /// Herald's `redis_url`: every node a seed.
    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A plain connection to node `n` alone.
    async fn node(&self, n: usize) -> Result<MultiplexedConnection, String> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.ports[n]))
            .map_err(|e| e.to_string())?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())
    }

    /// A cluster connection, as a user's `redis-cli -c` would route.
    async fn routed(&self) -> ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .get_async_connection()
        .await
        .expect("a cluster connection")
    }

    /// The node that serves `key`'s slot: the others answer MOVED.
    async fn owner_of(&self, key: &str) -> usize {
        for n in 0..MASTERS {
            let mut conn = self.node(n).await.expect("node up");
            let served: redis::RedisResult<Option<String>> = conn.get(key).await;
            if served.is_ok() {
                return n;
            }
        }
        panic!("no node serves {key}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in 0..MASTERS {
            self.kill(n);
        }
    }
}

async fn app_on(cluster: &Cluster, tweak: impl FnOnce(&mut herald::config::Config)) -> TestApp {
    let url = cluster.url();
    spawn_app_with(Backend::Postgres, |c| {
        c.redis_url = Some(Secret::new(url));
        tweak(c);
    })
    .await
}

async fn delivered(app: &TestApp, keys: &TenantKeys, event: &Event) -> Delivery {
    let client = DeliveryServiceClient::new(app.channel().await);
    eventually(&format!("{} delivered", event.id), WAIT, || {
        let mut client = client.clone();
        async move {
            let found = client
                .list_deliveries(authed(
                    &keys.manager,
                    ListDeliveriesRequest {
                        event_id: event.id.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .deliveries;
            match found.as_slice() {
                [d] if d.status() == DeliveryStatus::Delivered => Ok(d.clone()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
}

/// Two replicas on one cluster: a webhook retried through `{prefix}:scheduled` and
/// delivered, a publish on the other replica delivered, a tail on B that sees both, each
/// replica following the announcements, every key of the deployment on one node, and the
/// background lease held by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_deliver_retry_relay_and_lease_on_a_cluster() {
    let cluster = Cluster::start().await;
    // Retries after 2 s: time to watch the retry wait in the sorted set.
    let a = app_on(&cluster, |c| c.retry_schedule_secs = vec![2, 2]).await;
    let b = a.replica().await;
    let prefix = a.config.redis_prefix.clone();
    let keys = a.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.script(vec![Reply::Status(503)]);
    endpoint(&a, &keys, rx.url("/hook")).await;
    let mut tail = open_tail(&b, &keys.subscriber, SubscribeRequest::default()).await;
    let routed = cluster.routed().await;

    // Published on A: refused once, retried from the sorted set, delivered.
    let first = publish(&a, &keys, "lic-1").await;
    rx.wait_for(1, WAIT).await;
    let scheduled = format!("{{{prefix}}}:scheduled");
    eventually("the retry waits in the sorted set", WAIT, || {
        let (mut routed, scheduled) = (routed.clone(), scheduled.clone());
        async move {
            let waiting: u64 = routed.zcard(&scheduled).await.map_err(|e| e.to_string())?;
            if waiting == 1 {
                Ok(())
            } else {
                Err(format!("ZCARD {waiting}"))
            }
        }
    })
    .await;
    let got = rx.wait_for(2, WAIT).await;
    let delivery = delivered(&a, &keys, &first).await;
    assert_eq!(
        (delivery.attempts, delivery.last_response_code),
        (2, 204),
        "{delivery:?}"
    );
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(1500),
        "the retry waited for its delay: {:?}",
        got[1].at - got[0].at
    );
    let waiting: u64 = routed.clone().zcard(&scheduled).await.unwrap();
    assert_eq!(waiting, 0, "promoted out of the sorted set");

    // Published on B: delivered at the first attempt.
    let second = publish(&b, &keys, "lic-2").await;
    let delivery = delivered(&b, &keys, &second).await;
    assert_eq!(delivery.attempts, 1, "{delivery:?}");
    assert_eq!(rx.wait_for(3, WAIT).await.len(), 3);

    // The tail on B saw A's event and its own, in order.
    let deadline = tokio::time::Instant::now() + WAIT;
    for want in [&first, &second] {
        let seen = event_by(&mut tail, deadline)
            .await
            .unwrap_or_else(|| panic!("the tail on B never saw {}", want.id));
        assert_eq!(seen.id, want.id);
    }
    // Each replica follows the announcements on one node (any node hears every PUBLISH).
    let channel = herald::relay::channel(&prefix);
    eventually("both replicas subscribed", WAIT, || async {
        let mut subscribers = 0;
        for n in 0..MASTERS {
            let (_, count): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut cluster.node(n).await?)
                .await
                .map_err(|e| e.to_string())?;
            subscribers += count;
        }
        if subscribers == 2 {
            Ok(())
        } else {
            Err(format!("{subscribers} subscribers"))
        }
    })
    .await;

    // The background lease: held by a replica of this process, expiring unless renewed.
    let lease = herald::lease::key(&prefix);
    let holder: String = eventually("a replica holds the lease", WAIT, || {
        let (mut routed, lease) = (routed.clone(), lease.clone());
        async move {
            let holder: Option<String> = routed.get(&lease).await.map_err(|e| e.to_string())?;
            holder.ok_or("no holder".to_string())
        }
    })
    .await;
    let (pid, id) = holder.split_once('-').expect("<pid>-<ulid>");
    assert_eq!(pid, std::process::id().to_string(), "{holder}");
    assert!(id.parse::<ulid::Ulid>().is_ok(), "{holder}");
    let ttl: i64 = routed.clone().pttl(&lease).await.unwrap();
    assert!(ttl > 0 && ttl <= 10_000, "PTTL {ttl}");

    // Every key of the deployment lives on the node of its hash tag's slot.
    let owner = cluster.owner_of(&lease).await;
    let present: u64 = redis::cmd("EXISTS")
        .arg(format!("{{{prefix}}}:ready"))
        .arg(format!("{{{prefix}}}:epoch"))
        .arg(&lease)
        .query_async(&mut cluster.node(owner).await.unwrap())
        .await
        .unwrap();
    assert_eq!(present, 3, "stream, epoch and lease on one node");
}

/// The master of Herald's slot killed: delivery health goes NOT_SERVING while the API
/// stays up and keeps publishes; the master restarted empty, Herald reconnects, reports
/// SERVING, and delivers what was published meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_master_of_heralds_slot_is_reported_and_survived() {
    let mut cluster = Cluster::start().await;
    let app = app_on(&cluster, |_| {}).await;
    let prefix = app.config.redis_prefix.clone();
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    endpoint(&app, &keys, rx.url("/hook")).await;
    let before = publish(&app, &keys, "lic-before").await;
    delivered(&app, &keys, &before).await;
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::Serving).await;

    let owner = cluster.owner_of(&format!("{{{prefix}}}:epoch")).await;
    cluster.kill(owner);
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::NotServing).await;
    assert_eq!(
        health_of(app.addr, "").await.unwrap(),
        ServingStatus::Serving,
        "the API stays up"
    );
    let during = publish(&app, &keys, "lic-during").await;

    cluster.start_node(owner).await;
    cluster.wait_ok().await;
    wait_health(app.addr, DELIVERY_HEALTH, ServingStatus::Serving).await;
    delivered(&app, &keys, &during).await;
    let after = publish(&app, &keys, "lic-after").await;
    delivered(&app, &keys, &after).await;
    let got = rx.received();
    assert_eq!(got.len(), 3, "each event delivered once: {got:?}");
}
