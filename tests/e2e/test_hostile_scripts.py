"""Hostile job scripts against the real test cluster, through the API: every `#SBATCH` (or
`#PBS`, `#BSUB`, `#SLURM`) trick that would make Slurm allocate more than the gateway quoted.
Those the gateway refuses answer 422 naming their line and reach Slurm not at all; those it
takes run, and for each, what Slurm allocated (sacct's AllocTRES, per resource and as its own
billing) for as long as it ran, and for as long as it could have run (its time limit), never
costs more than the hold the gateway took."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from e2e_helpers import PARTITION, World, mem_mb, until_ended, wait_for
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.db import Database
from gateway.jobs.models import Job
from gateway.settings import Settings
from quotas.models import Hold
from quotas.rates import Amounts, price

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"
SH = "#!/bin/bash\n"
RUN = "sleep 1\n"
# the request's own resources: one CPU, 256 MiB, one minute
ONE_CPU = {"partition": PARTITION, "mem_mb": 256, "time_limit_minutes": 1}
HEAD = f"#SBATCH -p {PARTITION} --mem=256 -t 1\n"


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    refused_at: int | None = None  # the line a 422 names; None: taken and run
    resources: dict[str, Any] | None = None  # None: the script's lines alone
    environment: dict[str, str] = field(default_factory=dict)
    loc: tuple[str, ...] = ("body", "script")


def refused(name: str, line: str, at: int = 2, *, before: str = SH) -> Case:
    return Case(name, f"{before}{line}\n{RUN}", at, ONE_CPU)


REFUSED = [
    refused("exclusive", "#SBATCH --exclusive"),
    Case("the issue's array of exclusive 4-CPU tasks",
         f"{SH}#SBATCH --array=0-5\n#SBATCH --exclusive\n#SBATCH --cpus-per-task=4\n{RUN}", 3,
         {**ONE_CPU, "cpus_per_task": 1}),
    refused("ntasks-per-node", "#SBATCH --ntasks-per-node=4"),
    refused("mem=0 (the whole node)", "#SBATCH --mem=0"),
    refused("mem-per-gpu", "#SBATCH --mem-per-gpu=1G"),
    refused("gpus-per-node", "#SBATCH --gpus-per-node=2"),
    refused("typed gres", "#SBATCH --gres=gpu:tesla:1"),
    refused("qos", "#SBATCH --qos=normal"),
    refused("reservation", "#SBATCH --reservation=maint"),
    refused("dependency", "#SBATCH --dependency=afterany:1"),
    refused("begin", "#SBATCH --begin=now+1hour"),
    refused("nice", "#SBATCH --nice=-1000"),
    refused("another member's account", "#SBATCH --account=hpcm_beta"),
    refused("a forged marker", "#SBATCH --comment=hpcgw:hpcgwtest:000000000000"),
    refused("export", "#SBATCH --export=ALL"),
    refused("chdir", "#SBATCH --chdir=/tmp"),
    refused("hold", "#SBATCH -H"),
    refused("requeue", "#SBATCH --requeue"),
    refused("overcommit", "#SBATCH --overcommit"),
    refused("oversubscribe", "#SBATCH --oversubscribe"),
    refused("nodelist", "#SBATCH -w vm"),
    refused("mail", "#SBATCH --mail-type=ALL --mail-user=a@b.test"),
    refused("hetjob", "#SBATCH -c 1\n#SBATCH hetjob\n#SBATCH -c 4", 3),
    refused("#PBS in the header", "#PBS -l nodes=1:ppn=4"),
    refused("#BSUB in the header", "#BSUB -n 4"),
    refused("#SLURM, sbatch's old prefix", "#SLURM --exclusive"),
    refused("no blank after #SBATCH", "#SBATCH--exclusive"),
    refused("a tab after #SBATCH", "#SBATCH\t--exclusive"),
    refused("a quoted option", "#SBATCH \"--exclusive\""),
    refused("an abbreviated option", "#SBATCH --excl"),
    refused("grouped short options", "#SBATCH -Oc4"),
    refused("after blank and comment lines", "#SBATCH --exclusive", 5,
            before=f"{SH}\n# set-up\n\n"),
    refused("CRLF line ends", "#SBATCH --exclusive\r", 3, before="#!/bin/bash\r\n#SBATCH -t 1\r\n"),
    refused("two partitions", "#SBATCH --partition=debug,long"),
    refused("no time limit", "#SBATCH --time=UNLIMITED"),
    refused("a second job line", "#SBATCH --wrap='sleep 600'"),
    Case("more CPUs than the partition", f"{SH}#SBATCH --cpus-per-task=8\n{RUN}", None, ONE_CPU,
         loc=("body", "resources", "cpus_per_task")),
]

TAKEN = [
    Case("indented #SBATCH is a comment", f"{SH}  #SBATCH --exclusive\n{RUN}", None, ONE_CPU),
    Case("tab-indented #SBATCH", f"{SH}\t#SBATCH --cpus-per-task=4\n{RUN}", None, ONE_CPU),
    Case("lower-case #sbatch", f"{SH}#sbatch --exclusive\n{RUN}", None, ONE_CPU),
    Case("##SBATCH", f"{SH}##SBATCH --exclusive\n{RUN}", None, ONE_CPU),
    Case("after the first command", f"{SH}echo go\n#SBATCH --exclusive\n#SBATCH -c 4\n{RUN}",
         None, ONE_CPU),
    Case("in a here-document", f"{SH}cat >/dev/null <<'EOF'\n#SBATCH --exclusive\nEOF\n{RUN}",
         None, ONE_CPU),
    Case("hidden behind a comment", f"{SH}{HEAD.rstrip()} # --exclusive --qos=high\n{RUN}"),
    Case("behind an empty word", f"{SH}{HEAD.rstrip()} '' --exclusive\n{RUN}"),
    Case("overridden by the request", f"{SH}#SBATCH -c 4 --mem=3G --time=30 -p long\n{RUN}",
         None, {**ONE_CPU, "cpus_per_task": 1}),
    # without --ignore-pbs, sbatch reads #PBS lines past the first command: this one alone
    # made Slurm 22.05 allocate 4 CPUs to a job sent with --cpus-per-task=1 (measured)
    Case("#PBS after the header (--ignore-pbs)",
         f"{SH}{HEAD}echo go\n#PBS -l ncpus=4\n#PBS -l walltime=00:30:00\n{RUN}"),
    Case("#BSUB after the header (--ignore-pbs)", f"{SH}{HEAD}echo go\n#BSUB -n 4\n{RUN}"),
    Case("tasks and memory per CPU, priced",
         f"{SH}#SBATCH -p {PARTITION} -n 2 -c 1 --mem-per-cpu=200 -t 1\n{RUN}"),
    Case("a value on the next line", f"{SH}{HEAD}#SBATCH --cpus-per-task\n#SBATCH 2\n{RUN}"),
    Case("quotes, name and output file",
         f"{SH}{HEAD}#SBATCH -J \"hostile-name\" -o 'logs/out.txt'\n{RUN}"),
    Case("an exported value spelling a directive", f"{SH}{HEAD}echo \"$X\"\n{RUN}",
         environment={"X": "a\n#SBATCH --exclusive\n#SBATCH -c 4"}),
    Case("gres per node, priced", f"{SH}{HEAD}#SBATCH --gres=gpu:1\n{RUN}"),
    Case("-G, priced", f"{SH}{HEAD}#SBATCH -G 2\n{RUN}"),
    Case("seconds rounded up", f"{SH}#SBATCH -p {PARTITION} --mem=1G -t 0:45\n{RUN}"),
    Case("hetjob after the header", f"{SH}{HEAD}: hetjob\n{RUN}"),
]


def body(world: World, case: Case, name: str) -> dict[str, Any]:
    return {"project": world.alpha_project.id, "name": name, "script": case.script,
            "environment": case.environment,
            **({"resources": case.resources} if case.resources else {})}


def accounting(testcluster: Cluster, job_id: str) -> dict[str, str]:
    """sacct's record of the job, once slurmdbd has its end."""
    def read() -> dict[str, str] | None:
        done = testcluster.shell("ADMIN", f"sacct -X -n -P -j {int(job_id)} "
                                          "-o AllocTRES,ElapsedRaw,TimelimitRaw,NNodes,State")
        assert done.returncode == 0, done.stderr
        tres, elapsed, limit, nodes, state = done.stdout.strip().split("|")
        if not (tres and elapsed and limit and state == "COMPLETED"):
            return None
        return {**dict(item.split("=", 1) for item in tres.split(",")), "elapsed": elapsed,
                "limit": limit, "nodes": nodes, "state": state}
    found: dict[str, str] = wait_for(f"sacct of {job_id}", read, within=30, every=0.5)
    return found


def slurm_job_names(testcluster: Cluster, user: str, since: float) -> list[str]:
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
    done = testcluster.shell("ADMIN", f"sacct -X -n -P -u {user} -S {start} -o JobName%100")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_at_least_thirty_hostile_scripts() -> None:
    assert len(REFUSED) + len(TAKEN) >= 30 and len({c.name for c in REFUSED + TAKEN}) == len(
        REFUSED + TAKEN)


def test_no_hostile_script_gets_more_from_slurm_than_its_hold_covers(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    alice = auth_headers(settings, world.alice)
    started = time.time() - 1
    for number, case in enumerate(REFUSED):
        answer = gateway.post(JOBS, headers=alice, json=body(world, case, f"refused-{number}"))
        assert answer.status_code == 422, (case.name, answer.text)
        errors = answer.json()["errors"]
        assert {tuple(e["loc"]) for e in errors} == {case.loc}, (case.name, errors)
        if case.refused_at is not None:
            assert errors[0]["msg"].startswith(f"line {case.refused_at}: "), (case.name, errors)
    with fresh_database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0

    jobs = {}
    for number, case in enumerate(TAKEN):  # all submitted first, then waited for together
        answer = gateway.post(JOBS, headers=alice, json=body(world, case, f"taken-{number}"))
        assert answer.status_code == 201, (case.name, answer.text)
        jobs[case.name] = answer.json()
    partition = settings.clusters[0].partition(PARTITION)
    assert partition is not None
    for name, job in jobs.items():
        ended = until_ended(gateway, alice, job["id"], within=120)
        assert ended["state"] == "completed", (name, ended["state"], ended["detail"])
        with fresh_database.transaction(write=False) as session:
            hold = session.scalars(select(Hold.amount_msu).where(Hold.job_id == job["id"])).one()
        assert hold == job["quote_msu"]
        r, used = job["resources"], accounting(testcluster, ended["scheduler_id"])
        amounts = Amounts(gpus=int(used.get("gres/gpu", 0)), cpus=int(used["cpu"]),
                          mem_mb=mem_mb(used["mem"]))
        elapsed, limit = int(used["elapsed"]), int(used["limit"])
        # each resource as quoted, never more
        quoted = (r["ntasks"] * r["cpus_per_task"], r["mem_mb"], r["gpus"], r["nodes"],
                  r["time_limit_minutes"])
        allocated = (amounts.cpus, amounts.mem_mb, amounts.gpus, int(used["nodes"]), limit)
        assert all(a <= q for a, q in zip(allocated, quoted, strict=True)), (
            name, allocated, quoted)
        # what it used and what it could have used, by our rule and by Slurm's own billing
        # (milli-SU per hour: the cluster's weights are ours x 1000)
        billing = int(used["billing"])
        assert price(partition.billing, amounts, elapsed) <= hold, (name, used, hold)
        assert price(partition.billing, amounts, limit * 60) <= hold, (name, used, hold)
        assert billing * limit * 60 / 3600 <= hold, (name, used, hold)
    # the refused scripts reached Slurm not at all (the request's name is the job's)
    names = slurm_job_names(testcluster, testcluster["ALPHA_USER"], started)
    assert not [n for n in names if n.startswith("hpcgw-refused-")], names
    assert sum(n.startswith("hpcgw-taken-") for n in names) == len(TAKEN), names
