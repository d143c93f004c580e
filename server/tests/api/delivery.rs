//! Webhook delivery, as a receiver and an operator see it: the Keygen `webhook-events`
//! body and its `Keygen-Signature` (checked by code written here from the wire format),
//! Standard Webhooks signatures (checked by the independent `standardwebhooks` crate),
//! secret rotation, retries (schedule, `Retry-After`, exhaustion), 410 disabling,
//! redirects not followed, manual retry and replay, the delivery log (filters, pages,
//! deletion), pings, tenant isolation of the DeliveryService, and pruning.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant, SystemTime},
};

use axum::http::Method;
use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use herald::proto::{
    Attempt, CreateEndpointRequest, CreateEndpointResponse, DeleteDeliveryRequest, Delivery,
    DeliveryStatus, GetDeliveryRequest, GetEndpointRequest, GetSigningMaterialRequest,
    GetTenantRequest, ListAttemptsRequest, ListDeliveriesRequest, PingEndpointRequest,
    PublishResponse, ReplayEventsRequest, RetryDeliveryRequest, RotateEndpointSecretRequest,
    SignatureScheme, SigningSettings, UpdateEndpointRequest, WebhookFormat,
    delivery_service_client::DeliveryServiceClient,
};
use prost_types::Timestamp;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tonic::{Code, Status, transport::Channel};

use crate::{
    both_backends,
    helpers::{
        Backend, TenantKeys, TestApp, authed, get_event, publish_request, spawn_app, spawn_app_with,
    },
    receiver::{Received, Receiver, Reply},
};

/// How long anything may take to happen (generous: tests run in parallel on few cores).
const WAIT: Duration = Duration::from_secs(15);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(75);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

async fn deliveries(app: &TestApp) -> DeliveryServiceClient<Channel> {
    DeliveryServiceClient::new(app.channel().await)
}

fn endpoint_request(url: &str) -> CreateEndpointRequest {
    CreateEndpointRequest {
        url: url.into(),
        ..Default::default()
    }
}

async fn create_endpoint(
    app: &TestApp,
    key: &str,
    request: CreateEndpointRequest,
) -> CreateEndpointResponse {
    app.endpoints()
        .await
        .create_endpoint(authed(key, request))
        .await
        .expect("create endpoint")
        .into_inner()
}

async fn update_endpoint(
    app: &TestApp,
    key: &str,
    request: UpdateEndpointRequest,
) -> herald::proto::Endpoint {
    app.endpoints()
        .await
        .update_endpoint(authed(key, request))
        .await
        .expect("update endpoint")
        .into_inner()
}

/// Publishes `event_type` (a catalog payload for resource `id`) with the publisher key.
async fn publish(app: &TestApp, keys: &TenantKeys, event_type: &str, id: &str) -> PublishResponse {
    app.events()
        .await
        .publish(authed(&keys.publisher, publish_request(event_type, id)))
        .await
        .expect("publish")
        .into_inner()
}

fn status_of(d: &Delivery) -> DeliveryStatus {
    DeliveryStatus::try_from(d.status).expect("a known status")
}

fn is_final(d: &Delivery) -> bool {
    matches!(
        status_of(d),
        DeliveryStatus::Delivered | DeliveryStatus::Failed
    )
}

async fn get_delivery(app: &TestApp, key: &str, id: &str) -> Result<Delivery, Status> {
    deliveries(app)
        .await
        .get_delivery(authed(
            key,
            GetDeliveryRequest {
                id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Polls GetDelivery until the delivery is DELIVERED or FAILED.
async fn wait_final(app: &TestApp, key: &str, id: &str) -> Delivery {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = get_delivery(app, key, id).await.expect("get delivery");
        if is_final(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "delivery {id} still not final after {WAIT:?}: {d:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Every delivery matching `request` (all pages), newest first.
async fn list_all(app: &TestApp, key: &str, request: ListDeliveriesRequest) -> Vec<Delivery> {
    let mut client = deliveries(app).await;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_deliveries(authed(
                key,
                ListDeliveriesRequest {
                    page_token: token.clone(),
                    ..request.clone()
                },
            ))
            .await
            .expect("list deliveries")
            .into_inner();
        out.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// The one delivery of `event_id` to `endpoint_id`, once it is final.
async fn delivery_of(app: &TestApp, key: &str, event_id: &str, endpoint_id: &str) -> Delivery {
    let found = list_all(
        app,
        key,
        ListDeliveriesRequest {
            event_id: event_id.into(),
            endpoint_id: endpoint_id.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        found.len(),
        1,
        "one delivery of {event_id} to {endpoint_id}"
    );
    wait_final(app, key, &found[0].id).await
}

async fn list_attempts(
    app: &TestApp,
    key: &str,
    delivery_id: &str,
) -> Result<Vec<Attempt>, Status> {
    deliveries(app)
        .await
        .list_attempts(authed(
            key,
            ListAttemptsRequest {
                delivery_id: delivery_id.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().attempts)
}

async fn get_endpoint(app: &TestApp, key: &str, id: &str) -> herald::proto::Endpoint {
    app.endpoints()
        .await
        .get_endpoint(authed(
            key,
            GetEndpointRequest {
                id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("get endpoint")
        .into_inner()
}

async fn ping(app: &TestApp, key: &str, id: &str) -> herald::proto::PingEndpointResponse {
    app.endpoints()
        .await
        .ping_endpoint(authed(
            key,
            PingEndpointRequest {
                id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("ping")
        .into_inner()
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
    }
}

fn micros_of(t: &Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}

fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

fn positive(d: &Option<prost_types::Duration>) -> bool {
    d.as_ref().is_some_and(|d| d.seconds > 0 || d.nanos > 0)
}

/// `key="value", key="value"` → map, the way a Keygen receiver parses `Keygen-Signature`.
fn signature_params(header: &str) -> HashMap<String, String> {
    header
        .split(',')
        .map(|pair| {
            let (k, v) = pair.trim().split_once('=').expect("key=value");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("a quoted value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Verifies a request's `Digest`, `Keygen-Signature` and `Date` as a Keygen receiver
/// does, from the wire format alone. Returns the signature.
#[track_caller]
fn verify_keygen(r: &Received, public_key_hex: &str, tenant_id: &str) -> String {
    assert_eq!(r.method, Method::POST);
    let digest = format!("sha-256={}", STANDARD.encode(Sha256::digest(&r.body)));
    assert_eq!(
        r.header("digest").as_deref(),
        Some(digest.as_str()),
        "Digest"
    );
    let header = r.header("keygen-signature").expect("Keygen-Signature");
    let params = signature_params(&header);
    assert_eq!(params["keyid"], tenant_id, "{header}");
    assert_eq!(params["algorithm"], "ed25519", "{header}");
    assert_eq!(
        params["headers"], "(request-target) host date digest",
        "{header}"
    );
    let date = r.header("date").expect("Date");
    let host_header = r.header("host").expect("Host");
    let host = host_header
        .rsplit_once(':')
        .map_or(host_header.as_str(), |(h, _)| h);
    let signing_string = format!(
        "(request-target): post {}\nhost: {host}\ndate: {date}\ndigest: {digest}",
        r.uri
    );
    let key_bytes: [u8; 32] = hex::decode(public_key_hex)
        .expect("hex public key")
        .try_into()
        .expect("32-byte key");
    let key = VerifyingKey::from_bytes(&key_bytes).expect("an Ed25519 key");
    let signature_bytes = STANDARD
        .decode(&params["signature"])
        .expect("base64 signature");
    let signature = Signature::from_slice(&signature_bytes).expect("64-byte signature");
    key.verify(signing_string.as_bytes(), &signature)
        .unwrap_or_else(|e| panic!("Keygen-Signature does not verify ({e}): {signing_string:?}"));
    let sent = httpdate::parse_http_date(&date).expect("an HTTP-date");
    let now = SystemTime::now();
    let age = now
        .duration_since(sent)
        .or_else(|_| sent.duration_since(now))
        .unwrap();
    assert!(
        age <= Duration::from_secs(300),
        "Date {date} is {age:?} off"
    );
    params["signature"].clone()
}

/// Verifies the Standard Webhooks headers with the reference crate.
fn verify_standard(r: &Received, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
    standardwebhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .verify(&r.body, &r.headers)
}

/// The `meta.idempotencyToken` of a Keygen body.
fn keygen_token(r: &Received) -> String {
    r.json()["data"]["meta"]["idempotencyToken"]
        .as_str()
        .expect("meta.idempotencyToken")
        .to_string()
}

/// Waits `for_how_long` and asserts that the receiver got no more than `n` requests.
async fn assert_no_more(rx: &Receiver, n: usize, for_how_long: Duration) {
    tokio::time::sleep(for_how_long).await;
    let got = rx.received();
    assert_eq!(
        got.len(),
        n,
        "unexpected extra requests: {:?}",
        &got[n.min(got.len())..]
    );
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

both_backends!(
    keygen_format_end_to_end,
    keygen_signature_verifies_independently,
    standard_webhooks_verify_with_the_reference_crate,
    rotated_secret_signs_beside_the_new_one,
    retries_then_succeeds_with_every_attempt_recorded,
    exhausted_retries_fail_the_delivery,
    gone_disables_the_endpoint,
    retry_after_is_honoured,
    redirects_are_not_followed,
    manual_retry_and_replay,
    manual_retry_supersedes_a_pending_original,
    delivery_log_filters_pages_and_deletes,
    ping_endpoint,
    delivery_service_is_tenant_isolated,
    endpoint_retry_schedule_overrides_the_servers,
    pruning_removes_old_events_and_their_deliveries,
    endpoint_changes_apply_to_the_next_webhook,
);

/// One POST with the Keygen `webhook-events` document; the delivery is DELIVERED with
/// one succeeded attempt.
async fn keygen_format_end_to_end(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let url = rx.url("/hooks/keygen?source=herald&v=1");
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&url))
        .await
        .endpoint
        .unwrap();

    let request = publish_request("license.created", "lic-1");
    let payload: Json = serde_json::from_str(&request.payload_json).unwrap();
    let published = app
        .events()
        .await
        .publish(authed(&keys.publisher, request))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.deliveries, 1);
    let event = published.event.unwrap();

    let got = rx.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        r.uri, "/hooks/keygen?source=herald&v=1",
        "path and query kept"
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let agent = r.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("Herald/"), "User-Agent {agent:?}");

    let body = r.json();
    let top: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, BTreeSet::from(["data"]));
    let data = &body["data"];
    let keys_of = |v: &Json| -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    assert_eq!(
        keys_of(data),
        ["attributes", "id", "meta", "relationships", "type"]
            .map(String::from)
            .into()
    );
    assert_eq!(data["type"], "webhook-events");
    let attributes = &data["attributes"];
    assert_eq!(
        keys_of(attributes),
        [
            "created",
            "endpoint",
            "event",
            "lastResponseBody",
            "lastResponseCode",
            "payload",
            "status",
            "updated"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(attributes["endpoint"], url.as_str());
    assert_eq!(attributes["event"], "license.created");
    assert_eq!(attributes["status"], "DELIVERING");
    assert!(attributes["lastResponseCode"].is_null());
    assert!(attributes["lastResponseBody"].is_null());
    for time in ["created", "updated"] {
        let text = attributes[time].as_str().expect("an ISO 8601 string");
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{time} {text:?} is not ISO 8601: {e}"));
    }
    let payload_text = attributes["payload"]
        .as_str()
        .expect("payload is a JSON string");
    let parsed: Json = serde_json::from_str(payload_text).expect("payload parses as JSON");
    assert_eq!(parsed, payload);
    assert_eq!(
        data["relationships"]["account"]["data"],
        serde_json::json!({ "type": "accounts", "id": "acme" })
    );
    let token = data["meta"]["idempotencyToken"]
        .as_str()
        .unwrap_or_default();
    assert!(!token.is_empty(), "meta.idempotencyToken");

    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_response_code, 204);
    assert_eq!(delivery.last_error, "");
    assert_eq!(delivery.event_type, "license.created");
    assert_eq!(delivery.tenant_id, "acme");
    assert!(delivery.next_attempt_at.is_none());
    assert_eq!(data["id"], delivery.id.as_str(), "data.id is the delivery");
    assert_eq!(token, delivery.idempotency_token);

    let attempts = list_attempts(&app, &keys.manager, &delivery.id)
        .await
        .expect("list attempts");
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a.attempt, 1);
    assert_eq!(a.status_code, 204);
    assert!(a.succeeded);
    assert_eq!(a.error_kind, "");
    assert_eq!(a.delivery_id, delivery.id);
    assert_eq!(a.endpoint_id, endpoint.id);
    assert!(positive(&a.duration), "duration {:?}", a.duration);
    assert!(a.started_at.is_some());

    assert_no_more(&rx, 1, Duration::from_millis(300)).await;
}

/// `Digest` and `Keygen-Signature` check out with code written from the wire format and
/// the public key from GetSigningMaterial (the same as GetTenant's).
async fn keygen_signature_verifies_independently(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acct-sig").await;
    let rx = Receiver::start().await;
    let endpoint = create_endpoint(
        &app,
        &keys.manager,
        endpoint_request(&rx.url("/keygen/hook?a=1&b=two")),
    )
    .await
    .endpoint
    .unwrap();

    let material = app
        .endpoints()
        .await
        .get_signing_material(authed(
            &keys.manager,
            GetSigningMaterialRequest {
                id: endpoint.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("signing material")
        .into_inner();
    let tenant = app
        .admin()
        .await
        .get_tenant(authed(
            &app.admin_key,
            GetTenantRequest {
                id: "acct-sig".into(),
            },
        ))
        .await
        .expect("get tenant")
        .into_inner();
    assert_eq!(material.keygen_public_key, tenant.public_key);
    assert_eq!(material.keygen_key_id, "acct-sig");
    assert_eq!(material.keygen_public_key.len(), 64, "hex of 32 bytes");

    publish(&app, &keys, "license.created", "lic-sig").await;
    let got = rx.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.uri, "/keygen/hook?a=1&b=two");
    verify_keygen(r, &material.keygen_public_key, "acct-sig");

    // A tampered body no longer matches the Digest.
    let mut tampered = r.clone();
    tampered.body = bytes::Bytes::from(format!("{} ", String::from_utf8_lossy(&r.body)));
    let digest = format!(
        "sha-256={}",
        STANDARD.encode(Sha256::digest(&tampered.body))
    );
    assert_ne!(r.header("digest"), Some(digest));
}

/// `webhook-*` headers verify with the `standardwebhooks` crate; the id is the delivery's
/// idempotency token; a Standard-format endpoint gets `{type, timestamp, data}` only.
async fn standard_webhooks_verify_with_the_reference_crate(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let keygen = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/keygen"))).await;
    let standard = create_endpoint(
        &app,
        &keys.manager,
        CreateEndpointRequest {
            url: rx.url("/standard"),
            signing: Some(SigningSettings {
                format: WebhookFormat::Standard as i32,
                schemes: vec![SignatureScheme::StandardWebhooks as i32],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert!(keygen.secret.starts_with("whsec_"), "{}", keygen.secret);
    assert!(standard.secret.starts_with("whsec_"));
    assert_ne!(keygen.secret, standard.secret);
    let keygen_ep = keygen.endpoint.unwrap();
    let standard_ep = standard.endpoint.unwrap();

    let request = publish_request("license.created", "lic-std");
    let payload: Json = serde_json::from_str(&request.payload_json).unwrap();
    let published = app
        .events()
        .await
        .publish(authed(&keys.publisher, request))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.deliveries, 2);
    let event = published.event.unwrap();

    let got = rx.wait_for(2, WAIT).await;
    let on = |path: &str| {
        got.iter()
            .find(|r| r.uri == path)
            .unwrap_or_else(|| panic!("a request to {path}"))
            .clone()
    };

    // Keygen format, both schemes.
    let k = on("/keygen");
    verify_standard(&k, &keygen.secret).expect("webhook-signature verifies");
    assert!(
        verify_standard(&k, &standard.secret).is_err(),
        "another endpoint's secret must not verify"
    );
    let delivery = delivery_of(&app, &keys.manager, &event.id, &keygen_ep.id).await;
    assert_eq!(
        k.header("webhook-id").as_deref(),
        Some(delivery.idempotency_token.as_str())
    );
    assert_eq!(keygen_token(&k), delivery.idempotency_token);
    assert!(k.header("keygen-signature").is_some());
    let timestamp: i64 = k
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .expect("integer seconds");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - timestamp).abs() <= 300);

    // Standard format, Standard Webhooks only.
    let s = on("/standard");
    verify_standard(&s, &standard.secret).expect("webhook-signature verifies");
    assert!(
        s.header("keygen-signature").is_none(),
        "no Keygen-Signature for a Standard-only endpoint"
    );
    let body = s.json();
    let fields: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(["data", "timestamp", "type"]));
    assert_eq!(body["type"], "license.created");
    assert_eq!(body["data"], payload);
    let ts = body["timestamp"].as_str().expect("ISO 8601 timestamp");
    let ts = chrono::DateTime::parse_from_rfc3339(ts).expect("ISO 8601 timestamp");
    assert_eq!(
        ts.timestamp_micros(),
        micros_of(event.occurred_at.as_ref().unwrap()),
        "timestamp is the event's time"
    );
    let standard_delivery = delivery_of(&app, &keys.manager, &event.id, &standard_ep.id).await;
    assert_eq!(
        s.header("webhook-id").as_deref(),
        Some(standard_delivery.idempotency_token.as_str())
    );
    assert_eq!(status_of(&standard_delivery), DeliveryStatus::Delivered);
}

/// After a rotation both the old and the new secret verify the next webhook.
async fn rotated_secret_signs_beside_the_new_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let created = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook"))).await;
    let endpoint = created.endpoint.unwrap();
    let old = created.secret;

    let rotated = app
        .endpoints()
        .await
        .rotate_endpoint_secret(authed(
            &keys.manager,
            RotateEndpointSecretRequest {
                id: endpoint.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("rotate")
        .into_inner();
    let new = rotated.secret;
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    assert!(rotated.previous_secret_expires_at.is_some());
    let material = app
        .endpoints()
        .await
        .get_signing_material(authed(
            &keys.manager,
            GetSigningMaterialRequest {
                id: endpoint.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("signing material")
        .into_inner();
    assert_eq!(material.secret, new);
    assert_eq!(material.previous_secret, old);

    publish(&app, &keys, "license.created", "lic-rot").await;
    let got = rx.wait_for(1, WAIT).await;
    let r = &got[0];
    let signatures = r.header("webhook-signature").expect("webhook-signature");
    let v1: Vec<&str> = signatures
        .split(' ')
        .filter(|s| s.starts_with("v1,"))
        .collect();
    assert_eq!(v1.len(), 2, "two v1 signatures: {signatures}");
    verify_standard(r, &old).expect("the old secret still verifies");
    verify_standard(r, &new).expect("the new secret verifies");
    let stranger = format!("whsec_{}", STANDARD.encode([9u8; 24]));
    assert!(verify_standard(r, &stranger).is_err());
}

/// 500, 503 (no Retry-After), 204: three attempts in order, the same message id and
/// idempotency token each time, each signed afresh.
async fn retries_then_succeeds_with_every_attempt_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.script(vec![
        Reply::Full(500, vec![], "boom".into()),
        Reply::Status(503),
        Reply::Status(204),
    ]);
    let created = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook"))).await;
    let endpoint = created.endpoint.unwrap();
    let material = app
        .endpoints()
        .await
        .get_signing_material(authed(
            &keys.manager,
            GetSigningMaterialRequest {
                id: endpoint.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let event = publish(&app, &keys, "license.created", "lic-retry")
        .await
        .event
        .unwrap();

    let got = rx.wait_for(3, WAIT).await;
    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.last_response_code, 204);
    assert_eq!(delivery.last_error, "");

    let attempts = list_attempts(&app, &keys.manager, &delivery.id)
        .await
        .unwrap();
    let summary: Vec<(u32, u32, bool)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status_code, a.succeeded))
        .collect();
    assert_eq!(
        summary,
        vec![(1, 500, false), (2, 503, false), (3, 204, true)]
    );
    assert_eq!(attempts[0].response_body, "boom");
    // Pages of one attempt, first attempt first.
    let mut client = deliveries(&app).await;
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_attempts(authed(
                &keys.manager,
                ListAttemptsRequest {
                    delivery_id: delivery.id.clone(),
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("a page of attempts")
            .into_inner();
        assert!(page.attempts.len() <= 1);
        paged.extend(page.attempts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(paged.len() < 10, "pagination does not end");
    }
    assert_eq!(paged, attempts);
    for a in &attempts {
        assert!(positive(&a.duration), "duration of attempt {}", a.attempt);
        assert_eq!(a.error_kind, "");
    }
    let starts: Vec<i64> = attempts
        .iter()
        .map(|a| micros_of(a.started_at.as_ref().unwrap()))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");

    let mut dates = Vec::new();
    for r in &got {
        assert_eq!(
            r.header("webhook-id").as_deref(),
            Some(delivery.idempotency_token.as_str())
        );
        assert_eq!(keygen_token(r), delivery.idempotency_token);
        verify_standard(r, &created.secret).expect("each attempt verifies");
        let signature = verify_keygen(r, &material.keygen_public_key, "acme");
        let date = httpdate::parse_http_date(&r.header("date").unwrap()).unwrap();
        dates.push((
            date,
            signature,
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
        ));
    }
    assert!(
        dates.windows(2).all(|w| w[0].0 <= w[1].0),
        "Dates go forward"
    );
    // The first and the last attempt are ≥ 2.7 s apart: both signatures were redone.
    let (first, last) = (&dates[0], &dates[2]);
    assert!(first.0 < last.0, "a fresh Date");
    assert_ne!(first.1, last.1, "a fresh Keygen-Signature");
    assert_ne!(first.2, last.2, "a fresh webhook-timestamp");
    assert_ne!(first.3, last.3, "a fresh webhook-signature");
    assert_no_more(&rx, 3, Duration::from_millis(300)).await;
}

/// Always 500: FAILED after 1 + 2 attempts, and nothing after that.
async fn exhausted_retries_fail_the_delivery(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(500));
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-500")
        .await
        .event
        .unwrap();

    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Failed);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.last_response_code, 500);
    assert!(
        delivery.last_error.contains("500"),
        "last_error {:?}",
        delivery.last_error
    );
    assert!(delivery.next_attempt_at.is_none());
    let attempts = list_attempts(&app, &keys.manager, &delivery.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.status_code == 500 && !a.succeeded)
    );
    // A 4th attempt would have come about 2 s after the 3rd.
    assert_no_more(&rx, 3, Duration::from_millis(3000)).await;
}

/// 410 Gone fails the delivery at once and disables the endpoint until re-enabled.
async fn gone_disables_the_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.script(vec![Reply::Status(410)]);
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-410")
        .await
        .event
        .unwrap();

    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Failed);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_response_code, 410);

    let disabled = get_endpoint(&app, &keys.manager, &endpoint.id).await;
    assert!(!disabled.enabled);
    assert!(
        disabled.disabled_reason.contains("410"),
        "disabled_reason {:?}",
        disabled.disabled_reason
    );

    let skipped = publish(&app, &keys, "license.created", "lic-410-b").await;
    assert_eq!(
        skipped.deliveries, 0,
        "a disabled endpoint gets no delivery"
    );

    let enabled = update_endpoint(
        &app,
        &keys.manager,
        UpdateEndpointRequest {
            id: endpoint.id.clone(),
            enabled: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, "");
    assert!(
        get_endpoint(&app, &keys.manager, &endpoint.id)
            .await
            .enabled
    );

    let published = publish(&app, &keys, "license.created", "lic-410-c").await;
    assert_eq!(published.deliveries, 1);
    let event = published.event.unwrap();
    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Delivered);
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "the skipped event was never sent");
    assert!(
        String::from_utf8_lossy(&got[1].body).contains("lic-410-c"),
        "the second request is the new event"
    );
}

/// 429 with `Retry-After: 3` waits 3 s, not the 1 s of the schedule.
async fn retry_after_is_honoured(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.retry_schedule_secs = vec![1]).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.script(vec![
        Reply::Full(429, vec![("retry-after", "3".into())], String::new()),
        Reply::Status(204),
    ]);
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-429")
        .await
        .event
        .unwrap();

    let got = rx.wait_for(2, WAIT).await;
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(2800),
        "the retry came {gap:?} after the 429, before its Retry-After"
    );
    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 2);
    let attempts = list_attempts(&app, &keys.manager, &delivery.id)
        .await
        .unwrap();
    assert_eq!(attempts[0].status_code, 429);
    assert_eq!(attempts[1].status_code, 204);
}

/// A 302 is a failure with status 302; its Location is never requested.
async fn redirects_are_not_followed(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.retry_schedule_secs = vec![]).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::Full(
        302,
        vec![("location", rx.url("/elsewhere"))],
        String::new(),
    ));
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-302")
        .await
        .event
        .unwrap();

    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Failed);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_response_code, 302);
    assert!(
        delivery.last_error.contains("302"),
        "last_error {:?}",
        delivery.last_error
    );
    let attempts = list_attempts(&app, &keys.manager, &delivery.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, 302);
    assert!(!attempts[0].succeeded);

    assert_no_more(&rx, 1, Duration::from_millis(500)).await;
    assert!(
        rx.received().iter().all(|r| r.uri == "/hook"),
        "the redirect target was requested"
    );
}

/// RetryDelivery makes a new delivery with the same token; ReplayEvents re-delivers a
/// time range with the original tokens; bad ranges and disabled endpoints are refused.
async fn manual_retry_and_replay(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.retry_schedule_secs = vec![]).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(500));
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let mut client = deliveries(&app).await;

    let first = publish(&app, &keys, "license.created", "lic-r1")
        .await
        .event
        .unwrap();
    let failed = delivery_of(&app, &keys.manager, &first.id, &endpoint.id).await;
    assert_eq!(status_of(&failed), DeliveryStatus::Failed);
    assert_eq!(failed.attempts, 1);

    rx.set_default(Reply::Status(204));
    let retry = client
        .retry_delivery(authed(
            &keys.manager,
            RetryDeliveryRequest {
                id: failed.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("retry delivery")
        .into_inner();
    assert_ne!(retry.id, failed.id, "a new delivery");
    assert_eq!(retry.idempotency_token, failed.idempotency_token);
    assert_eq!(retry.event_id, first.id);
    assert_eq!(retry.endpoint_id, endpoint.id);
    let retry = wait_final(&app, &keys.manager, &retry.id).await;
    assert_eq!(status_of(&retry), DeliveryStatus::Delivered);
    assert_eq!(retry.attempts, 1);
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(
        got[1].header("webhook-id").as_deref(),
        Some(failed.idempotency_token.as_str())
    );
    assert_eq!(keygen_token(&got[1]), failed.idempotency_token);
    // The original keeps its own record.
    let original = get_delivery(&app, &keys.manager, &failed.id).await.unwrap();
    assert_eq!(status_of(&original), DeliveryStatus::Failed);
    assert_eq!(original.attempts, 1);

    // Two more events, delivered.
    let mut tokens = HashMap::from([(first.id.clone(), failed.idempotency_token.clone())]);
    let mut last = first.clone();
    for id in ["lic-r2", "lic-r3"] {
        let event = publish(&app, &keys, "license.created", id)
            .await
            .event
            .unwrap();
        let d = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
        assert_eq!(status_of(&d), DeliveryStatus::Delivered);
        tokens.insert(event.id.clone(), d.idempotency_token);
        last = event;
    }
    let before = rx.wait_for(4, WAIT).await.len();
    assert_eq!(before, 4);

    let since = micros_of(first.received_at.as_ref().unwrap());
    let until = micros_of(last.received_at.as_ref().unwrap()) + 1;
    let replay = |since: i64, until: Option<i64>| ReplayEventsRequest {
        endpoint_id: endpoint.id.clone(),
        since: Some(timestamp(since)),
        until: until.map(timestamp),
        ..Default::default()
    };
    let replayed = client
        .replay_events(authed(&keys.manager, replay(since, Some(until))))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.deliveries, 3);
    assert!(!replayed.truncated);
    let got = rx.wait_for(7, WAIT).await;
    let replayed_tokens: BTreeSet<String> = got[4..]
        .iter()
        .map(|r| r.header("webhook-id").expect("webhook-id"))
        .collect();
    let original_tokens: BTreeSet<String> = tokens.values().cloned().collect();
    assert_eq!(replayed_tokens, original_tokens);
    for r in &got[4..] {
        assert_eq!(Some(keygen_token(r)), r.header("webhook-id"));
    }
    // Each event now has its original delivery (or two, for the retried one) plus a replay.
    for (event_id, token) in &tokens {
        let all = list_all(
            &app,
            &keys.manager,
            ListDeliveriesRequest {
                event_id: event_id.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(all.iter().all(|d| &d.idempotency_token == token));
        let newest = wait_final(&app, &keys.manager, &all[0].id).await;
        assert_eq!(status_of(&newest), DeliveryStatus::Delivered);
    }

    // A range with no event.
    let empty = client
        .replay_events(authed(
            &keys.manager,
            replay(since - 3_600_000_000, Some(since)),
        ))
        .await
        .expect("empty replay")
        .into_inner();
    assert_eq!(empty.deliveries, 0);
    // until <= since.
    assert_code(
        client
            .replay_events(authed(&keys.manager, replay(until, Some(until))))
            .await,
        Code::InvalidArgument,
        "until == since",
    );
    assert_code(
        client
            .replay_events(authed(&keys.manager, replay(until, Some(since))))
            .await,
        Code::InvalidArgument,
        "until < since",
    );
    assert_code(
        client
            .replay_events(authed(
                &keys.manager,
                ReplayEventsRequest {
                    endpoint_id: endpoint.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
        "no since",
    );

    // A disabled endpoint.
    update_endpoint(
        &app,
        &keys.manager,
        UpdateEndpointRequest {
            id: endpoint.id.clone(),
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_code(
        client
            .replay_events(authed(&keys.manager, replay(since, Some(until))))
            .await,
        Code::FailedPrecondition,
        "replay to a disabled endpoint",
    );
    assert_code(
        client
            .retry_delivery(authed(
                &keys.manager,
                RetryDeliveryRequest {
                    id: failed.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
        "retry to a disabled endpoint",
    );
    assert_no_more(&rx, 7, Duration::from_millis(300)).await;
}

/// ListDeliveries by endpoint, status and event type; pages of 2; DeleteDelivery.
async fn delivery_log_filters_pages_and_deletes(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.retry_schedule_secs = vec![]).await;
    let keys = app.tenant("acme").await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_default(Reply::Status(500));
    let all_types = create_endpoint(&app, &keys.manager, endpoint_request(&ok.url("/all")))
        .await
        .endpoint
        .unwrap();
    let licenses = create_endpoint(
        &app,
        &keys.manager,
        CreateEndpointRequest {
            url: failing.url("/licenses"),
            filters: vec!["license.*".into()],
            ..Default::default()
        },
    )
    .await
    .endpoint
    .unwrap();

    // 3 events → 3 deliveries to `all_types` (delivered) + 2 to `licenses` (failed).
    let mut expected = 0;
    for (event_type, id) in [
        ("license.created", "l1"),
        ("machine.created", "m1"),
        ("license.deleted", "l2"),
    ] {
        expected += publish(&app, &keys, event_type, id).await.deliveries;
    }
    assert_eq!(expected, 5);
    let everything = list_all(&app, &keys.manager, ListDeliveriesRequest::default()).await;
    assert_eq!(everything.len(), 5);
    for d in &everything {
        wait_final(&app, &keys.manager, &d.id).await;
    }
    let ids = |v: &[Delivery]| -> Vec<String> { v.iter().map(|d| d.id.clone()).collect() };
    let mut newest_first = ids(&everything);
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids(&everything), newest_first, "newest first");

    let by_endpoint = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            endpoint_id: licenses.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_endpoint.len(), 2);
    assert!(by_endpoint.iter().all(|d| d.endpoint_id == licenses.id));
    let to_all = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            endpoint_id: all_types.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(to_all.len(), 3);

    let failed = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            status: DeliveryStatus::Failed as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&failed), ids(&by_endpoint), "the failing endpoint's");
    let delivered = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            status: DeliveryStatus::Delivered as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&delivered), ids(&to_all));
    let pending = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            status: DeliveryStatus::Failing as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(pending.is_empty());

    let license_events = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            filters: vec!["license.*".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(license_events.len(), 4);
    assert!(
        license_events
            .iter()
            .all(|d| d.event_type.starts_with("license."))
    );
    let machines = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            filters: vec!["machine.created".into()],
            endpoint_id: all_types.id.clone(),
            status: DeliveryStatus::Delivered as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].event_type, "machine.created");
    let mut client = deliveries(&app).await;
    assert_code(
        client
            .list_deliveries(authed(
                &keys.manager,
                ListDeliveriesRequest {
                    filters: vec!["not a pattern!".into()],
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
        "a bad filter",
    );

    // Pages of 2: 2 + 2 + 1, in order, nothing twice.
    let mut paged = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_deliveries(authed(
                &keys.manager,
                ListDeliveriesRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("a page")
            .into_inner();
        sizes.push(page.deliveries.len());
        paged.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(ids(&paged), ids(&everything));

    // Delete one.
    let victim = &by_endpoint[0];
    assert!(
        !list_attempts(&app, &keys.manager, &victim.id)
            .await
            .unwrap()
            .is_empty()
    );
    client
        .delete_delivery(authed(
            &keys.manager,
            DeleteDeliveryRequest {
                id: victim.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete delivery");
    assert_code(
        get_delivery(&app, &keys.manager, &victim.id).await,
        Code::NotFound,
        "GetDelivery after delete",
    );
    assert_code(
        list_attempts(&app, &keys.manager, &victim.id).await,
        Code::NotFound,
        "ListAttempts after delete",
    );
    assert_code(
        client
            .delete_delivery(authed(
                &keys.manager,
                DeleteDeliveryRequest {
                    id: victim.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "deleting twice",
    );
    let rest = list_all(&app, &keys.manager, ListDeliveriesRequest::default()).await;
    assert_eq!(rest.len(), 4);
    assert!(rest.iter().all(|d| d.id != victim.id));
}

/// PingEndpoint reports a healthy receiver's 204, a broken one's 500, and refuses a
/// metadata address before connecting.
async fn ping_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let healthy = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.set_default(Reply::Full(500, vec![], "down".into()));
    let created =
        create_endpoint(&app, &keys.manager, endpoint_request(&healthy.url("/ping"))).await;
    let good = created.endpoint.unwrap();
    let answer = ping(&app, &keys.manager, &good.id).await;
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer.status_code, 204);
    assert_eq!(answer.error_kind, "");
    assert!(answer.duration.is_some());
    let got = healthy.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["data"]["attributes"]["event"], "endpoint.ping");
    assert_eq!(body["data"]["type"], "webhook-events");
    verify_standard(&got[0], &created.secret).expect("a ping is signed like any webhook");

    let bad = create_endpoint(&app, &keys.manager, endpoint_request(&broken.url("/ping")))
        .await
        .endpoint
        .unwrap();
    let answer = ping(&app, &keys.manager, &bad.id).await;
    assert!(!answer.success);
    assert_eq!(answer.status_code, 500);
    assert_eq!(answer.response_body, "down");
    assert_eq!(broken.wait_for(1, WAIT).await.len(), 1);

    // The SSRF guard refuses before connecting: nothing leaves for 169.254.169.254.
    let metadata = create_endpoint(
        &app,
        &keys.manager,
        endpoint_request("http://169.254.169.254/latest/meta-data"),
    )
    .await
    .endpoint
    .unwrap();
    let answer = ping(&app, &keys.manager, &metadata.id).await;
    assert!(!answer.success);
    assert_eq!(answer.status_code, 0);
    assert_eq!(answer.error_kind, "blocked_address", "{answer:?}");

    // Pings are not stored as deliveries.
    let log = list_all(&app, &keys.manager, ListDeliveriesRequest::default()).await;
    assert!(log.is_empty(), "{log:?}");
}

/// Another tenant's manager cannot see or act on a delivery; publisher and subscriber
/// keys may not use the DeliveryService at all.
async fn delivery_service_is_tenant_isolated(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let rx = Receiver::start().await;
    let endpoint = create_endpoint(&app, &a.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &a, "license.created", "lic-iso")
        .await
        .event
        .unwrap();
    let delivery = delivery_of(&app, &a.manager, &event.id, &endpoint.id).await;
    let mut client = deliveries(&app).await;
    let id = || delivery.id.clone();

    // Tenant B's manager: not found, nothing listed.
    assert_code(
        get_delivery(&app, &b.manager, &delivery.id).await,
        Code::NotFound,
        "GetDelivery",
    );
    assert_code(
        list_attempts(&app, &b.manager, &delivery.id).await,
        Code::NotFound,
        "ListAttempts",
    );
    assert_code(
        client
            .retry_delivery(authed(
                &b.manager,
                RetryDeliveryRequest {
                    id: id(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "RetryDelivery",
    );
    assert_code(
        client
            .delete_delivery(authed(
                &b.manager,
                DeleteDeliveryRequest {
                    id: id(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "DeleteDelivery",
    );
    assert_code(
        client
            .replay_events(authed(
                &b.manager,
                ReplayEventsRequest {
                    endpoint_id: endpoint.id.clone(),
                    since: Some(timestamp(0)),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "ReplayEvents to another tenant's endpoint",
    );
    for request in [
        ListDeliveriesRequest::default(),
        ListDeliveriesRequest {
            endpoint_id: endpoint.id.clone(),
            ..Default::default()
        },
        ListDeliveriesRequest {
            event_id: event.id.clone(),
            ..Default::default()
        },
        ListDeliveriesRequest {
            tenant_id: "tenant-a".into(),
            ..Default::default()
        },
    ] {
        match client
            .list_deliveries(authed(&b.manager, request.clone()))
            .await
        {
            Ok(page) => assert!(
                page.get_ref().deliveries.is_empty(),
                "{request:?} showed tenant A's deliveries"
            ),
            // Naming another tenant may be refused outright.
            Err(status) => assert!(
                matches!(status.code(), Code::PermissionDenied | Code::NotFound),
                "{request:?}: {status:?}"
            ),
        }
    }

    // Tenant A's publisher and subscriber keys: permission denied.
    for key in [&a.publisher, &a.subscriber] {
        assert_code(
            get_delivery(&app, key, &delivery.id).await,
            Code::PermissionDenied,
            "GetDelivery",
        );
        assert_code(
            list_attempts(&app, key, &delivery.id).await,
            Code::PermissionDenied,
            "ListAttempts",
        );
        assert_code(
            client
                .list_deliveries(authed(key, ListDeliveriesRequest::default()))
                .await,
            Code::PermissionDenied,
            "ListDeliveries",
        );
        assert_code(
            client
                .retry_delivery(authed(
                    key,
                    RetryDeliveryRequest {
                        id: id(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::PermissionDenied,
            "RetryDelivery",
        );
        assert_code(
            client
                .delete_delivery(authed(
                    key,
                    DeleteDeliveryRequest {
                        id: id(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::PermissionDenied,
            "DeleteDelivery",
        );
        assert_code(
            client
                .replay_events(authed(
                    key,
                    ReplayEventsRequest {
                        endpoint_id: endpoint.id.clone(),
                        since: Some(timestamp(0)),
                        ..Default::default()
                    },
                ))
                .await,
            Code::PermissionDenied,
            "ReplayEvents",
        );
    }

    // Nothing of A's changed.
    let still = get_delivery(&app, &a.manager, &delivery.id)
        .await
        .expect("A still sees its delivery");
    assert_eq!(status_of(&still), DeliveryStatus::Delivered);
    let all = list_all(&app, &a.manager, ListDeliveriesRequest::default()).await;
    assert_eq!(all.len(), 1, "no retry or replay was created by others");
    assert_no_more(&rx, 1, Duration::from_millis(300)).await;
}

/// An endpoint's own retry schedule replaces the server's: `[1]` means two attempts.
async fn endpoint_retry_schedule_overrides_the_servers(backend: Backend) {
    let app = spawn_app(backend).await; // the server's schedule: [1, 2]
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(500));
    let endpoint = create_endpoint(
        &app,
        &keys.manager,
        CreateEndpointRequest {
            url: rx.url("/hook"),
            retry_schedule_secs: vec![1],
            ..Default::default()
        },
    )
    .await
    .endpoint
    .unwrap();
    assert_eq!(endpoint.retry_schedule_secs, vec![1]);
    let event = publish(&app, &keys, "license.created", "lic-sched")
        .await
        .event
        .unwrap();

    let delivery = delivery_of(&app, &keys.manager, &event.id, &endpoint.id).await;
    assert_eq!(status_of(&delivery), DeliveryStatus::Failed);
    assert_eq!(delivery.attempts, 2, "{delivery:?}");
    assert_no_more(&rx, 2, Duration::from_millis(2500)).await;
}

/// Events past the retention period go at start, with their deliveries.
async fn pruning_removes_old_events_and_their_deliveries(backend: Backend) {
    let mut app = spawn_app_with(backend, |c| c.retention_days = 1).await;
    let keys = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&rx.url("/hook")))
        .await
        .endpoint
        .unwrap();
    let old = publish(&app, &keys, "license.created", "lic-old")
        .await
        .event
        .unwrap();
    let recent = publish(&app, &keys, "license.created", "lic-new")
        .await
        .event
        .unwrap();
    let old_delivery = delivery_of(&app, &keys.manager, &old.id, &endpoint.id).await;
    let recent_delivery = delivery_of(&app, &keys.manager, &recent.id, &endpoint.id).await;

    // Two days older (times are integer microseconds).
    let db = Database::connect(app.config.database_url.expose())
        .await
        .expect("open the test database");
    let updated = db
        .execute_unprepared(&format!(
            "UPDATE events SET received_at = received_at - 172800000000 WHERE id = '{}'",
            old.id
        ))
        .await
        .expect("backdate the event");
    assert_eq!(updated.rows_affected(), 1);
    db.close().await.ok();

    app.restart().await;

    // The pruner runs at start, in the background: wait for it.
    let deadline = Instant::now() + WAIT;
    loop {
        match get_event(&app, &keys.manager, &old.id).await {
            Err(status) if status.code() == Code::NotFound => break,
            Err(status) => panic!("GetEvent: {status:?}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "the old event was not pruned");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    assert_code(
        get_delivery(&app, &keys.manager, &old_delivery.id).await,
        Code::NotFound,
        "the old event's delivery",
    );
    assert_code(
        list_attempts(&app, &keys.manager, &old_delivery.id).await,
        Code::NotFound,
        "the old event's attempts",
    );
    let kept = get_event(&app, &keys.manager, &recent.id)
        .await
        .expect("the recent event is kept");
    assert_eq!(kept.id, recent.id);
    let kept = get_delivery(&app, &keys.manager, &recent_delivery.id)
        .await
        .expect("the recent delivery is kept");
    assert_eq!(status_of(&kept), DeliveryStatus::Delivered);
    assert_eq!(
        list_attempts(&app, &keys.manager, &recent_delivery.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A manual retry of a delivery that still has a retry pending supersedes it: the
/// original is FAILED and never sent again, even when its attempt was in flight.
async fn manual_retry_supersedes_a_pending_original(backend: Backend) {
    let app = spawn_app(backend).await; // 3 s webhook timeout
    let keys = app.tenant("acme").await;
    let mut client = deliveries(&app).await;
    let retry = |id: &str| {
        authed(
            &keys.manager,
            RetryDeliveryRequest {
                id: id.into(),
                ..Default::default()
            },
        )
    };

    // Failed once, the next attempt 30 s away.
    let waiting = Receiver::start().await;
    waiting.script(vec![Reply::Status(500)]);
    let endpoint = create_endpoint(
        &app,
        &keys.manager,
        CreateEndpointRequest {
            url: waiting.url("/waiting"),
            retry_schedule_secs: vec![30],
            ..Default::default()
        },
    )
    .await
    .endpoint
    .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-sup-1")
        .await
        .event
        .unwrap();
    let original = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            event_id: event.id.clone(),
            endpoint_id: endpoint.id.clone(),
            ..Default::default()
        },
    )
    .await
    .remove(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let d = get_delivery(&app, &keys.manager, &original.id)
            .await
            .unwrap();
        if status_of(&d) == DeliveryStatus::Failing {
            assert!(d.next_attempt_at.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "never FAILING: {d:?}");
        tokio::time::sleep(POLL).await;
    }
    let new = client
        .retry_delivery(retry(&original.id))
        .await
        .expect("retry")
        .into_inner();
    let new = wait_final(&app, &keys.manager, &new.id).await;
    assert_eq!(status_of(&new), DeliveryStatus::Delivered);
    let superseded = get_delivery(&app, &keys.manager, &original.id)
        .await
        .unwrap();
    assert_eq!(status_of(&superseded), DeliveryStatus::Failed);
    assert!(
        superseded.last_error.contains(&new.id),
        "last_error {:?}",
        superseded.last_error
    );
    assert!(superseded.next_attempt_at.is_none());
    assert_eq!(waiting.wait_for(2, WAIT).await.len(), 2);

    // In flight when retried: the receiver hangs past the 3 s timeout.
    let hanging = Receiver::start().await;
    hanging.script(vec![Reply::Hang(Duration::from_secs(5))]);
    let endpoint = create_endpoint(&app, &keys.manager, endpoint_request(&hanging.url("/hang")))
        .await
        .endpoint
        .unwrap();
    let event = publish(&app, &keys, "license.created", "lic-sup-2")
        .await
        .event
        .unwrap();
    let first = hanging.wait_for(1, WAIT).await[0].at;
    let original = list_all(
        &app,
        &keys.manager,
        ListDeliveriesRequest {
            event_id: event.id.clone(),
            endpoint_id: endpoint.id.clone(),
            ..Default::default()
        },
    )
    .await
    .remove(0);
    let new = client
        .retry_delivery(retry(&original.id))
        .await
        .expect("retry")
        .into_inner();
    let new = wait_final(&app, &keys.manager, &new.id).await;
    assert_eq!(status_of(&new), DeliveryStatus::Delivered);
    // The original's attempt times out at 3 s; a retry of it would come ~1 s later.
    tokio::time::sleep(
        (first + Duration::from_millis(6500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let superseded = get_delivery(&app, &keys.manager, &original.id)
        .await
        .unwrap();
    assert_eq!(
        status_of(&superseded),
        DeliveryStatus::Failed,
        "the superseded delivery came back: {superseded:?}"
    );
    assert!(superseded.next_attempt_at.is_none());
    assert_eq!(superseded.attempts, 1, "its attempt is still recorded");
    let attempts = list_attempts(&app, &keys.manager, &original.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_kind, "timeout");
    assert!(!attempts[0].succeeded);
    let got = hanging.received();
    assert_eq!(got.len(), 2, "the superseded delivery was sent again");
}

/// A change to an endpoint applies to its next webhook, however it was made: through
/// UpdateEndpoint on this server, or written straight to the database, as another
/// replica's change is seen (the worker keeps a copy of the endpoints it sends to).
async fn endpoint_changes_apply_to_the_next_webhook(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let (first, second, third) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let created = create_endpoint(&app, &keys.manager, endpoint_request(&first.url("/hook"))).await;
    let endpoint = created.endpoint.unwrap();
    publish(&app, &keys, "license.created", "lic-copy-1").await;
    first.wait_for(1, WAIT).await;

    update_endpoint(
        &app,
        &keys.manager,
        UpdateEndpointRequest {
            id: endpoint.id.clone(),
            url: Some(second.url("/hook")),
            ..Default::default()
        },
    )
    .await;
    publish(&app, &keys, "license.created", "lic-copy-2").await;
    let got = second.wait_for(1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0].body).contains("lic-copy-2"));

    let db = Database::connect(app.config.database_url.expose())
        .await
        .expect("database");
    db.execute_unprepared(&format!(
        "UPDATE endpoints SET url = '{}' WHERE id = '{}'",
        third.url("/hook"),
        endpoint.id
    ))
    .await
    .expect("update the row");
    publish(&app, &keys, "license.created", "lic-copy-3").await;
    let got = third.wait_for(1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0].body).contains("lic-copy-3"));
    assert_no_more(&first, 1, Duration::from_millis(300)).await;
    assert_no_more(&second, 1, Duration::from_millis(300)).await;
}
