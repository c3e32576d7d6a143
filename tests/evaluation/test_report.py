"""medgan.evaluation.report: summary statistics, the markdown table and the report files.

The runs are made up: three arms over two seeds and three test cases, where the GAN arm scores
exactly 0.1 Dice above the reference on every unit, so the paired difference is known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medgan.errors import OutputError
from medgan.evaluation.report import (
    json_safe,
    markdown,
    summarise,
    write_report_files,
    write_reports,
)

REFERENCE = "real+aug"
ARMS = {"real": -0.05, REFERENCE: 0.0, "real+aug+gan": 0.1}  # Dice offset of each arm
ADDED = {"real": 0.0, REFERENCE: 0.0, "real+aug+gan": 0.3}
CASES = ("c1", "c2", "c3")
SEEDS = (0, 1)


def unit(arm: str, case: int, seed: int) -> dict[str, Any]:
    hd = float("inf") if (arm == "real" and case == 0) else 10.0 - case - seed
    return {"case_id": CASES[case], "dice": 0.5 + 0.05 * case + 0.01 * seed + ARMS[arm],
            "hd95_mm": hd, "found": 2, "missed": case % 2, "false": int(arm == "real")}


def make_runs(regime: str = "2") -> list[dict[str, Any]]:
    return [{"regime": regime, "arm": arm, "seed": seed,
             "cases": [unit(arm, c, seed) for c in range(len(CASES))],
             "train_cases": ["t1", "t2"], "train_seconds": 3.0, "test_seconds": 1.0,
             "added_lesion_fraction": ADDED[arm]}
            for arm in ARMS for seed in SEEDS]


def protocol() -> dict[str, Any]:
    return {"settings": {"channels": [8, 16], "strides": [2], "iterations": 10,
                         "batch_size": 2, "patch_size": 32, "ratio": 0.5, "n_bootstrap": 50},
            "split": {"test": list(CASES), "regimes": {"2": ["t1", "t2"]}}, "fast": True,
            "command": "medgan evaluate segmentation --fast", "medgan_version": "0.2.0",
            "data": "/data/dataset.json", "config": {"modality": "ct", "spatial_dims": 2},
            "checkpoint_sha256": "ab" * 32, "seeds": list(SEEDS)}


def dice_of(arm: str) -> np.ndarray:
    return np.array([unit(arm, c, s)["dice"] for c in range(len(CASES)) for s in SEEDS])


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
def test_summarise_pools_units_and_pairs_against_the_reference() -> None:
    summary = summarise(make_runs(), REFERENCE, n_bootstrap=50)
    assert list(summary) == ["2"] and list(summary["2"]) == list(ARMS)
    for arm, stats in summary["2"].items():
        dice = dice_of(arm)
        assert stats["n_units"] == 6 and stats["n_runs"] == 2 and stats["train_cases"] == 2
        assert stats["dice_mean"] == pytest.approx(dice.mean())
        assert stats["dice_std"] == pytest.approx(dice.std(ddof=1))
        assert stats["lesions_found"] == 12 and stats["lesions_missed"] == 2
        assert stats["lesion_sensitivity"] == pytest.approx(12 / 14)
        assert stats["added_lesion_fraction"] == pytest.approx(ADDED[arm])
        assert stats["seconds_per_run"] == pytest.approx(4.0)
        assert stats["dice_ci"]["low"] <= stats["dice_mean"] <= stats["dice_ci"]["high"]
        assert ("dice_diff_vs_reference" in stats) == (arm != REFERENCE)
    gan = summary["2"]["real+aug+gan"]["dice_diff_vs_reference"]
    assert (gan["mean"], gan["low"], gan["high"], gan["n"]) == pytest.approx((0.1, 0.1, 0.1, 6))
    real = summary["2"]["real"]
    assert real["hd95_undefined"] == 2 and real["false_lesions"] == 6  # c1 under both seeds
    assert real["hd95_mm_diff_vs_reference"]["n"] == 4  # pairs with an undefined HD95 dropped
    assert np.isfinite(real["hd95_mm_mean"])


def test_summarise_without_the_reference_arm_has_no_differences() -> None:
    runs = [r for r in make_runs() if r["arm"] != REFERENCE]
    summary = summarise(runs, REFERENCE, n_bootstrap=20)
    assert not any("dice_diff_vs_reference" in s for s in summary["2"].values())


# ---- markdown ----
def test_markdown_table_rows() -> None:
    summary = summarise(make_runs(), REFERENCE, n_bootstrap=50)
    text = markdown(protocol(), summary, REFERENCE)
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| arm")}
    assert list(rows) == list(ARMS)
    for arm, line in rows.items():
        dice = dice_of(arm)
        assert line.startswith(f"| {arm} | {dice.mean():.3f} ± {dice.std(ddof=1):.3f} | ")
        assert line.endswith(" | 6 |")
        assert f"| 12 / 2 / {6 * int(arm == 'real')} |" in line
    assert "| (reference) |" in rows[REFERENCE]
    assert "| +0.100 [+0.100, +0.100] |" in rows["real+aug+gan"]
    assert f"| Δ Dice vs {REFERENCE} [95% CI] |" in text
    assert "## Regime `2` (2 training patients)" in text
    assert "received an added lesion: real+aug+gan 30 %." in text
    assert "mode: fast (smoke test" in text and f"`{'ab' * 32}`" in text
    assert "* test (3): c1, c2, c3" in text


def test_markdown_of_a_run_without_checkpoint() -> None:
    text = markdown({**protocol(), "checkpoint_sha256": None, "fast": False, "command": None},
                    summarise(make_runs(), REFERENCE, n_bootstrap=20), REFERENCE)
    assert "checkpoint SHA-256: `none`" in text and "mode: full" in text
    assert "medgan.evaluation.evaluate_segmentation(...)" in text


# ---- files ----
def strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_write_reports_writes_every_file(tmp_path) -> None:
    image = torch.rand(1, 16, 16, 4) * 2 - 1
    label = torch.zeros(1, 16, 16, 4)
    label[0, 4:9, 4:9, 2] = 1
    pred = np.zeros((16, 16), bool)
    pred[5:10, 5:10] = True
    examples = {("2", arm): {"c1/2": pred} for arm in ARMS}
    cases = [{"case_id": "c1", "image": image, "label": label}]
    summary = write_reports(tmp_path, protocol(), make_runs(), examples, cases, [("c1", 2)],
                            REFERENCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dice.png", "examples.png", "report.json", "report.md"]
    report = strict_json(tmp_path / "report.json")
    assert report["reference_arm"] == REFERENCE and len(report["runs"]) == 6
    assert report["summary"]["2"]["real+aug+gan"]["dice_mean"] == pytest.approx(
        summary["2"]["real+aug+gan"]["dice_mean"])
    assert report["runs"][0]["cases"][0]["hd95_mm"] is None  # inf written as null
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| real+aug+gan | " in text and "![Dice per arm and regime](dice.png)" in text
    for png in ("dice.png", "examples.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
