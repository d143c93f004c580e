//! Publishing, as a publisher sees it: the catalog matches Keygen's event list, every
//! validation rule refuses with INVALID_ARGUMENT naming the field (and stores nothing),
//! payloads keep their form, idempotency keys dedupe, deliveries are queued for the
//! matching endpoints, batches are atomic, streams answer every item in order, and
//! ListEvents pages newest first.

use std::{collections::HashSet, path::Path, time::Duration};

use herald::proto::{
    CreateEndpointRequest, DeleteEndpointRequest, Event, EventType, FilterList,
    ListEventTypesRequest, ListEventsRequest, PayloadShape, PublishBatchRequest, PublishRequest,
    PublishResponse, PublishStreamRequest, UpdateEndpointRequest,
    event_service_client::EventServiceClient, publish_stream_response,
};
use herald::store::Store;
use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Value as Json, json};
use tonic::{Code, Status, transport::Channel};

use crate::{
    both_backends,
    helpers::{
        Backend, TestApp, authed, get_event, publish_request, spawn_app, spawn_app_with,
        store_endpoint,
    },
};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Asserts `status` is INVALID_ARGUMENT and its message starts with `field: `.
#[track_caller]
fn assert_invalid(status: &Status, field: &str) {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "expected INVALID_ARGUMENT naming {field}, got {status:?}"
    );
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "expected the message to name `{field}`, got {:?}",
        status.message()
    );
}

/// Every event of the key's tenant (or `tenant_id` with an admin key), newest first.
async fn all_events(
    events: &mut EventServiceClient<Channel>,
    key: &str,
    tenant_id: &str,
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = events
            .list_events(authed(
                key,
                ListEventsRequest {
                    tenant_id: tenant_id.into(),
                    page_size: 1000,
                    page_token: token.clone(),
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
        token = page.next_page_token;
    }
}

async fn publish(
    events: &mut EventServiceClient<Channel>,
    key: &str,
    request: PublishRequest,
) -> PublishResponse {
    events
        .publish(authed(key, request))
        .await
        .expect("publish")
        .into_inner()
}

fn with_key(mut request: PublishRequest, key: &str) -> PublishRequest {
    request.idempotency_key = key.into();
    request
}

fn with_env(mut request: PublishRequest, env: &str) -> PublishRequest {
    request.environment = env.into();
    request
}

/// A `license.created` request with this exact payload text.
fn license_json(payload_json: &str) -> PublishRequest {
    PublishRequest {
        type_name: "license.created".into(),
        payload_json: payload_json.into(),
        ..Default::default()
    }
}

/// A JSON object as a `google.protobuf.Struct`, as a client library would build it.
fn to_struct(json: Json) -> Struct {
    match to_value(json).kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("not an object: {other:?}"),
    }
}

fn to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().expect("number")),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

// ---------------------------------------------------------------------------------
// 1. The catalog is Keygen's event list
// ---------------------------------------------------------------------------------

/// (name, trigger, payload) of each event in the flattened Keygen table.
fn parse_keygen_event_list(text: &str) -> Vec<(String, String, String)> {
    let (_, table) = text
        .split_once("---|---|---|")
        .expect("the table header separator");
    let (table, _) = table
        .split_once("Example webhook handler")
        .expect("the text after the table");
    let tokens: Vec<String> = table
        .lines()
        .collect::<Vec<_>>()
        .join(" ")
        .split('|')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        tokens.len() % 3,
        0,
        "the table does not split into (event, trigger, payload) triples"
    );
    tokens
        .chunks(3)
        .map(|t| (t[0].clone(), t[1].clone(), t[2].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_exactly_the_keygen_events() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_repo = manifest.join("tests/data/keygen-webhook-event-types.txt");
    let text = std::fs::read_to_string(&in_repo).expect("read the in-repo event list");
    let shared = manifest.join("../../shared/seed/keygen-webhook-event-types.txt");
    if shared.exists() {
        let seed = std::fs::read(&shared).expect("read the shared seed");
        assert!(
            seed == text.as_bytes(),
            "{} differs from the seed {}",
            in_repo.display(),
            shared.display()
        );
    }
    let expected = parse_keygen_event_list(&text);
    assert_eq!(expected.len(), 99, "Keygen lists 99 events");

    let app = spawn_app(Backend::Sqlite).await;
    let mut events = app.events().await;

    // Page through in pages of 10, following the tokens.
    let mut served = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = events
            .list_event_types(authed(
                &app.admin_key,
                ListEventTypesRequest {
                    page_size: 10,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list event types")
            .into_inner();
        pages += 1;
        assert!(page.event_types.len() <= 10, "page {pages} is too long");
        served.extend(page.event_types);
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 20, "the pages never end");
        token = page.next_page_token;
    }
    assert_eq!(pages, 10, "99 types in pages of 10");

    let expected_names: Vec<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    let served_names: Vec<&str> = served.iter().map(|t| t.name.as_str()).collect();
    let missing: Vec<_> = expected_names
        .iter()
        .filter(|n| !served_names.contains(n))
        .collect();
    let invented: Vec<_> = served_names
        .iter()
        .filter(|n| !expected_names.contains(n))
        .collect();
    assert!(missing.is_empty(), "missing from the catalog: {missing:?}");
    assert!(invented.is_empty(), "not in Keygen's list: {invented:?}");
    assert_eq!(served_names, expected_names, "same events, same order");

    let mut values = HashSet::new();
    for (info, (name, trigger, payload)) in served.iter().zip(&expected) {
        assert_eq!(&info.trigger, trigger, "trigger of {name}");
        assert_eq!(&info.payload, payload, "payload of {name}");
        assert!(!info.resource_type.is_empty(), "resource_type of {name}");
        let shape = if name.ends_with(".attached") || name.ends_with(".detached") {
            PayloadShape::List
        } else {
            PayloadShape::Object
        };
        assert_eq!(info.shape, shape as i32, "shape of {name}");
        let value = EventType::try_from(info.r#type).expect("a known enum value");
        assert_ne!(value, EventType::Unspecified, "type of {name}");
        assert!(values.insert(info.r#type), "type of {name} is repeated");
    }

    // The default page size (100) returns the whole catalog in one page.
    let all = events
        .list_event_types(authed(&app.admin_key, ListEventTypesRequest::default()))
        .await
        .expect("list event types")
        .into_inner();
    assert_eq!(all.event_types, served);
    assert!(all.next_page_token.is_empty());
}

// ---------------------------------------------------------------------------------
// 2. Validation: one refusal per rule, and nothing stored
// ---------------------------------------------------------------------------------

async fn publish_refuses_each_invalid_request(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.max_payload_bytes = 2048).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let valid = || publish_request("license.created", "lic-1");
    let big_name = "x".repeat(3000);
    let valid_data = json!({ "type": "licenses", "id": "lic-1" });

    // (what is wrong, the request, the field the message must name)
    let cases: Vec<(&str, PublishRequest, &str)> = vec![
        (
            "missing type",
            PublishRequest {
                type_name: String::new(),
                ..valid()
            },
            "type",
        ),
        (
            "unknown type_name",
            PublishRequest {
                type_name: "license.made".into(),
                ..valid()
            },
            "type_name",
        ),
        (
            "unknown type value",
            PublishRequest {
                r#type: 9999,
                type_name: String::new(),
                ..valid()
            },
            "type",
        ),
        (
            "type and type_name contradict",
            PublishRequest {
                r#type: EventType::LicenseCreated as i32,
                type_name: "machine.created".into(),
                ..valid()
            },
            "type_name",
        ),
        (
            "payload missing",
            PublishRequest {
                payload_json: String::new(),
                ..valid()
            },
            "payload",
        ),
        (
            "both payload and payload_json",
            PublishRequest {
                payload: Some(to_struct(json!({ "data": valid_data }))),
                ..valid()
            },
            "payload_json",
        ),
        (
            "payload_json is not JSON",
            license_json(r#"{"data": {"type": "licenses", "id": "lic-1""#),
            "payload_json",
        ),
        (
            "payload is not an object",
            license_json(r#"[{"type": "licenses", "id": "lic-1"}]"#),
            "payload_json",
        ),
        (
            "data missing",
            license_json(r#"{"meta": {}}"#),
            "payload_json.data",
        ),
        (
            "object data for a list event",
            PublishRequest {
                type_name: "license.users.attached".into(),
                payload_json: json!({ "data": { "type": "license-users", "id": "lu-1" } })
                    .to_string(),
                ..Default::default()
            },
            "payload_json.data",
        ),
        (
            "list data for an object event",
            license_json(&json!({ "data": [valid_data] }).to_string()),
            "payload_json.data",
        ),
        (
            "empty list",
            PublishRequest {
                type_name: "license.users.attached".into(),
                payload_json: r#"{"data": []}"#.into(),
                ..Default::default()
            },
            "payload_json.data",
        ),
        (
            "wrong data.type",
            license_json(r#"{"data": {"type": "machines", "id": "m-1"}}"#),
            "payload_json.data.type",
        ),
        (
            "wrong type of a list item",
            PublishRequest {
                type_name: "license.users.attached".into(),
                payload_json: r#"{"data": [{"type": "users", "id": "u-1"}]}"#.into(),
                ..Default::default()
            },
            "payload_json.data[0].type",
        ),
        (
            "data.type missing",
            license_json(r#"{"data": {"id": "lic-1"}}"#),
            "payload_json.data.type",
        ),
        (
            "data.id missing",
            license_json(r#"{"data": {"type": "licenses"}}"#),
            "payload_json.data.id",
        ),
        (
            "data.id empty",
            license_json(r#"{"data": {"type": "licenses", "id": ""}}"#),
            "payload_json.data.id",
        ),
        (
            "attributes not an object",
            license_json(r#"{"data": {"type": "licenses", "id": "lic-1", "attributes": "x"}}"#),
            "payload_json.data.attributes",
        ),
        (
            "relationships not an object",
            license_json(r#"{"data": {"type": "licenses", "id": "lic-1", "relationships": []}}"#),
            "payload_json.data.relationships",
        ),
        (
            "unknown top-level member",
            license_json(r#"{"data": {"type": "licenses", "id": "lic-1"}, "extra": 1}"#),
            "payload_json.extra",
        ),
        (
            "meta not an object",
            license_json(r#"{"data": {"type": "licenses", "id": "lic-1"}, "meta": 1}"#),
            "payload_json.meta",
        ),
        (
            "Struct payload without data",
            PublishRequest {
                payload_json: String::new(),
                payload: Some(to_struct(json!({ "meta": {} }))),
                ..valid()
            },
            "payload.data",
        ),
        (
            "payload_json over the size limit",
            license_json(
                &json!({ "data": { "type": "licenses", "id": "lic-1",
                                   "attributes": { "name": big_name } } })
                .to_string(),
            ),
            "payload_json",
        ),
        (
            "Struct payload over the size limit",
            PublishRequest {
                payload_json: String::new(),
                payload: Some(to_struct(
                    json!({ "data": { "type": "licenses", "id": "lic-1",
                    "attributes": { "name": big_name } } }),
                )),
                ..valid()
            },
            "payload",
        ),
        (
            "invalid environment",
            with_env(valid(), "no spaces"),
            "environment",
        ),
        (
            "environment too long",
            with_env(valid(), &"e".repeat(65)),
            "environment",
        ),
        (
            "idempotency key over 255 characters",
            with_key(valid(), &"k".repeat(256)),
            "idempotency_key",
        ),
        (
            "idempotency key with a control character",
            with_key(valid(), "order\n1"),
            "idempotency_key",
        ),
        (
            "invalid occurred_at",
            PublishRequest {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..valid()
            },
            "occurred_at",
        ),
    ];
    for (what, request, field) in cases {
        let status = events
            .publish(authed(&keys.publisher, request))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{what}: the message should name `{field}`, got {:?}",
            status.message()
        );
        if what.contains("size limit") {
            assert!(
                status.message().contains("2048"),
                "{what}: the message should state the limit, got {:?}",
                status.message()
            );
        }
        if what.contains("255") {
            assert!(status.message().contains("255"), "{}", status.message());
        }
    }

    // A tenant that does not exist (an admin key may name any tenant).
    let status = events
        .publish(authed(
            &app.admin_key,
            PublishRequest {
                tenant_id: "ghost".into(),
                ..valid()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("ghost"), "{}", status.message());

    // An admin key must name the tenant.
    let status = events
        .publish(authed(&app.admin_key, valid()))
        .await
        .unwrap_err();
    assert_invalid(&status, "tenant_id");

    // Nothing of the above was stored.
    assert_eq!(all_events(&mut events, &keys.subscriber, "").await.len(), 0);
    let status = events
        .list_events(authed(
            &app.admin_key,
            ListEventsRequest {
                tenant_id: "ghost".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "no tenant 'ghost' was created"
    );

    // The limits themselves are allowed.
    let at_limits = with_env(with_key(valid(), &"k".repeat(255)), &"e".repeat(64));
    let published = publish(&mut events, &keys.publisher, at_limits).await;
    let event = published.event.expect("event");
    assert_eq!(event.idempotency_key.len(), 255);
    assert_eq!(event.environment.len(), 64);
    // And so is the admin key naming the tenant.
    let by_admin = PublishRequest {
        tenant_id: "acme".into(),
        ..valid()
    };
    publish(&mut events, &app.admin_key, by_admin).await;
    assert_eq!(all_events(&mut events, &keys.subscriber, "").await.len(), 2);
}

// ---------------------------------------------------------------------------------
// 3. Payload forms
// ---------------------------------------------------------------------------------

async fn struct_payload_keeps_integers(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let payload = to_struct(json!({
        "data": {
            "type": "licenses",
            "id": "lic-s",
            "attributes": {
                "maxMachines": 5,
                "ratio": 0.5,
                "name": "Pro",
                "protected": true,
                "expiry": null,
                "tags": ["a", "b"]
            }
        }
    }));
    let published = publish(
        &mut events,
        &keys.publisher,
        PublishRequest {
            type_name: "license.created".into(),
            payload: Some(payload.clone()),
            ..Default::default()
        },
    )
    .await;
    let event = published.event.expect("event");
    assert!(
        event.payload_json.contains(r#""maxMachines":5"#) && !event.payload_json.contains("5.0"),
        "integers stay integers: {}",
        event.payload_json
    );
    let json: Json = serde_json::from_str(&event.payload_json).expect("payload_json is JSON");
    let attributes = &json["data"]["attributes"];
    assert_eq!(attributes["maxMachines"].as_u64(), Some(5));
    assert_eq!(attributes["ratio"].as_f64(), Some(0.5));
    assert_eq!(attributes["name"], "Pro");
    assert_eq!(attributes["protected"], true);
    assert!(attributes["expiry"].is_null());
    assert_eq!(attributes["tags"], json!(["a", "b"]));
    assert_eq!(
        event.payload.as_ref(),
        Some(&payload),
        "the Struct comes back"
    );

    let got = get_event(&app, &keys.subscriber, &event.id)
        .await
        .expect("get");
    assert_eq!(got.payload_json, event.payload_json);
    assert_eq!(got.payload, Some(payload));
}

async fn payload_json_is_kept_exactly(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    // Odd spacing, key order, number forms: all kept as sent.
    let text = "{ \"meta\": {\"price\": 1.50, \"big\": 12345678901234567890, \"e\": 1e3},\n  \
                \"data\": {\"type\": \"licenses\", \"id\": \"lic-j\",\
                \"attributes\": {\"maxMachines\": 5, \"name\": \"caf\u{e9} \\u00e9\"}} }";
    let published = publish(&mut events, &keys.publisher, license_json(text)).await;
    let event = published.event.expect("event");
    assert_eq!(event.payload_json, text);
    let struct_payload = event.payload.as_ref().expect("payload as a Struct");
    let data = match &struct_payload.fields["data"].kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("data is {other:?}"),
    };
    assert_eq!(
        data.fields["id"].kind,
        Some(Kind::StringValue("lic-j".into()))
    );

    let got = get_event(&app, &keys.subscriber, &event.id)
        .await
        .expect("get");
    assert_eq!(got.payload_json, text);
    // The answer's payload Struct is encoded straight from the JSON (`wire`); it decodes
    // to what GetEvent builds from the stored text.
    assert_eq!(got, event, "the answer carries the stored event");
    let listed = all_events(&mut events, &keys.subscriber, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].payload_json, text);
}

/// `omit_payload` leaves the payload out of the answer only: the event is stored, and
/// read back, with it. A batch honours each item's choice, and a duplicate's answer too.
async fn omit_payload_leaves_only_the_answer_without_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let text = r#"{"data":{"type":"licenses","id":"lic-o","attributes":{"n":1}}}"#;
    let omitting = |mut r: PublishRequest| {
        r.omit_payload = true;
        r
    };

    let answer = publish(&mut events, &keys.publisher, omitting(license_json(text))).await;
    let event = answer.event.expect("event");
    assert!(event.id.starts_with("evt_"), "{}", event.id);
    assert_eq!(event.type_name, "license.created");
    assert_eq!(event.payload, None);
    assert_eq!(event.payload_json, "");
    let got = get_event(&app, &keys.subscriber, &event.id)
        .await
        .expect("get");
    assert_eq!(got.payload_json, text, "stored with its payload");
    assert!(got.payload.is_some());
    assert_eq!(
        got,
        Event {
            payload: got.payload.clone(),
            payload_json: got.payload_json.clone(),
            ..event
        },
        "the answer is the stored event but for the payload"
    );

    let results = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![
                    omitting(publish_request("license.created", "lic-1")),
                    publish_request("license.created", "lic-2"),
                ],
            },
        ))
        .await
        .expect("batch")
        .into_inner()
        .results;
    let answered = |i: usize| results[i].event.clone().expect("event");
    assert_eq!(answered(0).payload_json, "");
    assert_eq!(answered(0).payload, None);
    assert!(answered(1).payload_json.contains("lic-2"));
    assert!(answered(1).payload.is_some());

    let keyed = || with_key(publish_request("license.created", "lic-k"), "order-o");
    let first = publish(&mut events, &keys.publisher, keyed()).await;
    assert!(first.event.expect("event").payload.is_some());
    let again = publish(&mut events, &keys.publisher, omitting(keyed())).await;
    assert!(again.duplicate);
    let repeat = again.event.expect("event");
    assert_eq!((repeat.payload, repeat.payload_json.as_str()), (None, ""));
    let stored = all_events(&mut events, &keys.subscriber, "").await;
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|e| !e.payload_json.is_empty()));
}

// ---------------------------------------------------------------------------------
// 4. Idempotency
// ---------------------------------------------------------------------------------

async fn idempotency_key_returns_the_original(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let mut events = app.events().await;

    let first = publish(
        &mut events,
        &acme.publisher,
        with_key(publish_request("license.created", "lic-1"), "order-1"),
    )
    .await;
    assert!(!first.duplicate);
    let original = first.event.expect("event");
    assert_eq!(original.idempotency_key, "order-1");

    // The repeat (even with another payload) returns the original, stores nothing.
    let again = publish(
        &mut events,
        &acme.publisher,
        with_key(publish_request("license.updated", "lic-2"), "order-1"),
    )
    .await;
    assert!(again.duplicate, "the repeat is a duplicate");
    let repeat = again.event.expect("event");
    assert_eq!(repeat.id, original.id);
    assert_eq!(repeat.type_name, "license.created");
    assert_eq!(repeat.payload_json, original.payload_json);
    assert_eq!(again.deliveries, first.deliveries);

    // The key belongs to the tenant, whichever key publishes for it.
    let by_admin = publish(
        &mut events,
        &app.admin_key,
        PublishRequest {
            tenant_id: "acme".into(),
            ..with_key(publish_request("license.created", "lic-1"), "order-1")
        },
    )
    .await;
    assert!(by_admin.duplicate);
    assert_eq!(by_admin.event.expect("event").id, original.id);
    let stored = all_events(&mut events, &acme.subscriber, "").await;
    assert_eq!(stored.len(), 1, "one event for one key");
    assert_eq!(stored[0].id, original.id);

    // Another tenant's same key is another event.
    let other = publish(
        &mut events,
        &globex.publisher,
        with_key(publish_request("license.created", "lic-1"), "order-1"),
    )
    .await;
    assert!(!other.duplicate);
    let other = other.event.expect("event");
    assert_ne!(other.id, original.id);
    assert_eq!(other.tenant_id, "globex");
    assert_eq!(
        all_events(&mut events, &globex.subscriber, "").await.len(),
        1
    );
    assert_eq!(all_events(&mut events, &acme.subscriber, "").await.len(), 1);

    // Without a key, the same request twice is two events.
    for _ in 0..2 {
        let r = publish(
            &mut events,
            &acme.publisher,
            publish_request("license.created", "lic-1"),
        )
        .await;
        assert!(!r.duplicate);
    }
    assert_eq!(all_events(&mut events, &acme.subscriber, "").await.len(), 3);
}

async fn idempotency_window_expires(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.idempotency_window_secs = 1).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let request = || with_key(publish_request("license.created", "lic-1"), "order-1");

    let first = publish(&mut events, &keys.publisher, request()).await;
    let first_id = first.event.expect("event").id;
    let repeat = publish(&mut events, &keys.publisher, request()).await;
    assert!(
        repeat.duplicate,
        "a repeat within the window is a duplicate"
    );
    assert_eq!(repeat.event.expect("event").id, first_id);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = publish(&mut events, &keys.publisher, request()).await;
    assert!(!later.duplicate, "after the window the key is free again");
    let later_id = later.event.expect("event").id;
    assert_ne!(later_id, first_id);
    assert_eq!(all_events(&mut events, &keys.subscriber, "").await.len(), 2);

    // A repeat now matches the new event, not the expired one.
    let repeat = publish(&mut events, &keys.publisher, request()).await;
    assert!(repeat.duplicate);
    assert_eq!(repeat.event.expect("event").id, later_id);
}

// ---------------------------------------------------------------------------------
// 5. Deliveries queued per matching endpoint (the outbox)
// ---------------------------------------------------------------------------------

async fn create_endpoint(app: &TestApp, key: &str, filters: &[&str], env: &str, disabled: bool) {
    app.endpoints()
        .await
        .create_endpoint(authed(
            key,
            CreateEndpointRequest {
                url: "http://127.0.0.1:9/hook".into(),
                filters: filters.iter().map(|f| f.to_string()).collect(),
                environment: env.into(),
                disabled,
                ..Default::default()
            },
        ))
        .await
        .expect("create endpoint");
}

async fn deliveries_count_matching_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    create_endpoint(&app, &acme.manager, &["license.*"], "", false).await;
    create_endpoint(&app, &acme.manager, &["license.created"], "", false).await;
    create_endpoint(&app, &acme.manager, &["machine.*"], "", false).await;
    create_endpoint(&app, &acme.manager, &["license.*"], "", true).await; // disabled
    create_endpoint(&app, &acme.manager, &["license.*"], "sandbox", false).await;
    create_endpoint(&app, &globex.manager, &["*"], "", false).await; // another tenant
    let mut events = app.events().await;
    let count = |r: PublishResponse| r.deliveries;

    let lic = publish_request("license.created", "lic-1");
    let r = publish(&mut events, &acme.publisher, lic.clone()).await;
    assert_eq!(count(r), 2, "license.* and license.created");

    let r = publish(
        &mut events,
        &acme.publisher,
        with_env(lic.clone(), "sandbox"),
    )
    .await;
    assert_eq!(count(r), 1, "only the sandbox endpoint");

    let r = publish(&mut events, &acme.publisher, with_env(lic, "staging")).await;
    assert_eq!(count(r), 0, "no endpoint in staging");

    let r = publish(
        &mut events,
        &acme.publisher,
        publish_request("license.updated", "lic-1"),
    )
    .await;
    assert_eq!(count(r), 1, "license.* only");

    let r = publish(
        &mut events,
        &acme.publisher,
        publish_request("machine.created", "m-1"),
    )
    .await;
    assert_eq!(count(r), 1, "machine.* only");

    let r = publish(
        &mut events,
        &acme.publisher,
        publish_request("user.created", "u-1"),
    )
    .await;
    assert_eq!(count(r), 0, "no endpoint wants user.created");

    let r = publish(
        &mut events,
        &acme.publisher,
        with_env(publish_request("user.created", "u-1"), "sandbox"),
    )
    .await;
    assert_eq!(
        count(r),
        0,
        "the sandbox endpoint does not want user.created"
    );

    let r = publish(
        &mut events,
        &globex.publisher,
        publish_request("user.created", "u-1"),
    )
    .await;
    assert_eq!(count(r), 1, "globex's own endpoint");

    // A batch reports each item's deliveries.
    let batch = events
        .publish_batch(authed(
            &acme.publisher,
            PublishBatchRequest {
                events: vec![
                    publish_request("license.created", "lic-2"),
                    publish_request("user.created", "u-2"),
                    publish_request("machine.deleted", "m-2"),
                ],
            },
        ))
        .await
        .expect("batch")
        .into_inner();
    let counts: Vec<u32> = batch.results.iter().map(|r| r.deliveries).collect();
    assert_eq!(counts, vec![2, 0, 1]);
}

/// Every endpoint change counts from the next publish on, whoever made it: this server
/// (on PostgreSQL the writer matches against its copy of the endpoints, which such a
/// change makes stale) or another process writing to the same database (another replica).
async fn endpoint_changes_apply_to_the_next_publish(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let mut events = app.events().await;
    let mut endpoints = app.endpoints().await;
    let lic = || publish_request("license.created", "lic-1");
    let count = |r: PublishResponse| r.deliveries;
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 0);

    create_endpoint(&app, &acme.manager, &["license.*"], "", false).await;
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);
    let created = |r: tonic::Response<herald::proto::CreateEndpointResponse>| {
        r.into_inner().endpoint.expect("the endpoint").id
    };
    let all = created(
        endpoints
            .create_endpoint(authed(
                &acme.manager,
                CreateEndpointRequest {
                    url: "http://127.0.0.1:9/all".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create"),
    );
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 2);

    let update = |request: UpdateEndpointRequest| authed(&acme.manager, request);
    endpoints
        .update_endpoint(update(UpdateEndpointRequest {
            id: all.clone(),
            filters: Some(FilterList {
                filters: vec!["machine.*".into()],
            }),
            ..Default::default()
        }))
        .await
        .expect("new filters");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);
    let machine = publish_request("machine.created", "m-1");
    assert_eq!(
        count(publish(&mut events, &acme.publisher, machine).await),
        1
    );

    endpoints
        .update_endpoint(update(UpdateEndpointRequest {
            id: all.clone(),
            environment: Some("sandbox".into()),
            filters: Some(FilterList::default()),
            ..Default::default()
        }))
        .await
        .expect("move to sandbox");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);
    let sandbox = with_env(lic(), "sandbox");
    assert_eq!(
        count(publish(&mut events, &acme.publisher, sandbox).await),
        1
    );

    endpoints
        .update_endpoint(update(UpdateEndpointRequest {
            id: all.clone(),
            environment: Some(String::new()),
            enabled: Some(false),
            ..Default::default()
        }))
        .await
        .expect("disable");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);
    endpoints
        .update_endpoint(update(UpdateEndpointRequest {
            id: all.clone(),
            enabled: Some(true),
            ..Default::default()
        }))
        .await
        .expect("enable");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 2);
    endpoints
        .delete_endpoint(authed(
            &acme.manager,
            DeleteEndpointRequest {
                id: all,
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);

    // Another process (a replica) adds one straight into the database.
    let other = Store::connect(app.config.database_url.expose())
        .await
        .expect("a second connection to the test database");
    let (added, _) = other
        .create_endpoint(
            &acme.tenant_id,
            store_endpoint("http://127.0.0.1:9/other", &["license.created"]),
        )
        .await
        .expect("create through the store");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 2);
    other
        .delete_endpoint(&acme.tenant_id, &added.id)
        .await
        .expect("delete through the store");
    assert_eq!(count(publish(&mut events, &acme.publisher, lic()).await), 1);
}

// ---------------------------------------------------------------------------------
// 6. PublishBatch
// ---------------------------------------------------------------------------------

async fn batch_stores_every_item_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let items = vec![
        publish_request("license.created", "lic-1"),
        publish_request("machine.created", "m-1"),
        publish_request("license.users.attached", "lu-1"),
    ];
    let results = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: items.clone(),
            },
        ))
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 3);
    let mut ids = Vec::new();
    for (result, item) in results.iter().zip(&items) {
        let event = result.event.as_ref().expect("event");
        assert!(!result.duplicate);
        assert_eq!(
            event.type_name, item.type_name,
            "results are in request order"
        );
        assert_eq!(event.payload_json, item.payload_json);
        assert_eq!(event.tenant_id, "acme");
        ids.push(event.id.clone());
    }
    let mut stored: Vec<String> = all_events(&mut events, &keys.subscriber, "")
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    stored.reverse(); // oldest first
    assert_eq!(stored, ids, "all stored, in batch order");
}

async fn batch_is_all_or_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;

    let mut bad = publish_request("license.created", "lic-2");
    bad.payload_json = r#"{"data": {"type": "machines", "id": "m-1"}}"#.into();
    let status = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![
                    publish_request("license.created", "lic-1"),
                    bad,
                    publish_request("license.created", "lic-3"),
                ],
            },
        ))
        .await
        .unwrap_err();
    assert_invalid(&status, "events[1].payload_json.data.type");

    let mut unknown_type = publish_request("license.created", "lic-2");
    unknown_type.type_name = "license.made".into();
    let status = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![
                    publish_request("license.created", "lic-1"),
                    publish_request("license.created", "lic-2"),
                    unknown_type,
                ],
            },
        ))
        .await
        .unwrap_err();
    assert_invalid(&status, "events[2].type_name");

    // With an admin key each item names its tenant; one unknown tenant refuses all.
    let for_tenant = |tenant: &str| PublishRequest {
        tenant_id: tenant.into(),
        ..publish_request("license.created", "lic-1")
    };
    let status = events
        .publish_batch(authed(
            &app.admin_key,
            PublishBatchRequest {
                events: vec![for_tenant("acme"), for_tenant("ghost")],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = events
        .publish_batch(authed(
            &app.admin_key,
            PublishBatchRequest {
                events: vec![for_tenant("acme"), for_tenant("")],
            },
        ))
        .await
        .unwrap_err();
    assert_invalid(&status, "events[1].tenant_id");

    assert_eq!(
        all_events(&mut events, &keys.subscriber, "").await.len(),
        0,
        "a refused batch stores nothing"
    );
}

async fn batch_size_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;

    let status = events
        .publish_batch(authed(&keys.publisher, PublishBatchRequest::default()))
        .await
        .unwrap_err();
    assert_invalid(&status, "events");

    let too_many: Vec<_> = (0..1001)
        .map(|i| publish_request("license.created", &format!("lic-{i}")))
        .collect();
    let status = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest { events: too_many },
        ))
        .await
        .unwrap_err();
    assert_invalid(&status, "events");
    assert!(status.message().contains("1000"), "{}", status.message());
    assert_eq!(all_events(&mut events, &keys.subscriber, "").await.len(), 0);

    // Exactly 1,000 is allowed.
    let most: Vec<_> = (0..1000)
        .map(|i| publish_request("license.created", &format!("lic-{i}")))
        .collect();
    let results = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest { events: most },
        ))
        .await
        .expect("a batch of 1000")
        .into_inner()
        .results;
    assert_eq!(results.len(), 1000);
    assert_eq!(
        all_events(&mut events, &keys.subscriber, "").await.len(),
        1000
    );
}

async fn batch_repeated_key_is_a_duplicate(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    let results = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![
                    with_key(publish_request("license.created", "lic-1"), "k-1"),
                    publish_request("machine.created", "m-1"),
                    with_key(publish_request("license.created", "lic-1"), "k-1"),
                ],
            },
        ))
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 3);
    assert!(!results[0].duplicate && !results[1].duplicate);
    assert!(results[2].duplicate, "the second use of k-1 is a duplicate");
    let id = |r: &PublishResponse| r.event.as_ref().expect("event").id.clone();
    assert_eq!(id(&results[2]), id(&results[0]));
    assert_eq!(all_events(&mut events, &keys.subscriber, "").await.len(), 2);

    // A later batch that repeats the key finds the stored event.
    let results = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: vec![
                    publish_request("user.created", "u-1"),
                    with_key(publish_request("license.created", "lic-1"), "k-1"),
                ],
            },
        ))
        .await
        .expect("batch")
        .into_inner()
        .results;
    let first_id = {
        let stored = all_events(&mut events, &keys.subscriber, "").await;
        assert_eq!(stored.len(), 3);
        stored
            .into_iter()
            .find(|e| e.idempotency_key == "k-1")
            .expect("the k-1 event")
            .id
    };
    assert!(!results[0].duplicate);
    assert!(results[1].duplicate);
    assert_eq!(id(&results[1]), first_id);
}

// ---------------------------------------------------------------------------------
// 7. PublishStream
// ---------------------------------------------------------------------------------

/// Makes a valid stream item invalid.
type Breaker = fn(&mut PublishStreamRequest);

async fn stream_answers_every_request_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;

    // (index, how it is broken, the field the error must name)
    let broken: Vec<(usize, Breaker, &str)> = vec![
        (
            3,
            |r| r.event.as_mut().unwrap().type_name = "license.made".into(),
            "type_name",
        ),
        (
            11,
            |r| {
                r.event.as_mut().unwrap().payload_json =
                    r#"{"data": {"type": "machines", "id": "m"}}"#.into()
            },
            "payload_json.data.type",
        ),
        (12, |r| r.event = None, "event"),
        (
            27,
            |r| r.event.as_mut().unwrap().payload_json.clear(),
            "payload",
        ),
        (
            40,
            |r| r.event.as_mut().unwrap().environment = "no spaces".into(),
            "environment",
        ),
        (
            49,
            |r| r.event.as_mut().unwrap().idempotency_key = "k".repeat(256),
            "idempotency_key",
        ),
    ];
    let types = ["license.created", "machine.created", "user.updated"];
    let mut requests: Vec<PublishStreamRequest> = (0..50)
        .map(|i| PublishStreamRequest {
            request_id: format!("req-{i}"),
            event: Some(publish_request(types[i % 3], &format!("res-{i}"))),
        })
        .collect();
    for (i, breaks, _) in &broken {
        breaks(&mut requests[*i]);
    }
    // Item 30 retries item 20 with the same idempotency key: it is a duplicate.
    requests[20].event.as_mut().unwrap().idempotency_key = "stream-key".into();
    requests[30].event = requests[20].event.clone();
    let sent = requests.clone();

    let mut answers = events
        .publish_stream(authed(&keys.publisher, tokio_stream::iter(requests)))
        .await
        .expect("open the stream")
        .into_inner();
    let collect = async {
        let mut got = Vec::new();
        while let Some(answer) = answers.message().await.expect("stream item") {
            got.push(answer);
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("the stream ends once the requests do");

    assert_eq!(got.len(), 50, "one answer per request");
    let mut published = Vec::new();
    let mut duplicates = Vec::new();
    for (i, (answer, request)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(
            answer.request_id, request.request_id,
            "answer {i} is in order"
        );
        match (&answer.result, broken.iter().find(|(b, _, _)| *b == i)) {
            (Some(publish_stream_response::Result::Error(err)), Some((_, _, field))) => {
                assert_eq!(err.code, Code::InvalidArgument as i32, "item {i}: {err:?}");
                assert!(
                    err.message.starts_with(&format!("{field}: ")),
                    "item {i}: the error should name `{field}`, got {:?}",
                    err.message
                );
            }
            (Some(publish_stream_response::Result::Published(p)), None) => {
                let event = p.event.as_ref().expect("event");
                let req = request.event.as_ref().unwrap();
                assert_eq!(event.type_name, req.type_name, "item {i}");
                assert_eq!(event.payload_json, req.payload_json, "item {i}");
                if p.duplicate {
                    duplicates.push(i);
                }
                published.push((i, event.id.clone()));
            }
            (other, expected_error) => {
                panic!("item {i}: got {other:?}, expected error: {expected_error:?}")
            }
        }
    }
    // Items 20 and 30 carry the same key: the stream stores items in request order,
    // so 20 is the original and 30 its duplicate.
    assert_eq!(duplicates, [30], "item 30 repeats item 20's key");
    let id_of = |n: usize| published.iter().find(|(i, _)| *i == n).unwrap().1.clone();
    assert_eq!(id_of(30), id_of(20));

    // ListEvents is newest first: reversed, it is the stored (commit) order.
    let mut stored: Vec<String> = all_events(&mut events, &keys.subscriber, "")
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    stored.reverse();
    let mut expected: Vec<String> = Vec::new();
    for (_, id) in published {
        if !expected.contains(&id) {
            expected.push(id);
        }
    }
    assert_eq!(expected.len(), 50 - broken.len() - 1);
    assert_eq!(
        stored, expected,
        "every valid item is stored once, in request order"
    );
}

// ---------------------------------------------------------------------------------
// 8. ListEvents
// ---------------------------------------------------------------------------------

/// The pages of a listing, following the tokens.
async fn pages(
    events: &mut EventServiceClient<Channel>,
    key: &str,
    request: ListEventsRequest,
) -> Vec<Vec<Event>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = events
            .list_events(authed(
                key,
                ListEventsRequest {
                    page_token: token.clone(),
                    ..request.clone()
                },
            ))
            .await
            .expect("list events")
            .into_inner();
        out.push(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        assert!(out.len() < 100, "the pages never end");
        token = page.next_page_token;
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

async fn list_events_pages_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let mut events = app.events().await;

    // 25 events: every third a machine event, every fifth in sandbox. The first 20
    // in one batch, the last 5 one by one.
    let request = |i: usize| {
        let kind = if i.is_multiple_of(3) {
            "machine.created"
        } else {
            "license.created"
        };
        let env = if i.is_multiple_of(5) { "sandbox" } else { "" };
        with_env(publish_request(kind, &format!("res-{i}")), env)
    };
    let mut published: Vec<Event> = events
        .publish_batch(authed(
            &keys.publisher,
            PublishBatchRequest {
                events: (0..20).map(request).collect(),
            },
        ))
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.event.expect("event"))
        .collect();
    for i in 20..25 {
        let event = publish(&mut events, &keys.publisher, request(i))
            .await
            .event
            .expect("event");
        published.push(event);
    }
    // Another tenant's event never shows up.
    publish(
        &mut events,
        &other.publisher,
        publish_request("license.created", "x"),
    )
    .await;
    let newest_first: Vec<Event> = published.iter().rev().cloned().collect();

    let by_ten = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            page_size: 10,
            ..Default::default()
        },
    )
    .await;
    let sizes: Vec<usize> = by_ten.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let listed: Vec<Event> = by_ten.concat();
    assert_eq!(ids(&listed), ids(&newest_first), "newest first, no gap");
    let unique: HashSet<_> = listed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(unique.len(), 25, "no duplicates");
    assert_eq!(listed, newest_first, "listed as published");

    // The default page holds them all.
    let all = pages(&mut events, &keys.subscriber, ListEventsRequest::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(ids(&all[0]), ids(&newest_first));

    // Type filters, across pages.
    let licenses = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            filters: vec!["license.*".into()],
            page_size: 10,
            ..Default::default()
        },
    )
    .await;
    let sizes: Vec<usize> = licenses.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 6]);
    let expected: Vec<Event> = newest_first
        .iter()
        .filter(|e| e.type_name == "license.created")
        .cloned()
        .collect();
    assert_eq!(ids(&licenses.concat()), ids(&expected));

    let exact = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            filters: vec!["machine.created".into(), "user.*".into()],
            ..Default::default()
        },
    )
    .await
    .concat();
    assert_eq!(exact.len(), 9);
    assert!(exact.iter().all(|e| e.type_name == "machine.created"));

    // Environment filters.
    let sandbox = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            environment: "sandbox".into(),
            ..Default::default()
        },
    )
    .await
    .concat();
    let expected: Vec<Event> = newest_first
        .iter()
        .filter(|e| e.environment == "sandbox")
        .cloned()
        .collect();
    assert_eq!(expected.len(), 5);
    assert_eq!(ids(&sandbox), ids(&expected));

    let sandbox_licenses = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            environment: "sandbox".into(),
            filters: vec!["license.*".into()],
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .concat();
    let expected: Vec<Event> = newest_first
        .iter()
        .filter(|e| e.environment == "sandbox" && e.type_name == "license.created")
        .cloned()
        .collect();
    assert_eq!(expected.len(), 3);
    assert_eq!(ids(&sandbox_licenses), ids(&expected));

    let none = pages(
        &mut events,
        &keys.subscriber,
        ListEventsRequest {
            environment: "production".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(none, vec![Vec::<Event>::new()]);
}

async fn list_events_refuses_bad_paging_and_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = app.tenant("acme").await;
    let mut events = app.events().await;
    publish(
        &mut events,
        &keys.publisher,
        publish_request("license.created", "lic-1"),
    )
    .await;

    let list = |request: ListEventsRequest| {
        let mut events = events.clone();
        let key = keys.subscriber.clone();
        async move { events.list_events(authed(&key, request)).await }
    };
    let status = list(ListEventsRequest {
        page_token: "garbage!".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&status, "page_token");

    // Well-formed base64, but not a token this server made.
    let status = list(ListEventsRequest {
        page_token: "cDE6YWJj".into(), // "p1:abc"
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&status, "page_token");

    let status = list(ListEventsRequest {
        page_size: 1001,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&status, "page_size");
    assert!(status.message().contains("1000"), "{}", status.message());

    let status = list(ListEventsRequest {
        filters: vec!["license.*".into(), "licence.*".into()],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&status, "filters[1]");

    let status = list(ListEventsRequest {
        environment: "no spaces".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&status, "environment");

    let most = list(ListEventsRequest {
        page_size: 1000,
        ..Default::default()
    })
    .await
    .expect("page_size 1000 is allowed")
    .into_inner();
    assert_eq!(most.events.len(), 1);
    assert!(most.next_page_token.is_empty());
}

both_backends!(
    publish_refuses_each_invalid_request,
    struct_payload_keeps_integers,
    payload_json_is_kept_exactly,
    omit_payload_leaves_only_the_answer_without_it,
    idempotency_key_returns_the_original,
    idempotency_window_expires,
    deliveries_count_matching_endpoints,
    endpoint_changes_apply_to_the_next_publish,
    batch_stores_every_item_in_order,
    batch_is_all_or_nothing,
    batch_size_limits,
    batch_repeated_key_is_a_duplicate,
    stream_answers_every_request_in_order,
    list_events_pages_newest_first,
    list_events_refuses_bad_paging_and_filters,
);
