//! `EventService.Subscribe`: catch-up then live with no gap and no duplicate, the four
//! start positions, filters and environments, slow consumers, heartbeats, shutdown and
//! tenant scope.

use std::{collections::HashSet, time::Duration};

use herald::proto::{
    Event, ListEventsRequest, PublishBatchRequest, PublishRequest, SubscribeRequest,
    SubscribeResponse, event_service_client::EventServiceClient, subscribe_request::Start,
    subscribe_response::Kind,
};
use prost_types::Timestamp;
use tokio::time::{Instant, timeout, timeout_at};
use tonic::{Code, Streaming, transport::Channel};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, authed, payload_for, publish_request, spawn_app, spawn_app_with},
};

/// A few event types of different families, to mix in streams.
pub(crate) const TYPES: [&str; 5] = [
    "license.created",
    "machine.created",
    "user.created",
    "license.updated",
    "machine.deleted",
];

/// How long a tail may stay silent (heartbeats aside) for "nothing more arrives".
const QUIET: Duration = Duration::from_millis(400);

pub(crate) fn starting(start: Start) -> SubscribeRequest {
    SubscribeRequest {
        start: Some(start),
        ..Default::default()
    }
}

pub(crate) async fn open_tail(
    app: &TestApp,
    key: &str,
    req: SubscribeRequest,
) -> Streaming<SubscribeResponse> {
    app.events()
        .await
        .subscribe(authed(key, req))
        .await
        .expect("subscribe")
        .into_inner()
}

async fn subscribe_error(app: &TestApp, key: &str, req: SubscribeRequest) -> tonic::Status {
    match app.events().await.subscribe(authed(key, req)).await {
        Ok(_) => panic!("subscribe should have been refused"),
        Err(status) => status,
    }
}

/// The next event, skipping heartbeats; `None` when none arrives by `deadline`.
/// Panics when the stream ends or fails.
pub(crate) async fn event_by(
    tail: &mut Streaming<SubscribeResponse>,
    deadline: Instant,
) -> Option<Event> {
    loop {
        match timeout_at(deadline, tail.message()).await {
            Err(_) => return None,
            Ok(Ok(Some(SubscribeResponse {
                kind: Some(Kind::Event(event)),
                ..
            }))) => return Some(event),
            Ok(Ok(Some(SubscribeResponse {
                kind: Some(Kind::Heartbeat(_)),
                ..
            }))) => continue,
            Ok(Ok(Some(other))) => panic!("unexpected tail message {other:?}"),
            Ok(Ok(None)) => panic!("the tail ended"),
            Ok(Err(status)) => panic!("the tail failed: {status:?}"),
        }
    }
}

/// Exactly the next `n` events (heartbeats skipped), failing after `within`.
pub(crate) async fn take(
    tail: &mut Streaming<SubscribeResponse>,
    n: usize,
    within: Duration,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match event_by(tail, deadline).await {
            Some(event) => out.push(event),
            None => panic!("only {} of {n} events arrived within {within:?}", out.len()),
        }
    }
    out
}

/// Each publisher's events (its ids, in the order it published them) arrive in that order.
pub(crate) fn assert_each_publisher_in_order(
    received: &[Event],
    published: &[Vec<String>],
    tail: &str,
) {
    for mine in published {
        let order: Vec<&String> = received
            .iter()
            .map(|e| &e.id)
            .filter(|id| mine.contains(id))
            .collect();
        assert_eq!(order, mine.iter().collect::<Vec<_>>(), "{tail}");
    }
}

/// Nothing but heartbeats arrives for `QUIET`.
pub(crate) async fn assert_no_more(tail: &mut Streaming<SubscribeResponse>) {
    if let Some(event) = event_by(tail, Instant::now() + QUIET).await {
        panic!(
            "unexpected extra event {} ({}, tenant {}, environment '{}')",
            event.id, event.type_name, event.tenant_id, event.environment
        );
    }
}

pub(crate) fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

fn request(event_type: &str, id: &str, environment: &str) -> PublishRequest {
    PublishRequest {
        environment: environment.into(),
        ..publish_request(event_type, id)
    }
}

/// Publishes `items` in one atomic batch; the stored events, in commit order.
pub(crate) async fn publish_batch(
    app: &TestApp,
    key: &str,
    items: Vec<PublishRequest>,
) -> Vec<Event> {
    app.events()
        .await
        .publish_batch(authed(key, PublishBatchRequest { events: items }))
        .await
        .expect("publish batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.event.expect("event"))
        .collect()
}

/// `n` events of mixed types in one batch, resource ids `{tag}-{i}`.
pub(crate) async fn publish_n(app: &TestApp, key: &str, tag: &str, n: usize) -> Vec<Event> {
    let items = (0..n)
        .map(|i| publish_request(TYPES[i % TYPES.len()], &format!("{tag}-{i}")))
        .collect();
    publish_batch(app, key, items).await
}

/// Publishes `n` events one `Publish` call at a time on `client`; their ids in order.
pub(crate) async fn publish_one_by_one(
    mut client: EventServiceClient<Channel>,
    key: String,
    tag: String,
    n: usize,
    pad: usize,
) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let event_type = TYPES[i % TYPES.len()];
        let id = format!("{tag}-{i}");
        let mut req = publish_request(event_type, &id);
        if pad > 0 {
            let mut doc: serde_json::Value =
                serde_json::from_str(&payload_for(event_type, &id)).unwrap();
            doc["meta"] = serde_json::json!({ "pad": "x".repeat(pad) });
            req.payload_json = doc.to_string();
        }
        let event = client
            .publish(authed(&key, req))
            .await
            .expect("publish")
            .into_inner()
            .event
            .expect("event");
        out.push(event.id);
    }
    out
}

/// Every event of the key's tenant, newest first (ListEvents order).
pub(crate) async fn list_all(app: &TestApp, key: &str) -> Vec<Event> {
    let mut client = app.events().await;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_events(authed(
                key,
                ListEventsRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
            ))
            .await
            .expect("list events")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// Asserts that `received` is every stored event of the tenant, once, in commit order.
async fn assert_complete_in_commit_order(app: &TestApp, key: &str, received: &[Event]) {
    let unique: HashSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), received.len(), "the tail sent duplicates");
    let mut listed = list_all(app, key).await;
    listed.reverse();
    assert_eq!(
        ids(received),
        ids(&listed),
        "the tail must hold every event once, in commit order"
    );
    let cursors: Vec<&str> = received.iter().map(|e| e.cursor.as_str()).collect();
    let listed_cursors: Vec<&str> = listed.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors, listed_cursors);
}

fn micros(ts: &Timestamp) -> i64 {
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000
}

fn plus_micros(ts: &Timestamp, delta: i64) -> Timestamp {
    let total = micros(ts) + delta;
    Timestamp {
        seconds: total.div_euclid(1_000_000),
        nanos: (total.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

async fn catch_up_then_live_without_gap_or_duplicate(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    publish_n(&app, &keys.publisher, "pre", 50).await;

    // Publishers start first, so the tail's catch-up races them.
    let mut publishers = Vec::new();
    for p in 0..3 {
        let client = app.events().await;
        publishers.push(tokio::spawn(publish_one_by_one(
            client,
            keys.publisher.clone(),
            format!("live{p}"),
            100,
            0,
        )));
    }
    let mut tail = open_tail(&app, &keys.subscriber, starting(Start::Earliest(true))).await;

    let total = 50 + 3 * 100;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < total {
        match event_by(&mut tail, deadline).await {
            Some(event) => {
                seen.insert(event.id.clone());
                received.push(event);
            }
            None => panic!("only {} of {total} events arrived within 20 s", seen.len()),
        }
    }
    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await.expect("publisher task"));
    }
    assert_no_more(&mut tail).await;

    assert_eq!(received.len(), total, "the tail sent duplicates");
    for ids in &published {
        assert!(ids.iter().all(|id| seen.contains(id)));
    }
    assert_each_publisher_in_order(&received, &published, "tail");
    assert_complete_in_commit_order(&app, &keys.subscriber, &received).await;
    assert!(received.iter().all(|e| e.tenant_id == "acme"));
}

async fn live_start_skips_the_past(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    publish_n(&app, &keys.publisher, "before", 3).await;

    // No start means live; `live: true` is the same.
    let mut implicit = open_tail(&app, &keys.subscriber, SubscribeRequest::default()).await;
    let mut explicit = open_tail(&app, &keys.manager, starting(Start::Live(true))).await;

    let after = publish_n(&app, &keys.publisher, "after", 4).await;
    for tail in [&mut implicit, &mut explicit] {
        let got = take(tail, after.len(), Duration::from_secs(10)).await;
        assert_eq!(ids(&got), ids(&after));
        assert_no_more(tail).await;
    }
}

/// A live tail counts from when Subscribe answered: an event published right after
/// the call returns is never missed, even with many tails starting at once.
async fn live_tail_sees_events_published_right_after_subscribing(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut publisher = app.events().await;
    for round in 0..5 {
        let mut tails = futures::future::join_all(
            (0..10).map(|_| open_tail(&app, &keys.subscriber, SubscribeRequest::default())),
        )
        .await;
        let event = publisher
            .publish(authed(
                &keys.publisher,
                publish_request("license.created", &format!("r{round}")),
            ))
            .await
            .expect("publish")
            .into_inner()
            .event
            .expect("event");
        for (i, tail) in tails.iter_mut().enumerate() {
            let got = event_by(tail, Instant::now() + Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("round {round}: tail {i} missed {}", event.id));
            assert_eq!(got.id, event.id);
        }
    }
}

async fn resume_after_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let published = publish_n(&app, &keys.publisher, "r", 10).await;

    let mut first = open_tail(&app, &keys.subscriber, starting(Start::Earliest(true))).await;
    let read = take(&mut first, 10, Duration::from_secs(10)).await;
    assert_eq!(ids(&read), ids(&published));
    for (got, sent) in read.iter().zip(&published) {
        assert_eq!(
            got.cursor, sent.cursor,
            "tails and publish answer the same cursor"
        );
    }
    drop(first);

    let k = 4;
    let mut resumed = open_tail(
        &app,
        &keys.subscriber,
        starting(Start::AfterCursor(read[k - 1].cursor.clone())),
    )
    .await;
    let rest = take(&mut resumed, 10 - k, Duration::from_secs(10)).await;
    assert_eq!(ids(&rest), ids(&published[k..]));
    // It goes on live after catching up.
    let later = publish_n(&app, &keys.publisher, "later", 2).await;
    let live = take(&mut resumed, 2, Duration::from_secs(10)).await;
    assert_eq!(ids(&live), ids(&later));
    assert_no_more(&mut resumed).await;

    // The last cursor resumes with nothing to catch up.
    let mut at_end = open_tail(
        &app,
        &keys.subscriber,
        starting(Start::AfterCursor(later[1].cursor.clone())),
    )
    .await;
    assert_no_more(&mut at_end).await;

    for bad in ["not-a-cursor", "", "YzE6LTM"] {
        let status = subscribe_error(
            &app,
            &keys.subscriber,
            starting(Start::AfterCursor(bad.into())),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(
            status.message().starts_with("after_cursor"),
            "{bad:?}: {}",
            status.message()
        );
    }
}

async fn since_a_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let early = publish_n(&app, &keys.publisher, "early", 5).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = publish_n(&app, &keys.publisher, "late", 5).await;
    let early_at = early.last().unwrap().received_at.expect("received_at");
    let late_at = late[0].received_at.expect("received_at");
    assert!(
        micros(&early_at) < micros(&late_at),
        "the batches have distinct times"
    );

    // Between the batches: only the later one.
    let mut between = open_tail(
        &app,
        &keys.subscriber,
        starting(Start::Since(plus_micros(&early_at, 1))),
    )
    .await;
    let got = take(&mut between, late.len(), Duration::from_secs(10)).await;
    assert_eq!(ids(&got), ids(&late));
    assert_no_more(&mut between).await;

    // "At or after": the exact time of the first batch includes it.
    let mut inclusive = open_tail(&app, &keys.subscriber, starting(Start::Since(early_at))).await;
    let got = take(&mut inclusive, 10, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), [ids(&early), ids(&late)].concat());
    assert_no_more(&mut inclusive).await;

    // A time after everything: nothing until something new.
    let mut future = open_tail(
        &app,
        &keys.subscriber,
        starting(Start::Since(plus_micros(&late_at, 1_000))),
    )
    .await;
    assert_no_more(&mut future).await;
    let newer = publish_n(&app, &keys.publisher, "newer", 1).await;
    let got = take(&mut future, 1, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), ids(&newer));

    let status = subscribe_error(
        &app,
        &keys.subscriber,
        starting(Start::Since(Timestamp {
            seconds: 0,
            nanos: -1,
        })),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("since"),
        "{}",
        status.message()
    );
}

async fn filters_and_environment(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mix = |tag: &str| {
        vec![
            request("license.created", &format!("{tag}-1"), ""),
            request("machine.created", &format!("{tag}-2"), ""),
            request("user.created", &format!("{tag}-3"), ""),
            request("license.updated", &format!("{tag}-4"), "sandbox"),
            request("machine.created", &format!("{tag}-5"), "sandbox"),
            request("machine.deleted", &format!("{tag}-6"), ""),
            request("license.usage.incremented", &format!("{tag}-7"), "live"),
        ]
    };
    let before = publish_batch(&app, &keys.publisher, mix("before")).await;

    let with = |filters: &[&str], environment: &str| SubscribeRequest {
        filters: filters.iter().map(|f| f.to_string()).collect(),
        environment: environment.into(),
        start: Some(Start::Earliest(true)),
        ..Default::default()
    };
    let mut licenses = open_tail(&app, &keys.subscriber, with(&["license.*"], "")).await;
    let mut machines_created =
        open_tail(&app, &keys.subscriber, with(&["machine.created"], "")).await;
    let mut sandbox = open_tail(&app, &keys.subscriber, with(&[], "sandbox")).await;
    let mut sandbox_machines =
        open_tail(&app, &keys.subscriber, with(&["machine.*"], "sandbox")).await;
    let mut several = open_tail(
        &app,
        &keys.subscriber,
        with(&["user.created", "license.usage.*"], ""),
    )
    .await;

    // Half stored before the tails opened (catch-up), half after (live).
    let after = publish_batch(&app, &keys.publisher, mix("after")).await;
    let all: Vec<Event> = before.into_iter().chain(after).collect();
    let expect = |keep: &dyn Fn(&Event) -> bool| -> Vec<String> {
        all.iter()
            .filter(|e| keep(e))
            .map(|e| e.id.clone())
            .collect()
    };
    let cases: [(&mut Streaming<SubscribeResponse>, Vec<String>); 5] = [
        (
            &mut licenses,
            expect(&|e| e.type_name.starts_with("license.")),
        ),
        (
            &mut machines_created,
            expect(&|e| e.type_name == "machine.created"),
        ),
        (&mut sandbox, expect(&|e| e.environment == "sandbox")),
        (
            &mut sandbox_machines,
            expect(&|e| e.environment == "sandbox" && e.type_name.starts_with("machine.")),
        ),
        (
            &mut several,
            expect(&|e| e.type_name == "user.created" || e.type_name.starts_with("license.usage.")),
        ),
    ];
    for (tail, expected) in cases {
        assert!(!expected.is_empty());
        let got = take(tail, expected.len(), Duration::from_secs(10)).await;
        assert_eq!(ids(&got), expected);
        assert_no_more(tail).await;
    }

    for (filters, field) in [
        (vec!["licence.*"], "filters[0]"),
        (vec!["*", "license"], "filters[1]"),
        (vec!["machine.created", "lic*"], "filters[1]"),
    ] {
        let status = subscribe_error(&app, &keys.subscriber, with(&filters, "")).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{filters:?}");
        assert!(
            status.message().starts_with(field),
            "{filters:?}: {}",
            status.message()
        );
    }
    let status = subscribe_error(&app, &keys.subscriber, with(&[], "no spaces")).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("environment"),
        "{}",
        status.message()
    );
}

async fn slow_tail(
    app: &TestApp,
    key: &str,
    req: SubscribeRequest,
) -> Streaming<SubscribeResponse> {
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .expect("connect");
    EventServiceClient::new(channel)
        .subscribe(authed(key, req))
        .await
        .expect("subscribe")
        .into_inner()
}

/// A client that does not read makes its tail lag behind the bus; publishers never
/// wait for it, and once it reads it gets everything, in order, from storage.
async fn slow_consumer_falls_back_to_storage(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.tail_buffer = 16).await;
    let keys = app.tenant("acme").await;

    // Connections with small HTTP/2 windows, so that an unread tail backs up into the
    // server (and its bus receiver lags) rather than into client buffers. One per
    // tail: an unread stream holds its connection's window.
    let mut slow = slow_tail(&app, &keys.subscriber, starting(Start::Earliest(true))).await;
    let mut slow_filtered = slow_tail(
        &app,
        &keys.subscriber,
        SubscribeRequest {
            filters: vec!["license.*".into()],
            ..Default::default()
        },
    )
    .await;

    // 5 × 100 events of ~5 KB each (payload and Struct): far more than the tail's
    // buffers hold.
    let mut publishers = Vec::new();
    for p in 0..5 {
        let client = app.events().await;
        publishers.push(tokio::spawn(publish_one_by_one(
            client,
            keys.publisher.clone(),
            format!("p{p}"),
            100,
            2000,
        )));
    }
    let publishing = async {
        let mut all = Vec::new();
        for p in publishers {
            all.extend(p.await.expect("publisher task"));
        }
        all
    };
    let published = timeout(Duration::from_secs(60), publishing)
        .await
        .expect("publishers must not wait for a slow tail");
    assert_eq!(published.len(), 500);

    let received = take(&mut slow, 500, Duration::from_secs(30)).await;
    assert_no_more(&mut slow).await;
    assert_complete_in_commit_order(&app, &keys.subscriber, &received).await;

    let licenses: Vec<String> = received
        .iter()
        .filter(|e| e.type_name.starts_with("license."))
        .map(|e| e.id.clone())
        .collect();
    let got = take(&mut slow_filtered, licenses.len(), Duration::from_secs(30)).await;
    assert_eq!(ids(&got), licenses);
    assert_no_more(&mut slow_filtered).await;
}

async fn idle_tail_gets_heartbeats(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut tail = open_tail(&app, &keys.subscriber, SubscribeRequest::default()).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for _ in 0..2 {
        let message = timeout(Duration::from_secs(3), tail.message())
            .await
            .expect("a heartbeat within 3 s (interval 1 s)")
            .expect("tail ok")
            .expect("tail open");
        match message.kind {
            Some(Kind::Heartbeat(beat)) => {
                let time = beat.time.expect("heartbeat time");
                assert!((time.seconds - started).abs() < 60, "{time:?}");
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

async fn graceful_shutdown_ends_tails(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let event = publish_n(&app, &keys.publisher, "x", 1).await;
    let mut caught_up = open_tail(&app, &keys.subscriber, starting(Start::Earliest(true))).await;
    let got = take(&mut caught_up, 1, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), ids(&event));
    let mut live = open_tail(&app, &keys.subscriber, SubscribeRequest::default()).await;

    timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("shutdown completes with tails open");

    for tail in [&mut caught_up, &mut live] {
        loop {
            match timeout(Duration::from_secs(5), tail.message())
                .await
                .expect("the tail ends instead of hanging")
            {
                Ok(Some(SubscribeResponse {
                    kind: Some(Kind::Heartbeat(_)),
                    ..
                })) => continue,
                Ok(Some(other)) => panic!("unexpected message after shutdown: {other:?}"),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

async fn tails_are_tenant_scoped(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    publish_n(&app, &other.publisher, "other-before", 5).await;
    let acme_before = publish_n(&app, &acme.publisher, "acme-before", 5).await;

    let mut acme_tail = open_tail(&app, &acme.subscriber, starting(Start::Earliest(true))).await;
    let mut acme_live = open_tail(&app, &acme.manager, SubscribeRequest::default()).await;
    let mut other_tail = open_tail(
        &app,
        &app.admin_key,
        SubscribeRequest {
            tenant_id: "other".into(),
            start: Some(Start::Earliest(true)),
            ..Default::default()
        },
    )
    .await;

    // Interleaved, and concurrently from both tenants.
    let acme_publisher = tokio::spawn(publish_one_by_one(
        app.events().await,
        acme.publisher.clone(),
        "acme".into(),
        20,
        0,
    ));
    let other_publisher = tokio::spawn(publish_one_by_one(
        app.events().await,
        other.publisher.clone(),
        "other".into(),
        20,
        0,
    ));
    let acme_live_ids = acme_publisher.await.unwrap();
    let other_ids = other_publisher.await.unwrap();

    let got = take(&mut acme_tail, 25, Duration::from_secs(10)).await;
    assert!(got.iter().all(|e| e.tenant_id == "acme"));
    assert_eq!(
        ids(&got),
        [ids(&acme_before), acme_live_ids.clone()].concat()
    );
    assert_no_more(&mut acme_tail).await;

    let got = take(&mut acme_live, 20, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), acme_live_ids);
    assert_no_more(&mut acme_live).await;

    let got = take(&mut other_tail, 25, Duration::from_secs(10)).await;
    assert!(got.iter().all(|e| e.tenant_id == "other"));
    assert_eq!(
        got[5..].iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        other_ids
    );
    assert_no_more(&mut other_tail).await;
}

both_backends!(
    catch_up_then_live_without_gap_or_duplicate,
    live_start_skips_the_past,
    live_tail_sees_events_published_right_after_subscribing,
    resume_after_cursor,
    since_a_time,
    filters_and_environment,
    slow_consumer_falls_back_to_storage,
    idle_tail_gets_heartbeats,
    graceful_shutdown_ends_tails,
    tails_are_tenant_scoped,
);
