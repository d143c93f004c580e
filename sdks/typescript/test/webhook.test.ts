/**
 * Webhook verification without a server: the Standard Webhooks specification's test
 * vector, several signatures and secrets, a Keygen request signed here the way the
 * reference describes it (independently of the server's code), and malformed input.
 */

import assert from "node:assert/strict";
import { createHash, createHmac, generateKeyPairSync, sign } from "node:crypto";
import { describe, it } from "node:test";

import { WebhookVerificationError, WebhookVerifier, catalog, verifyWebhook, type VerifyFailure } from "../src/index.js";
import { hostWithoutPort } from "../src/webhook.js";

/** The test vector of the Standard Webhooks specification (/work/shared/reference). */
const SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const MSG_ID = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const TIMESTAMP = 1649367553;
const BODY = '{"email":"test@example.com","username":"test_user"}';
const SIGNATURE = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

const at = (seconds: number) => new Date(seconds * 1000);

function standardHeaders(id: string, timestamp: number | string, signature: string) {
  return { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": signature };
}

function request(headers: Record<string, string>, body: string | Buffer) {
  return { method: "POST", target: "/hooks", host: "example.com", headers, body };
}

function fails(reason: VerifyFailure, header?: string) {
  return (error: unknown) => {
    assert.ok(error instanceof WebhookVerificationError, `not a WebhookVerificationError: ${error}`);
    assert.equal(error.reason, reason, error.message);
    if (header !== undefined) {
      assert.equal(error.header, header);
    }
    return true;
  };
}

describe("Standard Webhooks", () => {
  it("verifies the specification's test vector", () => {
    const verifier = new WebhookVerifier({ secrets: [SECRET] });
    const headers = standardHeaders(MSG_ID, TIMESTAMP, SIGNATURE);
    // The vector's body is not a Herald body: the signature passes, then parsing fails
    // with a body error, not a signature error.
    assert.throws(() => verifier.verify(request(headers, BODY), at(TIMESTAMP)), fails("body"));

    // Changing any signed part breaks it.
    const tampered = BODY.replace("test_user", "test_user2");
    assert.throws(() => verifier.verify(request(headers, tampered), at(TIMESTAMP)), fails("bad-signature", "webhook-signature"));
    const otherId = standardHeaders("msg_other", TIMESTAMP, SIGNATURE);
    assert.throws(() => verifier.verify(request(otherId, BODY), at(TIMESTAMP)), fails("bad-signature"));
    const otherTime = standardHeaders(MSG_ID, TIMESTAMP + 1, SIGNATURE);
    assert.throws(() => verifier.verify(request(otherTime, BODY), at(TIMESTAMP)), fails("bad-signature"));

    // Five minutes each way, no more.
    assert.throws(() => verifier.verify(request(headers, BODY), at(TIMESTAMP + 301)), fails("outside-tolerance", "webhook-timestamp"));
    assert.throws(() => verifier.verify(request(headers, BODY), at(TIMESTAMP - 301)), fails("outside-tolerance"));
    assert.throws(() => verifier.verify(request(headers, BODY), at(TIMESTAMP + 300)), fails("body"));
  });

  it("accepts any of several signatures and secrets, and decodes the payload", () => {
    const body = JSON.stringify({
      type: "license.created",
      timestamp: "2026-01-01T00:00:00Z",
      data: { data: { id: "1", type: "licenses" } },
    });
    const signWith = (secret: string) =>
      "v1," +
      createHmac("sha256", Buffer.from(secret.slice("whsec_".length), "base64"))
        .update(`${MSG_ID}.${TIMESTAMP}.${body}`)
        .digest("base64");
    const other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const headers = standardHeaders(MSG_ID, TIMESTAMP, `v1a,bm90IGFuIGVkMjU1MTkgc2ln ${signWith(other)} ${signWith(SECRET)}`);

    const event = verifyWebhook(request(headers, body), { secrets: [SECRET], now: at(TIMESTAMP) });
    assert.equal(event.eventType, "license.created");
    assert.equal(event.idempotencyToken, MSG_ID);
    assert.deepEqual(event.verifiedBy, ["standard-webhooks"]);
    assert.equal(event.info, catalog.LICENSE_CREATED);
    assert.equal(event.data.id, "1");
    assert.equal(event.timestamp, "2026-01-01T00:00:00Z");
    // A receiver holding only the previous secret of a rotation accepts too.
    assert.ok(verifyWebhook(request(headers, body), { secrets: [other], now: at(TIMESTAMP) }));
    // A stranger does not.
    assert.throws(
      () => verifyWebhook(request(headers, body), { secrets: ["whsec_dGhpcyBpcyBub3QgYSBrZXkgb2YgdGhlIHBhaXI="], now: at(TIMESTAMP) }),
      fails("bad-signature"),
    );
  });

  it("refuses absurd timestamps without throwing anything else", () => {
    const verifier = new WebhookVerifier({ secrets: [SECRET] });
    for (const ts of ["-9223372036854775808", "9223372036854775807", "12abc", "", "1e9"]) {
      assert.throws(
        () => verifier.verify(request(standardHeaders(MSG_ID, ts, SIGNATURE), BODY), at(TIMESTAMP)),
        (e: unknown) => e instanceof WebhookVerificationError && ["outside-tolerance", "malformed-header"].includes(e.reason),
        ts,
      );
    }
  });
});

describe("Keygen signatures", () => {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  // The raw 32 bytes, hex-encoded, as Tenant.publicKey and Keygen show them.
  const publicHex = publicKey.export({ format: "der", type: "spki" }).subarray(12).toString("hex");
  const payload = JSON.stringify({ data: { id: "lic_1", type: "licenses", attributes: {} } });
  const body = JSON.stringify({
    data: {
      id: "dlv_1",
      type: "webhook-events",
      attributes: { endpoint: "https://example.com/hooks?x=1", payload, event: "license.created", status: "DELIVERING" },
      relationships: { account: { data: { type: "accounts", id: "acct-1" } } },
      meta: { idempotencyToken: "tok_1" },
    },
  });
  const date = "Tue, 30 Jun 2026 14:51:47 GMT";
  const now = new Date(Date.parse(date));
  const digest = `sha-256=${createHash("sha256").update(body).digest("base64")}`;
  const signingString = `(request-target): post /hooks?x=1\nhost: example.com\ndate: ${date}\ndigest: ${digest}`;
  const signature = sign(null, Buffer.from(signingString), privateKey).toString("base64");
  const headers = {
    date,
    digest,
    host: "Example.com:8443",
    "keygen-signature": `keyid="acct-1", algorithm="ed25519", signature="${signature}", headers="(request-target) host date digest"`,
  };
  const req = { method: "POST", target: "/hooks?x=1", headers, body };

  it("verifies a request signed as the reference describes, and parses the Keygen body", () => {
    const event = verifyWebhook(req, { keygenPublicKey: publicHex, keygenKeyId: "acct-1", now });
    assert.deepEqual(event.verifiedBy, ["keygen"]);
    assert.equal(event.eventType, "license.created");
    assert.equal(event.deliveryId, "dlv_1");
    assert.equal(event.tenantId, "acct-1");
    assert.equal(event.idempotencyToken, "tok_1");
    assert.equal(event.payload.data.id, "lic_1");
    // The same key as PEM; headers as a WHATWG Headers.
    const pem = publicKey.export({ format: "pem", type: "spki" }).toString();
    assert.ok(verifyWebhook({ ...req, headers: new Headers(headers) }, { keygenPublicKey: pem, now }));
  });

  it("refuses every change", () => {
    const options = { keygenPublicKey: publicHex, keygenKeyId: "acct-1", now };
    assert.throws(() => verifyWebhook({ ...req, body: body + " " }, options), fails("digest-mismatch"));
    assert.throws(() => verifyWebhook({ ...req, target: "/hooks" }, options), fails("bad-signature", "keygen-signature"));
    assert.throws(() => verifyWebhook({ ...req, host: "evil.example" }, options), fails("bad-signature"));
    assert.throws(() => verifyWebhook(req, { ...options, now: new Date(now.getTime() + 301_000) }), fails("outside-tolerance", "date"));
    const other = generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" }).subarray(12).toString("hex");
    assert.throws(() => verifyWebhook(req, { keygenPublicKey: other, now }), fails("bad-signature"));
    assert.throws(() => verifyWebhook(req, { ...options, keygenKeyId: "acct-2" }), fails("wrong-key-id"));
    const { digest: _digest, ...noDigest } = headers;
    assert.throws(() => verifyWebhook({ ...req, headers: noDigest }, options), fails("missing-header", "digest"));
    // A verifier without a Keygen key has nothing to check here.
    assert.throws(() => verifyWebhook(req, { secrets: [SECRET], now }), fails("no-signature"));
    const hmacSigned = { ...headers, "keygen-signature": headers["keygen-signature"].replace("ed25519", "rsa-sha256") };
    assert.throws(() => verifyWebhook({ ...req, headers: hmacSigned }, options), fails("unsupported-algorithm"));
    const unsigned = { ...headers, "keygen-signature": headers["keygen-signature"].replace("(request-target) ", "") };
    assert.throws(() => verifyWebhook({ ...req, headers: unsigned }, options), fails("malformed-header"));
  });
});

describe("keys and hosts", () => {
  it("refuses bad keys without echoing them", () => {
    assert.throws(
      () => new WebhookVerifier({ secrets: ["whsec_s3cr3t!!"] }),
      (e: unknown) => e instanceof WebhookVerificationError && e.reason === "invalid-key" && !e.message.includes("s3cr3t"),
    );
    assert.throws(() => new WebhookVerifier({ secrets: ["whsec_"] }), fails("invalid-key"));
    assert.throws(() => new WebhookVerifier({ keygenPublicKey: "abcd" }), fails("invalid-key"));
    assert.throws(() => new WebhookVerifier({ keygenPublicKey: "zz" }), fails("invalid-key"));
  });

  it("drops the port of a host", () => {
    assert.equal(hostWithoutPort("Example.com:8443"), "example.com");
    assert.equal(hostWithoutPort("example.com"), "example.com");
    assert.equal(hostWithoutPort("[::1]:8080"), "[::1]");
    assert.equal(hostWithoutPort("127.0.0.1:80"), "127.0.0.1");
  });
});
