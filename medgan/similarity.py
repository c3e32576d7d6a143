"""Image similarity used by training, sampling and evaluation alike.

* Diversity within a set: mean pairwise MS-SSIM (MONAI), the usual mode-collapse indicator. A
  value near 1 means the samples look alike (collapse); real lesion patches typically score far
  lower. The number of scales and the kernel adapt to the patch size, because the standard five
  scales with an 11-voxel kernel need patches larger than 160 voxels.
* Closeness to the training data: each synthetic patch's nearest real patch by normalised
  cross-correlation (NCC, Pearson correlation over all voxels and channels): 1 = identical up
  to brightness/contrast, 0 = unrelated. A GAN that copies its training data produces samples
  with NCC near 1 to some real patch (memorisation).
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

def _normalised(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *P)`` -> ``(N, D)`` flattened, mean-centred, unit L2 norm (constant rows -> 0)."""
    flat = x.reshape(x.shape[0], -1).float()
    # "constant" relative to the patch's magnitude: float32 centring leaves ~1e-7 residues,
    # which must not be normalised up into a spurious pattern
    tol = 1e-5 * flat.shape[1] ** 0.5 * flat.abs().amax(dim=1, keepdim=True) + 1e-12
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True)
    return torch.where(norm > tol, flat / norm.clamp_min(1e-12), torch.zeros_like(flat))


def nearest_real_patches(
    synthetic: torch.Tensor, real: torch.Tensor, chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every synthetic patch, the most correlated real patch.

    Args:
        synthetic: ``(N, C, *P)`` image channels only (drop the mask channel).
        real: ``(M, C, *P)`` image channels of the real training patches.
        chunk_size: patches per side compared at once; the largest block held is
            ``chunk_size x chunk_size`` correlations plus the two normalised chunks.

    Returns:
        ``indices`` ``(N,)`` long into ``real`` and ``ncc`` ``(N,)`` float32 in [-1, 1], on the
        device of ``synthetic``.
    """
    if synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"synthetic and real patches must have the same (C, *P) shape, not "
            f"{tuple(synthetic.shape[1:])} and {tuple(real.shape[1:])}"
        )
    if real.shape[0] == 0:
        raise ValueError("real must hold at least one patch")
    device = synthetic.device
    n = synthetic.shape[0]
    best = torch.full((n,), -2.0, device=device)
    index = torch.zeros(n, dtype=torch.long, device=device)
    with torch.no_grad():
        for s0 in range(0, n, chunk_size):
            syn = _normalised(synthetic[s0:s0 + chunk_size].to(device))
            for r0 in range(0, real.shape[0], chunk_size):
                ref = _normalised(real[r0:r0 + chunk_size].to(device))
                value, arg = (syn @ ref.T).max(dim=1)  # (n_chunk,)
                better = value > best[s0:s0 + len(syn)]
                best[s0:s0 + len(syn)] = torch.where(better, value, best[s0:s0 + len(syn)])
                index[s0:s0 + len(syn)] = torch.where(better, arg + r0,
                                                      index[s0:s0 + len(syn)])
    return index, best.clamp(-1.0, 1.0)
