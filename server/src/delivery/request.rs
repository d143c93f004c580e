//! One webhook request: the URL, headers and body for an endpoint, rendered in its
//! format and signed with its schemes. Shared by the worker and `PingEndpoint`.

use std::{
    sync::{Arc, LazyLock},
    time::SystemTime,
};

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    cache::{FOREVER, TtlCache},
    store::entities::{endpoint, tenant},
    time::now_micros,
    webhook::{
        keygen,
        render::{self, Envelope, Format},
        standard,
    },
};

/// The event side of a request.
pub struct RequestParts<'a> {
    pub delivery_id: &'a str,
    pub event_type: &'a str,
    pub payload_json: &'a str,
    pub idempotency_token: &'a str,
    pub created_at_micros: i64,
    pub occurred_at_micros: i64,
}

/// The URL, headers and body of one attempt; `Err` when the stored data cannot make one
/// (a bad URL or key would be a bug elsewhere, but it must fail the attempt, not panic).
pub fn build(
    endpoint: &endpoint::Model,
    tenant: &tenant::Model,
    parts: &RequestParts<'_>,
    user_agent: &str,
) -> Result<(url::Url, HeaderMap, Bytes), String> {
    let url = endpoint_url(&endpoint.url)?;
    let envelope = Envelope {
        delivery_id: parts.delivery_id,
        tenant_id: &tenant.id,
        endpoint_url: &endpoint.url,
        event_type: parts.event_type,
        payload_json: parts.payload_json,
        idempotency_token: parts.idempotency_token,
        created_at_micros: parts.created_at_micros,
        occurred_at_micros: parts.occurred_at_micros,
    };
    let body = render::render(Format::parse(&endpoint.format), &envelope);
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert(&mut headers, "user-agent", user_agent)?;
    let schemes = endpoint.scheme_list();
    let now = SystemTime::now();
    if schemes.iter().any(|s| s == "keygen") {
        let key = signing_key(tenant)?;
        let signed = keygen::sign(&key, &tenant.id, &url, &body, now);
        insert(&mut headers, "date", &signed.date)?;
        insert(&mut headers, "digest", &signed.digest)?;
        insert(&mut headers, "keygen-signature", &signed.signature)?;
    }
    if schemes.iter().any(|s| s == "standard-webhooks") {
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut secrets = vec![endpoint.secret.as_str()];
        if let (Some(previous), Some(until)) = (
            &endpoint.previous_secret,
            endpoint.previous_secret_expires_at,
        ) && until > now_micros()
        {
            secrets.push(previous);
        }
        let signature = standard::sign(&secrets, parts.idempotency_token, timestamp, &body)
            .map_err(|e| format!("endpoint secret: {e}"))?;
        insert(&mut headers, "webhook-id", parts.idempotency_token)?;
        insert(&mut headers, "webhook-timestamp", &timestamp.to_string())?;
        insert(&mut headers, "webhook-signature", &signature)?;
    }
    Ok((url, headers, Bytes::from(body)))
}

/// The tenant's signing key. Deriving one from its seed costs as much as a signature
/// (a scalar multiplication for the public half), so derived keys are kept, by seed.
pub fn signing_key(tenant: &tenant::Model) -> Result<Arc<Ed25519KeyPair>, String> {
    static KEYS: LazyLock<TtlCache<String, Arc<Ed25519KeyPair>>> =
        LazyLock::new(|| TtlCache::new(FOREVER));
    KEYS.get_or_try_insert(tenant.signing_key.as_str(), || {
        STANDARD
            .decode(&tenant.signing_key)
            .ok()
            .filter(|seed| seed.len() == 32)
            .and_then(|seed| Ed25519KeyPair::from_seed_unchecked(&seed).ok())
            .map(Arc::new)
            .ok_or_else(|| format!("tenant {} has an unreadable signing key", tenant.id))
    })
}

/// The endpoint's URL, parsed. Parsing one (its host through IDNA) took about 3% of
/// Herald's CPU per delivery in the batch publish benchmark, every attempt of the same
/// few URLs, so parsed URLs are kept, by text.
fn endpoint_url(text: &str) -> Result<url::Url, String> {
    static URLS: LazyLock<TtlCache<String, url::Url>> = LazyLock::new(|| TtlCache::new(FOREVER));
    URLS.get_or_try_insert(text, || {
        url::Url::parse(text).map_err(|e| format!("endpoint url: {e}"))
    })
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), String> {
    let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

/// The tenant's Ed25519 public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block.
pub fn public_key_pem(public_key_hex: &str) -> Option<String> {
    // DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), then the 32 key bytes.
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let key = hex::decode(public_key_hex).ok().filter(|k| k.len() == 32)?;
    let der: Vec<u8> = PREFIX.iter().copied().chain(key).collect();
    Some(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_urls_are_those_of_their_own_text() {
        let a = "https://hooks.example.com/a?x=1";
        let b = "https://bücher.example/b";
        for _ in 0..2 {
            assert_eq!(endpoint_url(a).unwrap().as_str(), a);
            assert_eq!(
                endpoint_url(b).unwrap().host_str(),
                Some("xn--bcher-kva.example")
            );
        }
        let err = endpoint_url("not a url").unwrap_err();
        assert!(err.starts_with("endpoint url:"), "{err}");
    }
}
