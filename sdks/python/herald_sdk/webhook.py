"""Verifying the webhooks Herald sends, for receivers: the Keygen signature scheme
(``Keygen-Signature``, Ed25519 with the tenant's public key, over the request target, host,
``Date`` and ``Digest``) and Standard Webhooks (``webhook-signature``, ``v1`` HMAC-SHA256
with the endpoint's ``whsec_`` secret). Both reject a request signed more than five
minutes away from now, so a captured request cannot be replayed later.

A verified request is parsed into a :class:`WebhookEvent` whatever the body format
(Keygen's ``webhook-events`` document with its payload as a JSON string, or Standard
Webhooks' ``{type, timestamp, data}``), with the event's JSON:API payload decoded.

Errors never quote a secret nor a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import catalog

#: How far a signature's time may be from now, both ways, in seconds (what every Standard
#: Webhooks library and Keygen's guidance use).
DEFAULT_TOLERANCE = 5 * 60

Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]


class Scheme(str, Enum):
    """Which signature scheme verified a request."""

    KEYGEN = "keygen"
    STANDARD_WEBHOOKS = "standard-webhooks"


class WebhookVerificationError(Exception):
    """Why a webhook was rejected (or a verifier could not be built).

    :attr:`kind` is one of ``invalid_key``, ``no_signature``, ``missing_header``,
    ``malformed``, ``unsupported_algorithm``, ``wrong_key_id``, ``digest_mismatch``,
    ``bad_signature``, ``outside_tolerance``, ``body``; :attr:`header` names the header
    concerned, when one is.
    """

    def __init__(self, kind: str, message: str, header: Optional[str] = None) -> None:
        self.kind = kind
        self.header = header
        super().__init__(message)


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook."""

    #: The schemes whose signatures were checked and matched.
    verified_by: Tuple[Scheme, ...]
    #: The dotted event type (``license.created``, or ``endpoint.ping`` for a ping).
    event_type: str
    #: Stays the same across every attempt, retry and replay of this event to this
    #: endpoint: dedupe on it.
    idempotency_token: str
    #: The delivery (``dlv_…``), in the Keygen format.
    delivery_id: Optional[str]
    #: The tenant (account), in the Keygen format.
    tenant_id: Optional[str]
    #: When the event happened (ISO 8601), in the Standard Webhooks format.
    timestamp: Optional[str]
    #: The event's JSON:API document, decoded: ``{"data": …, "meta": …}``.
    payload: Any

    @property
    def info(self) -> Optional[catalog.EventTypeInfo]:
        """The catalog's facts about the event type (``None`` for ``endpoint.ping``, or a
        type newer than this SDK)."""
        return catalog.by_name(self.event_type)

    @property
    def data(self) -> Any:
        """The payload's ``data``: the resource object (or list of them)."""
        return self.payload.get("data") if isinstance(self.payload, dict) else None


def _lower_headers(headers: Headers) -> Dict[str, str]:
    items = headers.items() if hasattr(headers, "items") else headers
    out: Dict[str, str] = {}
    for name, value in items:  # type: ignore[misc]
        out.setdefault(str(name).lower(), str(value))
    return out


def _public_key(key: str) -> Ed25519PublicKey:
    key = key.strip()
    if key.startswith("-----BEGIN PUBLIC KEY-----"):
        try:
            loaded = serialization.load_pem_public_key(key.encode())
        except ValueError:
            raise WebhookVerificationError(
                "invalid_key", "public key: unreadable PEM block"
            ) from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise WebhookVerificationError(
                "invalid_key", "public key: not an Ed25519 PUBLIC KEY"
            )
        return loaded
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise WebhookVerificationError(
            "invalid_key", "public key: neither hex nor a PEM PUBLIC KEY block"
        ) from None
    if len(raw) != 32:
        raise WebhookVerificationError(
            "invalid_key", "public key: an Ed25519 key has 32 bytes"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def _secret(secret: str) -> bytes:
    encoded = secret.strip()
    if encoded.startswith("whsec_"):
        encoded = encoded[len("whsec_") :]
    try:
        # The decode error would name a byte of the secret: replaced by a fixed message.
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError(
            "invalid_key", "secret: not `whsec_` followed by base64"
        ) from None
    if not key:
        raise WebhookVerificationError("invalid_key", "secret: empty")
    return key


def host_without_port(host: str) -> str:
    """``example.com:8443`` → ``example.com``, ``[::1]:80`` → ``[::1]``, lowercased: the host
    as the sender's URL parser gives it (Keygen signs the host without its port)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        bare = host if end < 0 else host[: end + 1]
    else:
        name, sep, port = host.rpartition(":")
        bare = name if sep and ":" not in name and port.isdigit() else host
    return bare.lower()


_PAIR = re.compile(r'^\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*$')


def _signature_params(value: str) -> Dict[str, str]:
    params: Dict[str, str] = {}
    for pair in value.split(","):
        m = _PAIR.match(pair)
        if not m:
            raise WebhookVerificationError(
                "malformed",
                'malformed `keygen-signature` header: expected key="value" pairs',
                "keygen-signature",
            )
        params[m.group(1).lower()] = m.group(2)
    for required in ("keyid", "algorithm", "signature", "headers"):
        if required not in params:
            raise WebhookVerificationError(
                "malformed",
                f"malformed `keygen-signature` header: no `{required}`",
                "keygen-signature",
            )
    return params


class WebhookVerifier:
    """Checks webhook signatures with a tenant's public key and/or an endpoint's secrets.

    Every configured scheme whose header is present must verify, and at least one must be
    present; a header for a scheme the verifier has no key for is ignored.

    :param keygen_public_key: the tenant's Ed25519 public key, hex (as ``Tenant.public_key``
        shows it) or a PEM ``PUBLIC KEY`` block.
    :param keygen_key_id: requires ``Keygen-Signature``'s ``keyid`` to be this tenant id.
    :param secrets: endpoint secrets (``whsec_…``); during a rotation give both, a
        signature by either is accepted.
    :param tolerance: how far a signature's time may be from now, in seconds.
    """

    def __init__(
        self,
        *,
        keygen_public_key: Optional[str] = None,
        keygen_key_id: Optional[str] = None,
        secrets: Sequence[str] = (),
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        if isinstance(secrets, str):
            secrets = (secrets,)
        self._keygen_key = _public_key(keygen_public_key) if keygen_public_key else None
        self._keygen_key_id = keygen_key_id or None
        self._secrets: List[bytes] = [_secret(s) for s in secrets]
        self.tolerance = tolerance

    def __repr__(self) -> str:
        return (
            f"WebhookVerifier(keygen={self._keygen_key is not None}, "
            f"keygen_key_id={self._keygen_key_id!r}, secrets={len(self._secrets)}, "
            f"tolerance={self.tolerance!r})"
        )

    @classmethod
    def from_signing_material(
        cls, material: Any, tolerance: float = DEFAULT_TOLERANCE
    ) -> "WebhookVerifier":
        """Everything an endpoint's ``signing_material`` gives: its secret (and the previous
        one during a rotation), the tenant's public key and key id."""
        return cls(
            keygen_public_key=material.keygen_public_key or None,
            keygen_key_id=material.keygen_key_id or None,
            secrets=[s for s in (material.secret, material.previous_secret) if s],
            tolerance=tolerance,
        )

    def verify(
        self,
        body: bytes,
        headers: Headers,
        *,
        target: str,
        method: str = "POST",
        host: Optional[str] = None,
        now: Optional[float] = None,
    ) -> WebhookEvent:
        """Verifies a received request and parses its body.

        :param body: the exact body bytes (before any JSON parsing).
        :param headers: the request's headers (any case).
        :param target: the request target: path and query as received (``/hooks?x=1``).
        :param method: the HTTP method.
        :param host: the host the endpoint's URL names; default: the ``Host`` header.
        :param now: the time to check against (Unix seconds; default: now).
        """
        lowered = _lower_headers(headers)
        if host is None:
            host = lowered.get("host", "")
        at = time.time() if now is None else now
        verified_by: List[Scheme] = []
        if self._keygen_key is not None and "keygen-signature" in lowered:
            self._verify_keygen(
                self._keygen_key, body, lowered, method, target, host, at
            )
            verified_by.append(Scheme.KEYGEN)
        if self._secrets and "webhook-signature" in lowered:
            self._verify_standard(body, lowered, at)
            verified_by.append(Scheme.STANDARD_WEBHOOKS)
        if not verified_by:
            raise WebhookVerificationError(
                "no_signature",
                "no signature to check: expected `keygen-signature` (with the tenant's public key) "
                "or `webhook-signature` (with the endpoint's secret)",
            )
        return _parse_body(body, lowered, tuple(verified_by))

    def _verify_keygen(
        self,
        key: Ed25519PublicKey,
        body: bytes,
        headers: Dict[str, str],
        method: str,
        target: str,
        host: str,
        now: float,
    ) -> None:
        params = _signature_params(headers["keygen-signature"])
        if params["algorithm"].lower() != "ed25519":
            raise WebhookVerificationError(
                "unsupported_algorithm",
                f"unsupported Keygen-Signature algorithm `{params['algorithm'][:40]}` (ed25519 is supported)",
                "keygen-signature",
            )
        if self._keygen_key_id is not None and params["keyid"] != self._keygen_key_id:
            raise WebhookVerificationError(
                "wrong_key_id",
                f"Keygen-Signature keyid `{params['keyid'][:80]}` is not the expected tenant",
                "keygen-signature",
            )
        signed = [h.lower() for h in params["headers"].split()]
        # Without these the signature would not cover the body or the time.
        if not {"(request-target)", "date", "digest"} <= set(signed):
            raise WebhookVerificationError(
                "malformed",
                "malformed `keygen-signature` header: `headers` must include (request-target), date and digest",
                "keygen-signature",
            )
        digest = _header(headers, "digest")
        expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
        matches = False
        for part in digest.split(","):
            alg, sep, value = part.strip().partition("=")
            if (
                sep
                and alg.lower() == "sha-256"
                and hmac.compare_digest(value, expected)
            ):
                matches = True
        if not matches:
            raise WebhookVerificationError(
                "digest_mismatch",
                "the body does not match the `digest` header",
                "digest",
            )
        date = _header(headers, "date")
        try:
            sent = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            raise WebhookVerificationError(
                "malformed", "malformed `date` header: not an HTTP date", "date"
            ) from None
        self._check_age("date", sent, now)

        lines = []
        for name in signed:
            if name == "(request-target)":
                value = f"{method.lower()} {target}"
            elif name == "host":
                value = host_without_port(host)
            elif name in headers:
                value = headers[name]
            else:
                raise WebhookVerificationError(
                    "malformed",
                    "malformed `keygen-signature` header: a signed header is missing from the request",
                    "keygen-signature",
                )
            lines.append(f"{name}: {value}")
        try:
            signature = base64.b64decode(params["signature"], validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != 64:
            raise WebhookVerificationError(
                "malformed",
                "malformed `keygen-signature` header: `signature` is not a base64 Ed25519 signature",
                "keygen-signature",
            )
        try:
            key.verify(signature, "\n".join(lines).encode())
        except InvalidSignature:
            raise WebhookVerificationError(
                "bad_signature",
                "Keygen-Signature signature does not match",
                "keygen-signature",
            ) from None

    def _verify_standard(
        self, body: bytes, headers: Dict[str, str], now: float
    ) -> None:
        msg_id = _header(headers, "webhook-id")
        timestamp = _header(headers, "webhook-timestamp")
        signatures = _header(headers, "webhook-signature")
        if not re.fullmatch(r"-?[0-9]{1,30}", timestamp.strip()):
            raise WebhookVerificationError(
                "malformed",
                "malformed `webhook-timestamp` header: not an integer number of seconds",
                "webhook-timestamp",
            )
        self._check_age("webhook-timestamp", int(timestamp.strip()), now)
        candidates = []
        for sig in signatures.split():
            version, sep, encoded = sig.partition(",")
            if version == "v1" and sep:
                try:
                    candidates.append(base64.b64decode(encoded, validate=True))
                except (binascii.Error, ValueError):
                    continue
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
        for secret in self._secrets:
            expected = hmac.new(secret, signed, hashlib.sha256).digest()
            if any(hmac.compare_digest(expected, c) for c in candidates):
                return
        raise WebhookVerificationError(
            "bad_signature",
            "webhook-signature signature does not match",
            "webhook-signature",
        )

    def _check_age(self, header: str, sent: float, now: float) -> None:
        distance = abs(now - sent)
        if distance > self.tolerance:
            raise WebhookVerificationError(
                "outside_tolerance",
                f"`{header}` is {int(min(distance, 2**63))} s away from now (tolerance {int(self.tolerance)} s)",
                header,
            )


def _header(headers: Dict[str, str], name: str) -> str:
    if name not in headers:
        raise WebhookVerificationError(
            "missing_header", f"missing `{name}` header", name
        )
    return headers[name]


def _parse_body(
    body: bytes, headers: Dict[str, str], verified_by: Tuple[Scheme, ...]
) -> WebhookEvent:
    def fail(message: str) -> WebhookVerificationError:
        return WebhookVerificationError("body", f"body: {message}")

    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise fail(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise fail("not a JSON object")

    def text(value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise fail(f"`{what}` is not a string")
        return value

    data = doc.get("data")
    if isinstance(data, dict) and data.get("type") == "webhook-events":
        # Keygen: the payload is a JSON document inside a string.
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            raise fail("no `data.attributes`")
        payload_text = text(attributes.get("payload"), "data.attributes.payload")
        try:
            payload = json.loads(payload_text)
        except ValueError as e:
            raise fail(f"`data.attributes.payload` is not JSON: {e}") from None
        meta_raw = data.get("meta")
        meta: Dict[str, Any] = meta_raw if isinstance(meta_raw, dict) else {}
        account = ((data.get("relationships") or {}).get("account") or {}).get(
            "data"
        ) or {}
        return WebhookEvent(
            verified_by=verified_by,
            event_type=text(attributes.get("event"), "data.attributes.event"),
            idempotency_token=text(
                meta.get("idempotencyToken"), "data.meta.idempotencyToken"
            ),
            delivery_id=data.get("id") if isinstance(data.get("id"), str) else None,
            tenant_id=account.get("id") if isinstance(account.get("id"), str) else None,
            timestamp=None,
            payload=payload,
        )
    # Standard Webhooks: `webhook-id` is the idempotency token.
    if "data" not in doc:
        raise fail("no `data`")
    timestamp = doc.get("timestamp")
    return WebhookEvent(
        verified_by=verified_by,
        event_type=text(doc.get("type"), "type"),
        idempotency_token=headers.get("webhook-id", ""),
        delivery_id=None,
        tenant_id=None,
        timestamp=timestamp if isinstance(timestamp, str) else None,
        payload=data,
    )


def verify_webhook(
    body: bytes,
    headers: Headers,
    *,
    target: str,
    method: str = "POST",
    host: Optional[str] = None,
    keygen_public_key: Optional[str] = None,
    keygen_key_id: Optional[str] = None,
    secrets: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> WebhookEvent:
    """Verifies a received webhook request and returns the parsed event, in one call (the
    free-function form of :meth:`WebhookVerifier.verify`; build a verifier once instead
    when verifying many).

    >>> event = verify_webhook(body, request.headers, target=request.full_path,
    ...                        keygen_public_key=TENANT_PUBLIC_KEY)   # doctest: +SKIP
    """
    verifier = WebhookVerifier(
        keygen_public_key=keygen_public_key,
        keygen_key_id=keygen_key_id,
        secrets=secrets,
        tolerance=tolerance,
    )
    return verifier.verify(
        body, headers, target=target, method=method, host=host, now=now
    )
