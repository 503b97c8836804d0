"""slurm_ssh on the test cluster: member separation, the SSH transport (pool, timeouts, output
cap, reconnection, pinned host keys) and the event loop staying free while commands run."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from testcluster_helpers import Cluster

from schedulers.errors import (
    SchedulerAuthError,
    SchedulerError,
    SchedulerTimeout,
    SchedulerUnavailable,
)
from schedulers.models import JobSpec, JobState, Resources
from schedulers.registry import build_scheduler, check_cluster
from schedulers.slurm_ssh.commands import SacctMarker, SqueueMarker
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler
from schedulers.slurm_ssh.transport import CHANNELS_PER_CONNECTION, SshTransport

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def scheduler(testcluster: Cluster) -> AsyncIterator[SlurmSshScheduler]:
    s = SlurmSshScheduler(testcluster.config())
    yield s
    await s.close()


def _spec(script: str, partition: str) -> JobSpec:
    marker = f"ts-{uuid.uuid4().hex}"
    return JobSpec(marker=marker, name="slurm-ssh-test", script=f"#!/bin/bash\n{script}\n",
                   resources=Resources(partition=partition, mem_mb=100, time_limit_minutes=2),
                   workdir=f"tests/{marker}", stdout=f"tests/{marker}/out",
                   stderr=f"tests/{marker}/err")


async def _ended(s: SlurmSshScheduler, job_id: str) -> JobState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = (await s.accounting([job_id])).get(job_id)
        if record is not None and record.state.terminal:
            return record.state
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end")


async def test_members_job_runs_as_its_own_user_and_cannot_read_another_members_files(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    beta_dir = testcluster["BETA_WORKDIR"]
    spec = _spec(f"id -un; ls {beta_dir}; cat {beta_dir}/../.ssh/authorized_keys",
                 testcluster.partition)

    job_id = (await scheduler.submit(alpha, spec)).scheduler_id

    assert await _ended(scheduler, job_id) == JobState.failed
    out = (await scheduler.read_output(alpha, spec.stdout, 0, 10_000)).data.decode()
    err = (await scheduler.read_output(alpha, spec.stderr, 0, 10_000)).data.decode()
    assert out == f"{testcluster['ALPHA_USER']}\n"
    assert f"'{beta_dir}': Permission denied" in err
    assert "authorized_keys: Permission denied" in err


async def test_the_marker_in_accounting_gives_the_same_job_and_submit_time_as_the_queue(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    """sacct is where find_by_marker looks once the controller has forgotten the job."""
    alpha = testcluster.identity("ALPHA")
    spec = _spec("true", testcluster.partition)
    job_id = (await scheduler.submit(alpha, spec)).scheduler_id
    assert await _ended(scheduler, job_id) == JobState.completed

    queued = await scheduler.execute(alpha, SqueueMarker(alpha.unix_user, spec.marker))
    # a query by user and time window lags `sacct -j` by a few seconds (measured: up to 4 s)
    deadline = time.monotonic() + 20
    while (accounted := await scheduler.execute(
            alpha, SacctMarker(alpha.unix_user, spec.marker))) is None:
        assert time.monotonic() < deadline, "the job's marker never reached sacct"
        await asyncio.sleep(0.5)

    assert queued is not None and queued.scheduler_id == job_id and queued.submit is not None
    assert accounted == queued


async def test_slow_command_leaves_the_event_loop_free(scheduler: SlurmSshScheduler,
                                                       testcluster: Cluster) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    result = await scheduler.transport.run(testcluster.identity("ALPHA"), ["sleep", "2"])
    task.cancel()

    assert result.status == 0 and time.monotonic() - started >= 2
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 30 and max(gaps) < 0.5


async def test_command_past_its_timeout_fails_and_the_connection_stays_usable(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    await scheduler.transport.run(alpha, ["true"])
    started = time.monotonic()

    with pytest.raises(SchedulerTimeout) as timed_out:
        await scheduler.transport.run(alpha, ["sleep", "30"], timeout=1)

    assert 1 <= time.monotonic() - started < 2
    assert timed_out.value.maybe_executed
    assert (await scheduler.transport.run(alpha, ["echo", "still", "here"])).out == "still here\n"


async def test_output_over_the_cap_is_refused(testcluster: Cluster) -> None:
    transport = SshTransport(testcluster.config(), output_limit=10_000)
    try:
        with pytest.raises(SchedulerError, match="output over 10000 bytes"):
            await transport.run(testcluster.identity("ALPHA"), ["head", "-c", "50000",
                                                                "/dev/zero"])
        assert (await transport.run(testcluster.identity("ALPHA"), ["head", "-c", "10000",
                                                                    "/dev/zero"])).stdout \
            == bytes(10_000)
    finally:
        await transport.close()


async def test_arguments_reach_the_remote_command_unchanged(scheduler: SlurmSshScheduler,
                                                            testcluster: Cluster) -> None:
    nasty = ["a b", "'", '"', "$(id)", "`id`", ";", "&&", "|", "\\", "*", "~", "\n", "%s", ""]

    result = await scheduler.transport.run(testcluster.identity("ALPHA"),
                                           ["printf", "[%s]", *nasty])

    assert result.out == "".join(f"[{a}]" for a in nasty)


async def test_connections_set_tcp_nodelay_and_stay_within_the_pool_bounds(
        testcluster: Cluster) -> None:
    config = testcluster.config(pool_size=2)
    scheduler = SlurmSshScheduler(config)
    alpha = testcluster.identity("ALPHA")
    try:
        # 3 connections' worth of commands at once: 2 connections, 8 channels each, the rest wait
        results = await asyncio.gather(*(scheduler.transport.run(alpha, ["sleep", "0.5"])
                                         for _ in range(3 * CHANNELS_PER_CONNECTION)))
        assert {r.status for r in results} == {0}
        conns = scheduler.transport._pool(alpha)._conns
        assert len(conns) == 2
        for conn in conns:
            sock = conn.transport.sock
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        await scheduler.close()


async def test_idle_connections_are_closed_and_replaced(testcluster: Cluster) -> None:
    scheduler = SlurmSshScheduler(testcluster.config(idle_timeout=0.5))
    alpha = testcluster.identity("ALPHA")
    try:
        await scheduler.transport.run(alpha, ["true"])
        (first,) = scheduler.transport._pool(alpha)._conns
        await asyncio.sleep(0.8)

        await scheduler.transport.run(alpha, ["true"])

        (second,) = scheduler.transport._pool(alpha)._conns
        assert second is not first and not first.transport.is_active()
    finally:
        await scheduler.close()


async def test_dropped_connections_are_replaced_without_failing_the_next_call(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    await scheduler.transport.run(alpha, ["true"])

    scheduler.transport.break_connections()

    assert (await scheduler.transport.run(alpha, ["echo", "again"])).out == "again\n"


async def test_sshd_down_gives_unavailable_and_the_same_scheduler_recovers_when_it_is_back(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    assert await scheduler.states(["99999991"]) == {}  # a pooled connection exists
    fresh = SlurmSshScheduler(testcluster.config(connect_timeout=3))
    testcluster.control("stop", "sshd")
    try:
        scheduler.transport.break_connections()  # what the network would do to live sessions
        for s in (scheduler, fresh):
            started = time.monotonic()
            with pytest.raises(SchedulerUnavailable) as down:
                await s.states(["99999991"])
            assert time.monotonic() - started < 3
            assert not down.value.maybe_executed
        assert not (await scheduler.health()).ok
    finally:
        testcluster.control("up")
        await fresh.close()

    assert await scheduler.states(["99999991"]) == {}
    assert (await scheduler.health()).ok


async def test_changed_host_key_is_refused(testcluster: Cluster) -> None:
    s = SlurmSshScheduler(testcluster.config(
        known_hosts=Path(testcluster["KNOWN_HOSTS_WRONG"])))
    try:
        with pytest.raises(SchedulerAuthError, match=r"host key .* changed"):
            await s.states(["1"])
        health = await s.health()
        assert not health.ok and "SchedulerAuthError" in health.detail
    finally:
        await s.close()


async def test_unknown_host_key_is_refused(testcluster: Cluster, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    s = SlurmSshScheduler(testcluster.config(known_hosts=empty))
    try:
        with pytest.raises(SchedulerAuthError, match="not in known_hosts"):
            await s.states(["1"])
        assert empty.read_text() == ""  # refused, never added
    finally:
        await s.close()


async def test_a_key_the_user_does_not_have_is_refused(scheduler: SlurmSshScheduler,
                                                       testcluster: Cluster) -> None:
    impostor = testcluster.identity("ALPHA").model_copy(
        update={"key_file": testcluster["BETA_KEY"]})

    with pytest.raises(SchedulerAuthError, match="authentication failed"):
        await scheduler.transport.run(impostor, ["true"])


async def test_registry_builds_the_backend_and_checks_the_cluster(testcluster: Cluster) -> None:
    s = build_scheduler(testcluster.config())
    assert isinstance(s, SlurmSshScheduler)
    await s.close()

    health = await check_cluster(testcluster.config())

    assert health.ok and "UP" in health.detail and health.cluster == testcluster["CLUSTER"]


async def _pool_channels_in_use(scheduler: SlurmSshScheduler) -> int:
    pools = list(scheduler.transport._pools.values())
    return sum(c.in_use for p in pools for c in p._conns)


async def test_a_staged_sbatch_submits_once_its_script_is_sent(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    spec = _spec("echo staged", testcluster.partition)

    before = scheduler.transport.commands_run
    staged = scheduler.stage(alpha, spec)
    await asyncio.sleep(0.5)  # sbatch has started and waits for its script: nothing submitted
    assert scheduler.transport.commands_run - before == 1
    assert await scheduler.find_by_marker(alpha, spec.marker) is None
    before = scheduler.transport.commands_run
    job_id = (await staged.submit(alpha, spec)).scheduler_id
    staged.discard()  # harmless after submit
    assert scheduler.transport.commands_run == before  # the staged command, no second one

    found = await scheduler.find_by_marker(alpha, spec.marker)
    assert found is not None and found.scheduler_id == job_id
    assert await _ended(scheduler, job_id) == JobState.completed
    out = (await scheduler.read_output(alpha, spec.stdout, 0, 100)).data
    assert out == b"staged\n"
    assert await _pool_channels_in_use(scheduler) == 0


async def test_a_discarded_staged_sbatch_submits_nothing_and_frees_its_channel(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    spec = _spec("echo never", testcluster.partition)
    staged = scheduler.stage(alpha, spec)
    staged.discard()  # at once: closed once it has started
    later = scheduler.stage(alpha, _spec("echo never", testcluster.partition))
    await asyncio.sleep(0.5)
    later.discard()  # after it has started

    await asyncio.sleep(1)
    assert await scheduler.find_by_marker(alpha, spec.marker) is None
    assert await _pool_channels_in_use(scheduler) == 0


async def test_a_staged_sbatch_unlike_the_committed_job_is_discarded_for_a_plain_submit(
        scheduler: SlurmSshScheduler, testcluster: Cluster) -> None:
    alpha = testcluster.identity("ALPHA")
    staged_spec = _spec("echo staged", testcluster.partition)
    committed = staged_spec.model_copy(update={"name": "renamed-meanwhile"})

    job_id = (await scheduler.stage(alpha, staged_spec).submit(alpha, committed)).scheduler_id

    found = await scheduler.find_by_marker(alpha, committed.marker)
    assert found is not None and found.scheduler_id == job_id
    assert await _ended(scheduler, job_id) == JobState.completed
    # the staged sbatch got no script: it submitted nothing (one job of the marker, ever),
    # and the job is the committed one
    listed = await scheduler.transport.run(
        alpha, ["squeue", "--noheader", "--states=all", f"--user={alpha.unix_user}",
                "--format=%k|%j"])
    assert [line for line in listed.out.splitlines() if line.startswith(committed.marker)] == [
        f"{committed.marker}|hpcgw-renamed-meanwhile"]
    assert await _pool_channels_in_use(scheduler) == 0


async def test_a_staged_sbatch_on_a_cluster_that_cannot_be_reached_reports_nothing_sent(
        testcluster: Cluster) -> None:
    config = testcluster.config().model_copy(update={"port": _closed_port(),
                                                     "connect_timeout": 2.0})
    scheduler = SlurmSshScheduler(config)
    try:
        spec = _spec("true", testcluster.partition)
        staged = scheduler.stage(testcluster.identity("ALPHA"), spec)
        with pytest.raises(SchedulerUnavailable) as refused:
            await staged.submit(testcluster.identity("ALPHA"), spec)
        assert refused.value.maybe_executed is False
    finally:
        await scheduler.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
