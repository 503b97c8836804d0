"""Sentences meant for people, which the API gives in English and the web interface in the
viewer's language (scripts/ui-catalogues.sh extracts the `translatable` ones)."""

from __future__ import annotations


def translatable(message: str) -> str:
    """Marks a sentence for the web interface's catalogues; the text itself is unchanged."""
    return message
