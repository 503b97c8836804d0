"""Bearer tokens of an external OIDC provider, checked against its JWKS served on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from auth_helpers import JwksServer, MakeClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from factories import make_user
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from consortium.errors import Unauthenticated
from gateway.auth.oidc import OidcVerifier
from gateway.settings import OidcSettings

ISSUER = "https://idp.example.test/realms/consortium"
AUDIENCE = "hpcgw"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def next_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "RS256"
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "ES256"
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "idp-subject-1", "iat": now,
              "exp": now + 300, "email": "oidc@example.test", "email_verified": True}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: PrivateKey, kid: str = "k1", alg: str = "RS256", **changes: Any) -> str:
    return jwt.encode(_claims(**changes), key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: `alg: none`, or HMAC with a key PyJWT would refuse to use."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.fixture
def oidc_settings(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> OidcSettings:
    jwks_server.jwks = {"keys": [_jwk(rsa_key, "k1")]}
    return OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_server.url,
                        jwks_min_refetch_seconds=60, leeway_seconds=5)


@pytest.fixture
def client(make_client: MakeClient, oidc_settings: OidcSettings) -> TestClient:
    return make_client(oidc=oidc_settings)


def _me(client: TestClient, token: str) -> Any:
    return client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})


def test_token_signed_by_the_provider_is_accepted_for_the_verified_email(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    make_user(session, email="OIDC@example.test")

    response = _me(client, _sign(rsa_key))

    assert response.status_code == 200, response.text
    assert (response.json()["email"], response.json()["via"]) == ("OIDC@example.test", "oidc")


def test_user_is_found_by_subject_when_the_email_is_not_verified(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    user = make_user(session, email="bound@example.test")
    user.oidc_subject = "idp-subject-1"
    session.flush()

    response = _me(client, _sign(rsa_key, email_verified=False))

    assert response.status_code == 200
    assert response.json()["email"] == "bound@example.test"


def test_unverified_email_alone_matches_nobody(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    make_user(session, email="oidc@example.test")

    response = _me(client, _sign(rsa_key, email_verified=None))

    assert response.status_code == 401
    assert response.json()["detail"] == "no account matches this identity"


def test_account_bound_to_another_subject_is_not_taken_over_by_email(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    user = make_user(session, email="oidc@example.test")
    user.oidc_subject = "someone-else"
    session.flush()

    assert _me(client, _sign(rsa_key)).status_code == 401


def test_ec_keys_are_accepted_too(
    make_client: MakeClient, session: Session, jwks_server: JwksServer,
    oidc_settings: OidcSettings,
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.jwks = {"keys": [_jwk(ec_key, "ec1")]}
    make_user(session, email="oidc@example.test")

    response = _me(make_client(oidc=oidc_settings), _sign(ec_key, kid="ec1", alg="ES256"))

    assert response.status_code == 200


@pytest.mark.parametrize(("case", "changes"), [
    ("wrong audience", {"aud": "another-api"}),
    ("wrong issuer", {"iss": "https://evil.example.test"}),
    ("expired", {"exp": int(time.time()) - 60, "iat": int(time.time()) - 600}),
    ("not yet valid", {"nbf": int(time.time()) + 600}),
    ("no expiry", {"exp": None}),
])
def test_tokens_with_wrong_claims_are_refused(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey,
    case: str, changes: dict[str, Any],
) -> None:
    make_user(session, email="oidc@example.test")

    response = _me(client, _sign(rsa_key, **changes))

    assert response.status_code == 401, case
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_signed_by_an_unknown_key_is_refused(
    client: TestClient, session: Session, next_rsa_key: rsa.RSAPrivateKey
) -> None:
    make_user(session, email="oidc@example.test")

    assert _me(client, _sign(next_rsa_key, kid="k1")).status_code == 401  # known kid, wrong key
    response = _me(client, _sign(next_rsa_key, kid="k-unknown"))
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown signing key"


def test_alg_none_is_refused(client: TestClient, session: Session) -> None:
    make_user(session, email="oidc@example.test")

    for claims in (_claims(), _claims(iss="hpcgw", aud="hpcgw-api", sub="1")):
        token = _forge({"alg": "none", "kid": "k1", "typ": "JWT"}, claims, None)
        assert _me(client, token).status_code == 401


def test_hs256_signed_with_the_providers_public_key_is_refused(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    make_user(session, email="oidc@example.test")
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    token = _forge({"alg": "HS256", "kid": "k1", "typ": "JWT"}, _claims(), public_pem)

    response = _me(client, token)
    assert response.status_code == 401
    assert response.json()["detail"] == "token algorithm not accepted"


def test_algorithm_must_fit_the_key(
    client: TestClient, session: Session, rsa_key: rsa.RSAPrivateKey
) -> None:
    make_user(session, email="oidc@example.test")  # k1 is declared RS256 in the JWKS

    assert _me(client, _sign(rsa_key, alg="PS256")).status_code == 401


def test_new_key_id_refetches_the_jwks_but_at_most_once_a_minute(
    oidc_settings: OidcSettings, jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey, next_rsa_key: rsa.RSAPrivateKey,
) -> None:
    clock = [1000.0]
    verifier = OidcVerifier(oidc_settings, clock=lambda: clock[0])
    assert verifier.verify(_sign(rsa_key))["sub"] == "idp-subject-1"
    assert verifier.verify(_sign(rsa_key))["sub"] == "idp-subject-1"
    assert jwks_server.fetches == 1  # known keys are served from the cache

    jwks_server.jwks = {"keys": [_jwk(rsa_key, "k1"), _jwk(next_rsa_key, "k2")]}  # rotation
    clock[0] += 10
    for _ in range(5):  # forged kids cannot make the gateway hammer the provider
        with pytest.raises(Unauthenticated):
            verifier.verify(_sign(next_rsa_key, kid="k2"))
    assert jwks_server.fetches == 1

    clock[0] += 60
    assert verifier.verify(_sign(next_rsa_key, kid="k2"))["sub"] == "idp-subject-1"
    assert jwks_server.fetches == 2


def test_unreachable_jwks_refuses_tokens_without_error(
    oidc_settings: OidcSettings, rsa_key: rsa.RSAPrivateKey
) -> None:
    dead = oidc_settings.model_copy(update={"jwks_url": "http://127.0.0.1:9/jwks"})

    with pytest.raises(Unauthenticated, match="unknown signing key"):
        OidcVerifier(dead).verify(_sign(rsa_key))


@pytest.mark.parametrize("changes", [
    {"algorithms": ["RS256", "HS256"]},
    {"algorithms": ["none"]},
    {"algorithms": []},
    {"issuer": "hpcgw"},
])
def test_configuration_with_symmetric_algorithms_or_our_issuer_is_refused(
    oidc_settings: OidcSettings, changes: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        OidcVerifier(oidc_settings.model_copy(update=changes))
