//! The connection to Herald and what every call shares: the API key sent as
//! `authorization: Bearer …` metadata, the deadline, and the retry of idempotent calls on
//! `UNAVAILABLE` (a restarting server, a dropped connection) with jittered backoff.
//!
//! A [`Client`] is cheap to clone (one `Arc` and a channel handle) and every clone shares
//! the connection, so handles with another deadline or tenant cost nothing.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{
    Code, Request, Response, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

use crate::error::{Error, Result};

/// The deadline of a call when none is chosen: long enough for a 1,000-event batch on a
/// busy server, short enough that a hung connection surfaces.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages may be large: a page of 1,000 events with their payloads.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How idempotent calls are retried when Herald is `UNAVAILABLE`, and how a tail waits
/// before reconnecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one call, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The pause before the first retry; it doubles at each retry, with jitter.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The pause before retry number `retry` (1 for the first): exponential, capped, and
    /// drawn from its upper half so that clients cut off together do not return together.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let full = exp.as_micros() as u64;
        Duration::from_micros(rand::random_range(full / 2..=full))
    }
}

/// Settings of a [`Client`], from [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    address: String,
    api_key: String,
    tenant_id: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    retry: RetryPolicy,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("tenant_id", &self.tenant_id)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The tenant filled into requests that leave `tenant_id` empty: needed with an admin
    /// key, implied by a tenant's own key.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The deadline of each call, retries included (default [`DEFAULT_TIMEOUT`]). A tail's
    /// deadline covers opening it, not how long it stays open.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls wait for Herald as long as it takes.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The time allowed to open a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How idempotent calls are retried on `UNAVAILABLE` (default: 4 attempts).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// TLS settings (a private CA, a client identity, a domain name). `https://` addresses
    /// use TLS with the webpki roots without this.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects now, so a wrong address or a server that is down fails here.
    pub async fn connect(self) -> Result<Client> {
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await?;
        self.finish(channel)
    }

    /// Connects at the first call (and reconnects whenever needed, as always).
    pub fn connect_lazy(self) -> Result<Client> {
        let channel = self.endpoint()?.connect_lazy();
        self.finish(channel)
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let address = self.address.trim();
        if address.is_empty() {
            return Err(Error::invalid(
                "address",
                "is empty (e.g. http://127.0.0.1:50051)",
            ));
        }
        #[cfg(feature = "tls")]
        let tls_chosen = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls_chosen = false;
        let uri = if address.contains("://") {
            address.to_string()
        } else if tls_chosen {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        let https = uri.starts_with("https://");
        if !https && !uri.starts_with("http://") {
            return Err(Error::invalid(
                "address",
                "must start with http:// or https://",
            ));
        }
        if tls_chosen && !https {
            return Err(Error::invalid(
                "address",
                "TLS settings need an https:// address",
            ));
        }
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::invalid("address", e.to_string()))?
            .connect_timeout(self.connect_timeout)
            // Notices a silently dead connection (a NAT that forgot it) within ~40 s.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if !https {
            return Ok(endpoint);
        }
        #[cfg(feature = "tls")]
        {
            let tls = self
                .tls
                .clone()
                .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_enabled_roots());
            Ok(endpoint.tls_config(tls)?)
        }
        #[cfg(not(feature = "tls"))]
        Err(Error::invalid(
            "address",
            "https:// needs herald-sdk's `tls` feature",
        ))
    }

    fn finish(self, channel: Channel) -> Result<Client> {
        let mut authorization = AsciiMetadataValue::try_from(format!("Bearer {}", self.api_key))
            // The error would quote the value: say what is wrong without the key.
            .map_err(|_| Error::invalid("api_key", "must be printable ASCII (an `hrk_…` key)"))?;
        authorization.set_sensitive(true);
        Ok(Client {
            shared: Arc::new(Shared {
                channel,
                authorization,
                retry: self.retry,
            }),
            timeout: self.timeout,
            tenant_id: self.tenant_id,
        })
    }
}

struct Shared {
    channel: Channel,
    authorization: AsciiMetadataValue,
    retry: RetryPolicy,
}

/// A connection to Herald acting with one API key.
///
/// Publishing and tailing are methods of the client itself ([`Client::publish`],
/// [`Client::subscribe`]); management goes through [`Client::endpoints`],
/// [`Client::deliveries`] and [`Client::admin`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    pub(crate) timeout: Option<Duration>,
    tenant_id: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("tenant_id", &self.tenant_id)
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Settings for a client of Herald at `address` (`http://host:port`, `https://host`,
    /// or `host:port`) acting with `api_key`.
    pub fn builder(address: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            address: address.into(),
            api_key: api_key.into(),
            tenant_id: None,
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects with the default settings.
    pub async fn connect(address: impl Into<String>, api_key: impl Into<String>) -> Result<Client> {
        Client::builder(address, api_key).connect().await
    }

    /// This client with another deadline per call (the connection is shared).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// This client acting on another tenant by default (for admin keys).
    pub fn with_tenant(&self, tenant_id: impl Into<String>) -> Client {
        Client {
            tenant_id: Some(tenant_id.into()),
            ..self.clone()
        }
    }

    /// The tenant filled into requests that leave theirs empty.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// The handle the management methods reach the client through (see `services.rs`).
    pub(crate) fn client(&self) -> &Client {
        self
    }

    pub(crate) fn fill_tenant(&self, slot: &mut String) {
        if slot.is_empty()
            && let Some(tenant) = &self.tenant_id
        {
            slot.clone_from(tenant);
        }
    }

    pub(crate) fn channel(&self) -> Channel {
        self.shared.channel.clone()
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.shared.retry
    }

    /// `message` with the key and, for a unary call, the time left as `grpc-timeout`.
    pub(crate) fn request<T>(&self, message: T, deadline: Option<Instant>) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.shared.authorization.clone());
        if let Some(deadline) = deadline {
            request.set_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
        }
        request
    }

    /// One unary call: attempts `call` until it succeeds, fails for good, or the deadline
    /// passes. Only `idempotent` calls are retried, and only on `UNAVAILABLE`: a publish
    /// without idempotency key that timed out may have been stored, so it is not repeated.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        idempotent: bool,
        message: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let attempts = if idempotent {
            self.shared.retry.max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            let request = self.request(message.clone(), deadline);
            match within(deadline, call(self.channel(), request)).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable && attempt < attempts => {
                    let pause = self.shared.retry.backoff(attempt);
                    if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                        return Err(status.into());
                    }
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// `call`, cut short with `DEADLINE_EXCEEDED` at `deadline`: the server enforces
/// `grpc-timeout` too, but a stalled connection would never deliver its answer.
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(deadline) = deadline else {
        return call.await;
    };
    let expired = || Status::deadline_exceeded("Herald did not answer before the call's deadline");
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(answer)) => Ok(answer),
        // tonic's channel enforces `grpc-timeout` itself and reports it as `CANCELLED`;
        // it is the same deadline, so callers see one code for it.
        Ok(Err(status)) if status.code() == Code::Cancelled && Instant::now() >= deadline => {
            Err(expired())
        }
        Ok(Err(status)) => Err(status),
        Err(_) => Err(expired()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(policy.backoff(30) <= policy.max_backoff);
        }
    }

    #[tokio::test]
    async fn bad_settings_are_named_and_the_key_is_not_echoed() {
        let err = Client::builder("", "k").connect_lazy().unwrap_err();
        assert!(err.to_string().starts_with("address:"), "{err}");
        let err = Client::builder("ftp://x", "k").connect_lazy().unwrap_err();
        assert!(err.to_string().starts_with("address:"), "{err}");
        let err = Client::builder("127.0.0.1:1", "hrk_secret\npart")
            .connect_lazy()
            .unwrap_err();
        assert!(err.to_string().starts_with("api_key:"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let builder = Client::builder("127.0.0.1:1", "hrk_visible");
        assert!(!format!("{builder:?}").contains("hrk_visible"));
        let client = builder.connect_lazy().unwrap();
        assert!(!format!("{client:?}").contains("hrk_visible"));
    }
}
