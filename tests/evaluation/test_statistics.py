"""Patient-level statistics: seeds are averaged per patient before any interval or test."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.evaluation.statistics import (
    cluster_bootstrap_ci,
    paired_patient_difference,
    patient_means,
    summarise,
    wilcoxon_p,
)


def units(values: dict[str, list[float]]) -> dict:
    """(patient, seed) -> metrics with Dice ``values[patient][seed]``."""
    return {(p, s): {"dice": v, "hd95_mm": 1.0, "found": 1, "missed": 0, "false": 0}
            for p, vs in values.items() for s, v in enumerate(vs)}


def test_two_patients_give_the_full_range_whatever_the_seeds() -> None:
    # 2 patients (Dice 0 and 1, 3 identical seeds each): a resample of 2 patients has mean 0,
    # 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is exactly [0, 1].
    ci = cluster_bootstrap_ci(units({"a": [0.0] * 3, "b": [1.0] * 3}), "dice")
    assert ci["n"] == 2 and ci["mean"] == 0.5
    assert (ci["low"], ci["high"]) == (0.0, 1.0)


def test_interval_width_matches_the_patient_standard_error() -> None:
    rng = np.random.default_rng(1)
    per_patient = rng.normal(0.7, 0.1, 200)
    # seeds add noise that averages out per patient; the interval must follow patients only
    values = {f"p{i}": list(m + rng.normal(0, 1e-4, 3)) for i, m in enumerate(per_patient)}
    ci = cluster_bootstrap_ci(units(values), "dice", n_resamples=4000)
    se = per_patient.std(ddof=1) / np.sqrt(len(per_patient))
    assert ci["n"] == 200
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_patient_means_average_finite_seeds() -> None:
    u = units({"a": [0.2, float("nan"), 0.4], "b": [float("nan")] * 2})
    means = patient_means(u, "dice")
    assert means["a"] == pytest.approx(0.3) and np.isnan(means["b"])


def test_paired_difference_is_over_patients_with_wilcoxon() -> None:
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    ref = {f"p{i}": list(rng.uniform(0.5, 0.9, 3)) for i in range(12)}
    arm = {p: [v + 0.05 + 0.01 * i for i, v in enumerate(vs)] for p, vs in ref.items()}
    out = paired_patient_difference(units(arm), units(ref), "dice")
    assert out["n"] == 12 and out["mean"] == pytest.approx(0.06)
    diffs = [np.mean(arm[p]) - np.mean(ref[p]) for p in sorted(ref)]
    assert out["wilcoxon_p"] == pytest.approx(wilcoxon(diffs).pvalue)
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and np.isnan(wilcoxon_p([0.1]))


def test_ratio_is_picked_on_validation_not_test() -> None:
    def run(arm: str, ratio: float | None, val: float, test: float) -> dict:
        name = arm if ratio is None else f"{arm}@{ratio:g}"
        return {"regime": "5", "arm": arm, "run": name, "ratio": ratio or 0.0, "seed": 0,
                "validation_dice": val, "train_cases": ["x"], "train_seconds": 1,
                "test_seconds": 1, "cases": [{"case_id": "t", "dice": test, "hd95_mm": 1.0,
                                              "found": 1, "missed": 0, "false": 0}]}

    runs = [run("real+aug", None, 0.5, 0.5),
            run("real+aug+insert", 0.1, 0.6, 0.9),   # best on test
            run("real+aug+insert", 0.2, 0.7, 0.4)]   # best on validation
    stats = summarise(runs)["5"]
    assert stats["real+aug+insert@0.2"]["picked"] and not stats["real+aug+insert@0.1"]["picked"]
    assert stats["real+aug"]["picked"]
