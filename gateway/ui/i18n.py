"""The interface's languages: French first, English one click away.

Strings live in the templates (`{% trans %}`, `_()`) and, for the few the code holds, behind
`lazy_gettext`; Babel extracts them into `locale/messages.pot` and the `.po` catalogues, whose
compiled `.mo` files are committed beside them (tests/ui/test_ui_catalogues.py fails when a
`.mo` is older than its `.po`). See docs/web.md for the commands.
"""

from __future__ import annotations

from contextvars import ContextVar
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel.numbers import format_decimal
from babel.support import LazyProxy, NullTranslations, Translations

from consortium.texts import Sentence

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"
LOCALE_COOKIE = "hpcgw_lang"

# The language of the request being rendered, for the lazy strings of the code.
current_locale: ContextVar[str] = ContextVar("hpcgw_ui_locale", default=DEFAULT_LOCALE)


@cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalogue of a language (English is the source language: no catalogue
    needed, but one is kept so that a wording can be changed without touching templates)."""
    return Translations.load(str(LOCALE_DIR), [locale], DOMAIN)


def supported(locale: str | None) -> str | None:
    return locale if locale in LOCALES else None


def gettext(message: str, /, **variables: Any) -> str:
    text = translations(current_locale.get()).gettext(message)
    return text % variables if variables else text


def lazy_gettext(message: str, /, **variables: Any) -> LazyProxy:
    """A string of the code, translated when it is rendered, in the request's language."""
    return LazyProxy(gettext, message, enable_cache=False, **variables)


def in_viewers_language(text: str) -> str | LazyProxy:
    """A Sentence of the domain (consortium.texts), with its values, translated when it is
    rendered; any other text as it is (in English, as the API says it)."""
    if not isinstance(text, Sentence):
        return text
    return lazy_gettext(text.message, **{
        name: _in_viewers_language(value) for name, value in text.values.items()})


def _in_viewers_language(value: object) -> object:
    """A Sentence's value: a sentence translated, an amount (a Decimal: SU) written as the
    language writes numbers, anything else (counts, ids, names) as it is."""
    if isinstance(value, str):
        return in_viewers_language(value)
    if isinstance(value, Decimal):
        return LazyProxy(amount, value, enable_cache=False)
    return value


def amount(value: Decimal | float, decimals: int = 3) -> str:
    """An amount in the request's language (`1 234,5` in French): the API's exact figure, with
    trailing zeros after the first decimal dropped."""
    pattern = "#,##0." + "0" * min(decimals, 1) + "#" * max(decimals - 1, 0)
    return format_decimal(value, format=pattern, locale=current_locale.get())
