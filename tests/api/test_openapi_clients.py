"""The OpenAPI document serves generated clients: readable and unique operation ids, one schema
per name, every error response naming its problem types, tags described, and examples that
are what their models accept."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.api import examples
from gateway.api.app import create_app
from gateway.api.errors import PROBLEM_JSON, problem_types
from gateway.db import Database
from gateway.jobs.schemas import JobCreate, JobDetail, JobQuote
from gateway.settings import Settings

SPEC = create_app(Settings(secret_key="s" * 48), database=Database("sqlite://")).openapi()
OPERATIONS = [(f"{method.upper()} {path}", op) for path, item in SPEC["paths"].items()
              for method, op in item.items()]
READABLE = re.compile(r"^[a-z]+(-[a-z]+)+$")


def test_every_operation_id_is_readable_and_unique() -> None:
    ids = {label: op["operationId"] for label, op in OPERATIONS}

    assert [i for i in ids.values() if not READABLE.match(i)] == []
    assert len(set(ids.values())) == len(ids)
    assert {ids["POST /api/v1/jobs"], ids["GET /api/v1/jobs/{job_id}"],
            ids["POST /api/v1/jobs/quote"], ids["GET /api/v1/jobs/{job_id}/files"],
            ids["POST /api/v1/auth/token"], ids["GET /api/v1/me"],
            ids["GET /api/v1/members/{member}/usage"]} == {
        "jobs-submit", "jobs-get", "jobs-quote", "jobs-files-list", "auth-token", "me-get",
        "members-usage"}


def test_no_schema_is_named_after_its_module() -> None:
    # FastAPI names two models of one name by their modules (a__b__Model): a generated
    # client then drops one of them
    names = SPEC["components"]["schemas"]
    assert [n for n in names if "__" in n] == []
    assert {"MeOut", "MeMembership", "MembershipOut", "JobQuote", "FileListing"} <= set(names)


def test_every_tag_is_described() -> None:
    described = {t["name"]: t.get("description") for t in SPEC["tags"]}
    used = {tag for _, op in OPERATIONS for tag in op.get("tags", [])}

    assert used <= {name for name, text in described.items() if text}


@pytest.mark.parametrize(("label", "op"), OPERATIONS, ids=[label for label, _ in OPERATIONS])
def test_every_error_response_names_its_problem_types(label: str, op: dict[str, Any]) -> None:
    types = problem_types()
    for status, response in op["responses"].items():
        if int(status) < 400:
            continue
        shown = response["content"][PROBLEM_JSON]["examples"].values()
        named = {example["value"]["type"] for example in shown}
        assert named and named <= set(types[int(status)]), (label, status, named)
        assert all(f"`{t}`" in response["description"] for t in named), (label, status)


def test_quota_refusal_is_documented_with_its_type_on_submission() -> None:
    forbidden = SPEC["paths"]["/api/v1/jobs"]["post"]["responses"]["403"]
    assert "`/problems/quota-exceeded`" in forbidden["description"]


def test_the_examples_are_what_their_models_accept() -> None:
    submit = SPEC["paths"]["/api/v1/jobs"]["post"]
    shown = submit["requestBody"]["content"]["application/json"]["examples"]
    assert set(shown) == {"script", "script-overridden", "template"}
    for example in shown.values():
        JobCreate.model_validate(example["value"])
    JobDetail.model_validate(examples.JOB_DETAIL)
    JobQuote.model_validate(examples.JOB_QUOTE)
    # (the document leaves the example's nulls out)
    shown_job = submit["responses"]["201"]["content"]["application/json"]["example"]
    assert (shown_job["id"], shown_job["state"]) == ("3f9c2a71b0de", "running")
