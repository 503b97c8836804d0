"""schemathesis against the app, every operation, as a consortium admin and as a member's
researcher, on a consortium where every object a path names exists (a job included, on the
FakeScheduler): no answer is a 5xx, and every answer is one the document declares, in the
declared content type and shape (`response_schema_conformance` validates the body against the
operation's schema for its status).

test_openapi_contract.py fuzzes the same operations without objects, as an admin and without
credentials, for the problem+json shape of the errors; here requests are aimed at objects that
exist, so the handlers run past their lookups and their successful answers are checked too.
Bounded: a few examples per operation and caller, generated only (derandomized, no shrinking,
no replay database), event streams cut after one event.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from api_world import Seeded
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case as GenericCase
from schemathesis.python.asgi import ASGIClient
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings

Operation = APIOperation[Any, Any, Any, Any]
Case = GenericCase[Any]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 6  # per operation and caller: about 640 requests in all
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
)


def _schema() -> Any:
    # the document does not depend on the database: an in-memory one that is never opened
    settings = Settings(secret_key="s" * 48, base_url="http://testserver")
    return schemathesis.openapi.from_dict(create_app(settings, database=Database("sqlite://"))
                                          .openapi())


OPERATIONS: dict[str, Operation] = {
    op.label: op for op in (result.ok() for result in _schema().get_all_operations())
}


def _cases(op: Operation, seeded: Seeded) -> st.SearchStrategy[Case]:
    """Valid requests aimed at the seeded objects, and invalid ones anywhere (the objects that
    do not exist are test_openapi_contract.py's)."""
    aimed = {p.name: seeded.path[p.name] for p in op.path_parameters}
    return st.one_of(op.as_strategy(GenerationMode.POSITIVE, path_parameters=aimed),
                     op.as_strategy(GenerationMode.NEGATIVE))


def _fuzz(op: Operation, client: TestClient, seeded: Seeded, caller: dict[str, str]) -> None:
    session = ASGIClient(client.app, max_stream_events=1)  # type: ignore[arg-type]

    @hypothesis.given(case=_cases(op, seeded))
    @FUZZ_SETTINGS
    def run(case: Case) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = CaseInsensitiveDict({**headers, **caller})
        response = case.call(session=session, timeout=10)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_a_consortium_admin_gets_no_5xx_and_only_answers_the_schema_declares(
    label: str, seeded: tuple[TestClient, Seeded],
) -> None:
    client, world = seeded
    _fuzz(OPERATIONS[label], client, world, world.admin)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_a_members_researcher_gets_no_5xx_and_only_answers_the_schema_declares(
    label: str, seeded: tuple[TestClient, Seeded],
) -> None:
    client, world = seeded
    _fuzz(OPERATIONS[label], client, world, world.researcher)


def test_every_operation_is_fuzzed() -> None:
    # an operation the loader dropped would silently escape (a path parameter that names no
    # seeded object fails its operation's tests with a KeyError)
    assert len(OPERATIONS) > 40
