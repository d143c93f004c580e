"""The management calls, one method per RPC. Each takes the protobuf request, or its
fields as keyword arguments (``client.endpoints.create(url=…, filters=["license.*"])``;
nested messages may be dicts), and returns the protobuf answer (fields documented in
``proto/``). An empty ``tenant_id`` takes the client's, except in :class:`Admin`.

Calls are retried on ``UNAVAILABLE`` only when repeating them cannot do anything twice
(reads, updates, deletes; not creations, rotations, pings, retries or replays).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Type, TypeVar

from ._proto.herald.v1 import admin_pb2, deliveries_pb2, endpoints_pb2, events_pb2
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .client import Client

M = TypeVar("M")


def build(request_type: Type[M], request: Optional[M], fields: Any) -> M:
    """A fresh request of ``request_type`` from a request or from keyword fields (so that
    filling in the tenant never changes the caller's message)."""
    if request is not None:
        if fields:
            raise InvalidArgumentError(
                "request", "give a request or keyword fields, not both"
            )
        if not isinstance(request, request_type):
            raise InvalidArgumentError("request", f"must be a {request_type.__name__}")
        fresh = request_type()
        fresh.CopyFrom(request)  # type: ignore[attr-defined]
        return fresh
    try:
        return request_type(**fields)
    except (ValueError, TypeError) as e:
        raise InvalidArgumentError("request", str(e)) from None


class _Handle:
    _service = ""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def _call(
        self, method: str, request: Any, idempotent: bool, tenant: bool = True
    ) -> Any:
        if tenant:
            self._client._fill_tenant(request)
        return self._client._unary(self._service, method, request, idempotent)


class Events(_Handle):
    """Reading stored events (the ``Client`` exposes these directly)."""

    _service = "events"

    def get(
        self, request: Optional[events_pb2.GetEventRequest] = None, **fields: Any
    ) -> events_pb2.Event:
        """One event by id."""
        return self._call(
            "GetEvent", build(events_pb2.GetEventRequest, request, fields), True
        )

    def list(
        self, request: Optional[events_pb2.ListEventsRequest] = None, **fields: Any
    ) -> events_pb2.ListEventsResponse:
        """A page of the tenant's events, newest first."""
        return self._call(
            "ListEvents", build(events_pb2.ListEventsRequest, request, fields), True
        )

    def list_types(
        self, request: Optional[events_pb2.ListEventTypesRequest] = None, **fields: Any
    ) -> events_pb2.ListEventTypesResponse:
        """A page of the server's event catalog (:mod:`herald_sdk.catalog` holds the same
        facts, generated)."""
        return self._call(
            "ListEventTypes",
            build(events_pb2.ListEventTypesRequest, request, fields),
            True,
            tenant=False,
        )


class Endpoints(_Handle):
    """Webhook endpoints of a tenant (a ``manager`` or ``admin`` key)."""

    _service = "endpoints"

    def create(
        self,
        request: Optional[endpoints_pb2.CreateEndpointRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.CreateEndpointResponse:
        """Creates an endpoint; the answer holds its ``whsec_`` secret, shown only here."""
        return self._call(
            "CreateEndpoint",
            build(endpoints_pb2.CreateEndpointRequest, request, fields),
            False,
        )

    def get(
        self, request: Optional[endpoints_pb2.GetEndpointRequest] = None, **fields: Any
    ) -> endpoints_pb2.Endpoint:
        """One endpoint."""
        return self._call(
            "GetEndpoint",
            build(endpoints_pb2.GetEndpointRequest, request, fields),
            True,
        )

    def list(
        self,
        request: Optional[endpoints_pb2.ListEndpointsRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.ListEndpointsResponse:
        """A page of endpoints, oldest first."""
        return self._call(
            "ListEndpoints",
            build(endpoints_pb2.ListEndpointsRequest, request, fields),
            True,
        )

    def update(
        self,
        request: Optional[endpoints_pb2.UpdateEndpointRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.Endpoint:
        """Changes the fields set in the request."""
        return self._call(
            "UpdateEndpoint",
            build(endpoints_pb2.UpdateEndpointRequest, request, fields),
            True,
        )

    def delete(
        self,
        request: Optional[endpoints_pb2.DeleteEndpointRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.DeleteEndpointResponse:
        """Deletes an endpoint and drops its pending deliveries."""
        return self._call(
            "DeleteEndpoint",
            build(endpoints_pb2.DeleteEndpointRequest, request, fields),
            True,
        )

    def rotate_secret(
        self,
        request: Optional[endpoints_pb2.RotateEndpointSecretRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.RotateEndpointSecretResponse:
        """A new secret; the previous one keeps signing beside it for a grace period."""
        return self._call(
            "RotateEndpointSecret",
            build(endpoints_pb2.RotateEndpointSecretRequest, request, fields),
            False,
        )

    def ping(
        self, request: Optional[endpoints_pb2.PingEndpointRequest] = None, **fields: Any
    ) -> endpoints_pb2.PingEndpointResponse:
        """Sends an ``endpoint.ping`` webhook now and returns what the receiver answered."""
        return self._call(
            "PingEndpoint",
            build(endpoints_pb2.PingEndpointRequest, request, fields),
            False,
        )

    def signing_material(
        self,
        request: Optional[endpoints_pb2.GetSigningMaterialRequest] = None,
        **fields: Any,
    ) -> endpoints_pb2.SigningMaterial:
        """What a receiver needs to verify this endpoint's webhooks (see
        :meth:`herald_sdk.WebhookVerifier.from_signing_material`)."""
        return self._call(
            "GetSigningMaterial",
            build(endpoints_pb2.GetSigningMaterialRequest, request, fields),
            True,
        )


class Deliveries(_Handle):
    """The delivery log and its actions (a ``manager`` or ``admin`` key)."""

    _service = "deliveries"

    def list(
        self,
        request: Optional[deliveries_pb2.ListDeliveriesRequest] = None,
        **fields: Any,
    ) -> deliveries_pb2.ListDeliveriesResponse:
        """A page of deliveries, newest first."""
        return self._call(
            "ListDeliveries",
            build(deliveries_pb2.ListDeliveriesRequest, request, fields),
            True,
        )

    def get(
        self, request: Optional[deliveries_pb2.GetDeliveryRequest] = None, **fields: Any
    ) -> deliveries_pb2.Delivery:
        """One delivery."""
        return self._call(
            "GetDelivery",
            build(deliveries_pb2.GetDeliveryRequest, request, fields),
            True,
        )

    def list_attempts(
        self,
        request: Optional[deliveries_pb2.ListAttemptsRequest] = None,
        **fields: Any,
    ) -> deliveries_pb2.ListAttemptsResponse:
        """A page of one delivery's HTTP attempts, first attempt first."""
        return self._call(
            "ListAttempts",
            build(deliveries_pb2.ListAttemptsRequest, request, fields),
            True,
        )

    def retry(
        self,
        request: Optional[deliveries_pb2.RetryDeliveryRequest] = None,
        **fields: Any,
    ) -> deliveries_pb2.Delivery:
        """Sends a delivery again now, as a new delivery with the same idempotency token."""
        return self._call(
            "RetryDelivery",
            build(deliveries_pb2.RetryDeliveryRequest, request, fields),
            False,
        )

    def replay(
        self,
        request: Optional[deliveries_pb2.ReplayEventsRequest] = None,
        **fields: Any,
    ) -> deliveries_pb2.ReplayEventsResponse:
        """Re-delivers a time range of events to one endpoint."""
        return self._call(
            "ReplayEvents",
            build(deliveries_pb2.ReplayEventsRequest, request, fields),
            False,
        )

    def delete(
        self,
        request: Optional[deliveries_pb2.DeleteDeliveryRequest] = None,
        **fields: Any,
    ) -> deliveries_pb2.DeleteDeliveryResponse:
        """Deletes a delivery and its attempts."""
        return self._call(
            "DeleteDelivery",
            build(deliveries_pb2.DeleteDeliveryRequest, request, fields),
            True,
        )


class Admin(_Handle):
    """Tenants and API keys (an ``admin`` key; a tenant key may read its own tenant). The
    client's tenant is not filled in here: an empty ``tenant_id`` means an admin key
    (``create_api_key``) or every key (``list_api_keys``)."""

    _service = "admin"

    def create_tenant(
        self, request: Optional[admin_pb2.CreateTenantRequest] = None, **fields: Any
    ) -> admin_pb2.Tenant:
        """Creates a tenant with its Ed25519 signing key pair."""
        return self._call(
            "CreateTenant",
            build(admin_pb2.CreateTenantRequest, request, fields),
            False,
            tenant=False,
        )

    def get_tenant(
        self, request: Optional[admin_pb2.GetTenantRequest] = None, **fields: Any
    ) -> admin_pb2.Tenant:
        """One tenant (with its public key)."""
        return self._call(
            "GetTenant",
            build(admin_pb2.GetTenantRequest, request, fields),
            True,
            tenant=False,
        )

    def list_tenants(
        self, request: Optional[admin_pb2.ListTenantsRequest] = None, **fields: Any
    ) -> admin_pb2.ListTenantsResponse:
        """A page of tenants, oldest first."""
        return self._call(
            "ListTenants",
            build(admin_pb2.ListTenantsRequest, request, fields),
            True,
            tenant=False,
        )

    def delete_tenant(
        self, request: Optional[admin_pb2.DeleteTenantRequest] = None, **fields: Any
    ) -> admin_pb2.DeleteTenantResponse:
        """Deletes a tenant and everything it owns."""
        return self._call(
            "DeleteTenant",
            build(admin_pb2.DeleteTenantRequest, request, fields),
            True,
            tenant=False,
        )

    def create_api_key(
        self, request: Optional[admin_pb2.CreateApiKeyRequest] = None, **fields: Any
    ) -> admin_pb2.CreateApiKeyResponse:
        """Creates an API key; the answer holds its secret, shown only here."""
        return self._call(
            "CreateApiKey",
            build(admin_pb2.CreateApiKeyRequest, request, fields),
            False,
            tenant=False,
        )

    def list_api_keys(
        self, request: Optional[admin_pb2.ListApiKeysRequest] = None, **fields: Any
    ) -> admin_pb2.ListApiKeysResponse:
        """A page of API keys (never their secrets), oldest first."""
        return self._call(
            "ListApiKeys",
            build(admin_pb2.ListApiKeysRequest, request, fields),
            True,
            tenant=False,
        )

    def revoke_api_key(
        self, request: Optional[admin_pb2.RevokeApiKeyRequest] = None, **fields: Any
    ) -> admin_pb2.ApiKey:
        """Revokes an API key; it stops working at once."""
        return self._call(
            "RevokeApiKey",
            build(admin_pb2.RevokeApiKeyRequest, request, fields),
            True,
            tenant=False,
        )
