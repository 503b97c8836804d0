"""Templates: typed parameters checked before rendering, values quoted into the script by a
sandboxed render, versions recorded by jobs, admins alone change them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.jobs import templates
from gateway.jobs.errors import JobInputInvalid
from gateway.jobs.schemas import ParameterSpec, ParamType, TemplateDefinition

Headers = Callable[[User], dict[str, str]]
ECHO = TemplateDefinition(
    title="echo", body="#!/bin/bash\necho {{ message }}\n",
    parameters=[ParameterSpec(name="message", type=ParamType.str)])
TARGET = templates.RenderTarget(public_id="0123456789ab", name="t",
                                resources=templates.SAMPLE_RESOURCES)


def run_bash(script: str, cwd: Path) -> str:
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout


@pytest.mark.parametrize("value", [
    "$(touch pwned)", "`touch pwned`", "x; touch pwned", "it's'; touch pwned; '",
    "$HOME && touch pwned", "a|touch pwned",
])
def test_a_parameter_value_is_one_quoted_word_and_never_runs(tmp_path: Path, value: str) -> None:
    values = templates.check_parameters(ECHO.parameters, {"message": value})
    script = templates.render(ECHO.body, {}, values, TARGET)
    assert run_bash(script, tmp_path) == value + "\n"
    assert not (tmp_path / "pwned").exists()


def test_the_dollar_paren_value_ends_up_single_quoted_in_the_script() -> None:
    script = templates.render(ECHO.body, {}, {"message": "$(touch /tmp/x)"}, TARGET)
    assert "echo '$(touch /tmp/x)'" in script


@pytest.mark.parametrize(("given", "loc", "message"), [
    ({}, "message", "required"),
    ({"message": 3}, "message", "string"),
    ({"message": "two\nlines"}, "message", "control characters"),
    ({"message": "x", "extra": 1}, "extra", "unknown parameter"),
])
def test_parameters_are_checked_before_rendering(given: dict[str, Any], loc: str,
                                                 message: str) -> None:
    with pytest.raises(JobInputInvalid) as refused:
        templates.check_parameters(ECHO.parameters, given)
    (error,) = refused.value.extra["errors"]
    assert error["loc"] == ["body", "parameters", loc] and message in error["msg"]


def test_numbers_and_enums_have_their_bounds() -> None:
    specs = [ParameterSpec(name="epochs", type=ParamType.int, minimum=1, maximum=10),
             ParameterSpec(name="lr", type=ParamType.float, default=0.1, maximum=1),
             ParameterSpec(name="mode", type=ParamType.enum, choices=["a", "b"], default="a"),
             ParameterSpec(name="fast", type=ParamType.bool, default=False)]
    assert templates.check_parameters(specs, {"epochs": 3}) == {
        "epochs": 3, "lr": 0.1, "mode": "a", "fast": False}
    for bad in ({"epochs": 11}, {"epochs": 2.5}, {"epochs": True}, {"epochs": 1, "lr": 2},
                {"epochs": 1, "mode": "c"}, {"epochs": 1, "fast": "yes"}):
        with pytest.raises(JobInputInvalid):
            templates.check_parameters(specs, bad)


def test_the_sandbox_refuses_reaching_python_internals() -> None:
    evil = TemplateDefinition(title="evil", body="{{ ''.__class__.__mro__ }}")
    with pytest.raises(JobInputInvalid) as refused:
        templates.validate_definition(evil)
    assert refused.value.extra["errors"][0]["loc"] == ["body", "body"]


def test_template_files_are_written_after_the_sbatch_lines(tmp_path: Path) -> None:
    script = templates.render(
        "#!/bin/bash\n#SBATCH --exclusive\n\ncat {{ template_dir }}/data.txt\n",
        {"data.txt": "EOF\n$(not expanded) {{ not rendered }}\n"}, {}, TARGET)
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/bash", "#SBATCH --exclusive"]
    assert lines[3].startswith("mkdir -p .hpcgw/jobs/0123456789ab")
    assert run_bash(script, tmp_path) == "EOF\n$(not expanded) {{ not rendered }}\n"


@pytest.mark.parametrize("definition", templates.seed_definitions(), ids=lambda d: d.slug)
def test_every_seeded_template_renders_to_valid_bash(definition: TemplateDefinition) -> None:
    values = {p.name: templates._sample(p) for p in definition.parameters}
    script = templates.render(definition.body, definition.files, values, TARGET)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)


def test_the_torchrun_template_lays_gpus_out_on_the_nodes(tmp_path: Path) -> None:
    (ddp,) = [d for d in templates.seed_definitions() if d.slug == "pytorch-ddp"]
    resources = {**templates.SAMPLE_RESOURCES, "nodes": 2, "gpus": 8}
    script = templates.render(ddp.body, {}, {"script": "train.py", "epochs": 3,
                                             "script_args": "", "master_port": 29500,
                                             "python": "python3"},
                              templates.RenderTarget(public_id="0123456789ab", name="ddp",
                                                     resources=resources))
    assert "nodes=2\ngpus=8\n" in script
    assert '--nproc_per_node="$gpus_per_node"' in script and "train.py --epochs 3" in script


# --- the API -----------------------------------------------------------------------------

def test_everyone_signed_in_lists_the_seeded_templates(client: TestClient, world: World,
                                                       as_: Headers) -> None:
    listed = client.get("/api/v1/templates", headers=as_(world.viewer))
    assert listed.status_code == 200
    assert {t["slug"] for t in listed.json()} >= {"pytorch-ddp", "batch-inference",
                                                  "generic-script", "pytorch-cpu"}
    assert client.get("/api/v1/templates").status_code == 401


def new_template(**changes: Any) -> dict[str, Any]:
    return {"slug": "hello", "title": "Hello", "body": "#!/bin/bash\necho {{ who }}\n",
            "parameters": [{"name": "who", "type": "str", "default": "world"}], **changes}


def test_only_admins_create_and_change_templates_and_each_change_is_a_version(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    assert client.post("/api/v1/templates", json=new_template(),
                       headers=as_(world.manager)).status_code == 403
    created = client.post("/api/v1/templates", json=new_template(), headers=as_(world.admin))
    assert created.status_code == 201 and created.json()["version"] == 1
    update = {k: v for k, v in new_template(body="#!/bin/bash\necho hi {{ who }}\n").items()
              if k != "slug"}
    assert client.put("/api/v1/templates/hello", headers=as_(world.researcher),
                      json=update).status_code == 403
    changed = client.put("/api/v1/templates/hello", headers=as_(world.admin), json=update)
    assert changed.status_code == 200 and changed.json()["version"] == 2
    job = submit(client, as_(world.researcher), world.project, script=None, template="hello",
                 parameters={"who": "acme"})
    assert job.status_code == 201, job.text
    assert job.json()["template"] == {"slug": "hello", "version": 2}
    assert fake.only().spec.script == "#!/bin/bash\necho hi acme\n"
    first = client.get("/api/v1/templates/hello?version=1", headers=as_(world.researcher))
    assert first.json()["body"] == "#!/bin/bash\necho {{ who }}\n"
    assert client.post("/api/v1/templates", json=new_template(),
                       headers=as_(world.admin)).status_code == 409


def test_a_template_that_names_an_unknown_variable_is_refused(
        client: TestClient, world: World, as_: Headers) -> None:
    answer = client.post("/api/v1/templates", headers=as_(world.admin),
                         json=new_template(body="echo {{ whom }}"))
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "body"]


def test_a_templates_only_member_submits_a_template(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    world.acme.templates_only = True
    session.flush()
    answer = submit(client, as_(world.researcher), world.project, script=None,
                    template="generic-script", parameters={"script": "run.sh"})
    assert answer.status_code == 201, answer.text
    assert "exec bash run.sh" in fake.only().spec.script


def test_template_parameter_errors_have_field_paths(client: TestClient, world: World,
                                                    as_: Headers, fake: FakeScheduler) -> None:
    answer = submit(client, as_(world.researcher), world.project, script=None,
                    template="pytorch-cpu", parameters={"epochs": 0, "python": "py; rm"})
    assert answer.status_code == 422
    assert {tuple(e["loc"]) for e in answer.json()["errors"]} == {
        ("body", "parameters", "epochs"), ("body", "parameters", "python")}
    assert fake.calls["submit"] == 0
    unknown = submit(client, as_(world.researcher), world.project, script=None,
                     template="no-such")
    assert unknown.status_code == 404


def _create(client: TestClient, headers: dict[str, str], slug: str, body: str,
            parameters: list[dict[str, Any]] | None = None) -> None:
    created = client.post("/api/v1/templates", headers=headers,
                          json={"slug": slug, "title": slug, "body": body,
                                "parameters": parameters or []})
    assert created.status_code == 201, created.text


def test_a_render_that_fails_is_a_422_with_the_templates_message_not_a_missing_resource(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    # renders with the sample values it is saved with, fails with others
    _create(client, as_(world.admin), "lookup",
            "#!/bin/bash\n#SBATCH -p cpu -t 10 --mem=1G\necho {{ {'a': 1}[mode] }}\n",
            [{"name": "mode", "type": "enum", "choices": ["a", "b"], "default": "a"}])
    _create(client, as_(world.admin), "shards",
            "#!/bin/bash\n#SBATCH -c 2\necho {{ 100 // (resources.cpus_per_task - shards) }}\n",
            [{"name": "shards", "type": "int", "default": 0, "minimum": 0}])

    # resources left to the template's #SBATCH lines: not "give resources.partition ..."
    undefined = submit(client, as_(world.researcher), world.project, script=None,
                       resources=None, template="lookup", parameters={"mode": "b"})
    # the first render fails (1 // (1 - 1)), then the second once -c 2 is read (2 - 2)
    for shards, where in ((1, "first"), (2, "second")):
        divided = submit(client, as_(world.researcher), world.project, script=None,
                         template="shards", parameters={"shards": shards})
        assert divided.status_code == 422, (where, divided.text)
        [error] = divided.json()["errors"]
        assert error["loc"] == ["body", "template"], where
        assert error["msg"] == ("the template does not render (line 3): ZeroDivisionError: "
                                "integer division or modulo by zero"), where

    assert undefined.status_code == 422, undefined.text
    [error] = undefined.json()["errors"]
    assert error["loc"] == ["body", "template"]
    assert error["msg"] == ("the template does not render (line 3): "
                            "'dict object' has no attribute 'b'")
    assert fake.calls["submit"] == 0
    assert submit(client, as_(world.researcher), world.project, script=None, resources=None,
                  template="lookup").status_code == 201


def test_a_template_printing_a_resource_left_to_the_script_asks_for_it_in_the_request(
        client: TestClient, world: World, as_: Headers) -> None:
    _create(client, as_(world.admin), "printer",
            "#!/bin/bash\n#SBATCH -p cpu -t 10\necho mem={{ resources.mem_mb }}\n")
    answer = submit(client, as_(world.researcher), world.project, script=None,
                    resources={"partition": "cpu", "time_limit_minutes": 10}, template="printer")
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["loc"] == ["body", "resources", "mem_mb"]


def test_a_template_whose_sbatch_lines_are_refused_is_not_saved(
        client: TestClient, world: World, as_: Headers) -> None:
    answer = client.post("/api/v1/templates", headers=as_(world.admin),
                         json=new_template(body="#!/bin/bash\n#SBATCH -c 2\n#SBATCH --exclusive"
                                                "\necho {{ who }}\n"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["loc"] == ["body", "body"]
    assert error["msg"].startswith("line 3: #SBATCH --exclusive is not allowed")
    assert client.get("/api/v1/templates/hello", headers=as_(world.admin)).status_code == 404


def test_a_template_that_fails_on_its_sample_values_is_a_422_not_a_500(
        client: TestClient, world: World, as_: Headers) -> None:
    answer = client.post("/api/v1/templates", headers=as_(world.admin),
                         json=new_template(body="#!/bin/bash\necho {{ 1 // 0 }}\n"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["msg"] == (
        "the template does not render (line 2): ZeroDivisionError: integer division or modulo "
        "by zero")
