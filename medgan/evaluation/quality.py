"""``medgan evaluate quality``: how close are synthetic lesion patches to the real ones?

Real = the lesion-containing training patches (``medgan sample`` redraws empty masks, so the
lesion-free training patches are left out), synthetic = a ``medgan sample`` folder. Metrics:

* ``mmd``: MONAI ``MMDMetric`` (linear kernel on the flattened image channels, model space)
  between equally many random real and synthetic patches, divided by the number of voxels;
  ``mmd_real_vs_real`` is the same between two random halves of the real patches, the level a
  perfect generator would reach with these sample sizes.
* ``msssim_real_vs_synthetic``: mean MS-SSIM of random real/synthetic pairs; ``diversity`` the
  mean pairwise MS-SSIM within each set (near 1 = mode collapse).
* lesion size (voxels, and mL for 3D or mm^2 for 2D) and mean lesion intensity (physical units,
  per channel): summaries of both sets and the two-sample Kolmogorov-Smirnov statistic.
* ``usable_masks``: share of non-empty masks after post-processing, of the files and (with the
  checkpoint) of raw generator draws before any redraw.
* ``frd``: Frechet Radiomics Distance, when the optional ``frd-score`` package is installed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.config import MedganConfig
from medgan.evaluation.inputs import (
    check_shapes,
    read_synthetic,
    real_bank,
    real_physical,
    resolve_settings,
    to_model_space,
)
from medgan.evaluation.report import write_report_files
from medgan.sampling import MaskPostprocess, load_generator
from medgan.similarity import mean_pairwise_msssim, pairwise_msssim

log = logging.getLogger(__name__)
FRD_MISSING = "FRD: not computed (pip install 'medgan[frd]')"


def mmd(a: torch.Tensor, b: torch.Tensor, max_samples: int = 512, seed: int = 0) -> float:
    """MONAI linear-kernel MMD between ``a`` (N, C, *P) and ``b`` (M, C, *P), per voxel.

    Both sets are subsampled (seeded) to the same size ``min(N, M, max_samples)`` >= 2.
    """
    from monai.metrics import MMDMetric

    n = min(len(a), len(b), max_samples)
    if n < 2:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    ia, ib = torch.randperm(len(a), generator=g)[:n], torch.randperm(len(b), generator=g)[:n]
    x, y = a[ia].reshape(n, -1).double(), b[ib].reshape(n, -1).double()
    return float(MMDMetric()(x[:, None], y[:, None])) / x.shape[1]


def cross_msssim(a: torch.Tensor, b: torch.Tensor, n_pairs: int = 256, seed: int = 0) -> float:
    """Mean MS-SSIM of ``n_pairs`` random (a[i], b[j]) pairs; inputs ``(N, C, *P)`` in [-1, 1]."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(a), (n_pairs,), generator=g)
    j = torch.randint(len(b), (n_pairs,), generator=g)
    with torch.no_grad():
        return float(pairwise_msssim(a[i], b[j]).mean())


def ks(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov ``{statistic, pvalue}`` (scipy); NaN for an empty sample."""
    from scipy.stats import ks_2samp

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) == 0 or len(y) == 0:
        return {"statistic": float("nan"), "pvalue": float("nan")}
    r = ks_2samp(x, y)
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue)}


def describe(values: Sequence[float]) -> dict[str, float]:
    """``{n, mean, median, p25, p75}`` of finite values."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "p25": float("nan"),
                "p75": float("nan")}
    p25, med, p75 = np.percentile(x, [25, 50, 75])
    return {"n": int(len(x)), "mean": float(x.mean()), "median": float(med),
            "p25": float(p25), "p75": float(p75)}


def lesion_stats(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lesion voxels ``(N,)`` and mean intensity inside the lesion ``(N, C)`` (NaN if empty).

    ``images`` (N, C, *P) physical units, ``masks`` (N, *P) binary.
    """
    m = masks.reshape(len(masks), -1).astype(bool)
    voxels = m.sum(1)
    flat = images.reshape(images.shape[0], images.shape[1], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (flat * m[:, None]).sum(-1) / voxels[:, None]
    return voxels, np.where(voxels[:, None] > 0, means, np.nan)


def _radiomics_roi_ok(mask: np.ndarray, min_voxels: int = 10) -> bool:
    """Lesions pyradiomics can describe: >= ``min_voxels`` voxels, >= 2 voxels along >= 2
    axes (thinner ones collapse when frd-score resamples to 2 mm)."""
    idx = np.argwhere(mask > 0)
    if len(idx) < min_voxels:
        return False
    return int(((idx.max(0) - idx.min(0)) >= 1).sum()) >= 2


def frechet_radiomics_distance(real: tuple[np.ndarray, np.ndarray],
                               synthetic: tuple[np.ndarray, np.ndarray],
                               spacing_mm: Sequence[float], max_samples: int = 128,
                               seed: int = 0) -> dict[str, Any]:
    """FRD (frd-score v1) between (images (N, C, *P), masks (N, *P)) sets, first channel.

    Returns ``{"value": float | None, "note": str}``; never raises for a missing package.
    """
    try:
        from frd_score import compute_frd
    except ImportError:
        return {"value": None, "note": FRD_MISSING}
    import nibabel as nib

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="medgan-frd-") as tmp:
        lists = []
        for name, (images, masks) in (("real", real), ("synthetic", synthetic)):
            usable = np.flatnonzero([_radiomics_roi_ok(m) for m in masks])
            pick = usable[rng.permutation(len(usable))[:max_samples]]
            if len(pick) < 2:
                return {"value": None, "note": f"FRD: not computed (fewer than 2 {name} "
                                               "lesions large enough for radiomics)"}
            files, mask_files = [], []
            for k, i in enumerate(pick):
                affine = np.diag([*map(float, spacing_mm[:3]), 1.0])
                f = Path(tmp) / name / "img" / f"{k:05d}.nii.gz"
                mf = Path(tmp) / name / "msk" / f"{k:05d}.nii.gz"
                f.parent.mkdir(parents=True, exist_ok=True)
                mf.parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(images[i, 0].astype(np.float32), affine), str(f))
                nib.save(nib.Nifti1Image(masks[i].astype(np.uint8), affine), str(mf))
                files.append(str(f))
                mask_files.append(str(mf))
            lists.append((files, mask_files))
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                value = compute_frd([lists[0][0], lists[1][0]],
                                    paths_masks=[lists[0][1], lists[1][1]], num_workers=1,
                                    settings_dict={"minimumROIDimensions": 1})
        except Exception as err:  # a third-party feature extractor; report, never fail
            return {"value": None, "note": f"FRD: not computed ({type(err).__name__}: {err})"}
    return {"value": float(value), "note": f"frd-score v1 on {len(lists[0][0])} real and "
                                           f"{len(lists[1][0])} synthetic patches"}


def _generator_usable(checkpoint: Path | None, n: int, seed: int) -> dict[str, Any] | None:
    """Share of raw generator draws whose mask survives default post-processing."""
    if checkpoint is None:
        return None

    loaded = load_generator(checkpoint)
    post = MaskPostprocess()
    pairs = loaded.generate(n, seed=seed)
    usable = [bool(post(p[-1]).any()) for p in pairs]
    return {"fraction": float(np.mean(usable)), "n": n}


def evaluate_quality(
    real: str | Path, synthetic: str | Path, checkpoint: str | Path | None = None,
    config: MedganConfig | None = None, out: str | Path | None = None, n_pairs: int = 256,
    max_samples: int = 512, seed: int = 0, frd: bool = True, progress: bool = True,
) -> dict[str, Any]:
    """Compare a synthetic dataset with the real training patches; see the module docstring.

    Args:
        real: the real training datalist.
        synthetic: a ``medgan sample`` output folder.
        checkpoint: with ``config``, how the real patches were extracted (see
            :mod:`medgan.evaluation.inputs`).
        config: see ``checkpoint``.
        out: write the report here as JSON (and the same name with ``.md``); None = don't.
        n_pairs: random pairs for the MS-SSIM means.
        max_samples: patches per set for MMD.
    """
    settings = resolve_settings(synthetic, checkpoint, config)
    bank = real_bank(real, settings, progress)
    syn = read_synthetic(synthetic, settings.config.spatial_dims)
    lesion_idx = torch.nonzero(bank.has_lesion).flatten()
    real_img = bank.images[lesion_idx]
    check_shapes(real_img, syn, synthetic)
    syn_img = to_model_space(syn.images, settings.intensity or bank.intensity)
    real_phys = real_physical(bank, lesion_idx)
    real_masks = bank.masks[lesion_idx, 0].numpy()
    half = torch.randperm(len(real_img), generator=torch.Generator().manual_seed(seed))
    a, b = real_img[half[: len(half) // 2]], real_img[half[len(half) // 2:]]
    r_vox, r_int = lesion_stats(real_phys, real_masks)
    s_vox, s_int = lesion_stats(syn.images, syn.masks)
    dims = settings.config.spatial_dims
    unit = "mL" if dims == 3 else "mm2"
    voxel = float(np.prod(bank.spacing_mm[:dims])) / (1000.0 if dims == 3 else 1.0)
    syn_voxel = float(np.prod(syn.spacing_mm[:dims])) / (1000.0 if dims == 3 else 1.0)
    report: dict[str, Any] = {
        "real": str(real), "synthetic": str(synthetic), "n_real": len(real_img),
        "n_synthetic": len(syn_img), "checkpoint_sha256": settings.checkpoint_sha256,
        "mmd": mmd(real_img, syn_img, max_samples, seed),
        "mmd_real_vs_real": mmd(a, b, max_samples, seed),
        "msssim_real_vs_synthetic": cross_msssim(real_img, syn_img, n_pairs, seed),
        "diversity": {
            "synthetic": mean_pairwise_msssim(syn_img, n_pairs, seed),
            "real": mean_pairwise_msssim(real_img, n_pairs, seed),
        },
        "lesion_size": {
            "unit": unit, "real_voxels": describe(r_vox), "synthetic_voxels": describe(s_vox),
            "real": describe(r_vox * voxel), "synthetic": describe(s_vox * syn_voxel),
            "ks": ks(r_vox * voxel, s_vox * syn_voxel),
        },
        "lesion_intensity": {
            "units": (settings.intensity or bank.intensity).units,
            "channels": [{"real": describe(r_int[:, c]), "synthetic": describe(s_int[:, c]),
                          "ks": ks(r_int[:, c][np.isfinite(r_int[:, c])],
                                   s_int[:, c][np.isfinite(s_int[:, c])])}
                         for c in range(real_phys.shape[1])],
        },
        "usable_masks": {
            "files": float(np.mean([m.any() for m in syn.masks])) if len(syn.masks) else None,
            "generator": _generator_usable(settings.checkpoint, min(len(syn_img), 256), seed),
        },
    }
    report["frd"] = (frechet_radiomics_distance((real_phys, real_masks), (syn.images, syn.masks),
                                                syn.spacing_mm, seed=seed)
                     if frd else {"value": None, "note": "FRD: not requested"})
    if out is not None:
        write_report_files(Path(out), report, quality_markdown(report))
    return report


def quality_markdown(r: dict[str, Any]) -> str:
    """A short human-readable summary of a quality report."""
    size, frd = r["lesion_size"], r["frd"]
    lines = [
        "# Synthetic sample quality", "",
        f"Real: `{r['real']}` ({r['n_real']} lesion patches); synthetic: `{r['synthetic']}` "
        f"({r['n_synthetic']} pairs).", "",
        "| metric | value | reference |", "|---|---|---|",
        f"| MMD per voxel (lower = closer) | {r['mmd']:.4g} | real vs real: "
        f"{r['mmd_real_vs_real']:.4g} |",
        f"| MS-SSIM real vs synthetic | {r['msssim_real_vs_synthetic']:.3f} | |",
        f"| diversity: mean pairwise MS-SSIM (high = collapse) | synthetic "
        f"{r['diversity']['synthetic']:.3f} | real {r['diversity']['real']:.3f} |",
        f"| lesion size median ({size['unit']}) | synthetic {size['synthetic']['median']:.4g} "
        f"| real {size['real']['median']:.4g} |",
        f"| lesion size KS statistic | {size['ks']['statistic']:.3f} "
        f"(p = {size['ks']['pvalue']:.3g}) | 0 = same distribution |",
    ]
    for c, ch in enumerate(r["lesion_intensity"]["channels"]):
        lines.append(
            f"| lesion intensity ch{c} median ({r['lesion_intensity']['units']}) | synthetic "
            f"{ch['synthetic']['median']:.4g} (KS {ch['ks']['statistic']:.3f}) "
            f"| real {ch['real']['median']:.4g} |")
    usable = r["usable_masks"]
    gen = usable["generator"]
    lines.append(f"| usable masks | files {usable['files']:.3f} | raw generator draws "
                 f"{'n/a' if gen is None else format(gen['fraction'], '.3f')} |")
    lines.append(f"| FRD | {'n/a' if frd['value'] is None else format(frd['value'], '.3f')} "
                 f"| {frd['note']} |")
    return "\n".join(lines) + "\n"
