//! Request ids: every gRPC call gets one, from its `x-request-id` metadata or generated (a
//! ULID) when absent. The call runs inside a `request` span carrying the id (so every log
//! line of the call names it) and the response echoes it in its `x-request-id` metadata,
//! errors included, so a caller can quote it when reporting a problem.
//!
//! A tower layer, applied once to the whole server (`server.rs`), so that every service
//! (health and reflection included) gets it without each handler asking.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

/// The metadata key, in requests and responses.
pub const HEADER: &str = "x-request-id";
/// Longest request id accepted.
pub const MAX_LEN: usize = 128;

/// The layer for `Server::builder().layer(...)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

/// The id a request carries, if it is a usable one: 1 to [`MAX_LEN`] visible ASCII
/// characters (what lands in logs stays on one line and cannot forge fields).
fn valid(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    value.to_str().ok()
}

impl<S, B, RB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(HEADER) {
            None => HeaderValue::from_str(&ulid::Ulid::new().to_string())
                .expect("a ULID is a valid header value"),
            Some(given) if valid(given).is_some() => given.clone(),
            Some(_) => {
                let id = HeaderValue::from_str(&ulid::Ulid::new().to_string())
                    .expect("a ULID is a valid header value");
                let mut refused = tonic::Status::invalid_argument(format!(
                    "{HEADER}: must be 1 to {MAX_LEN} visible ASCII characters"
                ))
                .into_http::<RB>();
                refused.headers_mut().insert(HEADER, id);
                return Box::pin(std::future::ready(Ok(refused)));
            }
        };
        // Handlers see the id the response will carry, generated or given.
        request.headers_mut().insert(HEADER, id.clone());
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or_default(),
            rpc = request.uri().path()
        );
        // The clone that was driven to readiness serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let mut response = inner.call(request).await?;
                response.headers_mut().insert(HEADER, id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ids() {
        let ok = |s: &str| valid(&HeaderValue::from_str(s).unwrap()).is_some();
        assert!(ok("3f1c9a52-7d1e-4c8e-9a3b-2f6d8e1a0b4c"));
        assert!(ok("req_01J9Z"));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok(&"x".repeat(MAX_LEN + 1)));
        assert!(ok(&"x".repeat(MAX_LEN)));
    }
}
