//! Tails as a `Stream` of events that survives dropped connections: after each event the
//! stream remembers its cursor, and when the connection breaks (or goes silent for longer
//! than the server's heartbeats allow, or the server shuts down) it reopens the tail with
//! `after_cursor`, so the events keep coming with no gap and no duplicate.
//!
//! Only transport-like failures reconnect; a status that will not change by retrying
//! (`UNAUTHENTICATED`, `INVALID_ARGUMENT`, …) ends the stream with that error.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures::{Stream, stream};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};

use crate::{
    Client,
    client::{MAX_MESSAGE_BYTES, within},
    error::{Error, Result},
    proto::{
        Event, SubscribeRequest, SubscribeResponse, event_service_client::EventServiceClient,
        subscribe_request::Start, subscribe_response::Kind,
    },
};

/// How long a tail may stay silent before the connection is presumed dead: three of the
/// server's default 15 s heartbeats.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// What to tail and from where, for [`Client::subscribe`].
#[derive(Clone, Debug, PartialEq)]
pub struct Tail {
    request: SubscribeRequest,
    idle_timeout: Duration,
    max_reconnects: Option<u32>,
}

impl Tail {
    fn starting(start: Option<Start>) -> Tail {
        Tail {
            request: SubscribeRequest {
                start,
                ..SubscribeRequest::default()
            },
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_reconnects: None,
        }
    }

    /// Events stored from now on.
    pub fn live() -> Tail {
        Tail::starting(Some(Start::Live(true)))
    }

    /// Every retained event, then live ones.
    pub fn earliest() -> Tail {
        Tail::starting(Some(Start::Earliest(true)))
    }

    /// The events after the one with this cursor (`Event::cursor`, saved by a previous run).
    pub fn after(cursor: impl Into<String>) -> Tail {
        Tail::starting(Some(Start::AfterCursor(cursor.into())))
    }

    /// Events received at or after `at`.
    pub fn since(at: SystemTime) -> Tail {
        Tail::starting(Some(Start::Since(at.into())))
    }

    /// Only event types matching this pattern (`license.created`, `license.*`, `*`); may be
    /// given several times. None means every event.
    pub fn filter(mut self, pattern: impl Into<String>) -> Self {
        self.request.filters.push(pattern.into());
        self
    }

    /// Only events of this environment.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.request.environment = environment.into();
        self
    }

    /// The tenant (with an admin key; default: the client's).
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.request.tenant_id = tenant_id.into();
        self
    }

    /// Silence after which the connection is presumed dead and reopened (default
    /// [`DEFAULT_IDLE_TIMEOUT`]; keep it above the server's heartbeat interval).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Consecutive failed reconnections before the stream gives up with the last error
    /// (default: never give up).
    pub fn max_reconnects(mut self, max: u32) -> Self {
        self.max_reconnects = Some(max);
        self
    }
}

impl From<SubscribeRequest> for Tail {
    fn from(request: SubscribeRequest) -> Tail {
        Tail {
            request,
            ..Tail::live()
        }
    }
}

/// The events of a tail, in sequence order (see [`Client::subscribe`]).
#[must_use = "a subscription does nothing until polled"]
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Event>> + Send>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
    /// Tails the tenant's events: a `Stream` of [`Event`]s that catches up from the start
    /// position, follows live events, and reconnects from the last event's cursor when the
    /// connection drops. Heartbeats are consumed here. Before the first event, a `live`
    /// tail reopens `live` (there is no cursor yet).
    ///
    /// ```no_run
    /// # async fn run(client: herald_sdk::Client) -> herald_sdk::Result<()> {
    /// use futures::StreamExt;
    /// let mut events = client.subscribe(herald_sdk::Tail::earliest().filter("license.*"));
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} {}", event.type_name, event.cursor);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, tail: impl Into<Tail>) -> Subscription {
        let mut tail = tail.into();
        self.fill_tenant(&mut tail.request.tenant_id);
        let state = TailState {
            client: self.clone(),
            tail,
            stream: None,
            failures: 0,
            finished: false,
        };
        Subscription {
            inner: Box::pin(stream::unfold(state, TailState::next)),
        }
    }
}

struct TailState {
    client: Client,
    tail: Tail,
    stream: Option<Streaming<SubscribeResponse>>,
    /// Consecutive failures since the last message.
    failures: u32,
    finished: bool,
}

impl TailState {
    async fn next(mut self) -> Option<(Result<Event>, TailState)> {
        loop {
            if self.finished {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                if self.failures > 0 {
                    let pause = self.client.retry_policy().backoff(self.failures);
                    tokio::time::sleep(pause).await;
                }
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(status) => {
                        if let Some(error) = self.failed(status) {
                            return Some((Err(error), self));
                        }
                    }
                }
                continue;
            };
            let status = match tokio::time::timeout(self.tail.idle_timeout, stream.message()).await
            {
                Ok(Ok(Some(message))) => {
                    self.failures = 0;
                    if let Some(Kind::Event(event)) = message.kind {
                        if !event.cursor.is_empty() {
                            self.tail.request.start =
                                Some(Start::AfterCursor(event.cursor.clone()));
                        }
                        return Some((Ok(event), self));
                    }
                    continue;
                }
                Ok(Ok(None)) => Status::unavailable("the server ended the tail"),
                Ok(Err(status)) => status,
                Err(_) => Status::unavailable("the tail went silent past its idle timeout"),
            };
            self.stream = None;
            if let Some(error) = self.failed(status) {
                return Some((Err(error), self));
            }
        }
    }

    /// Opens the tail from the current position; the client's deadline bounds the opening.
    async fn open(&self) -> Result<Streaming<SubscribeResponse>, Status> {
        // No `grpc-timeout` on the request: it would end the tail, not just its opening.
        let request = self.client.request(self.tail.request.clone(), None);
        let deadline = self.client.timeout.map(|t| Instant::now() + t);
        let mut events = EventServiceClient::new(self.client.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        within(deadline, events.subscribe(request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Counts a failure; the error to end the stream with when it must not reconnect.
    fn failed(&mut self, status: Status) -> Option<Error> {
        let within_budget = self
            .tail
            .max_reconnects
            .is_none_or(|max| self.failures < max);
        if resumable(status.code()) && within_budget {
            self.failures += 1;
            None
        } else {
            self.finished = true;
            Some(status.into())
        }
    }
}

/// Codes a broken or restarting connection produces (tonic maps a reset stream to
/// `UNKNOWN`/`INTERNAL`/`CANCELLED`), as opposed to answers about the request itself.
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
    )
}
