"""The translation catalogues: the committed .mo says what its .po says, every string of the
pages (Slurm's pending reasons included) has its French translation, and the .pot holds every
string the pages use."""

from __future__ import annotations

import gettext
import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from gateway.jobs import reasons
from gateway.ui import i18n

UI = Path(i18n.__file__).parent
PO = i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def _translations(catalog: Catalog) -> dict[object, tuple[str, ...]]:
    """The translated entries (plural forms as a tuple); the header left out."""
    out = {}
    for m in catalog:
        strings = tuple(m.string) if isinstance(m.string, list | tuple) else (m.string,)
        if m.id and not m.fuzzy and all(strings):
            out[tuple(m.id) if isinstance(m.id, list | tuple) else m.id] = strings
    return out


def test_compiled_french_catalogue_is_in_sync_with_its_po() -> None:
    compiled = io.BytesIO()
    with PO.open("rb") as po:
        write_mo(compiled, read_po(po, locale="fr"))
    compiled.seek(0)
    with MO.open("rb") as mo:
        assert _translations(read_mo(mo)) == _translations(read_mo(compiled)), (
            "run scripts/ui-catalogues.sh")


def test_every_string_of_the_pages_has_a_french_translation() -> None:
    with PO.open("rb") as po:
        catalog = read_po(po, locale="fr")
    untranslated = [m.id for m in catalog if m.id and not (
        all(m.string) if isinstance(m.string, tuple) else m.string)]
    assert not untranslated, untranslated
    used = {message for _, _, message, _, _ in extract_from_dir(
        str(UI), method_map=[("**/templates/**.html", "jinja2"), ("**.py", "python")],
        options_map={"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None})}
    # Slurm's pending reasons, shown on the job pages
    used |= {message for _, message, _, _ in extract_from_file(
        "python", reasons.__file__, keywords={"translatable": None})}
    assert len(used) > len(reasons.REASONS)
    missing = {m if isinstance(m, str) else m[0] for m in used} - {
        m.id if isinstance(m.id, str) else m.id[0] for m in catalog}
    assert not missing, f"not in the catalogue (run scripts/ui-catalogues.sh): {missing}"


def test_the_gateway_reads_the_french_catalogue() -> None:
    assert isinstance(i18n.translations("fr"), gettext.GNUTranslations)
    assert i18n.translations("fr").gettext("Sign in") == "Se connecter"
