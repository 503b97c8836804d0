"""Helpers of the webhook tests: a real HTTP receiver on 127.0.0.1, the receiver's side of the
signature check (as docs/webhooks.md shows it), and running the delivery worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from jobs_helpers import World

from consortium.base import utcnow
from gateway.db import Database
from gateway.settings import Settings
from gateway.webhooks.config import WebhookSettings
from gateway.webhooks.delivery import DeliveryWorker

# what the tests' receiver needs: loopback allowed by address, quick retries
LOOPBACK = WebhookSettings(worker_in_serve=False, allowed_hosts=["127.0.0.1"],
                           poll_seconds=0.02, timeout_seconds=2.0, backoff_base_seconds=0.2,
                           backoff_cap_seconds=5.0, max_attempts=3)


@dataclass
class Served:
    """The app on a database really committed to, and its world."""

    world: World
    client: TestClient
    database: Database


@dataclass
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """Answers each POST with the next status of `answers` (200 once they run out)."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0  # seconds before each answer
    received: list[Received] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} request(s) received, {count} "
                                     "expected")
            return list(self.received)


@contextmanager
def receiver(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1; https with `tls` (a server context)."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append(Received(time.monotonic(), self.path,
                                               dict(self.headers.items()), body))
                status = state.answers.pop(0) if state.answers else 200
                state.lock.notify_all()
            time.sleep(state.delay)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hooks/hpcgw"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, word for word the one in docs/webhooks.md."""
    timestamp = headers["X-Hpcgw-Timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old (or from the future): a replay
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Hpcgw-Signature"])


def deliver_due(database: Database, settings: Settings, **worker: Any) -> int:
    """One batch of the delivery worker; how many deliveries it attempted."""
    return anyio.run(DeliveryWorker(database, settings, **worker).run_once)


def run_worker_until(database: Database, settings: Settings, done: Callable[[], bool],
                     timeout: float = 10.0) -> None:
    """The worker's loop, in real time, until `done()` (or fail after `timeout`)."""
    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(DeliveryWorker(database, settings).run, stop)
            try:
                with anyio.fail_after(timeout):
                    while not done():  # noqa: ASYNC110 - state other threads change
                        await anyio.sleep(0.01)
            finally:
                stop.set()
    anyio.run(main)


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name`, its own authority, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
