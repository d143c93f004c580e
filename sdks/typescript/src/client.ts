/**
 * The connection to Herald and what every call shares: the API key sent as
 * `authorization: Bearer …` metadata, the deadline, and the retry of idempotent calls on
 * `UNAVAILABLE` (a restarting server, a dropped connection) with jittered backoff. The key
 * and the retries are connect interceptors, so every stub call goes through them.
 *
 * A client is cheap to derive (`withTimeout`, `withTenant`): the derived clients share the
 * one HTTP/2 connection.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  createContextKey,
  createContextValues,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { HeraldError } from "./errors.js";
import { AdminService } from "./gen/herald/v1/admin_pb.js";
import { DeliveryService } from "./gen/herald/v1/deliveries_pb.js";
import { EndpointService } from "./gen/herald/v1/endpoints_pb.js";
import {
  EventService,
  type Event,
  type GetEventRequestSchema,
  type ListEventsRequestSchema,
  type ListEventsResponse,
  type ListEventTypesRequestSchema,
  type ListEventTypesResponse,
  type PublishResponse,
} from "./gen/herald/v1/events_pb.js";
import { Admin, Deliveries, Endpoints } from "./management.js";
import { publish, publishBatch, type NewEvent } from "./publish.js";
import { subscribe, type Subscription, type Tail } from "./subscribe.js";

/**
 * The deadline of a call when none is chosen: long enough for a 1,000-event batch on a
 * busy server, short enough that a hung connection surfaces.
 */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** How idempotent calls are retried on `UNAVAILABLE`, and how a tail waits to reconnect. */
export interface RetryPolicy {
  /** Attempts of one call, the first included (1 = no retry). */
  readonly maxAttempts: number;
  /** The pause before the first retry; it doubles at each retry, with jitter. */
  readonly initialBackoffMs: number;
  /** The longest pause. */
  readonly maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2_000,
};

/** Never retry. */
export const NO_RETRY: RetryPolicy = { ...DEFAULT_RETRY, maxAttempts: 1 };

/**
 * The pause before retry number `retry` (1 for the first): exponential, capped, and drawn
 * from its upper half so that clients cut off together do not come back together.
 */
export function backoffMs(policy: RetryPolicy, retry: number): number {
  const exp = Math.min(
    policy.initialBackoffMs * 2 ** Math.min(Math.max(retry - 1, 0), 20),
    policy.maxBackoffMs,
  );
  return exp / 2 + Math.random() * (exp / 2);
}

/** TLS settings beyond the system's roots. */
export interface TlsOptions {
  /** CA certificate(s), PEM, to trust instead of the system's roots. */
  readonly ca?: string | Buffer | Array<string | Buffer>;
  /** A client certificate (PEM) and its key, for mutual TLS. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  /** The name to check the server's certificate against, when not the address's host. */
  readonly servername?: string;
}

export interface ClientOptions {
  /**
   * The tenant filled into requests that leave `tenantId` empty: needed with an admin key,
   * implied by a tenant's own key.
   */
  readonly tenantId?: string;
  /**
   * The deadline of each call in milliseconds, retries included (default
   * `DEFAULT_TIMEOUT_MS`; `null` waits as long as it takes). A tail's deadline covers
   * opening it, not how long it stays open.
   */
  readonly timeoutMs?: number | null;
  /** How idempotent calls are retried on `UNAVAILABLE` (default `DEFAULT_RETRY`). */
  readonly retry?: Partial<RetryPolicy>;
  /**
   * TLS: `true` for the system's roots (as an `https://` address implies), or settings. A
   * bare `host:port` address then means `https://host:port`.
   */
  readonly tls?: boolean | TlsOptions;
}

/** Marks a call as safe to repeat. */
const IDEMPOTENT = createContextKey(false, { description: "herald.idempotent" });
/** The call's deadline, as `Date.now()` milliseconds (0: none). */
const DEADLINE = createContextKey(0, { description: "herald.deadline" });

/** Sends the key on every call, unary and streaming. */
function authInterceptor(authorization: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", authorization);
    return next(req);
  };
}

/**
 * Repeats a unary call marked idempotent while Herald is `UNAVAILABLE`, within the call's
 * deadline. Anything else (a publish without idempotency key, which may have been stored
 * even though its answer was lost) is attempted once.
 */
function retryInterceptor(policy: RetryPolicy): Interceptor {
  return (next) => async (req) => {
    if (req.stream || !req.contextValues.get(IDEMPOTENT)) {
      return next(req);
    }
    const deadline = req.contextValues.get(DEADLINE);
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (error) {
        const code = ConnectError.from(error).code;
        if (code !== Code.Unavailable || attempt >= policy.maxAttempts) {
          throw error;
        }
        const pause = backoffMs(policy, attempt);
        if (deadline > 0 && Date.now() + pause >= deadline) {
          throw error;
        }
        await sleep(pause, req.signal);
        if (deadline > 0) {
          // The server should give up when the client does, not when the first attempt would have.
          req.header.set("grpc-timeout", `${Math.max(1, Math.ceil(deadline - Date.now()))}m`);
        }
      }
    }
  };
}

/** Waits `ms`, or rejects with the signal's reason (the call's deadline or cancellation). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(ConnectError.from(signal.reason));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(ConnectError.from(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `address` as a URL: `http://` unless TLS was asked for, checked. */
function baseUrl(address: string, tls: boolean): string {
  const trimmed = address.trim();
  if (trimmed === "") {
    throw HeraldError.invalid("address", "is empty (e.g. http://127.0.0.1:50051)");
  }
  const url = trimmed.includes("://") ? trimmed : `${tls ? "https" : "http"}://${trimmed}`;
  const https = url.startsWith("https://");
  if (!https && !url.startsWith("http://")) {
    throw HeraldError.invalid("address", "must start with http:// or https://");
  }
  if (tls && !https) {
    throw HeraldError.invalid("address", "TLS settings need an https:// address");
  }
  try {
    new URL(url);
  } catch {
    throw HeraldError.invalid("address", `is not a URL: ${url}`);
  }
  return url;
}

/** A tail's own HTTP/2 connection (see `Subscription`). */
export interface TailConnection {
  readonly events: Client<typeof EventService>;
  /** Drops the connection: the next call opens a new one. */
  reset(): void;
  /** Drops the connection for good. */
  close(): void;
  /** Whether `close` was called (by the tail, or by `HeraldClient.close`). */
  readonly closed: boolean;
}

/** What the clients derived from one another share. */
export interface Shared {
  readonly sessions: Http2SessionManager;
  /** A connection of its own for a tail, closed with the client. */
  readonly openTail: () => TailConnection;
  readonly tails: Set<TailConnection>;
  readonly events: Client<typeof EventService>;
  readonly endpoints: Client<typeof EndpointService>;
  readonly deliveries: Client<typeof DeliveryService>;
  readonly admin: Client<typeof AdminService>;
  readonly retry: RetryPolicy;
}

/**
 * A connection to Herald acting with one API key.
 *
 * Publishing and tailing are methods of the client itself (`publish`, `publishBatch`,
 * `subscribe`); management goes through `endpoints`, `deliveries` and `admin`.
 *
 * ```ts
 * const client = new HeraldClient("http://127.0.0.1:50051", process.env.HERALD_KEY!);
 * await client.publish({ type: catalog.LICENSE_CREATED, payload: { data: { ... } } });
 * client.close();
 * ```
 */
export class HeraldClient {
  /** The deadline of each call in milliseconds (`null`: none). */
  readonly timeoutMs: number | null;
  /** The tenant filled into requests that leave theirs empty. */
  readonly tenantId: string | undefined;
  /** Webhook endpoint management (a `manager` or `admin` key). */
  readonly endpoints: Endpoints;
  /** The delivery log and its actions (a `manager` or `admin` key). */
  readonly deliveries: Deliveries;
  /** Tenants and API keys (an `admin` key; a tenant key may read its own tenant). */
  readonly admin: Admin;
  readonly #shared: Shared;

  /**
   * A client of Herald at `address` (`http://host:port`, `https://host`, or `host:port`)
   * acting with `apiKey`. It connects at the first call, and reconnects whenever needed.
   */
  constructor(address: string, apiKey: string, options: ClientOptions = {}, /** @internal */ shared?: Shared) {
    this.#shared = shared ?? connect(address, apiKey, options);
    this.timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs;
    this.tenantId = options.tenantId || undefined;
    if (this.timeoutMs !== null && !(this.timeoutMs > 0)) {
      throw HeraldError.invalid("timeoutMs", "must be a positive number of milliseconds, or null");
    }
    this.endpoints = new Endpoints(this, this.#shared.endpoints);
    this.deliveries = new Deliveries(this, this.#shared.deliveries);
    this.admin = new Admin(this, this.#shared.admin);
  }

  /** This client with another deadline per call (the connection is shared). */
  withTimeout(timeoutMs: number | null): HeraldClient {
    return new HeraldClient("", "", { timeoutMs, tenantId: this.tenantId }, this.#shared);
  }

  /** This client acting on another tenant by default (for admin keys). */
  withTenant(tenantId: string): HeraldClient {
    return new HeraldClient("", "", { timeoutMs: this.timeoutMs, tenantId }, this.#shared);
  }

  /** The retry policy of idempotent calls (and of a tail's reconnections). */
  get retryPolicy(): RetryPolicy {
    return this.#shared.retry;
  }

  /**
   * Closes the connections: calls in flight fail, tails end (their iteration finishes);
   * later calls reconnect.
   */
  close(): void {
    this.#shared.sessions.abort();
    for (const tail of this.#shared.tails) {
      tail.close();
    }
  }

  /**
   * Stores one event and queues its webhooks. Retried on `UNAVAILABLE` only when it
   * carries an idempotency key.
   */
  publish(event: NewEvent): Promise<PublishResponse> {
    return publish(this, this.#shared.events, event);
  }

  /**
   * Stores up to 1,000 events atomically (all or none) and returns their results in order.
   * Retried on `UNAVAILABLE` only when every event carries an idempotency key.
   */
  publishBatch(events: Iterable<NewEvent>): Promise<PublishResponse[]> {
    return publishBatch(this, this.#shared.events, events);
  }

  /**
   * Tails the tenant's events: an async iterable of events that catches up from the start
   * position, follows live events, and reconnects from the last event's cursor when the
   * connection drops (no gap, no duplicate). Heartbeats are consumed here.
   *
   * ```ts
   * for await (const event of client.subscribe({ start: "earliest", filters: ["license.*"] })) {
   *   console.log(event.typeName, event.cursor);
   * }
   * ```
   */
  subscribe(tail: Tail = {}): Subscription {
    return subscribe(this, this.#shared.openTail, tail);
  }

  /** One event by id. */
  getEvent(request: MessageInitShape<typeof GetEventRequestSchema>): Promise<Event> {
    return this.call(true, (options) =>
      this.#shared.events.getEvent({ ...request, tenantId: this.tenantFor(request.tenantId) }, options),
    );
  }

  /** A page of the tenant's events, newest first. */
  listEvents(request: MessageInitShape<typeof ListEventsRequestSchema> = {}): Promise<ListEventsResponse> {
    return this.call(true, (options) =>
      this.#shared.events.listEvents({ ...request, tenantId: this.tenantFor(request.tenantId) }, options),
    );
  }

  /** A page of the server's event catalog (the `catalog` constants are the same facts). */
  listEventTypes(
    request: MessageInitShape<typeof ListEventTypesRequestSchema> = {},
  ): Promise<ListEventTypesResponse> {
    return this.call(true, (options) => this.#shared.events.listEventTypes(request, options));
  }

  /** @internal `tenantId`, or the client's tenant when it is empty. */
  tenantFor(tenantId: string | undefined): string {
    return tenantId || this.tenantId || "";
  }

  /** @internal The options of a call starting now. */
  callOptions(idempotent: boolean, withDeadline = true): CallOptions {
    const contextValues = createContextValues();
    contextValues.set(IDEMPOTENT, idempotent);
    if (!withDeadline || this.timeoutMs === null) {
      return { contextValues };
    }
    contextValues.set(DEADLINE, Date.now() + this.timeoutMs);
    return { contextValues, timeoutMs: this.timeoutMs };
  }

  /** @internal One unary call, its failure as a `HeraldError`. */
  async call<T>(idempotent: boolean, run: (options: CallOptions) => Promise<T>): Promise<T> {
    try {
      return await run(this.callOptions(idempotent));
    } catch (error) {
      throw HeraldError.from(error);
    }
  }
}

function connect(address: string, apiKey: string, options: ClientOptions): Shared {
  const tlsOption = options.tls ?? false;
  const url = baseUrl(address, tlsOption !== false);
  // A header value cannot hold control characters; say so without quoting the key.
  if (apiKey.trim() === "" || !/^[\x21-\x7e]+$/.test(apiKey)) {
    throw HeraldError.invalid("apiKey", "must be printable ASCII without spaces (an `hrk_…` key)");
  }
  const retry: RetryPolicy = { ...DEFAULT_RETRY, ...options.retry };
  if (!(retry.maxAttempts >= 1)) {
    throw HeraldError.invalid("retry.maxAttempts", "must be at least 1");
  }
  const tls = typeof tlsOption === "object" ? tlsOption : {};
  const interceptors = [retryInterceptor(retry), authInterceptor(`Bearer ${apiKey}`)];
  const session = () =>
    // Keepalive pings notice a silently dead connection (a NAT that forgot it) within ~40 s.
    new Http2SessionManager(
      url,
      { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 },
      { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.servername },
    );
  const sessions = session();
  const transport: Transport = createGrpcTransport({ baseUrl: url, sessionManager: sessions, interceptors });
  const tails = new Set<TailConnection>();
  const openTail = (): TailConnection => {
    const tailSessions = session();
    let closed = false;
    const connection: TailConnection = {
      events: createClient(
        EventService,
        createGrpcTransport({ baseUrl: url, sessionManager: tailSessions, interceptors }),
      ),
      reset: () => tailSessions.abort(),
      close: () => {
        closed = true;
        tails.delete(connection);
        tailSessions.abort();
      },
      get closed() {
        return closed;
      },
    };
    tails.add(connection);
    return connection;
  };
  return {
    sessions,
    openTail,
    tails,
    events: createClient(EventService, transport),
    endpoints: createClient(EndpointService, transport),
    deliveries: createClient(DeliveryService, transport),
    admin: createClient(AdminService, transport),
    retry,
  };
}
