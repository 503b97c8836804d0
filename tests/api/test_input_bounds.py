"""Out-of-range integers and instants are a 422 naming the field, never a 500 (nor a 200 cut
short on a stream). Generated from the OpenAPI document: every integer and date-time input of
every operation (path, query, header, and body fields at any depth) gets both extremes, in a
request otherwise valid, by a consortium admin, against objects that exist."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from api_world import Seeded
from fastapi.testclient import TestClient
from jobs_helpers import job_body

from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings

EXTREMES: dict[str, tuple[Any, ...]] = {
    "integer": (10**20, -(10**20)),
    "date-time": ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"),
}


def _spec() -> dict[str, Any]:
    settings = Settings(secret_key="s" * 48, base_url="http://testserver")
    return create_app(settings, database=Database("sqlite://")).openapi()


SPEC = _spec()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema)
    alternatives = schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", [])
    if alternatives:
        return [b for alt in alternatives for b in _branches(alt)]
    return [schema]


def _kind(branch: dict[str, Any]) -> str | None:
    if branch.get("type") == "integer":
        return "integer"
    if branch.get("type") == "string" and branch.get("format") == "date-time":
        return "date-time"
    return None


def _strict(schema: dict[str, Any], kind: str, in_body: bool) -> bool:
    """True if no other branch of the schema can take the extreme: then it must be a 422. (A
    query or header value is a string, which only the typed branch may read.)"""
    others = {b.get("type") for b in _branches(schema) if _kind(b) is None} - {"null"}
    if kind == "integer":
        return "number" not in others
    return "string" not in others or not in_body


Key = tuple[str | int, ...]  # a place in a JSON body: keys and list indexes


def _body_fields(schema: dict[str, Any], at: Key = ()) -> Iterator[tuple[Key, dict[str, Any]]]:
    for branch in _branches(schema):
        if _kind(branch) is not None and at:
            yield at, schema
        for name, sub in branch.get("properties", {}).items():
            yield from _body_fields(sub, (*at, name))
        if branch.get("type") == "array":
            yield from _body_fields(branch["items"], (*at, 0))


@dataclass(frozen=True)
class Input:
    method: str
    path: str
    where: str  # path, query, header or body
    name: Key
    kind: str
    strict: bool

    @property
    def operation(self) -> str:
        return f"{self.method} {self.path}"

    def __str__(self) -> str:
        return f"{self.operation} {self.where}:{'.'.join(map(str, self.name))}"


def _inputs() -> list[Input]:
    found: list[Input] = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                for kind in {_kind(b) for b in _branches(param["schema"])} - {None}:
                    assert kind is not None
                    found.append(Input(method.upper(), path, param["in"], (param["name"],),
                                       kind, _strict(param["schema"], kind, in_body=False)))
            for content in op.get("requestBody", {}).get("content", {}).values():
                for key, schema in dict(_body_fields(content["schema"])).items():
                    for kind in {_kind(b) for b in _branches(schema)} - {None}:
                        assert kind is not None
                        found.append(Input(method.upper(), path, "body", key, kind,
                                           _strict(schema, kind, in_body=True)))
    return found


INPUTS = _inputs()

Body = Callable[[Seeded], dict[str, Any]]
TEMPLATE: dict[str, Any] = {
    "title": "Bounds", "body": "#!/bin/bash\necho {{ epochs }}\n",
    "parameters": [{"name": "epochs", "type": "int", "default": 1, "max_length": 10}]}
# A body each operation with an integer or date-time field accepts as far as validation goes.
VALID_BODIES: dict[str, Body] = {
    "POST /api/v1/me/tokens": lambda s: {"name": "bounds", "scopes": ["jobs:read"]},
    "POST /api/v1/members": lambda s: {
        "slug": "newco", "name": "NewCo", "kind": "company", "max_active_jobs": 5},
    "PATCH /api/v1/members/{member}": lambda s: {"max_active_jobs": 5},
    "POST /api/v1/members/{member}/allocations": lambda s: {
        "amount_msu": 1000, "overdraft_msu": 0, "starts_at": "2030-01-01T00:00:00+14:00",
        "ends_at": "2030-06-01T00:00:00-14:00"},
    "POST /api/v1/members/{member}/allocations/{allocation_id}/adjustments": lambda s: {
        "amount_msu": 1000, "reason": "bounds"},
    "POST /api/v1/members/{member}/refunds": lambda s: {
        "job_id": s.path["job_id"], "amount_msu": 1, "reason": "bounds"},
    "POST /api/v1/jobs": lambda s: job_body(s.world.project.id),
    "POST /api/v1/jobs/quote": lambda s: job_body(s.world.project.id),
    "POST /api/v1/templates": lambda s: {"slug": "bounds", **TEMPLATE},
    "PUT /api/v1/templates/{slug}": lambda s: TEMPLATE,
}


def _put(body: dict[str, Any], key: Key, value: Any) -> None:
    container: Any = body
    for part in key[:-1]:
        container = container[part]
    container[key[-1]] = value


@dataclass
class Request:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None


def _request(seeded: Seeded, operation: str, where: str = "", name: Key = (),
             value: Any = None) -> Request:
    method, path = operation.split(" ", 1)
    values = dict(seeded.path)
    headers, params = dict(seeded.admin), {}
    if where == "path":
        values[str(name[0])] = str(value)
    elif where == "query":
        params[str(name[0])] = str(value)
    elif where == "header":
        headers[str(name[0])] = str(value)
    body = copy.deepcopy(VALID_BODIES[operation](seeded)) if operation in VALID_BODIES else None
    if where == "body":
        assert body is not None, f"VALID_BODIES lacks {operation}"
        _put(body, name, value)
    return Request(method, path.format(**values), params, headers, body)


def _send(client: TestClient, request: Request) -> tuple[int, dict[str, Any]]:
    with client.stream(request.method, request.url, params=request.params,
                       headers=request.headers, json=request.json) as answer:
        content = answer.read()
    is_json = answer.headers.get("content-type", "").endswith("json")
    return answer.status_code, (answer.json() if is_json and content else {})


BODY_OPERATIONS = sorted({i.operation for i in INPUTS if i.where == "body"})


def test_the_generated_inputs_cover_the_api() -> None:
    # a change in how the document spells types would silently empty the list
    assert {"query", "path", "header", "body"} <= {i.where for i in INPUTS}
    assert {"integer", "date-time"} == {i.kind for i in INPUTS}
    assert len(INPUTS) > 40


@pytest.mark.parametrize("operation", BODY_OPERATIONS)
def test_the_valid_body_of_each_operation_passes_validation(
    operation: str, seeded: tuple[TestClient, Seeded],
) -> None:
    # the positive control: without it, a 422 for the extreme could be about something else
    # (a refusal after validation, such as a refund larger than the charge, is fine)
    client, world = seeded
    status, problem = _send(client, _request(world, operation))
    assert status < 500 and "errors" not in problem, (operation, status, problem)


def _names_the_field(problem: dict[str, Any], where: str, name: Key) -> bool:
    # a union adds the name of its branch after the field's: body.project.constrained-int
    wanted = [where, *map(str, name)]
    return any([str(p) for p in e["loc"]][:len(wanted)] == wanted
               for e in problem.get("errors", []))


@pytest.mark.parametrize("operation", sorted({i.operation for i in INPUTS}))
def test_every_integer_and_instant_input_at_both_extremes_is_a_422_naming_it_never_a_500(
    operation: str, seeded: tuple[TestClient, Seeded],
) -> None:
    client, world = seeded
    failures = []
    for field in (i for i in INPUTS if i.operation == operation):
        for value in EXTREMES[field.kind]:
            status, problem = _send(client, _request(world, operation, field.where,
                                                     field.name, value))
            named = _names_the_field(problem, field.where, field.name)
            if status >= 500 or (field.strict and not (status == 422 and named)):
                failures.append(f"{field} = {value!r}: {status} {problem}")
    assert not failures, "\n".join(failures)
