"""The project's Slurm test cluster, for the tests marked `slurm`: a test that needs it and does
not find it up FAILS, it is never skipped."""

from __future__ import annotations

import subprocess

import pytest
from testcluster_helpers import TESTCLUSTER, Cluster, parse_env


@pytest.fixture(scope="session")
def testcluster() -> Cluster:
    try:
        status = subprocess.run([TESTCLUSTER, "status"], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot ask the Slurm test cluster for its status: {exc}", pytrace=False)
    if status.returncode != 0:
        pytest.fail("the Slurm test cluster is not up; start it with "
                    f"`sudo scripts/testcluster.sh up`:\n{status.stdout}{status.stderr}",
                    pytrace=False)
    out = subprocess.run([TESTCLUSTER, "env"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return Cluster(parse_env(out))
