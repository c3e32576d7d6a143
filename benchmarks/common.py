"""Shared helpers of the benchmarks: machine description, timing, synthetic patch banks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from medgan.config import MedganConfig, config_from_dict
from medgan.data import IntensityMapping, PatchBank

#: The pytorch/examples DCGAN recipe in medgan's config, every stabiliser off.
PLAIN_RECIPE: dict[str, Any] = {
    "model": {"latent_dim": 100, "ngf": 64, "ndf": 64, "d_norm": "batch",
              "spectral_norm": False, "minibatch_std": False, "d_dropout": 0.0},
    "train": {"batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999],
              "loss": "bce", "d_steps": 1, "real_label": 1.0, "ema_decay": None,
              "diffaugment": [], "flip_augment": False},
}


def recipe_config(spatial_dims: int, patch_size: int, stabilisers: bool, batch_size: int = 64,
                  width: int = 64, **train: Any) -> MedganConfig:
    """medgan config of the plain recipe (``stabilisers=False``) or with medgan's defaults.

    With ``stabilisers`` the model and train sections keep medgan's defaults (label smoothing,
    EMA, DiffAugment, minibatch-std, flips) except the shared sizes and optimiser settings.
    """
    model = dict(PLAIN_RECIPE["model"]) if not stabilisers else {}
    model.update(latent_dim=100, ngf=width, ndf=width)
    settings = dict(PLAIN_RECIPE["train"]) if not stabilisers else {}
    settings.update(batch_size=batch_size, lr_g=2e-4, lr_d=2e-4, betas=[0.5, 0.999], **train)
    return config_from_dict({
        "modality": "none", "spatial_dims": spatial_dims, "name": "benchmark",
        "data": {"patch_size": patch_size}, "model": model, "train": settings,
    })


def synthetic_bank(spatial_dims: int, patch_size: int, n: int = 256, seed: int = 0) -> PatchBank:
    """``n`` random image + mask patches (values do not change the speed of dense convs)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1) + (patch_size,) * spatial_dims
    images = torch.rand(shape, generator=g) * 2 - 1
    masks = (torch.rand(shape, generator=g) > 0.8).to(torch.uint8)
    return PatchBank(
        images=images, masks=masks, has_lesion=torch.ones(n, dtype=torch.bool),
        case_index=torch.zeros(n, dtype=torch.long), case_ids=["synthetic"],
        intensity=IntensityMapping("none", (-1.0,), (1.0,)), case_mappings=[],
        spacing_mm=(1.0, 1.0, 1.0), fingerprint="synthetic",
    )


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (only at the edges of a timed window)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` took, device work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of repeated measurements."""
    vals = sorted(values)
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1],
            "n": len(vals)}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                    "MEDGAN_THREADS")


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, load, library versions, GPU, torch threads and
    the thread environment variables that were set (``OMP_WAIT_POLICY`` among them)."""
    import monai

    import medgan

    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "monai": monai.__version__, "medgan": medgan.__version__,
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "cuda": torch.version.cuda, "gpu": None,
        "thread_environment": {v: os.environ[v] for v in THREAD_VARIABLES if v in os.environ},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
