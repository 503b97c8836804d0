"""Disclosure control of the public transparency report: no published figure, and no difference
of two published figures, is the value of fewer than MIN_MEMBERS organisations.

The report sums *pieces*: one member's jobs in one use-case domain in one calendar month. Each
month is folded on its own (`fold_month`), and a report over several months is the sum of its
months' reports, so two reports over any periods can only be compared month by month:

1. a month in which 1 or 2 members ran jobs is withheld whole (its total would be theirs);
2. in each breakdown (domain, member kind) a group of fewer than MIN_MEMBERS members is folded
   into "other" (the domain named "other" always is);
3. complementary suppression: while "other" holds 1 or 2 members, the smallest published group
   of that breakdown is folded into it too (else total minus the published groups reveals it);
4. across the breakdowns, the total and both "other"s: whenever one figure's pieces contain
   another's, what they differ by must be 0 or at least MIN_MEMBERS members, else the smaller
   published group of the two (or the smallest of all) is folded and the month is checked again.

Within a month every pairwise difference is then safe (4); across months the pieces are
disjoint, so a difference of two reports' figures is a sum of per-month differences, each 0 or
at least MIN_MEMBERS members. Sums of three or more figures are not covered: see
docs/sustainability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from itertools import permutations

MIN_MEMBERS = 3
OTHER = "other"


@dataclass(frozen=True, order=True)
class Piece:
    month: str  # YYYY-MM
    member: int
    kind: str
    domain: str


BREAKDOWNS: dict[str, Callable[[Piece], str]] = {
    "domain": lambda p: p.domain,
    "kind": lambda p: p.kind,
}
Cell = tuple[str, str]  # (breakdown, group)


def members(pieces: Iterable[Piece]) -> int:
    return len({p.member for p in pieces})


def _small(pieces: Iterable[Piece]) -> bool:
    return 0 < members(pieces) < MIN_MEMBERS


@dataclass(frozen=True)
class MonthFolding:
    """What a month publishes: per breakdown, the groups shown on their own; the rest is
    "other". `withheld`: nothing of the month is published."""

    published: dict[str, frozenset[str]]
    withheld: bool = False

    def group(self, breakdown: str, piece: Piece) -> str:
        key = BREAKDOWNS[breakdown](piece)
        return key if key in self.published[breakdown] else OTHER


def fold_month(pieces: Collection[Piece]) -> MonthFolding:
    """The folding of one month's pieces (rules 1 to 4 of the module's docstring)."""
    if _small(pieces):
        return MonthFolding({b: frozenset() for b in BREAKDOWNS}, withheld=True)
    cells: dict[Cell, frozenset[Piece]] = {}
    for breakdown, key in BREAKDOWNS.items():
        for group in {key(p) for p in pieces}:
            cells[breakdown, group] = frozenset(p for p in pieces if key(p) == group)
    published = {c for c, found in cells.items()
                 if c[1] != OTHER and members(found) >= MIN_MEMBERS}
    while True:
        _fold_complements(pieces, cells, published)
        culprit = _leak(pieces, cells, published)
        if culprit is None:
            return MonthFolding({b: frozenset(g for (b2, g) in published if b2 == b)
                                 for b in BREAKDOWNS})
        published.discard(culprit)


def _size(cells: dict[Cell, frozenset[Piece]], cell: Cell) -> tuple[int, Cell]:
    return members(cells[cell]), cell


def _other(pieces: Collection[Piece], breakdown: str, published: set[Cell]) -> frozenset[Piece]:
    key = BREAKDOWNS[breakdown]
    return frozenset(p for p in pieces if (breakdown, key(p)) not in published)


def _fold_complements(pieces: Collection[Piece], cells: dict[Cell, frozenset[Piece]],
                      published: set[Cell]) -> None:
    for breakdown in BREAKDOWNS:
        while _small(_other(pieces, breakdown, published)):
            shown = [c for c in published if c[0] == breakdown]
            if not shown:
                break
            published.discard(min(shown, key=lambda c: _size(cells, c)))


def _leak(pieces: Collection[Piece], cells: dict[Cell, frozenset[Piece]],
          published: set[Cell]) -> Cell | None:
    """A published group to fold because two figures differ by 1 or 2 members; None if none."""
    figures: list[tuple[Cell | None, frozenset[Piece]]] = [(None, frozenset(pieces))]
    figures += [(c, cells[c]) for c in published]
    figures += [(None, other) for b in BREAKDOWNS if (other := _other(pieces, b, published))]
    for (first, inner), (second, outer) in permutations(figures, 2):
        if inner < outer and _small(outer - inner):
            suspects = [c for c in (first, second) if c is not None] or list(published)
            return min(suspects, key=lambda c: _size(cells, c))
    return None
