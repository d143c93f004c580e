"""The SDK against a real Herald process (see conftest.py): publishing, tails that resume
across dropped connections (sync and async), management calls, errors, retries and
deadlines, and the verification of real webhooks received over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from conftest import ADMIN_KEY, wait_until
from herald_sdk import (
    Client,
    HeraldError,
    InvalidArgumentError,
    NewEvent,
    RetryPolicy,
    Scheme,
    Tail,
    TlsConfig,
    WebhookVerificationError,
    WebhookVerifier,
    catalog,
    payload_of,
    pb,
    verify_webhook,
)


def license(i: int, **options) -> NewEvent:
    return NewEvent.resource(
        catalog.LICENSE_CREATED, f"lic_{i}", {"name": f"license lic_{i}"}, **options
    )


def test_publish_single_and_batch(tenant):
    publisher = tenant.client(tenant.publisher)
    first = publisher.publish(license(1, idempotency_key="lic-1-created"))
    assert first.event.type_name == "license.created"
    assert first.event.tenant_id == tenant.tenant_id
    assert payload_of(first.event)["data"]["id"] == "lic_1"
    assert not first.duplicate
    # The same idempotency key returns the original event.
    again = publisher.publish(license(1, idempotency_key="lic-1-created"))
    assert again.duplicate and again.event.id == first.event.id

    results = publisher.publish_batch([license(i) for i in range(2, 5)])
    assert [payload_of(r.event)["data"]["id"] for r in results] == [
        "lic_2",
        "lic_3",
        "lic_4",
    ]
    assert len({r.event.id for r in results}) == 3

    # A subscriber reads them back.
    reader = tenant.client(tenant.subscriber)
    stored = reader.events.get(id=results[1].event.id)
    assert stored.cursor and payload_of(stored)["data"]["id"] == "lic_3"
    listed = reader.events.list(filters=["license.created"])
    assert {e.id for e in listed.events} == {
        first.event.id,
        *(r.event.id for r in results),
    }


def test_bad_input_gives_a_clear_error(tenant):
    publisher = tenant.client(tenant.publisher)
    wrong_type = NewEvent(
        catalog.LICENSE_CREATED, {"data": {"id": "m1", "type": "machines"}}
    )
    with pytest.raises(HeraldError) as e:
        publisher.publish(wrong_type)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "data.type" in e.value.details, e.value.details
    # In a batch the error names the event.
    with pytest.raises(HeraldError) as e:
        publisher.publish_batch([license(1), wrong_type])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1]" in e.value.details, e.value.details

    manager = tenant.client(tenant.manager)
    with pytest.raises(HeraldError) as e:
        manager.endpoints.create(url="not a url", filters=["*"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "url" in e.value.details
    with pytest.raises(HeraldError) as e:
        manager.endpoints.get(id="ep_does_not_exist")
    assert (
        e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        and e.value.details.startswith("id:")
    )
    with pytest.raises(HeraldError) as e:
        manager.endpoints.get(id="ep_" + "0" * 26)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    # Refused before sending: a field the request does not have, a type not in the catalog.
    with pytest.raises(InvalidArgumentError):
        manager.endpoints.create(uri="http://127.0.0.1/")
    with pytest.raises(InvalidArgumentError) as e:
        publisher.publish(NewEvent("license.created", {}))
    assert e.value.field == "event_type"
    # A key of the wrong role, and no key Herald knows.
    with pytest.raises(HeraldError) as e:
        publisher.endpoints.list()
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(HeraldError) as e:
        tenant.client("hrk_not_a_key").publish(license(1))
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def published_ids(publisher, first: int, count: int):
    return [
        r.event.id
        for r in publisher.publish_batch(
            [license(i) for i in range(first, first + count)]
        )
    ]


def test_sync_tail_resumes_across_dropped_connections(tenant, proxy):
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber, proxy.url)
    sent = published_ids(publisher, 0, 10)
    received = []
    with subscriber.subscribe(
        Tail.earliest(filters=["license.*"], idle_timeout=5)
    ) as events:
        for event in events:
            received.append(event.id)
            if len(received) in (3, 12):
                proxy.drop()
                if len(received) == 3:
                    sent += published_ids(publisher, 10, 10)
            if len(received) == 20:
                break
        assert events.cursor == event.cursor
    assert received == sent  # every event once, in order
    assert proxy.accepted >= 2, "the tail never reconnected: the drop was not exercised"


@pytest.mark.asyncio
async def test_async_tail_resumes_across_dropped_connections(tenant, proxy):
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber, proxy.url)
    sent = published_ids(publisher, 0, 5)
    received = []
    events = subscriber.subscribe(Tail.earliest(idle_timeout=5))
    async for event in events:
        received.append(event.id)
        if len(received) == 2:
            proxy.drop()
            sent += await asyncio.to_thread(published_ids, publisher, 5, 5)
        if len(received) == len(sent) == 10:
            break
    await events.aclose()
    await subscriber.aclose()
    assert received == sent
    assert proxy.accepted >= 2, "the tail never reconnected: the drop was not exercised"


@pytest.mark.asyncio
async def test_async_live_tail_sees_new_events_and_resumes_from_a_saved_cursor(tenant):
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber)
    before = published_ids(publisher, 0, 2)
    events = subscriber.subscribe(Tail.live(filters=["license.created"]))
    # A live tail sees what is published once it is open: publish one event at a time until
    # it has seen three, then check they are consecutive ones, in order.
    sent = []
    stop = threading.Event()

    def publish_slowly():
        for i in range(2, 200):
            if stop.is_set():
                return
            sent.extend(published_ids(publisher, i, 1))
            time.sleep(0.1)

    publishing = asyncio.get_running_loop().run_in_executor(None, publish_slowly)
    received = []
    last_cursor = None

    async def read_three():
        nonlocal last_cursor
        async for event in events:
            received.append(event.id)
            last_cursor = event.cursor
            if len(received) == 3:
                return

    await asyncio.wait_for(read_three(), 30)
    stop.set()
    await publishing
    await events.aclose()
    first = sent.index(received[0])
    assert received == sent[first : first + 3]
    assert not set(received) & set(before)

    # A saved cursor resumes after it, in a new subscription.
    assert events.cursor == last_cursor
    expected = sent[first + 3 :] + published_ids(publisher, 300, 2)
    resumed = subscriber.subscribe(Tail.after(events.cursor, idle_timeout=5))
    after = []
    async for event in resumed:
        after.append(event.id)
        if len(after) == len(expected):
            break
    await resumed.aclose()
    assert after == expected
    await subscriber.aclose()


def test_sync_tail_abandons_a_silent_connection(tenant, proxy):
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber, proxy.url)
    sent = published_ids(publisher, 0, 2)
    received = []
    started = None
    with subscriber.subscribe(Tail.earliest(idle_timeout=2)) as events:
        for event in events:
            received.append(event.id)
            if len(received) == 2:
                proxy.freeze()
                sent += published_ids(publisher, 2, 3)
                started = time.monotonic()
            if len(received) == 5:
                break
    assert received == sent
    assert proxy.accepted >= 2
    # The idle timeout noticed, not keepalive (whose pings take 30 s and more).
    assert time.monotonic() - started < 15


@pytest.mark.asyncio
async def test_async_tail_abandons_a_silent_connection(tenant, proxy):
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber, proxy.url)
    sent = published_ids(publisher, 0, 2)
    received = []
    started = None
    async with subscriber.subscribe(Tail.earliest(idle_timeout=2)) as events:
        async for event in events:
            received.append(event.id)
            if len(received) == 2:
                proxy.freeze()
                sent += await asyncio.to_thread(published_ids, publisher, 2, 3)
                started = time.monotonic()
            if len(received) == 5:
                break
    await subscriber.aclose()
    assert received == sent
    assert proxy.accepted >= 2
    assert time.monotonic() - started < 15


def test_a_tail_ends_with_an_error_that_retrying_cannot_fix(tenant):
    # A publisher key may not tail: PERMISSION_DENIED ends the iteration, no reconnecting.
    events = tenant.client(tenant.publisher).subscribe(Tail.earliest(idle_timeout=5))
    with pytest.raises(HeraldError) as e:
        next(events)
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(StopIteration):
        next(events)


def test_idempotent_calls_are_retried_on_unavailable(tenant, proxy):
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.1, max_backoff=0.5)
    # Herald unreachable for the first two connections: an idempotent publish gets through.
    proxy.refuse(2)
    publisher = tenant.client(tenant.publisher, proxy.url, retry=retry)
    response = publisher.publish(license(1, idempotency_key="retried-1"))
    assert response.event.type_name == "license.created"
    assert proxy.accepted >= 3
    publisher.close()


def test_a_publish_without_idempotency_key_is_not_retried(tenant, proxy):
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.1, max_backoff=0.5)
    proxy.refuse(2)
    publisher = tenant.client(tenant.publisher, proxy.url, retry=retry)
    with pytest.raises(HeraldError) as e:
        publisher.publish(license(1))
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    publisher.close()


def test_a_stalled_server_hits_the_deadline(tenant, proxy):
    proxy.stall()
    client = tenant.client(tenant.manager, proxy.url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HeraldError) as e:
        client.endpoints.list()
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    client.close()


def test_endpoint_crud(tenant, receiver):
    endpoints = tenant.client(tenant.manager).endpoints
    created = endpoints.create(
        url=receiver.url("/hooks"), filters=["license.*"], description="crud"
    )
    endpoint = created.endpoint
    assert created.secret.startswith("whsec_") and endpoint.enabled
    assert endpoints.get(id=endpoint.id).description == "crud"
    assert endpoint.id in [e.id for e in endpoints.list().endpoints]

    updated = endpoints.update(
        id=endpoint.id, description="changed", filters={"filters": ["license.created"]}
    )
    assert updated.description == "changed"
    assert list(updated.filters) == ["license.created"]

    rotated = endpoints.rotate_secret(id=endpoint.id)
    assert rotated.secret != created.secret
    material = endpoints.signing_material(id=endpoint.id)
    assert (
        material.secret == rotated.secret and material.previous_secret == created.secret
    )

    pong = endpoints.ping(id=endpoint.id)
    assert pong.success, pong.error_message
    assert b"endpoint.ping" in receiver.next().body

    endpoints.delete(id=endpoint.id)
    with pytest.raises(HeraldError) as e:
        endpoints.get(id=endpoint.id)
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_verifies_the_webhooks_herald_sends(tenant, receiver):
    manager = tenant.client(tenant.manager)
    endpoints = manager.endpoints
    # Keygen's format with both signatures (the default), and a query string to sign.
    keygen = endpoints.create(
        url=receiver.url("/hooks/keygen?source=herald"), filters=["license.created"]
    ).endpoint
    standard = endpoints.create(
        url=receiver.url("/hooks/standard"),
        filters=["license.created"],
        signing={
            "format": pb.WEBHOOK_FORMAT_STANDARD,
            "schemes": [pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS],
        },
    ).endpoint

    tenant.client(tenant.publisher).publish(license(7))
    hooks = {}
    for _ in range(2):
        hook = receiver.next()
        hooks[hook.target.split("?")[0]] = hook
    keygen_hook, standard_hook = hooks["/hooks/keygen"], hooks["/hooks/standard"]
    assert keygen_hook.target == "/hooks/keygen?source=herald"

    # Keygen format: both signatures checked, the payload decoded from its JSON string.
    verifier = WebhookVerifier.from_signing_material(
        endpoints.signing_material(id=keygen.id)
    )
    event = verifier.verify(
        keygen_hook.body, keygen_hook.headers, target=keygen_hook.target
    )
    assert event.verified_by == (Scheme.KEYGEN, Scheme.STANDARD_WEBHOOKS)
    assert (
        event.event_type == "license.created" and event.info is catalog.LICENSE_CREATED
    )
    assert event.tenant_id == tenant.tenant_id
    assert event.data["id"] == "lic_7"
    delivery = manager.deliveries.list(endpoint_id=keygen.id).deliveries[0]
    assert event.delivery_id == delivery.id
    assert event.idempotency_token == delivery.idempotency_token

    # The tenant's public key alone verifies the Keygen signature.
    with tenant.herald.admin() as admin:
        public_key = admin.admin.get_tenant(id=tenant.tenant_id).public_key
    keygen_only = verify_webhook(
        keygen_hook.body,
        keygen_hook.headers,
        target=keygen_hook.target,
        keygen_public_key=public_key,
    )
    assert keygen_only.verified_by == (Scheme.KEYGEN,)

    # Changed on the way, replayed later, or checked with another endpoint's secret: refused.
    def rejected(
        verifier, body=keygen_hook.body, headers=keygen_hook.headers, **options
    ):
        with pytest.raises(WebhookVerificationError) as e:
            verifier.verify(body, headers, target=keygen_hook.target, **options)
        return e.value.kind

    tampered = keygen_hook.body.replace(b"lic_7", b"lic_8")
    assert rejected(verifier, body=tampered) == "digest_mismatch"
    keygen_key_only = WebhookVerifier(keygen_public_key=public_key)
    assert rejected(keygen_key_only, body=tampered) == "digest_mismatch"
    assert rejected(verifier, now=time.time() + 600) == "outside_tolerance"
    standard_verifier = WebhookVerifier.from_signing_material(
        endpoints.signing_material(id=standard.id)
    )
    without_keygen = [
        (k, v) for k, v in keygen_hook.headers if k.lower() != "keygen-signature"
    ]
    assert rejected(standard_verifier, headers=without_keygen) == "bad_signature"

    # Standard Webhooks format: `data` is the payload, `webhook-id` the idempotency token.
    event = standard_verifier.verify(
        standard_hook.body, standard_hook.headers, target=standard_hook.target
    )
    assert event.verified_by == (Scheme.STANDARD_WEBHOOKS,)
    assert event.event_type == "license.created"
    assert event.data["attributes"]["name"] == "license lic_7"
    assert event.timestamp
    assert event.idempotency_token == standard_hook.header("webhook-id")
    # A tampered Standard Webhooks body is refused too.
    with pytest.raises(WebhookVerificationError) as e:
        standard_verifier.verify(
            standard_hook.body.replace(b"lic_7", b"lic_8"),
            standard_hook.headers,
            target=standard_hook.target,
        )
    assert e.value.kind == "bad_signature"


def test_tenants_and_keys_through_an_admin_client(herald, receiver):
    admin = herald.admin().admin
    tenant = admin.create_tenant(
        id="py-admin-" + str(int(time.time() * 1000)), name="Admin test"
    )
    assert len(bytes.fromhex(tenant.public_key)) == 32
    assert tenant.id in [t.id for t in admin.list_tenants(page_size=1000).tenants]

    # An admin client with a default tenant fills it into every tenant-scoped request.
    acting = herald.admin().with_tenant(tenant.id)
    published = acting.publish(license(1))
    assert published.event.tenant_id == tenant.id
    endpoint = acting.endpoints.create(
        url=receiver.url("/hooks"), filters=["license.*"]
    ).endpoint
    assert endpoint.tenant_id == tenant.id

    created = admin.create_api_key(
        tenant_id=tenant.id, role=pb.ROLE_SUBSCRIBER, name="reader"
    )
    assert (
        created.secret.startswith("hrk_") and created.api_key.role == pb.ROLE_SUBSCRIBER
    )
    reader = Client(herald.url, created.secret)
    assert [e.id for e in reader.events.list().events] == [published.event.id]
    assert created.api_key.id in [
        k.id for k in admin.list_api_keys(tenant_id=tenant.id).api_keys
    ]

    revoked = admin.revoke_api_key(id=created.api_key.id)
    assert revoked.HasField("revoked_at")
    with pytest.raises(HeraldError) as e:
        reader.events.list()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED

    admin.delete_tenant(id=tenant.id)
    with pytest.raises(HeraldError) as e:
        admin.get_tenant(id=tenant.id)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert ADMIN_KEY not in repr(acting)


def test_the_delivery_log(tenant, receiver):
    manager = tenant.client(tenant.manager)
    endpoint = manager.endpoints.create(
        url=receiver.url("/log"), filters=["license.created"]
    ).endpoint
    event = tenant.client(tenant.publisher).publish(license(1)).event
    receiver.next()

    def succeeded():
        found = manager.deliveries.list(endpoint_id=endpoint.id).deliveries
        return (
            found if found and found[0].status == pb.DELIVERY_STATUS_DELIVERED else None
        )

    delivery = wait_until(succeeded)[0]
    assert delivery.event_id == event.id
    assert manager.deliveries.get(id=delivery.id).endpoint_id == endpoint.id
    attempts = manager.deliveries.list_attempts(delivery_id=delivery.id).attempts
    assert len(attempts) == 1 and attempts[0].succeeded

    # A retry is a new delivery with the same idempotency token: the receiver sees it again.
    again = manager.deliveries.retry(id=delivery.id)
    assert (
        again.id != delivery.id
        and again.idempotency_token == delivery.idempotency_token
    )
    assert again.id.encode() in receiver.next().body


def test_time_spent_on_an_event_is_not_silence(tenant, proxy):
    # The caller takes longer than the idle timeout over each event: the tail must not
    # take that for a dead connection (no reconnection: one connection through the proxy).
    publisher = tenant.client(tenant.publisher)
    subscriber = tenant.client(tenant.subscriber, proxy.url)
    sent = published_ids(publisher, 0, 3)
    received = []
    with subscriber.subscribe(Tail.earliest(idle_timeout=2.5)) as events:
        for event in events:
            received.append(event.id)
            if len(received) == 3:
                break
            time.sleep(3.5)
    assert received == sent
    assert proxy.accepted == 1


def test_tls(tenant, tls_proxy):
    address = f"https://{tls_proxy.proxy.addr}"
    trusted = tenant.client(
        tenant.publisher,
        address,
        tls=TlsConfig(
            root_certificates=tls_proxy.certificate_pem, server_name="herald.test"
        ),
    )
    assert trusted.publish(license(1)).event.type_name == "license.created"
    # The same with a host:port address and TLS chosen by the setting.
    bare = tenant.client(
        tenant.publisher,
        tls_proxy.proxy.addr,
        tls=TlsConfig(
            root_certificates=tls_proxy.certificate_pem, server_name="herald.test"
        ),
    )
    assert bare.publish(license(2)).event.type_name == "license.created"
    # The system's roots do not know this certificate: no call goes through.
    untrusted = tenant.client(tenant.publisher, address, retry=RetryPolicy.none())
    with pytest.raises(HeraldError) as e:
        untrusted.publish(license(3))
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    for client in (trusted, bare, untrusted):
        client.close()
