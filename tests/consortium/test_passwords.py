"""The password policy: at least 12 characters and hard to guess by zxcvbn's estimate, for
every password set (admin CLI, invitations; the demo's drawn ones pass it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from consortium.passwords import weakness
from consortium.schemas import InvitationAccept, UserCreate
from gateway import demo
from gateway.cli.admin import admin_app

WEAK = [" " * 12, "password1234", "qwertyuiop12", "123456789012", "aaaaaaaaaaaaaaaa",
        "iloveyou2024", "a" * 1024]
STRONG = ["correct horse battery staple", "twelve chars or more", "Tr0ub4dor&3-plum",
          "a few unrelated words " * 10]  # longer than the estimator reads (72 characters)


def _refusal(password: str, **fields: str) -> dict[str, object]:
    with pytest.raises(ValidationError) as refused:
        UserCreate(email=fields.get("email", "ada@acme.test"), name=fields.get("name", "Ada"),
                   password=password)
    [error] = refused.value.errors()
    return dict(error)


@pytest.mark.parametrize("password", WEAK)
def test_a_weak_or_common_password_is_refused_naming_the_field_with_advice(
        password: str) -> None:
    error = _refusal(password)
    assert (error["loc"], error["type"]) == (("password",), "weak_password")
    assert str(error["msg"]).startswith("this password is too easy to guess: ")
    assert len(str(error["msg"])) > len("this password is too easy to guess: ")


@pytest.mark.parametrize("password", STRONG)
def test_a_strong_password_is_accepted(password: str) -> None:
    assert UserCreate(email="ada@acme.test", name="Ada", password=password).password == password
    assert InvitationAccept(name="Ada", password=password).password == password


def test_the_accounts_own_name_and_email_count_as_easy_guesses() -> None:
    assert weakness("karim haddad") is None  # for anyone else, two uncommon words
    error = _refusal("karim haddad", email="karim.haddad@lirmm.test", name="Karim Haddad")
    assert error["type"] == "weak_password"
    assert InvitationAccept(name="Ada Lovelace", password="karim haddad")
    with pytest.raises(ValidationError, match="too easy to guess"):
        InvitationAccept(name="Karim Haddad", password="karim haddad")


def test_the_admin_cli_refuses_a_weak_password_in_one_line() -> None:
    # refused while parsing its input, before any configuration or database is read
    result = CliRunner().invoke(admin_app, ["user", "create", "a@b.org", "--name", "A",
                                            "--password", "password1234"])
    assert result.exit_code == 1, result.output
    assert "password: this password is too easy to guess" in result.output
    assert "Traceback" not in result.output


def test_the_passwords_the_demo_draws_pass_the_policy(session: Session) -> None:
    known: dict[str, str] = {}
    for n in range(200):
        demo._user_with_password(session, f"person{n}@demo.test", known)
    assert len(known) == 200
    assert [p for p in known.values() if weakness(p) is not None] == []
