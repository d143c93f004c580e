//! Stored rows to protobuf messages.

use crate::{
    auth::Role,
    catalog::catalog,
    json::json_to_struct,
    proto,
    store::entities::{api_key, endpoint, event, tenant},
    tail::encode_cursor,
    time::to_timestamp,
};

pub fn event(m: &event::Model) -> proto::Event {
    let payload = serde_json::from_str(&m.payload)
        .ok()
        .and_then(|json| json_to_struct(&json));
    message(m, payload, true)
}

/// [`event`] without its `payload` `Struct`, for a caller that encodes the payload itself
/// (see `wire::encode_event_with_payload`).
pub fn event_without_payload(m: &event::Model) -> proto::Event {
    message(m, None, true)
}

/// [`event`] with neither `payload` nor `payload_json`: a publish's answer when the
/// publisher asked for no echo (`omit_payload`).
pub fn event_omitting_payload(m: &event::Model) -> proto::Event {
    message(m, None, false)
}

fn message(m: &event::Model, payload: Option<prost_types::Struct>, json: bool) -> proto::Event {
    proto::Event {
        id: m.id.clone(),
        r#type: catalog()
            .by_name(&m.event_type)
            .map(|t| t.r#type)
            .unwrap_or_default(),
        type_name: m.event_type.clone(),
        tenant_id: m.tenant_id.clone(),
        environment: m.environment.clone(),
        occurred_at: Some(to_timestamp(m.occurred_at)),
        received_at: Some(to_timestamp(m.received_at)),
        payload,
        payload_json: if json {
            m.payload.clone()
        } else {
            String::new()
        },
        idempotency_key: m.idempotency_key.clone().unwrap_or_default(),
        cursor: encode_cursor(m.seq),
    }
}

pub fn tenant(m: &tenant::Model) -> proto::Tenant {
    proto::Tenant {
        id: m.id.clone(),
        name: m.name.clone(),
        public_key: m.public_key.clone(),
        created_at: Some(to_timestamp(m.created_at)),
    }
}

pub fn api_key(m: &api_key::Model) -> proto::ApiKey {
    proto::ApiKey {
        id: m.id.clone(),
        tenant_id: m.tenant_id.clone().unwrap_or_default(),
        role: Role::parse(&m.role)
            .map(|r| r.to_proto() as i32)
            .unwrap_or_default(),
        name: m.name.clone(),
        prefix: m.prefix.clone(),
        created_at: Some(to_timestamp(m.created_at)),
        revoked_at: m.revoked_at.map(to_timestamp),
    }
}

pub fn format_from_proto(value: proto::WebhookFormat) -> Option<&'static str> {
    match value {
        proto::WebhookFormat::Unspecified => None,
        proto::WebhookFormat::Keygen => Some("keygen"),
        proto::WebhookFormat::Standard => Some("standard"),
    }
}

pub fn scheme_from_proto(value: proto::SignatureScheme) -> Option<&'static str> {
    match value {
        proto::SignatureScheme::Unspecified => None,
        proto::SignatureScheme::Keygen => Some("keygen"),
        proto::SignatureScheme::StandardWebhooks => Some("standard-webhooks"),
    }
}

pub fn algorithm_from_proto(value: proto::KeygenAlgorithm) -> Option<&'static str> {
    match value {
        proto::KeygenAlgorithm::Unspecified => None,
        proto::KeygenAlgorithm::Ed25519 => Some("ed25519"),
        proto::KeygenAlgorithm::RsaPssSha256 => Some("rsa-pss-sha256"),
        proto::KeygenAlgorithm::RsaSha256 => Some("rsa-sha256"),
    }
}

pub fn endpoint(m: &endpoint::Model) -> proto::Endpoint {
    let format = match m.format.as_str() {
        "standard" => proto::WebhookFormat::Standard,
        _ => proto::WebhookFormat::Keygen,
    };
    let schemes = m
        .scheme_list()
        .iter()
        .map(|s| match s.as_str() {
            "keygen" => proto::SignatureScheme::Keygen as i32,
            "standard-webhooks" => proto::SignatureScheme::StandardWebhooks as i32,
            _ => proto::SignatureScheme::Unspecified as i32,
        })
        .collect();
    let algorithm = match m.keygen_algorithm.as_str() {
        "rsa-pss-sha256" => proto::KeygenAlgorithm::RsaPssSha256,
        "rsa-sha256" => proto::KeygenAlgorithm::RsaSha256,
        _ => proto::KeygenAlgorithm::Ed25519,
    };
    proto::Endpoint {
        id: m.id.clone(),
        tenant_id: m.tenant_id.clone(),
        url: m.url.clone(),
        filters: m.filter_list(),
        enabled: m.enabled,
        disabled_reason: m.disabled_reason.clone(),
        description: m.description.clone(),
        metadata: serde_json::from_str(&m.metadata).unwrap_or_default(),
        environment: m.environment.clone(),
        signing: Some(proto::SigningSettings {
            format: format as i32,
            schemes,
            keygen_algorithm: algorithm as i32,
        }),
        created_at: Some(to_timestamp(m.created_at)),
        updated_at: Some(to_timestamp(m.updated_at)),
        retry_schedule_secs: m.retry_schedule_secs(),
    }
}

pub fn delivery(m: &crate::store::entities::delivery::Model) -> proto::Delivery {
    use crate::delivery::status;
    let status = match m.status.as_str() {
        status::DELIVERING => proto::DeliveryStatus::Delivering,
        status::DELIVERED => proto::DeliveryStatus::Delivered,
        status::FAILING => proto::DeliveryStatus::Failing,
        status::FAILED => proto::DeliveryStatus::Failed,
        _ => proto::DeliveryStatus::Unspecified,
    };
    proto::Delivery {
        id: m.id.clone(),
        tenant_id: m.tenant_id.clone(),
        event_id: m.event_id.clone(),
        endpoint_id: m.endpoint_id.clone(),
        event_type: m.event_type.clone(),
        status: status as i32,
        attempts: m.attempts.max(0) as u32,
        // A finished delivery keeps its last due time in the database (see
        // `store::due_floor`); it has no next attempt.
        next_attempt_at: m
            .next_attempt_at
            .filter(|_| status::PENDING.contains(&m.status.as_str()))
            .map(to_timestamp),
        last_attempt_at: m.last_attempt_at.map(to_timestamp),
        last_response_code: m.last_response_code.unwrap_or_default().max(0) as u32,
        last_error: m.last_error.clone().unwrap_or_default(),
        idempotency_token: m.idempotency_token.clone(),
        created_at: Some(to_timestamp(m.created_at)),
        updated_at: Some(to_timestamp(m.updated_at)),
    }
}

pub fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

pub fn attempt(m: &crate::store::entities::attempt::Model) -> proto::Attempt {
    proto::Attempt {
        id: m.id.clone(),
        delivery_id: m.delivery_id.clone(),
        endpoint_id: m.endpoint_id.clone(),
        attempt: m.attempt.max(0) as u32,
        started_at: Some(to_timestamp(m.started_at)),
        duration: Some(duration(m.duration_micros)),
        status_code: m.status_code.unwrap_or_default().max(0) as u32,
        succeeded: m.succeeded,
        error_kind: m.error_kind.clone().unwrap_or_default(),
        error_message: m.error_message.clone().unwrap_or_default(),
        response_body: m.response_body.clone(),
    }
}
