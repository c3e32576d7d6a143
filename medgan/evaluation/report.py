"""Summary tables, report files and figures of the segmentation benchmark.

The statistics are computed per patient (seeds averaged first, see
:mod:`medgan.evaluation.statistics`); this module writes them as tables and figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgan.atomic import write_json_atomic, write_text_atomic
from medgan.errors import OutputError
from medgan.evaluation.statistics import summarise
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


# ---- markdown ----
def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(d: Mapping[str, float] | None, digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "—"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def _p(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else (f"{x:.3f}" if x >= 0.001 else "<0.001")


def _name(name: str, s: Mapping[str, Any]) -> str:
    return f"{name} (picked)" if s["ratio"] is not None and s.get("picked") else name


def _table(stats: Mapping[str, Mapping[str, Any]], reference: str, block: str | None = None,
           picked_only: bool = True) -> list[str]:
    """One row per run name: patient-level means, differences, Wilcoxon p, detections."""
    lines = [
        f"| arm | Dice mean ± sd | Δ Dice vs {reference} [95% CI] | Wilcoxon p "
        "| HD95 mm mean ± sd | Δ HD95 mm [95% CI] | HD95 undefined "
        "| lesions found / missed / false | false per scan | patients × seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, top in stats.items():
        if picked_only and not top.get("picked", True):
            continue
        s = top if block is None else top.get(block)
        if not s:
            continue
        ref = "(reference)" if name == reference else None
        diff = s.get("dice_diff_vs_reference") or {}
        lines.append(
            f"| {_name(name, top) if picked_only else name} "
            f"| {_f(s['dice_mean'])} ± {_f(s['dice_sd_patients'])} "
            f"| {ref or _ci(diff)} | {ref or _p(diff.get('wilcoxon_p'))} "
            f"| {_f(s['hd95_mm_mean'], 1)} ± {_f(s['hd95_mm_sd_patients'], 1)} "
            f"| {ref or _ci(s.get('hd95_mm_diff_vs_reference'), 1)} | {s['hd95_undefined']} "
            f"| {s['lesions_found']} / {s['lesions_missed']} / {s['false_lesions']} "
            f"| {_f(s['false_lesions_per_scan'], 1)} | {s['n_patients']} × {s['n_seeds']} |"
        )
    return lines


def _ratio_table(stats: Mapping[str, Mapping[str, Any]], reference: str) -> list[str]:
    lines = [f"| arm | ratio | validation Dice | added lesions | test Dice | Δ Dice vs {reference} "
             "[95% CI] | picked |", "|---|---|---|---|---|---|---|"]
    for s in stats.values():
        if s["ratio"] is None:
            continue
        lines.append(f"| {s['arm']} | {s['ratio']:g} | {_f(s['validation_dice'])} "
                     f"| {100 * s['added_lesion_fraction']:.1f} % | {_f(s['dice_mean'])} "
                     f"| {_ci(s.get('dice_diff_vs_reference'))} | {'yes' if s['picked'] else ''} |")
    return lines


def _seed_table(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seeds = sorted({k for s in stats.values() for k in s.get("dice_per_seed", {})}, key=int)
    lines = ["| arm | " + " | ".join(f"seed {k}" for k in seeds) + " | best iteration |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name, s in stats.items():
        per = s.get("dice_per_seed", {})
        lines.append(f"| {name} | " + " | ".join(_f(per.get(k, float("nan"))) for k in seeds)
                     + f" | {', '.join(str(i) for i in s.get('best_iteration', []))} |")
    return lines


HOW_TO_READ = """\
## How to read this report

* **Unit = patient.** Every arm uses the same test patients and seeds. Each patient's metric is
  first averaged over the seeds, then means, sd (between patients), confidence intervals and
  tests run over patients: seeds are repeated measurements of the same patients, not more
  patients. *patients × seeds* gives both counts.
* **Δ vs reference [95% CI]**: mean over patients of the per-patient difference (arm −
  reference), with a bootstrap interval that resamples patients (cluster bootstrap), and the
  two-sided **Wilcoxon signed-rank** p-value of the same differences. For Dice higher is
  better, for HD95 lower is better. HD95 is undefined for a scan with an empty prediction; such
  units are left out of its means and counted in *HD95 undefined*.
* **Lesions found / missed / false**: connected components summed over units; *false per scan*
  = false components per (patient, seed).
* **Ratios.** Each lesion-adding arm runs at every ratio; the row marked *(picked)* is the
  ratio with the best mean validation Dice (validation patients of the regime, never the test
  patients). The ratio table lists the test result of every ratio.
* **Added lesions**: the realised share of training patches that carried an added lesion.
* **Stopping**: every arm keeps the weights of its best validation Dice within the maximum
  number of iterations (the same rule for all arms); *best iteration* lists them per seed.
* **Post-processed** tables (when present) drop predicted components smaller than the stated
  size, identically for every arm.
"""


def markdown(protocol: Mapping[str, Any], summary: Mapping[str, Mapping[str, Any]],
             reference: str) -> str:
    """The report.md text."""
    s, split = protocol["settings"], protocol["split"]
    mode = "fast (smoke test; numbers are not meaningful)" if protocol["fast"] else "full"
    lines = ["# Downstream segmentation benchmark", ""]
    for warning in [*(protocol.get("generator_warnings") or []),
                    *(protocol.get("inpainter_warnings") or [])]:
        lines += [f"**Warning: {warning}.**", ""]
    lines += [
        f"Command: `{protocol.get('command') or 'medgan.evaluation.evaluate_segmentation(...)'}`",
        "",
        f"* medgan {protocol['medgan_version']}, mode: {mode}",
        f"* data: `{protocol['data']}`; modality {protocol['config']['modality']}, "
        f"{protocol['config']['spatial_dims']}D",
        f"* generator: {_generator_line(protocol)}",
        *([f"* inpainter: {_generator_line(protocol, 'inpainter')}"]
          if protocol.get("inpainters") else []),
        f"* UNet channels {s['channels']}, strides {s['strides']}; at most {s['iterations']} "
        f"iterations of {s['batch_size']} base + {s['lesion_slots']} lesion-centred patches "
        f"(patch {s['patch_size']}); validation every {s['eval_every']} iterations, patience "
        f"{s['patience']}; ratios {', '.join(f'{r:g}' for r in protocol.get('ratios') or [])}",
        f"* seeds: {protocol['seeds']}; bootstrap resamples: {s['n_bootstrap']}", "",
        "## Split (by patient)", "",
        f"* test ({len(split['test'])}): {', '.join(split['test'])}",
    ]
    for regime, ids in split["regimes"].items():
        val = split.get("validation", {}).get(regime, [])
        lines.append(f"* regime `{regime}`: training ({len(ids)}) {', '.join(ids)}; "
                     f"validation ({len(val)}) {', '.join(val) or '-'}")
    for regime, stats in summary.items():
        first = next(iter(stats.values()))
        lines += ["", f"## Regime `{regime}` ({first['train_cases']} training + "
                  f"{first['validation_cases']} validation patients)", ""]
        lines += _table(stats, reference)
        if any("postprocessed" in v for v in stats.values()):
            lines += ["", f"Post-processed (components under {s['min_component_voxels']} "
                      "voxels dropped):", ""] + _table(stats, reference, "postprocessed")
        if any(v["ratio"] is not None for v in stats.values()):
            lines += ["", "Every ratio (test results; the pick uses validation only):", ""]
            lines += _ratio_table(stats, reference)
        lines += ["", "Mean test Dice per seed:", ""] + _seed_table(stats)
        secs = np.mean([v["seconds_per_run"] for v in stats.values()])
        lines += ["", f"Mean time per run: {secs:.0f} s."]
    lines += ["", HOW_TO_READ, "## Figures", "", "![Dice per arm and regime](dice.png)", "",
              "![Example predictions](examples.png)", ""]
    return "\n".join(lines)


def _generator_line(protocol: Mapping[str, Any], role: str = "generator") -> str:
    gens = protocol.get(f"{role}s") or {}
    if protocol.get(f"{role}_config") is not None:
        return "trained per regime on its training patients: " + "; ".join(
            f"`{r}` SHA-256 `{g['checkpoint_sha256'][:16]}…`" for r, g in gens.items())
    sha = protocol.get(f"{role}_checkpoint_sha256" if role != "generator" else
                       "checkpoint_sha256")
    return f"checkpoint SHA-256 `{sha}`" if sha else "none"


# ---- figures ----
def plot_dice(path: Path, summary: Mapping[str, Mapping[str, Any]]) -> Path:
    """Mean Dice per arm (colours) and regime (groups) with 95% bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    regimes = list(summary)
    arms = list(dict.fromkeys(a for r in regimes for a in summary[r]
                              if summary[r][a].get("picked", True)))
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
    shown = {arm: ex for (regime, arm), ex in examples.items()
             if regime == last_regime and summary[regime].get(arm, {}).get("picked", True)}
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
