//! The SDK against a real Herald started in-process: publishing, tails that resume after a
//! dropped connection, endpoint management, retries and deadlines, and verification of the
//! webhooks Herald actually sends.

mod support;

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use herald_sdk::{
    Client, Error, NewEvent, RetryPolicy, Scheme, Subscription, Tail, VerifyError, WebhookRequest,
    WebhookVerifier, catalog,
    proto::{
        CreateEndpointRequest, DeleteEndpointRequest, FilterList, GetEndpointRequest,
        GetEventRequest, GetSigningMaterialRequest, GetTenantRequest, ListDeliveriesRequest,
        ListEndpointsRequest, ListEventTypesRequest, ListEventsRequest,
        RotateEndpointSecretRequest, SignatureScheme, SigningSettings, UpdateEndpointRequest,
        WebhookFormat,
    },
};
use serde_json::json;
use support::{Proxy, Receiver, start_herald};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn license(id: &str) -> NewEvent {
    NewEvent::resource(
        catalog::LICENSE_CREATED,
        id,
        &json!({ "name": format!("license {id}") }),
    )
    .unwrap()
}

async fn next_event(tail: &mut Subscription) -> herald_sdk::Event {
    tokio::time::timeout(WAIT, tail.next())
        .await
        .expect("an event arrives in time")
        .expect("the tail goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_single_and_batch_typed_by_the_catalog() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let publisher = Client::connect(herald.url(), &keys.publisher)
        .await
        .unwrap();

    let published = publisher.publish(license("lic_1")).await.unwrap();
    let event = published.event.unwrap();
    assert_eq!(event.type_name, "license.created");
    assert_eq!(event.tenant_id, "acme");
    assert!(!published.duplicate);
    let payload: serde_json::Value = serde_json::from_str(&event.payload_json).unwrap();
    assert_eq!(payload["data"]["type"], "licenses");
    assert_eq!(payload["data"]["attributes"]["name"], "license lic_1");

    let batch = publisher
        .publish_batch([
            license("lic_2").idempotency_key("k2"),
            NewEvent::resource(catalog::LICENSE_USERS_ATTACHED, "lu_1", &json!({}))
                .unwrap()
                .idempotency_key("k3"),
            NewEvent::new(
                herald_sdk::EventType::MachineCreated,
                &json!({ "data": { "id": "m_1", "type": "machines", "attributes": {} } }),
            )
            .unwrap()
            .idempotency_key("k4"),
        ])
        .await
        .unwrap();
    let names: Vec<_> = batch
        .iter()
        .map(|r| r.event.as_ref().unwrap().type_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "license.created",
            "license.users.attached",
            "machine.created"
        ]
    );

    // The same idempotency key gives back the original event.
    let again = publisher
        .publish(license("lic_2").idempotency_key("k2"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event.unwrap().id, batch[0].event.as_ref().unwrap().id);

    // A payload that contradicts the catalog is refused, naming the field.
    let err = publisher
        .publish(
            NewEvent::new(
                catalog::LICENSE_CREATED,
                &json!({ "data": { "id": "x", "type": "machines" } }),
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("payload"), "{err}");

    // A subscriber key reads them back; an admin key reaches them through its default tenant.
    let subscriber = Client::connect(herald.url(), &keys.subscriber)
        .await
        .unwrap();
    let got = subscriber
        .get_event(GetEventRequest {
            id: event.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.payload_json, event.payload_json);
    let admin = herald.admin().await.with_tenant("acme");
    let listed = admin
        .list_events(ListEventsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.events.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_catalog_is_the_servers() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let client = Client::connect(herald.url(), &keys.subscriber)
        .await
        .unwrap();
    let served = client
        .list_event_types(ListEventTypesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .event_types;
    assert_eq!(served.len(), catalog::ALL.len());
    for (server, sdk) in served.iter().zip(catalog::ALL) {
        assert_eq!(server.name, sdk.name);
        assert_eq!(server.r#type, sdk.event_type as i32);
        assert_eq!(server.trigger, sdk.trigger);
        assert_eq!(server.payload, sdk.payload);
        assert_eq!(server.resource_type, sdk.resource_type);
        assert_eq!(server.shape, sdk.shape as i32);
        assert_eq!(server.also_accepts, sdk.also_accepts);
    }
    assert_eq!(
        catalog::by_name("license.created"),
        Some(&catalog::LICENSE_CREATED)
    );
    assert_eq!(
        catalog::by_type(herald_sdk::EventType::LicenseCreated),
        Some(&catalog::LICENSE_CREATED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_resumes_after_a_dropped_connection() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let proxy = Proxy::start(herald.addr).await;
    let publisher = Client::connect(herald.url(), &keys.publisher)
        .await
        .unwrap();
    let subscriber = Client::connect(proxy.url(), &keys.subscriber)
        .await
        .unwrap();

    let mut ids = Vec::new();
    for i in 0..3 {
        let published = publisher
            .publish(license(&format!("lic_{i}")))
            .await
            .unwrap();
        ids.push(published.event.unwrap().id);
    }
    // Not matched by the filter: must never show up.
    publisher
        .publish(NewEvent::resource(catalog::MACHINE_CREATED, "m_1", &json!({})).unwrap())
        .await
        .unwrap();

    let mut tail = subscriber.subscribe(Tail::earliest().filter("license.*"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut tail).await.id);
    }
    assert_eq!(seen, ids);

    // The connection breaks; meanwhile more events are published.
    proxy.drop_connections();
    for i in 3..6 {
        let published = publisher
            .publish(license(&format!("lic_{i}")))
            .await
            .unwrap();
        ids.push(published.event.unwrap().id);
    }
    for _ in 3..6 {
        seen.push(next_event(&mut tail).await.id);
    }
    assert_eq!(
        seen, ids,
        "resumed after the last cursor: no gap, no duplicate"
    );

    // Again while the tail is live and idle.
    proxy.drop_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = publisher
        .publish(license("lic_6"))
        .await
        .unwrap()
        .event
        .unwrap();
    let resumed = next_event(&mut tail).await;
    assert_eq!(resumed.id, last.id);
    assert_eq!(resumed.type_name, "license.created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_ends_on_an_answer_that_retrying_cannot_change() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let subscriber = Client::connect(herald.url(), &keys.subscriber)
        .await
        .unwrap();
    let mut tail = subscriber.subscribe(Tail::after("not-a-cursor"));
    let err = tokio::time::timeout(WAIT, tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(
        tokio::time::timeout(WAIT, tail.next())
            .await
            .unwrap()
            .is_none()
    );

    let stranger = Client::connect(herald.url(), "hrk_not_a_key")
        .await
        .unwrap();
    let mut tail = stranger.subscribe(Tail::live());
    let err = tokio::time::timeout(WAIT, tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_crud() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let manager = Client::connect(herald.url(), &keys.manager).await.unwrap();
    let endpoints = manager.endpoints();

    let created = endpoints
        .create(CreateEndpointRequest {
            url: "http://127.0.0.1:9/hooks".into(),
            filters: vec!["license.*".into()],
            description: "first".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(created.secret.starts_with("whsec_"));
    let endpoint = created.endpoint.unwrap();
    assert_eq!(endpoint.tenant_id, "acme");
    let by_id = |id: &str| GetEndpointRequest {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        endpoints.get(by_id(&endpoint.id)).await.unwrap().url,
        "http://127.0.0.1:9/hooks"
    );
    let listed = endpoints
        .list(ListEndpointsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed
            .endpoints
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        [endpoint.id.as_str()]
    );

    let updated = endpoints
        .update(UpdateEndpointRequest {
            id: endpoint.id.clone(),
            description: Some("second".into()),
            filters: Some(FilterList {
                filters: vec!["*".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.description, "second");
    assert_eq!(updated.filters, ["*"]);
    assert_eq!(
        updated.url, endpoint.url,
        "fields not set stay as they were"
    );

    let rotated = endpoints
        .rotate_secret(RotateEndpointSecretRequest {
            id: endpoint.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(rotated.secret, created.secret);
    let material = endpoints
        .signing_material(GetSigningMaterialRequest {
            id: endpoint.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(material.secret, rotated.secret);
    assert_eq!(material.previous_secret, created.secret);
    let tenant = herald
        .admin()
        .await
        .admin()
        .get_tenant(GetTenantRequest { id: "acme".into() })
        .await
        .unwrap();
    assert_eq!(material.keygen_public_key, tenant.public_key);

    endpoints
        .delete(DeleteEndpointRequest {
            id: endpoint.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = endpoints.get(by_id(&endpoint.id)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // A publisher key may not manage endpoints.
    let publisher = Client::connect(herald.url(), &keys.publisher)
        .await
        .unwrap();
    let err = publisher
        .endpoints()
        .list(ListEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_the_webhooks_herald_sends() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let receiver = Receiver::start().await;
    let manager = Client::connect(herald.url(), &keys.manager).await.unwrap();
    let endpoints = manager.endpoints();
    // Keygen's format with both signatures (the default), and a query string to sign.
    let keygen = endpoints
        .create(CreateEndpointRequest {
            url: receiver.url("/hooks/keygen?source=herald"),
            filters: vec!["license.created".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .endpoint
        .unwrap();
    let standard = endpoints
        .create(CreateEndpointRequest {
            url: receiver.url("/hooks/standard"),
            filters: vec!["license.created".into()],
            signing: Some(SigningSettings {
                format: WebhookFormat::Standard as i32,
                schemes: vec![SignatureScheme::StandardWebhooks as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .endpoint
        .unwrap();

    let publisher = Client::connect(herald.url(), &keys.publisher)
        .await
        .unwrap();
    publisher.publish(license("lic_7")).await.unwrap();

    let first = receiver.next(WAIT).await;
    let second = receiver.next(WAIT).await;
    let (keygen_hook, standard_hook) = if first.parts.uri.path() == "/hooks/keygen" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(standard_hook.parts.uri.path(), "/hooks/standard");

    let verifier_for = |id: &str| {
        let endpoints = endpoints.clone();
        let id = id.to_string();
        async move {
            let material = endpoints
                .signing_material(GetSigningMaterialRequest {
                    id,
                    ..Default::default()
                })
                .await
                .unwrap();
            WebhookVerifier::from_signing_material(&material).unwrap()
        }
    };

    // Keygen format: both signatures checked, the payload decoded from its JSON string.
    let verifier = verifier_for(&keygen.id).await;
    let request = WebhookRequest::from_parts(&keygen_hook.parts, &keygen_hook.body);
    let event = verifier.verify(&request).unwrap();
    assert_eq!(
        event.verified_by,
        [Scheme::Keygen, Scheme::StandardWebhooks]
    );
    assert_eq!(event.event_type, "license.created");
    assert_eq!(event.info(), Some(&catalog::LICENSE_CREATED));
    assert_eq!(event.tenant_id.as_deref(), Some("acme"));
    assert_eq!(event.data().unwrap()["id"], "lic_7");
    let deliveries = manager
        .deliveries()
        .list(ListDeliveriesRequest {
            endpoint_id: keygen.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .deliveries;
    assert_eq!(
        event.delivery_id.as_deref(),
        Some(deliveries[0].id.as_str())
    );
    assert_eq!(event.idempotency_token, deliveries[0].idempotency_token);

    // The tenant's public key alone verifies the Keygen signature.
    let tenant = herald
        .admin()
        .await
        .admin()
        .get_tenant(GetTenantRequest { id: "acme".into() })
        .await
        .unwrap();
    let keygen_only = WebhookVerifier::new()
        .keygen_public_key(&tenant.public_key)
        .unwrap();
    assert_eq!(
        keygen_only.verify(&request).unwrap().verified_by,
        [Scheme::Keygen]
    );

    // Changed on the way, replayed later, or checked with another endpoint's secret: refused.
    let tampered = [&keygen_hook.body[..], b" "].concat();
    assert_eq!(
        verifier.verify(&WebhookRequest {
            body: &tampered,
            ..request
        }),
        Err(VerifyError::DigestMismatch)
    );
    assert!(matches!(
        verifier.verify_at(&request, SystemTime::now() + Duration::from_secs(600)),
        Err(VerifyError::OutsideTolerance { .. })
    ));
    let standard_verifier = verifier_for(&standard.id).await;
    let standard_only = WebhookRequest {
        headers: &{
            let mut h = keygen_hook.parts.headers.clone();
            h.remove("keygen-signature");
            h
        },
        ..request
    };
    assert_eq!(
        standard_verifier.verify(&standard_only),
        Err(VerifyError::BadSignature("webhook-signature"))
    );

    // Standard Webhooks format: `data` is the payload, `webhook-id` the idempotency token.
    let event = standard_verifier
        .verify(&WebhookRequest::from_parts(
            &standard_hook.parts,
            &standard_hook.body,
        ))
        .unwrap();
    assert_eq!(event.verified_by, [Scheme::StandardWebhooks]);
    assert_eq!(event.event_type, "license.created");
    assert_eq!(event.data().unwrap()["attributes"]["name"], "license lic_7");
    assert!(event.timestamp.is_some());
    assert_eq!(
        Some(event.idempotency_token.as_str()),
        standard_hook
            .parts
            .headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_are_retried_while_herald_is_unavailable() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let proxy = Proxy::start(herald.addr).await;
    proxy.down().await;
    let patient = RetryPolicy {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    };
    let reader = Client::builder(proxy.url(), &keys.subscriber)
        .retry(patient.clone())
        .connect_lazy()
        .unwrap();
    let publisher = Client::builder(proxy.url(), &keys.publisher)
        .retry(patient)
        .connect_lazy()
        .unwrap();

    // Without retries, and for a publish that could be stored twice, UNAVAILABLE comes back.
    let impatient = Client::builder(proxy.url(), &keys.subscriber)
        .retry(RetryPolicy::none())
        .connect_lazy()
        .unwrap();
    let err = impatient
        .list_event_types(ListEventTypesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let err = publisher.publish(license("lic_1")).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");

    // Herald comes back while the idempotent calls are retrying.
    let (_, types, published) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.up().await;
        },
        reader.list_event_types(ListEventTypesRequest::default()),
        publisher.publish(license("lic_2").idempotency_key("once")),
    );
    assert!(!types.unwrap().event_types.is_empty());
    assert!(!published.unwrap().duplicate);
    let stored = herald
        .admin()
        .await
        .with_tenant("acme")
        .list_events(ListEventsRequest::default())
        .await
        .unwrap();
    assert_eq!(stored.events.len(), 1, "the unkeyed publish was not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cuts_a_stalled_call_and_keys_are_checked() {
    let herald = start_herald().await;
    let keys = herald.tenant("acme").await;
    let proxy = Proxy::start(herald.addr).await;
    proxy.stall(true);
    let client = Client::builder(proxy.url(), &keys.subscriber)
        .timeout(Duration::from_millis(300))
        .connect_lazy()
        .unwrap();
    let started = Instant::now();
    let err = client
        .list_event_types(ListEventTypesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    let err = client
        .with_timeout(Duration::from_millis(50))
        .get_event(GetEventRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A wrong key is refused at once, not retried.
    let stranger = Client::connect(herald.url(), "hrk_not_a_key")
        .await
        .unwrap();
    let err = stranger
        .list_event_types(ListEventTypesRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Status(s) if s.code() == Code::Unauthenticated),
        "{err}"
    );
}
