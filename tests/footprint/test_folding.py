"""The transparency report's folding: no published figure, and no difference of two, is the
value of fewer than 3 organisations, over random consortia and every period of their months."""

from __future__ import annotations

from collections import defaultdict
from itertools import permutations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.footprint.folding import MIN_MEMBERS, OTHER, Piece, fold_month, members

MONTHS = ("2026-01", "2026-02", "2026-03")
KINDS = ("public_body", "research", "company")
DOMAINS = ("health", "culture", "mobility", "education", "other")
BASE = 4  # each piece's value a distinct power of 4: a sum of pieces names its pieces


@st.composite
def consortia(draw: st.DrawFn) -> list[Piece]:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=10))
    found = draw(st.sets(st.tuples(st.sampled_from(MONTHS), st.integers(0, len(kinds) - 1),
                                   st.sampled_from(DOMAINS)), max_size=40))
    return [Piece(month, member, kinds[member], domain) for month, member, domain in found]


def published(pieces: list[Piece], months: tuple[str, ...]) -> list[frozenset[Piece]]:
    """Every figure of the report over `months`, as the set of pieces it sums."""
    figures: dict[tuple[str, str], set[Piece]] = defaultdict(set)
    for month in months:
        mine = [p for p in pieces if p.month == month]
        folding = fold_month(mine)
        if folding.withheld:
            continue
        for piece in mine:
            figures["total", ""].add(piece)
            for breakdown in ("domain", "kind"):
                figures[breakdown, folding.group(breakdown, piece)].add(piece)
    return [frozenset(f) for f in figures.values()]


def decode(value: int, order: list[Piece]) -> frozenset[Piece] | None:
    """The pieces whose values sum to `value`, if it is such a sum (base-4 digits 0 or 1)."""
    found = set()
    for piece in order:
        value, digit = divmod(value, BASE)
        if digit > 1:
            return None
        if digit:
            found.add(piece)
    return frozenset(found) if value == 0 else None


@settings(max_examples=300, deadline=None)
@given(consortia())
def test_no_figure_or_difference_of_two_is_fewer_than_three_members(pieces: list[Piece]) -> None:
    order = sorted(pieces)
    worth = {p: BASE ** i for i, p in enumerate(order)}
    figures = [sum(worth[p] for p in f)
               for i in range(len(MONTHS)) for j in range(i, len(MONTHS))
               for f in published(pieces, MONTHS[i:j + 1])]
    values = set(figures)
    for value in values | {a - b for a, b in permutations(values, 2) if a > b}:
        revealed = decode(value, order)
        assert revealed is None or not 0 < members(revealed) < MIN_MEMBERS, (
            f"{value} is the value of {sorted({p.member for p in revealed})} alone")


def test_a_lone_company_is_folded_with_the_next_smallest_group() -> None:
    pieces = [Piece("2026-01", m, "research", "health") for m in range(3)]
    pieces += [Piece("2026-01", m, "public_body", "culture") for m in range(3, 7)]
    pieces += [Piece("2026-01", 7, "company", "health")]

    folding = fold_month(pieces)

    # health has 4 members, culture 4, but company 1: it would be total - research - public
    assert folding.published["domain"] == {"health", "culture"}
    assert folding.published["kind"] == {"public_body"}
    assert folding.group("kind", pieces[-1]) == folding.group("kind", pieces[0]) == OTHER


def test_a_group_inside_another_is_folded_when_they_differ_by_one_member() -> None:
    # companies A, B, C (health) and D (culture, with research E, F, G): companies minus
    # health would be D's culture jobs
    kinds = "company " * 4 + "research " * 3 + "public_body " * 3
    domains = ["health"] * 3 + ["culture"] * 4 + ["mobility"] * 3
    pieces = [Piece("2026-01", m, kind, domain)
              for m, (kind, domain) in enumerate(zip(kinds.split(), domains, strict=True))]

    folding = fold_month(pieces)

    assert not ("health" in folding.published["domain"]
                and "company" in folding.published["kind"])
    assert published(pieces, ("2026-01",))  # the rest is still shown
    worth = {p: BASE ** i for i, p in enumerate(sorted(pieces))}
    figures = {sum(worth[p] for p in f) for f in published(pieces, ("2026-01",))}
    assert worth[pieces[3]] not in {a - b for a in figures for b in figures}


def test_a_month_of_two_members_is_withheld() -> None:
    folding = fold_month([Piece("2026-01", 1, "company", "health"),
                          Piece("2026-01", 2, "research", "health")])

    assert folding.withheld
