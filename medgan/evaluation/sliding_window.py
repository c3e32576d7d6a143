"""Sliding-window inference over a stack of 2D slices, window position by window position.

MONAI's ``sliding_window_inference`` gathers, predicts and adds back every window of every
slice one at a time in Python. All slices of a scan share one window grid (they have the same
size), so here each window position is cut out of a whole group of slices at once, and its
predictions are added back at once. The arithmetic is MONAI's, in MONAI's order: the same
windows go through the network in the same batches (``sw_batch_size`` windows, slice-major,
in groups of ``group`` slices), each prediction is multiplied by the same Gaussian importance
map, the products are added to each voxel in the same window order and divided by the same
weight sum; so the logits are the same to the bit.

Windows that hold one value only (all background, typically: the corners of a body's bounding
box, slices above and below it) all get the same prediction; it is computed once per scan, in
a batch of the same size as the others, and reused (``skip_constant=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

SIGMA_SCALE = 0.125  # MONAI's default Gaussian sigma, as a fraction of the window size


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float
                  ) -> tuple[int, ...]:
    """Step between windows per axis (MONAI's rule): ``int(roi * (1 - overlap))``, at least 1,
    or the window size when the window spans the axis."""
    out = []
    for size, roi in zip(image_size, roi_size, strict=True):
        step = int(roi) if roi == size else int(roi * (1 - overlap))
        out.append(max(step, 1))
    return tuple(out)


def _pad_to_window(x: torch.Tensor, roi: int, cval: float) -> tuple[torch.Tensor, list[int]]:
    """Pad ``(N, C, X, Y)`` symmetrically (extra voxel at the end) to at least ``roi`` per axis."""
    pad: list[int] = []
    for size in reversed(x.shape[2:]):  # F.pad order: last axis first
        diff = max(roi - int(size), 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        x = F.pad(x, pad, mode="constant", value=cval)
    return x, pad


def _predict(net: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
             sw_batch_size: int, skip_constant: bool, cache: dict[float, torch.Tensor]
             ) -> torch.Tensor:
    """Predictions ``(N, K, P, P)`` of windows ``(N, C, P, P)``, ``sw_batch_size`` at a time;
    windows of a single value reuse the prediction cached for that value."""
    if not skip_constant:
        return torch.cat([net(batch[i:i + sw_batch_size])
                          for i in range(0, len(batch), sw_batch_size)])
    flat = batch.flatten(1)
    constant = (flat == flat[:, :1]).all(1)
    keep = torch.nonzero(~constant).flatten()
    values = flat[constant, 0].tolist()
    for v in dict.fromkeys(values):
        if v not in cache:  # one full-size batch of that window: the same kernels as the others
            window = torch.full_like(batch[:1], v)
            cache[v] = net(window.expand(min(sw_batch_size, len(batch)), *window.shape[1:])
                           .contiguous())[:1]
    parts = [net(batch[keep[i:i + sw_batch_size]]) for i in range(0, len(keep), sw_batch_size)]
    if not values:
        return torch.cat(parts)
    first = parts[0] if parts else cache[values[0]]
    out = torch.empty((len(batch), *first.shape[1:]), dtype=first.dtype, device=first.device)
    if parts:
        out[keep] = torch.cat(parts)
    where = torch.nonzero(constant).flatten()
    for i, v in zip(where.tolist(), values, strict=True):
        out[i] = cache[v][0]
    return out


@torch.no_grad()
def sliding_window_slices(net: Callable[[torch.Tensor], torch.Tensor], slices: torch.Tensor,
                          patch_size: int, sw_batch_size: int, overlap: float, cval: float,
                          device: torch.device, group: int = 32,
                          skip_constant: bool = True) -> torch.Tensor:
    """Gaussian-blended logits ``(Z, K, X, Y)`` on the CPU of a slice stack ``(Z, C, X, Y)``.

    Same result as ``sliding_window_inference(slices[g:g + group].to(device), (P, P),
    sw_batch_size, net, overlap, mode="gaussian", cval=cval)`` for every group ``g`` of
    ``group`` slices, concatenated (``skip_constant``: single-valued windows are predicted
    once, see the module docstring).
    """
    from monai.data.utils import compute_importance_map, dense_patch_slices

    z, _, x, y = slices.shape
    roi = (int(patch_size),) * 2
    padded, pad = _pad_to_window(slices, roi[0], cval)
    size = tuple(int(s) for s in padded.shape[2:])
    windows = dense_patch_slices(size, roi, scan_interval(size, roi, overlap))
    weight = compute_importance_map(roi, mode="gaussian", sigma_scale=SIGMA_SCALE,
                                    device=device, dtype=torch.float32)[None, None]
    count = torch.zeros((1, 1, *size), dtype=torch.float32, device=device)
    for sx, sy in windows:
        count[..., sx, sy] += weight
    outputs: list[torch.Tensor] = []
    cache: dict[float, torch.Tensor] = {}
    for start in range(0, z, group):
        chunk = padded[start:start + group].to(device)
        n = len(chunk)
        batch = torch.stack([chunk[:, :, sx, sy] for sx, sy in windows], dim=1)
        batch = batch.reshape(n * len(windows), *batch.shape[2:])  # slice-major, as MONAI
        pred = _predict(net, batch, sw_batch_size, skip_constant, cache)
        pred = (pred * weight).reshape(n, len(windows), *pred.shape[1:])
        out = torch.zeros((n, pred.shape[2], *size), dtype=torch.float32, device=device)
        for k, (sx, sy) in enumerate(windows):
            out[..., sx, sy] += pred[:, k]
        out /= count
        outputs.append(out.cpu())
    logits = torch.cat(outputs)
    return logits[..., pad[2]:pad[2] + x, pad[0]:pad[0] + y]
