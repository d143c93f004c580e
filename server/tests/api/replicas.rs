//! Several replicas on one PostgreSQL and one Redis: a tail on any replica sees the
//! events published on every replica, once each, in commit order, with no gap at the
//! switch from catch-up to live, and even when Redis drops the announcements.

use std::{
    collections::HashSet,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use herald::{
    config::Secret,
    proto::{Event, SubscribeRequest, SubscribeResponse, subscribe_request::Start},
};
use tokio::time::Instant;
use tonic::Streaming;

use crate::{
    helpers::{Backend, TestApp, authed, publish_request, spawn_app, spawn_app_with},
    subscribe::{
        assert_each_publisher_in_order, assert_no_more, event_by, ids, list_all, open_tail,
        publish_n, publish_one_by_one, starting, take,
    },
};

/// Reads events from `tail` until `n` distinct ones arrived (duplicates are kept, to
/// be asserted on), failing after `within`.
async fn collect(
    tail: &mut Streaming<SubscribeResponse>,
    n: usize,
    within: Duration,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < n {
        match event_by(tail, deadline).await {
            Some(event) => {
                seen.insert(event.id.clone());
                received.push(event);
            }
            None => panic!(
                "only {} of {n} events arrived within {within:?}",
                seen.len()
            ),
        }
    }
    received
}

fn seq(event: &Event) -> i64 {
    herald::tail::decode_cursor("cursor", &event.cursor).expect("a cursor")
}

/// `received` is exactly the tenant's stored events after `after` (a sequence number),
/// once each, in commit order.
async fn assert_exactly_the_events_after(
    app: &TestApp,
    key: &str,
    after: i64,
    received: &[Event],
    tail: &str,
) {
    let unique: HashSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), received.len(), "{tail}: duplicates");
    let mut stored = list_all(app, key).await;
    stored.reverse();
    stored.retain(|e| seq(e) > after);
    assert_eq!(
        ids(received),
        ids(&stored),
        "{tail}: every event after its start, once, in commit order"
    );
    assert!(
        received.windows(2).all(|w| seq(&w[0]) < seq(&w[1])),
        "{tail}: cursors rise"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_any_replica_sees_publishes_on_every_replica() {
    let a = spawn_app(Backend::Postgres).await;
    let b = a.replica().await;
    let keys = a.tenant("acme").await;
    let other = a.tenant("other").await;
    let mut tails = vec![
        (
            "tail on B",
            open_tail(&b, &keys.subscriber, SubscribeRequest::default()).await,
        ),
        (
            "tail on A",
            open_tail(&a, &keys.subscriber, SubscribeRequest::default()).await,
        ),
    ];

    // Interleaved: two publishers on each replica, and another tenant's batches on B.
    let mut publishers = Vec::new();
    for (p, app) in [&a, &b, &a, &b].into_iter().enumerate() {
        publishers.push(tokio::spawn(publish_one_by_one(
            app.events().await,
            keys.publisher.clone(),
            format!("p{p}"),
            60,
            0,
        )));
    }
    for round in 0..5 {
        publish_n(&b, &other.publisher, &format!("other{round}"), 10).await;
    }
    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await.expect("publisher"));
    }

    let total = 4 * 60;
    for (name, tail) in &mut tails {
        let received = collect(tail, total, Duration::from_secs(30)).await;
        assert_no_more(tail).await;
        assert_exactly_the_events_after(&a, &keys.subscriber, 0, &received, name).await;
        assert!(received.iter().all(|e| e.tenant_id == "acme"));
        assert_each_publisher_in_order(&received, &published, name);
    }
}

/// Tails starting from cursors, on both replicas, while both publish: each catches up
/// from storage (more than one page) and switches to live with no gap or duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_from_cursors_switch_to_live_while_other_replicas_publish() {
    let a = spawn_app(Backend::Postgres).await;
    let b = a.replica().await;
    let keys = a.tenant("acme").await;
    let pre = publish_n(&a, &keys.publisher, "pre", 700).await;

    let mut publishers = Vec::new();
    for (p, app) in [&a, &b].into_iter().enumerate() {
        publishers.push(tokio::spawn(publish_one_by_one(
            app.events().await,
            keys.publisher.clone(),
            format!("live{p}"),
            100,
            0,
        )));
    }
    let mut tails = Vec::new();
    for i in 0..4 {
        let from = &pre[i * 100];
        let app = if i % 2 == 0 { &b } else { &a };
        let request = starting(Start::AfterCursor(from.cursor.clone()));
        let tail = open_tail(app, &keys.subscriber, request).await;
        tails.push((seq(from), pre.len() - (i * 100 + 1), tail));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for p in publishers {
        p.await.expect("publisher");
    }

    for (i, (after, before_live, tail)) in tails.iter_mut().enumerate() {
        let received = collect(tail, *before_live + 200, Duration::from_secs(30)).await;
        assert_no_more(tail).await;
        let name = format!("tail {i} (on {})", if i % 2 == 0 { "B" } else { "A" });
        assert_exactly_the_events_after(&a, &keys.subscriber, *after, &received, &name).await;
    }
}

/// A tail on a replica that had no tail while the others published starts where its
/// client asked, not where the replica's relay last read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_tails_still_serves_every_start() {
    let a = spawn_app(Backend::Postgres).await;
    let b = a.replica().await;
    let keys = a.tenant("acme").await;
    let early = publish_n(&a, &keys.publisher, "early", 30).await;
    // Long enough for B's relay to move on without reading (it polls every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = publish_n(&a, &keys.publisher, "late", 20).await;

    let mut earliest = open_tail(&b, &keys.subscriber, starting(Start::Earliest(true))).await;
    let mut live = open_tail(&b, &keys.subscriber, SubscribeRequest::default()).await;
    let next = publish_n(&a, &keys.publisher, "next", 10).await;

    let got = take(&mut earliest, 60, Duration::from_secs(10)).await;
    let all: Vec<Event> = [early, late, next.clone()].concat();
    assert_eq!(ids(&got), ids(&all));
    assert_eq!(
        ids(&take(&mut live, 10, Duration::from_secs(10)).await),
        ids(&next)
    );
    assert_no_more(&mut earliest).await;
    assert_no_more(&mut live).await;
}

/// A Redis of this test alone, so it can be stopped without disturbing other tests.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port, empty) and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server starts");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Subscribers of `channel` right now.
    async fn subscribers(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).expect("url");
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return 0;
        };
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        counts.first().map(|(_, n)| *n).unwrap_or(0)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn publish_one(app: &TestApp, key: &str, id: &str) -> Event {
    app.events()
        .await
        .publish(authed(key, publish_request("license.created", id)))
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
}

/// Announcements lost while Redis is down only delay events (the relay polls), and the
/// replicas subscribe again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_announcements_are_covered_and_subscriptions_come_back() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let a = spawn_app_with(Backend::Postgres, |c| c.redis_url = Some(Secret::new(url))).await;
    let b = a.replica().await;
    let channel = herald::relay::channel(&a.config.redis_prefix);
    let keys = a.tenant("acme").await;
    let mut tail = open_tail(&b, &keys.subscriber, SubscribeRequest::default()).await;

    let first = publish_one(&a, &keys.publisher, "with-redis").await;
    let got = take(&mut tail, 1, Duration::from_secs(5)).await;
    assert_eq!(ids(&got), vec![first.id]);

    redis.stop();
    let started = Instant::now();
    let unannounced = publish_one(&a, &keys.publisher, "redis-down").await;
    let got = take(&mut tail, 1, Duration::from_secs(3)).await;
    assert_eq!(ids(&got), vec![unannounced.id], "delivered by the poll");
    assert!(started.elapsed() < Duration::from_secs(3));

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis.subscribers(&channel).await < 2 {
        assert!(
            Instant::now() < deadline,
            "both replicas subscribe again within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = publish_one(&a, &keys.publisher, "redis-back").await;
    let got = take(&mut tail, 1, Duration::from_secs(3)).await;
    assert_eq!(ids(&got), vec![last.id]);
    assert_no_more(&mut tail).await;
}
