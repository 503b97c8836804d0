"""The Slurm command objects against output captured from the real test cluster
(tests/schedulers/fixtures, see its README), and the quoting of what they send."""

from __future__ import annotations

import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedulers.errors import (
    PathRefused,
    SchedulerRejected,
    SchedulerTimeout,
    SchedulerUnavailable,
)
from schedulers.models import (
    UNLIMITED_MINUTES,
    AssociationLimits,
    FoundJob,
    JobSpec,
    JobState,
    Resources,
)
from schedulers.slurm_ssh.accounting import (
    ModifyAccount,
    ShowAssociations,
    diff,
    limits_from_row,
)
from schedulers.slurm_ssh.commands import (
    Sacct,
    SacctMarker,
    Sbatch,
    Scancel,
    Squeue,
    SqueueMarker,
    parse_exit_code,
    parse_time_limit,
    parse_tres,
    slurm_error,
)
from schedulers.slurm_ssh.paths import confine
from schedulers.slurm_ssh.states import job_state
from schedulers.slurm_ssh.transport import Result, command_line

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = "/home/hpcm_alpha/hpcgw"
# printable text and newlines: what a job's name, paths and environment may hold
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def out(name: str) -> Result:
    return Result(fixture(name).encode(), b"", 0)


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def spec(**fields: object) -> JobSpec:
    values: dict[str, object] = {
        "marker": "mk-12345678", "name": "train", "script": "#!/bin/bash\necho hi\n",
        "resources": Resources(partition="debug", mem_mb=100, time_limit_minutes=5),
        "stdout": "jobs/1/out", "stderr": "jobs/1/err", "workdir": "jobs/1"} | fields
    return JobSpec.model_validate(values)


def test_squeue_states_of_captured_jobs_including_array_tasks() -> None:
    ids = ["936", "937", "938", "939", "940", "941", "943"]

    states = Squeue(ids).parse(out("squeue_states.txt"))

    summary = {i: (s.state, s.raw_state, s.reason) for i, s in states.items()}
    assert summary == {
        "936": (JobState.completed, "COMPLETED", None),
        "937": (JobState.failed, "FAILED", None),
        "938": (JobState.pending, "PENDING", "BeginTime"),
        "939": (JobState.pending, "PENDING", "JobHeldUser"),
        "940": (JobState.running, "RUNNING", None),
        **{f"941_{t}": (JobState.completed, "COMPLETED", None) for t in (0, 1)},
        **{f"941_{t}": (JobState.pending, "PENDING", "JobArrayTaskLimit") for t in range(2, 6)},
        **{f"943_{t}": (JobState.pending, "PENDING", "JobHeldUser") for t in range(4)},
    }


def test_squeue_reads_the_sizes_slurm_holds_each_job_and_task_at() -> None:
    states = Squeue(["936", "940", "941", "943"]).parse(out("squeue_states.txt"))

    def sizes(job_id: str) -> tuple[object, ...]:
        s = states[job_id]
        return s.cpus, s.mem_mb, s.nodes, s.gpus, s.time_limit_minutes, s.exclusive
    assert sizes("936") == (1, 100, 1, 0, 5, False)  # ended: as it ran
    assert sizes("940") == (2, 300, 1, 0, 5, False)  # running: allocated
    assert sizes("941_4") == (1, 100, 1, 0, 5, False)  # an array's: per task
    assert sizes("943_3") == (1, 100, 1, 1, 5, False)  # --gpus=1 per task


def test_squeue_reads_what_an_admin_or_a_flag_widened() -> None:
    """Captured after `scontrol update JobId=927 NumCPUs=4`, `MinMemoryNode=1024`,
    `TimeLimit=30`, and 931's `TimeLimit=UNLIMITED`; 929 was sent with --exclusive, 928
    with -n2 -c2 --mem=1G --gpus=2 -t 30."""
    states = Squeue(["927", "928", "929", "931"]).parse(out("squeue_sizes.txt"))

    widened = states["927"]
    assert (widened.cpus, widened.mem_mb, widened.time_limit_minutes) == (4, 1024, 30)
    assert (states["928"].cpus, states["928"].gpus, states["928"].mem_mb) == (4, 2, 1024)
    assert states["929"].exclusive is True and states["928"].exclusive is False
    assert states["931"].time_limit_minutes == UNLIMITED_MINUTES


@pytest.mark.parametrize(("value", "minutes"), [
    ("5:00", 5), ("0:30", 1), ("1:05", 2), ("1:30:00", 90), ("2-00:00:00", 2880),
    ("1-02:03:00", 1563), ("UNLIMITED", UNLIMITED_MINUTES), ("NOT_SET", None), ("", None),
    ("INVALID", None)])
def test_squeue_time_limits_in_minutes_rounded_up(value: str, minutes: int | None) -> None:
    assert parse_time_limit(value) == minutes


def test_squeue_without_sizes_reports_none_and_unknown_sharing_as_none() -> None:
    result = Result(b"5|PENDING|N/A|NOT_SET|WEIRD|Priority\n", b"", 0)

    status = Squeue(["5"]).parse(result)["5"]

    assert (status.cpus, status.mem_mb, status.nodes, status.gpus) == (None,) * 4
    assert (status.time_limit_minutes, status.exclusive, status.reason) == (
        None, None, "Priority")


def test_squeue_asks_for_all_jobs_in_one_command() -> None:
    argv = Squeue(["1", "2_3"]).argv()

    assert argv == ["squeue", "--noheader", "--array", "--states=all", "--jobs=1,2_3",
                    "--Format=JobArrayID:|,State:|,tres-alloc:|,TimeLimit:|,OverSubscribe:|,"
                    "Reason:"]


def test_squeue_error_for_a_single_forgotten_job_means_none_is_live() -> None:
    result = Result(b"", fixture("squeue_invalid_job.stderr").encode(), 1)

    assert Squeue(["99999991"]).parse(result) == {}


def test_squeue_without_a_controller_is_unavailable() -> None:
    result = Result(b"", b"slurm_load_jobs error: Unable to contact slurm controller "
                         b"(connect failure)\n", 1)

    with pytest.raises(SchedulerUnavailable, match="Unable to contact slurm controller"):
        Squeue(["1"]).parse(result)


def test_sacct_records_of_captured_jobs() -> None:
    ids = fixture("job_ids.txt").strip().split(",")

    records = Sacct(ids).parse(out("sacct_accounting.txt"))

    # an array is reported by its tasks
    assert set(records) == set(ids) - {"454"} | {f"454_{i}" for i in range(1, 6)}
    ok, failed, big = records["448"], records["449"], records["450"]
    assert (ok.state, ok.exit_code, ok.signal, ok.alloc_cpus, ok.alloc_mem_mb) == (
        JobState.completed, 0, None, 1, 100)
    assert (ok.submit, ok.start, ok.end) == (at(1795635881), at(1795635881), at(1795635881))
    assert (ok.nodes, ok.node_count, ok.account, ok.user) == ("vm", 1, "hpcm_alpha",
                                                              "hpcm_alpha")
    assert ok.consumed_energy_joules is None
    assert (failed.state, failed.exit_code) == (JobState.failed, 3)
    assert (big.alloc_cpus, big.alloc_mem_mb, big.elapsed_seconds) == (2, 300, 2)
    running_cancelled = records["451"]
    assert (running_cancelled.state, running_cancelled.raw_state) == (JobState.cancelled,
                                                                      "CANCELLED by 1001")
    assert running_cancelled.elapsed_seconds == 9
    held = records["452"]
    assert (held.state, held.start, held.end, held.nodes) == (JobState.cancelled, None,
                                                              at(1795635892), "")
    assert (held.alloc_cpus, held.consumed_energy_joules) == (0, None)
    timed_out = records["456"]
    assert (timed_out.state, timed_out.raw_state, timed_out.elapsed_seconds) == (
        JobState.timeout, "TIMEOUT", 84)
    assert records["454_3"].state == JobState.completed
    killed = records["457"]
    assert (killed.state, killed.exit_code, killed.signal) == (JobState.failed, 0, 9)


def test_sacct_asks_for_epoch_times_and_every_user() -> None:
    argv = Sacct(["7"]).argv()

    assert argv[:8] == ["env", "SLURM_TIME_FORMAT=%s", "sacct", "-X", "--parsable2",
                        "--noheader", "--allusers", "--jobs=7"]
    assert argv[8].startswith("--format=JobID,JobIDRaw,State,ExitCode,")


def test_marker_lookups_give_the_id_sbatch_printed_and_slurms_submit_time() -> None:
    squeue = out("squeue_marker.txt")
    submitted = datetime.fromtimestamp(1795648791, UTC)  # 2026-11-25T23:19:51Z
    assert SqueueMarker("hpcm_alpha", "cap-m1").parse(squeue) == FoundJob(
        scheduler_id="16748", submit=submitted)
    assert SqueueMarker("hpcm_alpha", "cap-m2").parse(squeue) == FoundJob(
        scheduler_id="16752", submit=submitted)  # an array: its id, not a task's
    assert SqueueMarker("hpcm_alpha", "cap-none").parse(squeue) is None
    sacct = out("sacct_marker.txt")
    assert SacctMarker("hpcm_alpha", "cap-m1").parse(sacct) == FoundJob(
        scheduler_id="16748", submit=submitted)
    tasks = Result(b"12|1795648000|other\n13_2|1795648791|mk-12345678\n", b"", 0)
    assert SacctMarker("hpcm_alpha", "mk-12345678").parse(tasks) == FoundJob(
        scheduler_id="13", submit=submitted)


def test_marker_lookups_ask_for_epoch_submit_times_before_the_comment() -> None:
    for argv in (SqueueMarker("hpcm_alpha", "cap-m1").argv(),
                 SacctMarker("hpcm_alpha", "cap-m1").argv()):
        assert argv[:2] == ["env", "SLURM_TIME_FORMAT=%s"]
    assert SqueueMarker("hpcm_alpha", "cap-m1").argv()[-1] == "--format=%F|%V|%k"
    assert SacctMarker("hpcm_alpha", "cap-m1").argv()[-1] == "--format=JobID,Submit,Comment"


def test_a_marker_lookup_without_a_submit_time_still_finds_the_job() -> None:
    unknown = Result(b"21|Unknown|mk-12345678\n", b"", 0)
    assert SacctMarker("hpcm_alpha", "mk-12345678").parse(unknown) == FoundJob(
        scheduler_id="21", submit=None)


def test_sbatch_refusal_carries_slurms_message() -> None:
    result = Result(b"", fixture("sbatch_invalid_partition.stderr").encode(), 1)

    with pytest.raises(SchedulerRejected) as refused:
        spec_ = spec(resources=Resources(partition="nosuchpartition", mem_mb=1,
                                         time_limit_minutes=1))
        Sbatch(spec_, ROOT).parse(result)

    assert refused.value.message == ("invalid partition specified: nosuchpartition; "
                                     "Batch job submission failed: Invalid partition name "
                                     "specified")


def test_sbatch_reads_the_job_id_from_parsable_output() -> None:
    assert Sbatch(spec(), ROOT).parse(Result(b"4242\n", b"", 0)).scheduler_id == "4242"
    assert Sbatch(spec(), ROOT).parse(Result(b"4243;hpcgwtest\n", b"", 0)).scheduler_id == (
        "4243")


def test_slurm_timeouts_may_have_run() -> None:
    error = slurm_error(Result(b"", b"sbatch: error: Batch job submission failed: Socket "
                                    b"timed out on send/recv operation\n", 1),
                        command="sbatch")

    assert isinstance(error, SchedulerTimeout) and error.maybe_executed


def test_scancel_of_another_members_job_is_refused_and_of_an_ended_job_is_fine() -> None:
    denied = Result(b"", fixture("scancel_permission_denied.stderr").encode(), 210)
    with pytest.raises(SchedulerRejected, match="Access/permission denied"):
        Scancel("454").parse(denied)

    Scancel("1").parse(Result(b"", b"scancel: error: Kill job error on job id 1: Job/step "
                                   b"already completing or completed\n", 1))
    Scancel("1").parse(Result(b"", b"", 0))


def test_sacctmgr_rows_give_association_limits() -> None:
    unlimited = ShowAssociations("hpcm_alpha").parse(out("sacctmgr_assoc_unlimited.txt"))
    limited = ShowAssociations("x").parse(out("sacctmgr_assoc_limits.txt"))

    assert [limits_from_row(r) for r in unlimited if not r["user"]] == [
        AssociationLimits(account="hpcm_alpha")]
    assert [limits_from_row(r) for r in limited if not r["user"]] == [
        AssociationLimits(account="hpcgwscratch1", grp_billing_minutes=600, max_jobs=5,
                          max_submit_jobs=10),
        AssociationLimits(account="hpcgwscratch2", blocked=True),
    ]


def test_sacctmgr_modifying_nothing_is_an_error_with_its_words() -> None:
    result = Result(fixture("sacctmgr_modify_missing.stdout").encode(), b"", 1)

    with pytest.raises(SchedulerRejected, match="Nothing modified"):
        ModifyAccount(AssociationLimits(account="nosuch")).parse(result)


def test_modify_sets_every_limit_and_clears_with_minus_one() -> None:
    assert ModifyAccount(AssociationLimits(account="a", max_jobs=3)).argv()[-3:] == [
        "GrpTRESMins=billing=-1", "GrpJobs=3", "GrpSubmitJobs=-1"]
    assert ModifyAccount(AssociationLimits(account="a", grp_billing_minutes=60, max_jobs=3,
                                           blocked=True)).argv()[-3:] == [
        "GrpTRESMins=billing=60", "GrpJobs=0", "GrpSubmitJobs=0"]


def test_diff_names_what_slurm_holds_differently() -> None:
    wanted = AssociationLimits(account="a", grp_billing_minutes=600, max_jobs=5)

    assert diff(wanted, wanted) == {}
    assert diff(wanted, None) == {"grp_billing_minutes": (None, 600), "max_jobs": (None, 5),
                                  "max_submit_jobs": (None, None), "blocked": (None, False)}
    assert diff(wanted, AssociationLimits(account="a", grp_billing_minutes=600)) == {
        "max_jobs": (None, 5)}
    blocked = wanted.model_copy(update={"blocked": True})
    assert diff(blocked, AssociationLimits(account="a", grp_billing_minutes=600,
                                           blocked=True)) == {}


@pytest.mark.parametrize(("raw", "state"), [
    ("PENDING", JobState.pending), ("REQUEUED", JobState.pending),
    ("REQUEUE_HOLD", JobState.pending), ("RUNNING", JobState.running),
    ("COMPLETING", JobState.running), ("CONFIGURING", JobState.running),
    ("SUSPENDED", JobState.running), ("COMPLETED", JobState.completed),
    ("FAILED", JobState.failed), ("CANCELLED", JobState.cancelled),
    ("CANCELLED by 0", JobState.cancelled), ("CANCELLED+", JobState.cancelled),
    ("PREEMPTED", JobState.cancelled), ("TIMEOUT", JobState.timeout),
    ("DEADLINE", JobState.timeout), ("OUT_OF_MEMORY", JobState.out_of_memory),
    ("BOOT_FAIL", JobState.node_fail), ("NODE_FAIL", JobState.node_fail),
    ("SOMETHING_NEW", JobState.running),
])
def test_slurm_states_map_onto_ours(raw: str, state: JobState) -> None:
    assert job_state(raw) == state


def test_tres_amounts_in_our_units() -> None:
    tres = parse_tres("billing=2,cpu=2,gres/gpu=1,mem=1.50G,node=1")
    assert (tres["cpu"], tres["mem"], tres["gres/gpu"]) == (2, 1536, 1)
    assert parse_tres("mem=2T")["mem"] == 2 * 1024 * 1024
    assert parse_tres("mem=512K")["mem"] == 0.5
    assert parse_tres("") == {}


def test_exit_codes_split_into_code_and_signal() -> None:
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:9") == (0, 9)
    assert parse_exit_code("") == (None, None)


def test_sbatch_command_line_carries_every_request() -> None:
    s = spec(account="hpcm_alpha", resources=Resources(
        partition="long", nodes=2, ntasks=4, cpus_per_task=3, gpus=2, mem_mb=2048,
        time_limit_minutes=90), stdout="jobs/1/out %j.txt")

    argv = Sbatch(s, ROOT).argv()

    assert argv == ["sbatch", "--parsable", "--job-name=hpcgw-train", "--comment=mk-12345678",
                    "--partition=long", "--nodes=2", "--ntasks=4", "--cpus-per-task=3",
                    "--mem=1024M", "--time=90", f"--chdir={ROOT}/jobs/1",
                    f"--output={ROOT}/jobs/1/out %%j.txt", f"--error={ROOT}/jobs/1/err",
                    "--export=NONE", "--ignore-pbs", "--gpus=2", "--account=hpcm_alpha"]
    assert Sbatch(s, ROOT).dirs() == [f"{ROOT}/jobs/1"]


def test_sbatch_asks_per_node_memory_and_per_job_gpus_so_nodes_multiply_nothing() -> None:
    # mem_mb and gpus are the whole job's; Slurm's --mem and --gres=gpu:N are per node
    s = spec(resources=Resources(partition="long", nodes=3, gpus=3, mem_mb=3000,
                                 time_limit_minutes=5))

    argv = Sbatch(s, ROOT).argv()

    assert "--mem=1000M" in argv and "--gpus=3" in argv
    assert not [a for a in argv if a.startswith("--gres")]
    odd = spec(resources=Resources(partition="long", nodes=2, mem_mb=3001, time_limit_minutes=5))
    assert "--mem=1501M" in Sbatch(odd, ROOT).argv()  # rounded up: never less than asked


def test_sbatch_refuses_what_slurm_would_misread() -> None:
    with pytest.raises(PathRefused):
        Sbatch(spec(stdout="out\\x"), ROOT).argv()
    with pytest.raises(PathRefused):
        Sbatch(spec(workdir="a\nb"), ROOT).argv()
    with pytest.raises(PathRefused):
        Sbatch(spec(stdout=""), ROOT).argv()
    with pytest.raises(SchedulerRejected):
        Sbatch(spec(name="two\nlines"), ROOT).argv()
    with pytest.raises(SchedulerRejected):
        Sbatch(spec(environment={"1BAD": "x"}), ROOT).stdin()
    with pytest.raises(SchedulerRejected, match="need a shell script"):
        Sbatch(spec(script="#!/usr/bin/python3\nprint(1)\n", environment={"A": "1"}),
               ROOT).stdin()


def test_environment_goes_after_the_sbatch_header() -> None:
    script = "#!/usr/bin/env bash\n#SBATCH --hold\n\n# note\necho \"$A\"\n"

    sent = Sbatch(spec(script=script, environment={"A": "x y", "B": "it's"}), ROOT).stdin()

    assert sent.decode() == ("#!/usr/bin/env bash\n#SBATCH --hold\n\n# note\n"
                             "export A='x y'\nexport B='it'\"'\"'s'\necho \"$A\"\n")
    assert Sbatch(spec(script=script), ROOT).stdin() == script.encode()


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, max_size=4))
def test_environment_values_reach_a_real_shell_unchanged(values: list[str]) -> None:
    env = {f"HPCGW_T{i}": v for i, v in enumerate(values)}  # not bash's own (_, UID, ...)
    script = "#!/bin/bash\n#SBATCH --hold\nfor n in " + " ".join(env) + \
        '; do printf "%s\\0" "${!n}"; done\n'

    sent = Sbatch(spec(script=script, environment=env), ROOT).stdin()

    ran = subprocess.run(["bash", "-s"], input=sent, capture_output=True, timeout=10,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    assert ran.stdout.decode().split("\0")[:-1] == list(env.values())


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=5))
def test_command_lines_reach_a_real_shell_as_the_same_arguments(args: list[str]) -> None:
    line = command_line(["printf", "%s\\0", *args])

    ran = subprocess.run(["sh", "-c", line], capture_output=True, timeout=10, check=True)

    assert ran.stdout.decode().split("\0")[:-1] == args
    assert shlex.split(line) == ["printf", "%s\\0", *args]


@settings(max_examples=30, deadline=None)
@given(st.lists(TEXT.filter(lambda t: "/" not in t and t not in ("", ".", "..")
                            and len(t.encode()) <= 255),  # NAME_MAX: longer cannot exist
                min_size=1, max_size=3, unique=True))
def test_missing_directories_are_made_before_the_command(tmp_path_factory: pytest.TempPathFactory,
                                                         names: list[str]) -> None:
    root = tmp_path_factory.mktemp("dirs")
    dirs = [str(root / n / "sub") for n in names]
    for _ in range(2):  # made the first time, found the second
        line = command_line(["printf", "ran"], dirs=[*dirs, str(root)])

        ran = subprocess.run(["sh", "-c", line], capture_output=True, timeout=10, check=True)

        assert ran.stdout == b"ran" and all(Path(d).is_dir() for d in dirs)


def test_paths_are_confined_to_the_work_root() -> None:
    assert confine(ROOT, "") == ROOT
    assert confine(ROOT, "a//b/./c") == f"{ROOT}/a/b/c"
    assert confine(f"{ROOT}/", "x") == f"{ROOT}/x"
    for bad in ("/etc/passwd", "..", "a/../../b", "a/..", "x\x00y"):
        with pytest.raises(PathRefused):
            confine(ROOT, bad)
    with pytest.raises(PathRefused):
        confine("relative/root", "x")
