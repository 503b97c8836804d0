"""Prometheus metrics of the gateway, and the exposition of /metrics.

Defined here: requests (by route template, method, status), the tracker's cycles, webhook
deliveries, and, read from the database at scrape time, jobs by cluster and state and the
trackers' leases. The lower layers, which may not import the gateway, define theirs next to
their code and are served here with these: schedulers.metrics (remote commands, SSH pools),
quotas.metrics (holds, refusals, settlements).

Labels take bounded values only (route templates, configured clusters, states, class names),
never an id. With several uvicorn workers, prometheus-client's multiprocess mode (a directory in
PROMETHEUS_MULTIPROC_DIR, read when prometheus_client is imported) makes /metrics the sum of all.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import column, func, select, table
from sqlalchemy.exc import SQLAlchemyError

from consortium.base import UTCDateTime, utcnow
from gateway.db import Database
from gateway.logging import log

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # the route label of a request no route matched (404s of any path)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter("hpcgw_http_requests", "HTTP requests answered.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("hpcgw_http_request_duration_seconds",
                          "Time from a request's arrival to the end of its answer.",
                          ["method", "route"])
TRACKER_CYCLE = Histogram(
    "hpcgw_tracker_cycle_seconds", "Duration of a tracker cycle (lease, squeue, sacct, "
    "settlements) of this process.", ["cluster"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
TRACKER_CYCLE_FAILURES = Counter("hpcgw_tracker_cycle_failures",
                                 "Tracker cycles that ended in an error.", ["cluster"])
WEBHOOK_ATTEMPTS = Counter("hpcgw_webhook_attempts",
                           "Webhook POSTs, by outcome (delivered: a 2xx answer).", ["outcome"])
WEBHOOK_GIVEN_UP = Counter("hpcgw_webhook_deliveries_failed",
                           "Webhook deliveries given up after their last attempt.")
# the two tables read at scrape time, as bare tables: this module sits below the job domain
# (which reports its metrics here), so it does not import its models
_JOBS = table("jobs", column("cluster"), column("state"))
_LEASES = table("tracker_leases", column("cluster"), column("expires_at", UTCDateTime))


# the two series of each (method, route, status) seen: `labels()` takes a lock and builds the
# key anew on every call, a cost paid on each request otherwise (keys bounded as the labels)
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "OTHER"
    key = (method, route, status)
    series = _REQUEST_SERIES.get(key)
    if series is None:
        series = _REQUEST_SERIES[key] = (HTTP_REQUESTS.labels(method, route, str(status)),
                                         HTTP_DURATION.labels(method, route))
    series[0].inc()
    series[1].observe(seconds)


@contextmanager
def tracker_cycle(cluster: str) -> Iterator[None]:
    """Time one tracker cycle and count it when it fails."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        TRACKER_CYCLE_FAILURES.labels(cluster).inc()
        raise
    finally:
        TRACKER_CYCLE.labels(cluster).observe(time.perf_counter() - started)


def webhook_attempt(delivered: bool) -> None:
    WEBHOOK_ATTEMPTS.labels("delivered" if delivered else "failed").inc()


class DatabaseFigures(Collector):
    """Figures read from the database at scrape time: two small queries (jobs GROUP BY cluster
    and state, on the index of the same name; the leases' rows), whatever the workers."""

    def __init__(self, database: Database, clusters: Sequence[str],
                 states: Sequence[str]) -> None:
        self.database = database
        self.clusters = clusters
        self.states = states

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("hpcgw_database_up",
                               "1 when the database answered this scrape's queries.")
        try:
            with self.database.session() as session:
                counts = {(cluster, str(state)): n for cluster, state, n in session.execute(
                    select(_JOBS.c.cluster, _JOBS.c.state, func.count())
                    .group_by(_JOBS.c.cluster, _JOBS.c.state))}
                leases = session.execute(select(_LEASES.c.cluster, _LEASES.c.expires_at)).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreadable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("hpcgw_jobs", "Jobs by cluster and state.",
                                 labels=["cluster", "state"])
        for cluster in sorted({*self.clusters, *(c for c, _ in counts)}):
            for state in self.states:  # every state, zeros included: graphs and alerts see 0
                jobs.add_metric([cluster, state], counts.get((cluster, state), 0))
        yield jobs
        lease = GaugeMetricFamily(
            "hpcgw_tracker_lease_expires_in_seconds",
            "Seconds until the tracker lease of a cluster expires (negative: nobody renews it, "
            "no replica is tracking that cluster).", labels=["cluster"])
        now = utcnow()
        for cluster, expires_at in leases:
            lease.add_metric([cluster], (expires_at - now).total_seconds())
        yield lease


def exposition(database: Database, clusters: Sequence[str], states: Sequence[str]) -> bytes:
    """The text of /metrics: this process's metrics (or every worker's, summed, in multiprocess
    mode) and the figures read from the database (jobs of every cluster and state named)."""
    if MULTIPROC_ENV in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    return own + generate_latest(DatabaseFigures(database, clusters, states))


def prepare_multiprocess(data_dir: Path) -> None:
    """Before `hpcgw serve` starts several workers: unless PROMETHEUS_MULTIPROC_DIR names one,
    each worker writes its figures in <data_dir>/metrics, emptied here (the figures of a
    previous run would be added to this one's)."""
    if MULTIPROC_ENV in os.environ:
        return  # the operator's (shared with `hpcgw tracker`?): emptied by the deployment
    directory = data_dir.resolve() / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
