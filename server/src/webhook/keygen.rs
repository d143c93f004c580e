//! Keygen's webhook signature (draft-cavage HTTP signatures, Ed25519), so that a receiver
//! written against Keygen verifies Herald's requests unchanged.
//!
//! A receiver rebuilds the signing string from the request it got, so every part here is
//! taken from what goes on the wire: the path and query as the HTTP client serialises the
//! `url::Url` into the request line (percent-encoded, fragment dropped), and the host without
//! its port, as Keygen's own server signs it. The `Date` is part of the signature so that
//! receivers can reject replays; that is why each attempt is signed again at its own `now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use url::Url;

/// The three signature-related header values of one attempt (`Date`, `Digest`,
/// `Keygen-Signature`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenHeaders {
    pub date: String,
    pub digest: String,
    pub signature: String,
}

/// Signs a POST of `body` to `url` at `now` with the tenant's Ed25519 key (`account_id` is the keyid).
pub fn sign(
    key: &Ed25519KeyPair,
    account_id: &str,
    url: &Url,
    body: &[u8],
    now: SystemTime,
) -> KeygenHeaders {
    let date = httpdate::fmt_http_date(clamp_for_http_date(now));
    let digest = format!("sha-256={}", STANDARD.encode(Sha256::digest(body)));
    let signature = key.sign(signing_string(url, &date, &digest).as_bytes());
    let signature = format!(
        r#"keyid="{account_id}", algorithm="ed25519", signature="{}", headers="(request-target) host date digest""#,
        STANDARD.encode(signature.as_ref())
    );
    KeygenHeaders {
        date,
        digest,
        signature,
    }
}

/// The four lines that are signed, joined by `\n` with no trailing newline. `digest` is the
/// whole `Digest` header value (`sha-256=...`).
///
/// The query is appended whenever the URL has one, even an empty one (`/p?`): that is the
/// request target the HTTP client sends, which is what a receiver rebuilds.
pub fn signing_string(url: &Url, date: &str, digest: &str) -> String {
    let path = match url.path() {
        "" => "/",
        p => p,
    };
    let query = url.query();
    let host = url.host_str().unwrap_or("");
    let mut s = String::with_capacity(
        64 + path.len() + query.map_or(0, |q| q.len() + 1) + host.len() + date.len() + digest.len(),
    );
    s.push_str("(request-target): post ");
    s.push_str(path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s.push_str("\nhost: ");
    s.push_str(host);
    s.push_str("\ndate: ");
    s.push_str(date);
    s.push_str("\ndigest: ");
    s.push_str(digest);
    s
}

/// `httpdate` panics outside 1970..=9999; a clock that far off must not take the worker down.
fn clamp_for_http_date(now: SystemTime) -> SystemTime {
    // 9999-12-31T23:59:59Z
    const MAX_SECS: u64 = 253_402_300_799;
    match now.duration_since(UNIX_EPOCH) {
        Err(_) => UNIX_EPOCH,
        Ok(d) if d.as_secs() > MAX_SECS => UNIX_EPOCH + Duration::from_secs(MAX_SECS),
        Ok(_) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
    use std::collections::HashMap;

    /// 2026-06-30T14:51:47Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_782_831_107)
    }

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a seed")
    }

    /// `key()`'s public half, from another implementation.
    fn public() -> VerifyingKey {
        SigningKey::from_bytes(&[7u8; 32]).verifying_key()
    }

    /// Parses `key="value", key="value"` the way a receiver does.
    fn params(header: &str) -> HashMap<String, String> {
        header
            .split(", ")
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .expect("quoted value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// A receiver's verification, written independently of `signing_string`: `target` is the
    /// request target it saw (path and query), `host` the host it is known by.
    fn verify(
        public: &VerifyingKey,
        target: &str,
        host: &str,
        body: &[u8],
        h: &KeygenHeaders,
    ) -> Result<(), String> {
        let digest = format!("sha-256={}", STANDARD.encode(Sha256::digest(body)));
        if digest != h.digest {
            return Err("digest mismatch".into());
        }
        let p = params(&h.signature);
        assert_eq!(p["algorithm"], "ed25519");
        assert_eq!(p["headers"], "(request-target) host date digest");
        let signed = format!(
            "(request-target): post {target}\nhost: {host}\ndate: {}\ndigest: {}",
            h.date, h.digest
        );
        let sig_bytes = STANDARD
            .decode(&p["signature"])
            .map_err(|e| e.to_string())?;
        let sig = Signature::from_slice(&sig_bytes).map_err(|e| e.to_string())?;
        public
            .verify_strict(signed.as_bytes(), &sig)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn header_values() {
        let url = Url::parse("https://example.com/hooks").unwrap();
        let h = sign(&key(), "acct-1", &url, b"hello", at());
        assert_eq!(h.date, "Tue, 30 Jun 2026 14:51:47 GMT");
        // SHA-256("hello"), standard base64 with padding.
        assert_eq!(
            h.digest,
            "sha-256=LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
        );
        let p = params(&h.signature);
        assert_eq!(p["keyid"], "acct-1");
        assert!(
            h.signature
                .starts_with(r#"keyid="acct-1", algorithm="ed25519", signature=""#)
        );
        assert!(
            h.signature
                .ends_with(r#"", headers="(request-target) host date digest""#)
        );
        assert_eq!(STANDARD.decode(&p["signature"]).unwrap().len(), 64);
    }

    #[test]
    fn signing_string_layout() {
        let url = Url::parse("https://example.com/a/b?x=1&y=2#frag").unwrap();
        assert_eq!(
            signing_string(&url, "D", "sha-256=X"),
            "(request-target): post /a/b?x=1&y=2\nhost: example.com\ndate: D\ndigest: sha-256=X"
        );
        let bare = Url::parse("https://example.com").unwrap();
        assert!(signing_string(&bare, "D", "G").starts_with("(request-target): post /\n"));
    }

    #[test]
    fn verifies_independently() {
        let body = br#"{"data":{"id":"1"}}"#;
        let url = Url::parse("https://example.com/webhooks").unwrap();
        let h = sign(&key(), "acct-1", &url, body, at());
        verify(&public(), "/webhooks", "example.com", body, &h).unwrap();
    }

    #[test]
    fn verifies_with_query_string() {
        let body = b"{}";
        let url = Url::parse("https://example.com/hooks/keygen?token=abc&env=prod").unwrap();
        let h = sign(&key(), "acct-1", &url, body, at());
        verify(
            &public(),
            "/hooks/keygen?token=abc&env=prod",
            "example.com",
            body,
            &h,
        )
        .unwrap();
        // Without the query the signature does not hold.
        assert!(verify(&public(), "/hooks/keygen", "example.com", body, &h).is_err());
    }

    #[test]
    fn host_excludes_explicit_port() {
        let body = b"{}";
        let url = Url::parse("http://Hooks.Example.com:8443/in").unwrap();
        let h = sign(&key(), "acct-1", &url, body, at());
        verify(&public(), "/in", "hooks.example.com", body, &h).unwrap();
        assert!(verify(&public(), "/in", "hooks.example.com:8443", body, &h).is_err());
    }

    #[test]
    fn tampered_body_fails_the_digest() {
        let url = Url::parse("https://example.com/webhooks").unwrap();
        let h = sign(&key(), "acct-1", &url, b"{\"a\":1}", at());
        assert_eq!(
            verify(&public(), "/webhooks", "example.com", b"{\"a\":2}", &h),
            Err("digest mismatch".to_string())
        );
    }

    #[test]
    fn wrong_key_or_date_fails() {
        let body = b"{}";
        let url = Url::parse("https://example.com/webhooks").unwrap();
        let h = sign(&key(), "acct-1", &url, body, at());
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(verify(&other, "/webhooks", "example.com", body, &h).is_err());
        let replayed = KeygenHeaders {
            date: "Tue, 30 Jun 2026 14:56:47 GMT".into(),
            ..h
        };
        assert!(verify(&public(), "/webhooks", "example.com", body, &replayed).is_err());
    }

    #[test]
    fn each_attempt_gets_its_own_date_and_signature() {
        let url = Url::parse("https://example.com/webhooks").unwrap();
        let a = sign(&key(), "acct-1", &url, b"{}", at());
        let b = sign(
            &key(),
            "acct-1",
            &url,
            b"{}",
            at() + Duration::from_secs(60),
        );
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.date, b.date);
        assert_ne!(a.signature, b.signature);
    }

    #[test]
    fn out_of_range_clock_does_not_panic() {
        let url = Url::parse("https://example.com/").unwrap();
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            sign(&key(), "a", &url, b"", before).date,
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(
            sign(&key(), "a", &url, b"", after).date,
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
