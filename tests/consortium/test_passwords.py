"""The password policy: at least 12 characters and hard to guess by zxcvbn's estimate, for
every password set (admin CLI, invitations; the demo's drawn ones pass it)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.passwords import WeakPassword, require_strong, weakness
from consortium.schemas import InvitationAccept, UserCreate
from consortium.service import create_user
from gateway import demo
from gateway.ui import i18n

WEAK = [" " * 12, "password1234", "qwertyuiop12", "123456789012", "aaaaaaaaaaaaaaaa",
        "iloveyou2024", "a" * 1024]
STRONG = ["correct horse battery staple", "twelve chars or more", "Tr0ub4dor&3-plum",
          "a few unrelated words " * 10]  # longer than the estimator reads (72 characters)


def _refusal(session: Session, password: str, **fields: str) -> dict[str, object]:
    data = UserCreate(email=fields.get("email", "ada@acme.test"),
                      name=fields.get("name", "Ada"), password=password)
    with pytest.raises(WeakPassword) as refused:
        create_user(session, "cli", data, context=RequestContext())
    [error] = refused.value.extra["errors"]
    assert refused.value.detail == error["msg"]
    return dict(error)


@pytest.mark.parametrize("password", WEAK)
def test_a_weak_or_common_password_is_refused_naming_the_field_with_advice(
        session: Session, password: str) -> None:
    error = _refusal(session, password)
    assert (error["loc"], error["type"]) == (["body", "password"], "weak_password")
    assert str(error["msg"]).startswith("this password is too easy to guess: ")
    assert len(str(error["msg"])) > len("this password is too easy to guess: ")


@pytest.mark.parametrize("password", STRONG)
def test_a_strong_password_is_accepted(session: Session, password: str) -> None:
    data = UserCreate(email="ada@acme.test", name="Ada", password=password)
    assert create_user(session, "cli", data, context=RequestContext()).email == "ada@acme.test"


def test_the_schemas_check_only_the_length_the_strength_costs_a_service_call() -> None:
    # tens of milliseconds of zxcvbn: spent by the services, after the cheaper checks
    assert InvitationAccept(name="Ada", password="password1234").password == "password1234"
    assert UserCreate(email="a@b.org", name="A", password="password1234")


def test_the_accounts_own_name_and_email_count_as_easy_guesses(session: Session) -> None:
    assert weakness("karim haddad") is None  # for anyone else, two uncommon words
    error = _refusal(session, "karim haddad", email="karim.haddad@lirmm.test",
                     name="Karim Haddad")
    assert error["type"] == "weak_password"
    assert weakness("karim.haddad@lirmm.test") is None
    assert _refusal(session, "karim.haddad@lirmm.test", email="karim.haddad@lirmm.test",
                    name="K")["type"] == "weak_password"
    require_strong("karim haddad", ["ada@acme.test", "Ada Lovelace"])
    with pytest.raises(WeakPassword, match="too easy to guess"):
        require_strong("karim haddad", ["ada@acme.test", "Karim Haddad"])


def test_the_passwords_the_demo_draws_pass_the_policy(session: Session) -> None:
    known: dict[str, str] = {}
    for n in range(200):
        demo._user_with_password(session, f"person{n}@demo.test", known)
    assert len(known) == 200
    assert [p for p in known.values() if weakness(p) is not None] == []


def test_a_weak_passwords_advice_is_english_for_the_api_and_french_on_a_french_page() -> None:
    said = weakness("password1234")
    assert said == ("this password is too easy to guess: This is a very common password. Add "
                    "another word or two. Uncommon words are better.")
    token = i18n.current_locale.set("fr")
    try:
        french = str(i18n.in_viewers_language(said or ""))
    finally:
        i18n.current_locale.reset(token)
    assert french == ("ce mot de passe est trop facile à deviner : C'est un mot de passe très "
                      "courant. Ajoutez un ou deux mots, de préférence peu courants.")
