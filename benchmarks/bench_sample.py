"""Sampling: ``medgan.sampling.sample`` end to end against the bare generator forward pass.

End to end = what ``medgan sample`` does after loading the checkpoint: per-sample latents from
their own seeds, generation in fixed chunks, mask post-processing, conversion to physical
units, gzip NIfTI writing on a thread pool, the datalist and the contact sheet. The bare
forward pass is the same generator on batches of random latents, nothing else.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import recipe_config, summary, sync, synthetic_bank

from medgan.sampling import load_generator, sample
from medgan.training.state import TrainState
from medgan.training.trainer import checkpoint_metadata


def make_checkpoint(run_dir: Path, spatial_dims: int, patch_size: int, width: int) -> Path:
    """An untrained generator checkpoint whose output has contrast and mask blobs.

    DCGAN's N(0, 0.02) initialisation gives a nearly constant output (empty masks, endless
    redraws), so the convolutions get He-scaled weights instead; speed does not depend on
    the weight values.
    """
    config = recipe_config(spatial_dims, patch_size, stabilisers=False, width=width)
    bank = synthetic_bank(spatial_dims, patch_size, n=8)
    state = TrainState.create(config, bank.image_channels, torch.device("cpu"), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in state.generator.modules():
            if isinstance(m, torch.nn.modules.conv._ConvNd):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g)
                               * (1.0 / m.weight.shape[0]) ** 0.5)
    state.checkpoint(run_dir / "checkpoints", checkpoint_metadata(config, bank, seed=0))
    return run_dir


def measure(spatial_dims: int, patch_size: int, device: torch.device, n: int,
            width: int = 64, batch_size: int = 64, repeats: int = 5) -> dict[str, Any]:
    """Samples/s of ``sample`` and of the bare forward pass, ``repeats`` interleaved pairs
    (so that a change in machine load hits both alike); the ratio is the median of the
    per-pair ratios, with its range."""
    with tempfile.TemporaryDirectory(prefix="medgan-bench-sample-") as tmp:
        ckpt = make_checkpoint(Path(tmp) / "run", spatial_dims, patch_size, width)
        loaded = load_generator(ckpt, device=device)  # the layout and weights sample() uses
        net = loaded.generator
        z = torch.randn(n, loaded.latent_dim, device=device)
        with torch.no_grad():
            net(z[:batch_size])  # warm-up
        sample(ckpt, min(n, 64), Path(tmp) / "warm-up", device=str(device), progress=False)
        end_to_end, bare, redrawn = [], [], 0
        for r in range(repeats):
            result = sample(ckpt, n, Path(tmp) / f"out{r}", seed=r, batch_size=batch_size,
                            device=str(device), progress=False)
            end_to_end.append(result.samples_per_s)
            redrawn += result.n_redrawn_empty
            with torch.no_grad():
                bare.append(n / _forward_seconds(net, z, batch_size, device))
    ratios = [e / b for e, b in zip(end_to_end, bare, strict=True)]
    return {
        "spatial_dims": spatial_dims, "patch_size": patch_size, "n": n, "width": width,
        "batch_size": batch_size, "repeats": repeats, "redrawn_empty_masks": redrawn / repeats,
        "end_to_end_samples_per_s": summary(end_to_end),
        "bare_forward_samples_per_s": summary(bare),
        "ratio_end_to_end_vs_bare": summary(ratios)["median"],
        "ratio_end_to_end_vs_bare_range": summary(ratios),
    }


def _forward_seconds(net: torch.nn.Module, z: torch.Tensor, batch_size: int,
                     device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(z), batch_size):
        net(z[start:start + batch_size])
    sync(device)
    return time.perf_counter() - t0
