"""The project's Slurm test cluster (scripts/testcluster.sh) as the tests see it.
Cluster-side checks go through the OpenSSH client, not through the code under test."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedulers.config import BillingWeights, ClusterConfig, IdentityConfig, PartitionConfig
from schedulers.models import Identity

ROOT = Path(__file__).resolve().parents[1]
TESTCLUSTER = ROOT / "scripts" / "testcluster.sh"
# slurm.conf's TRESBillingWeights (CPU=250,Mem=62.5G,GRES/gpu=1000) over slurm_billing_scale 1000
BILLING = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.env[f"HPCGW_TC_{key}"]

    def config(self, **changes: Any) -> ClusterConfig:
        partitions = [PartitionConfig(name=p, max_time_minutes=60, max_cpus_per_job=4,
                                      max_gpus_per_job=int(self["GPUS"]),
                                      max_mem_mb_per_job=4096, billing=BILLING)
                      for p in self["PARTITIONS"].replace(",", " ").split()]
        values: dict[str, Any] = {
            "name": self["CLUSTER"], "backend": "slurm_ssh", "host": self["SSH_HOST"],
            "port": int(self["SSH_PORT"]), "known_hosts": Path(self["KNOWN_HOSTS"]),
            "admin": IdentityConfig(unix_user=self["ADMIN_USER"],
                                    key_file=Path(self["ADMIN_KEY"])),
            "identities": {who.lower(): IdentityConfig(unix_user=self[f"{who}_USER"],
                                                       key_file=Path(self[f"{who}_KEY"]))
                           for who in ("ALPHA", "BETA")},
            "work_root": self["WORK_ROOT"], "partitions": partitions,
            "connect_timeout": 5.0, "command_timeout": 30.0,
        }
        return ClusterConfig(**(values | changes))

    def identity(self, who: str) -> Identity:
        """who: ALPHA, BETA or ADMIN."""
        user = self[f"{who}_USER"]
        return Identity(name=who.lower(), unix_user=user, key_file=self[f"{who}_KEY"],
                        work_root=self["WORK_ROOT"].format(unix_user=user))

    @property
    def partition(self) -> str:
        return self["DEFAULT_PARTITION"]

    def shell(self, who: str, command: str, *,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `command` on the cluster as ALPHA, BETA or ADMIN with the ssh CLI."""
        return subprocess.run(
            ["ssh", "-q", "-i", self[f"{who}_KEY"], "-p", self["SSH_PORT"],
             "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self['KNOWN_HOSTS']}",
             "-o", "StrictHostKeyChecking=yes", f"{self[f'{who}_USER']}@{self['SSH_HOST']}",
             command],
            capture_output=True, text=True, timeout=timeout, check=False)

    def control(self, *args: str) -> None:
        """scripts/testcluster.sh ARGS (stop sshd, up, ...)."""
        done = subprocess.run([TESTCLUSTER, *args], capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, f"testcluster.sh {' '.join(args)}: {done.stderr}"


def parse_env(text: str) -> dict[str, str]:
    """`testcluster.sh env` prints shell-quoted KEY=VALUE lines."""
    return dict(shlex.split(line)[0].split("=", 1) for line in text.splitlines() if "=" in line)
