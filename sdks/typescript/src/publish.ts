/**
 * Publishing, typed by the catalog: an event names its type by a `catalog` constant or by
 * its dotted name (a union of every name, so a misspelt type does not compile), and its
 * payload is any JSON value, sent as JSON text so numbers keep their exact form.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";

import { byName, type EventTypeInfo, type EventTypeName } from "./catalog.js";
import type { HeraldClient } from "./client.js";
import { HeraldError } from "./errors.js";
import type { EventType } from "./gen/herald/v1/catalog_pb.js";
import type { EventService, PublishRequestSchema, PublishResponse } from "./gen/herald/v1/events_pb.js";

/** An event to publish. */
export interface NewEvent {
  /** The event type: a `catalog` constant (`catalog.LICENSE_CREATED`) or its dotted name. */
  readonly type: EventTypeInfo | EventTypeName;
  /**
   * The JSON:API document `{ data: …, meta: … }` whose `data` has the catalog's resource
   * type, as a value (serialised with `JSON.stringify`) or as JSON text (sent as is).
   */
  readonly payload: unknown;
  /** Only endpoints and tails of this environment receive the event. */
  readonly environment?: string;
  /**
   * A repeat publish with the same key within 24 hours returns the original event; it also
   * makes the publish safe to retry, so the client retries it on `UNAVAILABLE`.
   */
  readonly idempotencyKey?: string;
  /** When the event happened (default: when Herald receives it). */
  readonly occurredAt?: Date;
  /** The tenant (with an admin key; default: the client's). */
  readonly tenantId?: string;
}

/**
 * An event about one resource: the payload is `{ data: { id, type, attributes } }` with the
 * `type` the catalog names for `type` (and `data` a one-element list for the list-shaped
 * `*.attached` / `*.detached` events).
 */
export function resourceEvent(
  type: EventTypeInfo | EventTypeName,
  id: string,
  attributes: Record<string, unknown> = {},
  options: Omit<NewEvent, "type" | "payload"> = {},
): NewEvent {
  const info = infoOf(type);
  const object = { id, type: info.resourceType, attributes };
  return { ...options, type: info, payload: { data: info.shape === "list" ? [object] : object } };
}

function infoOf(type: EventTypeInfo | EventTypeName): EventTypeInfo {
  if (typeof type !== "string") {
    return type;
  }
  const info = byName(type);
  if (info === undefined) {
    // Only reachable from untyped JavaScript: the union type admits catalog names only.
    throw HeraldError.invalid("type", `'${type}' is not in the event catalog`);
  }
  return info;
}

type PublishInit = MessageInitShape<typeof PublishRequestSchema>;

/** The request for `event` (the `index`-th of a batch), checked before anything is sent. */
function toRequest(client: HeraldClient, event: NewEvent, index?: number): PublishInit {
  const where = index === undefined ? "" : `events[${index}].`;
  if (event === null || typeof event !== "object") {
    throw HeraldError.invalid(`${where}event`, "must be an object");
  }
  let info: EventTypeInfo;
  try {
    info = infoOf(event.type);
  } catch (error) {
    throw HeraldError.invalid(`${where}type`, (error as HeraldError).detail.replace(/^type: /, ""));
  }
  let payloadJson: string | undefined;
  if (typeof event.payload === "string") {
    payloadJson = event.payload;
  } else {
    try {
      payloadJson = JSON.stringify(event.payload);
    } catch (error) {
      throw HeraldError.invalid(`${where}payload`, `cannot be serialised: ${(error as Error).message}`);
    }
  }
  if (payloadJson === undefined) {
    throw HeraldError.invalid(`${where}payload`, "is missing (a JSON:API document `{ data: … }`)");
  }
  return {
    tenantId: client.tenantFor(event.tenantId),
    type: info.value as EventType,
    payloadJson,
    environment: event.environment ?? "",
    idempotencyKey: event.idempotencyKey ?? "",
    occurredAt: event.occurredAt ? timestampFromDate(event.occurredAt) : undefined,
  };
}

export async function publish(
  client: HeraldClient,
  stub: Client<typeof EventService>,
  event: NewEvent,
): Promise<PublishResponse> {
  const request = toRequest(client, event);
  return client.call(request.idempotencyKey !== "", (options) => stub.publish(request, options));
}

export async function publishBatch(
  client: HeraldClient,
  stub: Client<typeof EventService>,
  events: Iterable<NewEvent>,
): Promise<PublishResponse[]> {
  const requests = Array.from(events, (event, i) => toRequest(client, event, i));
  const idempotent = requests.length > 0 && requests.every((r) => r.idempotencyKey !== "");
  const response = await client.call(idempotent, (options) =>
    stub.publishBatch({ events: requests }, options),
  );
  return response.results;
}
