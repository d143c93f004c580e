"""What the live tests run against: a real Herald process (the binary from $HERALD_BIN,
default <repo>/target/debug/herald) on a fresh SQLite database, a TCP proxy in front of it
that can drop, refuse or stall connections, and an HTTP receiver for its webhooks."""

from __future__ import annotations

import http.server
import json
import os
import queue
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from herald_sdk import Client, pb

REPO = Path(__file__).resolve().parents[3]
ADMIN_KEY = "sdk-python-test-admin-key"
START_TIMEOUT = 60.0


class Herald:
    """A Herald process: webhooks may go to plain-HTTP 127.0.0.1, tails beat every second,
    retries come after 1 s and 2 s."""

    def __init__(self) -> None:
        binary = Path(os.environ.get("HERALD_BIN") or REPO / "target/debug/herald")
        if not binary.exists():
            raise RuntimeError(
                f"{binary} does not exist: build it (`cargo build -p herald --bin herald`) "
                "or set HERALD_BIN"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="herald-py-sdk-")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HERALD_") and k not in ("DATABASE_URL",)
        }
        env.update(
            HERALD_LISTEN_ADDR="127.0.0.1:0",
            HERALD_DATABASE_URL=f"sqlite://{self._dir.name}/herald.db?mode=rwc",
            HERALD_ADMIN_KEY=ADMIN_KEY,
            HERALD_ALLOW_HTTP_ENDPOINTS="true",
            HERALD_EGRESS_ALLOW_CIDRS='["127.0.0.1/32"]',
            HERALD_HEARTBEAT_INTERVAL_SECS="1",
            HERALD_RETRY_SCHEDULE_SECS="[1, 2]",
            HERALD_WEBHOOK_TIMEOUT_SECS="3",
            HERALD_LOG_FORMAT="json",
        )
        self.log_path = Path(self._dir.name) / "herald.log"
        self.process = subprocess.Popen(
            [str(binary), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addr = self._wait_for_listening()

    def _wait_for_listening(self) -> str:
        found: "queue.Queue[Optional[str]]" = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def drain() -> None:
            # Keeps reading after the line so the pipe never fills and stalls Herald.
            with open(self.log_path, "wb") as log:
                for line in stdout:
                    log.write(line)
                    log.flush()
                    if b"herald listening" in line:
                        try:
                            found.put(json.loads(line)["fields"]["addr"])
                        except (ValueError, KeyError):
                            found.put(None)
            found.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            addr = found.get(timeout=START_TIMEOUT)
        except queue.Empty:
            addr = None
        if addr is None:
            self.stop()
            raise RuntimeError(f"Herald did not log `herald listening`:\n{self.log()}")
        return addr

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def admin(self) -> Client:
        return Client(self.url, ADMIN_KEY)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._dir.cleanup()


@dataclass
class TenantKeys:
    herald: Herald
    tenant_id: str
    publisher: str
    subscriber: str
    manager: str

    def client(self, key: str, address: Optional[str] = None, **options) -> Client:
        return Client(address or self.herald.url, key, **options)


@pytest.fixture(scope="session")
def herald():
    server = Herald()
    yield server
    server.stop()


@pytest.fixture
def tenant(herald: Herald) -> TenantKeys:
    """A fresh tenant (each test its own, on the shared server) with one key per role,
    made through the SDK's admin calls."""
    tenant_id = f"t-{uuid.uuid4().hex[:12]}"
    with herald.admin() as admin_client:
        admin = admin_client.admin
        admin.create_tenant(id=tenant_id, name=f"Tenant {tenant_id}")
        keys = [
            admin.create_api_key(
                tenant_id=tenant_id, role=role, name=pb.Role.Name(role)
            ).secret
            for role in (pb.ROLE_PUBLISHER, pb.ROLE_SUBSCRIBER, pb.ROLE_MANAGER)
        ]
    return TenantKeys(herald, tenant_id, *keys)


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``target``. ``drop()`` cuts the open
    connections; ``freeze()`` silences them; ``refuse(n)`` closes the next ``n`` connections at once; ``stall()``
    makes new connections hang without an answer."""

    def __init__(self, target: str, tls: Optional[ssl.SSLContext] = None) -> None:
        self._tls = tls
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: List[socket.socket] = []
        self._flows: List[threading.Event] = []
        self._refuse = 0
        self._stall = False
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self._refuse > 0:
                    self._refuse -= 1
                    conn.close()
                    continue
                self._open.append(conn)
                if self._stall:
                    continue
            threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

    def _connect(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                # Terminates TLS here: Herald behind it speaks plaintext.
                conn = self._tls.wrap_socket(conn, server_side=True)
            upstream = socket.create_connection(self._target)
        except OSError:
            conn.close()
            return
        frozen = threading.Event()
        with self._lock:
            self._open += [conn, upstream]
            self._flows.append(frozen)
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(
                target=self._pump, args=(a, b, frozen), daemon=True
            ).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        try:
            while True:
                data = src.recv(65536)
                if frozen.is_set():
                    # A path that went silent: bytes vanish, the connection stays open.
                    continue
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def freeze(self) -> None:
        """The open connections stop carrying anything (new ones work)."""
        with self._lock:
            flows, self._flows = self._flows, []
        for frozen in flows:
            frozen.set()

    def refuse(self, n: int) -> None:
        with self._lock:
            self._refuse = n

    def stall(self) -> None:
        with self._lock:
            self._stall = True

    def close(self) -> None:
        self._listener.close()
        self.drop()


@pytest.fixture
def proxy(herald: Herald):
    p = Proxy(herald.addr)
    yield p
    p.close()


@dataclass
class Hook:
    method: str
    target: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and keeps the requests."""

    def __init__(self) -> None:
        self.hooks: "queue.Queue[Hook]" = queue.Queue()
        hooks = self.hooks

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hooks.put(Hook("POST", self.path, list(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def next(self, timeout: float = 20.0) -> Hook:
        return self.hooks.get(timeout=timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Tls:
    """A self-signed certificate for ``herald.test`` (and 127.0.0.1) and a TLS proxy in
    front of Herald presenting it."""

    certificate_pem: bytes
    proxy: Proxy


@pytest.fixture
def tls_proxy(herald: Herald):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("herald.test"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory() as d:
        cert_file, key_file = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    p = Proxy(herald.addr, tls=context)
    yield Tls(cert_pem, p)
    p.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
