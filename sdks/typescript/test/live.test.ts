/**
 * The SDK against a live Herald process: publish (single and batch), a tail that resumes
 * across dropped connections, endpoint management, clear errors for bad input, retries
 * and deadlines, and verification of the webhooks Herald really sends.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Code,
  HeraldClient,
  HeraldError,
  Role,
  SignatureScheme,
  WebhookFormat,
  WebhookVerificationError,
  WebhookVerifier,
  catalog,
  proto,
  resourceEvent,
  verifyWebhook,
  webhookRequestFromNode,
  type ClientOptions,
  type Event,
  type NewEvent,
  type Subscription,
} from "../src/index.js";
import {
  Proxy,
  Receiver,
  TEST_CERT,
  TlsTerminator,
  WAIT_MS,
  startHerald,
  within,
  type Herald,
  type TenantKeys,
} from "./support.js";

const { PayloadShape } = proto;

let herald: Herald;
const clients: HeraldClient[] = [];

/** A client closed when the suite ends. */
function client(url: string, key: string, options?: ClientOptions): HeraldClient {
  const c = new HeraldClient(url, key, options);
  clients.push(c);
  return c;
}

let tenants = 0;
/** A fresh tenant per test, so tests do not see each other's events. */
function tenant(): Promise<TenantKeys> {
  tenants += 1;
  return herald.tenant(`acme-${tenants}`);
}

function license(id: string): NewEvent {
  return resourceEvent(catalog.LICENSE_CREATED, id, { name: `license ${id}` });
}

async function nextEvent(tail: AsyncIterator<Event>): Promise<Event> {
  const next = await within(tail.next(), WAIT_MS, "the next tail event");
  assert.equal(next.done, false, "the tail ended");
  return next.value as Event;
}

async function rejection(promise: Promise<unknown>): Promise<HeraldError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HeraldError, `not a HeraldError: ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

before(async () => {
  herald = await startHerald();
});

after(async () => {
  clients.forEach((c) => c.close());
  await herald?.stop();
});

describe("publish", () => {
  it("publishes one event and a batch, typed by the catalog", async () => {
    const keys = await tenant();
    const publisher = client(herald.url, keys.publisher);

    const single = await publisher.publish({
      ...license("lic_1"),
      idempotencyKey: "lic_1-created",
      environment: "prod",
      occurredAt: new Date("2026-01-02T03:04:05Z"),
    });
    assert.equal(single.duplicate, false);
    const event = single.event!;
    assert.match(event.id, /^evt_/);
    assert.equal(event.typeName, "license.created");
    assert.equal(event.type, catalog.LICENSE_CREATED.value);
    assert.equal(event.tenantId, keys.tenantId);
    assert.equal(event.environment, "prod");
    assert.equal(event.occurredAt?.seconds, BigInt(Date.parse("2026-01-02T03:04:05Z") / 1000));
    assert.deepEqual(JSON.parse(event.payloadJson), {
      data: { id: "lic_1", type: "licenses", attributes: { name: "license lic_1" } },
    });

    // The same idempotency key returns the original event.
    const again = await publisher.publish({ ...license("lic_1"), idempotencyKey: "lic_1-created" });
    assert.equal(again.duplicate, true);
    assert.equal(again.event?.id, event.id);

    // A dotted name works as well as a constant; list-shaped types get a list.
    const batch = await publisher.publishBatch([
      { type: "license.suspended", payload: { data: { id: "lic_1", type: "licenses", attributes: {} } } },
      resourceEvent(catalog.LICENSE_USERS_ATTACHED, "lu_1"),
      { type: catalog.MACHINE_CREATED, payload: '{"data":{"id":"m_1","type":"machines","attributes":{"n":12345678901234567890}}}' },
    ]);
    assert.deepEqual(
      batch.map((r) => r.event?.typeName),
      ["license.suspended", "license.users.attached", "machine.created"],
    );
    assert.equal(JSON.parse(batch[1]!.event!.payloadJson).data[0].type, "license-users");
    // JSON text is sent as is: the big number keeps its digits.
    assert.match(batch[2]!.event!.payloadJson, /12345678901234567890/);

    const reader = client(herald.url, keys.subscriber);
    const listed = await reader.listEvents({ filters: ["license.*"] });
    assert.deepEqual(
      new Set(listed.events.map((e) => e.id)),
      new Set([event.id, batch[0]!.event!.id, batch[1]!.event!.id]),
    );
    const fetched = await reader.getEvent({ id: event.id });
    assert.equal(fetched.payloadJson, event.payloadJson);
  });

  it("answers bad input with INVALID_ARGUMENT naming the field", async () => {
    const keys = await tenant();
    const publisher = client(herald.url, keys.publisher);

    const wrongType = await rejection(
      publisher.publish({ type: catalog.LICENSE_CREATED, payload: { data: { id: "m_1", type: "machines" } } }),
    );
    assert.equal(wrongType.code, Code.InvalidArgument);
    assert.equal(wrongType.codeName, "INVALID_ARGUMENT");
    // The payload travels as `payload_json`, which the server names.
    assert.equal(wrongType.field, "payload_json.data.type");
    assert.match(wrongType.message, /^INVALID_ARGUMENT: payload_json\.data\.type: .*machines/);

    // A batch is all or nothing: one bad event refuses every one.
    const badBatch = await rejection(
      publisher.publishBatch([license("ok_1"), { type: catalog.LICENSE_CREATED, payload: "not json" }]),
    );
    assert.equal(badBatch.code, Code.InvalidArgument);
    assert.match(badBatch.detail, /payload/);
    const reader = client(herald.url, keys.subscriber);
    assert.equal((await reader.listEvents()).events.length, 0);

    // Refused before sending: a type outside the catalog (from untyped code) and no payload.
    const unknown = await rejection(publisher.publish({ type: "license.exploded" as never, payload: {} }));
    assert.equal(unknown.field, "type");
    assert.match(unknown.message, /license\.exploded/);
    const missing = await rejection(publisher.publishBatch([license("a"), { type: "license.created", payload: undefined }]));
    assert.equal(missing.field, "events[1].payload");

    // Keys are checked: a wrong key and a key of the wrong role.
    const stranger = client(herald.url, "hrk_not_a_key");
    assert.equal((await rejection(stranger.publish(license("x")))).code, Code.Unauthenticated);
    const subscriber = client(herald.url, keys.subscriber);
    assert.equal((await rejection(subscriber.publish(license("x")))).code, Code.PermissionDenied);
  });
});

describe("catalog", () => {
  it("is the server's catalog", async () => {
    const keys = await tenant();
    const served = (await client(herald.url, keys.subscriber).listEventTypes({ pageSize: 1000 })).eventTypes;
    assert.equal(served.length, catalog.ALL.length);
    served.forEach((server, i) => {
      const sdk = catalog.ALL[i]!;
      assert.equal(server.name, sdk.name);
      assert.equal(server.type, sdk.value);
      assert.equal(server.trigger, sdk.trigger);
      assert.equal(server.payload, sdk.payload);
      assert.equal(server.resourceType, sdk.resourceType);
      assert.equal(server.shape, sdk.shape === "list" ? PayloadShape.LIST : PayloadShape.OBJECT);
      assert.deepEqual(server.alsoAccepts, sdk.alsoAccepts);
    });
    assert.equal(catalog.byName("license.created"), catalog.LICENSE_CREATED);
    assert.equal(catalog.byValue(catalog.LICENSE_CREATED.value), catalog.LICENSE_CREATED);
  });
});

describe("subscribe", () => {
  it("resumes after a dropped connection: no event lost or duplicated, in order", async () => {
    const keys = await tenant();
    const proxy = await Proxy.start(herald.port);
    const publisher = client(herald.url, keys.publisher);
    const subscriber = client(proxy.url, keys.subscriber);
    const ids: string[] = [];
    const publishLicenses = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        ids.push((await publisher.publish(license(`lic_${i}`))).event!.id);
      }
    };
    try {
      await publishLicenses(0, 3);
      // Not matched by the filter: must never show up.
      await publisher.publish(resourceEvent(catalog.MACHINE_CREATED, "m_1"));

      const subscription: Subscription = subscriber.subscribe({ start: "earliest", filters: ["license.*"] });
      const tail = subscription[Symbol.asyncIterator]();
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        seen.push((await nextEvent(tail)).id);
      }
      assert.deepEqual(seen, ids);
      const cursorBeforeDrop = subscription.cursor;
      assert.ok(cursorBeforeDrop);

      // The connection breaks; meanwhile more events are published.
      proxy.dropConnections();
      await publishLicenses(3, 6);
      for (let i = 3; i < 6; i++) {
        seen.push((await nextEvent(tail)).id);
      }
      assert.deepEqual(seen, ids, "resumed after the last cursor: no gap, no duplicate");
      const afterFirstDrop = proxy.accepted;
      assert.ok(afterFirstDrop >= 2, `the tail reconnected (${afterFirstDrop} connections)`);

      // Again while the tail is live and idle, twice in a row, with events in between.
      for (let round = 0; round < 2; round++) {
        proxy.dropConnections();
        await new Promise((r) => setTimeout(r, 200));
        await publishLicenses(6 + round * 2, 8 + round * 2);
        seen.push((await nextEvent(tail)).id, (await nextEvent(tail)).id);
      }
      assert.deepEqual(seen, ids);
      assert.ok(proxy.accepted >= afterFirstDrop + 2, "each drop was followed by a reconnection");
      assert.notEqual(subscription.cursor, cursorBeforeDrop);

      // Closing ends the iteration without error.
      subscription.close();
      assert.equal((await within(tail.next(), WAIT_MS, "the end of the tail")).done, true);
    } finally {
      await proxy.down();
    }
  });

  it("reopens a connection gone silent past its idle timeout", async () => {
    const keys = await tenant();
    const proxy = await Proxy.start(herald.port);
    const publisher = client(herald.url, keys.publisher);
    try {
      // Herald beats every second here: 2.5 s of silence means a dead path.
      const subscription = client(proxy.url, keys.subscriber).subscribe({ start: "earliest", idleTimeoutMs: 2_500 });
      const tail = subscription[Symbol.asyncIterator]();
      const first = (await publisher.publish(license("idle_1"))).event!;
      assert.equal((await nextEvent(tail)).id, first.id);
      proxy.freeze();
      const second = (await publisher.publish(license("idle_2"))).event!;
      const started = Date.now();
      assert.equal((await nextEvent(tail)).id, second.id);
      assert.ok(Date.now() - started >= 2_000, "the event came through a new connection, after the timeout");
      assert.equal(proxy.accepted, 2);
      await tail.return!();
    } finally {
      await proxy.down();
    }
  });

  it("gives up after maxReconnects while Herald stays unreachable", async () => {
    const keys = await tenant();
    const proxy = await Proxy.start(herald.port);
    await proxy.down();
    const tail = client(proxy.url, keys.subscriber, { retry: { initialBackoffMs: 20, maxBackoffMs: 50 } })
      .subscribe({ maxReconnects: 3 })
      [Symbol.asyncIterator]();
    const error = await rejection(within(tail.next(), WAIT_MS, "the tail's error"));
    assert.equal(error.code, Code.Unavailable, error.message);
    assert.equal((await tail.next()).done, true);
  });

  it("starts after a cursor, and ends on an answer that retrying cannot change", async () => {
    const keys = await tenant();
    const publisher = client(herald.url, keys.publisher);
    const subscriber = client(herald.url, keys.subscriber);
    const first = (await publisher.publish(license("c_1"))).event!;
    const second = (await publisher.publish(license("c_2"))).event!;
    const tail = subscriber.subscribe({ start: { afterCursor: first.cursor } })[Symbol.asyncIterator]();
    assert.equal((await nextEvent(tail)).id, second.id);
    await tail.return!();

    // Closing the client ends its tails.
    const closing = new HeraldClient(herald.url, keys.subscriber);
    const live = closing.subscribe({ start: "earliest" })[Symbol.asyncIterator]();
    assert.equal((await nextEvent(live)).id, first.id);
    closing.close();
    assert.equal((await within(live.next(), WAIT_MS, "the end of the tail")).done, true);

    const bad = subscriber.subscribe({ start: { afterCursor: "not-a-cursor" } })[Symbol.asyncIterator]();
    const error = await rejection(within(bad.next(), WAIT_MS, "the tail's error"));
    assert.equal(error.code, Code.InvalidArgument, error.message);
    assert.equal((await bad.next()).done, true);

    const stranger = client(herald.url, "hrk_not_a_key").subscribe({})[Symbol.asyncIterator]();
    assert.equal((await rejection(within(stranger.next(), WAIT_MS, "the tail's error"))).code, Code.Unauthenticated);
  });
});

describe("management", () => {
  it("creates, reads, lists, updates, rotates and deletes endpoints", async () => {
    const keys = await tenant();
    const manager = client(herald.url, keys.manager);
    const endpoints = manager.endpoints;

    const created = await endpoints.create({
      url: "http://127.0.0.1:9/hooks",
      filters: ["license.*"],
      description: "first",
    });
    assert.match(created.secret, /^whsec_/);
    const endpoint = created.endpoint!;
    assert.equal(endpoint.tenantId, keys.tenantId);
    assert.equal((await endpoints.get({ id: endpoint.id })).url, "http://127.0.0.1:9/hooks");
    assert.deepEqual(
      (await endpoints.list()).endpoints.map((e) => e.id),
      [endpoint.id],
    );

    const updated = await endpoints.update({
      id: endpoint.id,
      description: "second",
      filters: { filters: ["*"] },
    });
    assert.equal(updated.description, "second");
    assert.deepEqual(updated.filters, ["*"]);
    assert.equal(updated.url, endpoint.url, "fields not set stay as they were");

    const rotated = await endpoints.rotateSecret({ id: endpoint.id });
    assert.notEqual(rotated.secret, created.secret);
    const material = await endpoints.signingMaterial({ id: endpoint.id });
    assert.equal(material.secret, rotated.secret);
    assert.equal(material.previousSecret, created.secret);
    const tenantRecord = await herald.admin().admin.getTenant({ id: keys.tenantId });
    assert.equal(material.keygenPublicKey, tenantRecord.publicKey);

    // An admin key names the tenant through the client's default.
    const asAdmin = herald.admin().withTenant(keys.tenantId);
    assert.equal((await asAdmin.endpoints.get({ id: endpoint.id })).description, "second");

    await endpoints.delete({ id: endpoint.id });
    const gone = await rejection(endpoints.get({ id: endpoint.id }));
    assert.equal(gone.code, Code.NotFound, gone.message);

    const badUrl = await rejection(endpoints.create({ url: "ftp://example.com/hooks" }));
    assert.equal(badUrl.code, Code.InvalidArgument);
    assert.equal(badUrl.field, "url", badUrl.message);

    // A publisher key may not manage endpoints.
    const publisher = client(herald.url, keys.publisher);
    assert.equal((await rejection(publisher.endpoints.list())).code, Code.PermissionDenied);

    // Keys: listed without secrets, revoked at once.
    const admin = herald.admin().admin;
    const extra = await admin.createApiKey({ tenantId: keys.tenantId, role: Role.PUBLISHER, name: "extra" });
    const listedKeys = await admin.listApiKeys({ tenantId: keys.tenantId });
    assert.ok(listedKeys.apiKeys.some((k) => k.id === extra.apiKey?.id));
    await admin.revokeApiKey({ id: extra.apiKey!.id });
    const revoked = client(herald.url, extra.secret);
    assert.equal((await rejection(revoked.listEvents())).code, Code.Unauthenticated);
  });
});

describe("connection", () => {
  it("retries idempotent calls while Herald is unavailable, not the others", async () => {
    const keys = await tenant();
    const proxy = await Proxy.start(herald.port);
    await proxy.down();
    const patient = { maxAttempts: 50, initialBackoffMs: 50, maxBackoffMs: 200 };
    const reader = client(proxy.url, keys.subscriber, { retry: patient });
    const publisher = client(proxy.url, keys.publisher, { retry: patient });
    try {
      // Not idempotent (no key): one attempt, UNAVAILABLE at once.
      const unavailable = await rejection(publisher.publish(license("r_0")));
      assert.equal(unavailable.code, Code.Unavailable, unavailable.message);

      const reading = reader.listEvents();
      const publishing = publisher.publish({ ...license("r_1"), idempotencyKey: "r_1" });
      await new Promise((r) => setTimeout(r, 500));
      await proxy.up();
      await within(reading, WAIT_MS, "the retried read");
      assert.equal((await within(publishing, WAIT_MS, "the retried publish")).event?.typeName, "license.created");
    } finally {
      await proxy.down();
    }
  });

  it("speaks TLS with a trusted CA, and refuses an untrusted certificate", async () => {
    const keys = await tenant();
    const terminator = await TlsTerminator.start(herald.port);
    try {
      const trusting = client(`https://127.0.0.1:${terminator.port}`, keys.publisher, { tls: { ca: TEST_CERT } });
      assert.equal((await trusting.publish(license("tls_1"))).event?.typeName, "license.created");
      // A bare host:port means https when TLS settings are given.
      const bare = client(`localhost:${terminator.port}`, keys.subscriber, { tls: { ca: TEST_CERT } });
      assert.equal((await bare.listEvents()).events.length, 1);

      // The system's roots do not know the test CA.
      const untrusting = client(`https://127.0.0.1:${terminator.port}`, keys.subscriber, { retry: { maxAttempts: 1 } });
      const error = await rejection(untrusting.listEvents());
      assert.match(error.message, /certificate/i);
    } finally {
      await terminator.stop();
    }
  });

  it("cuts a stalled call at its deadline", async () => {
    const keys = await tenant();
    const proxy = await Proxy.start(herald.port);
    proxy.stall(true);
    try {
      const impatient = client(proxy.url, keys.subscriber, { timeoutMs: 500 });
      const started = Date.now();
      const error = await rejection(impatient.listEvents());
      assert.equal(error.code, Code.DeadlineExceeded, error.message);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      await proxy.down();
    }
  });
});

describe("webhooks", () => {
  it("verifies the Keygen and Standard Webhooks signatures of real deliveries", async () => {
    const keys = await tenant();
    const receiver = await Receiver.start();
    try {
      const manager = client(herald.url, keys.manager);
      // Keygen's format with both signatures (the default), and a query string to sign.
      const keygen = (
        await manager.endpoints.create({ url: receiver.url("/hooks/keygen?source=herald"), filters: ["license.created"] })
      ).endpoint!;
      const standard = (
        await manager.endpoints.create({
          url: receiver.url("/hooks/standard"),
          filters: ["license.created"],
          signing: { format: WebhookFormat.STANDARD, schemes: [SignatureScheme.STANDARD_WEBHOOKS] },
        })
      ).endpoint!;

      await client(herald.url, keys.publisher).publish(license("lic_7"));
      const first = await receiver.next();
      const second = await receiver.next();
      const [keygenHook, standardHook] = first.url.startsWith("/hooks/keygen") ? [first, second] : [second, first];
      assert.equal(keygenHook.url, "/hooks/keygen?source=herald");
      assert.equal(standardHook.url, "/hooks/standard");

      // Keygen format: both signatures checked, the payload decoded from its JSON string.
      const material = await manager.endpoints.signingMaterial({ id: keygen.id });
      const verifier = WebhookVerifier.fromSigningMaterial(material);
      const request = webhookRequestFromNode(keygenHook, keygenHook.body);
      const event = verifier.verify(request);
      assert.deepEqual(event.verifiedBy, ["keygen", "standard-webhooks"]);
      assert.equal(event.eventType, "license.created");
      assert.equal(event.info, catalog.LICENSE_CREATED);
      assert.equal(event.tenantId, keys.tenantId);
      assert.equal(event.data.id, "lic_7");
      assert.equal(event.payload.data.attributes.name, "license lic_7");
      const deliveries = (await manager.deliveries.list({ endpointId: keygen.id })).deliveries;
      assert.equal(event.deliveryId, deliveries[0]!.id);
      assert.equal(event.idempotencyToken, deliveries[0]!.idempotencyToken);

      // The tenant's public key alone verifies the Keygen signature (the one-call helper).
      const tenantRecord = await herald.admin().admin.getTenant({ id: keys.tenantId });
      assert.deepEqual(verifyWebhook(request, { keygenPublicKey: tenantRecord.publicKey }).verifiedBy, ["keygen"]);

      // A tampered body is refused by each scheme on its own.
      const tampered = { ...request, body: Buffer.from(keygenHook.body.toString().replace("lic_7", "lic_8")) };
      assert.throws(
        () => verifyWebhook(tampered, { keygenPublicKey: tenantRecord.publicKey }),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "digest-mismatch",
      );
      assert.throws(
        () => verifyWebhook(tampered, { secrets: [material.secret] }),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "bad-signature",
      );
      // A forged Digest for the tampered body does not help: the signature covers it.
      const { createHash } = await import("node:crypto");
      const forged = {
        ...tampered,
        headers: { ...keygenHook.headers, digest: `sha-256=${createHash("sha256").update(tampered.body).digest("base64")}` },
      };
      assert.throws(
        () => verifyWebhook(forged, { keygenPublicKey: tenantRecord.publicKey }),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "bad-signature",
      );
      // Replayed ten minutes later: refused.
      assert.throws(
        () => verifier.verify(request, new Date(Date.now() + 600_000)),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "outside-tolerance",
      );
      // Another endpoint's secret does not verify this one.
      const standardMaterial = await manager.endpoints.signingMaterial({ id: standard.id });
      const { "keygen-signature": _ignored, ...withoutKeygen } = keygenHook.headers;
      assert.throws(
        () => verifyWebhook({ ...request, headers: withoutKeygen }, { secrets: [standardMaterial.secret] }),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "bad-signature",
      );

      // Standard Webhooks format: `data` is the payload, `webhook-id` the idempotency token.
      const standardEvent = verifyWebhook(webhookRequestFromNode(standardHook, standardHook.body), {
        secrets: [standardMaterial.secret],
      });
      assert.deepEqual(standardEvent.verifiedBy, ["standard-webhooks"]);
      assert.equal(standardEvent.eventType, "license.created");
      assert.equal(standardEvent.data.attributes.name, "license lic_7");
      assert.ok(standardEvent.timestamp);
      assert.equal(standardEvent.idempotencyToken, standardHook.headers["webhook-id"]);
      assert.throws(
        () =>
          verifyWebhook(
            { ...webhookRequestFromNode(standardHook, standardHook.body), body: Buffer.concat([standardHook.body, Buffer.from(" ")]) },
            { secrets: [standardMaterial.secret] },
          ),
        (e: unknown) => e instanceof WebhookVerificationError && e.reason === "bad-signature",
      );
    } finally {
      await receiver.stop();
    }
  });
});
