"""`hpcgw login --device`: the OIDC device flow (RFC 8628) against a small fake provider on
loopback, whose tokens a live `hpcgw demo` accepts (it trusts the provider's JWKS); the
provider's refresh token then renews the session silently."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from server_process import ServerProcess
from typer.testing import CliRunner

from gateway.cli import app, profiles

AUDIENCE = "hpcgw-cli"
EMAIL = "karim.haddad@lirmm-ai.example.org"  # the demo's lab researcher


class FakeProvider:
    """Discovery, JWKS, a device endpoint and a token endpoint that answers
    `authorization_pending` once before it issues tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token_calls: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._send(200, {"issuer": provider.issuer,
                                     "device_authorization_endpoint": f"{provider.issuer}/device",
                                     "token_endpoint": f"{provider.issuer}/token",
                                     "jwks_uri": f"{provider.issuer}/jwks"})
                elif self.path == "/jwks":
                    public = jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key(),
                                                                as_dict=True)
                    self._send(200, {"keys": [{**public, "kid": "k1", "alg": "RS256",
                                               "use": "sig"}]})
                else:
                    self._send(404, {})

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path == "/device":
                    assert form["client_id"] == AUDIENCE
                    self._send(200, {"device_code": "dev-1", "user_code": "WDJB-MJHT",
                                     "verification_uri": f"{provider.issuer}/activate",
                                     "interval": 0, "expires_in": 60})
                    return
                provider.token_calls.append(form)
                if form["grant_type"].endswith("device_code") and len(provider.token_calls) == 1:
                    self._send(400, {"error": "authorization_pending"})
                    return
                self._send(200, {"access_token": provider.sign(),
                                 "refresh_token": f"idp-r{len(provider.token_calls)}",
                                 "expires_in": 300, "token_type": "Bearer"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def sign(self) -> str:
        now = int(time.time())
        return jwt.encode({"iss": self.issuer, "aud": AUDIENCE, "sub": "idp-karim",
                           "email": EMAIL, "email_verified": True, "iat": now,
                           "exp": now + 300}, self.key, algorithm="RS256",
                          headers={"kid": "k1"})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.close()


def test_device_flow_logs_in_and_the_providers_refresh_token_renews_silently(
        provider: FakeProvider, hpcgw: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")} | {
        "HPCGW_OIDC__ISSUER": provider.issuer, "HPCGW_OIDC__AUDIENCE": AUDIENCE,
        "HPCGW_OIDC__JWKS_URL": f"{provider.issuer}/jwks"}
    server = ServerProcess(hpcgw, ["demo", "--data-dir", str(tmp_path / "data")], env,
                           tmp_path / "server.log")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    try:
        server.wait_healthy()
        login = CliRunner().invoke(app, ["login", server.url, "--device"])
        assert login.exit_code == 0, login.output
        assert f"Open {provider.issuer}/activate and enter the code WDJB-MJHT" in login.stderr
        profile = profiles.load().profiles["default"]
        assert (profile.kind, profile.email, profile.refresh_token) == (
            profiles.Kind.oidc, EMAIL, "idp-r2")

        profile.expires_at = time.time() - 1
        profiles.store("default", profile, make_default=True)
        jobs = CliRunner().invoke(app, ["jobs", "--json"])
        assert jobs.exit_code == 0, jobs.output
        assert provider.token_calls[-1] == {"grant_type": "refresh_token",
                                            "refresh_token": "idp-r2", "client_id": AUDIENCE}
        assert profiles.load().profiles["default"].refresh_token == "idp-r3"
    finally:
        server.stop()
