//! The basic round trip: create a tenant, publish, read it back, tail it.

use futures::StreamExt;
use herald::proto::{GetEventRequest, SubscribeRequest, subscribe_request, subscribe_response};

use crate::{
    both_backends,
    helpers::{Backend, authed, publish_request, spawn_app},
};

async fn publish_then_get_and_tail(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let published = events
        .publish(authed(
            &keys.publisher,
            publish_request("license.created", "lic-1"),
        ))
        .await
        .expect("publish")
        .into_inner();
    let event = published.event.expect("event");
    assert!(event.id.starts_with("evt_"));
    assert_eq!(event.tenant_id, "acme");
    assert!(!published.duplicate);

    let got = events
        .get_event(authed(
            &keys.subscriber,
            GetEventRequest {
                id: event.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.payload_json, event.payload_json);

    let mut tail = events
        .subscribe(authed(
            &keys.subscriber,
            SubscribeRequest {
                start: Some(subscribe_request::Start::Earliest(true)),
                ..Default::default()
            },
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = tail.next().await.expect("a message").expect("ok");
    match first.kind {
        Some(subscribe_response::Kind::Event(e)) => assert_eq!(e.id, event.id),
        other => panic!("expected the event, got {other:?}"),
    }
}

both_backends!(publish_then_get_and_tail);
