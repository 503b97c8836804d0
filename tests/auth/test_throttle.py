"""Failed logins are throttled per account and per address, for a while only, never for good."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from auth_helpers import MakeClient, login
from factories import PASSWORD, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium import throttle
from consortium.base import utcnow
from consortium.errors import Throttled
from consortium.models import LoginThrottle
from gateway.auth import login as login_flow
from gateway.db import Database
from gateway.settings import LoginThrottleSettings

POLICY = LoginThrottleSettings(
    window_seconds=900, max_failures_per_account=3, max_failures_per_address=5,
    base_block_seconds=30, max_block_seconds=900,
)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client(login_throttle=POLICY)


def test_account_is_blocked_after_its_failures_with_429_and_retry_after(
    client: TestClient, session: Session
) -> None:
    make_user(session, email="ann@example.test")
    for i in range(3):  # from three addresses: the account's own counter trips
        assert login(client, "ann@example.test", "bad", address=f"10.0.0.{i}").status_code == 401

    response = login(client, "ann@example.test", PASSWORD, address="10.0.0.99")

    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = int(response.headers["retry-after"])
    assert 20 <= retry_after <= 30  # the base block, less the seconds the attempts took
    assert response.json()["type"] == "/problems/too-many-requests"
    assert response.json()["retry_after"] == retry_after


def test_blocked_attempt_is_refused_before_the_password_is_checked(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(session, email="ben@example.test")
    checks: list[str] = []
    real_verify = login_flow.verify_password

    def counting_verify(password_hash: str | None, password: str) -> bool:
        checks.append(password)
        return real_verify(password_hash, password)

    monkeypatch.setattr(login_flow, "verify_password", counting_verify)
    for _ in range(3):
        login(client, "ben@example.test", "bad")
    assert login(client, "ben@example.test", PASSWORD).status_code == 429

    assert checks == ["bad", "bad", "bad"]


def test_address_is_blocked_after_failures_on_many_accounts(client: TestClient,
                                                           session: Session) -> None:
    make_user(session, email="cat@example.test")
    for i in range(5):
        assert login(client, f"spray{i}@example.test", "bad", address="10.6.6.6").status_code == 401

    assert login(client, "cat@example.test", PASSWORD, address="10.6.6.6").status_code == 429
    assert login(client, "cat@example.test", PASSWORD, address="10.7.7.7").status_code == 200


def test_login_works_again_once_the_block_has_expired(client: TestClient,
                                                      session: Session) -> None:
    make_user(session, email="dan@example.test")
    for _ in range(3):
        login(client, "dan@example.test", "bad")
    assert login(client, "dan@example.test", PASSWORD).status_code == 429

    past = utcnow() - timedelta(seconds=1)
    session.execute(update(LoginThrottle).values(blocked_until=past, window_started_at=past))

    assert login(client, "dan@example.test", PASSWORD).status_code == 200
    assert session.get(LoginThrottle, "account:dan@example.test") is None


def test_successful_login_resets_the_account_counter(client: TestClient,
                                                     session: Session) -> None:
    make_user(session, email="eve@example.test")
    for _ in range(2):
        assert login(client, "eve@example.test", "bad").status_code == 401
    assert login(client, "eve@example.test", PASSWORD).status_code == 200

    for _ in range(2):
        assert login(client, "eve@example.test", "bad").status_code == 401
    assert login(client, "eve@example.test", PASSWORD).status_code == 200


def test_blocks_grow_exponentially_and_are_capped(session: Session) -> None:
    now = utcnow()
    waits: list[int] = []
    for _ in range(21):  # an attacker retrying the moment each block ends
        try:
            throttle.begin_attempt(session, POLICY, email="f@x.test", address=None, now=now)
        except Throttled as exc:
            waits.append(exc.retry_after)
            now += timedelta(seconds=exc.retry_after)

    assert waits == [30, 60, 120, 240, 480, 900, 900, 900, 900]


def test_counter_resets_after_a_quiet_window(session: Session) -> None:
    now = utcnow()
    for _ in range(3):
        throttle.begin_attempt(session, POLICY, email="g@x.test", address="10.1.1.1", now=now)
    with pytest.raises(Throttled):
        throttle.begin_attempt(session, POLICY, email="g@x.test", address="10.1.1.1", now=now)

    later = now + timedelta(seconds=30 + 900)  # the block, then a whole quiet window
    throttle.begin_attempt(session, POLICY, email="g@x.test", address="10.1.1.1", now=later)

    row = session.get(LoginThrottle, "account:g@x.test")
    assert row is not None
    assert (row.failures, row.blocked_until) == (1, None)


def test_success_gives_the_address_its_attempt_back_and_lifts_a_block_it_set(
    session: Session,
) -> None:
    now = utcnow()
    for i in range(4):
        throttle.begin_attempt(session, POLICY, email=f"h{i}@x.test", address="10.2.2.2", now=now)
    throttle.begin_attempt(session, POLICY, email="ok@x.test", address="10.2.2.2", now=now)
    assert session.get(LoginThrottle, "addr:10.2.2.2").blocked_until is not None  # type: ignore[union-attr]

    throttle.attempt_succeeded(session, POLICY, email="ok@x.test", address="10.2.2.2", now=now)

    row = session.get(LoginThrottle, "addr:10.2.2.2")
    assert row is not None
    assert (row.failures, row.blocked_until) == (4, None)


def test_prune_forgets_counters_whose_window_is_over(session: Session) -> None:
    now = utcnow()
    throttle.begin_attempt(session, POLICY, email="old@x.test", address=None,
                           now=now - timedelta(seconds=901))
    throttle.begin_attempt(session, POLICY, email="new@x.test", address=None, now=now)

    assert throttle.prune(session, POLICY, now) == 1
    assert session.scalars(select(LoginThrottle.key)).all() == ["account:new@x.test"]


def test_parallel_guesses_cannot_exceed_the_limit(fresh_database: Database) -> None:
    """Attempts are counted before the password check, under a lock: of 12 simultaneous
    guesses on one account only the limit's worth go through."""
    passed: list[int] = []
    refused: list[int] = []
    barrier = threading.Barrier(12)
    now = utcnow()

    def attempt(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            with fresh_database.transaction() as s:
                throttle.begin_attempt(s, POLICY, email="par@x.test", address=f"10.3.3.{i}",
                                       now=now)
            passed.append(i)
        except Throttled:
            refused.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert (len(passed), len(refused)) == (3, 9)
