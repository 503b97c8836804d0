"""Outgoing mail over SMTP (STARTTLS and login as configured). Blocking: call it from a thread
or a sync route, and never inside a database transaction."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from pydantic import SecretStr


class SmtpConfig(Protocol):
    """What sending needs; gateway.settings.SmtpSettings is one."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def starttls(self) -> bool: ...
    @property
    def sender(self) -> str: ...
    @property
    def timeout(self) -> float: ...


class MailError(Exception):
    """The message was not handed to the SMTP server; the cause is chained."""


def send_mail(config: SmtpConfig, *, to: str, subject: str, body: str) -> None:
    if config.username and not config.starttls:
        raise MailError("refusing to send SMTP credentials over a connection without STARTTLS")
    message = EmailMessage()
    try:
        message["From"] = config.sender
        message["To"] = to
        message["Subject"] = subject
    except ValueError as exc:  # a header with a line break: never let it through
        raise MailError(f"invalid mail header: {exc}") from exc
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2] or None)
    message.set_content(body)
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username:
                password = config.password.get_secret_value() if config.password else ""
                smtp.login(config.username, password)
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"{type(exc).__name__}: {exc}") from exc
