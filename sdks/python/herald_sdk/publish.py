"""Publishing, typed by the catalog: an event names its type by a :mod:`herald_sdk.catalog`
constant (a misspelt constant is an ``AttributeError`` at once, and type checkers see it),
and its payload is any JSON-serialisable value, sent as JSON text so numbers keep their
exact form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional, Union, cast

from ._proto.herald.v1 import events_pb2
from .catalog import EventTypeInfo
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .client import Client


@dataclass
class NewEvent:
    """An event to publish.

    :param event_type: a catalog constant, e.g. ``catalog.LICENSE_CREATED``.
    :param payload: the JSON:API document ``{"data": …, "meta": …}`` (any JSON-serialisable
        value, or JSON text as ``str``) whose ``data`` has the catalog's resource type.
    :param idempotency_key: a repeat publish with the same key within 24 hours returns the
        original event; it also makes the publish safe to retry, so the client retries it
        on ``UNAVAILABLE``.
    :param environment: only endpoints and tails of this environment receive the event.
    :param occurred_at: when the event happened (default: when Herald receives it).
    :param tenant_id: the tenant (with an admin key; default: the client's).
    """

    event_type: EventTypeInfo
    payload: Union[Mapping[str, Any], str]
    idempotency_key: Optional[str] = None
    environment: Optional[str] = None
    occurred_at: Optional[datetime] = None
    tenant_id: Optional[str] = None

    @classmethod
    def resource(
        cls,
        event_type: EventTypeInfo,
        id: str,
        attributes: Mapping[str, Any],
        **options: Any,
    ) -> "NewEvent":
        """An event about one resource: the payload is ``{"data": {"id", "type",
        "attributes"}}`` with the ``type`` the catalog names for ``event_type`` (and ``data``
        a one-element list for the ``*.attached`` / ``*.detached`` events)."""
        _check_type(event_type)
        obj = {
            "id": id,
            "type": event_type.resource_type,
            "attributes": dict(attributes),
        }
        data: Any = [obj] if event_type.shape == "list" else obj
        return cls(event_type, {"data": data}, **options)

    def to_request(self) -> events_pb2.PublishRequest:
        """The protobuf request."""
        _check_type(self.event_type)
        if isinstance(self.payload, str):
            payload_json = self.payload
        else:
            try:
                payload_json = json.dumps(
                    self.payload, separators=(",", ":"), allow_nan=False
                )
            except (TypeError, ValueError) as e:
                raise InvalidArgumentError(
                    "payload", f"cannot be serialised to JSON: {e}"
                ) from None
        request = events_pb2.PublishRequest(
            # The enum's number: the .pyi types the field by its generated enum.
            type=cast(Any, self.event_type.value),
            payload_json=payload_json,
            idempotency_key=self.idempotency_key or "",
            environment=self.environment or "",
            tenant_id=self.tenant_id or "",
        )
        if self.occurred_at is not None:
            at = self.occurred_at
            if at.tzinfo is None:
                raise InvalidArgumentError(
                    "occurred_at", "needs a time zone (e.g. timezone.utc)"
                )
            request.occurred_at.FromDatetime(at.astimezone(timezone.utc))
        return request


def _check_type(event_type: Any) -> None:
    if not isinstance(event_type, EventTypeInfo):
        raise InvalidArgumentError(
            "event_type",
            "must be a herald_sdk.catalog constant (e.g. catalog.LICENSE_CREATED)",
        )


Publishable = Union[NewEvent, events_pb2.PublishRequest]


def _request(client: "Client", event: Publishable) -> events_pb2.PublishRequest:
    if isinstance(event, NewEvent):
        request = event.to_request()
    elif isinstance(event, events_pb2.PublishRequest):
        request = events_pb2.PublishRequest()
        request.CopyFrom(event)
    else:
        raise InvalidArgumentError("event", "must be a NewEvent or a PublishRequest")
    client._fill_tenant(request)
    return request


def publish(client: "Client", event: Publishable) -> events_pb2.PublishResponse:
    request = _request(client, event)
    return client._unary(
        "events", "Publish", request, idempotent=bool(request.idempotency_key)
    )


def publish_batch(
    client: "Client", events: Iterable[Publishable]
) -> List[events_pb2.PublishResponse]:
    requests = [_request(client, e) for e in events]
    if not requests:
        raise InvalidArgumentError("events", "is empty")
    idempotent = all(r.idempotency_key for r in requests)
    response = client._unary(
        "events",
        "PublishBatch",
        events_pb2.PublishBatchRequest(events=requests),
        idempotent=idempotent,
    )
    return list(response.results)
