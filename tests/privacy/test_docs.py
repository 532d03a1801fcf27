"""docs/privacy-index.md documents the same scoring table as the code: every reason code with its
axis, slot, points and whether the header carries it, the axis weights and the grade bands."""

from __future__ import annotations

import re
from pathlib import Path

from caliproxy.privacy.scoring import AXIS_WEIGHTS, GRADE_FLOORS, REASONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "privacy-index.md").read_text(
    encoding="utf-8"
)


def _rows(first_column: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with ``first_column``."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_reason_code_is_documented_with_its_numbers() -> None:
    documented = {
        row[0].strip("`"): (row[1], row[2], int(row[3]), row[4] == "yes", row[5])
        for row in _rows("Code")
    }
    in_code = {
        code: (spec.axis.value, spec.slot, spec.points, not spec.note, spec.meaning)
        for code, spec in REASONS.items()
    }
    assert documented == in_code


def test_axis_weights_and_grades_are_documented() -> None:
    weights = {row[0]: int(row[2].rstrip(" %")) for row in _rows("Axis")}
    assert weights == {axis.value: weight for axis, weight in AXIS_WEIGHTS.items()}
    bands = {row[0]: int(re.match(r"\d+", row[1]).group()) for row in _rows("Grade")}  # type: ignore[union-attr]
    assert bands == dict(GRADE_FLOORS)
