"""POST /api/v1/jobs with `#SBATCH` lines: the script's directives drive the quote, the hold and
what the scheduler is sent; the request's fields win; a refused line is a 422 naming it and
nothing is held or submitted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.jobs.models import Job, JobTemplate, JobTemplateVersion
from quotas.models import Hold

Headers = Callable[[User], dict[str, str]]


def held(session: Session, public_id: str) -> int:
    session.expire_all()
    return session.scalars(select(Hold.amount_msu).where(Hold.job_id == public_id)).one()


def nothing_happened(session: Session, fake: FakeScheduler) -> bool:
    jobs = session.scalar(select(func.count()).select_from(Job))
    holds = session.scalar(select(func.count()).select_from(Hold))
    return fake.calls["submit"] == 0 and jobs == 0 and holds == 0


def script_job(client: TestClient, headers: dict[str, str], world: World, script: str,
               **changes: Any) -> Any:
    return submit(client, headers, world.project, **{"script": script, "resources": None,
                                                     "name": None, **changes})


def test_the_issues_script_is_refused_at_its_exclusive_line_and_nothing_is_held(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    script = ("#!/bin/bash\n#SBATCH --array=0-5\n#SBATCH --exclusive\n"
              "#SBATCH --cpus-per-task=4\nsleep 60\n")

    answer = script_job(client, as_(world.researcher), world, script, resources={
        "partition": "cpu", "cpus_per_task": 1, "mem_mb": 1024, "time_limit_minutes": 1})

    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [e["loc"] for e in errors] == [["body", "script"]]
    assert errors[0]["msg"].startswith("line 3: #SBATCH --exclusive is not allowed: it widens")
    assert nothing_happened(session, fake)


def test_directives_alone_drive_the_quote_the_hold_and_the_command_line(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    script = ("#!/bin/bash\n#SBATCH -p cpu -c 4 # four CPUs\n#SBATCH --mem=2G --time=0:30:00\n"
              "#SBATCH -J from-script -o logs/out.txt\necho hi\n")

    answer = script_job(client, as_(world.researcher), world, script, workdir="runs")

    assert answer.status_code == 201, answer.text
    job = answer.json()
    # 4 CPUs x 0.25 SU/h beat 2 GiB x 0.0625 SU/h: 1 SU/h for half an hour
    assert job["quote_msu"] == 500 and held(session, job["id"]) == 500
    assert job["name"] == "from-script" and job["stdout_path"] == "runs/logs/out.txt"
    assert job["resources"] == {"partition": "cpu", "nodes": 1, "ntasks": 1, "cpus_per_task": 4,
                                "gpus": 0, "mem_mb": 2048, "time_limit_minutes": 30,
                                "array": None}
    spec = fake.only().spec
    assert (spec.resources.cpus_per_task, spec.resources.mem_mb,
            spec.resources.time_limit_minutes) == (4, 2048, 30)
    # the script goes with its directive lines made comments; the job keeps it as written
    assert spec.script == script.replace("\n#SBATCH", "\n##SBATCH")
    detail = client.get(f"/api/v1/jobs/{job['id']}", headers=as_(world.researcher)).json()
    assert detail["script"] == script


def test_the_requests_fields_win_over_the_scripts_lines(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    script = "#!/bin/bash\n#SBATCH -p gpu -c 8 --time=120 -J script-name\necho hi\n"

    answer = script_job(client, as_(world.researcher), world, script, name="mine", resources={
        "partition": "cpu", "cpus_per_task": 1, "mem_mb": 1024, "time_limit_minutes": 60})

    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["quote_msu"] == 250 and held(session, job["id"]) == 250
    assert job["name"] == "mine"
    r = fake.only().spec.resources
    assert (r.partition, r.cpus_per_task, r.time_limit_minutes) == ("cpu", 1, 60)


def test_per_node_and_per_cpu_directives_are_priced_for_the_whole_job(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    # Slurm: --gres and --mem per node, --mem-per-cpu per CPU; 2 nodes, 2 tasks of 2 CPUs
    script = ("#!/bin/bash\n#SBATCH -p gpu -N 2 -n 2 -c 2 --gres=gpu:1 --mem-per-cpu=1G\n"
              "#SBATCH -t 60\nsrun hostname\n")

    answer = script_job(client, as_(world.researcher), world, script)

    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert (job["resources"]["gpus"], job["resources"]["mem_mb"]) == (2, 4096)
    assert job["quote_msu"] == 2000 and held(session, job["id"]) == 2000  # 2 GPUs, one hour


def test_memory_for_several_nodes_is_rounded_up_to_a_multiple_of_the_nodes(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    answer = submit(client, as_(world.researcher), world.project, resources={
        "partition": "cpu", "nodes": 2, "ntasks": 2, "mem_mb": 1001, "time_limit_minutes": 10})

    assert answer.status_code == 201, answer.text
    assert answer.json()["resources"]["mem_mb"] == 1002 == fake.only().spec.resources.mem_mb


def test_what_neither_the_request_nor_the_script_gives_is_named(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    answer = script_job(client, as_(world.researcher), world, "#!/bin/bash\n#SBATCH -c 2\nid\n")

    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["errors"]] == [
        ["body", "resources", "partition"], ["body", "resources", "mem_mb"],
        ["body", "resources", "time_limit_minutes"]]
    assert nothing_happened(session, fake)


def test_a_directive_out_of_bounds_is_reported_at_its_line(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    script = "#!/bin/bash\n#SBATCH -p cpu -t 10 --mem=1G\n\n#SBATCH --cpus-per-task=0\nid\n"

    answer = script_job(client, as_(world.researcher), world, script)

    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["loc"] == ["body", "script"] and error["msg"].startswith(
        "line 4: cpus_per_task: Input should be greater than or equal to 1")
    assert nothing_happened(session, fake)


def test_output_outside_the_workdir_and_output_with_an_array_are_refused(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    base = "#!/bin/bash\n#SBATCH -p cpu -t 10 --mem=1G\n"
    escaping = script_job(client, as_(world.researcher), world, base + "#SBATCH -o ../x\nid\n")
    patterned = script_job(client, as_(world.researcher), world, base + "#SBATCH -e e%j\nid\n")
    array = script_job(client, as_(world.researcher), world,
                       base + "#SBATCH -a 0-3\n#SBATCH -o out.txt\nid\n")

    for answer, line in ((escaping, 3), (patterned, 3), (array, 4)):
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["msg"].startswith(f"line {line}: --")
    assert nothing_happened(session, fake)


def test_a_templates_directives_are_read_and_refused_like_a_scripts(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    created = client.post("/api/v1/templates", headers=as_(world.admin), json={
        "slug": "sized", "title": "sized",
        "body": "#!/bin/bash\n#SBATCH --time=20 -c 2\necho cpus={{ resources.cpus_per_task }}\n"})
    assert created.status_code == 201, created.text
    # saved before templates' directives were checked on saving (that refuses it now)
    greedy = JobTemplate(slug="greedy")
    session.add(greedy)
    session.flush()
    session.add(JobTemplateVersion(template_id=greedy.id, version=1, title="greedy",
                                   body="#!/bin/bash\n#SBATCH --exclusive\necho hi\n",
                                   parameters=[]))
    session.flush()

    refused = submit(client, as_(world.researcher), world.project, script=None, name=None,
                     template="greedy")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "template"]
    assert nothing_happened(session, fake)

    taken = submit(client, as_(world.researcher), world.project, script=None, name=None,
                   template="sized", resources={"partition": "cpu", "mem_mb": 1024})
    assert taken.status_code == 201, taken.text
    assert taken.json()["name"] == "sized" and taken.json()["quote_msu"] == 167  # 0.5 SU/h, 20 min
    spec = fake.only().spec
    assert (spec.resources.cpus_per_task, spec.resources.time_limit_minutes) == (2, 20)
    assert "echo cpus=2\n" in spec.script and "##SBATCH --time=20" in spec.script
