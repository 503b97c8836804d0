"""The local backend against real processes: a "minute" of time limit lasts half a second here."""

from __future__ import annotations

import getpass
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from factories import WEIGHTS
from server_process import pid_gone

from schedulers.config import ClusterConfig, PartitionConfig
from schedulers.errors import PathRefused, SchedulerRejected, SchedulerUnavailable
from schedulers.local import LocalScheduler
from schedulers.local.process import ProcessRef, alive, signal_group
from schedulers.models import AccountingRecord, Identity, JobSpec, JobState, Resources

UNIT = 0.5  # seconds in a "minute"
GRACE = 0.5
WAIT = 10.0  # seconds before a test gives up waiting
T = TypeVar("T")
Make = Callable[..., LocalScheduler]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "cluster"
    yield root
    for record in root.glob("jobs/*/job.json"):  # leave no process behind, whatever happened
        data = json.loads(record.read_text())
        if data["process"] is not None:
            signal_group(ProcessRef.model_validate(data["process"]), signal.SIGKILL)


def config(root: Path, cpu_slots: int = 2) -> ClusterConfig:
    return ClusterConfig(
        name="local", backend="local", local_root=root, cpu_slots=cpu_slots,
        partitions=[PartitionConfig(name="debug", max_time_minutes=60, max_cpus_per_job=4,
                                    max_mem_mb_per_job=4096, billing=WEIGHTS)])


@pytest.fixture
async def make(root: Path) -> AsyncIterator[Make]:
    """Schedulers on `root`, closed at the end (close leaves their jobs running)."""
    made: list[LocalScheduler] = []

    def _make(cpu_slots: int = 2) -> LocalScheduler:
        scheduler = LocalScheduler(config(root, cpu_slots), time_unit_seconds=UNIT,
                                   kill_grace_seconds=GRACE)
        made.append(scheduler)
        return scheduler

    yield _make
    for scheduler in made:
        await scheduler.close()


@pytest.fixture
def alpha(tmp_path: Path) -> Identity:
    return Identity(name="alpha", unix_user=getpass.getuser(), key_file="",
                    work_root=str(tmp_path / "members" / "alpha"))


@pytest.fixture
def beta(tmp_path: Path) -> Identity:
    return Identity(name="beta", unix_user=getpass.getuser(), key_file="",
                    work_root=str(tmp_path / "members" / "beta"))


def spec(script: str, *, cpus: int = 1, minutes: int = 60, workdir: str = "",
         stdout: str = "out/%j.out", stderr: str = "out/%j.err",
         environment: dict[str, str] | None = None, partition: str = "debug") -> JobSpec:
    return JobSpec(marker=f"m-{uuid.uuid4().hex}", name="test-job", script=script,
                   resources=Resources(partition=partition, cpus_per_task=cpus, mem_mb=100,
                                       time_limit_minutes=minutes),
                   environment=environment or {}, workdir=workdir, stdout=stdout, stderr=stderr)


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """The first value `read` gives that is `ok`; fails after WAIT seconds."""
    with anyio.fail_after(WAIT):
        while True:
            value = await read()
            if ok(value):
                return value
            await anyio.sleep(0.05)


async def ended(scheduler: LocalScheduler, job_id: str) -> AccountingRecord:
    """The job's record once it has ended and its processes are gone."""
    async def read() -> AccountingRecord | None:
        return (await scheduler.accounting([job_id])).get(job_id)
    record = await eventually(read, lambda r: r is not None and r.state.terminal
                              and (r.exit_code is not None or r.raw_state == "LOST"))
    assert record is not None
    return record


async def reaches(scheduler: LocalScheduler, job_id: str, state: JobState) -> None:
    async def read() -> JobState | None:
        status = (await scheduler.states([job_id])).get(job_id)
        return status.state if status else None
    await eventually(read, lambda s: s is state)


def job_process(root: Path, job_id: str) -> ProcessRef:
    data = json.loads((root / "jobs" / job_id / "job.json").read_text())
    return ProcessRef.model_validate(data["process"])


# --- running jobs ----------------------------------------------------------------------------

@pytest.mark.anyio
async def test_job_runs_in_its_workdir_and_its_output_is_readable(make: Make, alpha: Identity,
                                                                  ) -> None:
    scheduler = make()
    script = "#!/bin/bash\necho \"job $SLURM_JOB_ID on $SLURM_CPUS_PER_TASK cpus\"\npwd\n"
    job_id = (await scheduler.submit(alpha, spec(script, cpus=2, workdir="runs/a"))).scheduler_id

    record = await ended(scheduler, job_id)

    assert (record.state, record.raw_state, record.exit_code) == (JobState.completed,
                                                                  "COMPLETED", 0)
    assert (record.alloc_cpus, record.alloc_mem_mb, record.nodes, record.node_count) == (
        2, 100, "localhost", 1)
    assert record.submit and record.start and record.end
    assert record.submit <= record.start <= record.end
    assert record.consumed_energy_joules is None
    chunk = await scheduler.read_output(alpha, f"out/{job_id}.out", 0, 4096)
    work = await anyio.Path(alpha.work_root).resolve()
    assert chunk.data.decode() == f"job {job_id} on 2 cpus\n{work / 'runs' / 'a'}\n"
    assert chunk.size == len(chunk.data) == chunk.next_offset


@pytest.mark.anyio
async def test_job_sees_its_spec_environment_and_not_the_gateways(
        make: Make, alpha: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCGW_GATEWAY_SECRET", "must-not-leak")
    scheduler = make()
    job = spec("env", environment={"MODEL": "llama", "SLURM_JOB_ID": "forged"})
    job_id = (await scheduler.submit(alpha, job)).scheduler_id
    await ended(scheduler, job_id)

    lines = (await scheduler.get_file(alpha, f"out/{job_id}.out", 65536)).decode().splitlines()
    env = dict(line.split("=", 1) for line in lines)

    assert env["MODEL"] == "llama"
    assert env["SLURM_JOB_ID"] == env["HPCGW_JOB_ID"] == job_id  # the scheduler's own win
    assert "HPCGW_GATEWAY_SECRET" not in env
    assert set(env) <= {"MODEL", "PATH", "HOME", "USER", "LOGNAME", "PWD", "SHLVL", "_",
                        "HPCGW_JOB_ID", "SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_NAME",
                        "SLURM_JOB_PARTITION", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS",
                        "SLURM_NNODES", "SLURM_JOB_NODELIST", "SLURM_SUBMIT_DIR"}


@pytest.mark.anyio
async def test_failing_job_ends_failed_with_its_exit_code(make: Make, alpha: Identity) -> None:
    scheduler = make()
    job_id = (await scheduler.submit(alpha, spec("echo oops >&2; exit 3"))).scheduler_id

    record = await ended(scheduler, job_id)

    assert (record.state, record.raw_state, record.exit_code, record.signal) == (
        JobState.failed, "FAILED", 3, None)
    assert (await scheduler.get_file(alpha, f"out/{job_id}.err", 100)) == b"oops\n"


@pytest.mark.anyio
async def test_job_killed_by_a_signal_fails_with_that_signal(make: Make, alpha: Identity) -> None:
    scheduler = make()
    job_id = (await scheduler.submit(alpha, spec("kill -KILL $$"))).scheduler_id

    record = await ended(scheduler, job_id)

    assert (record.state, record.exit_code, record.signal) == (JobState.failed, 0, 9)


@pytest.mark.anyio
async def test_job_that_cannot_start_fails_and_the_queue_goes_on(make: Make,
                                                                 alpha: Identity) -> None:
    scheduler = make(cpu_slots=1)
    # a directory cannot be the output
    await anyio.Path(alpha.work_root, "taken.out").mkdir(parents=True)
    broken = (await scheduler.submit(alpha, spec("true", stdout="taken.out"))).scheduler_id
    fine = (await scheduler.submit(alpha, spec("true"))).scheduler_id

    assert (await ended(scheduler, fine)).state is JobState.completed
    record = (await scheduler.accounting([broken]))[broken]
    assert (record.state, record.start is not None, record.exit_code) == (JobState.failed, True,
                                                                          None)


# --- limits, cancel, slots -------------------------------------------------------------------

@pytest.mark.anyio
async def test_job_past_its_time_limit_is_killed_and_ends_timeout(make: Make, root: Path,
                                                                  alpha: Identity) -> None:
    scheduler = make()
    job_id = (await scheduler.submit(alpha, spec("sleep 30 & wait", minutes=1))).scheduler_id
    await reaches(scheduler, job_id, JobState.running)
    supervisor = job_process(root, job_id)

    record = await ended(scheduler, job_id)

    assert (record.state, record.raw_state, record.signal) == (JobState.timeout, "TIMEOUT", 15)
    assert record.start and record.end
    assert timedelta(seconds=UNIT) <= record.end - record.start < timedelta(seconds=UNIT + 1)
    assert pid_gone(supervisor.pid)
    assert not alive(supervisor)


@pytest.mark.anyio
async def test_job_ignoring_sigterm_is_killed_after_the_grace(make: Make, alpha: Identity) -> None:
    scheduler = make(cpu_slots=1)
    stubborn = (await scheduler.submit(alpha, spec("trap '' TERM; echo $$; sleep 30"))
                ).scheduler_id
    await reaches(scheduler, stubborn, JobState.running)
    pid = int((await eventually(lambda: scheduler.get_file(alpha, f"out/{stubborn}.out", 100),
                                bool)).decode())
    following = (await scheduler.submit(alpha, spec("true"))).scheduler_id

    await scheduler.cancel(alpha, stubborn)

    assert (await scheduler.states([stubborn]))[stubborn].state is JobState.cancelled
    assert (await scheduler.states([following]))[following].state is JobState.pending
    record = await ended(scheduler, stubborn)
    assert (record.state, record.signal) == (JobState.cancelled, 9)
    assert pid_gone(pid)
    after = await ended(scheduler, following)
    assert after.start and record.end
    assert after.start - record.end >= timedelta(seconds=GRACE)  # its slot was held till then


@pytest.mark.anyio
async def test_cancelled_pending_job_never_runs(make: Make, alpha: Identity) -> None:
    scheduler = make(cpu_slots=1)
    blocker = (await scheduler.submit(alpha, spec("sleep 30"))).scheduler_id
    waiting = (await scheduler.submit(alpha, spec("touch ran"))).scheduler_id

    await scheduler.cancel(alpha, waiting)
    await scheduler.cancel(alpha, blocker)
    await ended(scheduler, blocker)
    await anyio.sleep(0.3)

    record = (await scheduler.accounting([waiting]))[waiting]
    assert (record.state, record.raw_state, record.start) == (JobState.cancelled, "CANCELLED",
                                                              None)
    assert not await anyio.Path(alpha.work_root, "ran").exists()


@pytest.mark.anyio
async def test_cancelled_running_job_ends_cancelled(make: Make, alpha: Identity) -> None:
    scheduler = make()
    job_id = (await scheduler.submit(alpha, spec("sleep 30"))).scheduler_id
    await reaches(scheduler, job_id, JobState.running)

    await scheduler.cancel(alpha, job_id)

    record = await ended(scheduler, job_id)
    assert (record.state, record.signal) == (JobState.cancelled, 15)
    await scheduler.cancel(alpha, job_id)  # cancelling an ended job changes nothing
    assert (await scheduler.states([job_id]))[job_id].state is JobState.cancelled


@pytest.mark.anyio
async def test_second_job_waits_for_a_free_cpu_slot(make: Make, alpha: Identity) -> None:
    scheduler = make(cpu_slots=1)
    first = (await scheduler.submit(alpha, spec("sleep 0.6"))).scheduler_id
    second = (await scheduler.submit(alpha, spec("true"))).scheduler_id
    third = (await scheduler.submit(alpha, spec("true"))).scheduler_id
    await reaches(scheduler, first, JobState.running)

    states = await scheduler.states([first, second, third])

    assert (states[second].state, states[second].reason) == (JobState.pending, "Resources")
    assert (states[third].state, states[third].reason) == (JobState.pending, "Priority")
    one, two, three = [await ended(scheduler, i) for i in (first, second, third)]
    assert one.end and two.start and two.end and three.start
    assert one.end <= two.start and two.end <= three.start


@pytest.mark.anyio
async def test_two_hundred_job_states_come_in_one_call(make: Make, alpha: Identity) -> None:
    scheduler = make(cpu_slots=1)
    ids = [(await scheduler.submit(alpha, spec("sleep 30"))).scheduler_id for _ in range(200)]

    states = await scheduler.states([*ids, "999999", "not-an-id"])

    assert list(states) == ids
    assert sorted(s.state for s in states.values()).count(JobState.pending) >= 199
    assert [int(i) for i in ids] == list(range(int(ids[0]), int(ids[0]) + 200))


@pytest.mark.anyio
async def test_job_beyond_the_partition_limits_is_rejected(make: Make, alpha: Identity) -> None:
    scheduler = make(cpu_slots=2)
    with pytest.raises(SchedulerRejected, match="cpus 3 > 2"):
        await scheduler.submit(alpha, spec("true", cpus=3))  # fits the partition, not the host
    with pytest.raises(SchedulerRejected, match="time_limit_minutes 61 > 60"):
        await scheduler.submit(alpha, spec("true", minutes=61))
    with pytest.raises(SchedulerRejected, match="invalid partition"):
        await scheduler.submit(alpha, spec("true", partition="gpu"))


# --- members ---------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_job_is_found_by_its_marker_with_its_submit_time_only_by_its_member(
        make: Make, alpha: Identity, beta: Identity) -> None:
    scheduler = make()
    job = spec("true")
    job_id = (await scheduler.submit(alpha, job)).scheduler_id

    found = await scheduler.find_by_marker(alpha, job.marker)
    assert found is not None and found.scheduler_id == job_id
    assert found.submit == (await scheduler.accounting([job_id]))[job_id].submit
    assert await scheduler.find_by_marker(beta, job.marker) is None
    assert await scheduler.find_by_marker(alpha, "m-never-used") is None


@pytest.mark.anyio
async def test_member_cannot_cancel_another_members_job(make: Make, alpha: Identity,
                                                        beta: Identity) -> None:
    scheduler = make()
    job_id = (await scheduler.submit(alpha, spec("sleep 30"))).scheduler_id

    with pytest.raises(SchedulerRejected, match="denied"):
        await scheduler.cancel(beta, job_id)
    with pytest.raises(SchedulerRejected, match="Invalid job id"):
        await scheduler.cancel(alpha, "424242")
    assert not (await scheduler.states([job_id]))[job_id].state.terminal


# --- files -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_files_round_trip_and_output_reads_in_pages(make: Make, alpha: Identity) -> None:
    scheduler = make()
    await scheduler.put_file(alpha, "data/in.txt", b"0123456789")

    assert await scheduler.get_file(alpha, "data/in.txt", 10) == b"0123456789"
    chunk = await scheduler.read_output(alpha, "data/in.txt", 4, 3)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.size) == (b"456", 4, 7, 10)
    end = await scheduler.read_output(alpha, "data/in.txt", 10, 3)
    assert (end.data, end.next_offset) == (b"", 10)
    with pytest.raises(SchedulerRejected, match="more than the 9"):
        await scheduler.get_file(alpha, "data/in.txt", 9)
    with pytest.raises(SchedulerRejected, match="No such file"):
        await scheduler.read_output(alpha, "data/missing.txt", 0, 10)


@pytest.mark.anyio
async def test_paths_leading_out_of_the_work_root_are_refused(make: Make, alpha: Identity,
                                                              beta: Identity) -> None:
    scheduler = make()
    await scheduler.put_file(beta, "secret.txt", b"beta's")
    work = anyio.Path(alpha.work_root)
    await work.mkdir(parents=True)
    await (work / "etc").symlink_to("/etc")
    await (work / "passwd").symlink_to("/etc/passwd")

    for path in ("../beta/secret.txt", "/etc/passwd", "etc/passwd", "passwd", "a/../../x"):
        with pytest.raises(PathRefused):
            await scheduler.read_output(alpha, path, 0, 10)
        with pytest.raises(PathRefused):
            await scheduler.get_file(alpha, path, 10)
        with pytest.raises(PathRefused):
            await scheduler.put_file(alpha, path, b"x")
    with pytest.raises(PathRefused):
        await scheduler.submit(alpha, spec("true", stdout="../beta/out"))
    with pytest.raises(PathRefused):
        await scheduler.submit(alpha, spec("true", workdir="etc"))
    assert await anyio.Path(beta.work_root, "secret.txt").read_bytes() == b"beta's"


# --- restarts --------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_running_job_survives_a_gateway_restart_and_ends_with_its_exit_code(
        make: Make, root: Path, alpha: Identity) -> None:
    before = make(cpu_slots=1)
    running = (await before.submit(alpha, spec("sleep 1; exit 7"))).scheduler_id
    queued = (await before.submit(alpha, spec("echo later"))).scheduler_id
    await reaches(before, running, JobState.running)
    await before.close()
    assert alive(job_process(root, running))  # close() left it running

    after = make(cpu_slots=1)
    states = await after.states([running, queued])

    assert states[running].state is JobState.running
    assert states[queued].state is JobState.pending
    record = await ended(after, running)
    assert (record.state, record.raw_state, record.exit_code) == (JobState.failed, "FAILED", 7)
    assert (await ended(after, queued)).state is JobState.completed
    assert (await after.submit(alpha, spec("true"))).scheduler_id == str(int(queued) + 1)


@pytest.mark.anyio
async def test_job_ending_while_the_gateway_is_down_gets_its_real_exit_code(
        make: Make, root: Path, alpha: Identity) -> None:
    before = make()
    job_id = (await before.submit(alpha, spec("sleep 0.3; exit 4"))).scheduler_id
    await reaches(before, job_id, JobState.running)
    await before.close()
    supervisor = job_process(root, job_id)
    await eventually(lambda: anyio.to_thread.run_sync(alive, supervisor), lambda a: not a)

    record = await ended(make(), job_id)

    assert (record.state, record.exit_code) == (JobState.failed, 4)
    assert record.start and record.end
    assert record.end - record.start < timedelta(seconds=2)  # when it ended, not when found


@pytest.mark.anyio
async def test_time_limit_is_still_enforced_after_a_restart(make: Make,
                                                            alpha: Identity) -> None:
    before = make()
    job_id = (await before.submit(alpha, spec("sleep 30", minutes=2))).scheduler_id
    await reaches(before, job_id, JobState.running)
    await before.close()

    record = await ended(make(), job_id)

    assert record.state is JobState.timeout


@pytest.mark.anyio
async def test_job_killed_while_the_gateway_is_down_is_reported_lost(
        make: Make, root: Path, alpha: Identity) -> None:
    before = make()
    job_id = (await before.submit(alpha, spec("sleep 30"))).scheduler_id
    await reaches(before, job_id, JobState.running)
    await before.close()
    supervisor = job_process(root, job_id)
    os.killpg(supervisor.pid, signal.SIGKILL)  # the supervisor with its job: nothing written
    await eventually(lambda: anyio.to_thread.run_sync(alive, supervisor), lambda a: not a)

    record = await ended(make(), job_id)

    assert (record.state, record.raw_state, record.exit_code) == (JobState.failed, "LOST", None)


@pytest.mark.anyio
async def test_second_scheduler_on_the_same_root_is_refused(make: Make, alpha: Identity) -> None:
    first = make()
    assert (await first.health()).ok

    second = make()
    with pytest.raises(SchedulerUnavailable, match="in use"):
        await second.submit(alpha, spec("true"))
    health = await second.health()
    assert (health.ok, health.cluster) == (False, "local")
