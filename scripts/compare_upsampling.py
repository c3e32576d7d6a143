"""Side-by-side sample grids of two trained 2D runs from the same latents, and their spectra.

    python scripts/compare_upsampling.py RUN_A RUN_B --out docs/images/FIG.png \
        [--labels deconv,resize] [--n 24] [--nrow 6] [--seed 0] [--zoom 3] \
        [--real PATCHES.safetensors [--real-panel]] [--n-spectrum 512]

Each run's EMA generator (as ``medgan sample`` loads it) decodes the same ``n`` latents (drawn
from ``--seed``); the two grids are written next to each other under their labels, image in
grey with the raw mask (> 0) outlined in red, followed by ``n`` random real lesion patches with
``--real-panel`` (leave it out for data whose licence forbids copying them into a figure).
``--zoom`` adds, under each grid, its first tile enlarged that many times, where a checkerboard
texture is easiest to see.

With ``--real`` (a patch cache of the training data, ``<run>/cache/patches-*.safetensors``) it
also prints two spectral measures of upsampling artifacts (:func:`artifact_measures`) for the
real lesion patches and for ``--n-spectrum`` samples of each run: how far the power at the
frequencies of an 8-pixel grid stands above that of the neighbouring frequencies, and the
share of power at the period-2 checkerboard frequencies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def _generated(run: Path, n: int, seed: int) -> torch.Tensor:
    """``n`` pairs ``(n, C + 1, *P)`` of the run's EMA generator from latents of ``seed``."""
    from medgan.sampling import load_generator

    loaded = load_generator(run)
    z = loaded.generator.sample_latent(n, generator=torch.Generator().manual_seed(seed))
    return loaded.decode(z)


def _real(cache: Path, n: int, seed: int) -> torch.Tensor:
    """``n`` random lesion patches ``(n, C + 1, *P)`` of a patch cache, mask as -1 / 1."""
    from safetensors.torch import load_file

    bank = load_file(str(cache))
    keep = bank["has_lesion"].bool()
    pick = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(seed))[:n]
    images, masks = bank["images"][keep][pick], bank["masks"][keep][pick]
    return torch.cat([images.float(), masks.float() * 2 - 1], dim=1)


def _panel(pairs: torch.Tensor, nrow: int, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    from medgan.visualize import grid_array

    first = grid_array(pairs[:1], nrow=1, pad=0)
    return grid_array(pairs, nrow=nrow), first.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _power(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum ``(H, W)`` of ``(N, H, W)`` images (per-image mean removed)."""
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    return (np.abs(np.fft.fft2(centred)) ** 2).mean(axis=0)


def artifact_measures(images: np.ndarray, period: int = 8) -> dict[str, float]:
    """Two spectral signs of upsampling artifacts in ``(N, H, W)`` images.

    ``lattice_peak``: mean power at the frequencies of a ``period``-pixel pattern (both axes
    multiples of ``1 / period`` cycles/pixel, zero excluded) over the mean power of their eight
    neighbouring frequencies; about 1 for a smooth spectrum, above 1 where a grid repeats.
    ``checkerboard``: share of the total power at 0.5 cycles/pixel on either axis.
    """
    power = _power(images)
    h, w = power.shape
    iy, ix = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    lattice = (iy % (h // period) == 0) & (ix % (w // period) == 0)
    lattice[0, 0] = False
    around = np.zeros_like(lattice)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            around |= np.roll(lattice, (dy, dx), axis=(0, 1))
    around &= ~lattice
    around[0, 0] = False
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    checker = (np.abs(fy) == 0.5) | (np.abs(fx) == 0.5)
    return {"lattice_peak": float(power[lattice].mean() / power[around].mean()),
            "checkerboard": float(power[checker].sum() / power.sum())}


def spectrum_report(runs: list[Path], labels: list[str], real: Path, n: int, seed: int) -> str:
    """One line per image set: :func:`artifact_measures` of the real patches and each run."""
    from safetensors.torch import load_file

    bank = load_file(str(real))
    real_images = bank["images"][bank["has_lesion"].bool(), 0].numpy()
    ref = artifact_measures(real_images)
    lines = [f"real ({len(real_images)} lesion patches): 8-px lattice peak "
             f"{ref['lattice_peak']:.2f}, checkerboard share {ref['checkerboard']:.2e}"]
    for run, label in zip(runs, labels, strict=True):
        got = artifact_measures(_generated(run, n, seed)[:, 0].numpy())
        lines.append(f"{label} ({n} samples): 8-px lattice peak {got['lattice_peak']:.2f}, "
                     f"checkerboard share {got['checkerboard']:.2e} "
                     f"(x{got['checkerboard'] / ref['checkerboard']:.2f} real)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--labels", default="deconv,resize")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--nrow", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--real", type=Path, default=None, help="patch cache of the training data")
    p.add_argument("--real-panel", action="store_true", help="also show real patches (--real)")
    p.add_argument("--n-spectrum", type=int, default=512)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgan.visualize import save_figure

    labels = args.labels.split(",")
    sets = [_generated(r, args.n, args.seed) for r in args.runs]
    titles = list(labels)
    if args.real is not None and args.real_panel:
        sets.append(_real(args.real, args.n, args.seed))
        titles.append("real training patches")
    panels = [_panel(pairs, args.nrow, args.zoom) for pairs in sets]
    rows, cols = (2 if args.zoom > 1 else 1), len(panels)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.6 + 3.4 * (rows - 1)), dpi=100,
                             squeeze=False, gridspec_kw={"height_ratios": [4, 3][:rows]})
    for col, ((grid, tile), title) in enumerate(zip(panels, titles, strict=True)):
        axes[0, col].imshow(grid, interpolation="nearest")
        axes[0, col].set_title(title, fontsize=16)
        if rows == 2:
            axes[1, col].imshow(tile, interpolation="nearest")
            axes[1, col].set_title(f"first tile, x{args.zoom}", fontsize=12)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    if args.real is not None:
        print(spectrum_report(list(args.runs), labels, args.real, args.n_spectrum, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
