"""Sentences: the API's English text, and the message and values the pages translate; the same
refusal said by the API in English and by a French page in French."""

from __future__ import annotations

import copy

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from consortium.texts import Sentence, validation_sentence
from gateway.jobs import directives
from gateway.ui import form_errors, i18n
from quotas.errors import QuotaExceeded


class _Form(BaseModel):
    nodes: int = Field(ge=1)
    workdir: str = ""
    colour: str = ""

    @field_validator("workdir")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(Sentence("must be relative to the member's work directory"))
        return value

    @field_validator("colour")
    @classmethod
    def _plain(cls, value: str) -> str:
        if value == "mauve":
            raise ValueError("no mauve")  # a plain ValueError: English everywhere
        return value


def _errors(**fields: object) -> dict[str, dict[str, object]]:
    with pytest.raises(ValidationError) as raised:
        _Form.model_validate(fields)
    return {str(e["loc"][0]): dict(e) for e in raised.value.errors()}


def _in(locale: str, text: object) -> str:
    token = i18n.current_locale.set(locale)
    try:
        return str(i18n.in_viewers_language(text) if isinstance(text, str) else text)
    finally:
        i18n.current_locale.reset(token)


def test_a_sentence_is_its_english_text_and_keeps_what_a_page_translates() -> None:
    inner = Sentence("only a count is taken (GPUs are counted, not typed)")
    said = Sentence("line %(line)s: #SBATCH %(option)s: %(problem)s", line=4,
                    option="--gpus=a100:2", problem=inner)
    assert said == ("line 4: #SBATCH --gpus=a100:2: only a count is taken (GPUs are counted, "
                    "not typed)")
    assert said.message == "line %(line)s: #SBATCH %(option)s: %(problem)s"
    kept = copy.deepcopy(said)
    assert kept == said and isinstance(kept, Sentence)
    assert kept.message == said.message and kept.values == said.values
    assert _in("en", said) == said
    assert _in("fr", said) == ("ligne 4 : #SBATCH --gpus=a100:2 : seul un nombre est accepté "
                               "(les GPU sont comptés, pas typés)")
    assert "%(spec)r" in Sentence("%(spec)r: at most %(most)s tasks", spec="0-9", most=3).message
    assert Sentence("%(spec)r: at most %(most)s tasks", spec="0-9", most=3) == (
        "'0-9': at most 3 tasks")


def test_pydantic_errors_keep_the_apis_words_and_are_translated_on_the_pages() -> None:
    errors = _errors(nodes=0, workdir="/etc", colour="mauve")
    bound = validation_sentence(errors["nodes"])
    assert bound == errors["nodes"]["msg"] == "Input should be greater than or equal to 1"
    assert _in("en", bound) == "must be at least 1"
    assert _in("fr", bound) == "doit valoir au moins 1"
    ours = validation_sentence(errors["workdir"])
    assert ours == "Value error, must be relative to the member's work directory"
    assert _in("fr", ours) == "doit être relatif au répertoire de travail du membre"
    assert _in("en", ours) == "must be relative to the member's work directory"
    plain = validation_sentence(errors["colour"])
    assert plain == "Value error, no mauve" and not isinstance(plain, Sentence)
    assert _in("fr", plain) == "Value error, no mauve"


def test_an_unknown_error_type_or_a_missing_value_is_pydantics_own_message() -> None:
    unknown = {"type": "uuid_parsing", "loc": ("x",), "msg": "Input should be a valid UUID"}
    assert validation_sentence(unknown) == "Input should be a valid UUID"
    no_ctx = {"type": "greater_than_equal", "loc": ("x",), "msg": "Input should be >= 1"}
    assert not isinstance(validation_sentence(no_ctx), Sentence)


def test_a_refused_directive_is_english_for_the_api_and_french_on_a_french_page() -> None:
    problems = []
    for script in ("#!/bin/bash\n#SBATCH --exclusive\ntrue\n",
                   "#!/bin/bash\n\n#SBATCH --time=0\ntrue\n"):
        with pytest.raises(directives.DirectivesRefused) as refused:
            directives.from_script(script)
        problems.extend(refused.value.problems)
    first, second = problems
    assert first.startswith("line 2: #SBATCH --exclusive is not allowed: it widens the job "
                            "beyond its quote; allowed: --time,")
    assert _in("fr", first).startswith(
        "ligne 2 : #SBATCH --exclusive n'est pas accepté : il élargirait le job au-delà de son "
        "devis ; acceptées : --time,")
    assert second == ("line 3: #SBATCH --time=0: a time of 0 means no limit in Slurm; give a "
                      "limit")
    assert _in("fr", second) == ("ligne 3 : #SBATCH --time=0 : une durée de 0 veut dire sans "
                                 "limite pour Slurm : donnez une limite")


def test_a_refusal_of_an_input_the_form_lacks_is_shown_for_the_form_naming_it() -> None:
    shown = form_errors.by_input(
        [{"loc": ["body", "environment", "SLURM_X"], "msg": Sentence("required")},
         {"loc": ["body", "name"], "msg": Sentence("a text is expected")}], inputs={"name"})
    assert _in("fr", shown[form_errors.GENERAL][0]) == "environment.SLURM_X : obligatoire"
    assert _in("en", shown[form_errors.GENERAL][0]) == "environment.SLURM_X: required"
    assert _in("fr", shown["name"][0]) == "un texte est attendu"


def test_an_amount_is_the_apis_figure_and_written_as_the_viewers_language_writes_numbers(
) -> None:
    refusal = QuotaExceeded(requested_msu=1_234_500, available_msu=0, held_msu=12_000,
                            open_holds=2)
    assert refusal.detail == ("requested 1234.500 SU, available 0.000 SU, held 12.000 SU by "
                              "2 pending or running job(s)")  # the API's words, unchanged
    assert _in("fr", refusal.detail) == ("demandé 1\u202f234,5 SU, disponible 0,0 SU, "
                                          "réservé 12,0 SU par 2 job(s) en attente ou en cours")
    assert _in("en", refusal.detail).startswith("requested 1,234.5 SU, available 0.0 SU, ")
