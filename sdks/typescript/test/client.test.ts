/** Client settings and backoff, without a server. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, DEFAULT_RETRY, HeraldClient, HeraldError, backoffMs, catalog, type NewEvent } from "../src/index.js";

function refused(make: () => unknown, field: string) {
  assert.throws(make, (e: unknown) => {
    assert.ok(e instanceof HeraldError, String(e));
    assert.equal(e.code, Code.InvalidArgument);
    assert.equal(e.field, field, e.message);
    return true;
  });
}

describe("client settings", () => {
  it("names the bad setting and never echoes the key", () => {
    refused(() => new HeraldClient("", "k"), "address");
    refused(() => new HeraldClient("ftp://x", "k"), "address");
    refused(() => new HeraldClient("http://127.0.0.1:1", "k", { tls: true }), "address");
    refused(() => new HeraldClient("127.0.0.1:1", "k", { timeoutMs: 0 }), "timeoutMs");
    refused(() => new HeraldClient("127.0.0.1:1", "k", { retry: { maxAttempts: 0 } }), "retry.maxAttempts");
    try {
      new HeraldClient("127.0.0.1:1", "hrk_secret\npart");
      assert.fail("accepted a key with a newline");
    } catch (e) {
      assert.ok(e instanceof HeraldError);
      assert.equal(e.field, "apiKey");
      assert.ok(!e.message.includes("secret"), e.message);
    }
    // A bare host:port is fine, and derived clients keep the other settings.
    const client = new HeraldClient("127.0.0.1:1", "hrk_ok", { tenantId: "acme" });
    assert.equal(client.withTimeout(5).tenantId, "acme");
    assert.equal(client.withTenant("other").timeoutMs, client.timeoutMs);
    client.close();
  });

  it("backs off exponentially within bounds, with jitter", () => {
    const seen = new Set<number>();
    for (let i = 0; i < 100; i++) {
      const first = backoffMs(DEFAULT_RETRY, 1);
      assert.ok(first >= 50 && first <= 100, String(first));
      const third = backoffMs(DEFAULT_RETRY, 3);
      assert.ok(third >= 200 && third <= 400, String(third));
      assert.ok(backoffMs(DEFAULT_RETRY, 30) <= DEFAULT_RETRY.maxBackoffMs);
      seen.add(first);
    }
    assert.ok(seen.size > 1, "jittered");
  });

  it("reports a server that is down as UNAVAILABLE", async () => {
    const client = new HeraldClient("127.0.0.1:1", "hrk_ok", { retry: { maxAttempts: 2, initialBackoffMs: 10 } });
    try {
      await assert.rejects(client.listEvents(), (e: unknown) => e instanceof HeraldError && e.code === Code.Unavailable);
    } finally {
      client.close();
    }
  });
});

describe("typing", () => {
  it("accepts catalog constants and names, and refuses a misspelt type at compile time", () => {
    const events: NewEvent[] = [
      { type: catalog.LICENSE_CREATED, payload: {} },
      { type: "license.check-in-required-soon", payload: {} },
      // @ts-expect-error a type outside the catalog does not compile (tsc fails if it does)
      { type: "license.creatd", payload: {} },
    ];
    assert.equal(events.length, 3);
  });
});
