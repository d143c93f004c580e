/**
 * What the live tests run against: a real Herald process (SQLite in a temp dir, on
 * 127.0.0.1:0), a TCP proxy in front of it that can drop, refuse or stall connections,
 * and a real HTTP receiver for its webhooks.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from "node:http";
import { connect as tcpConnect, createServer as createTcpServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { fileURLToPath } from "node:url";

import { HeraldClient, Role } from "../src/index.js";

/** The repository root, from `sdks/typescript/build-test/test/`. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

/** How long a test waits for something Herald does on its own (a webhook, a tail event). */
export const WAIT_MS = 15_000;

export interface Herald {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly adminKey: string;
  admin(): HeraldClient;
  /** Creates tenant `id` and one key per role through the SDK's admin calls. */
  tenant(id: string): Promise<TenantKeys>;
  stop(): Promise<void>;
}

export interface TenantKeys {
  readonly tenantId: string;
  readonly publisher: string;
  readonly subscriber: string;
  readonly manager: string;
}

/**
 * Starts `HERALD_BIN` (default: the repository's `target/debug/herald`) with a fresh SQLite
 * database; webhooks may go to plain-HTTP 127.0.0.1, tails beat every second, retries come
 * after 1 s and 2 s. Resolves once its "herald listening" line names the bound address.
 */
export async function startHerald(): Promise<Herald> {
  const bin = process.env.HERALD_BIN || join(REPO_ROOT, "target/debug/herald");
  if (!existsSync(bin)) {
    throw new Error(`no Herald binary at ${bin}: run \`cargo build -p herald --bin herald\` or set HERALD_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), "herald-ts-sdk-"));
  const adminKey = `ts-sdk-test-admin-${process.pid}`;
  // Only our settings: a developer's HERALD_* or RUST_LOG must not change the server.
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("HERALD_") && name !== "RUST_LOG" && name !== "DATABASE_URL") {
      env[name] = value;
    }
  }
  Object.assign(env, {
    HERALD_LISTEN_ADDR: "127.0.0.1:0",
    HERALD_DATABASE_URL: `sqlite://${join(dir, "herald.db")}?mode=rwc`,
    HERALD_ADMIN_KEY: adminKey,
    HERALD_ALLOW_HTTP_ENDPOINTS: "true",
    HERALD_EGRESS_ALLOW_CIDRS: '["127.0.0.1/32"]',
    HERALD_HEARTBEAT_INTERVAL_SECS: "1",
    HERALD_RETRY_SCHEDULE_SECS: "[1, 2]",
    HERALD_WEBHOOK_TIMEOUT_SECS: "3",
    HERALD_LOG_FORMAT: "json",
    HERALD_LOG: "info",
  });
  const child = spawn(bin, ["serve"], { env, cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const port = await new Promise<number>((resolvePort, reject) => {
    const recent: string[] = [];
    const timer = setTimeout(() => fail(new Error("Herald did not log `herald listening` within 60 s")), 60_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${error.message}\n--- its last output ---\n${recent.join("\n")}`));
    };
    const onLine = (line: string) => {
      recent.push(line);
      if (recent.length > 40) {
        recent.shift();
      }
      if (!line.includes("herald listening")) {
        return;
      }
      try {
        const addr: string = JSON.parse(line).fields.addr;
        clearTimeout(timer);
        resolvePort(Number(addr.slice(addr.lastIndexOf(":") + 1)));
      } catch (error) {
        fail(new Error(`cannot read the address from: ${line} (${error})`));
      }
    };
    // Both streams are read to the end, so a chatty server never blocks on a full pipe.
    createInterface({ input: child.stdout! }).on("line", onLine);
    createInterface({ input: child.stderr! }).on("line", onLine);
    child.once("error", (error) => fail(error));
    child.once("exit", (code, signal) => fail(new Error(`Herald exited early (${code ?? signal})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const clients: HeraldClient[] = [];
  const herald: Herald = {
    url,
    port,
    adminKey,
    admin() {
      const client = new HeraldClient(url, adminKey);
      clients.push(client);
      return client;
    },
    async tenant(id) {
      const admin = herald.admin().admin;
      await admin.createTenant({ id, name: `Tenant ${id}` });
      const keys: string[] = [];
      for (const role of [Role.PUBLISHER, Role.SUBSCRIBER, Role.MANAGER]) {
        keys.push((await admin.createApiKey({ tenantId: id, role, name: Role[role] })).secret);
      }
      return { tenantId: id, publisher: keys[0]!, subscriber: keys[1]!, manager: keys[2]! };
    },
    async stop() {
      clients.forEach((c) => c.close());
      await stopProcess(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return herald;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  // The start-up watcher would report this exit as a failure.
  child.removeAllListeners("exit");
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/** A TCP proxy on 127.0.0.1 in front of `targetPort`. */
export class Proxy {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #pairs: Array<[Socket, Socket]> = [];
  #stall = false;
  port = 0;
  /** Connections accepted so far: a reconnection shows up here. */
  accepted = 0;

  private constructor(private readonly targetPort: number) {}

  static async start(targetPort: number): Promise<Proxy> {
    const proxy = new Proxy(targetPort);
    await proxy.up();
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Listens (again, on the same port once it had one). */
  async up(): Promise<void> {
    const server = createTcpServer((inbound) => this.#accept(inbound));
    await new Promise<void>((done, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => done());
    });
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  #accept(inbound: Socket): void {
    this.accepted += 1;
    this.#sockets.add(inbound);
    inbound.on("close", () => this.#sockets.delete(inbound));
    inbound.on("error", () => {});
    if (this.#stall) {
      // Holds the socket open, silent, until dropped.
      return;
    }
    const outbound = tcpConnect(this.targetPort, "127.0.0.1");
    this.#sockets.add(outbound);
    outbound.on("close", () => {
      this.#sockets.delete(outbound);
      inbound.destroy();
    });
    outbound.on("error", () => {});
    inbound.on("close", () => outbound.destroy());
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    this.#pairs.push([inbound, outbound]);
  }

  /**
   * The open connections stop carrying bytes but stay open, as a path whose NAT forgot
   * them: only an idle timeout notices. New connections are not affected.
   */
  freeze(): void {
    for (const [inbound, outbound] of this.#pairs.splice(0)) {
      inbound.unpipe(outbound);
      outbound.unpipe(inbound);
      inbound.pause();
      outbound.pause();
    }
  }

  /** Cuts every open connection (both sides see them close). */
  dropConnections(): void {
    for (const socket of this.#sockets) {
      socket.resetAndDestroy();
    }
    this.#sockets.clear();
    this.#pairs.length = 0;
  }

  /** Stops listening (connections are refused) and cuts the open ones. */
  async down(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.dropConnections();
    if (server) {
      await new Promise<void>((done) => server.close(() => done()));
    }
  }

  /** New connections hang (or forward again with `false`). */
  stall(on: boolean): void {
    this.#stall = on;
  }
}

/** A webhook as the receiver got it. */
export interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** An HTTP server on 127.0.0.1:0 that answers 204 to everything and keeps what it got. */
export class Receiver {
  readonly #queue: Received[] = [];
  readonly #waiters: Array<(r: Received) => void> = [];

  private constructor(
    private readonly server: HttpServer,
    readonly port: number,
  ) {}

  static async start(): Promise<Receiver> {
    let receiver: Receiver | undefined;
    const server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        res.writeHead(204).end();
        receiver!.#push({ method: req.method ?? "", url: req.url ?? "/", headers: req.headers, body: Buffer.concat(chunks) });
      });
    });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()));
    receiver = new Receiver(server, (server.address() as AddressInfo).port);
    return receiver;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  #push(received: Received): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter(received);
    } else {
      this.#queue.push(received);
    }
  }

  /** The next request, or a rejection after `withinMs`. */
  next(withinMs = WAIT_MS): Promise<Received> {
    const queued = this.#queue.shift();
    if (queued) {
      return Promise.resolve(queued);
    }
    return new Promise((done, reject) => {
      const waiter = (r: Received) => {
        clearTimeout(timer);
        done(r);
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`no webhook arrived within ${withinMs} ms`));
      }, withinMs);
      this.#waiters.push(waiter);
    });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((done) => this.server.close(() => done()));
  }
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]);
}

/** The self-signed certificate (and key) for `localhost` / 127.0.0.1 that the TLS tests trust. */
export const TEST_CERT = readFileSync(join(REPO_ROOT, "sdks/typescript/test/fixtures/localhost.crt"));
const TEST_KEY = readFileSync(join(REPO_ROOT, "sdks/typescript/test/fixtures/localhost.key"));

/**
 * A TLS terminator on 127.0.0.1 in front of Herald's plaintext port: it offers HTTP/2 by
 * ALPN and passes the decrypted bytes through, so clients speak gRPC over TLS end to end.
 */
export class TlsTerminator {
  private constructor(
    private readonly server: TlsServer,
    readonly port: number,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(targetPort: number): Promise<TlsTerminator> {
    const sockets = new Set<Socket>();
    const server = createTlsServer({ key: TEST_KEY, cert: TEST_CERT, ALPNProtocols: ["h2"] }, (inbound) => {
      const outbound = tcpConnect(targetPort, "127.0.0.1");
      for (const socket of [inbound, outbound]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
      }
      inbound.on("error", () => outbound.destroy());
      outbound.on("error", () => inbound.destroy());
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    // A refused handshake (the untrusting client) is part of the test, not a failure.
    server.on("tlsClientError", () => {});
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()));
    return new TlsTerminator(server, (server.address() as AddressInfo).port, sockets);
  }

  /** Stops listening and cuts the open connections (clients still hold theirs). */
  async stop(): Promise<void> {
    this.sockets.forEach((socket) => socket.destroy());
    await new Promise<void>((done) => this.server.close(() => done()));
  }
}
