"""Job templates: typed parameters checked first, then a sandboxed render that shell-quotes every
value it prints, so a parameter is always one word of data in the script, never code.

Templates are admin-managed and versioned: a change adds a version, jobs record the one they
used. The seeded ones (`seed_templates`) are created once; admins own them afterwards.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortium.audit import RequestContext, record
from consortium.authz import Principal, require_admin
from consortium.errors import Conflict, NotFound
from consortium.texts import Sentence
from gateway.jobs import directives
from gateway.jobs.errors import JobInputInvalid
from gateway.jobs.models import JobTemplate, JobTemplateVersion
from gateway.jobs.schemas import (
    ParameterSpec,
    ParamType,
    Scalar,
    TemplateCreate,
    TemplateDefinition,
    TemplateOut,
    TemplateUpdate,
)


def shell_quote(value: object) -> str:
    """Every value a template prints: one shell word, whatever it holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(str(value))


_ENV = ImmutableSandboxedEnvironment(
    autoescape=False, undefined=StrictUndefined, finalize=shell_quote,
    keep_trailing_newline=True,
)


def template_dir(public_id: str) -> str:
    """Where a job's template files are written, relative to its working directory."""
    return f".hpcgw/jobs/{public_id}"


def check_parameters(specs: list[ParameterSpec], given: Mapping[str, object]) -> dict[str, Scalar]:
    """The values to render with (defaults filled in), or JobInputInvalid naming each problem."""
    errors: list[dict[str, Any]] = []
    known = {spec.name: spec for spec in specs}
    for name in given:
        if name not in known:
            errors.append({"loc": ["body", "parameters", name], "type": "extra_forbidden",
                           "msg": Sentence("unknown parameter; this template takes: %(names)s",
                                           names=", ".join(known) or Sentence("none"))})
    values: dict[str, Scalar] = {}
    for spec in specs:
        if spec.name not in given:
            if spec.required:
                errors.append({"loc": ["body", "parameters", spec.name], "type": "missing",
                               "msg": Sentence("required parameter")})
            elif spec.default is not None:
                values[spec.name] = spec.default
            continue
        value = given[spec.name]
        problem = spec.check(value)
        if problem:
            errors.append({"loc": ["body", "parameters", spec.name], "type": "value_error",
                           "msg": problem})
        else:
            values[spec.name] = value  # type: ignore[assignment]  # checked by spec.check
    if errors:
        raise JobInputInvalid(errors)
    return values


@dataclass(frozen=True)
class RenderTarget:
    """What a template knows of the job it renders for."""

    public_id: str
    name: str
    resources: Mapping[str, Any]


def render(body: str, files: Mapping[str, str], values: Mapping[str, Scalar],
           target: RenderTarget) -> str:
    """The job script. Files are written by the script itself (quoted here-documents, never
    expanded) into the job's template directory, after the script's leading comment block so
    that `#SBATCH` lines keep working."""
    directory = template_dir(target.public_id)
    script = _ENV.from_string(body).render(
        **values, resources=dict(target.resources),
        job={"name": target.name, "id": target.public_id}, template_dir=directory)
    if not files:
        return script
    lines = script.splitlines(keepends=True)
    head = 0
    while head < len(lines) and (not lines[head].strip() or lines[head].lstrip().startswith("#")):
        head += 1
    prelude = [f"mkdir -p {shlex.quote(directory)}\n"]
    for name, content in files.items():
        delimiter = _delimiter(content)
        body_text = content if content.endswith("\n") else content + "\n"
        prelude.append(f"cat > {shlex.quote(f'{directory}/{name}')} <<'{delimiter}'\n"
                       f"{body_text}{delimiter}\n")
    return "".join(lines[:head] + prelude + lines[head:])


def _delimiter(content: str) -> str:
    while True:
        candidate = f"HPCGW_EOF_{secrets.token_hex(6)}"
        if candidate not in content:
            return candidate


def _sample(spec: ParameterSpec) -> Scalar:
    """A value of the right type, for the render done when a template is saved."""
    if spec.default is not None:
        return spec.default
    match spec.type:
        case ParamType.bool:
            return True
        case ParamType.int:
            return int(spec.minimum) if spec.minimum is not None else 1
        case ParamType.float:
            return spec.minimum if spec.minimum is not None else 1.0
        case ParamType.enum:
            return (spec.choices or [""])[0]
        case _:
            return "sample"


SAMPLE_RESOURCES = {"partition": "sample", "nodes": 1, "ntasks": 1, "cpus_per_task": 1,
                    "gpus": 1, "mem_mb": 1024, "time_limit_minutes": 10}


def render_refused(exc: Exception, field: str) -> JobInputInvalid:
    """A render that failed, as a 422 at ("body", `field`) naming the template's line. A
    template is a program: whatever it raises (a jinja error, a division by zero) is its
    author's error, not the gateway's."""
    line = getattr(exc, "lineno", None)  # a syntax error's
    frame = exc.__traceback__
    while frame is not None:  # a runtime error's: jinja puts the template's lines in the stack
        if frame.tb_frame.f_code.co_filename == "<template>":
            line = frame.tb_lineno
        frame = frame.tb_next
    at = f" (line {line})" if line else ""
    text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
    return JobInputInvalid.at((field,), f"the template does not render{at}: {text}",
                              "template_error")


def validate_definition(definition: TemplateDefinition) -> None:
    """Refuse a body that does not render (it does not compile, names something that is
    neither a parameter nor one of `resources`, `job` and `template_dir`, or fails), or whose
    `#SBATCH` lines would refuse every job."""
    values = {spec.name: _sample(spec) for spec in definition.parameters}
    target = RenderTarget(public_id="sample", name="sample", resources=SAMPLE_RESOURCES)
    try:
        script = render(definition.body, definition.files, values, target)
    except Exception as exc:
        raise render_refused(exc, "body") from exc
    try:
        directives.from_script(script)
    except directives.DirectivesRefused as exc:
        raise JobInputInvalid([{"loc": ["body", "body"], "msg": problem, "type": "value_error"}
                               for problem in exc.problems]) from exc


# --- the catalogue ---------------------------------------------------------------------------

def parameter_specs(version: JobTemplateVersion) -> list[ParameterSpec]:
    return [ParameterSpec.model_validate(p) for p in version.parameters]


def to_out(template: JobTemplate, version: JobTemplateVersion) -> TemplateOut:
    return TemplateOut(
        slug=template.slug, version=version.version, latest_version=template.latest_version,
        enabled=template.enabled, title=version.title, description=version.description,
        body=version.body, parameters=parameter_specs(version),
        files=version.files, created_at=version.created_at,
    )


def list_templates(session: Session, *, include_disabled: bool = False
                   ) -> list[tuple[JobTemplate, JobTemplateVersion]]:
    stmt = (select(JobTemplate, JobTemplateVersion)
            .join(JobTemplateVersion, (JobTemplateVersion.template_id == JobTemplate.id)
                  & (JobTemplateVersion.version == JobTemplate.latest_version))
            .order_by(JobTemplate.slug))
    if not include_disabled:
        stmt = stmt.where(JobTemplate.enabled.is_(True))
    return [(t, v) for t, v in session.execute(stmt)]


def get_version(session: Session, slug: str, version: int | None = None
                ) -> tuple[JobTemplate, JobTemplateVersion]:
    template = session.scalars(select(JobTemplate).where(JobTemplate.slug == slug)).first()
    if template is None:
        raise NotFound(f"no template '{slug}'")
    number = version or template.latest_version
    found = session.scalars(select(JobTemplateVersion).where(
        JobTemplateVersion.template_id == template.id,
        JobTemplateVersion.version == number)).first()
    if found is None:
        raise NotFound(f"template '{slug}' has no version {number}")
    return template, found


def _add_version(session: Session, template: JobTemplate, number: int,
                 definition: TemplateDefinition, user_id: int | None) -> JobTemplateVersion:
    version = JobTemplateVersion(
        template_id=template.id, version=number, title=definition.title,
        description=definition.description, body=definition.body,
        parameters=[p.model_dump(mode="json", exclude_none=True)
                    for p in definition.parameters],
        files=dict(definition.files), created_by_id=user_id,
    )
    session.add(version)
    session.flush()
    return version


def create_template(session: Session, principal: Principal, data: TemplateCreate,
                    context: RequestContext) -> tuple[JobTemplate, JobTemplateVersion]:
    require_admin(principal)
    validate_definition(data)
    if session.scalars(select(JobTemplate.id).where(JobTemplate.slug == data.slug)).first():
        raise Conflict(f"a template '{data.slug}' exists already; PUT a new version of it")
    template = JobTemplate(slug=data.slug, latest_version=1)
    session.add(template)
    session.flush()
    version = _add_version(session, template, 1, data, principal.user_id)
    record(session, actor=principal, action="template.create", target_type="template",
           target_id=data.slug, context=context, details={"version": 1})
    return template, version


def update_template(session: Session, principal: Principal, slug: str, data: TemplateUpdate,
                    context: RequestContext) -> tuple[JobTemplate, JobTemplateVersion]:
    """A new version (jobs keep pointing at the one they used)."""
    require_admin(principal)
    validate_definition(data)
    template = session.scalars(
        select(JobTemplate).where(JobTemplate.slug == slug).with_for_update()).first()
    if template is None:
        raise NotFound(f"no template '{slug}'")
    template.latest_version += 1
    template.enabled = data.enabled
    version = _add_version(session, template, template.latest_version, data, principal.user_id)
    record(session, actor=principal, action="template.update", target_type="template",
           target_id=slug, context=context,
           details={"version": template.latest_version, "enabled": data.enabled})
    return template, version


# --- seeds -------------------------------------------------------------------------------

def _file(name: str) -> str:
    return resources.files("gateway.jobs").joinpath("template_files", name).read_text("utf-8")


_PATH = r"[A-Za-z0-9._/-]+"
_PYTHON = ParameterSpec(name="python", type=ParamType.str, default="python3",
                        pattern=r"[A-Za-z0-9._/+-]+",
                        description="the interpreter that runs the training (it needs torch)")


def seed_definitions() -> list[TemplateCreate]:
    return [
        TemplateCreate(
            slug="pytorch-ddp",
            title="PyTorch training with torchrun (one or several GPUs, one or several nodes)",
            description=("Runs your training script under torchrun with one process per GPU. "
                         "Ask for the GPUs in `resources.gpus` and the nodes in "
                         "`resources.nodes`; the script receives `--epochs N` and any extra "
                         "arguments."),
            body=_file("pytorch-ddp.sh.j2"),
            parameters=[
                ParameterSpec(name="script", type=ParamType.str, pattern=_PATH,
                              description="training script, relative to the working directory"),
                ParameterSpec(name="epochs", type=ParamType.int, default=10, minimum=1,
                              maximum=100_000),
                ParameterSpec(name="script_args", type=ParamType.str, default="",
                              pattern=r"[A-Za-z0-9._/=:,+-]*", max_length=500,
                              description="one extra argument passed to the script"),
                ParameterSpec(name="master_port", type=ParamType.int, default=29500,
                              minimum=1024, maximum=65535),
                _PYTHON,
            ],
        ),
        TemplateCreate(
            slug="batch-inference",
            title="Batch inference over a dataset",
            description=("Runs your inference script with `--input`, `--output`, "
                         "`--batch-size` and `--device` (cuda when GPUs were asked for)."),
            body=_file("batch-inference.sh.j2"),
            parameters=[
                ParameterSpec(name="script", type=ParamType.str, pattern=_PATH),
                ParameterSpec(name="input", type=ParamType.str, pattern=_PATH),
                ParameterSpec(name="output", type=ParamType.str, pattern=_PATH),
                ParameterSpec(name="batch_size", type=ParamType.int, default=32, minimum=1,
                              maximum=65536),
                _PYTHON,
            ],
        ),
        TemplateCreate(
            slug="generic-script",
            title="Run a script of your work directory",
            description="Runs a script you uploaded with bash, sh or python3.",
            body=_file("generic-script.sh.j2"),
            parameters=[
                ParameterSpec(name="script", type=ParamType.str, pattern=_PATH),
                ParameterSpec(name="interpreter", type=ParamType.enum, default="bash",
                              choices=["bash", "sh", "python3"]),
            ],
        ),
        TemplateCreate(
            slug="pytorch-cpu",
            title="Small PyTorch training on CPU (demo, tests)",
            description=("Trains a tiny network on synthetic data for a few epochs: the loss "
                         "printed each epoch falls, and a checkpoint is saved. Runs on one CPU "
                         "in seconds; the `python` parameter must be able to import torch."),
            body=_file("pytorch-cpu.sh.j2"),
            files={"train_cpu.py": _file("train_cpu.py")},
            parameters=[
                ParameterSpec(name="epochs", type=ParamType.int, default=5, minimum=1,
                              maximum=1000),
                ParameterSpec(name="samples", type=ParamType.int, default=2048, minimum=64,
                              maximum=1_000_000),
                ParameterSpec(name="hidden", type=ParamType.int, default=32, minimum=1,
                              maximum=4096),
                ParameterSpec(name="learning_rate", type=ParamType.float, default=0.01,
                              minimum=1e-6, maximum=1.0),
                ParameterSpec(name="seed", type=ParamType.int, default=0, minimum=0,
                              maximum=2**31 - 1),
                ParameterSpec(name="checkpoint", type=ParamType.str, default="checkpoint.pt",
                              pattern=_PATH),
                _PYTHON,
            ],
        ),
    ]


def seed_templates(session: Session) -> list[str]:
    """Create the seeded templates that are missing; the slugs created. Idempotent, and safe
    when several replicas start at once (a lost race is a template that now exists). Part of
    installing the gateway, like a migration: no audit event."""
    created = []
    for definition in seed_definitions():
        if session.scalars(select(JobTemplate.id).where(
                JobTemplate.slug == definition.slug)).first() is not None:
            continue
        try:
            with session.begin_nested():
                template = JobTemplate(slug=definition.slug, latest_version=1)
                session.add(template)
                session.flush()
                _add_version(session, template, 1, definition, None)
        except IntegrityError:
            continue
        created.append(definition.slug)
    return created
