/**
 * The management calls, one method per RPC, taking the request as a protobuf init object
 * (plain fields, camelCase; documented in `proto/`) and returning the response message.
 * Methods of `Endpoints` and `Deliveries` fill an empty `tenantId` with the client's
 * tenant. A call is retried on `UNAVAILABLE` only when repeating it cannot do anything
 * twice (reads, updates, deletes; not creations, rotations, pings, retries or replays).
 */

import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";

import type { HeraldClient } from "./client.js";
import type * as admin from "./gen/herald/v1/admin_pb.js";
import type * as deliveries from "./gen/herald/v1/deliveries_pb.js";
import type * as endpoints from "./gen/herald/v1/endpoints_pb.js";

type Init<S extends DescMessage> = MessageInitShape<S>;

/** Webhook endpoints of a tenant (a `manager` or `admin` key), from `client.endpoints`. */
export class Endpoints {
  constructor(
    private readonly client: HeraldClient,
    private readonly stub: Client<typeof endpoints.EndpointService>,
  ) {}

  /** Creates an endpoint; the answer holds its `whsec_` secret, shown only here. */
  create(request: Init<typeof endpoints.CreateEndpointRequestSchema>): Promise<endpoints.CreateEndpointResponse> {
    return this.client.call(false, (o) => this.stub.createEndpoint(this.tenant(request), o));
  }

  /** One endpoint. */
  get(request: Init<typeof endpoints.GetEndpointRequestSchema>): Promise<endpoints.Endpoint> {
    return this.client.call(true, (o) => this.stub.getEndpoint(this.tenant(request), o));
  }

  /** A page of endpoints, oldest first. */
  list(request: Init<typeof endpoints.ListEndpointsRequestSchema> = {}): Promise<endpoints.ListEndpointsResponse> {
    return this.client.call(true, (o) => this.stub.listEndpoints(this.tenant(request), o));
  }

  /** Changes the fields set in the request; the others stay as they are. */
  update(request: Init<typeof endpoints.UpdateEndpointRequestSchema>): Promise<endpoints.Endpoint> {
    return this.client.call(true, (o) => this.stub.updateEndpoint(this.tenant(request), o));
  }

  /** Deletes an endpoint and drops its pending deliveries. */
  delete(request: Init<typeof endpoints.DeleteEndpointRequestSchema>): Promise<endpoints.DeleteEndpointResponse> {
    return this.client.call(true, (o) => this.stub.deleteEndpoint(this.tenant(request), o));
  }

  /** A new secret; the previous one keeps signing beside it for a grace period. */
  rotateSecret(
    request: Init<typeof endpoints.RotateEndpointSecretRequestSchema>,
  ): Promise<endpoints.RotateEndpointSecretResponse> {
    return this.client.call(false, (o) => this.stub.rotateEndpointSecret(this.tenant(request), o));
  }

  /** Sends an `endpoint.ping` webhook now and returns what the receiver answered. */
  ping(request: Init<typeof endpoints.PingEndpointRequestSchema>): Promise<endpoints.PingEndpointResponse> {
    return this.client.call(false, (o) => this.stub.pingEndpoint(this.tenant(request), o));
  }

  /**
   * What a receiver needs to verify this endpoint's webhooks (see
   * `WebhookVerifier.fromSigningMaterial`).
   */
  signingMaterial(
    request: Init<typeof endpoints.GetSigningMaterialRequestSchema>,
  ): Promise<endpoints.SigningMaterial> {
    return this.client.call(true, (o) => this.stub.getSigningMaterial(this.tenant(request), o));
  }

  private tenant<R extends { tenantId?: string }>(request: R): R {
    return { ...request, tenantId: this.client.tenantFor(request.tenantId) };
  }
}

/** The delivery log and its actions (a `manager` or `admin` key), from `client.deliveries`. */
export class Deliveries {
  constructor(
    private readonly client: HeraldClient,
    private readonly stub: Client<typeof deliveries.DeliveryService>,
  ) {}

  /** A page of deliveries, newest first. */
  list(request: Init<typeof deliveries.ListDeliveriesRequestSchema> = {}): Promise<deliveries.ListDeliveriesResponse> {
    return this.client.call(true, (o) => this.stub.listDeliveries(this.tenant(request), o));
  }

  /** One delivery. */
  get(request: Init<typeof deliveries.GetDeliveryRequestSchema>): Promise<deliveries.Delivery> {
    return this.client.call(true, (o) => this.stub.getDelivery(this.tenant(request), o));
  }

  /** A page of one delivery's HTTP attempts, first attempt first. */
  listAttempts(request: Init<typeof deliveries.ListAttemptsRequestSchema>): Promise<deliveries.ListAttemptsResponse> {
    return this.client.call(true, (o) => this.stub.listAttempts(this.tenant(request), o));
  }

  /** Sends a delivery again now, as a new delivery with the same idempotency token. */
  retry(request: Init<typeof deliveries.RetryDeliveryRequestSchema>): Promise<deliveries.Delivery> {
    return this.client.call(false, (o) => this.stub.retryDelivery(this.tenant(request), o));
  }

  /** Re-delivers a time range of events to one endpoint. */
  replay(request: Init<typeof deliveries.ReplayEventsRequestSchema>): Promise<deliveries.ReplayEventsResponse> {
    return this.client.call(false, (o) => this.stub.replayEvents(this.tenant(request), o));
  }

  /** Deletes a delivery and its attempts. */
  delete(request: Init<typeof deliveries.DeleteDeliveryRequestSchema>): Promise<deliveries.DeleteDeliveryResponse> {
    return this.client.call(true, (o) => this.stub.deleteDelivery(this.tenant(request), o));
  }

  private tenant<R extends { tenantId?: string }>(request: R): R {
    return { ...request, tenantId: this.client.tenantFor(request.tenantId) };
  }
}

/**
 * Tenants and API keys (an `admin` key; a tenant key may read its own tenant), from
 * `client.admin`. The client's tenant is not filled in here: an empty `tenantId` means an
 * admin key (`createApiKey`) or every key (`listApiKeys`).
 */
export class Admin {
  constructor(
    private readonly client: HeraldClient,
    private readonly stub: Client<typeof admin.AdminService>,
  ) {}

  /** Creates a tenant with its Ed25519 signing key pair. */
  createTenant(request: Init<typeof admin.CreateTenantRequestSchema>): Promise<admin.Tenant> {
    return this.client.call(false, (o) => this.stub.createTenant(request, o));
  }

  /** One tenant (with its public key). */
  getTenant(request: Init<typeof admin.GetTenantRequestSchema>): Promise<admin.Tenant> {
    return this.client.call(true, (o) => this.stub.getTenant(request, o));
  }

  /** A page of tenants, oldest first. */
  listTenants(request: Init<typeof admin.ListTenantsRequestSchema> = {}): Promise<admin.ListTenantsResponse> {
    return this.client.call(true, (o) => this.stub.listTenants(request, o));
  }

  /** Deletes a tenant and everything it owns. */
  deleteTenant(request: Init<typeof admin.DeleteTenantRequestSchema>): Promise<admin.DeleteTenantResponse> {
    return this.client.call(true, (o) => this.stub.deleteTenant(request, o));
  }

  /** Creates an API key; the answer holds its secret, shown only here. */
  createApiKey(request: Init<typeof admin.CreateApiKeyRequestSchema>): Promise<admin.CreateApiKeyResponse> {
    return this.client.call(false, (o) => this.stub.createApiKey(request, o));
  }

  /** A page of API keys (never their secrets), oldest first. */
  listApiKeys(request: Init<typeof admin.ListApiKeysRequestSchema> = {}): Promise<admin.ListApiKeysResponse> {
    return this.client.call(true, (o) => this.stub.listApiKeys(request, o));
  }

  /** Revokes an API key; it stops working at once. */
  revokeApiKey(request: Init<typeof admin.RevokeApiKeyRequestSchema>): Promise<admin.ApiKey> {
    return this.client.call(true, (o) => this.stub.revokeApiKey(request, o));
  }
}
