"""The translation catalogues: the committed .mo says what its .po says, every string of the
pages (the domain's refusal titles and Slurm's pending reasons included) has its French
translation, and the .pot holds every string the pages use."""

from __future__ import annotations

import ast
import gettext
import io
import re
from importlib import import_module
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

import consortium
import gateway
import quotas
from consortium.errors import DomainError
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
    # the domain's sentences the pages show: refusal titles, Slurm's pending reasons, the
    # refusals of a job's input
    for package in (consortium, quotas, gateway):
        used |= {message for _, _, message, _, _ in extract_from_dir(
            str(Path(package.__file__).parent), method_map=[("**.py", "python")],
            keywords={"translatable": None})}
    assert set(reasons.REASONS.values()) <= used
    # every refusal a page may show has its title marked, wherever its class is defined
    import_module("gateway.api.app")  # every package, so every DomainError subclass
    titles = {cls.title for cls in _subclasses(DomainError)}
    assert titles <= used, f"titles not marked translatable: {titles - used}"
    missing = {m if isinstance(m, str) else m[0] for m in used} - {
        m.id if isinstance(m.id, str) else m.id[0] for m in catalog}
    assert not missing, f"not in the catalogue (run scripts/ui-catalogues.sh): {missing}"


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found | {cls}


def test_the_gateway_reads_the_french_catalogue() -> None:
    assert isinstance(i18n.translations("fr"), gettext.GNUTranslations)
    assert i18n.translations("fr").gettext("Sign in") == "Se connecter"


def test_every_translation_keeps_the_values_of_its_message() -> None:
    """A placeholder lost or misspelt in a translation would fail (KeyError) or drop a value
    (a line number, a limit) on the French pages only."""
    with PO.open("rb") as po:
        catalog = read_po(po, locale="fr")
    placeholder = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([sdrf%])")
    for message in catalog:
        ids = message.id if isinstance(message.id, list | tuple) else (message.id,)
        strings = (message.string if isinstance(message.string, list | tuple)
                   else (message.string,))
        if not ids[0] or "python-format" not in message.flags:
            continue
        wanted = sorted(placeholder.findall(ids[-1]))
        for string in strings:
            assert sorted(placeholder.findall(string)) == wanted, (ids[0], string)


def test_every_sentence_written_in_the_code_is_in_the_catalogue() -> None:
    """Babel's extraction skips a Sentence written inside another's arguments: every literal
    message of `Sentence(...)` and `translatable(...)` is looked for in the catalogue itself."""
    with PO.open("rb") as po:
        known = {m.id for m in read_po(po, locale="fr") if m.id}
    written = set()
    for package in (consortium, quotas, gateway):
        for path in Path(str(package.__file__)).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("Sentence", "translatable") and node.args
                        and isinstance(node.args[0], ast.Constant)):
                    written.add((node.args[0].value, f"{path.name}:{node.lineno}"))
    assert len(written) > 200
    assert [w for w in written if w[0] not in known] == []
