//! The body of a webhook request, in either wire format.
//!
//! The body is rendered on every delivery attempt (a retry re-renders it, so it stays a pure
//! function of the stored delivery), so it is built by writing JSON text straight into one
//! buffer instead of going through a `serde_json::Value` tree: the event's payload, by far the
//! largest part, is copied once and never parsed.
//!
//! Both formats rely on one contract of the store: `payload_json` is the text of a valid JSON
//! object (it was validated when the event was published). The Keygen format embeds that text
//! as a JSON *string*, byte for byte, because Keygen receivers `JSON.parse` it themselves; the
//! Standard format splices it in as the `data` value, which is only valid JSON because of that
//! contract (checked by a debug assertion, not at run time).
//!
//! Times: Keygen's server is Rails, which renders times with milliseconds and `Z`, so Keygen
//! receivers may parse exactly that; the Standard Webhooks examples carry microseconds, which is
//! what Herald stores, so nothing is lost there.

use chrono::{DateTime, SecondsFormat, Utc};

/// The wire format of an endpoint's webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Keygen's `webhook-events` document, signed with `Keygen-Signature`.
    Keygen,
    /// Standard Webhooks: `{type, timestamp, data}`, signed with `webhook-signature`.
    Standard,
}

impl Format {
    /// Reads a stored format name. Anything but `"standard"` is Keygen, the default, so that
    /// an endpoint stored before formats existed (or with a typo) keeps its Keygen receiver
    /// working rather than failing to deliver.
    pub fn parse(s: &str) -> Format {
        if s == "standard" {
            Format::Standard
        } else {
            Format::Keygen
        }
    }

    /// The stored name, the inverse of [`Format::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Keygen => "keygen",
            Format::Standard => "standard",
        }
    }
}

/// What a webhook body is made from.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// The Keygen "webhook event" id: this delivery.
    pub delivery_id: &'a str,
    /// The account id.
    pub tenant_id: &'a str,
    pub endpoint_url: &'a str,
    /// Dotted, e.g. `license.created`.
    pub event_type: &'a str,
    /// The event's JSON:API document as stored: the text of a valid JSON object.
    pub payload_json: &'a str,
    pub idempotency_token: &'a str,
    /// When the delivery was created (microseconds since the epoch).
    pub created_at_micros: i64,
    /// When the event happened (microseconds since the epoch).
    pub occurred_at_micros: i64,
}

/// The body of a webhook request in `format`.
pub fn render(format: Format, env: &Envelope) -> Vec<u8> {
    match format {
        Format::Keygen => render_keygen(env),
        Format::Standard => render_standard(env),
    }
}

fn render_keygen(env: &Envelope) -> Vec<u8> {
    // The payload grows by its escapes (mostly `"` → `\"`); the rest is ~330 bytes of keys.
    let mut out = Vec::with_capacity(
        env.payload_json.len()
            + env.payload_json.len() / 8
            + env.delivery_id.len()
            + env.tenant_id.len()
            + env.endpoint_url.len()
            + env.event_type.len()
            + env.idempotency_token.len()
            + 400,
    );
    let created = iso8601(env.created_at_micros, SecondsFormat::Millis);
    out.extend_from_slice(br#"{"data":{"id":"#);
    push_str(&mut out, env.delivery_id);
    out.extend_from_slice(br#","type":"webhook-events","attributes":{"endpoint":"#);
    push_str(&mut out, env.endpoint_url);
    out.extend_from_slice(br#","payload":"#);
    push_str(&mut out, env.payload_json);
    out.extend_from_slice(br#","event":"#);
    push_str(&mut out, env.event_type);
    out.extend_from_slice(
        br#","status":"DELIVERING","lastResponseCode":null,"lastResponseBody":null,"created":""#,
    );
    out.extend_from_slice(created.as_bytes());
    out.extend_from_slice(br#"","updated":""#);
    out.extend_from_slice(created.as_bytes());
    out.extend_from_slice(br#""},"relationships":{"account":{"data":{"type":"accounts","id":"#);
    push_str(&mut out, env.tenant_id);
    out.extend_from_slice(br#"}}},"meta":{"idempotencyToken":"#);
    push_str(&mut out, env.idempotency_token);
    out.extend_from_slice(b"}}}");
    out
}

fn render_standard(env: &Envelope) -> Vec<u8> {
    debug_assert!(
        serde_json::from_str::<serde_json::Value>(env.payload_json).is_ok(),
        "payload_json must be valid JSON text"
    );
    let mut out = Vec::with_capacity(env.payload_json.len() + env.event_type.len() + 80);
    out.extend_from_slice(br#"{"type":"#);
    push_str(&mut out, env.event_type);
    out.extend_from_slice(br#","timestamp":""#);
    out.extend_from_slice(iso8601(env.occurred_at_micros, SecondsFormat::Micros).as_bytes());
    out.extend_from_slice(br#"","data":"#);
    out.extend_from_slice(env.payload_json.as_bytes());
    out.push(b'}');
    out
}

/// Appends `s` as a quoted, escaped JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` has no failure path (no I/O error, no map keys).
    serde_json::to_writer(out, s).expect("a str always serialises into a Vec");
}

/// ISO 8601 in UTC with `Z`, e.g. `2026-06-30T14:51:47.123Z`. Sub-units are truncated, not
/// rounded, so a time never renders later than it was. Values outside chrono's range (never
/// stored: the store keeps years 0001..9999) are clamped rather than panicking.
fn iso8601(micros: i64, precision: SecondsFormat) -> String {
    let dt = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    dt.to_rfc3339_opts(precision, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// 2026-06-30T14:51:47.123456Z
    const CREATED: i64 = 1_782_831_107_123_456;
    /// 2026-06-30T14:51:46.000789Z
    const OCCURRED: i64 = 1_782_831_106_000_789;

    const PAYLOAD: &str = r#"{"data":{"id":"lic_1","type":"licenses","attributes":{"name":"Quote \" and \\ back\nslash é ✓","key":"</script>"},"relationships":{}},"meta":{"ts":"2026-06-30T14:51:46.000Z"}}"#;

    fn envelope(payload_json: &str) -> Envelope<'_> {
        Envelope {
            delivery_id: "0d5a2a3c-delivery",
            tenant_id: "acct-1",
            endpoint_url: "https://example.com/hooks?x=1&y=\"2\"",
            event_type: "license.created",
            payload_json,
            idempotency_token: "idem-token-1",
            created_at_micros: CREATED,
            occurred_at_micros: OCCURRED,
        }
    }

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("body is valid JSON")
    }

    #[test]
    fn format_parse_and_as_str() {
        assert_eq!(Format::parse("standard"), Format::Standard);
        assert_eq!(Format::parse("keygen"), Format::Keygen);
        assert_eq!(Format::parse(""), Format::Keygen);
        assert_eq!(Format::parse("Standard"), Format::Keygen);
        assert_eq!(Format::parse("svix"), Format::Keygen);
        for f in [Format::Keygen, Format::Standard] {
            assert_eq!(Format::parse(f.as_str()), f);
        }
    }

    #[test]
    fn keygen_body_is_the_webhook_events_document() {
        let body = parse(&render(Format::Keygen, &envelope(PAYLOAD)));
        assert_eq!(
            body,
            json!({
                "data": {
                    "id": "0d5a2a3c-delivery",
                    "type": "webhook-events",
                    "attributes": {
                        "endpoint": "https://example.com/hooks?x=1&y=\"2\"",
                        "payload": PAYLOAD,
                        "event": "license.created",
                        "status": "DELIVERING",
                        "lastResponseCode": null,
                        "lastResponseBody": null,
                        "created": "2026-06-30T14:51:47.123Z",
                        "updated": "2026-06-30T14:51:47.123Z"
                    },
                    "relationships": {
                        "account": { "data": { "type": "accounts", "id": "acct-1" } }
                    },
                    "meta": { "idempotencyToken": "idem-token-1" }
                }
            })
        );
    }

    #[test]
    fn keygen_body_exact_bytes() {
        // Pins key order and compactness, which a receiver may (wrongly) depend on.
        let env = Envelope {
            payload_json: r#"{"data":{"id":"l","type":"licenses"}}"#,
            endpoint_url: "https://example.com/h",
            ..envelope(PAYLOAD)
        };
        let body = String::from_utf8(render(Format::Keygen, &env)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"data":{"id":"0d5a2a3c-delivery","type":"webhook-events","attributes":{"#,
                r#""endpoint":"https://example.com/h","#,
                r#""payload":"{\"data\":{\"id\":\"l\",\"type\":\"licenses\"}}","#,
                r#""event":"license.created","status":"DELIVERING","lastResponseCode":null,"#,
                r#""lastResponseBody":null,"created":"2026-06-30T14:51:47.123Z","#,
                r#""updated":"2026-06-30T14:51:47.123Z"},"#,
                r#""relationships":{"account":{"data":{"type":"accounts","id":"acct-1"}}},"#,
                r#""meta":{"idempotencyToken":"idem-token-1"}}}"#
            )
        );
    }

    #[test]
    fn keygen_payload_string_is_the_stored_text_verbatim() {
        // Whitespace and key order of the stored text survive: it is not re-serialised.
        let stored = "{ \"data\" : [ {\"id\":\"a\",\"type\":\"license-users\"} ],\n  \"z\": \"\\u0000\\t\" }";
        let body = parse(&render(Format::Keygen, &envelope(stored)));
        let payload = body["data"]["attributes"]["payload"].as_str().unwrap();
        assert_eq!(payload, stored);
        // What a receiver does: JSON.parse(data.attributes.payload).
        let inner: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(inner["data"][0]["type"], "license-users");
        assert_eq!(inner["z"], "\u{0}\t");
    }

    #[test]
    fn keygen_escapes_every_field() {
        let env = Envelope {
            delivery_id: "id\"1",
            tenant_id: "t\\1",
            endpoint_url: "https://e.com/\u{7}",
            event_type: "x\ny",
            idempotency_token: "tok\"en",
            ..envelope(PAYLOAD)
        };
        let body = parse(&render(Format::Keygen, &env));
        assert_eq!(body["data"]["id"], "id\"1");
        assert_eq!(
            body["data"]["relationships"]["account"]["data"]["id"],
            "t\\1"
        );
        assert_eq!(
            body["data"]["attributes"]["endpoint"],
            "https://e.com/\u{7}"
        );
        assert_eq!(body["data"]["attributes"]["event"], "x\ny");
        assert_eq!(body["data"]["meta"]["idempotencyToken"], "tok\"en");
    }

    #[test]
    fn standard_body_embeds_the_payload_as_a_value() {
        let body = parse(&render(Format::Standard, &envelope(PAYLOAD)));
        assert_eq!(
            body,
            json!({
                "type": "license.created",
                "timestamp": "2026-06-30T14:51:46.000789Z",
                "data": serde_json::from_str::<Value>(PAYLOAD).unwrap(),
            })
        );
    }

    #[test]
    fn standard_body_exact_bytes_and_escaping() {
        let env = Envelope {
            event_type: "we\"ird\\type",
            payload_json: " {\"a\": [1, 2.5, null]} ",
            ..envelope(PAYLOAD)
        };
        let body = String::from_utf8(render(Format::Standard, &env)).unwrap();
        assert_eq!(
            body,
            r#"{"type":"we\"ird\\type","timestamp":"2026-06-30T14:51:46.000789Z","data": {"a": [1, 2.5, null]} }"#
        );
        let v = parse(body.as_bytes());
        assert_eq!(v["type"], "we\"ird\\type");
        assert_eq!(v["data"]["a"][1], 2.5);
    }

    #[test]
    fn timestamps_truncate_and_handle_the_edges() {
        assert_eq!(
            iso8601(1_782_831_107_123_999, SecondsFormat::Millis),
            "2026-06-30T14:51:47.123Z"
        );
        assert_eq!(
            iso8601(0, SecondsFormat::Millis),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            iso8601(-1, SecondsFormat::Millis),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            iso8601(-1, SecondsFormat::Micros),
            "1969-12-31T23:59:59.999999Z"
        );
        // Out of chrono's range: clamped, no panic, still valid JSON.
        for micros in [i64::MIN, i64::MAX] {
            let env = Envelope {
                created_at_micros: micros,
                occurred_at_micros: micros,
                ..envelope(PAYLOAD)
            };
            parse(&render(Format::Keygen, &env));
            parse(&render(Format::Standard, &env));
        }
    }

    #[test]
    fn empty_fields_still_render_valid_json() {
        let env = Envelope {
            delivery_id: "",
            tenant_id: "",
            endpoint_url: "",
            event_type: "",
            payload_json: "{}",
            idempotency_token: "",
            created_at_micros: 0,
            occurred_at_micros: 0,
        };
        let k = parse(&render(Format::Keygen, &env));
        assert_eq!(k["data"]["attributes"]["payload"], "{}");
        let s = parse(&render(Format::Standard, &env));
        assert_eq!(s["data"], json!({}));
    }
}
