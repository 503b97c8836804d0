"""Fixtures of the quota tests: the consortium's cast and request headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from factories import Cast, auth_headers, make_cast
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.settings import Settings


@pytest.fixture
def cast(session: Session) -> Cast:
    return make_cast(session)


@pytest.fixture
def as_(settings: Settings) -> Callable[[User], dict[str, str]]:
    """`as_(user)`: the headers of a request made by that user."""
    return lambda user: auth_headers(settings, user)
