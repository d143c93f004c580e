//! Verifying the webhooks Herald sends, for receivers: the Keygen signature scheme
//! (`Keygen-Signature`, Ed25519 with the tenant's public key, over the request target,
//! host, `Date` and `Digest`) and Standard Webhooks (`webhook-signature`, `v1` HMAC-SHA256
//! with the endpoint's `whsec_` secret). Both reject a request signed more than five
//! minutes away from now, so a captured request cannot be replayed later.
//!
//! A verified request is parsed into a [`WebhookEvent`] whatever the body format (Keygen's
//! `webhook-events` document with its payload as a JSON string, or Standard Webhooks'
//! `{type, timestamp, data}`), with the event's JSON:API payload decoded.
//!
//! Errors never quote a secret nor a signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{catalog, proto::SigningMaterial};

/// How far a signature's time may be from now, both ways (what every Standard Webhooks
/// library and Keygen's guidance use).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a webhook was rejected (or a verifier could not be built).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The verifier was given an unusable key or secret.
    #[error("{0}")]
    InvalidKey(&'static str),
    /// The request carries no signature this verifier can check.
    #[error(
        "no signature to check: expected `keygen-signature` (with the tenant's public key) or `webhook-signature` (with the endpoint's secret)"
    )]
    NoSignature,
    /// A header is missing.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// A header cannot be read.
    #[error("malformed `{header}` header: {reason}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `Keygen-Signature` uses an algorithm this SDK does not verify.
    #[error("unsupported Keygen-Signature algorithm `{0}` (ed25519 is supported)")]
    UnsupportedAlgorithm(String),
    /// `Keygen-Signature` names a key other than the tenant's.
    #[error("Keygen-Signature keyid `{0}` is not the expected tenant")]
    WrongKeyId(String),
    /// The body is not the one the `Digest` header was computed from.
    #[error("the body does not match the `digest` header")]
    DigestMismatch,
    /// No signature matches: the request was not signed by Herald with these keys, or it
    /// was changed on the way.
    #[error("{0} signature does not match")]
    BadSignature(&'static str),
    /// The signature's time is too far from now (a replay, or a badly wrong clock).
    #[error("`{header}` is {seconds} s away from now (tolerance {tolerance} s)")]
    OutsideTolerance {
        /// `date` or `webhook-timestamp`.
        header: &'static str,
        /// The distance from now.
        seconds: u64,
        /// The tolerance.
        tolerance: u64,
    },
    /// The verified body is not a Herald webhook body.
    #[error("body: {0}")]
    Body(String),
}

/// Which signature scheme verified a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Keygen-Signature` (Ed25519).
    Keygen,
    /// Standard Webhooks `webhook-signature` (`v1`).
    StandardWebhooks,
}

/// A received webhook request, as the receiving HTTP server saw it.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRequest<'a> {
    /// The HTTP method (`POST`).
    pub method: &'a str,
    /// The request target: path and query as received (`/hooks?token=abc`).
    pub target: &'a str,
    /// The host the endpoint's URL names (the `Host` header); a port is ignored, as Keygen
    /// signs the host without it.
    pub host: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The exact body bytes (before any JSON parsing).
    pub body: &'a [u8],
}

impl<'a> WebhookRequest<'a> {
    /// A request from the `http` crate's parts (as axum, hyper and most servers give them)
    /// and its body: the target from the URI, the host from `Host` (or the URI's authority).
    pub fn from_parts(parts: &'a http::request::Parts, body: &'a [u8]) -> WebhookRequest<'a> {
        let target = parts
            .uri
            .path_and_query()
            .map(http::uri::PathAndQuery::as_str)
            .unwrap_or("/");
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.host())
            .unwrap_or("");
        WebhookRequest {
            method: parts.method.as_str(),
            target,
            host,
            headers: &parts.headers,
            body,
        }
    }
}

/// A verified webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    /// The schemes whose signatures were checked and matched.
    pub verified_by: Vec<Scheme>,
    /// The dotted event type (`license.created`, or `endpoint.ping` for a ping).
    pub event_type: String,
    /// The token that stays the same across every attempt, retry and replay of this event
    /// to this endpoint: dedupe on it.
    pub idempotency_token: String,
    /// The delivery (`dlv_…`), in the Keygen format.
    pub delivery_id: Option<String>,
    /// The tenant (account), in the Keygen format.
    pub tenant_id: Option<String>,
    /// When the event happened (ISO 8601), in the Standard Webhooks format.
    pub timestamp: Option<String>,
    /// The event's JSON:API document, decoded: `{"data": …, "meta": …}`.
    pub payload: Value,
}

impl WebhookEvent {
    /// The catalog's facts about the event type (`None` for `endpoint.ping`, or a type
    /// newer than this SDK).
    pub fn info(&self) -> Option<&'static catalog::EventTypeInfo> {
        catalog::by_name(&self.event_type)
    }

    /// The payload's `data`: the resource object (or list of them).
    pub fn data(&self) -> Option<&Value> {
        self.payload.get("data")
    }

    /// The payload deserialised into your own type.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }
}

/// Checks webhook signatures with a tenant's public key and/or an endpoint's secrets.
///
/// Every configured scheme whose header is present must verify, and at least one must be
/// present; a header for a scheme the verifier has no key for is ignored.
#[derive(Clone)]
pub struct WebhookVerifier {
    keygen_key: Option<VerifyingKey>,
    keygen_key_id: Option<String>,
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("keygen", &self.keygen_key.is_some())
            .field("keygen_key_id", &self.keygen_key_id)
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Default for WebhookVerifier {
    fn default() -> Self {
        WebhookVerifier::new()
    }
}

impl WebhookVerifier {
    /// A verifier with no key yet.
    pub fn new() -> WebhookVerifier {
        WebhookVerifier {
            keygen_key: None,
            keygen_key_id: None,
            secrets: Vec::new(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Everything an endpoint's `GetSigningMaterial` gives: its secret (and the previous
    /// one during a rotation), the tenant's public key and key id.
    pub fn from_signing_material(
        material: &SigningMaterial,
    ) -> Result<WebhookVerifier, VerifyError> {
        let mut verifier = WebhookVerifier::new();
        if !material.keygen_public_key.is_empty() {
            verifier = verifier.keygen_public_key(&material.keygen_public_key)?;
        }
        if !material.keygen_key_id.is_empty() {
            verifier = verifier.keygen_key_id(&material.keygen_key_id);
        }
        if !material.secret.is_empty() {
            verifier = verifier.standard_secret(&material.secret)?;
        }
        if !material.previous_secret.is_empty() {
            verifier = verifier.standard_secret(&material.previous_secret)?;
        }
        Ok(verifier)
    }

    /// The tenant's Ed25519 public key, hex-encoded (as `Tenant.public_key` and Keygen show
    /// it) or as a PEM `PUBLIC KEY` block.
    pub fn keygen_public_key(mut self, key: &str) -> Result<WebhookVerifier, VerifyError> {
        let key = key.trim();
        let bytes: Vec<u8> = if let Some(pem) = key.strip_prefix("-----BEGIN PUBLIC KEY-----") {
            let body =
                pem.strip_suffix("-----END PUBLIC KEY-----")
                    .ok_or(VerifyError::InvalidKey(
                        "public key: unterminated PEM block",
                    ))?;
            let der: String = body.split_whitespace().collect();
            let der = STANDARD
                .decode(der)
                .map_err(|_| VerifyError::InvalidKey("public key: PEM body is not base64"))?;
            der.strip_prefix(&ED25519_SPKI_PREFIX[..])
                .ok_or(VerifyError::InvalidKey(
                    "public key: not an Ed25519 PUBLIC KEY",
                ))?
                .to_vec()
        } else {
            hex::decode(key).map_err(|_| {
                VerifyError::InvalidKey("public key: neither hex nor a PEM PUBLIC KEY block")
            })?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| VerifyError::InvalidKey("public key: an Ed25519 key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| VerifyError::InvalidKey("public key: not a valid Ed25519 point"))?;
        self.keygen_key = Some(key);
        Ok(self)
    }

    /// Requires `Keygen-Signature`'s `keyid` to be this tenant id.
    pub fn keygen_key_id(mut self, key_id: impl Into<String>) -> WebhookVerifier {
        self.keygen_key_id = Some(key_id.into());
        self
    }

    /// An endpoint secret (`whsec_…`) for `webhook-signature`; give several during a
    /// rotation: a signature by any of them is accepted.
    pub fn standard_secret(mut self, secret: &str) -> Result<WebhookVerifier, VerifyError> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        // The decode error would name a byte of the secret: replaced by a fixed message.
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| VerifyError::InvalidKey("secret: not `whsec_` followed by base64"))?;
        if key.is_empty() {
            return Err(VerifyError::InvalidKey("secret: empty"));
        }
        self.secrets.push(key);
        Ok(self)
    }

    /// How far a signature's time may be from now (default [`DEFAULT_TOLERANCE`]).
    pub fn tolerance(mut self, tolerance: Duration) -> WebhookVerifier {
        self.tolerance = tolerance;
        self
    }

    /// Verifies `request` now and parses its body.
    pub fn verify(&self, request: &WebhookRequest<'_>) -> Result<WebhookEvent, VerifyError> {
        self.verify_at(request, SystemTime::now())
    }

    /// Verifies `request` as of `now` (for tests and for requests read back from a log).
    pub fn verify_at(
        &self,
        request: &WebhookRequest<'_>,
        now: SystemTime,
    ) -> Result<WebhookEvent, VerifyError> {
        let mut verified_by = Vec::with_capacity(2);
        if let Some(key) = &self.keygen_key
            && request.headers.contains_key("keygen-signature")
        {
            self.verify_keygen(key, request, now)?;
            verified_by.push(Scheme::Keygen);
        }
        if !self.secrets.is_empty() && request.headers.contains_key("webhook-signature") {
            self.verify_standard(request, now)?;
            verified_by.push(Scheme::StandardWebhooks);
        }
        if verified_by.is_empty() {
            return Err(VerifyError::NoSignature);
        }
        parse_body(request, verified_by)
    }

    fn verify_keygen(
        &self,
        key: &VerifyingKey,
        request: &WebhookRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        const HEADER: &str = "keygen-signature";
        let params = SignatureParams::parse(header(request.headers, HEADER)?)?;
        if !params.algorithm.eq_ignore_ascii_case("ed25519") {
            return Err(VerifyError::UnsupportedAlgorithm(
                params.algorithm.chars().take(40).collect(),
            ));
        }
        if let Some(expected) = &self.keygen_key_id
            && params.key_id != expected.as_str()
        {
            return Err(VerifyError::WrongKeyId(
                params.key_id.chars().take(80).collect(),
            ));
        }
        let signed: Vec<&str> = params.headers.split_ascii_whitespace().collect();
        // Without these the signature would not cover the body or the time.
        for required in ["(request-target)", "date", "digest"] {
            if !signed.iter().any(|h| h.eq_ignore_ascii_case(required)) {
                return Err(VerifyError::Malformed {
                    header: HEADER,
                    reason: "`headers` must include (request-target), date and digest",
                });
            }
        }
        let digest = header(request.headers, "digest")?;
        let expected_digest = STANDARD.encode(Sha256::digest(request.body));
        let matches = digest.split(',').any(|part| {
            part.trim().split_once('=').is_some_and(|(alg, value)| {
                alg.eq_ignore_ascii_case("sha-256") && value == expected_digest
            })
        });
        if !matches {
            return Err(VerifyError::DigestMismatch);
        }
        let date = header(request.headers, "date")?;
        let sent = httpdate::parse_http_date(date).map_err(|_| VerifyError::Malformed {
            header: "date",
            reason: "not an HTTP date",
        })?;
        self.check_age("date", sent, now)?;

        let mut signing_string = String::with_capacity(256);
        for (i, name) in signed.iter().enumerate() {
            if i > 0 {
                signing_string.push('\n');
            }
            let name = name.to_ascii_lowercase();
            signing_string.push_str(&name);
            signing_string.push_str(": ");
            match name.as_str() {
                "(request-target)" => {
                    signing_string.push_str(&request.method.to_ascii_lowercase());
                    signing_string.push(' ');
                    signing_string.push_str(request.target);
                }
                "host" => signing_string.push_str(&host_without_port(request.host)),
                other => {
                    let value = request
                        .headers
                        .get(other)
                        .and_then(|v| v.to_str().ok())
                        .ok_or(VerifyError::Malformed {
                            header: HEADER,
                            reason: "a signed header is missing from the request",
                        })?;
                    signing_string.push_str(value);
                }
            }
        }
        let signature = STANDARD
            .decode(params.signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(VerifyError::Malformed {
                header: HEADER,
                reason: "`signature` is not a base64 Ed25519 signature",
            })?;
        key.verify_strict(signing_string.as_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature("Keygen-Signature"))
    }

    fn verify_standard(
        &self,
        request: &WebhookRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let id = header(request.headers, "webhook-id")?;
        let timestamp = header(request.headers, "webhook-timestamp")?;
        let signatures = header(request.headers, "webhook-signature")?;
        let seconds: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::Malformed {
                header: "webhook-timestamp",
                reason: "not an integer number of seconds",
            })?;
        let offset = Duration::from_secs(seconds.unsigned_abs());
        let sent = if seconds >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        };
        // A time the clock cannot even represent is as far from now as it gets.
        let sent = sent.ok_or(VerifyError::OutsideTolerance {
            header: "webhook-timestamp",
            seconds: u64::MAX,
            tolerance: self.tolerance.as_secs(),
        })?;
        self.check_age("webhook-timestamp", sent, now)?;
        let candidates: Vec<Vec<u8>> = signatures
            .split_ascii_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            .collect();
        for secret in &self.secrets {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(request.body);
            // `verify_slice` compares in constant time.
            if candidates
                .iter()
                .any(|c| mac.clone().verify_slice(c).is_ok())
            {
                return Ok(());
            }
        }
        Err(VerifyError::BadSignature("webhook-signature"))
    }

    fn check_age(
        &self,
        header: &'static str,
        sent: SystemTime,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let distance = match now.duration_since(sent) {
            Ok(age) => age,
            Err(ahead) => ahead.duration(),
        };
        if distance > self.tolerance {
            return Err(VerifyError::OutsideTolerance {
                header,
                seconds: distance.as_secs(),
                tolerance: self.tolerance.as_secs(),
            });
        }
        Ok(())
    }
}

/// Verifies `request` with `verifier` and returns the parsed event (the free-function form
/// of [`WebhookVerifier::verify`]).
pub fn verify_webhook(
    verifier: &WebhookVerifier,
    request: &WebhookRequest<'_>,
) -> Result<WebhookEvent, VerifyError> {
    verifier.verify(request)
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, VerifyError> {
    headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(name))?
        .to_str()
        .map_err(|_| VerifyError::Malformed {
            header: name,
            reason: "not visible ASCII",
        })
}

/// `example.com:8443` → `example.com`, `[::1]:80` → `[::1]`, lowercased: the host as the
/// sender's URL parser gives it.
fn host_without_port(host: &str) -> String {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        }
    };
    bare.to_ascii_lowercase()
}

/// The `key="value"` pairs of `Keygen-Signature`.
struct SignatureParams<'h> {
    key_id: &'h str,
    algorithm: &'h str,
    signature: &'h str,
    headers: &'h str,
}

impl<'h> SignatureParams<'h> {
    fn parse(value: &'h str) -> Result<SignatureParams<'h>, VerifyError> {
        let (mut key_id, mut algorithm, mut signature, mut headers) = (None, None, None, None);
        for pair in value.split(',') {
            let (key, quoted) = pair.trim().split_once('=').ok_or(VerifyError::Malformed {
                header: "keygen-signature",
                reason: "expected key=\"value\" pairs",
            })?;
            let unquoted = quoted
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(VerifyError::Malformed {
                    header: "keygen-signature",
                    reason: "values must be quoted",
                })?;
            match key.trim() {
                "keyid" => key_id = Some(unquoted),
                "algorithm" => algorithm = Some(unquoted),
                "signature" => signature = Some(unquoted),
                "headers" => headers = Some(unquoted),
                _ => {}
            }
        }
        let missing = |what| VerifyError::Malformed {
            header: "keygen-signature",
            reason: what,
        };
        Ok(SignatureParams {
            key_id: key_id.unwrap_or(""),
            algorithm: algorithm.ok_or(missing("no `algorithm`"))?,
            signature: signature.ok_or(missing("no `signature`"))?,
            headers: headers.ok_or(missing("no `headers`"))?,
        })
    }
}

/// The event in a verified body, in either format.
fn parse_body(
    request: &WebhookRequest<'_>,
    verified_by: Vec<Scheme>,
) -> Result<WebhookEvent, VerifyError> {
    let body: Value = serde_json::from_slice(request.body)
        .map_err(|e| VerifyError::Body(format!("not JSON: {e}")))?;
    let text = |v: &Value, what: &str| -> Result<String, VerifyError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| VerifyError::Body(format!("`{what}` is not a string")))
    };
    if body.pointer("/data/type").and_then(Value::as_str) == Some("webhook-events") {
        // Keygen: the payload is a JSON document inside a string.
        let attributes = body
            .pointer("/data/attributes")
            .ok_or_else(|| VerifyError::Body("no `data.attributes`".into()))?;
        let payload_text = text(
            attributes.get("payload").unwrap_or(&Value::Null),
            "data.attributes.payload",
        )?;
        let payload = serde_json::from_str(&payload_text).map_err(|e| {
            VerifyError::Body(format!("`data.attributes.payload` is not JSON: {e}"))
        })?;
        return Ok(WebhookEvent {
            verified_by,
            event_type: text(
                attributes.get("event").unwrap_or(&Value::Null),
                "data.attributes.event",
            )?,
            idempotency_token: text(
                body.pointer("/data/meta/idempotencyToken")
                    .unwrap_or(&Value::Null),
                "data.meta.idempotencyToken",
            )?,
            delivery_id: body
                .pointer("/data/id")
                .and_then(Value::as_str)
                .map(str::to_string),
            tenant_id: body
                .pointer("/data/relationships/account/data/id")
                .and_then(Value::as_str)
                .map(str::to_string),
            timestamp: None,
            payload,
        });
    }
    // Standard Webhooks: `webhook-id` is the idempotency token.
    let event_type = text(body.get("type").unwrap_or(&Value::Null), "type")?;
    let payload = body
        .get("data")
        .cloned()
        .ok_or_else(|| VerifyError::Body("no `data`".into()))?;
    Ok(WebhookEvent {
        verified_by,
        event_type,
        idempotency_token: header(request.headers, "webhook-id")
            .unwrap_or_default()
            .to_string(),
        delivery_id: None,
        tenant_id: None,
        timestamp: body
            .get("timestamp")
            .and_then(Value::as_str)
            .map(str::to_string),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// The test vector of the Standard Webhooks specification.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: u64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn standard_headers(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            method: "POST",
            target: "/hooks",
            host: "example.com",
            headers,
            body,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The vector's body is not a Herald body: the signature check is what is tested, and
    /// parsing then fails with a body error, not a signature error.
    #[test]
    fn standard_webhooks_test_vector() {
        let verifier = WebhookVerifier::new().standard_secret(SECRET).unwrap();
        let headers = standard_headers(MSG_ID, TIMESTAMP, SIGNATURE);
        let err = verifier
            .verify_at(&request(&headers, BODY), at(TIMESTAMP))
            .unwrap_err();
        assert!(matches!(err, VerifyError::Body(_)), "{err}");

        // Changing any signed part breaks it.
        let tampered = br#"{"email":"test@example.com","username":"test_user2"}"#;
        assert_eq!(
            verifier.verify_at(&request(&headers, tampered), at(TIMESTAMP)),
            Err(VerifyError::BadSignature("webhook-signature"))
        );
        let other_id = standard_headers("msg_other", TIMESTAMP, SIGNATURE);
        assert_eq!(
            verifier.verify_at(&request(&other_id, BODY), at(TIMESTAMP)),
            Err(VerifyError::BadSignature("webhook-signature"))
        );
        // Five minutes each way, no more.
        assert!(matches!(
            verifier.verify_at(&request(&headers, BODY), at(TIMESTAMP + 301)),
            Err(VerifyError::OutsideTolerance {
                header: "webhook-timestamp",
                ..
            })
        ));
        assert!(matches!(
            verifier.verify_at(&request(&headers, BODY), at(TIMESTAMP - 301)),
            Err(VerifyError::OutsideTolerance { .. })
        ));
        assert!(matches!(
            verifier.verify_at(&request(&headers, BODY), at(TIMESTAMP + 300)),
            Err(VerifyError::Body(_))
        ));
    }

    #[test]
    fn any_of_several_signatures_and_secrets_verifies() {
        let body = br#"{"type":"license.created","timestamp":"2026-01-01T00:00:00Z","data":{"data":{"id":"1","type":"licenses"}}}"#;
        let sign = |secret: &str| {
            let key = STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap())
                .unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{MSG_ID}.{TIMESTAMP}.").as_bytes());
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        };
        let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let header = format!(
            "v1a,bm90IGFuIGVkMjU1MTkgc2ln {} {}",
            sign(other),
            sign(SECRET)
        );
        let headers = standard_headers(MSG_ID, TIMESTAMP, &header);
        let event = WebhookVerifier::new()
            .standard_secret(SECRET)
            .unwrap()
            .verify_at(&request(&headers, body), at(TIMESTAMP))
            .unwrap();
        assert_eq!(event.event_type, "license.created");
        assert_eq!(event.idempotency_token, MSG_ID);
        assert_eq!(event.verified_by, [Scheme::StandardWebhooks]);
        assert_eq!(event.info().unwrap().resource_type, "licenses");
        assert_eq!(event.data().unwrap()["id"], "1");
        // A receiver holding only the previous secret of a rotation accepts too.
        let previous_only = WebhookVerifier::new().standard_secret(other).unwrap();
        assert!(
            previous_only
                .verify_at(&request(&headers, body), at(TIMESTAMP))
                .is_ok()
        );
        // A stranger does not.
        let stranger = WebhookVerifier::new()
            .standard_secret("whsec_dGhpcyBpcyBub3QgYSBrZXkgb2YgdGhlIHBhaXI=")
            .unwrap();
        assert_eq!(
            stranger.verify_at(&request(&headers, body), at(TIMESTAMP)),
            Err(VerifyError::BadSignature("webhook-signature"))
        );
    }

    /// A Keygen request signed here the way the reference describes it (independently of
    /// the server's code), verified, then broken part by part.
    #[test]
    fn keygen_signatures() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public_hex = hex::encode(key.verifying_key().to_bytes());
        let payload = r#"{"data":{"id":"lic_1","type":"licenses","attributes":{}}}"#;
        let body = serde_json::to_vec(&serde_json::json!({
            "data": {
                "id": "dlv_1", "type": "webhook-events",
                "attributes": { "endpoint": "https://example.com/hooks?x=1", "payload": payload, "event": "license.created", "status": "DELIVERING" },
                "relationships": { "account": { "data": { "type": "accounts", "id": "acct-1" } } },
                "meta": { "idempotencyToken": "tok_1" }
            }
        }))
        .unwrap();
        let date = "Tue, 30 Jun 2026 14:51:47 GMT";
        let now = httpdate::parse_http_date(date).unwrap();
        let digest = format!("sha-256={}", STANDARD.encode(Sha256::digest(&body)));
        let signed = format!(
            "(request-target): post /hooks?x=1\nhost: example.com\ndate: {date}\ndigest: {digest}"
        );
        let signature = STANDARD.encode(key.sign(signed.as_bytes()).to_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("date", date.parse().unwrap());
        headers.insert("digest", digest.parse().unwrap());
        headers.insert(
            "keygen-signature",
            format!(r#"keyid="acct-1", algorithm="ed25519", signature="{signature}", headers="(request-target) host date digest""#)
                .parse()
                .unwrap(),
        );
        let req = WebhookRequest {
            method: "POST",
            target: "/hooks?x=1",
            host: "Example.com:8443",
            headers: &headers,
            body: &body,
        };
        let verifier = WebhookVerifier::new()
            .keygen_public_key(&public_hex)
            .unwrap()
            .keygen_key_id("acct-1");
        let event = verifier.verify_at(&req, now).unwrap();
        assert_eq!(event.verified_by, [Scheme::Keygen]);
        assert_eq!(event.event_type, "license.created");
        assert_eq!(event.delivery_id.as_deref(), Some("dlv_1"));
        assert_eq!(event.tenant_id.as_deref(), Some("acct-1"));
        assert_eq!(event.idempotency_token, "tok_1");
        assert_eq!(event.payload["data"]["id"], "lic_1");

        // The same key as PEM.
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&key.verifying_key().to_bytes());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        );
        assert!(
            WebhookVerifier::new()
                .keygen_public_key(&pem)
                .unwrap()
                .verify_at(&req, now)
                .is_ok()
        );

        let tampered = [&body[..], b" "].concat();
        assert_eq!(
            verifier.verify_at(
                &WebhookRequest {
                    body: &tampered,
                    ..req
                },
                now
            ),
            Err(VerifyError::DigestMismatch)
        );
        assert_eq!(
            verifier.verify_at(
                &WebhookRequest {
                    target: "/hooks",
                    ..req
                },
                now
            ),
            Err(VerifyError::BadSignature("Keygen-Signature"))
        );
        assert_eq!(
            verifier.verify_at(
                &WebhookRequest {
                    host: "evil.example",
                    ..req
                },
                now
            ),
            Err(VerifyError::BadSignature("Keygen-Signature"))
        );
        assert!(matches!(
            verifier.verify_at(&req, now + Duration::from_secs(301)),
            Err(VerifyError::OutsideTolerance { header: "date", .. })
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            WebhookVerifier::new()
                .keygen_public_key(&hex::encode(other.verifying_key().to_bytes()))
                .unwrap()
                .verify_at(&req, now),
            Err(VerifyError::BadSignature("Keygen-Signature"))
        );
        assert_eq!(
            WebhookVerifier::new()
                .keygen_public_key(&public_hex)
                .unwrap()
                .keygen_key_id("acct-2")
                .verify_at(&req, now),
            Err(VerifyError::WrongKeyId("acct-1".into()))
        );
        // A verifier without a Keygen key has nothing to check here.
        assert_eq!(
            WebhookVerifier::new()
                .standard_secret(SECRET)
                .unwrap()
                .verify_at(&req, now),
            Err(VerifyError::NoSignature)
        );
    }

    #[test]
    fn absurd_timestamps_are_refused_without_panicking() {
        let verifier = WebhookVerifier::new().standard_secret(SECRET).unwrap();
        for ts in ["-9223372036854775808", "9223372036854775807", "12abc", ""] {
            let mut headers = standard_headers(MSG_ID, TIMESTAMP, SIGNATURE);
            headers.insert("webhook-timestamp", ts.parse().unwrap());
            let err = verifier
                .verify_at(&request(&headers, BODY), at(TIMESTAMP))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    VerifyError::OutsideTolerance { .. } | VerifyError::Malformed { .. }
                ),
                "{ts}: {err}"
            );
        }
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = WebhookVerifier::new()
            .standard_secret("whsec_s3cr3t!!")
            .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        assert!(WebhookVerifier::new().standard_secret("whsec_").is_err());
        assert!(WebhookVerifier::new().keygen_public_key("abcd").is_err());
        assert!(WebhookVerifier::new().keygen_public_key("zz").is_err());
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("Example.com:8443"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("127.0.0.1:80"), "127.0.0.1");
    }
}
