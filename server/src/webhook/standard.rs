//! Standard Webhooks `v1` signatures (HMAC-SHA256), so receivers can use any of the reference
//! libraries (`standardwebhooks` on npm, PyPI, crates.io) or Svix's.
//!
//! A header can carry several signatures because secrets rotate: while an old secret is still
//! valid the receiver may not have the new one yet, so every attempt is signed with each valid
//! secret and the receiver accepts if any one matches.
//!
//! Secrets are checked on every signing rather than trusted from the store: a malformed secret
//! must surface as an error on that delivery, never as a panic in the worker nor as a header
//! no receiver can verify. Errors never echo any part of a secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Why a secret cannot sign. Carries no part of the secret, since errors end up in logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("webhook secret does not start with `whsec_`")]
    MissingPrefix,
    #[error("webhook secret is not valid base64 after `whsec_`")]
    InvalidBase64,
    #[error("webhook secret has no key bytes after `whsec_`")]
    Empty,
    #[error("no webhook secret to sign with")]
    NoSecret,
}

/// The HMAC key of a `whsec_` secret: the base64-decoded part after the prefix.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    // The decode error is dropped on purpose: it names the offending byte of the secret.
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::InvalidBase64)?;
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// `webhook-signature` value: one `v1,<base64>` per secret, space-separated (all valid secrets during a rotation).
pub fn sign(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SecretError> {
    if secrets.is_empty() {
        return Err(SecretError::NoSecret);
    }
    // "v1," + 44 base64 characters + a separating space.
    let mut header = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str(&sign_one(secret, msg_id, timestamp, body)?);
    }
    Ok(header)
}

/// One `v1,<base64>` signature: HMAC-SHA256 of `<msg_id>.<timestamp>.<body>`.
pub fn sign_one(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SecretError> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use standardwebhooks::Webhook;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const OTHER: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn headers(msg_id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", msg_id.parse().unwrap());
        h.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    #[test]
    fn spec_test_vector() {
        let expected = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        assert_eq!(
            sign_one(SECRET, MSG_ID, 1649367553, BODY).unwrap(),
            expected
        );
        assert_eq!(sign(&[SECRET], MSG_ID, 1649367553, BODY).unwrap(), expected);
    }

    #[test]
    fn reference_library_verifies_one_secret() {
        let ts = now();
        let sig = sign(&[SECRET], MSG_ID, ts, BODY).unwrap();
        let wh = Webhook::new(SECRET).unwrap();
        wh.verify(BODY, &headers(MSG_ID, ts, &sig)).unwrap();
        // Bound to the body, the id and the timestamp.
        assert!(wh.verify(b"{}", &headers(MSG_ID, ts, &sig)).is_err());
        assert!(wh.verify(BODY, &headers("msg_other", ts, &sig)).is_err());
        assert!(wh.verify(BODY, &headers(MSG_ID, ts - 1, &sig)).is_err());
        // And to the secret.
        let other = Webhook::new(OTHER).unwrap();
        assert!(other.verify(BODY, &headers(MSG_ID, ts, &sig)).is_err());
    }

    #[test]
    fn reference_library_verifies_a_rotation_header() {
        let ts = now();
        let header = sign(&[OTHER, SECRET], MSG_ID, ts, BODY).unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign_one(OTHER, MSG_ID, ts, BODY).unwrap());
        assert_eq!(parts[1], sign_one(SECRET, MSG_ID, ts, BODY).unwrap());
        // A receiver holding either secret accepts; one holding neither rejects.
        for secret in [SECRET, OTHER] {
            Webhook::new(secret)
                .unwrap()
                .verify(BODY, &headers(MSG_ID, ts, &header))
                .unwrap();
        }
        let stranger = Webhook::new("whsec_dGhpcyBpcyBub3QgYSBrZXkgb2YgdGhlIHBhaXI=").unwrap();
        assert!(
            stranger
                .verify(BODY, &headers(MSG_ID, ts, &header))
                .is_err()
        );
    }

    #[test]
    fn non_utf8_body_is_signed_as_bytes() {
        let body = [0xff, 0xfe, b'{', b'}'];
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret_key(SECRET).unwrap()).unwrap();
        mac.update(b"id.42.");
        mac.update(&body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(sign_one(SECRET, "id", 42, &body).unwrap(), expected);
    }

    #[test]
    fn malformed_secrets_are_errors() {
        assert_eq!(
            sign_one("C2FVsBQIhrscChlQIMV+b5sSYspob7oD", MSG_ID, 1, BODY),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            sign_one("WHSEC_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", MSG_ID, 1, BODY),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            sign_one("whsec_not base64!", MSG_ID, 1, BODY),
            Err(SecretError::InvalidBase64)
        );
        assert_eq!(
            sign_one("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o", MSG_ID, 1, BODY),
            Err(SecretError::InvalidBase64)
        );
        assert_eq!(
            sign_one("whsec_ключ", MSG_ID, 1, BODY),
            Err(SecretError::InvalidBase64)
        );
        assert_eq!(sign_one("whsec_", MSG_ID, 1, BODY), Err(SecretError::Empty));
        assert_eq!(
            sign_one("", MSG_ID, 1, BODY),
            Err(SecretError::MissingPrefix)
        );
        // One bad secret in a rotation fails the whole header rather than dropping silently.
        assert_eq!(
            sign(&[SECRET, "whsec_%%%"], MSG_ID, 1, BODY),
            Err(SecretError::InvalidBase64)
        );
        assert_eq!(sign(&[], MSG_ID, 1, BODY), Err(SecretError::NoSecret));
    }

    #[test]
    fn errors_do_not_echo_the_secret() {
        let err = sign_one("whsec_secretpart!", MSG_ID, 1, BODY).unwrap_err();
        assert!(!err.to_string().contains("secretpart"));
        assert!(!format!("{err:?}").contains("secretpart"));
    }
}
