"""Client settings refused before anything is sent, and the backoff's bounds."""

import pytest

from herald_sdk import (
    Client,
    InvalidArgumentError,
    NewEvent,
    RetryPolicy,
    Tail,
    catalog,
)
from herald_sdk.client import _target


def test_addresses():
    assert _target("http://127.0.0.1:50051", None) == ("127.0.0.1:50051", False)
    assert _target("https://herald.example", None) == ("herald.example:443", True)
    assert _target("herald.example:50051", True) == ("herald.example:50051", True)
    assert _target("[::1]:50051", None) == ("[::1]:50051", False)
    for bad in ("", "ftp://x", "http://host/path"):
        with pytest.raises(InvalidArgumentError) as e:
            _target(bad, None)
        assert e.value.field == "address"
    with pytest.raises(InvalidArgumentError, match="https://"):
        _target("http://x:1", True)


def test_the_key_is_checked_and_never_echoed():
    with pytest.raises(InvalidArgumentError) as e:
        Client("127.0.0.1:1", "hrk_secret\npart")
    assert e.value.field == "api_key" and "secret" not in str(e.value)
    client = Client("127.0.0.1:1", "hrk_visible")
    assert "hrk_visible" not in repr(client)
    client.close()


def test_backoff_doubles_within_bounds():
    policy = RetryPolicy()
    for _ in range(100):
        assert 0.05 <= policy.backoff(1) <= 0.1
        assert 0.2 <= policy.backoff(3) <= 0.4
        assert policy.backoff(30) <= policy.max_backoff


def test_events_are_typed_by_the_catalog():
    event = NewEvent.resource(
        catalog.LICENSE_CREATED, "lic_1", {"maxMachines": 5}, idempotency_key="k"
    )
    request = event.to_request()
    assert request.type == catalog.LICENSE_CREATED.value
    assert (
        request.payload_json
        == '{"data":{"id":"lic_1","type":"licenses","attributes":{"maxMachines":5}}}'
    )
    # The attach/detach events carry a list of resources.
    listed = NewEvent.resource(
        catalog.LICENSE_ENTITLEMENTS_ATTACHED, "ent_1", {}
    ).to_request()
    assert '"data":[{' in listed.payload_json
    with pytest.raises(InvalidArgumentError) as e:
        NewEvent("license.created", {}).to_request()
    assert e.value.field == "event_type"
    with pytest.raises(InvalidArgumentError) as e:
        NewEvent(catalog.LICENSE_CREATED, {"x": object()}).to_request()
    assert e.value.field == "payload"


def test_tails_start_where_asked():
    assert Tail.live().to_request().WhichOneof("start") == "live"
    assert Tail.earliest(filters=["license.*"]).to_request().filters == ["license.*"]
    assert Tail.after("c1").to_request().after_cursor == "c1"
    with pytest.raises(InvalidArgumentError):
        Tail.after("").to_request()
