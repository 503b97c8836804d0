"""Job arrays in the Slurm commands: `--array` and the per-task output files sbatch is given,
and squeue's and sacct's array lines (captured on the test cluster, see fixtures/README.md)
read as one status and one record per task."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedulers.base import task_path
from schedulers.errors import SchedulerError
from schedulers.models import JobSpec, JobState, Resources
from schedulers.slurm_ssh.commands import Sacct, Sbatch, Squeue
from schedulers.slurm_ssh.transport import Result

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = "/home/hpcm_alpha/hpcgw"


def out(name: str) -> Result:
    return Result((FIXTURES / name).read_bytes(), b"", 0)


def array_spec(array: str | None, stdout: str = "runs/hpcgw-ab12.out") -> JobSpec:
    return JobSpec(marker="mk-12345678", name="sweep", script="#!/bin/bash\necho hi\n",
                   resources=Resources(partition="debug", mem_mb=100, time_limit_minutes=1,
                                       array=array),
                   workdir="runs", stdout=stdout, stderr="runs/hpcgw-ab12.err")


def test_sbatch_sends_the_array_and_one_output_file_per_task() -> None:
    argv = Sbatch(array_spec("0-5%2"), ROOT).argv()

    assert "--array=0-5%2" in argv
    assert f"--output={ROOT}/runs/hpcgw-ab12_%a.out" in argv
    assert f"--error={ROOT}/runs/hpcgw-ab12_%a.err" in argv


def test_sbatch_escapes_a_percent_of_the_path_but_not_the_task_pattern() -> None:
    argv = Sbatch(array_spec("1,3", stdout="runs/100%/log.out"), ROOT).argv()

    assert f"--output={ROOT}/runs/100%%/log_%a.out" in argv
    assert task_path("runs/100%/log.out", 3) == "runs/100%/log_3.out"  # what the gateway reads


def test_sbatch_of_a_single_job_has_no_array_and_literal_paths() -> None:
    argv = Sbatch(array_spec(None), ROOT).argv()

    assert not any(a.startswith("--array") for a in argv)
    assert f"--output={ROOT}/runs/hpcgw-ab12.out" in argv


def test_squeue_gives_each_task_of_the_arrays_asked_for() -> None:
    states = Squeue(["941", "943"]).parse(out("squeue_states.txt"))

    assert set(states) == {f"941_{t}" for t in range(6)} | {f"943_{t}" for t in range(4)}
    assert (states["941_0"].state, states["941_1"].state) == (JobState.completed,
                                                              JobState.completed)
    assert (states["941_4"].state, states["941_4"].reason) == (JobState.pending,
                                                               "JobArrayTaskLimit")
    assert states["943_3"].reason == "JobHeldUser"


def test_squeue_reads_a_pending_range_as_each_of_its_tasks() -> None:
    result = Result(b"7_0|RUNNING|cpu=1,mem=1G,node=1|5:00|OK|None\n"
                    b"7_[1-3,8-12:2%2]|PENDING|cpu=2,mem=1G,node=1|5:00|OK|JobArrayTaskLimit\n"
                    b"8|PENDING|N/A|5:00|OK|Priority\n", b"", 0)

    states = Squeue(["7"]).parse(result)

    assert sorted(states) == ["7_0", "7_1", "7_10", "7_12", "7_2", "7_3", "7_8"]
    assert {s.state for k, s in states.items() if k != "7_0"} == {JobState.pending}
    assert states["7_12"].scheduler_id == "7_12" and states["7_12"].cpus == 2


def test_squeue_refuses_a_task_list_it_cannot_read() -> None:
    with pytest.raises(SchedulerError, match="array task list"):
        Squeue(["7"]).parse(Result(b"7_[1-x]|PENDING|N/A|5:00|OK|None\n", b"", 0))


def test_sacct_gives_started_tasks_their_own_record_and_the_rest_pending() -> None:
    records = Sacct(["23"]).parse(out("sacct_array_running.txt"))

    assert set(records) == {f"23_{task}" for task in range(6)}
    assert records["23_0"].state is JobState.running
    assert records["23_0"].alloc_cpus == 1
    pending = records["23_4"]
    assert (pending.state, pending.start, pending.alloc_cpus) == (JobState.pending, None, 0)


def test_sacct_records_each_ended_task_with_its_own_use() -> None:
    records = Sacct(["23", "24"]).parse(out("sacct_array_ended.txt"))

    done = [records[f"23_{task}"] for task in range(6)]
    assert {r.state for r in done} == {JobState.completed}
    assert [r.elapsed_seconds for r in done] == [4, 3, 3, 3, 3, 3]
    assert {(r.alloc_cpus, r.alloc_mem_mb) for r in done} == {(1, 100)}
    ran = records["24_0"]
    assert (ran.state, ran.raw_state, ran.elapsed_seconds) == (JobState.cancelled,
                                                               "CANCELLED by 1001", 3)
    never = [records[f"24_{task}"] for task in range(1, 6)]
    assert {(r.state, r.elapsed_seconds, r.alloc_cpus, r.start) for r in never} == {
        (JobState.cancelled, 0, 0, None)}


def test_sacct_prefers_a_tasks_own_line_to_a_range_that_names_it_too() -> None:
    # Slurm 22.05 may list a cancelled array's whole range, tasks that ran included
    lines = ("12_[0-3%2]|12|CANCELLED by 1001|0:0|1|None|1796194550|0||None assigned|1|0|a|u|\n"
             "12_0|13|CANCELLED by 1001|0:0|1|1796194547|1796194550|3|billing=250,cpu=1,"
             "mem=100M,node=1|vm|1||a|u|\n")

    records = Sacct(["12"]).parse(Result(lines.encode(), b"", 0))

    assert records["12_0"].elapsed_seconds == 3
    assert [records[f"12_{t}"].elapsed_seconds for t in (1, 2, 3)] == [0, 0, 0]


def test_sacct_ignores_tasks_of_arrays_not_asked_for() -> None:
    assert set(Sacct(["24"]).parse(out("sacct_array_ended.txt"))) == {
        f"24_{task}" for task in range(6)}
