"""`hpcgw demo` really serves, and a second start on the same data directory continues it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import StartServer

LOGIN = re.compile(r"^\s+(admin|manager|researcher)\s+\S+\s+(\S+@\S+)\s+(\S+)$", re.MULTILINE)
ADMIN = "admin@consortium.example.org"


def _logins(output: str) -> dict[str, str]:
    return {email: password for _, email, password in LOGIN.findall(output)}


def test_demo_serves_the_api_and_its_printed_logins_work_across_restarts(
    start_server: StartServer, tmp_path: Path
) -> None:
    args = ["demo", "--data-dir", str(tmp_path / "data")]
    first = start_server(args)
    try:
        first.wait_healthy()
        assert httpx.get(f"{first.url}/docs", timeout=5).status_code == 200
        logins = _logins(first.output())
        token = httpx.post(f"{first.url}/api/v1/auth/token", timeout=10, data={
            "grant_type": "password", "username": ADMIN, "password": logins[ADMIN]})
        assert token.status_code == 200, token.text
    finally:
        first.stop()

    second = start_server(args)
    try:
        second.wait_healthy()
        # the first run's token still valid: the signing key was kept
        me = httpx.get(f"{second.url}/api/v1/me", timeout=10, headers={
            "Authorization": f"Bearer {token.json()['access_token']}"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == ADMIN
    finally:
        second.stop()
    assert _logins(second.output()) == logins
    assert len(logins) == 7
