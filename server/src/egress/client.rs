//! The webhook HTTP client: one POST per attempt, with its raw outcome.
//!
//! - Redirects are not followed (a 3xx is returned as is); proxies from the environment
//!   are ignored (they would bypass the SSRF policy).
//! - Destinations are checked by [`ssrf::Policy::check_url`] (scheme, IP literals) before
//!   the request and by [`ssrf::GuardedResolver`] at connection time (resolved names).
//! - One deadline, `timeout` after the start, bounds everything: DNS, connection, TLS,
//!   request, response headers and the body read.
//! - The response body is read chunk by chunk and at most `max_body` bytes are kept.
//!
//! Deciding what an outcome means (success, retry, disable on 410) is the worker's job.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::time::{Instant, timeout_at};
use url::Url;

use super::ssrf::{self, ResolveError};

/// Upper bound of the TCP (and TLS) connection phase, within the overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an attempt got no (complete) HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    ConnectionRefused,
    Dns,
    Tls,
    BlockedAddress,
    InvalidUrl,
    Connection,
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::BlockedAddress => "blocked_address",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Connection => "connection",
            ErrorKind::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt: its kind and a human-readable message (the whole error chain).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct EgressError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EgressError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> EgressError {
        EgressError {
            kind,
            message: message.into(),
        }
    }
}

/// The raw result of one attempt.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The response status; `None` when no response was obtained.
    pub status: Option<u16>,
    /// The response body: at most `max_body` bytes, lossy UTF-8, cut at a char boundary.
    pub body: String,
    /// `Retry-After` (delta-seconds or HTTP-date; a past date is zero), if sent and valid.
    pub retry_after: Option<Duration>,
    /// Set when no HTTP response was obtained, or when reading the body failed or timed
    /// out (then `status` is set as well).
    pub error: Option<EgressError>,
    pub elapsed: Duration,
}

impl Outcome {
    /// A 2xx response, received completely (within the timeout).
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn failed(error: EgressError, started: Instant) -> Outcome {
        Outcome {
            status: None,
            body: String::new(),
            retry_after: None,
            error: Some(error),
            elapsed: started.elapsed(),
        }
    }
}

/// Sends webhook attempts. Cheap to clone (shares the connection pool).
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<ssrf::Policy>,
    timeout: Duration,
    max_body: usize,
}

impl Sender {
    /// `timeout` bounds a whole attempt; `max_body` is the number of response body bytes
    /// kept.
    pub fn new(
        policy: ssrf::Policy,
        timeout: Duration,
        max_body: usize,
        user_agent: &str,
    ) -> anyhow::Result<Sender> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(ssrf::GuardedResolver::new(policy.clone())))
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            // A backstop: `post` enforces the same deadline around the body read too.
            .timeout(timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(user_agent)
            .referer(false)
            .https_only(!policy.allow_http)
            .build()?;
        Ok(Sender {
            client,
            policy,
            timeout,
            max_body,
        })
    }

    /// POSTs `body` with `headers` (`content-type` defaults to `application/json`).
    /// Never panics: every failure is an [`Outcome`] with an error kind.
    pub async fn post(&self, url: &Url, mut headers: HeaderMap, body: Bytes) -> Outcome {
        let started = Instant::now();
        let deadline = started + self.timeout;
        // IP literals are connected to without the resolver: check them (and the scheme) here.
        if let Err(refusal) = self.policy.check_url(url) {
            let kind = if refusal.is_blocked_address() {
                ErrorKind::BlockedAddress
            } else {
                ErrorKind::InvalidUrl
            };
            return Outcome::failed(EgressError::new(kind, refusal.to_string()), started);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = self.client.post(url.clone()).headers(headers).body(body);
        let mut response = match timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Outcome::failed(classify(&err, url), started),
            Err(_) => {
                let message = format!("no response within {:?}", self.timeout);
                return Outcome::failed(EgressError::new(ErrorKind::Timeout, message), started);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));

        // Grown by what arrives: most answers (204s) have no body, so none is allocated.
        let mut buf = Vec::new();
        let mut error = None;
        while buf.len() < self.max_body {
            match timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    let take = chunk.len().min(self.max_body - buf.len());
                    buf.extend_from_slice(&chunk[..take]);
                }
                Ok(Ok(None)) => break,
                Ok(Err(err)) => {
                    error = Some(classify(&err, url));
                    break;
                }
                Err(_) => {
                    let message = format!("response body not complete within {:?}", self.timeout);
                    error = Some(EgressError::new(ErrorKind::Timeout, message));
                    break;
                }
            }
        }
        // Whatever is left unread is dropped with the response (and its connection).
        Outcome {
            status: Some(status),
            body: truncate_lossy(&buf, self.max_body),
            retry_after,
            error,
            elapsed: started.elapsed(),
        }
    }
}

/// Classifies a reqwest error by walking its source chain.
fn classify(err: &reqwest::Error, url: &Url) -> EgressError {
    let message = describe(err);
    let mut io_kinds = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            let kind = match resolve {
                ResolveError::Blocked { .. } => ErrorKind::BlockedAddress,
                ResolveError::Lookup { .. } | ResolveError::NoAddress { .. } => ErrorKind::Dns,
            };
            return EgressError::new(kind, message);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            collect_io_kinds(io, &mut io_kinds);
        }
        source = e.source();
    }
    let kind = if err.is_timeout() || io_kinds.contains(&io::ErrorKind::TimedOut) {
        ErrorKind::Timeout
    } else if io_kinds.contains(&io::ErrorKind::ConnectionRefused) {
        ErrorKind::ConnectionRefused
    } else if err.is_builder() {
        ErrorKind::InvalidUrl
    } else if err.is_connect() && url.scheme() == "https" && is_tls_failure(err, &io_kinds) {
        ErrorKind::Tls
    } else if err.is_connect() || err.is_request() || err.is_body() {
        ErrorKind::Connection
    } else {
        ErrorKind::Other
    };
    EgressError::new(kind, message)
}

/// The kinds of `io` and of the `io::Error`s it wraps: `io::Error::source` skips the
/// wrapped error (hyper-util wraps rustls' `InvalidData` error in an `Other` one).
fn collect_io_kinds(io: &io::Error, kinds: &mut Vec<io::ErrorKind>) {
    kinds.push(io.kind());
    let mut source: Option<&(dyn StdError + 'static)> = match io.get_ref() {
        Some(inner) => Some(inner),
        None => return,
    };
    while let Some(e) = source {
        if let Some(inner) = e.downcast_ref::<io::Error>() {
            return collect_io_kinds(inner, kinds);
        }
        source = e.source();
    }
}

/// rustls is not a direct dependency, so its errors cannot be downcast: tokio-rustls
/// reports them as `io::ErrorKind::InvalidData` during the connection (which, for https,
/// includes the handshake); hyper-rustls' own errors mention TLS or certificates.
fn is_tls_failure(err: &reqwest::Error, io_kinds: &[io::ErrorKind]) -> bool {
    if io_kinds.contains(&io::ErrorKind::InvalidData) {
        return true;
    }
    let text = describe(err).to_ascii_lowercase();
    ["tls", "certificate", "handshake", "dnsname"]
        .iter()
        .any(|w| text.contains(w))
}

/// The error and its sources, joined with `: ` (reqwest's own message is terse).
fn describe(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Parses `Retry-After`: delta-seconds, or an HTTP-date (a date in the past is zero).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// At most `max` bytes of `bytes` as lossy UTF-8, never ending in a cut character.
fn truncate_lossy(bytes: &[u8], max: usize) -> String {
    let mut bytes = &bytes[..bytes.len().min(max)];
    if bytes.len() == max {
        // The cut may have split a multi-byte character: drop its incomplete start.
        bytes = &bytes[..bytes.len() - incomplete_tail(bytes)];
    }
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > max {
        // Replacement characters (3 bytes) may have grown invalid input.
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The length of an incomplete UTF-8 sequence at the end of `bytes` (0 if none).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match byte {
            0xf0..=0xff => 4,
            0xe0..=0xef => 3,
            0xc0..=0xdf => 2,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::routing::any;
    use futures::StreamExt;

    use super::*;

    /// Serves `router` on 127.0.0.1 (a free port) for the rest of the test.
    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    fn local_policy() -> ssrf::Policy {
        ssrf::Policy {
            allow_http: true,
            allow: vec!["127.0.0.1/32".parse().unwrap()],
        }
    }

    fn sender(policy: ssrf::Policy, timeout: Duration, max_body: usize) -> Sender {
        Sender::new(policy, timeout, max_body, "Herald-Test/1").unwrap()
    }

    fn local_sender() -> Sender {
        sender(local_policy(), Duration::from_secs(5), 4096)
    }

    fn url_of(addr: SocketAddr, path: &str) -> Url {
        Url::parse(&format!("http://{addr}{path}")).unwrap()
    }

    async fn post(sender: &Sender, url: &Url) -> Outcome {
        sender
            .post(url, HeaderMap::new(), Bytes::from_static(b"{}"))
            .await
    }

    fn kind(outcome: &Outcome) -> Option<ErrorKind> {
        outcome.error.as_ref().map(|e| e.kind)
    }

    #[tokio::test]
    async fn ok_200_with_body_and_headers_sent() {
        let router = Router::new().route(
            "/hook",
            any(|headers: AxumHeaders, body: Bytes| async move {
                let get = |h: &str| headers.get(h).unwrap().to_str().unwrap().to_owned();
                format!(
                    "{}|{}|{}|{}",
                    get("user-agent"),
                    get("content-type"),
                    get("webhook-id"),
                    String::from_utf8_lossy(&body)
                )
            }),
        );
        let addr = serve(router).await;
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        let outcome = local_sender()
            .post(
                &url_of(addr, "/hook"),
                headers,
                Bytes::from_static(b"{\"a\":1}"),
            )
            .await;
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.status, Some(200));
        assert!(outcome.is_success());
        assert_eq!(
            outcome.body,
            "Herald-Test/1|application/json|msg_1|{\"a\":1}"
        );
        assert_eq!(outcome.retry_after, None);
    }

    #[tokio::test]
    async fn status_500_and_410_are_returned() {
        let router = Router::new()
            .route(
                "/500",
                any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/410", any(|| async { StatusCode::GONE }));
        let addr = serve(router).await;
        let sender = local_sender();
        let outcome = post(&sender, &url_of(addr, "/500")).await;
        assert_eq!((outcome.status, outcome.body.as_str()), (Some(500), "boom"));
        assert_eq!(outcome.error, None);
        assert!(!outcome.is_success());
        let outcome = post(&sender, &url_of(addr, "/410")).await;
        assert_eq!(outcome.status, Some(410));
        assert!(!outcome.is_success());
    }

    #[tokio::test]
    async fn redirect_is_not_followed() {
        let hits = Arc::new(AtomicUsize::new(0));
        let target_hits = hits.clone();
        let router = Router::new()
            .route(
                "/start",
                any(|| async { (StatusCode::FOUND, [("location", "/target")], "moved") }),
            )
            .route(
                "/target",
                any(move || {
                    target_hits.fetch_add(1, Ordering::SeqCst);
                    async { "target" }
                }),
            );
        let addr = serve(router).await;
        let outcome = post(&local_sender(), &url_of(addr, "/start")).await;
        assert_eq!(outcome.status, Some(302));
        assert_eq!(outcome.error, None);
        assert!(!outcome.is_success());
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn body_is_truncated_to_the_cap() {
        let router = Router::new()
            .route("/big", any(|| async { "x".repeat(100_000) }))
            .route("/utf8", any(|| async { "é".repeat(1000) }));
        let addr = serve(router).await;
        let sender = sender(local_policy(), Duration::from_secs(5), 1023);
        let outcome = post(&sender, &url_of(addr, "/big")).await;
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.body.len(), 1023);
        assert!(outcome.is_success());
        // 2-byte characters and an odd cap: the half character is dropped.
        let outcome = post(&sender, &url_of(addr, "/utf8")).await;
        assert_eq!(outcome.body, "é".repeat(511));
    }

    #[tokio::test]
    async fn endless_body_is_capped_without_buffering_it() {
        let router = Router::new().route(
            "/endless",
            any(|| async {
                let chunks = futures::stream::repeat_with(|| {
                    Ok::<_, io::Error>(Bytes::from_static(&[b'y'; 8192]))
                });
                Body::from_stream(chunks)
            }),
        );
        let addr = serve(router).await;
        let sender = sender(local_policy(), Duration::from_secs(5), 4096);
        let outcome = post(&sender, &url_of(addr, "/endless")).await;
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.body, "y".repeat(4096));
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "{:?}",
            outcome.elapsed
        );
    }

    #[tokio::test]
    async fn retry_after_seconds_and_http_date() {
        let router = Router::new()
            .route(
                "/seconds",
                any(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")]) }),
            )
            .route(
                "/date",
                any(|| async {
                    let at = SystemTime::now() + Duration::from_secs(120);
                    let date = httpdate::fmt_http_date(at);
                    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", date)])
                }),
            )
            .route(
                "/garbage",
                any(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "soon")]) }),
            );
        let addr = serve(router).await;
        let sender = local_sender();
        let outcome = post(&sender, &url_of(addr, "/seconds")).await;
        assert_eq!(outcome.status, Some(429));
        assert_eq!(outcome.retry_after, Some(Duration::from_secs(7)));
        let outcome = post(&sender, &url_of(addr, "/date")).await;
        assert_eq!(outcome.status, Some(503));
        let after = outcome.retry_after.unwrap();
        assert!(
            after > Duration::from_secs(115) && after <= Duration::from_secs(120),
            "{after:?}"
        );
        let outcome = post(&sender, &url_of(addr, "/garbage")).await;
        assert_eq!(outcome.retry_after, None);
    }

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_lossy(b"hello", 10), "hello");
        assert_eq!(truncate_lossy(b"hello", 3), "hel");
        assert_eq!(truncate_lossy("aé".as_bytes(), 2), "a");
        assert_eq!(truncate_lossy("a€".as_bytes(), 3), "a");
        assert_eq!(truncate_lossy("a😀".as_bytes(), 4), "a");
        assert_eq!(truncate_lossy("a😀".as_bytes(), 5), "a😀");
        assert_eq!(truncate_lossy(b"ab\xffcd", 10), "ab\u{fffd}cd");
        // Replacement characters cannot make the result exceed the cap.
        let lossy = truncate_lossy(b"\xff\xff\xff\xff", 4);
        assert!(lossy.len() <= 4, "{lossy:?}");
        assert_eq!(truncate_lossy(b"abc", 0), "");
    }

    #[tokio::test]
    async fn slow_response_times_out() {
        let router = Router::new().route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        );
        let addr = serve(router).await;
        let sender = sender(local_policy(), Duration::from_millis(500), 4096);
        let outcome = post(&sender, &url_of(addr, "/slow")).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::Timeout), "{outcome:?}");
        assert_eq!(outcome.status, None);
        assert!(
            outcome.elapsed >= Duration::from_millis(450),
            "{:?}",
            outcome.elapsed
        );
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "{:?}",
            outcome.elapsed
        );
    }

    #[tokio::test]
    async fn stalled_body_times_out() {
        let router = Router::new().route(
            "/stall",
            any(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, io::Error>(Bytes::from_static(b"partial"))
                });
                Body::from_stream(first.chain(futures::stream::pending()))
            }),
        );
        let addr = serve(router).await;
        let sender = sender(local_policy(), Duration::from_millis(500), 4096);
        let outcome = post(&sender, &url_of(addr, "/stall")).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::Timeout), "{outcome:?}");
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.body, "partial");
        assert!(!outcome.is_success());
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "{:?}",
            outcome.elapsed
        );
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let outcome = post(&local_sender(), &url_of(addr, "/")).await;
        assert_eq!(
            kind(&outcome),
            Some(ErrorKind::ConnectionRefused),
            "{outcome:?}"
        );
        assert_eq!(outcome.status, None);
    }

    #[tokio::test]
    async fn loopback_needs_the_allowlist() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = Router::new().route(
            "/",
            any(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        );
        let addr = serve(router).await;
        let no_allow = ssrf::Policy {
            allow_http: true,
            allow: vec![],
        };
        let blocked = sender(no_allow, Duration::from_secs(5), 4096);
        for url in [
            format!("http://127.0.0.1:{}/", addr.port()),
            format!("http://localhost:{}/", addr.port()),
            format!("http://[::ffff:127.0.0.1]:{}/", addr.port()),
        ] {
            let outcome = post(&blocked, &Url::parse(&url).unwrap()).await;
            assert_eq!(
                kind(&outcome),
                Some(ErrorKind::BlockedAddress),
                "{url}: {outcome:?}"
            );
            let message = &outcome.error.as_ref().unwrap().message;
            assert!(message.contains("127.0.0.1"), "{url}: {message}");
            assert!(message.contains("loopback"), "{url}: {message}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        let allowed = local_sender();
        for url in [
            format!("http://127.0.0.1:{}/", addr.port()),
            format!("http://localhost:{}/", addr.port()),
        ] {
            let outcome = post(&allowed, &Url::parse(&url).unwrap()).await;
            assert!(outcome.is_success(), "{url}: {outcome:?}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn internal_ip_literals_are_blocked_before_connecting() {
        let sender = sender(
            ssrf::Policy {
                allow_http: true,
                allow: vec![],
            },
            Duration::from_secs(5),
            4096,
        );
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
            "https://10.0.0.1/",
            "https://192.168.1.1/",
        ] {
            let outcome = post(&sender, &Url::parse(url).unwrap()).await;
            assert_eq!(
                kind(&outcome),
                Some(ErrorKind::BlockedAddress),
                "{url}: {outcome:?}"
            );
            assert!(outcome.elapsed < Duration::from_millis(100), "{url}");
        }
    }

    #[tokio::test]
    async fn scheme_rules() {
        let strict = sender(ssrf::Policy::default(), Duration::from_secs(5), 4096);
        let outcome = post(&strict, &Url::parse("http://example.com/").unwrap()).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::InvalidUrl), "{outcome:?}");
        let outcome = post(&local_sender(), &Url::parse("ftp://example.com/").unwrap()).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::InvalidUrl), "{outcome:?}");
        let outcome = post(&strict, &Url::parse("file:///etc/passwd").unwrap()).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::InvalidUrl), "{outcome:?}");
    }

    #[tokio::test]
    async fn unresolvable_name_is_dns() {
        let sender = sender(local_policy(), Duration::from_secs(10), 4096);
        let url = Url::parse("http://nonexistent.invalid/").unwrap();
        let outcome = post(&sender, &url).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::Dns), "{outcome:?}");
        assert_eq!(outcome.status, None);
    }

    #[tokio::test]
    async fn https_to_a_plain_http_receiver_is_tls() {
        let addr = serve(Router::new().route("/", any(|| async { "plain" }))).await;
        let url = Url::parse(&format!("https://127.0.0.1:{}/", addr.port())).unwrap();
        let outcome = post(&local_sender(), &url).await;
        assert_eq!(kind(&outcome), Some(ErrorKind::Tls), "{outcome:?}");
    }

    #[test]
    fn error_kind_names() {
        let all = [
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::ConnectionRefused, "connection_refused"),
            (ErrorKind::Dns, "dns"),
            (ErrorKind::Tls, "tls"),
            (ErrorKind::BlockedAddress, "blocked_address"),
            (ErrorKind::InvalidUrl, "invalid_url"),
            (ErrorKind::Connection, "connection"),
            (ErrorKind::Other, "other"),
        ];
        for (kind, name) in all {
            assert_eq!(kind.as_str(), name);
        }
    }
}
