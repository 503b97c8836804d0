#!/usr/bin/env bash
# The web interface's translation catalogues (gateway/ui/locale): extract the strings of the
# templates and of the code (lazy_gettext; `translatable` and `Sentence` for the domain's
# sentences: refusal titles and details, Slurm's pending reasons), merge them into each
# language's .po, compile the .mo files the gateway reads. Run after changing a page's text,
# then translate the new entries of gateway/ui/locale/fr/LC_MESSAGES/messages.po (empty
# msgstr) and run it again.
# English is the source language: it has no catalogue of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
BABEL="${PYBABEL:-.venv/bin/pybabel}"
LOCALE=gateway/ui/locale
"$BABEL" extract -F gateway/ui/babel.cfg -k lazy_gettext -k translatable -k Sentence --no-location \
    --sort-output --omit-header -o "$LOCALE/messages.pot" gateway consortium quotas
for lang in fr; do
    if [[ -f "$LOCALE/$lang/LC_MESSAGES/messages.po" ]]; then
        "$BABEL" update -i "$LOCALE/messages.pot" -d "$LOCALE" -l "$lang" --no-fuzzy-matching \
            --ignore-obsolete
    else
        "$BABEL" init -i "$LOCALE/messages.pot" -d "$LOCALE" -l "$lang"
    fi
done
"$BABEL" compile -d "$LOCALE" --statistics
