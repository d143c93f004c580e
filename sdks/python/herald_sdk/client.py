"""The connection to Herald and what every call shares: the API key sent as
``authorization: Bearer …`` metadata, the deadline, and the retry of idempotent calls on
``UNAVAILABLE`` (a restarting server, a dropped connection) with jittered backoff.

A :class:`Client` is cheap to copy with :meth:`Client.with_timeout` and
:meth:`Client.with_tenant`: the copies share the connection.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

from ._proto.herald.v1 import (
    admin_pb2_grpc,
    deliveries_pb2_grpc,
    endpoints_pb2_grpc,
    events_pb2_grpc,
)
from . import publish as _publish
from . import subscribe as _subscribe
from ._proto.herald.v1 import events_pb2
from .errors import HeraldError, InvalidArgumentError
from .services import Admin, Deliveries, Endpoints, Events

#: The deadline of a call when none is chosen (seconds): long enough for a 1,000-event batch
#: on a busy server, short enough that a hung connection surfaces.
DEFAULT_TIMEOUT = 30.0
#: Messages may be large: a page of 1,000 events with their payloads.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried when Herald is ``UNAVAILABLE``, and how a tail waits
    before reconnecting."""

    #: Attempts of one call, the first included (1 = no retry).
    max_attempts: int = 4
    #: The pause before the first retry (seconds); it doubles at each retry, with jitter.
    initial_backoff: float = 0.1
    #: The longest pause (seconds).
    max_backoff: float = 2.0

    @classmethod
    def none(cls) -> "RetryPolicy":
        """Never retry."""
        return cls(max_attempts=1)

    def backoff(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1 for the first): exponential, capped,
        and drawn from its upper half so that clients cut off together do not return
        together."""
        full = min(
            self.initial_backoff * (2 ** min(max(retry - 1, 0), 20)), self.max_backoff
        )
        return random.uniform(full / 2, full)


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings. An ``https://`` address uses TLS with the system's roots without this."""

    #: PEM roots to trust instead of the system's (a private CA).
    root_certificates: Optional[bytes] = None
    #: PEM client key and certificate chain, for mutual TLS.
    private_key: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    #: The name to check the server's certificate against, when not the address's host.
    server_name: Optional[str] = None


def _target(address: str, tls: Union[bool, TlsConfig, None]) -> Tuple[str, bool]:
    """``(host:port, secure)`` for an address such as ``http://127.0.0.1:50051``,
    ``https://herald.example`` or ``herald.example:50051``."""
    address = address.strip()
    if not address:
        raise InvalidArgumentError("address", "is empty (e.g. http://127.0.0.1:50051)")
    tls_chosen = bool(tls)
    if "://" in address:
        scheme, rest = address.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidArgumentError("address", "must start with http:// or https://")
        secure = scheme == "https"
        if tls_chosen and not secure:
            raise InvalidArgumentError(
                "address", "TLS settings need an https:// address"
            )
    else:
        rest, secure = address, tls_chosen
    host = rest.rstrip("/")
    if not host or "/" in host:
        raise InvalidArgumentError("address", "must be host:port, with no path")
    has_port = (
        host.rsplit(":", 1)[-1].isdigit() and (":" in host) and not host.endswith("]")
    )
    if not has_port:
        host = f"{host}:{443 if secure else 80}"
    return host, secure


class _Connection:
    """What every copy of a client shares: the channels, the key, the retry policy."""

    def __init__(
        self,
        address: str,
        api_key: str,
        tls: Union[bool, TlsConfig, None],
        retry: RetryPolicy,
        options: Sequence[Tuple[str, Any]],
    ) -> None:
        self.target, secure = _target(address, tls)
        if not api_key or not all(0x20 <= ord(c) <= 0x7E for c in api_key):
            # Never quote the key: say what is wrong with it.
            raise InvalidArgumentError(
                "api_key", "must be printable ASCII (an `hrk_…` key)"
            )
        self.metadata: Tuple[Tuple[str, str], ...] = (
            ("authorization", f"Bearer {api_key}"),
        )
        self.retry = retry
        self.options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Notices a silently dead connection (a NAT that forgot it) within ~40 s.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # Reconnect soon after a drop: a tail resumes as soon as Herald is back. (Not
            # grpc.min_reconnect_backoff_ms: it is also the connect timeout's floor.)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
            *options,
        ]
        self.credentials: Optional[grpc.ChannelCredentials] = None
        if secure:
            config = tls if isinstance(tls, TlsConfig) else TlsConfig()
            self.credentials = grpc.ssl_channel_credentials(
                root_certificates=config.root_certificates,
                private_key=config.private_key,
                certificate_chain=config.certificate_chain,
            )
            if config.server_name:
                self.options.append(
                    ("grpc.ssl_target_name_override", config.server_name)
                )
        self.channel = self._sync_channel()
        self.stubs: Dict[str, Any] = {
            "events": events_pb2_grpc.EventServiceStub(self.channel),
            "endpoints": endpoints_pb2_grpc.EndpointServiceStub(self.channel),
            "deliveries": deliveries_pb2_grpc.DeliveryServiceStub(self.channel),
            "admin": admin_pb2_grpc.AdminServiceStub(self.channel),
        }
        self._aio: Optional[Tuple[asyncio.AbstractEventLoop, grpc.aio.Channel, Any]] = (
            None
        )

    def _sync_channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def private_events(self, aio: bool) -> Tuple[Any, Any]:
        """A new channel of its own (``grpc.use_local_subchannel_pool``: not even the TCP
        connection is shared) and its ``EventService`` stub. A tail whose connection went
        silent reopens on one: the shared channel would put it on the same dead connection
        until keepalive gives up on it."""
        options = [*self.options, ("grpc.use_local_subchannel_pool", 1)]
        if aio:
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=options)
            else:
                channel = grpc.aio.secure_channel(
                    self.target, self.credentials, options=options
                )
        elif self.credentials is None:
            channel = grpc.insecure_channel(self.target, options=options)
        else:
            channel = grpc.secure_channel(
                self.target, self.credentials, options=options
            )
        return channel, events_pb2_grpc.EventServiceStub(channel)

    def aio_events(self) -> Any:
        """The asyncio ``EventService`` stub of the running event loop (an asyncio channel
        belongs to the loop that made it, so another loop gets its own)."""
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio[0] is not loop:
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=self.options)
            else:
                channel = grpc.aio.secure_channel(
                    self.target, self.credentials, options=self.options
                )
            self._aio = (loop, channel, events_pb2_grpc.EventServiceStub(channel))
        return self._aio[2]

    async def aclose(self) -> None:
        if self._aio is not None:
            loop, channel, _ = self._aio
            self._aio = None
            if loop is asyncio.get_running_loop():
                await channel.close()


class Client:
    """A connection to Herald acting with one API key.

    >>> client = Client("http://127.0.0.1:50051", "hrk_…")        # doctest: +SKIP
    >>> client.publish(NewEvent(catalog.LICENSE_CREATED, payload))  # doctest: +SKIP

    Publishing and tailing are methods of the client (:meth:`publish`,
    :meth:`publish_batch`, :meth:`subscribe`); management goes through
    :attr:`endpoints`, :attr:`deliveries` and :attr:`admin`.

    :param address: ``http://host:port``, ``https://host[:port]`` or ``host:port``.
    :param api_key: the ``hrk_…`` key, sent as ``authorization: Bearer <key>``.
    :param tenant_id: filled into requests that leave ``tenant_id`` empty (needed with an
        admin key; a tenant's own key implies it).
    :param timeout: the deadline of each call in seconds, retries included (``None``: wait
        as long as it takes). A tail's deadline covers opening it, not how long it is open.
    :param tls: ``True`` or a :class:`TlsConfig` to use TLS with a ``host:port`` address.
    :param retry: how idempotent calls are retried on ``UNAVAILABLE``.
    :param options: extra gRPC channel options.
    """

    def __init__(
        self,
        address: str,
        api_key: str,
        *,
        tenant_id: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        tls: Union[bool, TlsConfig, None] = None,
        retry: RetryPolicy = RetryPolicy(),
        options: Iterable[Tuple[str, Any]] = (),
    ) -> None:
        self._conn = _Connection(address, api_key, tls, retry, list(options))
        self.timeout = timeout
        self.tenant_id = tenant_id

    def __repr__(self) -> str:
        # Never the key.
        return (
            f"Client(target={self._conn.target!r}, tenant_id={self.tenant_id!r}, "
            f"timeout={self.timeout!r})"
        )

    def _copy(self, **changes: Any) -> "Client":
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    def with_timeout(self, timeout: Optional[float]) -> "Client":
        """This client with another deadline per call (the connection is shared)."""
        return self._copy(timeout=timeout)

    def with_tenant(self, tenant_id: str) -> "Client":
        """This client acting on another tenant by default (for admin keys)."""
        return self._copy(tenant_id=tenant_id)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._conn.retry

    # -- events -------------------------------------------------------------------------

    def publish(self, event: _publish.Publishable) -> events_pb2.PublishResponse:
        """Stores one event and queues its webhooks. Retried on ``UNAVAILABLE`` only when it
        carries an idempotency key."""
        return _publish.publish(self, event)

    def publish_batch(
        self, events: Iterable[_publish.Publishable]
    ) -> List[events_pb2.PublishResponse]:
        """Stores up to 1,000 events atomically (all or none) and returns their results in
        order. Retried on ``UNAVAILABLE`` only when every event carries an idempotency key."""
        return _publish.publish_batch(self, events)

    def subscribe(
        self, tail: Optional[_subscribe.Tail] = None
    ) -> _subscribe.Subscription:
        """Tails the tenant's events (default :meth:`Tail.live`): iterate the result with
        ``for`` or ``async for``. It catches up from the start position, follows live
        events, and reconnects from the last event's cursor when the connection drops.
        Heartbeats are consumed here."""
        return _subscribe.subscribe(self, tail)

    @property
    def events(self) -> Events:
        """Stored events: ``get``, ``list``, ``list_types``."""
        return Events(self)

    # -- management -----------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        """Webhook endpoint management (a ``manager`` or ``admin`` key)."""
        return Endpoints(self)

    @property
    def deliveries(self) -> Deliveries:
        """The delivery log and its actions (a ``manager`` or ``admin`` key)."""
        return Deliveries(self)

    @property
    def admin(self) -> Admin:
        """Tenants and API keys (an ``admin`` key)."""
        return Admin(self)

    def close(self) -> None:
        """Closes the connection (every copy of this client shares it)."""
        self._conn.channel.close()

    async def aclose(self) -> None:
        """Closes the asyncio connection of the running loop, then the other one."""
        await self._conn.aclose()
        self.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- shared by the call modules -------------------------------------------------------

    def _fill_tenant(self, request: Any) -> None:
        if self.tenant_id and not request.tenant_id:
            request.tenant_id = self.tenant_id

    def _unary(self, service: str, method: str, request: Any, idempotent: bool) -> Any:
        """One unary call: attempted until it succeeds, fails for good, or the deadline
        passes. Only ``idempotent`` calls are retried, and only on ``UNAVAILABLE``: a publish
        without idempotency key that timed out may have been stored, so it is not repeated."""
        rpc: Callable[..., Any] = getattr(self._conn.stubs[service], method)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        attempts = max(1, self._conn.retry.max_attempts) if idempotent else 1
        attempt = 1
        while True:
            remaining = (
                None if deadline is None else max(deadline - time.monotonic(), 0.001)
            )
            try:
                return rpc(request, metadata=self._conn.metadata, timeout=remaining)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < attempts:
                    pause = self._conn.retry.backoff(attempt)
                    if deadline is None or time.monotonic() + pause < deadline:
                        time.sleep(pause)
                        attempt += 1
                        continue
                raise HeraldError.from_rpc_error(error) from None
