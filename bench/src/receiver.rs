//! The built-in webhook receiver: HTTP/1.1 on loopback, as cheap per request as possible
//! because it competes with Herald for the same cores.
//!
//! Paths tell it what to do, so no state is looked up by endpoint id:
//! - `/e/<index>`: a healthy endpoint. Finds the event's sequence number in the body (see
//!   [`crate::payload`]), stores the arrival time in that endpoint's slot for the event with
//!   one compare-and-swap (a second arrival is a duplicate), answers 204. While a backlog
//!   gate is closed it answers `503` with `Retry-After: <the gate's HTTP-date>` instead.
//! - `/h/<index>`: a hanging endpoint: never answers until the run ends (Herald's request
//!   timeout cuts it first).
//! - `/f`: the `--floor` target: the same body search, a counter, 204.
//!
//! Anything else, a body without this run's marker, an event the endpoint should not get,
//! or an arrival at an endpoint that expects nothing, is counted as unexpected.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Instant, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, Uri, header::RETRY_AFTER},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use tokio_util::sync::CancellationToken;

use crate::{payload::Marker, scenarios::Plan};

/// Arrival times of one endpoint's events: microseconds since the run's epoch plus one,
/// 0 while not arrived.
pub struct Slots {
    accepts: Vec<bool>,
    arrivals: Box<[AtomicU64]>,
}

impl Slots {
    /// Arrival of event `seq` (µs since the epoch), if it arrived.
    pub fn arrival(&self, seq: u64) -> Option<u64> {
        match self.arrivals.get(seq as usize)?.load(Relaxed) {
            0 => None,
            t => Some(t - 1),
        }
    }

    /// Whether this endpoint should receive event `seq`.
    pub fn expects(&self, seq: u64) -> bool {
        (seq as usize) < self.arrivals.len() && self.accepts[seq as usize % self.accepts.len()]
    }
}

/// What every request handler shares.
pub struct Shared {
    marker: Marker,
    epoch: Instant,
    /// Indexed by endpoint; `None` for endpoints that should get nothing (or hang).
    pub endpoints: Vec<Option<Slots>>,
    /// First arrivals of expected deliveries.
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub unexpected: AtomicU64,
    /// 503s answered while the backlog gate was closed.
    pub rejected: AtomicU64,
    /// Requests held by hanging endpoints.
    pub hanging: AtomicU64,
    /// Requests of the `--floor` measurement.
    pub floor: AtomicU64,
    /// The first unexpected request, described, for the report.
    pub first_unexpected: Mutex<Option<String>>,
    /// While `SystemTime::now()` is before this, healthy endpoints answer 503.
    gate: OnceLock<(SystemTime, HeaderValue)>,
    release: CancellationToken,
}

impl Shared {
    /// Microseconds since the run's epoch.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn unexpected(&self, why: impl FnOnce() -> String) {
        if self.unexpected.fetch_add(1, Relaxed) == 0 {
            *self
                .first_unexpected
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(why());
        }
    }

    fn record(&self, index: &str, body: &[u8]) -> StatusCode {
        let Some(slots) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.endpoints.get(i))
            .and_then(Option::as_ref)
        else {
            self.unexpected(|| format!("a delivery to /e/{index}, which expects none"));
            return StatusCode::NO_CONTENT;
        };
        let Some(seq) = self.marker.find(body) else {
            self.unexpected(|| format!("a body without this run's marker at /e/{index}"));
            return StatusCode::NO_CONTENT;
        };
        if !slots.expects(seq) {
            self.unexpected(|| format!("event {seq} at /e/{index}, which should not get it"));
            return StatusCode::NO_CONTENT;
        }
        let at = self.now() + 1;
        match slots.arrivals[seq as usize].compare_exchange(0, at, Relaxed, Relaxed) {
            Ok(_) => self.delivered.fetch_add(1, Relaxed),
            Err(_) => self.duplicates.fetch_add(1, Relaxed),
        };
        StatusCode::NO_CONTENT
    }
}

/// A running receiver; it stops when [`Receiver::stop`] is called (hanging requests are
/// answered then).
pub struct Receiver {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl Receiver {
    /// Binds `bind` and serves the endpoints of `plan`.
    pub async fn start(
        bind: SocketAddr,
        plan: &Plan,
        marker: Marker,
        epoch: Instant,
    ) -> anyhow::Result<Receiver> {
        let endpoints = plan
            .endpoints
            .iter()
            .map(|e| {
                e.measured().then(|| Slots {
                    accepts: e.accepts.clone(),
                    arrivals: (0..plan.events).map(|_| AtomicU64::new(0)).collect(),
                })
            })
            .collect();
        let release = CancellationToken::new();
        let shared = Arc::new(Shared {
            marker,
            epoch,
            endpoints,
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            hanging: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            first_unexpected: Mutex::new(None),
            gate: OnceLock::new(),
            release: release.clone(),
        });
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("receiver cannot listen on {bind}: {e}"))?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let stop = release.clone();
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::warn!(error = %err, "receiver stopped");
            }
        });
        Ok(Receiver { addr, shared })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 503 with `Retry-After: until` (an HTTP-date) until then. `until` must be
    /// a whole second, since HTTP-dates have no fraction. Settable once.
    pub fn close_until(&self, until: SystemTime) {
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(until))
            .expect("an HTTP-date is a valid header value");
        let _ = self.shared.gate.set((until, value));
    }

    /// Releases hanging requests and stops accepting.
    pub fn stop(&self) {
        self.shared.release.cancel();
    }
}

async fn handle(State(s): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    if let Some(index) = path.strip_prefix("/e/") {
        if let Some((until, retry_after)) = s.gate.get()
            && SystemTime::now() < *until
        {
            s.rejected.fetch_add(1, Relaxed);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, retry_after.clone())],
            )
                .into_response();
        }
        return s.record(index, &body).into_response();
    }
    if path.starts_with("/h/") {
        s.hanging.fetch_add(1, Relaxed);
        s.release.cancelled().await;
        return StatusCode::NO_CONTENT.into_response();
    }
    if path == "/f" {
        if s.marker.find(&body).is_some() {
            s.floor.fetch_add(1, Relaxed);
        } else {
            s.unexpected(|| "a floor request without the marker".into());
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    s.unexpected(|| format!("a request to {path}"));
    StatusCode::NOT_FOUND.into_response()
}
