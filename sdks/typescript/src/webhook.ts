/**
 * Verifying the webhooks Herald sends, for receivers: the Keygen signature scheme
 * (`Keygen-Signature`, Ed25519 with the tenant's public key, over the request target,
 * host, `Date` and `Digest`) and Standard Webhooks (`webhook-signature`, `v1` HMAC-SHA256
 * with the endpoint's `whsec_` secret). Both reject a request signed more than five minutes
 * away from now, so a captured request cannot be replayed later.
 *
 * A verified request is parsed into a `WebhookEvent` whatever the body format (Keygen's
 * `webhook-events` document with its payload as a JSON string, or Standard Webhooks'
 * `{type, timestamp, data}`), with the event's JSON:API payload decoded.
 *
 * Errors never quote a secret nor a signature. Mirrors `sdks/rust/src/webhook.rs`.
 */

import { createHash, createHmac, createPublicKey, timingSafeEqual, verify, type KeyObject } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";

import { byName, type EventTypeInfo } from "./catalog.js";

/** How far a signature's time may be from now, both ways, in seconds. */
export const DEFAULT_TOLERANCE_SECONDS = 5 * 60;

/** The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the key's 32 bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** Why a webhook was rejected (or a verifier could not be built). */
export type VerifyFailure =
  /** The verifier was given an unusable key or secret. */
  | "invalid-key"
  /** The request carries no signature this verifier can check. */
  | "no-signature"
  | "missing-header"
  | "malformed-header"
  /** `Keygen-Signature` uses an algorithm this SDK does not verify. */
  | "unsupported-algorithm"
  /** `Keygen-Signature` names a key other than the tenant's. */
  | "wrong-key-id"
  /** The body is not the one the `Digest` header was computed from. */
  | "digest-mismatch"
  /** No signature matches: not signed with these keys, or changed on the way. */
  | "bad-signature"
  /** The signature's time is too far from now (a replay, or a badly wrong clock). */
  | "outside-tolerance"
  /** The verified body is not a Herald webhook body. */
  | "body";

export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";

  constructor(
    readonly reason: VerifyFailure,
    message: string,
    /** The header at fault, when one is. */
    readonly header?: string,
  ) {
    super(message);
  }
}

/** Which signature scheme verified a request. */
export type Scheme = "keygen" | "standard-webhooks";

/** Request headers as Node's `http` module gives them, or a WHATWG `Headers`. */
export type HeadersInput = IncomingHttpHeaders | Headers | Record<string, string | string[] | undefined>;

/** A received webhook request, as the receiving HTTP server saw it. */
export interface WebhookRequest {
  /** The HTTP method (`POST`). */
  readonly method: string;
  /** The request target: path and query as received (`/hooks?token=abc`; Node's `req.url`). */
  readonly target: string;
  /**
   * The host the endpoint's URL names (the `Host` header); a port is ignored, as Keygen
   * signs the host without it. Default: the `host` header.
   */
  readonly host?: string;
  readonly headers: HeadersInput;
  /** The exact body bytes, before any JSON parsing. */
  readonly body: Uint8Array | string;
}

/** The request Node's `http` server received, with the body read in full. */
export function webhookRequestFromNode(
  request: Pick<IncomingMessage, "method" | "url" | "headers">,
  body: Uint8Array | string,
): WebhookRequest {
  return {
    method: request.method ?? "POST",
    target: request.url ?? "/",
    headers: request.headers,
    body,
  };
}

/** A verified webhook. */
export interface WebhookEvent {
  /** The schemes whose signatures were checked and matched. */
  readonly verifiedBy: Scheme[];
  /** The dotted event type (`license.created`, or `endpoint.ping` for a ping). */
  readonly eventType: string;
  /** The catalog's facts about the type (`undefined` for `endpoint.ping` or a newer type). */
  readonly info: EventTypeInfo | undefined;
  /**
   * Stays the same across every attempt, retry and replay of this event to this
   * endpoint: dedupe on it.
   */
  readonly idempotencyToken: string;
  /** The delivery (`dlv_…`), in the Keygen format. */
  readonly deliveryId?: string;
  /** The tenant (account), in the Keygen format. */
  readonly tenantId?: string;
  /** When the event happened (ISO 8601), in the Standard Webhooks format. */
  readonly timestamp?: string;
  /** The event's JSON:API document, decoded: `{ data: …, meta: … }`. */
  readonly payload: any;
  /** The payload's `data`: the resource object (or list of them). */
  readonly data: any;
}

/** What a verifier checks with. */
export interface WebhookVerifierOptions {
  /**
   * The tenant's Ed25519 public key, hex-encoded (as `Tenant.publicKey` and Keygen show it)
   * or as a PEM `PUBLIC KEY` block.
   */
  readonly keygenPublicKey?: string;
  /** Requires `Keygen-Signature`'s `keyid` to be this tenant id. */
  readonly keygenKeyId?: string;
  /** Endpoint secrets (`whsec_…`); during a rotation give both: either one verifies. */
  readonly secrets?: readonly string[];
  /** How far a signature's time may be from now (default `DEFAULT_TOLERANCE_SECONDS`). */
  readonly toleranceSeconds?: number;
}

/** The fields of `GetSigningMaterial`'s answer (`client.endpoints.signingMaterial`). */
export interface SigningMaterialLike {
  readonly secret?: string;
  readonly previousSecret?: string;
  readonly keygenPublicKey?: string;
  readonly keygenKeyId?: string;
}

/**
 * Checks webhook signatures with a tenant's public key and/or an endpoint's secrets.
 *
 * Every configured scheme whose header is present must verify, and at least one must be
 * present; a header for a scheme the verifier has no key for is ignored.
 */
export class WebhookVerifier {
  readonly #keygenKey: KeyObject | undefined;
  readonly #keygenKeyId: string | undefined;
  readonly #secrets: Buffer[];
  readonly #toleranceSeconds: number;

  constructor(options: WebhookVerifierOptions = {}) {
    this.#keygenKey = options.keygenPublicKey ? ed25519Key(options.keygenPublicKey) : undefined;
    this.#keygenKeyId = options.keygenKeyId || undefined;
    this.#secrets = (options.secrets ?? []).filter((s) => s !== "").map(standardSecret);
    this.#toleranceSeconds = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  }

  /**
   * Everything an endpoint's signing material gives: its secret (and the previous one
   * during a rotation), the tenant's public key and key id.
   */
  static fromSigningMaterial(material: SigningMaterialLike, toleranceSeconds?: number): WebhookVerifier {
    return new WebhookVerifier({
      keygenPublicKey: material.keygenPublicKey || undefined,
      keygenKeyId: material.keygenKeyId || undefined,
      secrets: [material.secret ?? "", material.previousSecret ?? ""],
      toleranceSeconds,
    });
  }

  /** Verifies `request` as of `now` (default: now) and parses its body. */
  verify(request: WebhookRequest, now: Date = new Date()): WebhookEvent {
    const headers = headerReader(request.headers);
    const body = typeof request.body === "string" ? Buffer.from(request.body, "utf8") : Buffer.from(request.body);
    const verifiedBy: Scheme[] = [];
    if (this.#keygenKey !== undefined && headers.has("keygen-signature")) {
      this.#verifyKeygen(this.#keygenKey, request, headers, body, now);
      verifiedBy.push("keygen");
    }
    if (this.#secrets.length > 0 && headers.has("webhook-signature")) {
      this.#verifyStandard(headers, body, now);
      verifiedBy.push("standard-webhooks");
    }
    if (verifiedBy.length === 0) {
      throw new WebhookVerificationError(
        "no-signature",
        "no signature to check: expected `keygen-signature` (with the tenant's public key) or `webhook-signature` (with the endpoint's secret)",
      );
    }
    return parseBody(body, headers, verifiedBy);
  }

  #verifyKeygen(key: KeyObject, request: WebhookRequest, headers: HeaderReader, body: Buffer, now: Date): void {
    const HEADER = "keygen-signature";
    const params = parseSignatureParams(headers.require(HEADER));
    if (params.algorithm.toLowerCase() !== "ed25519") {
      throw new WebhookVerificationError(
        "unsupported-algorithm",
        `unsupported Keygen-Signature algorithm \`${params.algorithm.slice(0, 40)}\` (ed25519 is supported)`,
        HEADER,
      );
    }
    if (this.#keygenKeyId !== undefined && params.keyId !== this.#keygenKeyId) {
      throw new WebhookVerificationError(
        "wrong-key-id",
        `Keygen-Signature keyid \`${params.keyId.slice(0, 80)}\` is not the expected tenant`,
        HEADER,
      );
    }
    const signed = params.headers.split(/\s+/).filter((h) => h !== "").map((h) => h.toLowerCase());
    // Without these the signature would not cover the body or the time.
    for (const required of ["(request-target)", "date", "digest"]) {
      if (!signed.includes(required)) {
        throw malformed(HEADER, "`headers` must include (request-target), date and digest");
      }
    }
    const expectedDigest = createHash("sha256").update(body).digest("base64");
    const digestMatches = headers
      .require("digest")
      .split(",")
      .some((part) => {
        const at = part.indexOf("=");
        return at > 0 && part.slice(0, at).trim().toLowerCase() === "sha-256" && part.slice(at + 1).trim() === expectedDigest;
      });
    if (!digestMatches) {
      throw new WebhookVerificationError("digest-mismatch", "the body does not match the `digest` header", "digest");
    }
    const date = headers.require("date");
    const sent = Date.parse(date);
    if (Number.isNaN(sent)) {
      throw malformed("date", "not an HTTP date");
    }
    this.#checkAge("date", sent, now);

    const lines = signed.map((name) => {
      switch (name) {
        case "(request-target)":
          return `${name}: ${request.method.toLowerCase()} ${request.target}`;
        case "host":
          return `${name}: ${hostWithoutPort(request.host ?? headers.get("host") ?? "")}`;
        default: {
          const value = headers.get(name);
          if (value === undefined) {
            throw malformed(HEADER, "a signed header is missing from the request");
          }
          return `${name}: ${value}`;
        }
      }
    });
    const signature = Buffer.from(params.signature, "base64");
    if (signature.length !== 64) {
      throw malformed(HEADER, "`signature` is not a base64 Ed25519 signature");
    }
    if (!verify(null, Buffer.from(lines.join("\n"), "utf8"), key, signature)) {
      throw new WebhookVerificationError("bad-signature", "Keygen-Signature signature does not match", HEADER);
    }
  }

  #verifyStandard(headers: HeaderReader, body: Buffer, now: Date): void {
    const id = headers.require("webhook-id");
    const timestamp = headers.require("webhook-timestamp");
    const signatures = headers.require("webhook-signature");
    if (!/^-?\d+$/.test(timestamp.trim())) {
      throw malformed("webhook-timestamp", "not an integer number of seconds");
    }
    // A time the clock cannot even represent is as far from now as it gets.
    const seconds = Number(timestamp.trim());
    this.#checkAge("webhook-timestamp", Number.isSafeInteger(seconds) ? seconds * 1000 : Infinity, now);
    const candidates = signatures
      .split(/\s+/)
      .filter((s) => s.startsWith("v1,"))
      .map((s) => Buffer.from(s.slice(3), "base64"));
    for (const secret of this.#secrets) {
      const expected = createHmac("sha256", secret).update(`${id}.${timestamp}.`).update(body).digest();
      if (candidates.some((c) => c.length === expected.length && timingSafeEqual(c, expected))) {
        return;
      }
    }
    throw new WebhookVerificationError("bad-signature", "webhook-signature signature does not match", "webhook-signature");
  }

  #checkAge(header: string, sentMs: number, now: Date): void {
    const distanceMs = Math.abs(now.getTime() - sentMs);
    if (!(distanceMs <= this.#toleranceSeconds * 1000)) {
      const seconds = Number.isFinite(distanceMs) ? Math.floor(distanceMs / 1000) : Infinity;
      throw new WebhookVerificationError(
        "outside-tolerance",
        `\`${header}\` is ${seconds} s away from now (tolerance ${this.#toleranceSeconds} s)`,
        header,
      );
    }
  }
}

/**
 * Verifies `request` and returns the parsed event: the one-call form of
 * `new WebhookVerifier(options).verify(request, options.now)`.
 *
 * ```ts
 * const event = verifyWebhook(webhookRequestFromNode(req, body), {
 *   keygenPublicKey: tenant.publicKey,
 *   secrets: [endpointSecret],
 * });
 * ```
 */
export function verifyWebhook(request: WebhookRequest, options: WebhookVerifierOptions & { now?: Date }): WebhookEvent {
  return new WebhookVerifier(options).verify(request, options.now);
}

function malformed(header: string, reason: string): WebhookVerificationError {
  return new WebhookVerificationError("malformed-header", `malformed \`${header}\` header: ${reason}`, header);
}

function ed25519Key(text: string): KeyObject {
  const key = text.trim();
  if (key.startsWith("-----BEGIN PUBLIC KEY-----")) {
    let parsed: KeyObject;
    try {
      parsed = createPublicKey(key);
    } catch {
      throw new WebhookVerificationError("invalid-key", "public key: not a PEM PUBLIC KEY block");
    }
    if (parsed.asymmetricKeyType !== "ed25519") {
      throw new WebhookVerificationError("invalid-key", "public key: not an Ed25519 PUBLIC KEY");
    }
    return parsed;
  }
  if (!/^[0-9a-fA-F]*$/.test(key) || key.length % 2 !== 0) {
    throw new WebhookVerificationError("invalid-key", "public key: neither hex nor a PEM PUBLIC KEY block");
  }
  const raw = Buffer.from(key, "hex");
  if (raw.length !== 32) {
    throw new WebhookVerificationError("invalid-key", "public key: an Ed25519 key has 32 bytes");
  }
  try {
    return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
  } catch {
    throw new WebhookVerificationError("invalid-key", "public key: not a valid Ed25519 point");
  }
}

/** The HMAC key of a `whsec_…` secret. */
function standardSecret(secret: string): Buffer {
  const trimmed = secret.trim();
  const encoded = trimmed.startsWith("whsec_") ? trimmed.slice("whsec_".length) : trimmed;
  // Node's decoder skips bad characters silently: check the alphabet first (and never
  // quote the secret in the error).
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 === 1) {
    throw new WebhookVerificationError("invalid-key", "secret: not `whsec_` followed by base64");
  }
  const key = Buffer.from(encoded, "base64");
  if (key.length === 0) {
    throw new WebhookVerificationError("invalid-key", "secret: empty");
  }
  return key;
}

interface HeaderReader {
  has(name: string): boolean;
  get(name: string): string | undefined;
  require(name: string): string;
}

function headerReader(input: HeadersInput): HeaderReader {
  const values = new Map<string, string>();
  if (typeof Headers !== "undefined" && input instanceof Headers) {
    input.forEach((value, name) => values.set(name.toLowerCase(), value));
  } else {
    for (const [name, value] of Object.entries(input as Record<string, string | string[] | undefined>)) {
      if (value !== undefined) {
        values.set(name.toLowerCase(), Array.isArray(value) ? value.join(", ") : value);
      }
    }
  }
  return {
    has: (name) => values.has(name),
    get: (name) => values.get(name),
    require(name) {
      const value = values.get(name);
      if (value === undefined) {
        throw new WebhookVerificationError("missing-header", `missing \`${name}\` header`, name);
      }
      return value;
    },
  };
}

/** `example.com:8443` → `example.com`, `[::1]:80` → `[::1]`, lowercased. */
export function hostWithoutPort(host: string): string {
  const trimmed = host.trim();
  let bare = trimmed;
  if (trimmed.startsWith("[")) {
    const end = trimmed.indexOf("]");
    bare = end >= 0 ? trimmed.slice(0, end + 1) : trimmed;
  } else {
    const colon = trimmed.lastIndexOf(":");
    if (colon >= 0) {
      const name = trimmed.slice(0, colon);
      const port = trimmed.slice(colon + 1);
      if (!name.includes(":") && /^\d*$/.test(port)) {
        bare = name;
      }
    }
  }
  return bare.toLowerCase();
}

/** The `key="value"` pairs of `Keygen-Signature`. */
function parseSignatureParams(value: string): { keyId: string; algorithm: string; signature: string; headers: string } {
  const found = new Map<string, string>();
  for (const pair of value.split(",")) {
    const at = pair.indexOf("=");
    if (at < 0) {
      throw malformed("keygen-signature", 'expected key="value" pairs');
    }
    const quoted = pair.slice(at + 1).trim();
    if (quoted.length < 2 || !quoted.startsWith('"') || !quoted.endsWith('"')) {
      throw malformed("keygen-signature", "values must be quoted");
    }
    found.set(pair.slice(0, at).trim(), quoted.slice(1, -1));
  }
  const need = (key: string) => {
    const v = found.get(key);
    if (v === undefined) {
      throw malformed("keygen-signature", `no \`${key}\``);
    }
    return v;
  };
  return {
    keyId: found.get("keyid") ?? "",
    algorithm: need("algorithm"),
    signature: need("signature"),
    headers: need("headers"),
  };
}

function bodyError(message: string): WebhookVerificationError {
  return new WebhookVerificationError("body", `body: ${message}`);
}

/** The event in a verified body, in either format. */
function parseBody(body: Buffer, headers: HeaderReader, verifiedBy: Scheme[]): WebhookEvent {
  let document: any;
  try {
    document = JSON.parse(body.toString("utf8"));
  } catch (error) {
    throw bodyError(`not JSON: ${(error as Error).message}`);
  }
  const text = (value: unknown, what: string): string => {
    if (typeof value !== "string") {
      throw bodyError(`\`${what}\` is not a string`);
    }
    return value;
  };
  if (document?.data?.type === "webhook-events") {
    // Keygen: the payload is a JSON document inside a string.
    const attributes = document.data.attributes;
    if (attributes === null || typeof attributes !== "object") {
      throw bodyError("no `data.attributes`");
    }
    let payload: any;
    try {
      payload = JSON.parse(text(attributes.payload, "data.attributes.payload"));
    } catch (error) {
      if (error instanceof WebhookVerificationError) {
        throw error;
      }
      throw bodyError(`\`data.attributes.payload\` is not JSON: ${(error as Error).message}`);
    }
    const eventType = text(attributes.event, "data.attributes.event");
    const deliveryId = document.data.id;
    const tenantId = document.data.relationships?.account?.data?.id;
    return {
      verifiedBy,
      eventType,
      info: byName(eventType),
      idempotencyToken: text(document.data.meta?.idempotencyToken, "data.meta.idempotencyToken"),
      deliveryId: typeof deliveryId === "string" ? deliveryId : undefined,
      tenantId: typeof tenantId === "string" ? tenantId : undefined,
      payload,
      data: payload?.data,
    };
  }
  // Standard Webhooks: `webhook-id` is the idempotency token.
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    throw bodyError("not a JSON object");
  }
  const eventType = text(document.type, "type");
  if (!("data" in document)) {
    throw bodyError("no `data`");
  }
  const payload = document.data;
  return {
    verifiedBy,
    eventType,
    info: byName(eventType),
    idempotencyToken: headers.get("webhook-id") ?? "",
    timestamp: typeof document.timestamp === "string" ? document.timestamp : undefined,
    payload,
    data: payload?.data,
  };
}
