"""Tails that survive dropped connections, as an iterator (``for``) and as an async iterator
(``async for``): after each event the subscription remembers its cursor, and when the
connection breaks (or goes silent for longer than the server's heartbeats allow, or the
server shuts down) it reopens the tail with ``after_cursor``, so the events keep coming
with no gap and no duplicate.

Only transport-like failures reconnect; a status that will not change by retrying
(``UNAUTHENTICATED``, ``INVALID_ARGUMENT``, …) ends the iteration with a
:class:`~herald_sdk.errors.HeraldError`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, Sequence

import grpc
import grpc.aio
from google.protobuf import json_format

from ._proto.herald.v1 import events_pb2
from .errors import HeraldError, InvalidArgumentError

if TYPE_CHECKING:
    from .client import Client

#: How long a tail may stay silent before the connection is presumed dead (seconds): three
#: of the server's default 15 s heartbeats.
DEFAULT_IDLE_TIMEOUT = 45.0

# Codes a broken or restarting connection produces, as opposed to answers about the request.
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


@dataclass
class Tail:
    """What to tail and from where. Build one with :meth:`live`, :meth:`earliest`,
    :meth:`after` or :meth:`since`."""

    #: ``live``, ``earliest``, ``after_cursor`` or ``since``.
    start: str = "live"
    cursor: Optional[str] = None
    since_time: Optional[datetime] = None
    #: Event type patterns (``license.created``, ``license.*``, ``*``); none means all.
    filters: Sequence[str] = ()
    #: Only events of this environment.
    environment: Optional[str] = None
    #: The tenant (with an admin key; default: the client's).
    tenant_id: Optional[str] = None
    #: Silence (seconds) after which the connection is presumed dead and reopened; keep it
    #: above the server's heartbeat interval.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Consecutive failed reconnections before giving up with the last error (None: never).
    max_reconnects: Optional[int] = None

    @classmethod
    def live(cls, **options: Any) -> "Tail":
        """Events stored from now on."""
        return cls(start="live", **options)

    @classmethod
    def earliest(cls, **options: Any) -> "Tail":
        """Every retained event, then live ones."""
        return cls(start="earliest", **options)

    @classmethod
    def after(cls, cursor: str, **options: Any) -> "Tail":
        """The events after the one with this cursor (``Event.cursor``, saved earlier)."""
        return cls(start="after_cursor", cursor=cursor, **options)

    @classmethod
    def since(cls, at: datetime, **options: Any) -> "Tail":
        """Events received at or after ``at`` (a time-zone-aware datetime)."""
        return cls(start="since", since_time=at, **options)

    def to_request(self) -> events_pb2.SubscribeRequest:
        """The protobuf request."""
        request = events_pb2.SubscribeRequest(
            filters=list(self.filters),
            environment=self.environment or "",
            tenant_id=self.tenant_id or "",
        )
        if self.start == "live":
            request.live = True
        elif self.start == "earliest":
            request.earliest = True
        elif self.start == "after_cursor":
            if not self.cursor:
                raise InvalidArgumentError("cursor", "is empty")
            request.after_cursor = self.cursor
        elif self.start == "since":
            if self.since_time is None or self.since_time.tzinfo is None:
                raise InvalidArgumentError("since", "needs a time-zone-aware datetime")
            request.since.FromDatetime(self.since_time.astimezone(timezone.utc))
        else:
            raise InvalidArgumentError(
                "start", "must be live, earliest, after_cursor or since"
            )
        return request


def payload_of(event: events_pb2.Event) -> Any:
    """The event's JSON:API payload as Python values (from its exact JSON text when set)."""
    if event.payload_json:
        return json.loads(event.payload_json)
    return json_format.MessageToDict(event.payload)


class _Watchdog(threading.Thread):
    """Cancels a sync call that stays silent past the idle timeout while the subscription
    waits on it (time the caller spends on an event does not count): one thread per open
    connection, woken only when the deadline it last saw may have passed."""

    def __init__(self, call: Any, idle_timeout: float) -> None:
        super().__init__(name="herald-tail-watchdog", daemon=True)
        self._call = call
        self._idle = idle_timeout
        self._since: Optional[float] = None  # when the current wait began
        self._stop = threading.Event()
        self.fired = False

    def waiting(self, yes: bool) -> None:
        self._since = time.monotonic() if yes else None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while True:
            since = self._since
            wait = (
                self._idle if since is None else since + self._idle - time.monotonic()
            )
            if wait <= 0:
                self.fired = True
                self._call.cancel()
                return
            if self._stop.wait(wait):
                return


class Subscription:
    """The events of a tail, in sequence order (see :meth:`Client.subscribe`). Iterate it
    with ``for`` or ``async for``; :attr:`cursor` is the last event's cursor, to save and
    resume from later with :meth:`Tail.after`."""

    def __init__(self, client: "Client", tail: Tail) -> None:
        self._client = client
        self._request = tail.to_request()
        client._fill_tenant(self._request)
        self._idle = tail.idle_timeout
        self._max_reconnects = tail.max_reconnects
        self._failures = 0  # consecutive, since the last message
        self._finished = False
        self._call: Any = None
        self._watchdog: Optional[_Watchdog] = None
        self._acall: Any = None
        # After an idle timeout: the tail's own channel, and whether it is an asyncio one.
        self._private: Any = None
        self._private_aio = False

    @property
    def cursor(self) -> Optional[str]:
        """The cursor of the last event received (``None`` before the first)."""
        if self._request.WhichOneof("start") == "after_cursor":
            return self._request.after_cursor
        return None

    def _received(
        self, message: events_pb2.SubscribeResponse
    ) -> Optional[events_pb2.Event]:
        self._failures = 0
        if message.WhichOneof("kind") != "event":
            return None  # a heartbeat
        event = message.event
        if event.cursor:
            self._request.after_cursor = event.cursor
        return event

    def _failed(self, code: grpc.StatusCode, details: str) -> None:
        """Counts a failure; raises when the tail must not reconnect."""
        within_budget = (
            self._max_reconnects is None or self._failures < self._max_reconnects
        )
        if code in _RESUMABLE and within_budget:
            self._failures += 1
            return
        self._finished = True
        raise HeraldError(code, details)

    # -- sync -----------------------------------------------------------------------------

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> events_pb2.Event:
        while True:
            if self._finished:
                raise StopIteration
            if self._call is None:
                if self._failures:
                    time.sleep(self._client.retry_policy.backoff(self._failures))
                stub = (
                    self._private[1]
                    if self._private
                    else self._client._conn.stubs["events"]
                )
                # No deadline on the call: it would end the tail, not just its opening.
                self._call = stub.Subscribe(
                    self._request, metadata=self._client._conn.metadata
                )
                self._watchdog = _Watchdog(self._call, self._idle)
                self._watchdog.start()
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.waiting(True)
            try:
                message = next(self._call)
            except StopIteration:
                code, details = grpc.StatusCode.UNAVAILABLE, "the server ended the tail"
            except grpc.RpcError as error:
                if watchdog is not None and watchdog.fired:
                    code, details = (
                        grpc.StatusCode.UNAVAILABLE,
                        "the tail went silent past its idle timeout",
                    )
                    self._replace_channel()
                else:
                    code, details = error.code(), error.details() or ""
            else:
                if watchdog is not None:
                    watchdog.waiting(False)
                event = self._received(message)
                if event is not None:
                    return event
                continue
            self._drop_sync()
            self._failed(code, details)

    def _replace_channel(self) -> None:
        """Moves the tail to a channel of its own (see ``_Connection.private_events``)."""
        old, old_aio = self._private, self._private_aio
        self._private, self._private_aio = (
            self._client._conn.private_events(False),
            False,
        )
        if old is not None and not old_aio:
            old[0].close()

    async def _replace_channel_async(self) -> None:
        old, old_aio = self._private, self._private_aio
        self._private = self._client._conn.private_events(True)
        self._private_aio = True
        if old is not None:
            if old_aio:
                await old[0].close()
            else:
                old[0].close()

    def _drop_sync(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def close(self) -> None:
        """Ends the tail (and its connection's call); iteration stops."""
        self._finished = True
        self._drop_sync()
        if self._acall is not None:
            self._acall.cancel()
            self._acall = None
        if self._private is not None and not self._private_aio:
            self._private[0].close()
            self._private = None

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- asyncio --------------------------------------------------------------------------

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> events_pb2.Event:
        while True:
            if self._finished:
                raise StopAsyncIteration
            if self._acall is None:
                if self._failures:
                    await asyncio.sleep(
                        self._client.retry_policy.backoff(self._failures)
                    )
                if self._private and self._private_aio:
                    stub = self._private[1]
                else:
                    stub = self._client._conn.aio_events()
                self._acall = stub.Subscribe(
                    self._request, metadata=self._client._conn.metadata
                )
            try:
                message = await asyncio.wait_for(self._acall.read(), self._idle)
            except asyncio.TimeoutError:
                code, details = (
                    grpc.StatusCode.UNAVAILABLE,
                    "the tail went silent past its idle timeout",
                )
                self._acall.cancel()
                self._acall = None
                await self._replace_channel_async()
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or ""
            else:
                if message is grpc.aio.EOF:
                    code, details = (
                        grpc.StatusCode.UNAVAILABLE,
                        "the server ended the tail",
                    )
                else:
                    event = self._received(message)
                    if event is not None:
                        return event
                    continue
            if self._acall is not None:
                self._acall.cancel()
                self._acall = None
            self._failed(code, details)

    async def aclose(self) -> None:
        """Ends the tail; ``async for`` stops."""
        self.close()
        if self._private is not None:
            await self._private[0].close()
            self._private = None

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def subscribe(client: "Client", tail: Optional[Tail] = None) -> Subscription:
    return Subscription(client, tail if tail is not None else Tail.live())
