"""Entity tags of answers, and If-None-Match compared with them as RFC 9110 (13.1.2) says."""

from __future__ import annotations

import re

# an entity tag's opaque part, with or without its weakness indicator (RFC 9110, 8.8.3)
_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")')


def revision_etag(revision: int) -> str:
    """The strong entity tag of an answer that is a function of a revision alone."""
    return f'"{revision}"'


def matches_any(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match field value names `etag` (weak comparison: `W/` ignored on
    either side) or is `*`: the client's copy is current, and a GET answers 304."""
    if if_none_match.strip() == "*":
        return True
    opaque = _TAG.fullmatch(etag)
    wanted = opaque.group(1) if opaque else etag
    return wanted in _TAG.findall(if_none_match)
