//! Who may do what: authentication, roles, tenant isolation on every service, admin
//! calls and API keys, endpoint CRUD and validation, and pagination of the admin lists.

use std::{collections::HashMap, fmt::Debug, time::Duration};

use herald::proto::{
    self, CreateApiKeyRequest, CreateEndpointRequest, CreateTenantRequest, DeleteEndpointRequest,
    DeleteTenantRequest, Endpoint, FilterList, GetEndpointRequest, GetEventRequest,
    GetTenantRequest, KeygenAlgorithm, ListApiKeysRequest, ListEndpointsRequest,
    ListEventTypesRequest, ListEventsRequest, ListTenantsRequest, Metadata, PublishBatchRequest,
    PublishStreamRequest, RevokeApiKeyRequest, Role, RotateEndpointSecretRequest, SignatureScheme,
    SigningSettings, SubscribeRequest, UpdateEndpointRequest, WebhookFormat,
    publish_stream_response, subscribe_request::Start, subscribe_response::Kind,
};
use prost_types::Timestamp;
use tokio::time::timeout;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    both_backends,
    helpers::{Backend, TenantKeys, TestApp, authed, publish_request, spawn_app, spawn_app_with},
};

/// The error of a call that must fail.
fn refused<T: Debug>(result: Result<Response<T>, Status>) -> Status {
    match result {
        Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
        Err(status) => status,
    }
}

/// Asserts the code, and that the message starts with `field` when one is given
/// (messages of INVALID_ARGUMENT begin with the field path).
#[track_caller]
fn assert_status(status: &Status, code: Code, field: Option<&str>) {
    assert_eq!(status.code(), code, "{status:?}");
    if let Some(field) = field {
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "expected the message to name `{field}`: {:?}",
            status.message()
        );
    }
}

/// `msg` with a raw `authorization` value.
fn with_authorization<T>(value: &str, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii"));
    request
}

/// `msg` with `authorization: <value>`, or without the header for `None`.
fn with_auth<T>(value: &Option<String>, msg: T) -> Request<T> {
    match value {
        None => Request::new(msg),
        Some(value) => with_authorization(value, msg),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn endpoint_request(url: &str) -> CreateEndpointRequest {
    CreateEndpointRequest {
        url: url.into(),
        ..Default::default()
    }
}

async fn publish(app: &TestApp, key: &str, event_type: &str, id: &str) -> proto::Event {
    app.events()
        .await
        .publish(authed(key, publish_request(event_type, id)))
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
}

async fn create_endpoint(app: &TestApp, key: &str, url: &str) -> Endpoint {
    app.endpoints()
        .await
        .create_endpoint(authed(key, endpoint_request(url)))
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
}

async fn list_event_ids(app: &TestApp, key: &str, tenant_id: &str) -> Vec<String> {
    app.events()
        .await
        .list_events(authed(
            key,
            ListEventsRequest {
                tenant_id: tenant_id.into(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list events")
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.id)
        .collect()
}

async fn list_endpoints(app: &TestApp, key: &str, tenant_id: &str) -> Vec<Endpoint> {
    app.endpoints()
        .await
        .list_endpoints(authed(
            key,
            ListEndpointsRequest {
                tenant_id: tenant_id.into(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list endpoints")
        .into_inner()
        .endpoints
}

/// Creates an API key; returns its id and secret.
async fn create_key(app: &TestApp, tenant_id: &str, role: Role) -> (String, String) {
    let created = app
        .admin()
        .await
        .create_api_key(authed(
            &app.admin_key,
            CreateApiKeyRequest {
                tenant_id: tenant_id.into(),
                role: role as i32,
                name: format!("{role:?} key"),
            },
        ))
        .await
        .expect("create key")
        .into_inner();
    (created.api_key.expect("api key").id, created.secret)
}

/// A call that needs some key: ListEventTypes, which any valid key may call.
async fn key_works(app: &TestApp, key: &str) -> Result<(), Status> {
    app.events()
        .await
        .list_event_types(authed(key, ListEventTypesRequest::default()))
        .await
        .map(|_| ())
}

async fn authentication(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let mut endpoints = app.endpoints().await;
    let mut admin = app.admin().await;

    // One call per service, with no key, an unknown key and malformed headers.
    for auth in [
        None,
        Some("Bearer hrk_not-a-key-of-this-server".to_string()),
        Some(format!("Basic {}", keys.manager)),
        Some("Basic x".to_string()),
        Some("Bearer ".to_string()),
        Some(keys.manager.clone()),
    ] {
        let status = refused(
            events
                .list_events(with_auth(&auth, ListEventsRequest::default()))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
        let status = refused(
            events
                .publish(with_auth(&auth, publish_request("license.created", "x")))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
        let status = refused(
            events
                .subscribe(with_auth(&auth, SubscribeRequest::default()))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
        let status = refused(
            endpoints
                .list_endpoints(with_auth(&auth, ListEndpointsRequest::default()))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
        let status = refused(
            admin
                .list_tenants(with_auth(&auth, ListTenantsRequest::default()))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
        let status = refused(
            admin
                .get_tenant(with_auth(&auth, GetTenantRequest { id: "acme".into() }))
                .await,
        );
        assert_status(&status, Code::Unauthenticated, None);
    }
    // The lowercase scheme is accepted too.
    endpoints
        .list_endpoints(with_authorization(
            &format!("bearer {}", keys.manager),
            ListEndpointsRequest::default(),
        ))
        .await
        .expect("lowercase bearer");

    // A revoked key stops working at once.
    let (key_id, secret) = create_key(&app, "acme", Role::Subscriber).await;
    key_works(&app, &secret).await.expect("new key works");
    list_event_ids(&app, &secret, "").await;
    let revoked = admin
        .revoke_api_key(authed(
            &app.admin_key,
            RevokeApiKeyRequest { id: key_id.clone() },
        ))
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.id, key_id);
    let revoked_at = revoked.revoked_at.expect("revoked_at set");
    assert_status(
        &key_works(&app, &secret).await.unwrap_err(),
        Code::Unauthenticated,
        None,
    );
    let status = refused(
        events
            .list_events(authed(&secret, ListEventsRequest::default()))
            .await,
    );
    assert_status(&status, Code::Unauthenticated, None);
    // Revoking again is harmless and keeps the first time.
    let again = admin
        .revoke_api_key(authed(
            &app.admin_key,
            RevokeApiKeyRequest { id: key_id.clone() },
        ))
        .await
        .expect("revoke again")
        .into_inner();
    assert_eq!(again.revoked_at, Some(revoked_at));
    // Other keys of the tenant are unaffected.
    key_works(&app, &keys.subscriber).await.expect("other key");

    // Health needs no key.
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "herald.v1.EventService", "herald.v1.AdminService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of '{service}': {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "'{service}'");
    }
}

async fn roles(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    app.tenant("other").await;
    let mut events = app.events().await;
    let mut endpoints = app.endpoints().await;
    let mut admin = app.admin().await;
    let denied = |status: Status| assert_status(&status, Code::PermissionDenied, None);

    // Publisher: publishes, nothing else.
    let event = publish(&app, &keys.publisher, "license.created", "l1").await;
    events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![publish_request("machine.created", "m1")],
            },
        ))
        .await
        .expect("publisher may batch");
    key_works(&app, &keys.publisher)
        .await
        .expect("any key may list event types");
    denied(refused(
        events
            .list_events(authed(&keys.publisher, ListEventsRequest::default()))
            .await,
    ));
    denied(refused(
        events
            .get_event(authed(
                &keys.publisher,
                GetEventRequest {
                    id: event.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    denied(refused(
        events
            .subscribe(authed(&keys.publisher, SubscribeRequest::default()))
            .await,
    ));
    denied(refused(
        endpoints
            .create_endpoint(authed(
                &keys.publisher,
                endpoint_request("https://example.com/p"),
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .list_endpoints(authed(&keys.publisher, ListEndpointsRequest::default()))
            .await,
    ));

    // Subscriber: reads and tails, does not publish or manage endpoints.
    assert_eq!(list_event_ids(&app, &keys.subscriber, "").await.len(), 2);
    events
        .get_event(authed(
            &keys.subscriber,
            GetEventRequest {
                id: event.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("subscriber may get events");
    let mut tail = events
        .subscribe(authed(
            &keys.subscriber,
            SubscribeRequest {
                start: Some(Start::Earliest(true)),
                ..Default::default()
            },
        ))
        .await
        .expect("subscriber may tail")
        .into_inner();
    let first = timeout(Duration::from_secs(10), tail.message())
        .await
        .expect("first message")
        .expect("ok")
        .expect("open");
    assert!(matches!(first.kind, Some(Kind::Event(e)) if e.id == event.id));
    denied(refused(
        events
            .publish(authed(
                &keys.subscriber,
                publish_request("license.created", "s1"),
            ))
            .await,
    ));
    denied(refused(
        events
            .publish_batch(authed(
                &keys.subscriber,
                PublishBatchRequest {
                    events: vec![publish_request("license.created", "s2")],
                },
            ))
            .await,
    ));
    let mut answers = events
        .publish_stream(authed(
            &keys.subscriber,
            futures::stream::iter(vec![PublishStreamRequest {
                request_id: "r1".into(),
                event: Some(publish_request("license.created", "s3")),
            }]),
        ))
        .await
        .expect("the stream opens; items are refused one by one")
        .into_inner();
    let answer = answers.message().await.expect("ok").expect("one answer");
    match answer.result {
        Some(publish_stream_response::Result::Error(e)) => {
            assert_eq!(e.code, Code::PermissionDenied as i32, "{e:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    denied(refused(
        endpoints
            .create_endpoint(authed(
                &keys.subscriber,
                endpoint_request("https://example.com/s"),
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .list_endpoints(authed(&keys.subscriber, ListEndpointsRequest::default()))
            .await,
    ));

    // Manager: manages endpoints and reads, does not publish.
    let ep = create_endpoint(&app, &keys.manager, "https://example.com/m").await;
    endpoints
        .get_endpoint(authed(
            &keys.manager,
            GetEndpointRequest {
                id: ep.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("manager may get endpoints");
    assert_eq!(list_endpoints(&app, &keys.manager, "").await.len(), 1);
    for key in [&keys.publisher, &keys.subscriber] {
        denied(refused(
            endpoints
                .get_endpoint(authed(
                    key,
                    GetEndpointRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ));
        denied(refused(
            endpoints
                .update_endpoint(authed(
                    key,
                    UpdateEndpointRequest {
                        id: ep.id.clone(),
                        description: Some("nope".into()),
                        ..Default::default()
                    },
                ))
                .await,
        ));
        denied(refused(
            endpoints
                .rotate_endpoint_secret(authed(
                    key,
                    RotateEndpointSecretRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ));
        denied(refused(
            endpoints
                .delete_endpoint(authed(
                    key,
                    DeleteEndpointRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ));
    }
    assert_eq!(list_event_ids(&app, &keys.manager, "").await.len(), 2);
    events
        .subscribe(authed(&keys.manager, SubscribeRequest::default()))
        .await
        .expect("manager may tail");
    denied(refused(
        events
            .publish(authed(
                &keys.manager,
                publish_request("license.created", "x"),
            ))
            .await,
    ));

    // Tenant keys never call admin-only RPCs.
    let (other_key_id, _) = create_key(&app, "other", Role::Subscriber).await;
    for key in [&keys.publisher, &keys.subscriber, &keys.manager] {
        denied(refused(
            admin
                .create_tenant(authed(
                    key,
                    CreateTenantRequest {
                        id: "sneaky".into(),
                        name: "Sneaky".into(),
                    },
                ))
                .await,
        ));
        denied(refused(
            admin
                .list_tenants(authed(key, ListTenantsRequest::default()))
                .await,
        ));
        denied(refused(
            admin
                .delete_tenant(authed(key, DeleteTenantRequest { id: "other".into() }))
                .await,
        ));
        denied(refused(
            admin
                .delete_tenant(authed(key, DeleteTenantRequest { id: "acme".into() }))
                .await,
        ));
        denied(refused(
            admin
                .create_api_key(authed(
                    key,
                    CreateApiKeyRequest {
                        tenant_id: "acme".into(),
                        role: Role::Manager as i32,
                        name: "escalate".into(),
                    },
                ))
                .await,
        ));
        denied(refused(
            admin
                .list_api_keys(authed(
                    key,
                    ListApiKeysRequest {
                        tenant_id: "acme".into(),
                        ..Default::default()
                    },
                ))
                .await,
        ));
        denied(refused(
            admin
                .revoke_api_key(authed(
                    key,
                    RevokeApiKeyRequest {
                        id: other_key_id.clone(),
                    },
                ))
                .await,
        ));

        // GetTenant: its own tenant, and nothing about another.
        let own = admin
            .get_tenant(authed(key, GetTenantRequest { id: "acme".into() }))
            .await
            .expect("own tenant")
            .into_inner();
        assert_eq!(own.id, "acme");
        assert_eq!(own.public_key.len(), 64);
        for id in ["other", "missing"] {
            let status = refused(
                admin
                    .get_tenant(authed(key, GetTenantRequest { id: id.into() }))
                    .await,
            );
            assert_status(&status, Code::NotFound, None);
        }
    }
    // None of that happened.
    assert!(
        admin
            .get_tenant(authed(
                &app.admin_key,
                GetTenantRequest { id: "other".into() }
            ))
            .await
            .is_ok()
    );
    let status = refused(
        admin
            .get_tenant(authed(
                &app.admin_key,
                GetTenantRequest {
                    id: "sneaky".into(),
                },
            ))
            .await,
    );
    assert_status(&status, Code::NotFound, None);
    key_works(&app, &keys.subscriber)
        .await
        .expect("still works");
}

async fn tenant_isolation(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let mut events = app.events().await;
    let mut endpoints = app.endpoints().await;

    let mut a_events = Vec::new();
    let mut b_events = Vec::new();
    for i in 0..3 {
        a_events.push(publish(&app, &a.publisher, "license.created", &format!("a{i}")).await);
        b_events.push(publish(&app, &b.publisher, "license.created", &format!("b{i}")).await);
    }
    let a_endpoint = create_endpoint(&app, &a.manager, "https://a.example.com/hook").await;
    let b_endpoint = create_endpoint(&app, &b.manager, "https://b.example.com/hook").await;
    let b_id = b_endpoint.id.clone();

    // Reading: B's event ids are not found, listings hold A's events only.
    for key in [&a.subscriber, &a.manager] {
        for e in &b_events {
            for tenant_id in ["", "tenant-a"] {
                let status = refused(
                    events
                        .get_event(authed(
                            key,
                            GetEventRequest {
                                id: e.id.clone(),
                                tenant_id: tenant_id.into(),
                            },
                        ))
                        .await,
                );
                assert_status(&status, Code::NotFound, None);
            }
        }
        let mut listed = list_event_ids(&app, key, "").await;
        listed.reverse();
        assert_eq!(
            listed,
            a_events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        );
    }
    // The admin sees each tenant's own, by name.
    let mut listed = list_event_ids(&app, &app.admin_key, "tenant-b").await;
    listed.reverse();
    assert_eq!(
        listed,
        b_events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );

    // Naming tenant B with an A key is refused, whatever the RPC.
    let other = || "tenant-b".to_string();
    let denied = |status: Status| assert_status(&status, Code::PermissionDenied, None);
    denied(refused(
        events
            .publish(authed(
                &a.publisher,
                proto::PublishRequest {
                    tenant_id: other(),
                    ..publish_request("license.created", "x")
                },
            ))
            .await,
    ));
    denied(refused(
        events
            .publish_batch(authed(
                &a.publisher,
                PublishBatchRequest {
                    events: vec![
                        publish_request("license.created", "ok"),
                        proto::PublishRequest {
                            tenant_id: other(),
                            ..publish_request("license.created", "x")
                        },
                    ],
                },
            ))
            .await,
    ));
    let mut answers = events
        .publish_stream(authed(
            &a.publisher,
            futures::stream::iter(vec![
                PublishStreamRequest {
                    request_id: "theirs".into(),
                    event: Some(proto::PublishRequest {
                        tenant_id: other(),
                        ..publish_request("license.created", "x")
                    }),
                },
                PublishStreamRequest {
                    request_id: "mine".into(),
                    event: Some(publish_request("license.created", "a-stream")),
                },
            ]),
        ))
        .await
        .expect("stream")
        .into_inner();
    let theirs = answers.message().await.expect("ok").expect("answer");
    assert_eq!(theirs.request_id, "theirs");
    match theirs.result {
        Some(publish_stream_response::Result::Error(e)) => {
            assert_eq!(e.code, Code::PermissionDenied as i32, "{e:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mine = answers.message().await.expect("ok").expect("answer");
    match mine.result {
        Some(publish_stream_response::Result::Published(p)) => {
            let event = p.event.expect("event");
            assert_eq!(event.tenant_id, "tenant-a");
            a_events.push(event);
        }
        other => panic!("expected the own-tenant item to publish, got {other:?}"),
    }
    for key in [&a.subscriber, &a.manager] {
        denied(refused(
            events
                .subscribe(authed(
                    key,
                    SubscribeRequest {
                        tenant_id: other(),
                        start: Some(Start::Earliest(true)),
                        ..Default::default()
                    },
                ))
                .await,
        ));
        denied(refused(
            events
                .get_event(authed(
                    key,
                    GetEventRequest {
                        id: b_events[0].id.clone(),
                        tenant_id: other(),
                    },
                ))
                .await,
        ));
        denied(refused(
            events
                .list_events(authed(
                    key,
                    ListEventsRequest {
                        tenant_id: other(),
                        ..Default::default()
                    },
                ))
                .await,
        ));
    }
    let m = &a.manager;
    denied(refused(
        endpoints
            .create_endpoint(authed(
                m,
                CreateEndpointRequest {
                    tenant_id: other(),
                    ..endpoint_request("https://evil.example.com/")
                },
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .get_endpoint(authed(
                m,
                GetEndpointRequest {
                    id: b_id.clone(),
                    tenant_id: other(),
                },
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .list_endpoints(authed(
                m,
                ListEndpointsRequest {
                    tenant_id: other(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .update_endpoint(authed(
                m,
                UpdateEndpointRequest {
                    id: b_id.clone(),
                    tenant_id: other(),
                    url: Some("https://evil.example.com/".into()),
                    ..Default::default()
                },
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .delete_endpoint(authed(
                m,
                DeleteEndpointRequest {
                    id: b_id.clone(),
                    tenant_id: other(),
                },
            ))
            .await,
    ));
    denied(refused(
        endpoints
            .rotate_endpoint_secret(authed(
                m,
                RotateEndpointSecretRequest {
                    id: b_id.clone(),
                    tenant_id: other(),
                },
            ))
            .await,
    ));

    // B's endpoint id through A's scope: not found, and nothing changes.
    let not_found = |status: Status| assert_status(&status, Code::NotFound, None);
    not_found(refused(
        endpoints
            .get_endpoint(authed(
                m,
                GetEndpointRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    not_found(refused(
        endpoints
            .update_endpoint(authed(
                m,
                UpdateEndpointRequest {
                    id: b_id.clone(),
                    url: Some("https://evil.example.com/".into()),
                    enabled: Some(false),
                    filters: Some(FilterList {
                        filters: vec!["user.*".into()],
                    }),
                    ..Default::default()
                },
            ))
            .await,
    ));
    not_found(refused(
        endpoints
            .rotate_endpoint_secret(authed(
                m,
                RotateEndpointSecretRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    not_found(refused(
        endpoints
            .delete_endpoint(authed(
                m,
                DeleteEndpointRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    let b_after = endpoints
        .get_endpoint(authed(
            &b.manager,
            GetEndpointRequest {
                id: b_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("B's endpoint is still there")
        .into_inner();
    assert_eq!(b_after, b_endpoint, "B's endpoint is unchanged");

    // Listings hold each tenant's own only.
    assert_eq!(list_endpoints(&app, &a.manager, "").await, vec![a_endpoint]);
    assert_eq!(list_endpoints(&app, &b.manager, "").await, vec![b_endpoint]);

    // Nothing reached B, and A's tail holds A's events only.
    let mut listed = list_event_ids(&app, &b.subscriber, "").await;
    listed.reverse();
    assert_eq!(
        listed,
        b_events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    let mut tail = events
        .subscribe(authed(
            &a.subscriber,
            SubscribeRequest {
                start: Some(Start::Earliest(true)),
                ..Default::default()
            },
        ))
        .await
        .expect("tail")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < a_events.len() {
        let message = timeout(Duration::from_secs(10), tail.message())
            .await
            .expect("tail message")
            .expect("ok")
            .expect("open");
        if let Some(Kind::Event(e)) = message.kind {
            got.push(e.id);
        }
    }
    assert_eq!(
        got,
        a_events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
}

async fn admin_calls_and_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let event = publish(&app, &keys.publisher, "license.created", "l1").await;
    let ep = create_endpoint(&app, &keys.manager, "https://example.com/hook").await;
    let mut events = app.events().await;
    let mut endpoints = app.endpoints().await;
    let mut admin = app.admin().await;
    let k = app.admin_key.as_str();
    let invalid =
        |status: Status, field: &str| assert_status(&status, Code::InvalidArgument, Some(field));

    // The admin key names the tenant on tenant-scoped RPCs.
    invalid(
        refused(
            events
                .publish(authed(k, publish_request("license.created", "x")))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            events
                .publish_batch(authed(
                    k,
                    PublishBatchRequest {
                        events: vec![publish_request("license.created", "x")],
                    },
                ))
                .await,
        ),
        "events[0].tenant_id",
    );
    invalid(
        refused(
            events
                .subscribe(authed(k, SubscribeRequest::default()))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            events
                .get_event(authed(
                    k,
                    GetEventRequest {
                        id: event.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            events
                .list_events(authed(k, ListEventsRequest::default()))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .create_endpoint(authed(k, endpoint_request("https://example.com/")))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .get_endpoint(authed(
                    k,
                    GetEndpointRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .list_endpoints(authed(k, ListEndpointsRequest::default()))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .update_endpoint(authed(
                    k,
                    UpdateEndpointRequest {
                        id: ep.id.clone(),
                        description: Some("x".into()),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .delete_endpoint(authed(
                    k,
                    DeleteEndpointRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "tenant_id",
    );
    invalid(
        refused(
            endpoints
                .rotate_endpoint_secret(authed(
                    k,
                    RotateEndpointSecretRequest {
                        id: ep.id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "tenant_id",
    );
    // With the tenant named, the admin may do everything; an unknown tenant is not found.
    events
        .get_event(authed(
            k,
            GetEventRequest {
                id: event.id.clone(),
                tenant_id: "acme".into(),
            },
        ))
        .await
        .expect("admin reads any tenant");
    events
        .publish(authed(
            k,
            proto::PublishRequest {
                tenant_id: "acme".into(),
                ..publish_request("license.created", "by-admin")
            },
        ))
        .await
        .expect("admin publishes for any tenant");
    let status = refused(
        events
            .list_events(authed(
                k,
                ListEventsRequest {
                    tenant_id: "nobody".into(),
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_status(&status, Code::NotFound, None);

    // CreateApiKey validation.
    let create_key_req = |tenant_id: &str, role: i32, name: &str| {
        authed(
            k,
            CreateApiKeyRequest {
                tenant_id: tenant_id.into(),
                role,
                name: name.into(),
            },
        )
    };
    invalid(
        refused(
            admin
                .create_api_key(create_key_req("acme", Role::Unspecified as i32, "x"))
                .await,
        ),
        "role",
    );
    invalid(
        refused(admin.create_api_key(create_key_req("acme", 42, "x")).await),
        "role",
    );
    invalid(
        refused(
            admin
                .create_api_key(create_key_req("acme", Role::Admin as i32, "x"))
                .await,
        ),
        "tenant_id",
    );
    for role in [Role::Publisher, Role::Subscriber, Role::Manager] {
        invalid(
            refused(
                admin
                    .create_api_key(create_key_req("", role as i32, "x"))
                    .await,
            ),
            "tenant_id",
        );
    }
    invalid(
        refused(
            admin
                .create_api_key(create_key_req(
                    "acme",
                    Role::Manager as i32,
                    &"n".repeat(201),
                ))
                .await,
        ),
        "name",
    );
    let status = refused(
        admin
            .create_api_key(create_key_req("nobody", Role::Manager as i32, "x"))
            .await,
    );
    assert_status(&status, Code::NotFound, None);
    let created = admin
        .create_api_key(create_key_req("acme", Role::Publisher as i32, "ci"))
        .await
        .expect("create key")
        .into_inner();
    let api_key = created.api_key.expect("api key");
    assert!(api_key.id.starts_with("key_"), "{}", api_key.id);
    assert_eq!(api_key.tenant_id, "acme");
    assert_eq!(api_key.role, Role::Publisher as i32);
    assert_eq!(api_key.name, "ci");
    assert!(api_key.revoked_at.is_none());
    assert!(
        created.secret.starts_with(&api_key.prefix),
        "prefix of the secret"
    );
    assert!(api_key.prefix.len() < created.secret.len());
    publish(&app, &created.secret, "license.created", "by-ci").await;

    // CreateTenant validation.
    let create_tenant = |id: &str, name: &str| {
        authed(
            k,
            CreateTenantRequest {
                id: id.into(),
                name: name.into(),
            },
        )
    };
    invalid(
        refused(admin.create_tenant(create_tenant("t1", "")).await),
        "name",
    );
    invalid(
        refused(admin.create_tenant(create_tenant("t1", "   ")).await),
        "name",
    );
    invalid(
        refused(
            admin
                .create_tenant(create_tenant("t1", &"n".repeat(201)))
                .await,
        ),
        "name",
    );
    for bad in ["has space", "a/b", "dots.no", "ünï", &"x".repeat(65)] {
        invalid(
            refused(admin.create_tenant(create_tenant(bad, "Bad")).await),
            "id",
        );
    }
    let status = refused(admin.create_tenant(create_tenant("acme", "Again")).await);
    assert_status(&status, Code::AlreadyExists, None);
    let generated = admin
        .create_tenant(create_tenant("", "Generated"))
        .await
        .expect("generated id")
        .into_inner();
    assert!(generated.id.starts_with("ten_"), "{}", generated.id);
    assert_eq!(generated.name, "Generated");
    assert_eq!(generated.public_key.len(), 64);
    let fetched = admin
        .get_tenant(authed(
            k,
            GetTenantRequest {
                id: generated.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, generated);
    invalid(
        refused(
            admin
                .get_tenant(authed(k, GetTenantRequest { id: "a b".into() }))
                .await,
        ),
        "id",
    );
    assert_status(
        &refused(
            admin
                .get_tenant(authed(
                    k,
                    GetTenantRequest {
                        id: "nobody".into(),
                    },
                ))
                .await,
        ),
        Code::NotFound,
        None,
    );

    // DeleteTenant removes everything the tenant owns, and nothing else.
    let gone = app.tenant("gone").await;
    let gone_publisher = gone.publisher.clone();
    publish(&app, &gone_publisher, "license.created", "g1").await;
    endpoints
        .create_endpoint(authed(
            k,
            CreateEndpointRequest {
                tenant_id: "gone".into(),
                ..endpoint_request("https://gone.example.com/")
            },
        ))
        .await
        .expect("endpoint of gone");
    let acme_events = list_event_ids(&app, k, "acme").await;
    let acme_endpoints = list_endpoints(&app, k, "acme").await;
    let acme_keys = admin
        .list_api_keys(authed(
            k,
            ListApiKeysRequest {
                tenant_id: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("keys")
        .into_inner()
        .api_keys;

    admin
        .delete_tenant(authed(k, DeleteTenantRequest { id: "gone".into() }))
        .await
        .expect("delete tenant");
    assert_status(
        &key_works(&app, &gone_publisher).await.unwrap_err(),
        Code::Unauthenticated,
        None,
    );
    assert_status(
        &refused(
            admin
                .get_tenant(authed(k, GetTenantRequest { id: "gone".into() }))
                .await,
        ),
        Code::NotFound,
        None,
    );
    assert_status(
        &refused(
            admin
                .delete_tenant(authed(k, DeleteTenantRequest { id: "gone".into() }))
                .await,
        ),
        Code::NotFound,
        None,
    );
    let gone_keys = admin
        .list_api_keys(authed(
            k,
            ListApiKeysRequest {
                tenant_id: "gone".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("keys")
        .into_inner()
        .api_keys;
    assert!(gone_keys.is_empty(), "{gone_keys:?}");
    let tenants = admin
        .list_tenants(authed(k, ListTenantsRequest::default()))
        .await
        .expect("tenants")
        .into_inner()
        .tenants;
    assert!(tenants.iter().all(|t| t.id != "gone"));
    // A new tenant of the same id starts empty: the old events and endpoints are gone.
    admin
        .create_tenant(authed(
            k,
            CreateTenantRequest {
                id: "gone".into(),
                name: "Reborn".into(),
            },
        ))
        .await
        .expect("recreate");
    assert!(list_event_ids(&app, k, "gone").await.is_empty());
    assert!(list_endpoints(&app, k, "gone").await.is_empty());
    assert_status(
        &key_works(&app, &gone_publisher).await.unwrap_err(),
        Code::Unauthenticated,
        None,
    );
    // The other tenant is untouched.
    assert_eq!(list_event_ids(&app, k, "acme").await, acme_events);
    assert_eq!(list_endpoints(&app, k, "acme").await, acme_endpoints);
    let acme_keys_after = admin
        .list_api_keys(authed(
            k,
            ListApiKeysRequest {
                tenant_id: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("keys")
        .into_inner()
        .api_keys;
    assert_eq!(acme_keys_after, acme_keys);
    key_works(&app, &keys.subscriber)
        .await
        .expect("acme keys work");
    assert!(
        list_event_ids(&app, &keys.subscriber, "")
            .await
            .contains(&event.id)
    );

    // RevokeApiKey: ids are checked, and the last active admin key stays.
    invalid(
        refused(
            admin
                .revoke_api_key(authed(
                    k,
                    RevokeApiKeyRequest {
                        id: "key_nope".into(),
                    },
                ))
                .await,
        ),
        "id",
    );
    assert_status(
        &refused(
            admin
                .revoke_api_key(authed(
                    k,
                    RevokeApiKeyRequest {
                        id: format!("key_{}", ulid::Ulid::new()),
                    },
                ))
                .await,
        ),
        Code::NotFound,
        None,
    );
    let admin_keys: Vec<_> = admin
        .list_api_keys(authed(k, ListApiKeysRequest::default()))
        .await
        .expect("list keys")
        .into_inner()
        .api_keys
        .into_iter()
        .filter(|key| key.role == Role::Admin as i32)
        .collect();
    assert_eq!(admin_keys.len(), 1, "only the bootstrap admin key");
    let bootstrap_id = admin_keys[0].id.clone();
    assert!(admin_keys[0].tenant_id.is_empty());
    assert_status(
        &refused(
            admin
                .revoke_api_key(authed(
                    k,
                    RevokeApiKeyRequest {
                        id: bootstrap_id.clone(),
                    },
                ))
                .await,
        ),
        Code::FailedPrecondition,
        None,
    );
    key_works(&app, k).await.expect("still active");
    // With a second admin key, the first may go; then the second is the last.
    let (second_id, second) = create_key(&app, "", Role::Admin).await;
    admin
        .revoke_api_key(authed(&second, RevokeApiKeyRequest { id: bootstrap_id }))
        .await
        .expect("revoke the bootstrap key");
    assert_status(
        &key_works(&app, k).await.unwrap_err(),
        Code::Unauthenticated,
        None,
    );
    assert_status(
        &refused(
            admin
                .revoke_api_key(authed(&second, RevokeApiKeyRequest { id: second_id }))
                .await,
        ),
        Code::FailedPrecondition,
        None,
    );
    key_works(&app, &second)
        .await
        .expect("the last admin key works");
}

#[track_caller]
fn assert_close_to(ts: &Timestamp, expected_secs: i64, slack_secs: i64) {
    assert!(
        (ts.seconds - expected_secs).abs() <= slack_secs,
        "{ts:?} is not within {slack_secs} s of {expected_secs}"
    );
}

async fn update(app: &TestApp, keys: &TenantKeys, req: UpdateEndpointRequest) -> Endpoint {
    app.endpoints()
        .await
        .update_endpoint(authed(&keys.manager, req))
        .await
        .expect("update")
        .into_inner()
}

/// `ep` as it should read after an update that changed only what `change` changes.
fn changed(ep: &Endpoint, after: &Endpoint, change: impl FnOnce(&mut Endpoint)) -> Endpoint {
    let mut expected = ep.clone();
    change(&mut expected);
    expected.updated_at = after.updated_at;
    expected
}

async fn endpoint_crud_and_validation(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut endpoints = app.endpoints().await;
    let m = keys.manager.as_str();

    // Create with defaults.
    let created = endpoints
        .create_endpoint(authed(m, endpoint_request("https://example.com/hook")))
        .await
        .expect("create")
        .into_inner();
    let ep = created.endpoint.expect("endpoint");
    assert!(ep.id.starts_with("ep_"), "{}", ep.id);
    assert_eq!(ep.tenant_id, "acme");
    assert_eq!(ep.url, "https://example.com/hook");
    assert_eq!(ep.filters, vec!["*"]);
    assert!(ep.enabled);
    assert!(ep.disabled_reason.is_empty());
    assert!(ep.description.is_empty() && ep.metadata.is_empty() && ep.environment.is_empty());
    assert_eq!(
        ep.signing,
        Some(SigningSettings {
            format: WebhookFormat::Keygen as i32,
            schemes: vec![
                SignatureScheme::Keygen as i32,
                SignatureScheme::StandardWebhooks as i32
            ],
            keygen_algorithm: KeygenAlgorithm::Ed25519 as i32,
        })
    );
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    let created_at = ep.created_at.expect("created_at");
    assert_close_to(&created_at, now_secs(), 60);
    assert_eq!(ep.updated_at, Some(created_at));
    // An http:// URL is fine on this (test) server.
    create_endpoint(&app, m, "http://127.0.0.1:9/hook").await;

    // Create with every field.
    let full = endpoints
        .create_endpoint(authed(
            m,
            CreateEndpointRequest {
                url: "https://example.com/full".into(),
                filters: vec!["license.*".into(), "machine.created".into()],
                description: "all fields".into(),
                metadata: HashMap::from([("team".into(), "billing".into())]),
                environment: "sandbox".into(),
                signing: Some(SigningSettings {
                    format: WebhookFormat::Standard as i32,
                    schemes: vec![SignatureScheme::StandardWebhooks as i32],
                    keygen_algorithm: KeygenAlgorithm::Unspecified as i32,
                }),
                disabled: true,
                ..Default::default()
            },
        ))
        .await
        .expect("create full")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(full.filters, vec!["license.*", "machine.created"]);
    assert_eq!(full.description, "all fields");
    assert_eq!(
        full.metadata.get("team").map(String::as_str),
        Some("billing")
    );
    assert_eq!(full.environment, "sandbox");
    assert!(!full.enabled);
    assert_eq!(full.disabled_reason, "disabled by an operator");
    let signing = full.signing.clone().expect("signing");
    assert_eq!(signing.format, WebhookFormat::Standard as i32);
    assert_eq!(
        signing.schemes,
        vec![SignatureScheme::StandardWebhooks as i32]
    );
    assert_eq!(signing.keygen_algorithm, KeygenAlgorithm::Ed25519 as i32);

    // Get returns what create returned.
    let got = endpoints
        .get_endpoint(authed(
            m,
            GetEndpointRequest {
                id: ep.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, ep);

    // Updates change only the fields that are set.
    let base = || UpdateEndpointRequest {
        id: ep.id.clone(),
        ..Default::default()
    };
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            description: Some("only this".into()),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |e| e.description = "only this".into())
    );
    let ep = after;

    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            filters: Some(FilterList {
                filters: vec!["user.*".into(), "license.created".into()],
            }),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |e| e.filters =
            vec!["user.*".into(), "license.created".into()])
    );
    let ep = after;
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            filters: Some(FilterList::default()),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after.filters,
        vec!["*"],
        "an empty FilterList means every event"
    );
    let ep = changed(&ep, &after, |e| e.filters = vec!["*".into()]);
    assert_eq!(after, ep);

    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            metadata: Some(Metadata {
                entries: HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            }),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |e| {
            e.metadata = HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        })
    );
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            metadata: Some(Metadata {
                entries: HashMap::from([("c".into(), "3".into())]),
            }),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after.metadata,
        HashMap::from([("c".into(), "3".into())]),
        "metadata is replaced as a whole"
    );
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            metadata: Some(Metadata::default()),
            ..base()
        },
    )
    .await;
    assert!(after.metadata.is_empty(), "an empty Metadata clears");
    let ep = after;

    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            enabled: Some(false),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |e| {
            e.enabled = false;
            e.disabled_reason = "disabled by an operator".into();
        })
    );
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            enabled: Some(false),
            disabled_reason: Some("maintenance".into()),
            ..base()
        },
    )
    .await;
    assert!(!after.enabled);
    assert_eq!(after.disabled_reason, "maintenance");
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            enabled: Some(true),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |_| {}),
        "enabled again, reason cleared"
    );
    let ep = after;
    let after = update(
        &app,
        &keys,
        UpdateEndpointRequest {
            url: Some("https://example.com/moved".into()),
            environment: Some("live".into()),
            signing: Some(SigningSettings {
                format: WebhookFormat::Standard as i32,
                ..Default::default()
            }),
            ..base()
        },
    )
    .await;
    assert_eq!(
        after,
        changed(&ep, &after, |e| {
            e.url = "https://example.com/moved".into();
            e.environment = "live".into();
            e.signing.as_mut().unwrap().format = WebhookFormat::Standard as i32;
        }),
        "unspecified signing fields keep their value"
    );
    let ep = after;
    let invalid =
        |status: Status, field: &str| assert_status(&status, Code::InvalidArgument, Some(field));
    invalid(
        refused(
            endpoints
                .update_endpoint(authed(
                    m,
                    UpdateEndpointRequest {
                        enabled: Some(true),
                        disabled_reason: Some("contradiction".into()),
                        ..base()
                    },
                ))
                .await,
        ),
        "disabled_reason",
    );
    invalid(
        refused(
            endpoints
                .update_endpoint(authed(
                    m,
                    UpdateEndpointRequest {
                        url: Some("ftp://example.com/".into()),
                        ..base()
                    },
                ))
                .await,
        ),
        "url",
    );
    invalid(
        refused(
            endpoints
                .update_endpoint(authed(
                    m,
                    UpdateEndpointRequest {
                        filters: Some(FilterList {
                            filters: vec!["licence.*".into()],
                        }),
                        ..base()
                    },
                ))
                .await,
        ),
        "filters.filters[0]",
    );

    // Rotation: a new secret, the old one valid for the grace period (24 h).
    let rotated = endpoints
        .rotate_endpoint_secret(authed(
            m,
            RotateEndpointSecretRequest {
                id: ep.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("rotate")
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, created.secret);
    assert_close_to(
        &rotated.previous_secret_expires_at.expect("expiry"),
        now_secs() + 24 * 3600,
        60,
    );
    let after = rotated.endpoint.expect("endpoint");
    assert_eq!(after, changed(&ep, &after, |_| {}));
    let again = endpoints
        .rotate_endpoint_secret(authed(
            m,
            RotateEndpointSecretRequest {
                id: ep.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("rotate again")
        .into_inner();
    assert_ne!(again.secret, rotated.secret);

    // Delete; then it is gone for every call.
    endpoints
        .delete_endpoint(authed(
            m,
            DeleteEndpointRequest {
                id: ep.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let not_found = |status: Status| assert_status(&status, Code::NotFound, None);
    not_found(refused(
        endpoints
            .get_endpoint(authed(
                m,
                GetEndpointRequest {
                    id: ep.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    not_found(refused(
        endpoints
            .delete_endpoint(authed(
                m,
                DeleteEndpointRequest {
                    id: ep.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));
    not_found(refused(endpoints.update_endpoint(authed(m, base())).await));
    not_found(refused(
        endpoints
            .rotate_endpoint_secret(authed(
                m,
                RotateEndpointSecretRequest {
                    id: ep.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
    ));

    // Create validation.
    for url in [
        "",
        "not a url",
        "ftp://example.com/hook",
        "https://",
        "https://user:secret@example.com/hook",
        "https://user@example.com/hook",
        "https://example.com/hook#fragment",
    ] {
        let status = refused(
            endpoints
                .create_endpoint(authed(m, endpoint_request(url)))
                .await,
        );
        assert_status(&status, Code::InvalidArgument, Some("url"));
    }
    for (filters, field) in [
        (vec!["licence.*"], "filters[0]"),
        (vec!["*", "license.nope"], "filters[1]"),
        (vec!["*.created"], "filters[0]"),
    ] {
        let status = refused(
            endpoints
                .create_endpoint(authed(
                    m,
                    CreateEndpointRequest {
                        filters: filters.iter().map(|f| f.to_string()).collect(),
                        ..endpoint_request("https://example.com/")
                    },
                ))
                .await,
        );
        assert_status(&status, Code::InvalidArgument, Some(field));
    }
    invalid(
        refused(
            endpoints
                .create_endpoint(authed(
                    m,
                    CreateEndpointRequest {
                        environment: "not valid".into(),
                        ..endpoint_request("https://example.com/")
                    },
                ))
                .await,
        ),
        "environment",
    );
    // Malformed ids name the field.
    for id in ["ep_nope", "nope", ""] {
        invalid(
            refused(
                endpoints
                    .get_endpoint(authed(
                        m,
                        GetEndpointRequest {
                            id: id.into(),
                            ..Default::default()
                        },
                    ))
                    .await,
            ),
            "id",
        );
    }
    let event_id = format!("evt_{}", ulid::Ulid::new());
    invalid(
        refused(
            endpoints
                .update_endpoint(authed(
                    m,
                    UpdateEndpointRequest {
                        id: event_id.clone(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "id",
    );
    invalid(
        refused(
            endpoints
                .delete_endpoint(authed(
                    m,
                    DeleteEndpointRequest {
                        id: "ep_nope".into(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "id",
    );
    invalid(
        refused(
            endpoints
                .rotate_endpoint_secret(authed(
                    m,
                    RotateEndpointSecretRequest {
                        id: "ep_nope".into(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "id",
    );

    // Pagination: 5 more endpoints in a fresh tenant, walked 2 by 2, oldest first.
    let keys2 = app.tenant("paged").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create_endpoint(&app, &keys2.manager, &format!("https://example.com/{i}"))
                .await
                .id,
        );
        // Ids sort by creation time to the millisecond.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..2 {
        let mut walked = Vec::new();
        let mut sizes = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = endpoints
                .list_endpoints(authed(
                    &keys2.manager,
                    ListEndpointsRequest {
                        page_size: 2,
                        page_token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("page")
                .into_inner();
            sizes.push(page.endpoints.len());
            walked.extend(page.endpoints.into_iter().map(|e| e.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(walked, made, "every endpoint once, oldest first");
    }
    invalid(
        refused(
            endpoints
                .list_endpoints(authed(
                    m,
                    ListEndpointsRequest {
                        page_token: "not-a-token".into(),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "page_token",
    );
    invalid(
        refused(
            endpoints
                .list_endpoints(authed(
                    m,
                    ListEndpointsRequest {
                        page_size: 5000,
                        ..Default::default()
                    },
                ))
                .await,
        ),
        "page_size",
    );

    // A server that refuses http:// endpoints names the url.
    let strict = spawn_app_with(backend, |c| c.allow_http_endpoints = false).await;
    let strict_keys = strict.tenant("acme").await;
    let mut strict_endpoints = strict.endpoints().await;
    let status = refused(
        strict_endpoints
            .create_endpoint(authed(
                &strict_keys.manager,
                endpoint_request("http://example.com/hook"),
            ))
            .await,
    );
    assert_status(&status, Code::InvalidArgument, Some("url"));
    let secure = create_endpoint(&strict, &strict_keys.manager, "https://example.com/hook").await;
    let status = refused(
        strict_endpoints
            .update_endpoint(authed(
                &strict_keys.manager,
                UpdateEndpointRequest {
                    id: secure.id.clone(),
                    url: Some("http://example.com/hook".into()),
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_status(&status, Code::InvalidArgument, Some("url"));
}

async fn pagination_of_tenants_and_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin().await;
    let k = app.admin_key.as_str();
    // Ids deliberately not in alphabetical order of creation.
    let created = ["t-zulu", "t-alpha", "t-mike", "t-bravo", "t-echo"];
    for id in created {
        admin
            .create_tenant(authed(
                k,
                CreateTenantRequest {
                    id: id.into(),
                    name: format!("Tenant {id}"),
                },
            ))
            .await
            .expect("create tenant");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut first_walk = None;
    for _ in 0..2 {
        let mut walked = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = admin
                .list_tenants(authed(
                    k,
                    ListTenantsRequest {
                        page_size: 2,
                        page_token,
                    },
                ))
                .await
                .expect("tenants page")
                .into_inner();
            assert!(page.tenants.len() <= 2);
            walked.extend(page.tenants.into_iter().map(|t| t.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(walked, created, "every tenant once, oldest first");
        if let Some(first) = &first_walk {
            assert_eq!(&walked, first, "a stable order");
        }
        first_walk = Some(walked);
    }

    let status = refused(
        admin
            .list_tenants(authed(
                k,
                ListTenantsRequest {
                    page_size: 2,
                    page_token: "bm9wZQ".into(),
                },
            ))
            .await,
    );
    assert_status(&status, Code::InvalidArgument, Some("page_token"));
    let status = refused(
        admin
            .list_api_keys(authed(
                k,
                ListApiKeysRequest {
                    page_token: "garbage!".into(),
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_status(&status, Code::InvalidArgument, Some("page_token"));

    // Keys: the bootstrap admin key, then keys made one by one.
    let mut made = Vec::new();
    for (i, tenant) in created.iter().enumerate() {
        let role = [Role::Publisher, Role::Subscriber, Role::Manager][i % 3];
        made.push(create_key(&app, tenant, role).await.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        made.push(create_key(&app, "t-alpha", Role::Subscriber).await.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let walk = |tenant_id: &'static str| {
        let mut admin = admin.clone();
        async move {
            let mut walked = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = admin
                    .list_api_keys(authed(
                        k,
                        ListApiKeysRequest {
                            tenant_id: tenant_id.into(),
                            page_size: 2,
                            page_token,
                        },
                    ))
                    .await
                    .expect("keys page")
                    .into_inner();
                assert!(page.api_keys.len() <= 2);
                walked.extend(page.api_keys);
                if page.next_page_token.is_empty() {
                    return walked;
                }
                page_token = page.next_page_token;
            }
        }
    };
    let all = walk("").await;
    assert_eq!(all.len(), made.len() + 1);
    assert_eq!(
        all[0].role,
        Role::Admin as i32,
        "the bootstrap key is oldest"
    );
    assert_eq!(
        all[1..].iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        made,
        "every key once, oldest first"
    );
    assert_eq!(walk("").await, all, "a stable order");
    let alpha = walk("t-alpha").await;
    assert!(alpha.iter().all(|k| k.tenant_id == "t-alpha"));
    assert_eq!(alpha.len(), 6);
    let expected_alpha: Vec<&String> = all
        .iter()
        .filter(|k| k.tenant_id == "t-alpha")
        .map(|k| &k.id)
        .collect();
    assert_eq!(
        alpha.iter().map(|k| &k.id).collect::<Vec<_>>(),
        expected_alpha
    );
}

/// An open tail ends soon after its key is revoked: revocation takes effect at once for
/// new calls, and within a heartbeat interval (1 s in tests) for tails already open.
async fn revoking_a_key_ends_its_open_tails(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let mut tail = events
        .subscribe(authed(&keys.subscriber, SubscribeRequest::default()))
        .await
        .expect("subscribe")
        .into_inner();
    let mut admin = app.admin().await;
    let listed = admin
        .list_api_keys(authed(
            &app.admin_key,
            ListApiKeysRequest {
                tenant_id: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let subscriber = listed
        .api_keys
        .iter()
        .find(|k| k.role == Role::Subscriber as i32)
        .expect("the subscriber key");
    admin
        .revoke_api_key(authed(
            &app.admin_key,
            RevokeApiKeyRequest {
                id: subscriber.id.clone(),
            },
        ))
        .await
        .expect("revoke");
    let ended = timeout(Duration::from_secs(10), async {
        loop {
            match tail.message().await {
                Ok(Some(_)) => continue, // heartbeats until the check
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the tail ends after the key is revoked");
    let status = ended.expect("the tail ends with an error, not quietly");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

both_backends!(
    revoking_a_key_ends_its_open_tails,
    authentication,
    roles,
    tenant_isolation,
    admin_calls_and_keys,
    endpoint_crud_and_validation,
    pagination_of_tenants_and_keys,
);
