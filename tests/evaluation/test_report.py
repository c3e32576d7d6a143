"""medgan.evaluation.report: strict JSON and the report files (the statistics and the tables
are tested in test_statistics.py and, end to end, in test_segmentation.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medgan.errors import OutputError
from medgan.evaluation.report import (
    json_safe,
    write_report_files,
)

REFERENCE = "real+aug"
ARMS = {"real": -0.05, REFERENCE: 0.0, "real+aug+gan": 0.1}  # Dice offset of each arm
ADDED = {"real": 0.0, REFERENCE: 0.0, "real+aug+gan": 0.3}
CASES = ("c1", "c2", "c3")
SEEDS = (0, 1)


# ---- json_safe ----
@pytest.mark.parametrize(("value", "expected"), [
    (float("nan"), None), (float("inf"), None), (-float("inf"), None), (1.5, 1.5),
    (np.float32(0.25), 0.25), (np.float64("nan"), None), (np.int64(3), 3), ((1, 2), [1, 2]),
    ({1: (np.float32(1.0), float("nan"))}, {"1": [1.0, None]}), ("text", "text"), (None, None),
    ([{"a": [np.int32(2)]}], [{"a": [2]}]),
])
def test_json_safe(value, expected) -> None:
    out = json_safe(value)
    assert out == expected
    json.dumps(out, allow_nan=False)  # strict JSON


# ---- summarise ----


# ---- markdown ----


# ---- files ----
def strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_write_report_files(tmp_path) -> None:
    path = write_report_files(tmp_path / "new" / "report.json",
                              {"score": float("nan"), "n": np.int64(2)}, "# Report\n")
    assert path == tmp_path / "new" / "report.json"
    assert strict_json(path) == {"score": None, "n": 2}
    assert (tmp_path / "new" / "report.md").read_text() == "# Report\n"


def test_write_report_files_names_the_path_it_cannot_write(tmp_path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    target = tmp_path / "taken" / "report.json"
    with pytest.raises(OutputError, match="cannot write the report") as err:
        write_report_files(target, {}, "")
    assert str(target) in str(err.value)
