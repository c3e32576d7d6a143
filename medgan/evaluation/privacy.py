"""``medgan evaluate privacy``: a memorisation audit of a synthetic dataset.

For every synthetic patch the nearest real training patch is found by normalised
cross-correlation of the image channels (:func:`~medgan.similarity.
nearest_real_patches`, over *all* training patches, lesion-free ones included); the SSIM of that
pair is reported too. Samples whose NCC exceeds ``threshold`` are flagged as possible copies.

As a reference, the same nearest-neighbour NCC is computed between real patches of *different*
patients: synthetic samples that are as close to the training data as real patients are to one
another give no evidence of copying, while values far above that level do.

Caveats: NCC is blind to brightness/contrast changes and sensitive to alignment (a shifted copy
scores lower), and a low NCC does not prove privacy; it is a screen, not a guarantee.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.config import MedganConfig
from medgan.errors import ConfigError
from medgan.evaluation.inputs import (
    check_shapes,
    read_synthetic,
    real_bank,
    resolve_settings,
    to_model_space,
)
from medgan.evaluation.quality import describe
from medgan.evaluation.report import write_report_files
from medgan.similarity import nearest_real_patches
from medgan.visualize import grid_array, save_figure

log = logging.getLogger(__name__)


def pair_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (MONAI, data range 2) of matched rows of ``a``, ``b`` ``(N, C, *P)`` -> ``(N,)``,
    averaged over channels; the kernel shrinks for small patches as in MS-SSIM."""
    from monai.metrics import SSIMMetric

    if len(a) == 0:
        return torch.zeros(0)
    kernel = 7 if a.shape[-1] < 64 else 11
    metric = SSIMMetric(spatial_dims=a.ndim - 2, data_range=2.0, win_size=kernel)
    with torch.no_grad():
        scores = [metric(a[:, c:c + 1].float(), b[:, c:c + 1].float()).flatten()
                  for c in range(a.shape[1])]
    return torch.stack(scores).mean(0)


def real_reference_ncc(images: torch.Tensor, case_index: torch.Tensor, max_queries: int = 256,
                       seed: int = 0) -> np.ndarray:
    """Nearest-neighbour NCC of real patches to the patches of *other* patients ``(Q,)``.

    ``images`` (M, C, *P), ``case_index`` (M,); at most ``max_queries`` query patches, spread
    over the cases. Empty with a single case.
    """
    cases = torch.unique(case_index)
    if len(cases) < 2:
        return np.zeros(0, np.float32)
    g = torch.Generator().manual_seed(seed)
    per_case = max(1, max_queries // len(cases))
    out = []
    for c in cases:
        own = torch.nonzero(case_index == c).flatten()
        query = own[torch.randperm(len(own), generator=g)[:per_case]]
        _, ncc = nearest_real_patches(images[query], images[case_index != c])
        out.append(ncc.numpy())
    return np.concatenate(out)


def save_closest_pairs(path: Path, synthetic: torch.Tensor, real: torch.Tensor,
                       ncc: np.ndarray, ssim: np.ndarray, labels: list[str]) -> Path:
    """PNG with one row per pair: synthetic | nearest real (model-space pairs with mask last)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    n = len(synthetic)
    fig, axes = plt.subplots(max(n, 1), 2, squeeze=False, figsize=(5.2, 2.5 * max(n, 1)),
                             dpi=110)
    for i in range(n):
        for j, (pair, name) in enumerate(((synthetic[i], "synthetic"), (real[i], "nearest real"))):
            ax = axes[i, j]
            ax.imshow(grid_array(pair[None], pad=0), interpolation="nearest")
            ax.set_axis_off()
            title = f"{name}: NCC {ncc[i]:.3f}, SSIM {ssim[i]:.3f}" if j == 0 else \
                f"{name} ({labels[i]})"
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def evaluate_privacy(
    real: str | Path, synthetic: str | Path, checkpoint: str | Path | None = None,
    config: MedganConfig | None = None, threshold: float = 0.95, out: str | Path | None = None,
    n_show: int = 8, seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Audit ``synthetic`` for near-copies of the real training patches of ``real``.

    Writes ``report.json``, ``report.md`` and ``closest_pairs.png`` (the ``n_show`` closest
    pairs) to ``out`` when given. Returns the report dict.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"`threshold` must be a number in [-1, 1], not {threshold}")
    settings = resolve_settings(synthetic, checkpoint, config)
    bank = real_bank(real, settings, progress)
    syn = read_synthetic(synthetic, settings.config.spatial_dims)
    check_shapes(bank.images, syn, synthetic)
    syn_img = to_model_space(syn.images, settings.intensity or bank.intensity)
    index, ncc_t = nearest_real_patches(syn_img, bank.images)
    ssim = pair_ssim(syn_img, bank.images[index]).numpy()
    ncc = ncc_t.numpy()
    ref = real_reference_ncc(bank.images, bank.case_index, seed=seed)
    samples = [
        {"file": Path(f).name, "ncc": float(c), "ssim": float(s),
         "nearest_case": bank.case_ids[int(bank.case_index[i])], "nearest_patch": int(i)}
        for f, c, s, i in zip(syn.files, ncc, ssim, index.tolist(), strict=True)
    ]
    report = {
        "real": str(real), "synthetic": str(synthetic), "threshold": threshold,
        "n_synthetic": len(samples), "n_real_patches": len(bank),
        "checkpoint_sha256": settings.checkpoint_sha256,
        "fraction_above_threshold": float(np.mean(ncc > threshold)) if len(ncc) else None,
        "n_above_threshold": int(np.sum(ncc > threshold)),
        "ncc": describe(ncc), "max_ncc": float(ncc.max()) if len(ncc) else None,
        "ssim": describe(ssim),
        "real_vs_other_patients_ncc": {
            **describe(ref),
            "fraction_above_threshold": float(np.mean(ref > threshold)) if len(ref) else None,
        },
        "samples": samples,
    }
    if out is not None:
        out = Path(out)
        write_report_files(out / "report.json", report, privacy_markdown(report))
        order = np.argsort(-ncc)[:n_show]
        syn_pairs = torch.cat([syn_img, torch.from_numpy(syn.masks)[:, None].float() * 2 - 1], 1)
        save_closest_pairs(out / "closest_pairs.png", syn_pairs[order],
                           bank.pairs()[index[order]], ncc[order], ssim[order],
                           [samples[k]["nearest_case"] for k in order])
    return report


def privacy_markdown(r: dict[str, Any]) -> str:
    """A short human-readable summary of a privacy report."""
    ref = r["real_vs_other_patients_ncc"]
    frac = r["fraction_above_threshold"]

    def f(x: Any) -> str:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"

    top = sorted(r["samples"], key=lambda s: -s["ncc"])[:10]
    lines = [
        "# Memorisation audit", "",
        f"{r['n_synthetic']} synthetic patches from `{r['synthetic']}` against "
        f"{r['n_real_patches']} real training patches of `{r['real']}`.", "",
        "| | median | p75 | max | share above threshold |", "|---|---|---|---|---|",
        f"| synthetic → nearest real, NCC | {f(r['ncc']['median'])} | {f(r['ncc']['p75'])} "
        f"| {f(r['max_ncc'])} | {f(frac)} ({r['n_above_threshold']}) |",
        f"| real → nearest other patient, NCC | {f(ref['median'])} | {f(ref['p75'])} | | "
        f"{f(ref['fraction_above_threshold'])} |",
        f"| synthetic → nearest real, SSIM | {f(r['ssim']['median'])} | {f(r['ssim']['p75'])} "
        "| | |", "",
        f"Threshold: NCC > {r['threshold']}. Closest pairs: `closest_pairs.png`.", "",
        "| synthetic file | NCC | SSIM | nearest real case |", "|---|---|---|---|",
        *[f"| {s['file']} | {s['ncc']:.3f} | {s['ssim']:.3f} | {s['nearest_case']} |"
          for s in top],
        "",
        "NCC = 1: identical up to brightness and contrast. Synthetic samples no closer to the "
        "training data than real patients are to one another give no evidence of copying; a low "
        "NCC is not a privacy guarantee.",
    ]
    return "\n".join(lines) + "\n"
