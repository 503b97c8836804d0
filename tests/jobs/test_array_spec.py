"""Slurm's --array spec: parsed to task ids, written back in a form sbatch reads the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.jobs.arrays import MAX_TASK_ID, MAX_TASKS, format_spec, parse_array


@pytest.mark.parametrize(("spec", "ids", "limit", "canonical"), [
    ("0-5", range(6), None, "0-5"),
    ("0-15:2%4", range(0, 16, 2), 4, "0-14:2%4"),
    ("1,3,5-7", [1, 3, 5, 6, 7], None, "1-5:2,6-7"),
    (" 7 ", [7], None, "7"),
    ("0-1000:250", [0, 250, 500, 750, 1000], None, "0-1000:250"),
    ("4,4,0-1", [0, 1, 4], None, "0-1,4"),
])
def test_specs_parse_to_their_tasks(spec: str, ids: range | list[int], limit: int | None,
                                    canonical: str) -> None:
    parsed = parse_array(spec)
    assert parsed.task_ids == tuple(ids)
    assert parsed.max_running == limit
    assert parsed.tasks == len(ids)
    assert str(parsed) == canonical


@pytest.mark.parametrize("spec", [
    "", "5-1", "0-4:0", "a-b", "0-4%0", "0-4%", "1;2", "0-1001", f"0-{MAX_TASK_ID + 1}", "-1",
    "0-4%2%3", "1,,2", "0x10", "٣", "0-٣", "1,2٣", "0-4:²", "0-4%٢", "0-4%²",
    f"0-4%{MAX_TASKS + 1}", "0-4%" + "9" * 5000,
])
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"task|range|%|0 to"):
        parse_array(spec)


@given(st.sets(st.integers(0, MAX_TASK_ID), min_size=1, max_size=MAX_TASKS),
       st.none() | st.integers(1, 50))
def test_the_canonical_spec_names_the_same_tasks(ids: set[int], limit: int | None) -> None:
    task_ids = tuple(sorted(ids))
    written = format_spec(task_ids, limit)
    again = parse_array(written)
    assert again.task_ids == task_ids
    assert again.max_running == limit
