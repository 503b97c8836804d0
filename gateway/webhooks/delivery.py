"""Sending webhooks: the delivery worker claims due deliveries, posts them signed, and retries
failures with exponential backoff until `max_attempts`.

A claim is a conditional UPDATE (`claimed_until` in the past) after a SELECT ... FOR UPDATE
SKIP LOCKED on PostgreSQL (SQLite serialises its writers anyway), so several workers, in one
process or in replicas, never send a delivery at the same time. A worker that dies during an
attempt leaves a claim that expires: that delivery is sent again. Delivery is therefore at least
once; receivers deduplicate on X-Hpcgw-Delivery.

Each attempt resolves and checks the target again (targets.py) and connects to the address it
checked; it follows no redirect, trusts no proxy variable, and reads no response body.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import anyio
import certifi
import httpx
from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.orm import Session

from consortium.base import utcnow
from gateway import metrics
from gateway.db import Database
from gateway.holders import holder_name
from gateway.logging import log
from gateway.webhooks import service, signing, targets
from gateway.webhooks.config import WebhooksConfig, WebhookSettings
from gateway.webhooks.models import DeliveryState, WebhookDelivery, WebhookSubscription

T = TypeVar("T")
USER_AGENT = "hpcgw-webhooks/0.1"
MAX_ERROR_LENGTH = 500
JITTER = 0.25  # a retry comes up to this fraction of its delay early: replicas do not align
PRUNE_EVERY_SECONDS = 3600.0


def retry_delay(settings: WebhookSettings, attempts: int,
                rand: Callable[[], float] = random.random) -> float:
    """The wait after the `attempts`-th failed attempt: doubling, capped, with jitter; each
    delay is longer than the one before it until the cap."""
    full = min(settings.backoff_cap_seconds,
               settings.backoff_base_seconds * 2.0 ** min(attempts - 1, 40))
    return full * (1 - JITTER * rand())


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker may attempt now (no ORM object crosses an await)."""

    id: int
    public_id: str
    event: str
    payload: str
    url: str
    secret_sealed: str


@dataclass(frozen=True)
class Outcome:
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_LENGTH]


class DeliveryWorker:
    def __init__(self, database: Database, settings: WebhooksConfig, *, holder: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.settings = settings.webhooks
        self.secret_key = settings.secret_key.get_secret_value()
        self.policy = targets.TargetPolicy.of(settings.webhooks)
        self.holder = holder or holder_name()
        self.clock = clock
        self.verify: ssl.SSLContext | bool = True  # httpx's authorities (certifi)
        if self.settings.ca_file is not None:
            self.verify = ssl.create_default_context(cafile=certifi.where())
            self.verify.load_verify_locations(cafile=str(self.settings.ca_file))
        # an attempt's whole budget: DNS, connect, send, answer (a slow drip cannot hold it)
        self.budget = self.settings.timeout_seconds * 2
        self.claim_ttl = timedelta(seconds=self.budget * 2 + 30)

    async def _db(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        def run() -> T:
            with self.database.transaction(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: anyio.Event) -> None:
        """Deliver until `stop` is set; a full batch is followed at once by the next."""
        pruned_at = float("-inf")
        while not stop.is_set():
            full = False
            try:
                full = await self.run_once() >= self.settings.batch_size
                if time.monotonic() - pruned_at >= PRUNE_EVERY_SECONDS:
                    await self._db(self._prune)
                    pruned_at = time.monotonic()
            except Exception:  # noqa: BLE001 - a bad batch must not end the deliveries
                log.exception("webhook delivery batch failed")
            if not full:
                with anyio.move_on_after(self.settings.poll_seconds):
                    await stop.wait()

    async def run_once(self) -> int:
        """Claim the due deliveries, attempt each, record the outcomes; how many were tried."""
        if not await self._db(self._due, write=False):
            return 0  # the common case takes no write lock
        claimed = await self._db(self._claim)
        if not claimed:
            return 0
        limiter = anyio.CapacityLimiter(self.settings.concurrency)
        async with self.client() as client, anyio.create_task_group() as group:
            for delivery in claimed:
                group.start_soon(self._deliver, client, limiter, delivery)
        return len(claimed)

    def client(self) -> httpx.AsyncClient:
        """No redirect followed, no proxy from the environment (it would defeat the checks)."""
        return httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=self.verify,
                                 timeout=self.settings.timeout_seconds)

    # --- claims -------------------------------------------------------------------------

    def _due_query(self, now: datetime) -> Select[int]:
        return (select(WebhookDelivery.id)
                .where(WebhookDelivery.state == DeliveryState.pending,
                       WebhookDelivery.next_attempt_at <= now,
                       or_(WebhookDelivery.claimed_until.is_(None),
                           WebhookDelivery.claimed_until <= now))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(self.settings.batch_size))

    def _due(self, session: Session) -> bool:
        return session.scalars(self._due_query(self.clock())).first() is not None

    def _claim(self, session: Session) -> list[Claimed]:
        now = self.clock()
        ids = list(session.scalars(self._due_query(now).with_for_update(skip_locked=True)))
        if not ids:
            return []
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.state == DeliveryState.pending,
                   or_(WebhookDelivery.claimed_until.is_(None),
                       WebhookDelivery.claimed_until <= now))
            .values(claimed_by=self.holder, claimed_until=now + self.claim_ttl))
        rows = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.public_id, WebhookDelivery.event,
                   WebhookDelivery.payload, WebhookSubscription.url,
                   WebhookSubscription.secret_sealed)
            .join(WebhookSubscription,
                  WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.claimed_by == self.holder)
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id))
        return [Claimed(id=i, public_id=p, event=e.value, payload=body, url=url,
                        secret_sealed=sealed) for i, p, e, body, url, sealed in rows]

    # --- attempts -----------------------------------------------------------------------

    async def _deliver(self, client: httpx.AsyncClient, limiter: anyio.CapacityLimiter,
                       delivery: Claimed) -> None:
        try:
            async with limiter:
                outcome = await self.attempt(client, delivery)
            metrics.webhook_attempt(outcome.delivered)
            await self._db(lambda s: self._record(s, delivery, outcome))
        except Exception:  # noqa: BLE001 - the claim expires and the delivery is tried again
            log.exception("webhook delivery failed", delivery=delivery.public_id)

    async def attempt(self, client: httpx.AsyncClient, delivery: Claimed) -> Outcome:
        """One POST of the delivery, signed now; never raises for the target's faults."""
        at = self.clock()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            with anyio.fail_after(self.budget):
                secret = signing.unseal(delivery.secret_sealed, self.secret_key)
                target = await targets.resolve(delivery.url, self.policy)
                status = await self._post(client, target, delivery, secret)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except targets.TargetRefused as exc:
            error = f"target refused: {exc.detail}"
        except signing.SecretUnreadable as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self.budget:g} s"
        except httpx.HTTPError as exc:
            error = _describe(exc)
        return Outcome(at=at, status_code=status, error=error,
                       duration_ms=round((time.monotonic() - started) * 1000))

    async def _post(self, client: httpx.AsyncClient, target: targets.Target, delivery: Claimed,
                    secret: str) -> int:
        body = delivery.payload.encode()
        timestamp = int(self.clock().timestamp())
        headers = {
            "Host": target.destination.url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Hpcgw-Event": delivery.event,
            "X-Hpcgw-Delivery": delivery.public_id,
            "X-Hpcgw-Timestamp": str(timestamp),
            "X-Hpcgw-Signature": signing.sign(secret, timestamp, body),
        }
        # the name for TLS (server name and certificate check), the checked address for TCP
        extensions = ({"sni_hostname": target.destination.host}
                      if target.destination.url.scheme == "https" else {})
        request = client.build_request("POST", target.pinned_url(), content=body,
                                       headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        await response.aclose()  # the body is not read
        return response.status_code

    def _record(self, session: Session, delivery: Claimed, outcome: Outcome) -> None:
        row = session.scalars(select(WebhookDelivery)
                              .where(WebhookDelivery.id == delivery.id,
                                     WebhookDelivery.claimed_by == self.holder)
                              .with_for_update()).first()
        if row is None:
            return  # deleted with its subscription, or the claim expired and moved on
        now = self.clock()
        row.attempts += 1
        row.last_attempt_at = outcome.at
        row.last_status_code = outcome.status_code
        row.last_error = outcome.error
        row.attempt_log = [*row.attempt_log, {
            "at": outcome.at.isoformat(), "status_code": outcome.status_code,
            "error": outcome.error, "duration_ms": outcome.duration_ms,
        }][-self.settings.max_attempts:]
        row.claimed_by = row.claimed_until = None
        if outcome.delivered:
            row.state, row.delivered_at, row.next_attempt_at = DeliveryState.delivered, now, None
        elif row.attempts >= self.settings.max_attempts:
            row.state, row.next_attempt_at = DeliveryState.failed, None
            metrics.WEBHOOK_GIVEN_UP.inc()
            log.warning("webhook delivery failed for good", delivery=row.public_id,
                        attempts=row.attempts, error=outcome.error)
        else:
            row.next_attempt_at = now + timedelta(
                seconds=retry_delay(self.settings, row.attempts))

    def _prune(self, session: Session) -> None:
        """Ended deliveries older than the retention leave the log."""
        session.execute(delete(WebhookDelivery).where(
            WebhookDelivery.state != DeliveryState.pending,
            WebhookDelivery.created_at < self.clock() - timedelta(
                days=self.settings.retention_days)))


@asynccontextmanager
async def webhooks_runtime(settings: WebhooksConfig, database: Database, *,
                           worker: bool) -> AsyncIterator[None]:
    """Listen to the events (always: this process may change jobs and quotas) and, with
    `worker`, deliver until the block ends (`hpcgw serve`, `hpcgw tracker`)."""
    service.install()
    if not worker:
        yield
        return
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(DeliveryWorker(database, settings).run, stop, name="webhooks")
        try:
            yield
        finally:
            stop.set()
