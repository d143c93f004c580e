//! Turns a `PublishRequest` into a `NewEvent`, or an `INVALID_ARGUMENT` naming the
//! field: the type exists, the payload is a JSON:API document whose `data` has the
//! shape and resource `type` the catalog expects, and the sizes are within limits.

use bytes::Bytes;
use prost::Message;
use serde_json::Value as Json;

use crate::{
    catalog::catalog,
    error::{Error, Result},
    ids::{self, Kind},
    json::struct_to_json,
    proto::{EventTypeInfo, PublishRequest},
    store::events::NewEvent,
    time, wire,
};

pub const MAX_IDEMPOTENCY_KEY: usize = 255;
pub const MAX_ENVIRONMENT: usize = 64;

/// JSON:API top-level members a payload may carry.
const TOP_LEVEL: [&str; 5] = ["data", "meta", "links", "included", "jsonapi"];

/// Validates `req` for `tenant_id` (already authorised). `max_payload` is in bytes.
pub fn validate(tenant_id: &str, mut req: PublishRequest, max_payload: usize) -> Result<NewEvent> {
    // Nothing answers with the payload here, so it need not be encoded.
    req.omit_payload = true;
    validate_keeping_payload(tenant_id, req, max_payload).map(|(event, _)| event)
}

/// [`validate`], also returning the payload encoded as a `google.protobuf.Struct` (the
/// one given, or encoded from the JSON already parsed), for the answer to carry without
/// a second parse of the payload (see `wire`); `None` when the publisher asked for an
/// answer without it (`omit_payload`).
pub fn validate_keeping_payload(
    tenant_id: &str,
    req: PublishRequest,
    max_payload: usize,
) -> Result<(NewEvent, Option<Bytes>)> {
    let info = catalog().resolve("", req.r#type, &req.type_name)?;
    validate_environment("environment", &req.environment)?;
    let occurred_at = req
        .occurred_at
        .as_ref()
        .map(|ts| time::from_timestamp("occurred_at", ts))
        .transpose()?;
    let idempotency_key = match req.idempotency_key.as_str() {
        "" => None,
        key if key.chars().count() > MAX_IDEMPOTENCY_KEY => {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        }
        key if key.chars().any(char::is_control) => {
            return Err(Error::invalid(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        key => Some(key.to_string()),
    };

    let (field, text, json, given) = match (req.payload, req.payload_json.is_empty()) {
        (Some(_), false) => {
            return Err(Error::invalid(
                "payload_json",
                "give either payload or payload_json, not both",
            ));
        }
        (None, true) => return Err(Error::invalid("payload", "is required")),
        (Some(s), true) => {
            let json = struct_to_json(&s);
            ("payload", json.to_string(), json, Some(s))
        }
        (None, false) => {
            if req.payload_json.len() > max_payload {
                return Err(too_large(
                    "payload_json",
                    req.payload_json.len(),
                    max_payload,
                ));
            }
            let json: Json = serde_json::from_str(&req.payload_json)
                .map_err(|e| Error::invalid("payload_json", format!("is not valid JSON: {e}")))?;
            ("payload_json", req.payload_json, json, None)
        }
    };
    if text.len() > max_payload {
        return Err(too_large(field, text.len(), max_payload));
    }
    check_document(field, &json, info)?;
    // The payload as a publish's answer echoes it: the publisher's Struct, or the JSON
    // encoded as one directly (a valid document is an object).
    let payload = match (req.omit_payload, given, &json) {
        (true, _, _) => None,
        (false, Some(s), _) => Some(s.encode_to_vec().into()),
        (false, None, Json::Object(map)) => Some(wire::structs::encode(map)),
        (false, None, _) => Some(Bytes::new()),
    };

    let event = NewEvent {
        id: ids::new(Kind::Event),
        tenant_id: tenant_id.to_string(),
        event_type: info.name.clone(),
        environment: req.environment,
        occurred_at,
        payload: text,
        idempotency_key,
    };
    Ok((event, payload))
}

pub fn validate_environment(field: &str, env: &str) -> Result<()> {
    if env.len() > MAX_ENVIRONMENT
        || !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_ENVIRONMENT} letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

fn too_large(field: &str, size: usize, max: usize) -> Error {
    Error::invalid(
        field,
        format!("is {size} bytes, more than the limit of {max} bytes"),
    )
}

fn check_document(field: &str, json: &Json, info: &EventTypeInfo) -> Result<()> {
    let Json::Object(doc) = json else {
        return Err(Error::invalid(
            field,
            "must be a JSON object (a JSON:API document with `data`)",
        ));
    };
    if let Some(key) = doc.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(Error::invalid(
            format!("{field}.{key}"),
            "is not a JSON:API top-level member (data, meta, links, included, jsonapi)",
        ));
    }
    if let Some(meta) = doc.get("meta")
        && !meta.is_object()
    {
        return Err(Error::invalid(format!("{field}.meta"), "must be an object"));
    }
    // Field names are formatted only for an error: a valid event formats none.
    let data_field = || format!("{field}.data");
    match (doc.get("data"), info.is_list()) {
        (None, _) => Err(Error::invalid(data_field(), "is required")),
        (Some(Json::Array(items)), true) => {
            if items.is_empty() {
                return Err(Error::invalid(
                    data_field(),
                    format!("must list at least one {} object", info.resource_type),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                check_resource(&|| format!("{field}.data[{i}]"), item, info)?;
            }
            Ok(())
        }
        (Some(_), true) => Err(Error::invalid(
            data_field(),
            format!(
                "must be a list of {} objects for {}",
                info.resource_type, info.name
            ),
        )),
        (Some(item @ Json::Object(_)), false) => check_resource(&data_field, item, info),
        (Some(_), false) => Err(Error::invalid(
            data_field(),
            format!("must be a {} object for {}", info.resource_type, info.name),
        )),
    }
}

/// `field` names the resource, formatted only for an error.
fn check_resource(field: &dyn Fn() -> String, item: &Json, info: &EventTypeInfo) -> Result<()> {
    let Json::Object(resource) = item else {
        return Err(Error::invalid(
            field(),
            "must be a JSON:API resource object",
        ));
    };
    match resource.get("type") {
        Some(Json::String(ty)) if info.accepts_resource_type(ty) => {}
        Some(Json::String(ty)) => {
            return Err(Error::invalid(
                format!("{}.type", field()),
                format!(
                    "is '{}', but {} carries '{}'",
                    ids::truncate(ty, 80),
                    info.name,
                    info.resource_type
                ),
            ));
        }
        _ => {
            return Err(Error::invalid(
                format!("{}.type", field()),
                format!("is required (a string: '{}')", info.resource_type),
            ));
        }
    }
    match resource.get("id") {
        Some(Json::String(id)) if !id.is_empty() => {}
        _ => {
            return Err(Error::invalid(
                format!("{}.id", field()),
                "is required (a non-empty string)",
            ));
        }
    }
    for member in ["attributes", "relationships"] {
        if let Some(value) = resource.get(member)
            && !value.is_object()
        {
            return Err(Error::invalid(
                format!("{}.{member}", field()),
                "must be an object",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(type_name: &str, payload: &str) -> PublishRequest {
        PublishRequest {
            type_name: type_name.into(),
            payload_json: payload.into(),
            ..Default::default()
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn accepts_keygen_documents() {
        let ok = validate(
            "t",
            req(
                "license.created",
                r#"{"data":{"id":"1","type":"licenses","attributes":{"key":"K"}}}"#,
            ),
            1024,
        )
        .unwrap();
        assert_eq!(ok.event_type, "license.created");
        assert!(ok.id.starts_with("evt_"));
        validate(
            "t",
            req(
                "license.users.attached",
                r#"{"data":[{"id":"1","type":"license-users"}]}"#,
            ),
            1024,
        )
        .unwrap();
        validate(
            "t",
            req(
                "license.checked-out",
                r#"{"data":{"id":"1","type":"licenses"}}"#,
            ),
            1024,
        )
        .unwrap();
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (req("", "{}"), "type"),
            (req("license.made", "{}"), "type_name"),
            (req("license.created", ""), "payload"),
            (req("license.created", "[1]"), "payload_json"),
            (req("license.created", "{nope"), "payload_json"),
            (
                req("license.created", r#"{"meta":{}}"#),
                "payload_json.data",
            ),
            (
                req("license.created", r#"{"data":[]}"#),
                "payload_json.data",
            ),
            (
                req(
                    "license.created",
                    r#"{"data":{"id":"1","type":"machines"}}"#,
                ),
                "payload_json.data.type",
            ),
            (
                req("license.created", r#"{"data":{"type":"licenses"}}"#),
                "payload_json.data.id",
            ),
            (
                req(
                    "license.users.attached",
                    r#"{"data":[{"id":"1","type":"users"}]}"#,
                ),
                "payload_json.data[0].type",
            ),
            (
                req(
                    "license.created",
                    r#"{"data":{"id":"1","type":"licenses"},"x":1}"#,
                ),
                "payload_json.x",
            ),
        ];
        for (request, field) in cases {
            assert_eq!(field_of(validate("t", request, 1024).unwrap_err()), field);
        }
        let big = format!(
            r#"{{"data":{{"id":"1","type":"licenses","attributes":{{"k":"{}"}}}}}}"#,
            "x".repeat(2000)
        );
        assert_eq!(
            field_of(validate("t", req("license.created", &big), 1024).unwrap_err()),
            "payload_json"
        );
        let mut bad_env = req(
            "license.created",
            r#"{"data":{"id":"1","type":"licenses"}}"#,
        );
        bad_env.environment = "no spaces".into();
        assert_eq!(
            field_of(validate("t", bad_env, 1024).unwrap_err()),
            "environment"
        );
    }
}
