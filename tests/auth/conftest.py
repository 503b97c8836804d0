"""Fixtures of the authentication tests: clients with chosen settings, a JWKS server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from auth_helpers import PEER, JwksServer, MakeClient
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings


@pytest.fixture
def make_client(settings: Settings, database: Database) -> Iterator[MakeClient]:
    """A TestClient over an app built with `settings` changed by the given fields."""
    clients: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        changed = settings.model_copy(update={"trusted_proxies": [f"{PEER}/32"], **changes})
        client = TestClient(create_app(changed, database=database), client=(PEER, 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server
