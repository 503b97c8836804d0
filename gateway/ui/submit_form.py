"""The submission forms' logic. A template's typed parameters and the job's resources become form
fields with the bounds the API checks (read from the same specs and schema, never restated);
the form's text becomes the typed request the API takes, and the API's own checks judge it.

Nothing here validates a value: a text that is not a number is passed on as text, and the
service refuses it with the API's words ("must be an integer").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from annotated_types import Ge, Le, MaxLen

from gateway.jobs.schemas import JobCreate, ParameterSpec, ParamType, ResourcesIn, Scalar

PARAM_PREFIX = "parameters."
RESOURCE_PREFIX = "resources."
# the resources a form offers, in the order shown (partition is a choice of the cluster's)
RESOURCES = ("partition", "nodes", "ntasks", "cpus_per_task", "gpus", "mem_mb",
             "time_limit_minutes", "array")
_INPUT_TYPES = {ParamType.int: "number", ParamType.float: "number", ParamType.str: "text",
                ParamType.enum: "select", ParamType.bool: "checkbox"}


@dataclass(frozen=True)
class FormField:
    """One input as the template renders it: `name` is the API's field path (see
    gateway.ui.form_errors), `key` the parameter's or resource's own name."""

    name: str
    key: str
    input_type: str  # number, text, select, checkbox
    value: str
    required: bool = False
    description: str = ""
    minimum: str | None = None
    maximum: str | None = None
    step: str | None = None
    max_length: int | None = None
    choices: Sequence[str] = field(default_factory=tuple)
    checked: bool = False


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def _text(value: Scalar | None) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def parameter_fields(specs: Sequence[ParameterSpec], form: Mapping[str, str] | None = None
                     ) -> list[FormField]:
    """The template's parameters as inputs, filled with the form's values when it is shown
    again, else with the defaults."""
    fields = []
    for spec in specs:
        name = PARAM_PREFIX + spec.name
        given = form.get(name) if form is not None else None
        value = _text(spec.default) if given is None else given
        checked = (name in form) if form is not None else spec.default is True
        fields.append(FormField(
            name=name, key=spec.name, input_type=_INPUT_TYPES[spec.type], value=value,
            required=spec.required and spec.type is not ParamType.bool,
            description=spec.description,
            minimum=_number(spec.minimum), maximum=_number(spec.maximum),
            step={ParamType.int: "1", ParamType.float: "any"}.get(spec.type),
            max_length=spec.max_length if spec.type is ParamType.str else None,
            choices=tuple(spec.choices or ()), checked=checked))
    return fields


def _bounds(key: str) -> dict[str, Any]:
    """A resource's bounds as the API's schema declares them (ResourcesIn)."""
    bounds: dict[str, Any] = {}
    for constraint in ResourcesIn.model_fields[key].metadata:
        if isinstance(constraint, Ge):
            bounds["minimum"] = str(constraint.ge)
        elif isinstance(constraint, Le):
            bounds["maximum"] = str(constraint.le)
        elif isinstance(constraint, MaxLen):
            bounds["max_length"] = constraint.max_length
    return bounds


def resource_fields(partitions: Sequence[str], form: Mapping[str, str] | None = None
                    ) -> list[FormField]:
    """The resources a submission may give; each left empty is taken from the script's
    `#SBATCH` lines (or the template's), else its default."""
    fields = []
    for key in RESOURCES:
        name = RESOURCE_PREFIX + key
        value = (form or {}).get(name, "")
        if key == "partition":
            fields.append(FormField(name=name, key=key, input_type="select", value=value,
                                    choices=tuple(partitions)))
        elif key == "array":
            fields.append(FormField(name=name, key=key, input_type="text", value=value,
                                    **_bounds(key)))
        else:
            fields.append(FormField(name=name, key=key, input_type="number", value=value,
                                    step="1", **_bounds(key)))
    return fields


def _typed(spec: ParameterSpec, text: str) -> Scalar:
    """The value as its type reads it; a text that does not read stays text for the API to
    refuse in its words."""
    try:
        if spec.type is ParamType.int:
            return int(text)
        if spec.type is ParamType.float:
            number = float(text)
            return number if math.isfinite(number) else text
    except ValueError:
        return text
    return text


def parameters(specs: Sequence[ParameterSpec], form: Mapping[str, str]) -> dict[str, Scalar]:
    """The parameters to send: a checkbox is true or false, an empty input is left out (its
    default applies, or the API says it is required)."""
    values: dict[str, Scalar] = {}
    for spec in specs:
        name = PARAM_PREFIX + spec.name
        if spec.type is ParamType.bool:
            values[spec.name] = name in form
            continue
        text = form.get(name, "").strip()
        if text:
            values[spec.name] = _typed(spec, text)
    return values


def resources(form: Mapping[str, str]) -> dict[str, str]:
    """The resources given (pydantic reads the numbers, and refuses what does not read)."""
    given = {key: form.get(RESOURCE_PREFIX + key, "").strip() for key in RESOURCES}
    return {key: text for key, text in given.items() if text}


def job_request(form: Mapping[str, str], *, template: str | None,
                specs: Sequence[ParameterSpec] = ()) -> JobCreate:
    """The API's request body for a form, validated by the API's schema (ValidationError with
    its field paths otherwise)."""
    body: dict[str, Any] = {"project": form.get("project", ""), "workdir": form.get("workdir", "")}
    for key in ("cluster", "name", "when_unavailable"):
        if form.get(key, "").strip():
            body[key] = form[key].strip()
    given = resources(form)
    if given:
        body["resources"] = given
    if template is None:
        body["script"] = form.get("script", "").replace("\r\n", "\n") or None
    else:
        body["template"] = template
        body["parameters"] = parameters(specs, form)
    return JobCreate.model_validate(body)
