"""Data pipeline: patches/s from NIfTI files, from the patch cache, and per training step.

Three rates are measured for one dataset: the first epoch (``build_patch_bank`` decoding every
case with MONAI and extracting patches, no cache), a later run (the same call finding its
safetensors cache) and the per-step minibatch draw (``PatchSampler.next``, flips on, as
``medgan train`` uses it). The last one is what competes with the training step; the first two
are paid once per run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import summary, sync

from medgan.config import config_from_dict
from medgan.data import build_patch_bank, load_datalist
from medgan.training.batches import PatchSampler

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats2015"


def datalist(tmp: Path, quick: bool) -> tuple[Path, dict[str, Any], str]:
    """BraTS FLAIR + labels 1-4 when ../shared/data has it (and not ``quick``), else the
    bundled CT sarcoma sample; returns the datalist, config overrides and a description."""
    if not quick and BRATS.is_dir():
        entries = [{"image": str(c / "flair.nii.gz"), "label": str(c / "label.nii.gz")}
                   for c in sorted(BRATS.iterdir()) if (c / "flair.nii.gz").is_file()]
        path = tmp / "brats.json"
        path.write_text(json.dumps({"training": entries}), encoding="utf-8")
        source = f"BraTS 2013/2015 FLAIR, {len(entries)} cases, labels 1-4 ({BRATS})"
        return path, {"modality": "mr", "data": {"lesion_labels": [1, 2, 3, 4]}}, source
    from medgan.datasets import bundled_datalist_path

    return bundled_datalist_path("ct"), {"modality": "ct", "data": {}}, \
        "bundled CT sarcoma sample (3 cropped cases)"


def measure(spatial_dims: int, patch_size: int, device: torch.device, batch_size: int,
            draws: int, quick: bool) -> dict[str, Any]:
    """The three rates for one patch geometry."""
    with tempfile.TemporaryDirectory(prefix="medgan-bench-data-") as tmp:
        path, base, source = datalist(Path(tmp), quick)
        config = config_from_dict({
            "modality": base["modality"], "spatial_dims": spatial_dims,
            "data": {**base["data"], "patch_size": patch_size},
            "train": {"batch_size": batch_size},
        })
        cases = load_datalist(path)
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        bank = build_patch_bank(cases, config, cache_dir=cache, progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = build_patch_bank(cases, config, cache_dir=cache, progress=False)
        again = time.perf_counter() - t0
        if len(cached) != len(bank):
            raise RuntimeError("the cached bank differs from the built one")
    rng = torch.Generator(device=device).manual_seed(0)
    sampler = PatchSampler(bank, device, batch_size, rng, flips=True)
    for _ in range(3):  # warm-up (first-touch of the bank on the device)
        sampler.next()
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(draws):
            sampler.next()
        sync(device)
        times.append(draws * batch_size / (time.perf_counter() - t0))
    return {
        "spatial_dims": spatial_dims, "patch_size": patch_size, "source": source,
        "cases": len(bank.case_ids), "patches": len(bank),
        "first_epoch_s": first, "first_epoch_patches_per_s": len(bank) / first,
        "cached_s": again, "cached_patches_per_s": len(bank) / again,
        "sampler_batch_size": batch_size,
        "sampler_patches_per_s": summary(times),
    }
