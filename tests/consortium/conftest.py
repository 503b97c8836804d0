"""Fixtures of the consortium tests: two members and their people, a real SMTP server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
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


class Inbox:
    """aiosmtpd handler keeping (sender, recipients, message) of what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server(unused_port: int) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on loopback, plain (no STARTTLS): (its inbox, its port)."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=unused_port, ready_timeout=10)
    controller.start()
    yield inbox, unused_port
    controller.stop()
