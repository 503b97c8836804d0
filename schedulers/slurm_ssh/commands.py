"""One object per Slurm command: it builds the argv (quoted by the transport) and parses the
machine-readable output (`--parsable`, `--parsable2 --noheader`, explicit formats)."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from schedulers.base import JOB_NAME_PREFIX, task_path
from schedulers.errors import (
    PathRefused,
    SchedulerError,
    SchedulerRejected,
    SchedulerTimeout,
    SchedulerUnavailable,
)
from schedulers.models import (
    UNLIMITED_MINUTES,
    AccountingRecord,
    FoundJob,
    JobSpec,
    JobState,
    JobStatus,
    Submitted,
)
from schedulers.slurm_ssh.paths import confine
from schedulers.slurm_ssh.states import job_state
from schedulers.slurm_ssh.transport import Result

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# interpreters the `export` lines put in front of the script are valid for
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
# Slurm's messages that mean "could not reach the daemons", not "refused"
_UNREACHABLE = ("Unable to contact slurm controller", "Unable to contact slurmdbd",
                "Connection refused", "Zero Bytes were transmitted or received")
_SLOW = ("Socket timed out",)


def slurm_error(result: Result, *, command: str) -> SchedulerError:
    """The scheduler error for a failed Slurm command, carrying Slurm's own words."""
    text = result.err or result.out.strip()  # sacctmgr says "Nothing modified" on stdout
    lines = [re.sub(r"^\w+: error: ", "", line).strip() for line in text.splitlines()]
    message = "; ".join(line for line in lines if line) or f"{command} exited {result.status}"
    if any(s in message for s in _SLOW):
        return SchedulerTimeout(message)
    if any(s in message for s in _UNREACHABLE):
        return SchedulerUnavailable(message)
    return SchedulerRejected(message)


def _rows(result: Result, fields: int) -> list[list[str]]:
    """`|`-separated rows; the last field may itself contain `|`."""
    rows = []
    for line in result.out.splitlines():
        if line.strip():
            row = line.split("|", fields - 1)
            if len(row) != fields:
                raise SchedulerError(f"unexpected Slurm output line: {line!r}")
            rows.append(row)
    return rows


_TASK_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def _job_ids(job_id: str, wanted: set[str]) -> list[str]:
    """The ids a line of squeue or sacct stands for, if its job is wanted: the job's own
    (`123`, `123_4`), or each task of a pending range (`123_[5-9,12%2]` -> `123_5`...)."""
    parent, _, tasks = job_id.partition("_")
    if parent not in wanted:
        return []
    if not tasks.startswith("["):
        return [job_id]
    ids: list[str] = []
    for part in tasks.strip("[]").partition("%")[0].split(","):
        found = _TASK_RANGE.match(part)
        if found is None:
            raise SchedulerError(f"unexpected Slurm array task list: {job_id!r}")
        first = int(found[1])
        last, step = int(found[2] or first), int(found[3] or 1)
        ids.extend(f"{parent}_{task}" for task in range(first, last + 1, step))
    return ids


def _slurm_path(path: str) -> str:
    """A literal path for --output/--error: Slurm expands %x patterns there (%% is a literal %)
    and a backslash turns expansion off and is dropped, so it cannot be passed at all."""
    if "\\" in path:
        raise PathRefused(f"{path!r}: Slurm cannot take a backslash in an output path")
    return path.replace("%", "%%")


def _output(path: str, array: str | None) -> str:
    """--output/--error: the literal path, or for an array one file per task (`_%a`, Slurm's
    task id, added after the path's own `%` were escaped)."""
    return _slurm_path(path) if array is None else task_path(_slurm_path(path), "%a")


def _no_control(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise SchedulerRejected(f"{what} contains control characters: {value!r}")
    return value


@dataclass(frozen=True)
class Sbatch:
    """`sbatch --parsable` with the script on stdin; its directories made first (Slurm does not
    create them, and a job whose output directory is missing dies without a word)."""

    spec: JobSpec
    work_root: str

    @property
    def paths(self) -> tuple[str, str, str]:
        s = self.spec
        for p in (s.workdir, s.stdout, s.stderr):
            if _CONTROL.search(p):
                raise PathRefused(f"{p!r} contains control characters")
        chdir, out, err = (confine(self.work_root, p) for p in (s.workdir, s.stdout, s.stderr))
        if confine(self.work_root, "") in (out, err):
            raise PathRefused("stdout and stderr must name files")
        return chdir, out, err

    def dirs(self) -> list[str]:
        chdir, out, err = self.paths
        return list(dict.fromkeys([chdir, posixpath.dirname(out), posixpath.dirname(err)]))

    def argv(self) -> list[str]:
        s, r = self.spec, self.spec.resources
        chdir, out, err = self.paths
        # sbatch takes SBATCH_* from its environment for options not on this line (exclusive,
        # GPUs per node...). No `env -i` here: a clean environment needs the site's PATH and
        # SLURM_CONF (the test cluster's comes from sshd's SetEnv), unknown to the gateway, and
        # a login shell reading the member's files defeats any prefix. The accounts' shell and
        # sshd settings close it (docs/cluster-accounts.md); the tracker cancels what is left.
        argv = [
            "sbatch", "--parsable",
            f"--job-name={JOB_NAME_PREFIX}{_no_control(s.name, 'job name')}",
            f"--comment={s.marker}",
            f"--partition={_no_control(r.partition, 'partition')}",
            f"--nodes={r.nodes}",
            f"--ntasks={r.ntasks}",
            f"--cpus-per-task={r.cpus_per_task}",
            f"--mem={r.mem_mb_per_node}M",
            f"--time={r.time_limit_minutes}",
            f"--chdir={chdir}",
            f"--output={_output(out, r.array)}",
            f"--error={_output(err, r.array)}",
            "--export=NONE",
            "--ignore-pbs",  # no #PBS/#BSUB line of the script is translated to an option
        ]
        if r.array is not None:
            argv.append(f"--array={_no_control(r.array, 'array')}")
        if r.gpus:
            argv.append(f"--gpus={r.gpus}")  # the job's; --gres=gpu:N would be per node
        if s.account:
            argv.append(f"--account={_no_control(s.account, 'account')}")
        return argv

    def stdin(self) -> bytes:
        """The script, with `export NAME='value'` lines after its #! and #SBATCH header (sbatch
        reads directives only up to the first command). Values are shell-quoted, so commas,
        quotes and newlines arrive as written (--export could carry none of them)."""
        script, env = self.spec.script, self.spec.environment
        if not env:
            return script.encode()
        for name in env:
            if not ENV_NAME.match(name):
                raise SchedulerRejected(f"invalid environment variable name: {name!r}")
        lines = script.splitlines(keepends=True)
        shebang = lines[0] if lines and lines[0].startswith("#!") else ""
        words = shebang[2:].split()
        interpreter = posixpath.basename(words[1] if words[:1] == ["/usr/bin/env"] and
                                         len(words) > 1 else (words or [""])[0])
        if interpreter not in _SHELLS:
            raise SchedulerRejected("environment variables need a shell script (#!/bin/bash or "
                                    f"#!/bin/sh), not {shebang.strip() or 'no #! line'}")
        header = 0
        while header < len(lines) and (lines[header].startswith("#")
                                       or not lines[header].strip()):
            header += 1
        if header and not lines[header - 1].endswith("\n"):
            lines[header - 1] += "\n"
        exports = [f"export {name}={shlex.quote(value)}\n" for name, value in env.items()]
        return "".join(lines[:header] + exports + lines[header:]).encode()

    def parse(self, result: Result) -> Submitted:
        if result.status != 0:
            raise slurm_error(result, command="sbatch")
        job_id = result.out.strip().split(";", 1)[0]
        if not re.fullmatch(r"\d+", job_id):
            raise SchedulerError(f"sbatch printed no job id: {result.out!r}")
        return Submitted(scheduler_id=job_id)


# squeue's long format (-O): the same names on Slurm 22.05 and 24.11, and no width given, so
# none is cut. tres-alloc is the job's TRES as Slurm holds it: requested while it waits,
# allocated once it runs (`cpu=2,mem=200M,node=1,billing=500,gres/gpu=1`, an array's per
# task). OverSubscribe: NO (--exclusive), USER, MCS, TOPO (24.11) are whole-node forms; OK
# (the default) and YES share the node.
SQUEUE_FIELDS = ("JobArrayID", "State", "tres-alloc", "TimeLimit", "OverSubscribe", "Reason")
_SHARED = {"OK": False, "YES": False, "NO": True, "USER": True, "MCS": True, "TOPO": True}
_LIMIT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


@dataclass(frozen=True)
class Squeue:
    """States of the given jobs as the controller knows them (including those that ended in
    the last MinJobAge seconds), with the sizes Slurm holds them at. Array tasks one per line
    (`--array`): `123_4`; an array's pending tasks may still share one line, `123_[5-9%2]`,
    read as one status per task."""

    scheduler_ids: Sequence[str]

    def argv(self) -> list[str]:
        fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS[:-1])
        return ["squeue", "--noheader", "--array", "--states=all",
                f"--jobs={','.join(self.scheduler_ids)}",
                f"--Format={fields},{SQUEUE_FIELDS[-1]}:"]

    def parse(self, result: Result) -> dict[str, JobStatus]:
        if result.status != 0:
            # one id the controller does not know (any more) is an error; several are not
            if "Invalid job id specified" in result.err:
                return {}
            raise slurm_error(result, command="squeue")
        wanted = set(self.scheduler_ids)
        states = {}
        for line_id, raw, alloc, limit, shared, reason in _rows(result, len(SQUEUE_FIELDS)):
            state = job_state(raw)
            tres = parse_tres(alloc)
            sizes = {} if "cpu" not in tres else {
                "cpus": int(tres["cpu"]), "mem_mb": round(tres.get("mem", 0)),
                "nodes": int(tres.get("node", 1)), "gpus": int(gpus(tres))}
            for job_id in _job_ids(line_id.strip(), wanted):
                states[job_id] = JobStatus(
                    scheduler_id=job_id, state=state, raw_state=raw.strip(),
                    reason=(reason.strip() if state == JobState.pending
                            and reason.strip() != "None" else None),
                    time_limit_minutes=parse_time_limit(limit.strip()),
                    exclusive=_SHARED.get(shared.strip().upper()), **sizes)
        return states


def parse_time_limit(value: str) -> int | None:
    """squeue's time limit in whole minutes, rounded up: `[days-][hours:]minutes:seconds`
    (`5:00`, `1:30:00`, `2-00:00:00`), UNLIMITED; None for anything else (NOT_SET)."""
    if value == "UNLIMITED":
        return UNLIMITED_MINUTES
    found = _LIMIT.match(value)
    if found is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return ((days * 24 + hours) * 60 + minutes) + (1 if seconds else 0)


SACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "Submit", "Start", "End", "ElapsedRaw",
                "AllocTRES", "NodeList", "NNodes", "ConsumedEnergyRaw", "Account", "User",
                "Comment")


@dataclass(frozen=True)
class Sacct:
    """Accounting of the given jobs (allocations only, -X), times as epoch seconds. An array's
    tasks each have a line once started (`123_4`; JobIDRaw is the task's own job id); those
    never started share one, `123_[5-9%2]` (pending, or cancelled: then Slurm 22.05 lists the
    array's whole range there, tasks that ran included, so a task's own line wins)."""

    scheduler_ids: Sequence[str]

    def argv(self) -> list[str]:
        return ["env", "SLURM_TIME_FORMAT=%s", "sacct", "-X", "--parsable2", "--noheader",
                "--allusers", f"--jobs={','.join(self.scheduler_ids)}",
                f"--format={','.join(SACCT_FIELDS)}"]

    def parse(self, result: Result) -> dict[str, AccountingRecord]:
        if result.status != 0:
            raise slurm_error(result, command="sacct")
        wanted = set(self.scheduler_ids)
        records: dict[str, AccountingRecord] = {}
        rows = [dict(zip(SACCT_FIELDS, row, strict=True))
                for row in _rows(result, len(SACCT_FIELDS))]
        # tasks' own lines first: a range line only fills in the tasks that have none
        for f in sorted(rows, key=lambda f: "[" in f["JobID"]):
            exit_code, signal = parse_exit_code(f["ExitCode"])
            tres = parse_tres(f["AllocTRES"])
            energy = consumed_energy(f["ConsumedEnergyRaw"])
            for job_id in _job_ids(f["JobID"], wanted):
                if job_id in records:
                    continue
                records[job_id] = AccountingRecord(
                    scheduler_id=job_id, state=job_state(f["State"]), raw_state=f["State"],
                    exit_code=exit_code, signal=signal,
                    submit=_time(f["Submit"]), start=_time(f["Start"]), end=_time(f["End"]),
                    elapsed_seconds=_int(f["ElapsedRaw"]) or 0,
                    alloc_cpus=int(tres.get("cpu", 0)),
                    alloc_gpus=int(gpus(tres)),
                    alloc_mem_mb=round(tres.get("mem", 0)),
                    nodes="" if f["NodeList"] == "None assigned" else f["NodeList"],
                    node_count=_int(f["NNodes"]) or 0,
                    consumed_energy_joules=energy,
                    account=f["Account"] or None, user=f["User"] or None)
        return records


def _int(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


# Slurm's NO_VAL64 and INFINITE64, which sacct prints as numbers where a counter gave nothing
_NO_VAL64 = 0xFFFFFFFFFFFFFFFE


def consumed_energy(value: str) -> float | None:
    """ConsumedEnergyRaw in joules, None where nothing was measured: empty (no energy plugin),
    0 (never started, or a counter that read nothing), or Slurm's no-value markers."""
    joules = _int(value)
    return float(joules) if joules and joules < _NO_VAL64 else None


def _time(value: str) -> datetime | None:
    """Epoch seconds (SLURM_TIME_FORMAT=%s); "Unknown"/"None" when unset."""
    seconds = _int(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def parse_exit_code(value: str) -> tuple[int | None, int | None]:
    """sacct's "code:signal"; a signal of 0 means none."""
    code, _, sig = value.partition(":")
    exit_code, signal = _int(code), _int(sig)
    return exit_code, signal or None


_MEM_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_tres(value: str) -> dict[str, float]:
    """"billing=2,cpu=2,gres/gpu=1,mem=1.50G,node=1" -> {"cpu": 2, "mem": 1536 (MB), ...}."""
    tres: dict[str, float] = {}
    for item in value.split(","):
        name, sep, amount = item.partition("=")
        if not sep or not amount:
            continue
        unit = amount[-1].upper()
        if unit in _MEM_UNITS:
            tres[name] = float(amount[:-1]) * _MEM_UNITS[unit]
        else:
            try:
                tres[name] = float(amount)
            except ValueError:
                continue
    return tres


def gpus(tres: dict[str, float]) -> float:
    """gres/gpu when Slurm lists it; else the sum of typed counts (gres/gpu:a100=2)."""
    if "gres/gpu" in tres:
        return tres["gres/gpu"]
    return sum(v for k, v in tres.items() if k.startswith("gres/gpu:"))


@dataclass(frozen=True)
class Scancel:
    scheduler_id: str

    def argv(self) -> list[str]:
        return ["scancel", self.scheduler_id]

    def parse(self, result: Result) -> None:
        # a job that already ended (or was forgotten) needs no cancelling
        if result.status != 0 and not any(
                s in result.err for s in ("already completing or completed",
                                          "Invalid job id specified")):
            raise slurm_error(result, command="scancel")


@dataclass(frozen=True)
class SqueueMarker:
    """The user's jobs the controller knows, with their submit time (%V, epoch seconds) and
    --comment (the gateway's marker, last: it may hold `|`). %F is the id sbatch printed (an
    array's tasks all give the array's id)."""

    unix_user: str
    marker: str

    def argv(self) -> list[str]:
        return ["env", "SLURM_TIME_FORMAT=%s", "squeue", "--noheader", "--states=all",
                f"--user={self.unix_user}", "--format=%F|%V|%k"]

    def parse(self, result: Result) -> FoundJob | None:
        if result.status != 0:
            raise slurm_error(result, command="squeue")
        return next((FoundJob(scheduler_id=job_id, submit=_time(submit))
                     for job_id, submit, comment in _rows(result, 3)
                     if comment == self.marker), None)


@dataclass(frozen=True)
class SacctMarker:
    """The same in accounting, for jobs the controller has forgotten. Slurm stores --comment
    there only with AccountingStoreFlags=job_comment; without it this finds nothing."""

    unix_user: str
    marker: str
    window: str = "now-7days"

    def argv(self) -> list[str]:
        return ["env", "SLURM_TIME_FORMAT=%s", "sacct", "-X", "--parsable2", "--noheader",
                f"--user={self.unix_user}", f"--starttime={self.window}",
                "--format=JobID,Submit,Comment"]

    def parse(self, result: Result) -> FoundJob | None:
        if result.status != 0:
            raise slurm_error(result, command="sacct")
        return next((FoundJob(scheduler_id=job_id.partition("_")[0], submit=_time(submit))
                     for job_id, submit, comment in _rows(result, 3)
                     if comment == self.marker), None)


@dataclass(frozen=True)
class ScontrolHold:
    """`scontrol hold|release` of jobs as the admin: an admin hold (priority 0), which the
    job's owner cannot release. Running jobs are left alone; ended ones need nothing."""

    verb: Literal["hold", "release"]
    job_ids: tuple[str, ...]

    def argv(self) -> list[str]:
        return ["scontrol", self.verb, ",".join(self.job_ids)]

    def parse(self, result: Result) -> None:
        if result.status != 0 and not all(
                any(s in line for s in ("Invalid job id specified", "already finished"))
                for line in result.err.splitlines() if line.strip()):
            raise slurm_error(result, command=f"scontrol {self.verb}")


@dataclass(frozen=True)
class SacctmgrShowCluster:
    """Whether slurmdbd answers: sacctmgr asks it, and names this cluster."""

    def argv(self) -> list[str]:
        return ["sacctmgr", "-n", "-P", "show", "cluster", "format=Cluster"]

    def parse(self, result: Result) -> tuple[bool, str]:
        if result.status != 0:
            return False, slurm_error(result, command="sacctmgr").message
        return True, f"slurmdbd answers (clusters: {' '.join(result.out.split())})"


@dataclass(frozen=True)
class ScontrolPing:
    def argv(self) -> list[str]:
        return ["scontrol", "ping"]

    def parse(self, result: Result) -> tuple[bool, str]:
        detail = (result.out.strip() or result.err).replace("\n", "; ")
        return result.status == 0 and "is UP" in detail, detail
