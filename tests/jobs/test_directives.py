"""The `#SBATCH` header read as sbatch reads it: forms, quoting, where it ends, line numbers, and
every refusal."""

from __future__ import annotations

import pytest

from gateway.jobs.directives import (
    Directive,
    DirectivesRefused,
    directives,
    from_script,
    mebibytes,
    minutes,
    neutralised,
)


def refusals(script: str) -> list[str]:
    with pytest.raises(DirectivesRefused) as caught:
        from_script(script)
    return caught.value.problems


def test_long_and_short_forms_with_equals_or_space_and_grouped_short_options() -> None:
    script = ("#!/bin/bash\n#SBATCH --time=10 --nodes 2\n#SBATCH -n4 -c 2 -p debug\n"
              "#SBATCH -J train --mem=1G\n#SBATCH --partition\n#SBATCH long\necho go\n")

    assert directives(script) == [
        Directive(2, "--time", "10"), Directive(2, "--nodes", "2"), Directive(3, "-n", "4"),
        Directive(3, "-c", "2"), Directive(3, "-p", "debug"), Directive(4, "-J", "train"),
        Directive(4, "--mem", "1G"),
        Directive(5, "--partition", "long")]  # a value may be the next line's word, as getopt
    asked = from_script(script)
    assert asked.resources == {"time_limit_minutes": 10, "nodes": 2, "ntasks": 4,
                               "cpus_per_task": 2, "partition": "long"}
    assert (asked.mem_mb_per_node, asked.name) == (1024, "train")


def test_quotes_escapes_and_trailing_comments_are_read_as_sbatch_reads_them() -> None:
    script = ("#SBATCH -J \"a b\" --output='out file.txt' # --exclusive is a comment here\n"
              "#SBATCH --error=e\\#r\t--time=5#x\n#SBATCH --time=7 '' --exclusive\n")

    found = directives(script)

    assert [(d.option, d.value) for d in found] == [
        ("-J", "a b"), ("--output", "out file.txt"), ("--error", "e#r"), ("--time", "5"),
        ("--time", "7")]  # sbatch stops reading a line at an empty word
    # a backslash keeps a quote or a # but not a blank: sbatch ends the word there
    assert "`b` is not an option" in refusals("#SBATCH -J a\\ b\n")[0]


def test_header_ends_at_the_first_command_and_only_column_zero_sbatch_counts() -> None:
    script = ("#!/bin/bash\n\n# a comment\n   # indented comment\n  #SBATCH --exclusive\n"
              "#sbatch --exclusive\n#SLURM --time=3\n#SBATCH --time=4\n"
              "echo start\n#SBATCH --exclusive\n")

    assert directives(script) == [Directive(7, "--time", "3"), Directive(8, "--time", "4")]
    assert from_script(script).resources == {"time_limit_minutes": 4}  # the last one wins


def test_neutralised_turns_each_directive_line_of_the_header_into_a_comment_only() -> None:
    script = ("#!/bin/bash\r\n#SBATCH --exclusive\n\n#SLURM --qos=high\n  #SBATCH -c 9\n"
              "#PBS -l nodes=4\necho hi\n#SBATCH --exclusive\n")

    sent = neutralised(script)

    assert sent == ("#!/bin/bash\r\n##SBATCH --exclusive\n\n##SLURM --qos=high\n  #SBATCH -c 9\n"
                    "#PBS -l nodes=4\necho hi\n#SBATCH --exclusive\n")
    assert directives(neutralised("#SBATCH --time=5\n")) == []


@pytest.mark.parametrize(("line", "reason"), [
    ("#SBATCH --exclusive", "line 2: #SBATCH --exclusive is not allowed: it widens the job"),
    ("#SBATCH --qos=high", "line 2: #SBATCH --qos is not allowed: the gateway sets it"),
    ("#SBATCH --comment=hpcgw:x:y", "the job's marker"),
    ("#SBATCH --account=other", "the member's account"),
    ("#SBATCH --dependency=afterok:1", "each job on its own"),
    ("#SBATCH --begin=now+1hour", "from its submission"),
    ("#SBATCH -H", "#SBATCH -H is not allowed"),
    ("#SBATCH --mail-type=ALL", "no mail"),
    ("#SBATCH --gpus-per-node=2", "widens"),
    ("#SBATCH --ntasks-per-node=4", "widens"),
    ("#SBATCH --mem-per-gpu=1G", "widens"),
    ("#SBATCH --reservation=r", "the gateway sets it"),
    ("#SBATCH --nice=-100", "priority"),
    ("#SBATCH --requeue", "runs again"),
    ("#SBATCH --export=ALL", "environment"),
    ("#SBATCH --chdir=/tmp", "workdir"),
    ("#SBATCH --cpus=4", "write the option's full name"),
    ("#SBATCH -Oc4", "#SBATCH -O is not allowed"),
    ("#SBATCH hetjob", "heterogeneous job"),
    ("#SBATCH --time=5\n#SBATCH packjob", "line 3: `packjob`"),
    ("#SBATCH --time=5 : -N 2", "`:`"),
    ("#SBATCH -J 'open", "line 2: unmatched '"),
    ("#SBATCH stray", "`stray` is not an option"),
    ("#SBATCH --time", "line 2: --time needs a value"),
    ("#SBATCH --mem=0", "0 means all the memory"),
    ("#SBATCH --mem=1.5G", "whole number"),
    ("#SBATCH --mem=1G --mem-per-cpu=100", "exclude each other"),
    ("#SBATCH --gres=gpu:a100:2", "counted, not typed"),
    ("#SBATCH --gres=gpu:1,nic:1", "counted, not typed"),
    ("#SBATCH --gpus=a100:1", "counted, not typed"),
    ("#SBATCH -G 1 --gres=gpu:1", "exclude each other"),
    ("#SBATCH --nodes=1-4", "no range"),
    ("#SBATCH --partition=a,b", "one partition"),
    ("#SBATCH --time=0", "0 means no limit"),
    ("#SBATCH --time=UNLIMITED", "use minutes"),
    ("#PBS -l nodes=4", "line 2: #PBS directives are not taken"),
    ("#BSUB -n 4", "line 2: #BSUB directives"),
])
def test_every_directive_outside_the_allow_list_is_refused_with_its_line(
        line: str, reason: str) -> None:
    problems = refusals(f"#!/bin/bash\n{line}\necho hi\n")

    assert any(reason in p for p in problems), problems


def test_every_refused_line_is_reported_not_only_the_first() -> None:
    problems = refusals("#SBATCH --exclusive\n#SBATCH --time=5\n#SBATCH --qos=x -c 2\n")

    assert [p.split(":")[0] for p in problems] == ["line 1", "line 3"]


def test_pbs_lines_after_the_header_are_not_refused_the_gateway_sends_ignore_pbs() -> None:
    assert directives("#!/bin/sh\necho hi\n#PBS -l nodes=4\n") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("10", 10), ("90:00", 90), ("1:30", 2), ("01:00:00", 60), ("1:00:01", 61), ("2-0", 2880),
    ("1-02", 1560), ("1-02:03", 1563), ("0-00:00:30", 1)])
def test_times_as_sbatch_writes_them_are_minutes_rounded_up(text: str, expected: int) -> None:
    assert minutes(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("512", 512), ("512M", 512), ("2G", 2048), ("2g", 2048), ("1T", 1024 ** 2), ("1500K", 2)])
def test_sizes_are_mebibytes_rounded_up(text: str, expected: int) -> None:
    assert mebibytes(text) == expected


def test_per_node_and_per_cpu_values_wait_for_the_merge() -> None:
    asked = from_script("#SBATCH --mem-per-cpu=256 --gres=gpu:2 -a 0-3 -o out.txt -e err.txt\n")

    assert (asked.mem_mb_per_cpu, asked.gpus_per_node, asked.mem_mb_per_node) == (256, 2, None)
    assert asked.resources == {"array": "0-3"}
    assert (asked.stdout, asked.stderr) == ("out.txt", "err.txt")
    assert from_script("#SBATCH --gres=gpu\n").gpus_per_node == 1


@pytest.mark.parametrize("number", ["٣", "²", "1٣", "\uff13", "9" * 5000])
@pytest.mark.parametrize(("option", "reason"), [
    ("-c {}", "give one whole number"), ("-N {}", "give one whole number"),
    ("--time={}", "use minutes"), ("--time=1-{}", "use minutes"), ("--time={}:00", "use minutes"),
    ("--mem={}G", "use a whole number"), ("--mem-per-cpu={}", "use a whole number"),
    ("--gpus={}", "only a count"), ("--gres=gpu:{}", "only `gpu` or `gpu:N`"),
])
def test_only_ascii_digits_are_numbers_and_the_reason_is_the_gateways(
        number: str, option: str, reason: str) -> None:
    [problem] = refusals(f"#SBATCH {option.format(number)}\n")

    assert problem.startswith("line 1: #SBATCH ") and reason in problem, problem
