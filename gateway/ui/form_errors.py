"""The pages' forms: what was posted, and the API's refusals shown beside the inputs they
concern. The forms name their inputs after the API's field paths (`parameters.epochs`,
`identities.0.unix_user`), so an error's `loc` is the name of its input, whichever of pydantic
or the domain raised it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any

from babel.support import LazyProxy
from fastapi import Depends, Request
from pydantic import ValidationError

from consortium.errors import DomainError
from consortium.texts import validation_sentence
from gateway.api.errors import status_for
from gateway.ui.i18n import in_viewers_language, lazy_gettext

# a message shown on a page: text, or text translated when the page is rendered
Message = str | LazyProxy

GENERAL = ""  # the form as a whole


def input_name(loc: Sequence[str | int]) -> str:
    """("body", "parameters", "epochs") is `parameters.epochs`; ("body",) is the form's."""
    return ".".join(str(p) for p in loc if p != "body")


def by_input(errors: Sequence[Mapping[str, Any]],
             inputs: Collection[str]) -> dict[str, list[Message]]:
    """Each message under its input's name; those of no input of the form under GENERAL, with
    their path so that they still say what they concern."""
    found: dict[str, list[Message]] = {}
    for error in errors:
        name = input_name(error.get("loc", ()))
        message = in_viewers_language(error.get("msg", ""))
        if name not in inputs:
            if name:
                message = lazy_gettext("%(input)s: %(problem)s", input=name, problem=message)
            name = GENERAL
        found.setdefault(name, []).append(message)
    return found


def of_validation(exc: ValidationError, inputs: Collection[str]) -> dict[str, list[Message]]:
    return by_input([{"loc": e["loc"], "msg": validation_sentence(e)} for e in exc.errors()],
                    inputs)


def refusal_text(exc: DomainError) -> LazyProxy:
    """A domain refusal as a page says it: its title (the problem type's, `Quota exceeded`),
    then its detail, both in the viewer's language (a detail that is no Sentence as the API
    words it)."""
    return lazy_gettext("%(title)s: %(detail)s", title=lazy_gettext(exc.title),
                        detail=in_viewers_language(exc.detail))


def of_refusal(exc: DomainError, inputs: Collection[str]) -> dict[str, list[Message]]:
    """A domain refusal: its field errors when it has some (JobInputInvalid), else the
    refusal for the whole form."""
    errors = exc.extra.get("errors")
    if isinstance(errors, list) and errors:
        return by_input(errors, inputs)
    return {GENERAL: [refusal_text(exc)]}


def refusal(exc: ValidationError | DomainError,
            inputs: Collection[str]) -> tuple[int, dict[str, list[Message]]]:
    """The status and the messages by input of a form refused by pydantic (422) or by the
    domain (its status, as the API answers it)."""
    if isinstance(exc, ValidationError):
        return 422, of_validation(exc, inputs)
    return status_for(exc), of_refusal(exc, inputs)


async def posted_form(request: Request) -> dict[str, str]:
    """A posted form's text inputs by name (its inputs are named by the API's fields, which a
    route cannot list as parameters); a dependency, so that sync routes get it too."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


PostedForm = Annotated[dict[str, str], Depends(posted_form)]
