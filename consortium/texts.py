"""Sentences meant for people, which the API gives in English and the web interface in the
viewer's language (scripts/ui-catalogues.sh extracts the `translatable` and `Sentence` ones)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


def translatable(message: str) -> str:
    """Marks a sentence for the web interface's catalogues; the text itself is unchanged."""
    return message


class Sentence(str):
    """A sentence with values in it: the English text it is (what the API answers, wherever a
    string goes), which also keeps its message and values for the pages to translate
    (gateway.ui.i18n.in_viewers_language). A value may be a Sentence itself.

    `Sentence("at most %(n)s tasks", n=MAX_TASKS)`: the message is a `%` format (`%%` for a
    percent sign when there are values) and is extracted into the catalogues. Joining it with
    other text makes a plain str again, in English: build the whole sentence as one."""

    message: str
    values: dict[str, object]

    def __new__(cls, message: str, /, **values: object) -> Sentence:
        sentence = super().__new__(cls, message % values if values else message)
        sentence.message = message
        sentence.values = values
        return sentence

    @classmethod
    def worded(cls, text: str, message: str, /, **values: object) -> Sentence:
        """`text` as another library words it (the API keeps its words), which the pages say
        as `message` with `values`."""
        sentence = str.__new__(cls, text)
        sentence.message = message
        sentence.values = values
        return sentence


_SPACED = translatable("%(before)s %(after)s")


def one_after_another(parts: Sequence[str], joint: str = _SPACED) -> str:
    """Sentences one after the other, each said on the pages in the viewer's language (a
    Sentence); `joint` puts two together (a space between them, unless another is given)."""
    said = parts[0]
    for part in parts[1:]:
        said = Sentence(joint, before=said, after=part)
    return said


# pydantic's errors by type, worded for people, with the names of their `ctx` values
_VALIDATION: dict[str, str] = {
    "missing": translatable("required"),
    "int_type": translatable("a whole number is expected"),
    "int_parsing": translatable("a whole number is expected"),
    "int_from_float": translatable("a whole number is expected"),
    "float_type": translatable("a number is expected"),
    "float_parsing": translatable("a number is expected"),
    "bool_type": translatable("yes or no is expected"),
    "bool_parsing": translatable("yes or no is expected"),
    "string_type": translatable("a text is expected"),
    "greater_than": translatable("must be greater than %(gt)s"),
    "greater_than_equal": translatable("must be at least %(ge)s"),
    "less_than": translatable("must be less than %(lt)s"),
    "less_than_equal": translatable("must be at most %(le)s"),
    "multiple_of": translatable("must be a multiple of %(multiple_of)s"),
    "string_too_short": translatable("must have at least %(min_length)s character(s)"),
    "string_too_long": translatable("must have at most %(max_length)s character(s)"),
    "string_pattern_mismatch": translatable("does not have the expected form (%(pattern)s)"),
    "too_short": translatable("must have at least %(min_length)s item(s)"),
    "too_long": translatable("must have at most %(max_length)s item(s)"),
    "enum": translatable("must be one of %(expected)s"),
    "literal_error": translatable("must be one of %(expected)s"),
    "date_type": translatable("a date is expected (YYYY-MM-DD)"),
    "date_parsing": translatable("a date is expected (YYYY-MM-DD)"),
    "date_from_datetime_parsing": translatable("a date is expected (YYYY-MM-DD)"),
    "datetime_type": translatable("a date and time are expected"),
    "datetime_parsing": translatable("a date and time are expected"),
    "datetime_from_date_parsing": translatable("a date and time are expected"),
    "timezone_aware": translatable("a time zone is expected"),
    "url_parsing": translatable("a URL is expected"),
    "url_scheme": translatable("a URL is expected"),
    "json_invalid": translatable("the JSON is not valid"),
    "extra_forbidden": translatable("is not expected here"),
}


def validation_sentence(error: Mapping[str, Any]) -> str:
    """A pydantic error (an item of `ValidationError.errors()`) as the API says it (pydantic's
    `msg`), which the pages word as its validator's Sentence (without pydantic's `Value error, `)
    or as the table's for its type; pydantic's `msg` alone, in English, for a type the table
    does not know."""
    said = str(error.get("msg", ""))
    ctx = error.get("ctx") or {}
    reason = ctx["error"].args[0] if isinstance(ctx.get("error"), ValueError) and (
        ctx["error"].args) else None
    if error.get("type") == "value_error" and isinstance(reason, Sentence):
        return Sentence.worded(said, reason.message, **reason.values)
    message = _VALIDATION.get(str(error.get("type")), "")
    names = re.findall(r"%\((\w+)\)s", message)
    if not message or any(name not in ctx for name in names):
        return said
    return Sentence.worded(said, message, **{name: ctx[name] for name in names})
