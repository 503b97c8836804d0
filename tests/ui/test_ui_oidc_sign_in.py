"""Signing in to the pages through an OpenID Connect provider (authorization code, PKCE, state,
nonce), against a small local provider: its JWKS and token endpoints on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from factories import make_member, make_user
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from consortium.models import Role
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import OidcSettings, Settings
from gateway.ui.auth import SESSION_COOKIE

ISSUER = "https://idp.example.test"
CLIENT_ID = "hpcgw-web"


class Provider:
    """Token endpoint that gives an ID token for a code it issued, to the PKCE verifier of
    the challenge the code was issued for; and the JWKS of its key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, str]] = {}  # code -> challenge, nonce, email
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key()))
                self._answer(200, {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                grant = provider.codes.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if grant is None or grant["challenge"] != challenge:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                token = jwt.encode({"iss": ISSUER, "aud": CLIENT_ID, "sub": "idp-42",
                                    "email": grant["email"], "email_verified": True,
                                    "nonce": grant["nonce"], "iat": now, "exp": now + 300},
                                   provider.key, algorithm="RS256", headers={"kid": "k1"})
                self._answer(200, {"id_token": token, "token_type": "Bearer"})

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    thread = threading.Thread(target=provider.httpd.serve_forever, daemon=True)
    thread.start()
    yield provider
    provider.httpd.shutdown()
    provider.httpd.server_close()


@pytest.fixture
def client(settings: Settings, database: Database, provider: Provider) -> Iterator[TestClient]:
    oidc = OidcSettings(issuer=ISSUER, audience=CLIENT_ID, jwks_url=f"{provider.url}/jwks",
                        authorization_url=f"{ISSUER}/authorize", token_url=f"{provider.url}/token",
                        client_id=CLIENT_ID)
    with TestClient(create_app(settings.model_copy(update={"oidc": oidc}),
                               database=database)) as client:
        yield client


def _to_provider(client: TestClient, provider: Provider, email: str) -> dict[str, str]:
    """Start the sign-in; the provider 'authenticates' the person and issues a code."""
    answer = client.get("/ui/sign-in/oidc?next=/ui/members/m1", follow_redirects=False)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/authorize"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["code_challenge_method"] == "S256" and query["client_id"] == CLIENT_ID
    provider.codes["code-1"] = {"challenge": query["code_challenge"], "nonce": query["nonce"],
                                "email": email}
    return query


def test_sign_in_with_the_provider_opens_a_session_for_the_verified_email(
        client: TestClient, provider: Provider, session: Session) -> None:
    member = make_member(session, slug="m1")
    user = make_user(session, roles={member: Role.manager})
    session.commit()
    query = _to_provider(client, provider, user.email)
    answer = client.get(f"/ui/sign-in/oidc/callback?code=code-1&state={query['state']}",
                        follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/members/m1"
    assert client.cookies.get(SESSION_COOKIE)
    assert client.get("/ui/members/m1").status_code == 200


def test_a_callback_with_another_state_is_refused(client: TestClient, provider: Provider,
                                                  session: Session) -> None:
    user = make_user(session)
    session.commit()
    _to_provider(client, provider, user.email)
    answer = client.get("/ui/sign-in/oidc/callback?code=code-1&state=forged",
                        follow_redirects=False)
    assert answer.status_code == 401
    assert not client.cookies.get(SESSION_COOKIE)
    assert "code-1" in provider.codes  # the code was never redeemed


def test_without_a_configured_provider_the_oidc_sign_in_is_404(app_client: TestClient) -> None:
    assert app_client.get("/ui/sign-in/oidc", follow_redirects=False).status_code == 404
    assert "/ui/sign-in/oidc" not in app_client.get("/ui/sign-in").text
