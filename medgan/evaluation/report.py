"""Summary tables, report files and figures of the segmentation benchmark.

The unit of analysis is one (test case, seed) pair: every arm is trained with the same seeds and
scored on the same held-out cases, so arm differences are paired over these units. Means and
standard deviations pool all units; confidence intervals are percentile bootstraps (NumPy,
seeded) of the mean, or of the mean paired difference to the reference arm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgan.atomic import write_json_atomic, write_text_atomic
from medgan.errors import OutputError
from medgan.evaluation.metrics import bootstrap_mean_ci, paired_bootstrap_ci
from medgan.visualize import save_figure

GT_RGB = np.array([0.1, 0.85, 0.2])
PRED_RGB = np.array([1.0, 0.15, 0.1])


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/Inf floats as None and tuples as lists (strict JSON)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _units(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """(case_id, seed) -> that case's metrics, for the runs of one arm and regime."""
    return {(c["case_id"], int(r["seed"])): c for r in runs for c in r["cases"]}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def _arm_summary(units: Mapping[tuple[str, int], Mapping[str, Any]],
                 ref: Mapping[tuple[str, int], Mapping[str, Any]] | None,
                 n_bootstrap: int, seed: int) -> dict[str, Any]:
    keys = sorted(units)
    dice = [float(units[k]["dice"]) for k in keys]
    hd = [float(units[k]["hd95_mm"]) for k in keys]
    found, missed, false = (sum(int(units[k][f]) for k in keys) for f in ("found", "missed",
                                                                           "false"))
    d_mean, d_std = _mean_std(dice)
    h_mean, h_std = _mean_std(hd)
    out: dict[str, Any] = {
        "n_units": len(keys), "dice_mean": d_mean, "dice_std": d_std,
        "dice_ci": bootstrap_mean_ci(dice, n_bootstrap, seed=seed),
        "hd95_mm_mean": h_mean, "hd95_mm_std": h_std,
        "hd95_undefined": int(sum(not np.isfinite(v) for v in hd)),
        "lesions_found": found, "lesions_missed": missed, "false_lesions": false,
        "lesion_sensitivity": found / (found + missed) if found + missed else float("nan"),
        "false_lesions_per_case": false / len(keys) if keys else float("nan"),
    }
    if ref is not None:
        common = sorted(set(units) & set(ref))
        for metric in ("dice", "hd95_mm"):
            a = [float(units[k][metric]) for k in common]
            b = [float(ref[k][metric]) for k in common]
            out[f"{metric}_diff_vs_reference"] = paired_bootstrap_ci(a, b, n_bootstrap,
                                                                     seed=seed)
    return out


def summarise(runs: Sequence[Mapping[str, Any]], reference: str = "real+aug",
              n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """regime -> arm -> statistics (see module docstring); regimes and arms in run order."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in runs:
        grouped.setdefault(str(r["regime"]), {}).setdefault(str(r["arm"]), []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for regime, arms in grouped.items():
        ref = _units(arms[reference]) if reference in arms else None
        summary[regime] = {}
        for arm, arm_runs in arms.items():
            stats = _arm_summary(_units(arm_runs), ref if arm != reference else None,
                                 n_bootstrap, seed)
            stats["n_runs"] = len(arm_runs)
            stats["added_lesion_fraction"] = float(np.mean(
                [r.get("added_lesion_fraction", 0.0) for r in arm_runs]))
            stats["train_cases"] = len(arm_runs[0]["train_cases"])
            stats["seconds_per_run"] = float(np.mean(
                [r["train_seconds"] + r["test_seconds"] for r in arm_runs]))
            summary[regime][arm] = stats
    return summary


# ---- markdown ----
def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(d: Mapping[str, float] | None, digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "—"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def _table(stats: Mapping[str, Mapping[str, Any]], reference: str) -> list[str]:
    lines = [
        f"| arm | Dice mean ± sd | Δ Dice vs {reference} [95% CI] | HD95 mm mean ± sd "
        f"| Δ HD95 mm [95% CI] | HD95 undefined | lesions found / missed / false | units |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in stats.items():
        ref = "(reference)" if arm == reference else None
        lines.append(
            f"| {arm} | {_f(s['dice_mean'])} ± {_f(s['dice_std'])} "
            f"| {ref or _ci(s.get('dice_diff_vs_reference'))} "
            f"| {_f(s['hd95_mm_mean'], 1)} ± {_f(s['hd95_mm_std'], 1)} "
            f"| {ref or _ci(s.get('hd95_mm_diff_vs_reference'), 1)} | {s['hd95_undefined']} "
            f"| {s['lesions_found']} / {s['lesions_missed']} / {s['false_lesions']} "
            f"| {s['n_units']} |"
        )
    return lines


HOW_TO_READ = """\
## How to read this report

* **Unit** = one held-out patient scored by the network of one seed. Every arm uses the same
  patients and the same seeds (same initial weights, same sequence of real patches), so arms are
  compared *paired* over units.
* **Dice mean ± sd** pools all units of the arm; the sd mixes patient-to-patient and
  seed-to-seed variation. **HD95** is the 95th-percentile symmetric surface distance in mm; it is
  undefined (and left out of its mean) when the prediction or the ground truth of a scan is
  empty — the *HD95 undefined* column counts those units, usually scans where the network found
  nothing.
* **Δ vs reference [95% CI]**: mean of the per-unit difference (arm − reference) with a paired
  percentile bootstrap interval. An interval that excludes 0 is evidence of a difference for
  *these* test patients; with few patients it says little about other patients. For Dice higher
  is better, for HD95 lower is better.
* **Lesions found / missed / false**: connected components. A ground-truth lesion is found when
  any predicted voxel touches it; a predicted component touching no ground truth is false.
  Summed over units.
* **Added lesions**: the share of training patches that actually received a synthetic patch,
  a GAN lesion or a CarveMix lesion. It can be below `--ratio` when a lesion does not fit inside
  the body of the patch; an arm with 0 % is the reference arm in disguise.
* Regimes with fewer training patients show where augmentation matters most; a regime whose
  requested size exceeded the available training patients was capped (and merged with equal
  ones).
"""


def markdown(protocol: Mapping[str, Any], summary: Mapping[str, Mapping[str, Any]],
             reference: str) -> str:
    """The report.md text."""
    s, split = protocol["settings"], protocol["split"]
    mode = "fast (smoke test; numbers are not meaningful)" if protocol["fast"] else "full"
    lines = [
        "# Downstream segmentation benchmark", "",
        f"Command: `{protocol.get('command') or 'medgan.evaluation.evaluate_segmentation(...)'}`",
        "",
        f"* medgan {protocol['medgan_version']}, mode: {mode}",
        f"* data: `{protocol['data']}`; modality {protocol['config']['modality']}, "
        f"{protocol['config']['spatial_dims']}D",
        f"* generator checkpoint SHA-256: `{protocol['checkpoint_sha256'] or 'none'}`",
        f"* UNet channels {s['channels']}, strides {s['strides']}, {s['iterations']} iterations "
        f"of batch {s['batch_size']}, patch {s['patch_size']}, ratio {s['ratio']}",
        f"* seeds: {protocol['seeds']}; bootstrap resamples: {s['n_bootstrap']}", "",
        "## Split (by patient)", "",
        f"* test ({len(split['test'])}): {', '.join(split['test'])}",
    ]
    for regime, ids in split["regimes"].items():
        lines.append(f"* training regime `{regime}` ({len(ids)}): {', '.join(ids)}")
    for regime, stats in summary.items():
        n = next(iter(stats.values()))["train_cases"]
        lines += ["", f"## Regime `{regime}` ({n} training patients)", ""]
        lines += _table(stats, reference)
        added = [f"{arm} {100 * v['added_lesion_fraction']:.0f} %" for arm, v in stats.items()
                 if arm not in ("real", reference)]
        secs = np.mean([v["seconds_per_run"] for v in stats.values()])
        if added:
            lines += ["", "Training patches that actually received an added lesion: "
                      + ", ".join(added) + "."]
        lines += ["", f"Mean time per run: {secs:.0f} s."]
    lines += ["", HOW_TO_READ, "## Figures", "", "![Dice per arm and regime](dice.png)", "",
              "![Example predictions](examples.png)", ""]
    return "\n".join(lines)


# ---- figures ----
def plot_dice(path: Path, summary: Mapping[str, Mapping[str, Any]]) -> Path:
    """Mean Dice per arm (colours) and regime (groups) with 95% bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    regimes = list(summary)
    arms = list(dict.fromkeys(a for r in regimes for a in summary[r]))
    fig, ax = plt.subplots(figsize=(3.5 + 1.2 * len(regimes) * max(1, len(arms)) / 3, 4),
                           dpi=120)
    width = 0.8 / max(1, len(arms))
    for j, arm in enumerate(arms):
        xs, ys, lo, hi = [], [], [], []
        for i, regime in enumerate(regimes):
            if arm in summary[regime]:
                ci = summary[regime][arm]["dice_ci"]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(ci["mean"])
                lo.append(ci["mean"] - ci["low"])
                hi.append(ci["high"] - ci["mean"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=arm)
    ax.set_xticks(range(len(regimes)), [f"{r}" for r in regimes])
    ax.set_xlabel("training patients (regime)")
    ax.set_ylabel("Dice (mean, 95% CI)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return save_figure(fig, path)


def _overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray | None) -> np.ndarray:
    """(X, Y) image in [-1, 1] with GT (green) and prediction (red) outlines -> (H, W, 3)."""
    from skimage.segmentation import find_boundaries

    grey = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(gt.astype(bool), mode="inner")] = GT_RGB
    if pred is not None:
        rgb[find_boundaries(pred.astype(bool), mode="inner")] = PRED_RGB
    return np.flipud(rgb.transpose(1, 0, 2))


def plot_examples(path: Path, examples: Mapping[str, Mapping[str, np.ndarray]],
                  cases: Mapping[str, Mapping[str, Any]], slices: Sequence[tuple[str, int]]
                  ) -> Path:
    """Rows = test slices, columns = arms: image with GT (green) and prediction (red)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    arms = list(examples)
    fig, axes = plt.subplots(len(slices), max(1, len(arms)), squeeze=False, dpi=110,
                             figsize=(max(4.0, 2.4 * len(arms)), 2.8 * len(slices) + 0.3))
    for i, (cid, z) in enumerate(slices):
        image = cases[cid]["image"][0, ..., z].numpy()
        gt = cases[cid]["label"][0, ..., z].numpy()
        for j, arm in enumerate(arms):
            pred = examples[arm].get(f"{cid}/{z}")
            ax = axes[i, j]
            ax.imshow(_overlay(image, gt, pred), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{arm}\n{cid} z={z}" if i == 0 else f"{cid} z={z}", fontsize=7)
    fig.suptitle("green: ground truth, red: prediction (seed 0)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_reports(out: Path, protocol: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                  examples: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
                  test_cases: Sequence[Mapping[str, Any]], slices: Sequence[tuple[str, int]],
                  reference: str = "real+aug") -> dict[str, Any]:
    """Write report.json, report.md, dice.png and examples.png; return the summary."""
    summary = summarise(runs, reference, int(protocol["settings"]["n_bootstrap"]))
    last_regime = list(summary)[-1]
    shown = {arm: ex for (regime, arm), ex in examples.items() if regime == last_regime}
    plot_dice(out / "dice.png", summary)
    plot_examples(out / "examples.png", shown, {c["case_id"]: c for c in test_cases}, slices)
    report = {"protocol": dict(protocol), "reference_arm": reference, "summary": summary,
              "runs": list(runs)}
    write_json_atomic(out / "report.json", json_safe(report))
    write_text_atomic(out / "report.md", markdown(protocol, summary, reference))
    return summary


def write_report_files(json_path: Path, report: Mapping[str, Any], md: str) -> Path:
    """Write ``report`` as strict JSON at ``json_path`` and ``md`` next to it (``.md``)."""
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, json_safe(report))
        write_text_atomic(json_path.with_suffix(".md"), md)
    except OSError as err:
        raise OutputError(f"{json_path}: cannot write the report ({err.strerror or err})"
                          ) from None
    return json_path
