"""Within-set diversity: mean pairwise MS-SSIM (MONAI), the usual mode-collapse indicator.

A value near 1 means the samples look alike (collapse); real lesion patches typically score far
lower. The number of scales and the kernel adapt to the patch size, because the standard five
scales with an 11-voxel kernel need patches larger than 160 voxels.
"""

from __future__ import annotations

import itertools

import torch
from monai.metrics import MultiScaleSSIMMetric

_STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def msssim_settings(size: int) -> tuple[int, tuple[float, ...]]:
    """(kernel size, scale weights) valid for patches of edge ``size``."""
    kernel = 7 if size < 64 else 11
    scales = 1
    while scales < 5 and size > (kernel - 1) * 2 ** scales:
        scales += 1
    w = _STANDARD_WEIGHTS[:scales]
    return kernel, tuple(x / sum(w) for x in w)


def msssim_metric(spatial_dims: int, size: int) -> MultiScaleSSIMMetric:
    kernel, weights = msssim_settings(size)
    return MultiScaleSSIMMetric(spatial_dims=spatial_dims, data_range=2.0, kernel_size=kernel,
                                weights=weights)


def pairwise_msssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM between matched rows of ``a`` and ``b``, each ``(N, C, *P)`` in [-1, 1] -> (N,)."""
    metric = msssim_metric(a.ndim - 2, int(a.shape[-1]))
    scores = [metric(a[:, c: c + 1].float(), b[:, c: c + 1].float()) for c in range(a.shape[1])]
    return torch.stack(scores, 0).mean(0).flatten()


def mean_pairwise_msssim(x: torch.Tensor, max_pairs: int = 256, seed: int = 0) -> float:
    """Mean MS-SSIM over distinct pairs of ``x`` ``(N, C, *P)`` in [-1, 1] (image channels only
    are passed by callers); at most ``max_pairs`` pairs, chosen reproducibly."""
    n = x.shape[0]
    if n < 2:
        return float("nan")
    pairs = list(itertools.combinations(range(n), 2))
    if len(pairs) > max_pairs:
        g = torch.Generator().manual_seed(seed)
        pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=g)[:max_pairs]]
    i, j = (torch.tensor(p) for p in zip(*pairs, strict=True))
    with torch.no_grad():
        return float(pairwise_msssim(x[i], x[j]).mean())
