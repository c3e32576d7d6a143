"""Memorisation audit: how close is each synthetic patch to its nearest real training patch?

Closeness is the normalised cross-correlation (NCC, Pearson correlation over all voxels and
channels) of the image channels: 1 = identical up to brightness/contrast, 0 = unrelated. A GAN
that copies its training data produces samples with NCC near 1 to some real patch.
"""

from __future__ import annotations

import torch


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
