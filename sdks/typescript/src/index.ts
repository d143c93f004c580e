/**
 * Herald's TypeScript SDK: publish events (typed by the catalog), tail them with
 * resumption, manage endpoints, deliveries, tenants and keys, and verify the webhooks
 * Herald sends.
 */

export {
  HeraldClient,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_RETRY,
  NO_RETRY,
  backoffMs,
  type ClientOptions,
  type RetryPolicy,
  type TlsOptions,
} from "./client.js";
export { HeraldError, Code, codeName } from "./errors.js";
export { resourceEvent, type NewEvent } from "./publish.js";
export { Subscription, DEFAULT_IDLE_TIMEOUT_MS, type Tail, type TailStart } from "./subscribe.js";
export { Endpoints, Deliveries, Admin } from "./management.js";
export {
  WebhookVerifier,
  WebhookVerificationError,
  verifyWebhook,
  webhookRequestFromNode,
  DEFAULT_TOLERANCE_SECONDS,
  type HeadersInput,
  type Scheme,
  type SigningMaterialLike,
  type VerifyFailure,
  type WebhookEvent,
  type WebhookRequest,
  type WebhookVerifierOptions,
} from "./webhook.js";
/** The event catalog: one constant per event type (`catalog.LICENSE_CREATED`), lookups. */
export * as catalog from "./catalog.js";
export type { EventTypeInfo, EventTypeName } from "./catalog.js";
/** The protobuf messages, enums and services. */
export * as proto from "./proto.js";
export type {
  Event,
  PublishResponse,
} from "./gen/herald/v1/events_pb.js";
export type { Endpoint, SigningMaterial } from "./gen/herald/v1/endpoints_pb.js";
export { WebhookFormat, SignatureScheme } from "./gen/herald/v1/endpoints_pb.js";
export type { Delivery, Attempt } from "./gen/herald/v1/deliveries_pb.js";
export type { Tenant, ApiKey } from "./gen/herald/v1/admin_pb.js";
export { Role } from "./gen/herald/v1/admin_pb.js";
