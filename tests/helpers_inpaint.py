"""A tiny ``model.kind: inpaint`` config and run, shared by the training and sampling tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgan.config import MedganConfig, config_from_dict


def inpaint_config(steps: int = 4, spatial_dims: int = 2, inpaint: dict[str, Any] | None = None,
                   **train: Any) -> MedganConfig:
    """Patch 32, 8-channel nets, hinge loss, EMA on, checkpoints every 2 steps."""
    return config_from_dict({
        "modality": "ct", "spatial_dims": spatial_dims,
        "data": {"patch_size": 32, "patches_per_case": 8, "min_lesion_voxels": 5},
        "model": {"kind": "inpaint", "ngf": 8, "ndf": 8},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "sample_every": 2,
                  "checkpoint_every": 2, "ema_decay": 0.9, "loss": "hinge", **train},
        "inpaint": {"noise_channels": 2, "blob_radius_mm": [2, 5], "grid_samples": 3,
                    **(inpaint or {})},
    })


def train_inpainter_run(out: Path, data: Path, steps: int = 2, **kw: Any) -> Path:
    """Train a tiny inpainter on ``data``; returns the run folder."""
    from medgan.training import train

    train(inpaint_config(steps=steps, **kw), data=data, out=out, seed=1, progress=False)
    return out
