"""The researcher's CLI against a gateway process on the Slurm test cluster: a script's #SBATCH
time, CPUs, memory and array reach Slurm exactly (read back with sacct as the cluster's admin),
`--wait` exits with the job's outcome, `logs --follow` prints lines as the job writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from e2e_helpers import World, wait_for
from factories import PASSWORD
from server_process import free_port

from gateway.db import Database
from gateway.settings import Settings

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
HPCGW = str(Path(sys.executable).parent / "hpcgw")


@pytest.fixture
def gateway_url(settings: Settings, fresh_database: Database, world: World,
                tmp_path: Path) -> Iterator[str]:
    """gateway_process.py (the app under uvicorn, trackers included) on the test's database."""
    data = settings.model_copy(update={"database_url": fresh_database.url}).model_dump(
        mode="json")
    data["secret_key"] = settings.secret_key.get_secret_value()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "gateway.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "gateway_process.py"), str(port)],
            env={**os.environ, "HPCGW_E2E_SETTINGS": json.dumps(data)}, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_for("the gateway answers /healthz", ready, within=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def cli_env(gateway_url: str, tmp_path: Path) -> dict[str, str]:
    """An environment logged in as alice (alpha's researcher), the profile in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    done = subprocess.run([HPCGW, "login", gateway_url, "-u", "alice@alpha.test",
                           "--password-stdin"], input=PASSWORD + "\n", env=env, text=True,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return env


def hpcgw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HPCGW, *args], env=env, text=True, capture_output=True, timeout=180,
                          check=False)


def test_sbatch_lines_reach_slurm_exactly_and_wait_returns_the_outcome(
        *, cli_env: dict[str, str], world: World, testcluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "array.sh"
    script.write_text("#!/bin/bash\n#SBATCH --time=00:03:00\n#SBATCH --cpus-per-task=2\n"
                      "#SBATCH --mem=300M\n#SBATCH --array=0-2\n#SBATCH -p debug\n"
                      "echo task $SLURM_ARRAY_TASK_ID\n")

    done = hpcgw(cli_env, "submit", str(script), "-A", str(world.alpha_project.id), "--wait",
                 "--json")

    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)["job"]
    assert job["state"] == "completed" and job["tasks"] == {"completed": 3}
    assert {k: job["resources"][k] for k in ("time_limit_minutes", "cpus_per_task", "mem_mb",
                                             "array", "partition")} == {
        "time_limit_minutes": 3, "cpus_per_task": 2, "mem_mb": 300, "array": "0-2",
        "partition": "debug"}
    sacct = testcluster.shell("ADMIN", f"sacct -X -n -P -j {int(job['scheduler_id'])} "
                                       "-o JobID,Timelimit,ReqCPUS,ReqMem,Partition")
    assert sacct.returncode == 0, sacct.stderr
    rows = sorted(line.split("|") for line in sacct.stdout.splitlines())
    assert rows == [[f"{job['scheduler_id']}_{t}", "00:03:00", "2", "300M", "debug"]
                    for t in range(3)]
    task = hpcgw(cli_env, "logs", job["id"], "--task", "2")
    assert (task.returncode, task.stdout) == (0, "task 2\n")


def test_wait_exits_1_when_the_job_fails(*, cli_env: dict[str, str], world: World,
                                         tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/bash\n#SBATCH -t 1\n#SBATCH --mem=100M\n#SBATCH -p debug\n"
                      "exit 7\n")
    done = hpcgw(cli_env, "submit", str(script), "-A", str(world.alpha_project.id), "-W")
    assert done.returncode == 1, done.stderr
    assert "failed (exit 7)" in done.stderr


def test_logs_follow_prints_lines_as_the_job_writes_them(
        *, cli_env: dict[str, str], world: World, tmp_path: Path) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/bash\n#SBATCH -t 2\n#SBATCH --mem=100M\n#SBATCH -p debug\n"
                      "echo one\nsleep 4\necho two\nsleep 4\necho three\n")
    submitted = hpcgw(cli_env, "submit", str(script), "-A", str(world.alpha_project.id),
                      "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job"]["id"]
    follower = subprocess.Popen([HPCGW, "logs", job_id, "-f"], env=cli_env, text=True,
                                stdout=subprocess.PIPE)
    assert follower.stdout is not None
    seen = [(line.strip(), time.monotonic()) for line in follower.stdout]
    assert follower.wait(timeout=60) == 0
    assert [line for line, _ in seen] == ["one", "two", "three"]
    assert seen[2][1] - seen[1][1] > 2.5  # each printed when written, not all at the end
