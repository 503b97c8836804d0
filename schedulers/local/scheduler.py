"""LocalScheduler: the Scheduler interface over the local cluster, and its scheduling loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TypeVar

from schedulers.base import Scheduler
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerError, SchedulerUnavailable
from schedulers.local import files
from schedulers.local.cluster import LocalCluster
from schedulers.models import (
    AccountingRecord,
    FileEntry,
    FoundJob,
    Health,
    Identity,
    JobSpec,
    JobStatus,
    OutputChunk,
    Submitted,
)

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
T = TypeVar("T")


class LocalScheduler(Scheduler):
    """Runs jobs as subprocesses of this host, under `config.local_root`.

    `time_unit_seconds` is how long a "minute" of a time limit lasts: 60 in use; tests shrink it
    so that a 1-minute limit expires in a fraction of a second. `kill_grace_seconds` is how long
    a stopped job has between SIGTERM and SIGKILL (Slurm's KillWait).

    The scheduling loop starts on first use and stops in `close()`, which leaves the jobs
    running: a restarted gateway finds them again.
    """

    def __init__(self, config: ClusterConfig, *, time_unit_seconds: float = 60.0,
                 kill_grace_seconds: float = 10.0) -> None:
        super().__init__(config)
        if config.local_root is None:
            raise ValueError(f"cluster {config.name}: the local backend needs local_root")
        self._cluster = LocalCluster(config, Path(config.local_root),
                                     time_unit_seconds=time_unit_seconds,
                                     kill_grace_seconds=kill_grace_seconds)
        self._opening = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._loop: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run blocking work in a worker thread; storage failures mean the cluster is unusable."""
        try:
            return await asyncio.to_thread(fn)
        except OSError as exc:
            raise SchedulerUnavailable(f"local cluster storage: {exc}",
                                       cluster=self.name) from exc

    async def _ensure_open(self) -> None:
        if self._loop is not None:
            return
        async with self._opening:
            if self._loop is None:
                await self._run(self._cluster.open)
                self._closing = False
                self._loop = asyncio.create_task(self._schedule(), name=f"hpcgw-{self.name}")

    async def _schedule(self) -> None:
        while not self._closing:
            self._wake.clear()  # a submit or cancel from now on gets a pass at once
            try:
                await asyncio.to_thread(self._cluster.tick)
            except Exception:
                logger.exception("local cluster %s: scheduling pass failed", self.name)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def close(self) -> None:
        async with self._opening:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            self._closing = True
            self._wake.set()
            await loop
            await self._run(self._cluster.close)

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        await self._ensure_open()
        job_id = await self._run(partial(self._cluster.submit, identity, spec))
        self._wake.set()
        return Submitted(scheduler_id=job_id)

    async def states(self, scheduler_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Every job this cluster knows, ended ones included (it forgets none)."""
        await self._ensure_open()
        return await self._run(partial(self._cluster.statuses, list(scheduler_ids)))

    async def accounting(self, scheduler_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        await self._ensure_open()
        return await self._run(partial(self._cluster.records, list(scheduler_ids)))

    async def cancel(self, identity: Identity, scheduler_id: str) -> None:
        await self._ensure_open()
        await self._run(partial(self._cluster.cancel, identity, scheduler_id))
        self._wake.set()

    async def find_by_marker(self, identity: Identity, marker: str) -> FoundJob | None:
        await self._ensure_open()
        return await self._run(partial(self._cluster.find, identity, marker))

    async def read_output(self, identity: Identity, path: str, offset: int,
                          limit: int) -> OutputChunk:
        return await self._run(partial(files.read_chunk, identity, path, offset, limit))

    async def put_file(self, identity: Identity, path: str, data: bytes) -> None:
        await self._run(partial(files.write_whole, identity, path, data))

    async def get_file(self, identity: Identity, path: str, limit: int) -> bytes:
        return await self._run(partial(files.read_whole, identity, path, limit))

    async def list_files(self, identity: Identity, path: str) -> list[FileEntry]:
        return await self._run(partial(files.list_dir, identity, path))

    async def health(self) -> Health:
        started = time.perf_counter()
        try:
            await self._ensure_open()
            running, pending, busy = await self._run(self._cluster.usage)
        except SchedulerError as exc:
            ok, detail = False, exc.message
        else:
            ok, detail = True, (f"local: {running} running, {pending} pending, "
                                f"{busy}/{self.config.cpu_slots} CPU slots busy")
        return Health(cluster=self.name, ok=ok, detail=detail,
                      latency_ms=(time.perf_counter() - started) * 1000)
