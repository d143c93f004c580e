/**
 * Tails: `client.subscribe(tail)` is an async iterable of events that catches up from its
 * start position, follows live events, and when the connection drops reopens the tail
 * after the last event it yielded, so nothing is lost or repeated. The semantics are the
 * Rust SDK's `Subscription`: heartbeats are consumed here and keep the idle timer at bay; a
 * connection silent past `idleTimeoutMs` is presumed dead and reopened; an answer that
 * retrying cannot change (`INVALID_ARGUMENT`, `UNAUTHENTICATED`...) ends the iteration
 * with a `HeraldError`.
 */

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import { backoffMs, sleep, type HeraldClient, type TailConnection } from "./client.js";
import { HeraldError } from "./errors.js";
import type { Event, SubscribeRequestSchema } from "./gen/herald/v1/events_pb.js";

/**
 * Silence after which a tail's connection is presumed dead and reopened; keep it above the
 * server's heartbeat interval (15 s by default).
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 45_000;

/** Where a tail starts. */
export type TailStart =
  /** Events published from now on (the default). */
  | "live"
  /** Every stored event, oldest first, then live ones. */
  | "earliest"
  /** The events after this cursor (an `Event.cursor`). */
  | { readonly afterCursor: string }
  /** The events received at or after this time. */
  | { readonly since: Date };

/** What to tail and how. */
export interface Tail {
  readonly start?: TailStart;
  /** Event type filters: exact names, `*`, or prefixes such as `license.*` (default: all). */
  readonly filters?: readonly string[];
  /** Only events of this environment. */
  readonly environment?: string;
  /** The tenant (with an admin key; default: the client's). */
  readonly tenantId?: string;
  /** See `DEFAULT_IDLE_TIMEOUT_MS`. */
  readonly idleTimeoutMs?: number;
  /**
   * Consecutive failed reconnections before the iteration ends with the last error
   * (default: never give up).
   */
  readonly maxReconnects?: number;
}

type SubscribeInit = MessageInitShape<typeof SubscribeRequestSchema>;

/**
 * Codes a broken or restarting connection produces, as opposed to answers about the
 * request itself.
 */
function resumable(code: Code): boolean {
  return (
    code === Code.Unavailable ||
    code === Code.Unknown ||
    code === Code.Internal ||
    code === Code.Canceled ||
    code === Code.Aborted ||
    code === Code.DeadlineExceeded
  );
}

/**
 * The events of a tail, in sequence order. Iterate it once.
 *
 * A tail has an HTTP/2 connection of its own, opened when the iteration starts and closed
 * when it ends: after a failure it reconnects on a new connection, never on one that may be
 * the dead path the failure came from, and the client's other calls are not disturbed.
 */
export class Subscription implements AsyncIterable<Event> {
  readonly #client: HeraldClient;
  readonly #openTail: () => TailConnection;
  readonly #tail: Tail;
  readonly #closing = new AbortController();
  #cursor: string | undefined;
  #iterated = false;

  /** @internal */
  constructor(client: HeraldClient, openTail: () => TailConnection, tail: Tail) {
    this.#client = client;
    this.#openTail = openTail;
    this.#tail = tail;
    const start = tail.start;
    if (start !== undefined && typeof start === "object" && "afterCursor" in start) {
      this.#cursor = start.afterCursor;
    }
  }

  /** The cursor of the last event yielded: where a reconnection (or a later tail) resumes. */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  /** Ends the tail: the iteration finishes without error. */
  close(): void {
    this.#closing.abort();
  }

  [Symbol.asyncIterator](): AsyncIterator<Event> {
    if (this.#iterated) {
      throw new Error("a Subscription can be iterated once; subscribe again from its cursor");
    }
    this.#iterated = true;
    return this.#events();
  }

  /** The request that (re)opens the tail where it stands. */
  #request(): SubscribeInit {
    const tail = this.#tail;
    let start: SubscribeInit["start"];
    if (this.#cursor !== undefined) {
      start = { case: "afterCursor", value: this.#cursor };
    } else if (tail.start === "earliest") {
      start = { case: "earliest", value: true };
    } else if (tail.start === undefined || tail.start === "live") {
      // Before the first event there is no cursor: a live tail reopens live.
      start = { case: "live", value: true };
    } else if ("since" in tail.start) {
      start = { case: "since", value: timestampFromDate(tail.start.since) };
    }
    return {
      tenantId: this.#client.tenantFor(tail.tenantId),
      filters: [...(tail.filters ?? [])],
      environment: tail.environment ?? "",
      start,
    };
  }

  async *#events(): AsyncGenerator<Event, void, undefined> {
    const tailConnection = this.#openTail();
    try {
      yield* this.#follow(tailConnection);
    } finally {
      tailConnection.close();
    }
  }

  async *#follow(tailConnection: TailConnection): AsyncGenerator<Event, void, undefined> {
    const idleTimeoutMs = this.#tail.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const maxReconnects = this.#tail.maxReconnects ?? Infinity;
    const openTimeoutMs = this.#client.timeoutMs;
    // Consecutive failures since the last message.
    let failures = 0;
    for (;;) {
      if (this.#closing.signal.aborted || tailConnection.closed) {
        return;
      }
      if (failures > 0) {
        try {
          await sleep(backoffMs(this.#client.retryPolicy, failures), this.#closing.signal);
        } catch {
          return;
        }
      }
      const connection = new AbortController();
      const closeConnection = () => connection.abort();
      this.#closing.signal.addEventListener("abort", closeConnection, { once: true });
      let idleTimer: NodeJS.Timeout | undefined;
      const armIdle = () => {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(
          () => connection.abort(new ConnectError("the tail went silent past its idle timeout", Code.Unavailable)),
          idleTimeoutMs,
        );
      };
      // The client's deadline bounds the opening only: as a call deadline (`grpc-timeout`)
      // it would end the tail itself.
      const openTimer =
        openTimeoutMs === null
          ? undefined
          : setTimeout(
              () =>
                connection.abort(
                  new ConnectError("Herald did not open the tail before the call's deadline", Code.DeadlineExceeded),
                ),
              openTimeoutMs,
            );
      let status: ConnectError;
      try {
        armIdle();
        const messages = tailConnection.events.subscribe(this.#request(), {
          ...this.#client.callOptions(false, false),
          signal: connection.signal,
          onHeader: () => clearTimeout(openTimer),
        });
        for await (const message of messages) {
          clearTimeout(openTimer);
          failures = 0;
          if (message.kind.case === "event") {
            const event = message.kind.value;
            if (event.cursor !== "") {
              this.#cursor = event.cursor;
            }
            // A slow consumer is not a silent server.
            clearTimeout(idleTimer);
            yield event;
            // Closed while the consumer held the event: what is buffered stays unread.
            if (this.#closing.signal.aborted || tailConnection.closed) {
              return;
            }
          }
          armIdle();
        }
        status = new ConnectError("the server ended the tail", Code.Unavailable);
      } catch (error) {
        status = ConnectError.from(error);
      } finally {
        clearTimeout(idleTimer);
        clearTimeout(openTimer);
        this.#closing.signal.removeEventListener("abort", closeConnection);
        connection.abort();
      }
      if (this.#closing.signal.aborted || tailConnection.closed) {
        return;
      }
      if (!resumable(status.code) || failures >= maxReconnects) {
        throw HeraldError.from(status);
      }
      // Whatever broke (a reset, a silent path, a stalled opening), start afresh.
      tailConnection.reset();
      failures += 1;
    }
  }
}

export function subscribe(client: HeraldClient, openTail: () => TailConnection, tail: Tail): Subscription {
  return new Subscription(client, openTail, tail);
}
