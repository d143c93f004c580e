"""Herald's Python SDK: publish events, tail them (``for`` or ``async for``, resuming after a
dropped connection), manage endpoints, deliveries, tenants and keys, and verify the webhooks
Herald sends.

>>> from herald_sdk import Client, NewEvent, Tail, catalog          # doctest: +SKIP
>>> client = Client("http://127.0.0.1:50051", "hrk_…")              # doctest: +SKIP
>>> client.publish(NewEvent.resource(catalog.LICENSE_CREATED, "lic_1", {"key": "K"}))  # doctest: +SKIP
"""

from . import catalog, pb
from .client import DEFAULT_TIMEOUT, Client, RetryPolicy, TlsConfig
from .errors import HeraldError, InvalidArgumentError
from .publish import NewEvent
from .subscribe import DEFAULT_IDLE_TIMEOUT, Subscription, Tail, payload_of
from .webhook import (
    DEFAULT_TOLERANCE,
    Scheme,
    WebhookEvent,
    WebhookVerificationError,
    WebhookVerifier,
    verify_webhook,
)

__all__ = [
    "Client",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "HeraldError",
    "InvalidArgumentError",
    "NewEvent",
    "RetryPolicy",
    "Scheme",
    "Subscription",
    "Tail",
    "TlsConfig",
    "WebhookEvent",
    "WebhookVerificationError",
    "WebhookVerifier",
    "catalog",
    "payload_of",
    "pb",
    "verify_webhook",
]
