//! Micro-benchmarks of the pure functions on the hot paths: filter matching (every
//! endpoint of a tenant, for every published event), webhook body rendering and the two
//! signatures (every delivery attempt), and a publish's answer (every published event).
//! `cargo bench -p herald`.

use std::{hint::black_box, time::SystemTime};

use aws_lc_rs::signature::Ed25519KeyPair;
use criterion::{Criterion, criterion_group, criterion_main};
use herald::{
    filter::Filter,
    json::json_to_struct,
    proto,
    webhook::{
        keygen,
        render::{self, Envelope, Format},
        standard,
    },
    wire::{self, PublishResponse},
};
use prost::Message;

/// A Keygen license document of about 1 KB, like the benchmark harness publishes.
fn payload() -> String {
    serde_json::json!({
        "data": {
            "id": "8b5f7d7e-5ad1-4b6c-9a38-0f6a1c2b3d4e",
            "type": "licenses",
            "attributes": {
                "name": "Pro license", "key": "B8A5-91D7-CB9A-DAE4-4F6E-1128", "expiry": "2027-01-01T00:00:00.000Z",
                "status": "ACTIVE", "uses": 0, "suspended": false, "scheme": null, "encrypted": false,
                "strict": false, "floating": true, "protected": false, "version": null,
                "maxMachines": 5, "maxProcesses": null, "maxUsers": null, "maxCores": null, "maxUses": null,
                "requireHeartbeat": false, "requireCheckIn": false, "lastValidated": null,
                "lastCheckIn": null, "nextCheckIn": null, "lastCheckOut": null,
                "metadata": { "customerId": "cus_4f6e1128", "plan": "pro" },
                "created": "2026-11-27T12:00:00.000Z", "updated": "2026-11-27T12:00:00.000Z"
            },
            "relationships": {
                "account": { "data": { "type": "accounts", "id": "acme" } },
                "product": { "data": { "type": "products", "id": "3c1d8f5a-0b2e-4d7f-8e6a-1f2b3c4d5e6f" } },
                "policy": { "data": { "type": "policies", "id": "5e6f7a8b-9c0d-1e2f-3a4b-5c6d7e8f9a0b" } },
                "owner": { "data": { "type": "users", "id": "7a8b9c0d-1e2f-3a4b-5c6d-7e8f9a0b1c2d" } }
            }
        }
    })
    .to_string()
}

fn filters(c: &mut Criterion) {
    let patterns: Vec<String> = [
        "license.usage.*",
        "machine.created",
        "machine.heartbeat.*",
        "user.*",
    ]
    .map(String::from)
    .to_vec();
    let filter = Filter::parse("filters", &patterns).unwrap();
    c.bench_function("filter/matches (4 patterns, miss)", |b| {
        b.iter(|| filter.matches(black_box("license.created")))
    });
    c.bench_function("filter/matches (4 patterns, hit)", |b| {
        b.iter(|| filter.matches(black_box("machine.heartbeat.ping")))
    });
    c.bench_function("filter/parse (4 patterns)", |b| {
        b.iter(|| Filter::parse("filters", black_box(&patterns)).unwrap())
    });
}

fn rendering(c: &mut Criterion) {
    let payload = payload();
    let envelope = Envelope {
        delivery_id: "dlv_01JDQ3Z8Y6X5W4V3T2S1R0Q9P8",
        tenant_id: "acme",
        endpoint_url: "https://hooks.example.com/keygen?source=herald",
        event_type: "license.created",
        payload_json: &payload,
        idempotency_token: "msg_9dde797aadff3fd2e1fdb8df01a07bb0",
        created_at_micros: 1_795_000_000_000_000,
        occurred_at_micros: 1_795_000_000_000_000,
    };
    c.bench_function("render/keygen (1 KB payload)", |b| {
        b.iter(|| render::render(Format::Keygen, black_box(&envelope)))
    });
    c.bench_function("render/standard (1 KB payload)", |b| {
        b.iter(|| render::render(Format::Standard, black_box(&envelope)))
    });

    let body = render::render(Format::Keygen, &envelope);
    let key = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let url = url::Url::parse(envelope.endpoint_url).unwrap();
    c.bench_function("sign/keygen ed25519", |b| {
        b.iter(|| keygen::sign(&key, "acme", &url, black_box(&body), SystemTime::now()))
    });
    let secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"];
    c.bench_function("sign/standard-webhooks v1", |b| {
        b.iter(|| {
            standard::sign(
                &secrets,
                "msg_9dde797aadff3fd2e1fdb8df01a07bb0",
                1_795_000_000,
                black_box(&body),
            )
        })
    });
}

/// A publish's answer echoes the event, its payload as a `Struct`: built from the
/// publisher's JSON and encoded by prost, or encoded from the JSON directly (`wire`).
fn answering(c: &mut Criterion) {
    let text = payload();
    let event = proto::Event {
        id: "evt_01JDQ3Z8Y6X5W4V3T2S1R0Q9P8".into(),
        type_name: "license.created".into(),
        tenant_id: "acme".into(),
        payload_json: text.clone(),
        cursor: "c_0000000000000001".into(),
        ..Default::default()
    };
    c.bench_function("answer/publish via Struct (1 KB payload)", |b| {
        b.iter(|| {
            let json: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap();
            let event = proto::Event {
                payload: json_to_struct(&json),
                ..event.clone()
            };
            PublishResponse::new(event, false, 1).encode_to_vec()
        })
    });
    c.bench_function("answer/publish direct (1 KB payload)", |b| {
        b.iter(|| {
            let json: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap();
            let serde_json::Value::Object(map) = &json else {
                unreachable!()
            };
            let payload = wire::structs::encode(map);
            let event = wire::encode_event_with_payload(&event.clone(), &payload);
            PublishResponse::encoded(event, false, 1).encode_to_vec()
        })
    });
}

criterion_group!(benches, filters, rendering, answering);
criterion_main!(benches);
