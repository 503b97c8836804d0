"""A submission's resources, name and output files, resolved in one place: the request's fields
win over the script's `#SBATCH` lines, which win over the defaults, as sbatch's command line
wins over the script. What comes out is what is quoted, held and sent to Slurm."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import UndefinedError
from pydantic import TypeAdapter, ValidationError

from consortium.texts import Sentence, validation_sentence
from gateway.jobs import directives, templates
from gateway.jobs.errors import JobInputInvalid
from gateway.jobs.schemas import FilePath, JobCreate, JobName, ResourcesIn

DEFAULT_NAME = "job"
REQUIRED = {"partition": "--partition", "mem_mb": "--mem",
            "time_limit_minutes": "--time"}
# the directive each resolved field may come from, to point at its line
_SOURCES = {"partition": ("partition",), "nodes": ("nodes",), "ntasks": ("ntasks",),
            "cpus_per_task": ("cpus-per-task",), "gpus": ("gpus", "gres"),
            "mem_mb": ("mem", "mem-per-cpu"), "time_limit_minutes": ("time",),
            "array": ("array",)}
_NAME: TypeAdapter[str] = TypeAdapter(JobName)
_PATH: TypeAdapter[str] = TypeAdapter(FilePath)
# the resources a template sees before they are resolved: the defaults, then the request's
_DEFAULTS = {"nodes": 1, "ntasks": 1, "cpus_per_task": 1, "gpus": 0, "array": None}


@dataclass(frozen=True)
class Resolved:
    resources: ResourcesIn
    name: str
    stdout: str | None  # relative to the job's workdir, from `--output`; None: the default
    stderr: str | None


def resolve(request: JobCreate, script: str | None, *, default_name: str = DEFAULT_NAME,
            where: str = "script") -> Resolved:
    """The request over the directives of `script` (its `#SBATCH` header); every refusal is a
    field error, those of a directive at ("body", `where`) naming its line."""
    try:
        asked = directives.from_script(script) if script else directives.FromScript()
    except directives.DirectivesRefused as exc:
        raise JobInputInvalid([_at(where, p) for p in exc.problems]) from exc
    given = request.resources.model_dump(exclude_none=True) if request.resources else {}
    merged: dict[str, Any] = {**asked.resources, **given}
    nodes = merged.get("nodes", 1)
    cpus = merged.get("ntasks", 1) * merged.get("cpus_per_task", 1)
    if "mem_mb" not in given:
        # Slurm's --mem is per node and --mem-per-cpu per CPU; mem_mb is the whole job's
        if asked.mem_mb_per_node is not None:
            merged["mem_mb"] = asked.mem_mb_per_node * nodes
        elif asked.mem_mb_per_cpu is not None:
            merged["mem_mb"] = asked.mem_mb_per_cpu * cpus
    if "gpus" not in given and asked.gpus_per_node is not None:
        merged["gpus"] = asked.gpus_per_node * nodes  # --gres is per node
    missing = [{"loc": ["body", "resources", f], "type": "missing",
                "msg": Sentence("give resources.%(field)s or an #SBATCH %(option)s line in "
                                "the script", field=f, option=option)}
               for f, option in REQUIRED.items() if f not in merged]
    if missing:
        raise JobInputInvalid(missing)
    if isinstance(nodes, int) and nodes > 1 and isinstance(merged["mem_mb"], int):
        # Slurm gives --mem per node: the whole job's memory is a multiple of the nodes
        merged["mem_mb"] = math.ceil(merged["mem_mb"] / nodes) * nodes
    try:
        resources = ResourcesIn.model_validate(merged)
    except ValidationError as exc:
        raise JobInputInvalid([_located(e, given, asked, where) for e in exc.errors()]) from exc
    problems: list[dict[str, Any]] = []
    name = request.name or _checked(asked, "job-name", _NAME, where, problems)
    stdout = _checked(asked, "output", _PATH, where, problems)
    stderr = _checked(asked, "error", _PATH, where, problems)
    if resources.array is not None:
        problems.extend(_at(where, Sentence(
            "line %(line)s: --%(option)s with an array would make every task write one file; "
            "leave it out (the gateway names each task's files)", line=asked.lines[option],
            option=option)) for option in ("output", "error") if option in asked.lines)
    if problems:
        raise JobInputInvalid(problems)
    return Resolved(resources, name or default_name, stdout, stderr)


def resolve_rendered(request: JobCreate, render: Callable[[Mapping[str, Any]], str], *,
                     default_name: str) -> tuple[Resolved, str]:
    """A template's job: rendered with the request's resources, its directives resolved, and
    rendered again with the result when that differs (a template may print the resources it
    is given, in its own `#SBATCH` lines too); (the resolution, the script). A render that
    fails, but for a resource left to the script in the first one, is a 422 naming the line."""
    given = request.resources.model_dump(exclude_none=True) if request.resources else {}
    known = {**_DEFAULTS, **given}
    try:
        script: str | None = render(known)
    except UndefinedError as exc:
        if not _lacks_a_resource(exc, known):
            raise templates.render_refused(exc, "template") from exc
        script = None  # it needs a resource the request leaves to the script: resolved below
    except Exception as exc:
        raise templates.render_refused(exc, "template") from exc
    resolved = resolve(request, script, default_name=default_name, where="template")
    final = resolved.resources.model_dump()
    if final == known and script is not None:
        return resolved, script
    try:
        script = render(final)
    except Exception as exc:
        raise templates.render_refused(exc, "template") from exc
    again = resolve(request, script, default_name=default_name, where="template")
    if again != resolved:
        raise JobInputInvalid.at(("template",), Sentence(
            "the template's #SBATCH lines change with the resources they set; give the "
            "resources in the request"))
    return again, script


def _lacks_a_resource(exc: UndefinedError, known: Mapping[str, Any]) -> bool:
    """Whether the render stopped at a field of `resources` not known yet (jinja names the
    missing key of the `resources` dict in its message)."""
    return any(exc.message == f"'dict object' has no attribute '{field}'"
               for field in ResourcesIn.model_fields if field not in known)


def _at(where: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", where], "msg": msg, "type": "value_error"}


def _located(error: Any, given: dict[str, Any], asked: directives.FromScript,
             where: str) -> dict[str, Any]:
    """A validation error of the merged resources, at the request's field or the script's line
    it came from."""
    field = str(error["loc"][0]) if error["loc"] else ""
    line = next((asked.lines[o] for o in _SOURCES.get(field, ()) if o in asked.lines), None)
    if field in given or line is None:
        return {"loc": ["body", "resources", *error["loc"]],
                "msg": validation_sentence(error), "type": error["type"]}
    return _at(where, Sentence("line %(line)s: %(field)s: %(problem)s", line=line, field=field,
                               problem=validation_sentence(error)))


def _checked(asked: directives.FromScript, option: str, adapter: TypeAdapter[str], where: str,
             problems: list[dict[str, Any]]) -> str | None:
    """The value of a directive, checked as the request's own field is."""
    value = {"job-name": asked.name, "output": asked.stdout, "error": asked.stderr}[option]
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        problems.extend(_at(where, Sentence(
            "line %(line)s: --%(option)s: %(problem)s", line=asked.lines[option], option=option,
            problem=validation_sentence(e))) for e in exc.errors())
        return None
