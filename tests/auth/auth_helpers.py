"""Helpers of the authentication tests: login calls and a JWKS server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from fastapi.testclient import TestClient

TOKEN_URL = "/api/v1/auth/token"
# requests come from this peer; it is a trusted proxy, so X-Forwarded-For picks the client
PEER = "127.0.0.1"

MakeClient = Callable[..., TestClient]


def login(client: TestClient, email: str, password: str, address: str = "10.0.0.1",
          ) -> httpx.Response:
    return client.post(
        TOKEN_URL,
        data={"grant_type": "password", "username": email, "password": password},
        headers={"X-Forwarded-For": address},
    )


def refresh(client: TestClient, token: str) -> httpx.Response:
    return client.post(TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": token})


class JwksServer:
    """Serves `jwks` at /jwks on 127.0.0.1 and counts the fetches."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps(server.jwks).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
