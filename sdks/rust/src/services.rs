//! The management calls, one method per RPC, taking and returning the protobuf messages
//! as they are (their fields are documented in `proto/`). Each method fills an empty
//! `tenant_id` with the client's tenant and is retried on `UNAVAILABLE` only when repeating
//! it cannot do anything twice (reads, updates, deletes; not creations, rotations, pings,
//! retries or replays).

use crate::{
    Client,
    client::MAX_MESSAGE_BYTES,
    error::Result,
    proto::{
        self, admin_service_client::AdminServiceClient,
        delivery_service_client::DeliveryServiceClient,
        endpoint_service_client::EndpointServiceClient, event_service_client::EventServiceClient,
    },
};

/// Declares handle methods: `fn name(Request) -> Response = rpc, idempotent, tenant;`
/// where `tenant` says whether an empty `tenant_id` takes the client's.
macro_rules! rpcs {
    (@tenant tenant, $self:ident, $request:ident) => {
        $self.client().fill_tenant(&mut $request.tenant_id);
    };
    (@tenant no_tenant, $self:ident, $request:ident) => {};
    ($handle:ty, $stub:ident {
        $( $(#[$doc:meta])* fn $method:ident($req:ty) -> $resp:ty = $rpc:ident, $idempotent:literal, $tenant:ident; )*
    }) => {
        impl $handle {
            $(
                $(#[$doc])*
                pub async fn $method(&self, request: $req) -> Result<$resp> {
                    #[allow(unused_mut)]
                    let mut request = request;
                    rpcs!(@tenant $tenant, self, request);
                    self.client()
                        .unary($idempotent, request, |channel, request| async move {
                            $stub::new(channel)
                                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                                .$rpc(request)
                                .await
                        })
                        .await
                }
            )*
        }
    };
}

rpcs!(Client, EventServiceClient {
    /// One event by id.
    fn get_event(proto::GetEventRequest) -> proto::Event = get_event, true, tenant;
    /// A page of the tenant's events, newest first.
    fn list_events(proto::ListEventsRequest) -> proto::ListEventsResponse = list_events, true, tenant;
    /// A page of the server's event catalog (the constants of [`crate::catalog`] are the
    /// same facts, compiled in).
    fn list_event_types(proto::ListEventTypesRequest) -> proto::ListEventTypesResponse = list_event_types, true, no_tenant;
});

/// Webhook endpoints of a tenant (a `manager` or `admin` key), from [`Client::endpoints`].
#[derive(Clone, Debug)]
pub struct Endpoints {
    client: Client,
}

impl Endpoints {
    fn client(&self) -> &Client {
        &self.client
    }
}

rpcs!(Endpoints, EndpointServiceClient {
    /// Creates an endpoint; the answer holds its `whsec_` secret, shown only here.
    fn create(proto::CreateEndpointRequest) -> proto::CreateEndpointResponse = create_endpoint, false, tenant;
    /// One endpoint.
    fn get(proto::GetEndpointRequest) -> proto::Endpoint = get_endpoint, true, tenant;
    /// A page of endpoints, oldest first.
    fn list(proto::ListEndpointsRequest) -> proto::ListEndpointsResponse = list_endpoints, true, tenant;
    /// Changes the fields set in the request.
    fn update(proto::UpdateEndpointRequest) -> proto::Endpoint = update_endpoint, true, tenant;
    /// Deletes an endpoint and drops its pending deliveries.
    fn delete(proto::DeleteEndpointRequest) -> proto::DeleteEndpointResponse = delete_endpoint, true, tenant;
    /// A new secret; the previous one keeps signing beside it for a grace period.
    fn rotate_secret(proto::RotateEndpointSecretRequest) -> proto::RotateEndpointSecretResponse = rotate_endpoint_secret, false, tenant;
    /// Sends an `endpoint.ping` webhook now and returns what the receiver answered.
    fn ping(proto::PingEndpointRequest) -> proto::PingEndpointResponse = ping_endpoint, false, tenant;
    /// What a receiver needs to verify this endpoint's webhooks (see
    /// [`crate::WebhookVerifier::from_signing_material`]).
    fn signing_material(proto::GetSigningMaterialRequest) -> proto::SigningMaterial = get_signing_material, true, tenant;
});

/// The delivery log and its actions (a `manager` or `admin` key), from [`Client::deliveries`].
#[derive(Clone, Debug)]
pub struct Deliveries {
    client: Client,
}

impl Deliveries {
    fn client(&self) -> &Client {
        &self.client
    }
}

rpcs!(Deliveries, DeliveryServiceClient {
    /// A page of deliveries, newest first.
    fn list(proto::ListDeliveriesRequest) -> proto::ListDeliveriesResponse = list_deliveries, true, tenant;
    /// One delivery.
    fn get(proto::GetDeliveryRequest) -> proto::Delivery = get_delivery, true, tenant;
    /// A page of one delivery's HTTP attempts, first attempt first.
    fn list_attempts(proto::ListAttemptsRequest) -> proto::ListAttemptsResponse = list_attempts, true, tenant;
    /// Sends a delivery again now, as a new delivery with the same idempotency token.
    fn retry(proto::RetryDeliveryRequest) -> proto::Delivery = retry_delivery, false, tenant;
    /// Re-delivers a time range of events to one endpoint.
    fn replay(proto::ReplayEventsRequest) -> proto::ReplayEventsResponse = replay_events, false, tenant;
    /// Deletes a delivery and its attempts.
    fn delete(proto::DeleteDeliveryRequest) -> proto::DeleteDeliveryResponse = delete_delivery, true, tenant;
});

/// Tenants and API keys (an `admin` key; a tenant key may read its own tenant), from
/// [`Client::admin`]. The client's tenant is not filled in here: an empty `tenant_id`
/// means an admin key (`create_api_key`) or every key (`list_api_keys`).
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
}

impl Admin {
    fn client(&self) -> &Client {
        &self.client
    }
}

rpcs!(Admin, AdminServiceClient {
    /// Creates a tenant with its Ed25519 signing key pair.
    fn create_tenant(proto::CreateTenantRequest) -> proto::Tenant = create_tenant, false, no_tenant;
    /// One tenant (with its public key).
    fn get_tenant(proto::GetTenantRequest) -> proto::Tenant = get_tenant, true, no_tenant;
    /// A page of tenants, oldest first.
    fn list_tenants(proto::ListTenantsRequest) -> proto::ListTenantsResponse = list_tenants, true, no_tenant;
    /// Deletes a tenant and everything it owns.
    fn delete_tenant(proto::DeleteTenantRequest) -> proto::DeleteTenantResponse = delete_tenant, true, no_tenant;
    /// Creates an API key; the answer holds its secret, shown only here.
    fn create_api_key(proto::CreateApiKeyRequest) -> proto::CreateApiKeyResponse = create_api_key, false, no_tenant;
    /// A page of API keys (never their secrets), oldest first.
    fn list_api_keys(proto::ListApiKeysRequest) -> proto::ListApiKeysResponse = list_api_keys, true, no_tenant;
    /// Revokes an API key; it stops working at once.
    fn revoke_api_key(proto::RevokeApiKeyRequest) -> proto::ApiKey = revoke_api_key, true, no_tenant;
});

impl Client {
    /// Webhook endpoint management.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            client: self.clone(),
        }
    }

    /// The delivery log.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries {
            client: self.clone(),
        }
    }

    /// Tenants and API keys.
    pub fn admin(&self) -> Admin {
        Admin {
            client: self.clone(),
        }
    }
}
