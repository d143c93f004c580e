//! The built-in webhook receiver: HTTP/1.1 on loopback, as cheap per request as possible
//! because it competes with Herald for the same cores.
//!
//! It is a small HTTP/1.1 server over tokio rather than a web framework: the request head is
//! parsed with `httparse` in the connection's one reused buffer, the body is read by its
//! `Content-Length` (what Herald and the floor's client send; anything else is answered
//! `400` and counted as unexpected), and the answers are fixed bytes. Served by axum and
//! hyper, the harness took 24 to 26 µs of CPU per delivery in the batch scenario, most of
//! it here; with this, 14 to 17 (sixteenth round of docs/BENCHMARKS.md).
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

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
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
    /// While `SystemTime::now()` is before this, healthy endpoints answer this 503.
    gate: OnceLock<(SystemTime, Vec<u8>)>,
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

    fn record(&self, index: &str, body: &[u8]) -> &'static [u8] {
        let Some(slots) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.endpoints.get(i))
            .and_then(Option::as_ref)
        else {
            self.unexpected(|| format!("a delivery to /e/{index}, which expects none"));
            return NO_CONTENT;
        };
        let Some(seq) = self.marker.find(body) else {
            self.unexpected(|| format!("a body without this run's marker at /e/{index}"));
            return NO_CONTENT;
        };
        if !slots.expects(seq) {
            self.unexpected(|| format!("event {seq} at /e/{index}, which should not get it"));
            return NO_CONTENT;
        }
        let at = self.now() + 1;
        match slots.arrivals[seq as usize].compare_exchange(0, at, Relaxed, Relaxed) {
            Ok(_) => self.delivered.fetch_add(1, Relaxed),
            Err(_) => self.duplicates.fetch_add(1, Relaxed),
        };
        NO_CONTENT
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
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("receiver cannot listen on {bind}: {e}"))?;
        let addr = listener.local_addr()?;
        tokio::spawn(accept(listener, shared.clone()));
        Ok(Receiver { addr, shared })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 503 with `Retry-After: until` (an HTTP-date) until then. `until` must be
    /// a whole second, since HTTP-dates have no fraction. Settable once.
    pub fn close_until(&self, until: SystemTime) {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: {}\r\ncontent-length: 0\r\n\r\n",
            httpdate::fmt_http_date(until)
        );
        let _ = self.shared.gate.set((until, answer.into_bytes()));
    }

    /// Releases hanging requests and stops accepting.
    pub fn stop(&self) {
        self.shared.release.cancel();
    }
}

const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// A request head longer than this is refused (Herald's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// Accepts connections until the run ends.
async fn accept(listener: TcpListener, s: Arc<Shared>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %err, "receiver cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = s.release.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, s.clone()));
    }
}

/// One request's head, as offsets into the connection's buffer.
struct Head {
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    path: std::ops::Range<usize>,
    body_len: usize,
    close: bool,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while incomplete, `Err` for a
/// request this receiver does not take (malformed, or a body without `Content-Length`).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(format!("a request head longer than {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(format!("a malformed request ({err})")),
    };
    let path = req.path.unwrap_or("/");
    let start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let mut body_len = 0;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| "a request with a bad Content-Length".to_string())?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a request with a Transfer-Encoding (only Content-Length is read)".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head {
        len,
        path: start..start + path.len(),
        body_len,
        close,
    }))
}

/// Serves one keep-alive connection, a request at a time, until the peer closes it or the
/// run ends.
async fn connection(mut stream: TcpStream, s: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(why) => {
                    s.unexpected(|| why);
                    let _ = stream.write_all(BAD_REQUEST).await;
                    return;
                }
            }
            if !read_more(&mut stream, &mut buf, &s).await {
                return;
            }
        };
        let end = head.len + head.body_len;
        buf.reserve(end.saturating_sub(buf.len()));
        while buf.len() < end {
            if !read_more(&mut stream, &mut buf, &s).await {
                return;
            }
        }
        let path = std::str::from_utf8(&buf[head.path.clone()]).unwrap_or("");
        let answer = answer(&s, path, &buf[head.len..end]).await;
        if stream.write_all(answer).await.is_err() || head.close {
            return;
        }
        buf.drain(..end);
    }
}

/// Reads what has arrived into `buf`; false once the peer closed or the run ended.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, s: &Shared) -> bool {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8 * 1024);
    }
    tokio::select! {
        read = stream.read_buf(buf) => matches!(read, Ok(n) if n > 0),
        _ = s.release.cancelled() => false,
    }
}

/// What to answer a request for `path` carrying `body`.
async fn answer<'a>(s: &'a Shared, path: &str, body: &[u8]) -> &'a [u8] {
    let path = path.split('?').next().unwrap_or(path);
    if let Some(index) = path.strip_prefix("/e/") {
        if let Some((until, answer)) = s.gate.get()
            && SystemTime::now() < *until
        {
            s.rejected.fetch_add(1, Relaxed);
            return answer;
        }
        return s.record(index, body);
    }
    if path.starts_with("/h/") {
        s.hanging.fetch_add(1, Relaxed);
        s.release.cancelled().await;
        return NO_CONTENT;
    }
    if path == "/f" {
        if s.marker.find(body).is_some() {
            s.floor.fetch_add(1, Relaxed);
        } else {
            s.unexpected(|| "a floor request without the marker".into());
        }
        return NO_CONTENT;
    }
    s.unexpected(|| format!("a request to {path}"));
    NOT_FOUND
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, String> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn reads_a_post_by_its_content_length() {
        let text = "POST /e/3 HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\n\r\nhello";
        let h = head(text).unwrap().expect("complete");
        assert_eq!(&text[h.path.clone()], "/e/3");
        assert_eq!(&text[h.len..h.len + h.body_len], "hello");
        assert!(!h.close);
        let close = head("POST /f HTTP/1.1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(close.unwrap().expect("complete").close);
        assert!(
            head("GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .expect("complete")
                .close
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_head() {
        assert!(head("POST /e/3 HTTP/1.1\r\ncontent-len").unwrap().is_none());
        assert!(head("").unwrap().is_none());
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        let chunked = "POST /e/1 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(head(chunked).is_err());
        assert!(head("POST /e/1 HTTP/1.1\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(head("NOT HTTP\r\n\r\n").is_err());
        assert!(parse_head(&[b'a'; MAX_HEAD + 1]).is_err());
    }
}
