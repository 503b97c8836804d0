"""The same cases against every backend: local always, slurm_ssh on the project's test cluster.

Slow Slurm cases run alongside the others: the time-limit job is submitted when the backend is
set up and checked by the last test, so its minute passes while the rest run.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from factories import WEIGHTS
from testcluster_helpers import Cluster

from schedulers.base import JOB_NAME_PREFIX, Scheduler
from schedulers.config import ClusterConfig, PartitionConfig
from schedulers.errors import (
    IsADirectory,
    NotADirectory,
    PathRefused,
    SchedulerError,
    SchedulerRejected,
)
from schedulers.local import LocalScheduler
from schedulers.models import AccountingRecord, Identity, JobSpec, JobState, Resources
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

UNIT = 0.5  # local backend: seconds in a "minute" of time limit
LOCAL_SLOTS = 2


@dataclass
class Backend:
    kind: str
    scheduler: Scheduler
    alpha: Identity
    beta: Identity
    partition: str
    slow: float  # how long a job may take to start and end here
    exists: Callable[[str], bool]  # is this path there, on the cluster's side?
    symlink: Callable[[Identity, str, str], None]  # make work_root/relative -> target
    commands: Callable[[], int] | None = None  # remote commands run so far
    cluster: Cluster | None = None
    submitted: list[tuple[Identity, str]] = field(default_factory=list)
    timeout_job: str = ""

    def spec(self, script: str, *, name: str = "contract", minutes: int = 5, cpus: int = 1,
             mem_mb: int = 100, **fields: Any) -> JobSpec:
        marker = f"ct-{uuid.uuid4().hex}"
        base = f"contract/{marker}"
        values: dict[str, Any] = {"workdir": base, "stdout": f"{base}/stdout.txt",
                                  "stderr": f"{base}/stderr.txt"} | fields
        partition = values.pop("partition", self.partition)
        return JobSpec(marker=marker, name=name, script=f"#!/bin/bash\n{script}\n",
                       resources=Resources(partition=partition, cpus_per_task=cpus,
                                           mem_mb=mem_mb, time_limit_minutes=minutes),
                       **values)

    async def submit(self, identity: Identity, spec: JobSpec) -> str:
        job_id = (await self.scheduler.submit(identity, spec)).scheduler_id
        self.submitted.append((identity, job_id))
        return job_id

    async def wait_state(self, job_id: str, state: JobState, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            status = (await self.scheduler.states([job_id])).get(job_id)
            if status is not None and status.state == state:
                return
            assert time.monotonic() < deadline, f"job {job_id} not {state} in {within}s: {status}"
            await asyncio.sleep(0.2)

    async def ended(self, job_id: str, within: float | None = None) -> AccountingRecord:
        """The job's accounting record once it has ended (sacct may lag the queue)."""
        deadline = time.monotonic() + (within or self.slow)
        while True:
            status = (await self.scheduler.states([job_id])).get(job_id)
            if status is None or status.state.terminal:
                record = (await self.scheduler.accounting([job_id])).get(job_id)
                if record is not None and record.state.terminal:
                    return record
            assert time.monotonic() < deadline, f"job {job_id} did not end: {status}"
            await asyncio.sleep(0.3)

    @asynccontextmanager
    async def held_queue(self) -> AsyncIterator[str]:
        """A script header under which jobs stay pending until they are cancelled."""
        if self.kind == "slurm_ssh":
            yield "#SBATCH --hold\n"
            return
        blocker = await self.submit(self.alpha, self.spec("sleep 600", cpus=LOCAL_SLOTS))
        await self.wait_state(blocker, JobState.running, self.slow)
        try:
            yield ""
        finally:
            await self.scheduler.cancel(self.alpha, blocker)


def _local(root: Path) -> Backend:
    config = ClusterConfig(name="local", backend="local", local_root=root / "cluster",
                           cpu_slots=LOCAL_SLOTS,
                           partitions=[PartitionConfig(name="debug", max_time_minutes=60,
                                                       max_cpus_per_job=4,
                                                       max_mem_mb_per_job=4096,
                                                       billing=WEIGHTS)])

    def member(name: str) -> Identity:
        return Identity(name=name, unix_user=name, key_file="",
                        work_root=str(root / "members" / name))

    def symlink(identity: Identity, relative: str, target: str) -> None:
        link = Path(identity.work_root) / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    return Backend(kind="local",
                   scheduler=LocalScheduler(config, time_unit_seconds=UNIT,
                                            kill_grace_seconds=0.5),
                   alpha=member("alpha"), beta=member("beta"), partition="debug", slow=20,
                   exists=os.path.exists, symlink=symlink)


def _slurm(cluster: Cluster) -> Backend:
    scheduler = SlurmSshScheduler(cluster.config())
    who = {cluster["ALPHA_USER"]: "ALPHA", cluster["BETA_USER"]: "BETA"}

    def exists(path: str) -> bool:
        return cluster.shell("ADMIN", f"test -e {shlex.quote(path)}").returncode == 0

    def symlink(identity: Identity, relative: str, target: str) -> None:
        link = f"{identity.work_root}/{relative}"
        done = cluster.shell(who[identity.unix_user],
                             f"mkdir -p {shlex.quote(str(Path(link).parent))} && "
                             f"ln -sfn {shlex.quote(target)} {shlex.quote(link)}")
        assert done.returncode == 0, done.stderr

    return Backend(kind="slurm_ssh", scheduler=scheduler, alpha=cluster.identity("ALPHA"),
                   beta=cluster.identity("BETA"), partition=cluster.partition, slow=60,
                   exists=exists, symlink=symlink,
                   commands=lambda: scheduler.transport.commands_run, cluster=cluster)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _pyslurm(request: pytest.FixtureRequest) -> Backend:
    try:
        import pyslurm  # noqa: F401 - the backend imports it on first use
    except ImportError:
        pytest.skip(PYSLURM_MISSING)
    from schedulers.pyslurm import PySlurmScheduler

    cluster: Cluster = request.getfixturevalue("testcluster")
    os.environ["SLURM_CONF"] = cluster["SLURM_CONF"]  # pyslurm reads the test cluster's
    b = _slurm(cluster)
    b.kind, b.scheduler, b.commands = "pyslurm", PySlurmScheduler(cluster.config()), None
    b.exists = os.path.exists  # this host is the cluster's login node
    return b


PYSLURM_MISSING = ("pyslurm not importable: PyPI's pyslurm needs Slurm 25.11 libraries, "
                   "Debian 12/13 ship 22.05/24.11")


@pytest.fixture(scope="module", params=[
    "local",
    pytest.param("slurm_ssh", marks=pytest.mark.slurm),
    pytest.param("pyslurm", marks=[pytest.mark.slurm, pytest.mark.pyslurm]),
])
async def backend(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    if request.param == "local":
        b = _local(tmp_path_factory.mktemp("local"))
    elif request.param == "slurm_ssh":
        b = _slurm(request.getfixturevalue("testcluster"))
    else:
        b = _pyslurm(request)
    # --time=1 and a 90 s sleep: Slurm ends it 60-90 s after its start (time limits are
    # checked every 30 s); the last test of the module collects it
    b.timeout_job = await b.submit(b.alpha, b.spec("sleep 90", minutes=1))
    yield b
    for identity, job_id in b.submitted:  # leave nothing running or queued
        with suppress(SchedulerError):
            await b.scheduler.cancel(identity, job_id)
    await b.scheduler.close()


pytestmark = pytest.mark.anyio


async def test_job_runs_to_completed_and_its_output_is_readable(backend: Backend) -> None:
    spec = backend.spec("echo hello from the job; echo complaint >&2")
    job_id = await backend.submit(backend.alpha, spec)

    record = await backend.ended(job_id)

    assert (record.state, record.exit_code) == (JobState.completed, 0)
    out = await backend.scheduler.read_output(backend.alpha, spec.stdout, 0, 1000)
    assert (out.data, out.size, out.next_offset) == (b"hello from the job\n", 19, 19)
    tail = await backend.scheduler.read_output(backend.alpha, spec.stdout, 11, 3)
    assert (tail.data, tail.offset, tail.next_offset) == (b"the", 11, 14)
    err = await backend.scheduler.read_output(backend.alpha, spec.stderr, 0, 1000)
    assert err.data == b"complaint\n"


async def test_failing_job_reports_its_exit_code(backend: Backend) -> None:
    job_id = await backend.submit(backend.alpha, backend.spec("echo about to fail; exit 3"))

    record = await backend.ended(job_id)

    assert (record.state, record.exit_code) == (JobState.failed, 3)
    assert not record.signal  # local says 0, Slurm's "3:0" gives None


async def test_accounting_matches_what_the_job_asked_for(backend: Backend) -> None:
    spec = backend.spec("sleep 2", cpus=2, mem_mb=300)
    job_id = await backend.submit(backend.alpha, spec)

    record = await backend.ended(job_id)

    assert record.scheduler_id == job_id
    assert (record.state, record.exit_code) == (JobState.completed, 0)
    assert (record.alloc_cpus, record.alloc_mem_mb, record.alloc_gpus) == (2, 300, 0)
    assert record.elapsed_seconds >= 1
    assert record.node_count == 1 and record.nodes
    assert record.submit and record.start and record.end
    assert record.submit <= record.start <= record.end


async def test_pending_job_can_be_cancelled(backend: Backend) -> None:
    async with backend.held_queue() as header:
        job_id = await backend.submit(backend.alpha, backend.spec(f"{header}sleep 300"))
        status = (await backend.scheduler.states([job_id]))[job_id]
        assert status.state == JobState.pending and status.reason

        await backend.scheduler.cancel(backend.alpha, job_id)

        record = await backend.ended(job_id)
    assert (record.state, record.elapsed_seconds, record.alloc_cpus) == (JobState.cancelled, 0, 0)


async def test_running_job_can_be_cancelled(backend: Backend) -> None:
    job_id = await backend.submit(backend.alpha, backend.spec("sleep 300"))
    await backend.wait_state(job_id, JobState.running, backend.slow)

    await backend.scheduler.cancel(backend.alpha, job_id)

    record = await backend.ended(job_id)
    assert record.state == JobState.cancelled
    assert record.start is not None and record.elapsed_seconds < 60


async def test_another_member_cannot_cancel_a_job(backend: Backend) -> None:
    async with backend.held_queue() as header:
        job_id = await backend.submit(backend.alpha, backend.spec(f"{header}sleep 300"))

        with pytest.raises(SchedulerRejected, match=r"(?i)permission denied"):
            await backend.scheduler.cancel(backend.beta, job_id)

        assert (await backend.scheduler.states([job_id]))[job_id].state == JobState.pending
        await backend.scheduler.cancel(backend.alpha, job_id)


async def test_states_of_200_jobs_come_from_one_command(backend: Backend) -> None:
    async with backend.held_queue() as header:
        specs = [backend.spec(f"{header}true") for _ in range(200)]
        ids = await asyncio.gather(*(backend.submit(backend.alpha, s) for s in specs))
        before = backend.commands() if backend.commands else 0

        states = await backend.scheduler.states(ids)

        if backend.commands:
            assert backend.commands() - before == 1
        assert sorted(states) == sorted(ids)
        assert {s.state for s in states.values()} == {JobState.pending}
        await asyncio.gather(*(backend.scheduler.cancel(backend.alpha, i) for i in ids))


async def test_jobs_the_scheduler_never_had_are_absent(backend: Backend) -> None:
    assert await backend.scheduler.states(["99999991"]) == {}
    assert await backend.scheduler.states(["99999991", "99999992"]) == {}
    assert await backend.scheduler.accounting(["99999991"]) == {}


async def test_find_by_marker_finds_the_members_job_with_its_submit_time(
        backend: Backend) -> None:
    spec = backend.spec("sleep 1")
    before = datetime.now(UTC).replace(microsecond=0)  # Slurm's times are whole seconds
    job_id = await backend.submit(backend.alpha, spec)
    after = datetime.now(UTC)

    found = await backend.scheduler.find_by_marker(backend.alpha, spec.marker)
    assert found is not None and found.scheduler_id == job_id
    assert found.submit is not None and before <= found.submit <= after
    assert await backend.scheduler.find_by_marker(backend.beta, spec.marker) is None
    assert await backend.scheduler.find_by_marker(backend.alpha, "ct-never-used-1") is None


async def test_shell_metacharacters_reach_the_job_as_literal_text(backend: Backend) -> None:
    canary = f"/tmp/hpcgw-canary-{uuid.uuid4().hex[:12]}"
    evil = [f"$(touch {canary})", f";touch {canary}", f"`touch {canary}`", f"|touch {canary}",
            f"&& touch {canary}", f"' ; touch {canary} ; '", f'" ; touch {canary} ; "',
            "${HOME}", "*", "~", "a=b,c=d"]
    name = " ".join(evil)[:200]  # a job name holds 200 characters
    value = "value,with,commas\n" + "\n".join(evil) + "\n\\ trailing backslash \\"
    workdir = f"contract/meta {uuid.uuid4().hex} $(touch {canary});`touch {canary}`'q\"&|<>"
    spec = backend.spec('printf %s "$EVIL"; pwd >&2', name=name, workdir=workdir,
                        stdout=f"{workdir}/o $(x).txt", stderr=f"{workdir}/e;x.txt",
                        environment={"EVIL": value})

    job_id = await backend.submit(backend.alpha, spec)
    record = await backend.ended(job_id)

    assert record.state == JobState.completed
    out = await backend.scheduler.read_output(backend.alpha, spec.stdout, 0, 10_000)
    assert out.data.decode() == value
    err = await backend.scheduler.read_output(backend.alpha, spec.stderr, 0, 10_000)
    assert err.data.decode().strip() == f"{backend.alpha.work_root}/{workdir}"
    if backend.cluster is not None:  # Slurm kept the job name as written
        # (sacct says "allocation" for a few seconds after a short job, until slurmdbd has
        # the job's start record)
        for _ in range(50):
            shown = backend.cluster.shell("ADMIN", f"sacct -X -n -P -j {job_id} -o JobName")
            if shown.stdout != "allocation\n":
                break
            await asyncio.sleep(0.2)
        assert shown.stdout.removesuffix("\n") == JOB_NAME_PREFIX + name
    assert not backend.exists(canary)


async def test_metacharacters_in_the_partition_are_refused_and_run_nothing(
        backend: Backend) -> None:
    canary = f"/tmp/hpcgw-canary-{uuid.uuid4().hex}"
    for partition in (f"{backend.partition};touch {canary}", f"$(touch {canary})",
                      f"{backend.partition} --wrap='touch {canary}'"):
        with pytest.raises(SchedulerRejected):
            await backend.submit(backend.alpha, backend.spec("true", partition=partition))
    with pytest.raises(SchedulerRejected):
        await backend.submit(backend.alpha,
                             backend.spec("true", environment={f"X;touch {canary}": "1"}))
    assert not backend.exists(canary)


async def test_unknown_partition_is_rejected_with_the_schedulers_message(
        backend: Backend) -> None:
    with pytest.raises(SchedulerRejected) as refused:
        await backend.submit(backend.alpha, backend.spec("true", partition="nosuchpartition"))

    assert "invalid partition" in refused.value.message.lower()
    if backend.kind == "slurm_ssh":
        assert "Batch job submission failed: Invalid partition name specified" in (
            refused.value.message)


async def test_paths_leading_out_of_the_work_directory_are_refused(backend: Backend) -> None:
    s, alpha = backend.scheduler, backend.alpha
    escapes: list[dict[str, Any]] = [{"stdout": "../escape.txt"}, {"workdir": "/etc"},
                                     {"stderr": "contract/../../escape.txt"}]
    for fields in escapes:
        with pytest.raises(PathRefused):
            await s.submit(alpha, backend.spec("true", **fields))
    for path in ("/etc/passwd", "../../../etc/passwd", "contract/../../x"):
        with pytest.raises(PathRefused):
            await s.read_output(alpha, path, 0, 100)
        with pytest.raises(PathRefused):
            await s.get_file(alpha, path, 100)
        with pytest.raises(PathRefused):
            await s.put_file(alpha, path, b"x")

    links = f"contract/links-{uuid.uuid4().hex}"
    backend.symlink(alpha, f"{links}/passwd", "/etc/passwd")
    backend.symlink(alpha, f"{links}/tmp", "/tmp")
    backend.symlink(alpha, f"{links}/beta", backend.beta.work_root)
    with pytest.raises(PathRefused):
        await s.read_output(alpha, f"{links}/passwd", 0, 100)
    with pytest.raises(PathRefused):
        await s.get_file(alpha, f"{links}/passwd", 10_000)
    with pytest.raises(PathRefused):
        await s.put_file(alpha, f"{links}/tmp/planted-{uuid.uuid4().hex}", b"x")
    with pytest.raises(PathRefused):
        await s.put_file(alpha, f"{links}/beta/planted.txt", b"x")


async def test_files_go_up_and_come_back_whole(backend: Backend) -> None:
    s, alpha = backend.scheduler, backend.alpha
    path = f"contract/files-{uuid.uuid4().hex}/in/data.bin"
    data = bytes(range(256)) * 10

    await s.put_file(alpha, path, data)

    assert await s.get_file(alpha, path, len(data)) == data
    chunk = await s.read_output(alpha, path, 10, 20)
    assert (chunk.data, chunk.size) == (data[10:30], len(data))
    past_the_end = await s.read_output(alpha, path, len(data) + 5, 20)
    assert (past_the_end.data, past_the_end.next_offset) == (b"", len(data) + 5)
    with pytest.raises(SchedulerRejected):
        await s.get_file(alpha, path, len(data) - 1)
    with pytest.raises(SchedulerRejected):
        await s.read_output(alpha, f"{path}.missing", 0, 10)
    await s.put_file(alpha, path, b"replaced")
    assert await s.get_file(alpha, path, 100) == b"replaced"


async def test_a_directory_is_listed_and_never_read_as_a_file(backend: Backend) -> None:
    s, alpha = backend.scheduler, backend.alpha
    base = f"contract/listing-{uuid.uuid4().hex}"
    await s.put_file(alpha, f"{base}/result.txt", b"12345")
    await s.put_file(alpha, f"{base}/ckpt/epoch-1.pt", b"x" * 300)
    backend.symlink(alpha, f"{base}/etc", "/etc")

    entries = await s.list_files(alpha, base)

    assert [(e.name, e.type) for e in entries] == [("ckpt", "dir"), ("result.txt", "file")]
    assert entries[1].size == 5 and entries[1].modified is not None
    assert [(e.name, e.size) for e in await s.list_files(alpha, f"{base}/ckpt")] == [
        ("epoch-1.pt", 300)]
    assert "contract" in {e.name for e in await s.list_files(alpha, "")}
    with pytest.raises(IsADirectory):
        await s.get_file(alpha, f"{base}/ckpt", 1000)
    with pytest.raises(NotADirectory):
        await s.list_files(alpha, f"{base}/result.txt")
    with pytest.raises(SchedulerRejected):
        await s.list_files(alpha, f"{base}/missing")
    for path in ("..", "/etc", f"{base}/../../..", f"{base}/etc"):
        with pytest.raises(PathRefused):
            await s.list_files(alpha, path)


async def test_job_past_its_time_limit_ends_timeout(backend: Backend) -> None:
    # submitted when the backend was set up; on Slurm this waits out the rest of its minute
    record = await backend.ended(backend.timeout_job, within=150)

    assert record.state == JobState.timeout
    assert record.start is not None
