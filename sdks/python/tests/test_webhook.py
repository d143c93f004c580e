"""The webhook verifiers against data made here, independently of the server's code: the
Standard Webhooks specification's test vector, and Keygen requests signed as the reference
describes them. (test_live.py verifies real webhooks sent by Herald.)"""

import base64
import hashlib
import hmac
import json
from email.utils import parsedate_to_datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald_sdk import (
    Scheme,
    WebhookVerificationError,
    WebhookVerifier,
    catalog,
    verify_webhook,
)
from herald_sdk.webhook import host_without_port

# The test vector of the Standard Webhooks specification.
SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
MSG_ID = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
TIMESTAMP = 1649367553
BODY = b'{"email":"test@example.com","username":"test_user"}'
SIGNATURE = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="


def standard_headers(msg_id=MSG_ID, timestamp=TIMESTAMP, signature=SIGNATURE):
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def verify_standard(body, headers, now=TIMESTAMP, secrets=(SECRET,)):
    return WebhookVerifier(secrets=secrets).verify(
        body, headers, target="/hooks", now=now
    )


def test_standard_webhooks_test_vector():
    # The vector's body is not a Herald body: the signature passes, then parsing fails with
    # a body error (not a signature error).
    with pytest.raises(WebhookVerificationError) as e:
        verify_standard(BODY, standard_headers())
    assert e.value.kind == "body"

    # Changing any signed part breaks it.
    tampered = BODY.replace(b"test_user", b"test_user2")
    with pytest.raises(WebhookVerificationError) as e:
        verify_standard(tampered, standard_headers())
    assert e.value.kind == "bad_signature"
    with pytest.raises(WebhookVerificationError) as e:
        verify_standard(BODY, standard_headers(msg_id="msg_other"))
    assert e.value.kind == "bad_signature"

    # Five minutes each way, no more.
    for now in (TIMESTAMP + 301, TIMESTAMP - 301):
        with pytest.raises(WebhookVerificationError) as e:
            verify_standard(BODY, standard_headers(), now=now)
        assert (
            e.value.kind == "outside_tolerance"
            and e.value.header == "webhook-timestamp"
        )
    with pytest.raises(WebhookVerificationError) as e:
        verify_standard(BODY, standard_headers(), now=TIMESTAMP + 300)
    assert e.value.kind == "body"


def sign_standard(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret[len("whsec_") :])
    mac = hmac.new(
        key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_any_of_several_signatures_and_secrets_verifies():
    body = b'{"type":"license.created","timestamp":"2026-01-01T00:00:00Z","data":{"data":{"id":"1","type":"licenses"}}}'
    other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    header = " ".join(
        [
            "v1a,bm90IGFuIGVkMjU1MTkgc2ln",
            sign_standard(other, MSG_ID, TIMESTAMP, body),
            sign_standard(SECRET, MSG_ID, TIMESTAMP, body),
        ]
    )
    # Header names in any case.
    headers = {k.upper(): v for k, v in standard_headers(signature=header).items()}
    event = verify_standard(body, headers)
    assert event.event_type == "license.created"
    assert event.idempotency_token == MSG_ID
    assert event.verified_by == (Scheme.STANDARD_WEBHOOKS,)
    assert event.info is catalog.LICENSE_CREATED
    assert event.data == {"id": "1", "type": "licenses"}
    assert event.timestamp == "2026-01-01T00:00:00Z"
    # A receiver holding only the previous secret of a rotation accepts too.
    assert (
        verify_standard(body, headers, secrets=[other]).event_type == "license.created"
    )
    # A stranger does not.
    with pytest.raises(WebhookVerificationError) as e:
        verify_standard(
            body, headers, secrets=["whsec_dGhpcyBpcyBub3QgYSBrZXkgb2YgdGhlIHBhaXI="]
        )
    assert e.value.kind == "bad_signature"


def keygen_request(
    key, body, date, target="/hooks?x=1", key_id="acct-1", host="example.com"
):
    digest = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = (
        f"(request-target): post {target}\nhost: {host}\ndate: {date}\ndigest: {digest}"
    )
    signature = base64.b64encode(key.sign(signed.encode())).decode()
    return {
        "Date": date,
        "Digest": digest,
        "Keygen-Signature": (
            f'keyid="{key_id}", algorithm="ed25519", signature="{signature}", '
            'headers="(request-target) host date digest"'
        ),
        "Host": "Example.com:8443",
    }


def test_keygen_signatures():
    key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
    public = key.public_key()
    public_hex = public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ).hex()
    payload = '{"data":{"id":"lic_1","type":"licenses","attributes":{}}}'
    body = json.dumps(
        {
            "data": {
                "id": "dlv_1",
                "type": "webhook-events",
                "attributes": {
                    "endpoint": "https://example.com/hooks?x=1",
                    "payload": payload,
                    "event": "license.created",
                    "status": "DELIVERING",
                },
                "relationships": {
                    "account": {"data": {"type": "accounts", "id": "acct-1"}}
                },
                "meta": {"idempotencyToken": "tok_1"},
            }
        }
    ).encode()
    date = "Tue, 30 Jun 2026 14:51:47 GMT"
    now = parsedate_to_datetime(date).timestamp()
    headers = keygen_request(key, body, date)
    verifier = WebhookVerifier(keygen_public_key=public_hex, keygen_key_id="acct-1")

    event = verifier.verify(body, headers, target="/hooks?x=1", now=now)
    assert event.verified_by == (Scheme.KEYGEN,)
    assert event.event_type == "license.created"
    assert event.delivery_id == "dlv_1"
    assert event.tenant_id == "acct-1"
    assert event.idempotency_token == "tok_1"
    assert event.payload["data"]["id"] == "lic_1"

    # The same key as PEM, through the one-call helper.
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert (
        verify_webhook(
            body, headers, target="/hooks?x=1", keygen_public_key=pem, now=now
        ).tenant_id
        == "acct-1"
    )

    def kind(**changes):
        args = dict(body=body, headers=headers, target="/hooks?x=1", now=now)
        args.update(changes)
        v = args.pop("verifier", verifier)
        with pytest.raises(WebhookVerificationError) as e:
            v.verify(args.pop("body"), args.pop("headers"), **args)
        return e.value.kind

    assert kind(body=body + b" ") == "digest_mismatch"
    assert kind(target="/hooks") == "bad_signature"
    assert kind(host="evil.example") == "bad_signature"
    assert kind(now=now + 301) == "outside_tolerance"
    other = Ed25519PrivateKey.from_private_bytes(bytes([8] * 32)).public_key()
    other_hex = other.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ).hex()
    assert (
        kind(verifier=WebhookVerifier(keygen_public_key=other_hex)) == "bad_signature"
    )
    assert (
        kind(
            verifier=WebhookVerifier(
                keygen_public_key=public_hex, keygen_key_id="acct-2"
            )
        )
        == "wrong_key_id"
    )
    # A verifier without a Keygen key has nothing to check here.
    assert kind(verifier=WebhookVerifier(secrets=[SECRET])) == "no_signature"
    # A signature that leaves the body out is not accepted.
    unsigned_digest = dict(headers)
    unsigned_digest["Keygen-Signature"] = headers["Keygen-Signature"].replace(
        ' digest"', '"'
    )
    assert kind(headers=unsigned_digest) == "malformed"


def test_absurd_timestamps_are_refused():
    for ts in ["-9223372036854775808", "9223372036854775807", "12abc", ""]:
        with pytest.raises(WebhookVerificationError) as e:
            verify_standard(BODY, standard_headers(timestamp=ts))
        assert e.value.kind in ("outside_tolerance", "malformed"), ts


def test_bad_keys_are_refused_without_echoing_them():
    with pytest.raises(WebhookVerificationError) as e:
        WebhookVerifier(secrets=["whsec_s3cr3t!!"])
    assert "s3cr3t" not in str(e.value) and e.value.kind == "invalid_key"
    for bad in (
        dict(secrets=["whsec_"]),
        dict(keygen_public_key="abcd"),
        dict(keygen_public_key="zz"),
    ):
        with pytest.raises(WebhookVerificationError):
            WebhookVerifier(**bad)


def test_hosts_lose_their_port():
    assert host_without_port("Example.com:8443") == "example.com"
    assert host_without_port("example.com") == "example.com"
    assert host_without_port("[::1]:8080") == "[::1]"
    assert host_without_port("127.0.0.1:80") == "127.0.0.1"
