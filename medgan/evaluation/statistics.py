"""Patient-level statistics of the segmentation benchmark.

Every arm is trained with the same seeds and scored on the same held-out patients. Seeds are
not independent evidence about patients, so each metric is first averaged over the seeds of a
patient; the *patient* is the unit: means, standard deviations, the cluster bootstrap CI (the
patients are resampled, each with its seed-average) and the paired tests (difference to the
reference arm per patient: bootstrap CI of its mean and a Wilcoxon signed-rank test) all run
over patients. The per-seed means are kept as a separate table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medgan.evaluation.metrics import bootstrap_mean_ci

Units = dict[tuple[str, int], Mapping[str, Any]]  # (case_id, seed) -> metrics


def patient_means(units: Units, metric: str) -> dict[str, float]:
    """case_id -> mean of the finite ``metric`` values over its seeds (NaN when none)."""
    values: dict[str, list[float]] = {}
    for (cid, _), m in units.items():
        values.setdefault(cid, []).append(float(m[metric]))
    out = {}
    for cid, v in values.items():
        x = np.asarray(v, dtype=np.float64)
        x = x[np.isfinite(x)]
        out[cid] = float(x.mean()) if len(x) else float("nan")
    return out


def cluster_bootstrap_ci(units: Units, metric: str, n_resamples: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean over patients of the seed-averaged ``metric`` with a bootstrap CI over patients;
    ``n`` is the number of patients."""
    return bootstrap_mean_ci(list(patient_means(units, metric).values()), n_resamples,
                             confidence, seed)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN with fewer than 2
    non-zero finite differences; 1.0 when all are zero)."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) and not np.any(d):
        return 1.0
    if np.count_nonzero(d) < 2:
        return float("nan")
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_patient_difference(units: Units, reference: Units, metric: str,
                              n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Per-patient difference (arm - reference) of seed-averaged ``metric`` over the seeds both
    have: ``{mean, low, high, n, wilcoxon_p}`` (n = patients)."""
    common = set(units) & set(reference)
    a = patient_means({k: units[k] for k in common}, metric)
    b = patient_means({k: reference[k] for k in common}, metric)
    diffs = [a[c] - b[c] for c in sorted(a) if np.isfinite(a[c]) and np.isfinite(b[c])]
    out = bootstrap_mean_ci(diffs, n_resamples, seed=seed)
    out["wilcoxon_p"] = wilcoxon_p(diffs)
    return out


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def arm_statistics(units: Units, reference: Units | None, n_bootstrap: int, seed: int = 0
                   ) -> dict[str, Any]:
    """Patient-level statistics of one arm (and its difference to ``reference``)."""
    dice = patient_means(units, "dice")
    hd = patient_means(units, "hd95_mm")
    d_mean, d_sd = _mean_sd(list(dice.values()))
    h_mean, h_sd = _mean_sd(list(hd.values()))
    n_units = len(units)
    found, missed, false = (sum(int(m[f]) for m in units.values())
                            for f in ("found", "missed", "false"))
    seeds = sorted({s for _, s in units})
    out: dict[str, Any] = {
        "n_patients": len(dice), "n_seeds": len(seeds), "n_units": n_units,
        "dice_mean": d_mean, "dice_sd_patients": d_sd,
        "dice_ci": cluster_bootstrap_ci(units, "dice", n_bootstrap, seed=seed),
        "hd95_mm_mean": h_mean, "hd95_mm_sd_patients": h_sd,
        "hd95_undefined": int(sum(not np.isfinite(float(m["hd95_mm"])) for m in units.values())),
        "lesions_found": found, "lesions_missed": missed, "false_lesions": false,
        "lesion_sensitivity": found / (found + missed) if found + missed else float("nan"),
        "false_lesions_per_scan": false / n_units if n_units else float("nan"),
        "dice_per_seed": {str(s): float(np.mean([float(m["dice"]) for (c, k), m in units.items()
                                                  if k == s])) for s in seeds},
    }
    if reference is not None:
        for metric in ("dice", "hd95_mm"):
            out[f"{metric}_diff_vs_reference"] = paired_patient_difference(
                units, reference, metric, n_bootstrap, seed)
    return out


def _units(runs: Sequence[Mapping[str, Any]], key: str) -> Units:
    return {(c["case_id"], int(r["seed"])): c for r in runs for c in r.get(key, [])}


def _pick(stats: dict[str, dict[str, Any]]) -> None:
    """Mark, per lesion-adding arm, the ratio with the best mean validation Dice."""
    best: dict[str, tuple[float, str]] = {}
    for name, s in stats.items():
        if s["ratio"] is None:
            continue
        v = s["validation_dice"]
        score = v if v is not None and np.isfinite(v) else -np.inf
        if s["arm"] not in best or score > best[s["arm"]][0]:
            best[s["arm"]] = (score, name)
    for name, s in stats.items():
        s["picked"] = s["ratio"] is None or best.get(s["arm"], (0, None))[1] == name


def summarise(runs: Sequence[Mapping[str, Any]], reference: str = "real+aug",
              n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """regime -> run name (arm or arm@ratio) -> statistics; ``postprocessed`` holds the same
    after dropping small components, when the runs have them."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in runs:
        name = str(r.get("run", r["arm"]))
        grouped.setdefault(str(r["regime"]), {}).setdefault(name, []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for regime, by_run in grouped.items():
        ref_runs = by_run.get(reference)
        summary[regime] = {}
        for name, arm_runs in by_run.items():
            first = arm_runs[0]
            stats: dict[str, Any] = {"arm": first["arm"], "ratio": first.get("ratio") or None}
            for key, label in (("cases", None), ("cases_postprocessed", "postprocessed")):
                if not any(r.get(key) for r in arm_runs):
                    continue
                ref = _units(ref_runs, key) if ref_runs and name != reference else None
                block = arm_statistics(_units(arm_runs, key), ref, n_bootstrap, seed)
                if label is None:
                    stats.update(block)
                else:
                    stats[label] = block
            val = [r.get("validation_dice") for r in arm_runs]
            val = [float(v) for v in val if v is not None and np.isfinite(v)]
            stats.update(
                n_runs=len(arm_runs),
                validation_dice=float(np.mean(val)) if val else None,
                best_iteration=[int(r.get("best_iteration", 0)) for r in arm_runs],
                added_lesion_fraction=float(np.mean(
                    [r.get("added_lesion_fraction", 0.0) for r in arm_runs])),
                train_cases=len(first["train_cases"]),
                validation_cases=len(first.get("validation_cases", [])),
                seconds_per_run=float(np.mean(
                    [r["train_seconds"] + r["test_seconds"] for r in arm_runs])))
            summary[regime][name] = stats
        _pick(summary[regime])
    return summary
