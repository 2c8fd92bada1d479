"""Counts of generated hostile inputs per class: how many were tried and how many were refused
cleanly (a 4xx with a JSON error, or ProspectInputError, and no change in the database).
conftest.py prints the table at the end of a run; docs/development.md records it."""

from __future__ import annotations

from collections import defaultdict

TALLY: dict[str, list[int]] = defaultdict(lambda: [0, 0])


def tried(kind: str, *, refused: bool) -> None:
    counts = TALLY[kind]
    counts[0] += 1
    counts[1] += int(refused)


def table() -> list[str]:
    lines = ["| class of input | tried | refused cleanly |", "| --- | ---: | ---: |"]
    lines += [f"| {kind} | {n:,} | {ok:,} |" for kind, (n, ok) in sorted(TALLY.items())]
    return lines
