"""The OpenAPI document is the contract: schemathesis generates requests (valid and invalid) for
every operation and each answer must be a status the operation documents, never a 500, and
every 4xx must be RFC 9457 problem+json whose `status` is the HTTP status.

schemathesis is driven programmatically (its pytest plugin does not load under pytest 9): one
hypothesis run per operation, derandomized so a failure reproduces, bounded so the file stays
well under a minute and a half per database. Requests go in-process through schemathesis' own
ASGI session (requests-based, so the odd headers and bodies it generates reach the app
unchanged); the app's lifespan is the one `app_client` runs.

Nothing is excluded: the event streams (`/events`, `output?follow`) and the file routes are
fuzzed too. No job or cluster exists, so they answer before streaming or touching a cluster,
and the session cuts any event stream after one event, so none can hang the run.
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis
import pytest
import schemathesis
from factories import auth_headers, make_cast, make_project
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.generation.case import Case as GenericCase
from schemathesis.python.asgi import ASGIClient
from schemathesis.schemas import APIOperation
from sqlalchemy.orm import Session

from gateway.api.app import API_PREFIX, create_app
from gateway.api.errors import PROBLEM_JSON
from gateway.db import Database
from gateway.settings import Settings

Operation = APIOperation[Any, Any, Any, Any]
Case = GenericCase[Any]

EXAMPLES = 12  # per operation and caller
# generate only (no replay database, no shrinking): reproducible and bounded
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
)


def _spec() -> dict[str, Any]:
    # The document does not depend on the database: an in-memory one that is never opened.
    settings = Settings(secret_key="s" * 48, base_url="http://testserver")
    return create_app(settings, database=Database("sqlite://")).openapi()


SPEC = _spec()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS: dict[str, Operation] = {
    op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())  # type: ignore[union-attr]
}


def _route_to_the_operation(case: Case) -> None:
    """An empty path parameter or one holding a slash reaches another route (or none): that is
    routing, not the operation under test, so it is mended (a filter would reject too many
    cases). `{path}` of the file routes takes slashes."""
    for name, value in (case.path_parameters or {}).items():
        if name != "path" and isinstance(value, str):
            case.path_parameters[name] = value.replace("/", "_") or "_"


def _cases(op: Operation, known: dict[str, Any]) -> st.SearchStrategy[Case]:
    """Valid and invalid requests, and valid ones aimed at objects that exist (so the handlers
    run past their lookups)."""
    params = {p.name for p in op.path_parameters}
    aimed = {k: v for k, v in known.items() if k in params}
    strategies = [op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)]
    if aimed:
        strategies.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=aimed))
    return st.one_of(strategies)


def _documented(op: Operation) -> set[int]:
    return {int(status) for status in op.definition.raw["responses"] if status.isdigit()}


def _check(op: Operation, case: Case, status: int, content_type: str, body: bytes) -> None:
    where = f"{op.label}: {case.as_curl_command()}\n-> {status} {body[:500]!r}"
    assert status < 500, where
    assert status in _documented(op), f"undocumented status {status}; {where}"
    if 400 <= status < 500:
        assert content_type.split(";", maxsplit=1)[0] == PROBLEM_JSON, where
        problem = _json(body)
        assert problem.get("type") and problem.get("title"), where
        assert problem.get("status") == status, where


def _json(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


def _fuzz(op: Operation, client: TestClient, authorization: str | None,
          known: dict[str, Any]) -> None:
    # max_stream_events=1: an event stream ends after its first event
    session = ASGIClient(client.app, max_stream_events=1)  # type: ignore[arg-type]

    @hypothesis.given(case=_cases(op, known))
    @FUZZ_SETTINGS
    def run(case: Case) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if authorization is not None:
            headers["Authorization"] = authorization
        case.headers = CaseInsensitiveDict(headers)
        _route_to_the_operation(case)
        response = case.call(session=session, timeout=10)
        _check(op, case, response.status_code, response.headers.get("content-type", [""])[0],
               response.content)

    run()


@pytest.fixture
def known(session: Session) -> dict[str, Any]:
    """Path parameters naming objects that exist, so that some requests reach a real object."""
    cast = make_cast(session)
    project = make_project(session, cast.acme, "fuzz-plan")
    return {"member": cast.acme.slug, "project": project.slug, "user_id": cast.researcher.id,
            "_admin": cast.admin}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_answer_of_an_operation_to_a_consortium_admin_is_documented_and_never_a_500(
    label: str, app_client: TestClient, settings: Settings, known: dict[str, Any],
) -> None:
    authorization = auth_headers(settings, known["_admin"])["Authorization"]
    _fuzz(OPERATIONS[label], app_client, authorization, known)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_answer_of_an_operation_without_credentials_is_documented_and_never_a_500(
    label: str, app_client: TestClient, known: dict[str, Any],
) -> None:
    _fuzz(OPERATIONS[label], app_client, None, known)


API_OPERATIONS = [
    (path, method, op) for path, item in SPEC["paths"].items() if path.startswith(API_PREFIX)
    for method, op in item.items()
]


@pytest.mark.parametrize(("path", "method", "op"), API_OPERATIONS,
                         ids=[f"{m.upper()} {p}" for p, m, _ in API_OPERATIONS])
def test_every_api_operation_documents_422_for_its_input_and_401_for_its_security(
    path: str, method: str, op: dict[str, Any],
) -> None:
    responses = set(op["responses"])
    if op.get("parameters") or op.get("requestBody"):
        assert "422" in responses, f"{method.upper()} {path} takes input but omits 422"
    if op.get("security"):
        assert "401" in responses, f"{method.upper()} {path} needs credentials but omits 401"
    for status, response in op["responses"].items():
        if status.startswith("4"):
            assert PROBLEM_JSON in response.get("content", {}), f"{status} of {path}"


def test_the_fuzzed_operations_cover_the_whole_api() -> None:
    # a route the schema loader dropped would silently escape the fuzzing
    assert len(OPERATIONS) == sum(len(item) for item in SPEC["paths"].values())
    assert len(OPERATIONS) > 40
