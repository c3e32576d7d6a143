"""Training throughput: medgan's trainer loop against the plain-PyTorch DCGAN recipe.

Both sides train on the same real-patch tensor (``PatchBank.pairs()``), on the same device,
with the same batch size and model widths. medgan runs as ``medgan train`` runs it: its
``TrainState``, ``PatchSampler``, ``train_loop`` and an enabled ``Monitor`` (TensorBoard
scalars every ``log_every`` steps, NaN guard); only the one-off work before the loop (building
the bank) and after it (final grid, checkpoint, model card) is left out. Each repeat starts
from fresh models, runs ``warmup`` steps untimed and then times ``steps`` steps; medgan and
plain repeats alternate so that a change in machine load hits both alike.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import recipe_config, summary, sync, synthetic_bank
from plain_dcgan import PlainDCGAN

from medgan.config import MedganConfig
from medgan.data import PatchBank
from medgan.distributed import DistInfo
from medgan.training.monitor import Monitor
from medgan.training.state import TrainState
from medgan.training.trainer import checkpoint_metadata, make_sampler, prepare_models, train_loop


def _clock(device: torch.device) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds, after the device finished its queued work."""
    sync(device)
    return time.perf_counter(), time.process_time()


def _rates(images: int, t0: tuple[float, float], t1: tuple[float, float]) -> dict[str, float]:
    """Images per wall-clock second and per CPU second of this process."""
    return {"wall": images / (t1[0] - t0[0]), "cpu": images / max(t1[1] - t0[1], 1e-9)}


class TimedMonitor(Monitor):
    """The trainer's Monitor, plus clock readings at the start and after the steps in
    ``marks`` (the only places where the device is synchronised)."""

    def __init__(self, *args: Any, marks: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks, self.times = set(marks), {}

    def start(self) -> None:
        super().start()
        self.times[self.state.step] = _clock(self.state.device)

    def after_step(self, *args: torch.Tensor) -> None:
        super().after_step(*args)
        if self.state.step in self.marks:
            self.times[self.state.step] = _clock(self.state.device)


def medgan_images_per_s(config: MedganConfig, bank: PatchBank, device: torch.device,
                        warmup: int, steps: int, seed: int = 0) -> dict[str, float]:
    """Images/s of medgan's loop over ``steps`` steps after ``warmup`` untimed ones."""
    end = warmup + steps
    config = config.model_copy(update={"train": config.train.model_copy(update={"steps": end})})
    dist = DistInfo(device=device)
    state = TrainState.create(config, bank.image_channels, device, seed)
    prepare_models(config, state, dist)
    sampler = make_sampler(config, state, bank, dist)
    meta = checkpoint_metadata(config, bank, seed)
    with tempfile.TemporaryDirectory(prefix="medgan-bench-") as tmp:
        monitor = TimedMonitor(Path(tmp), config, meta, state, {}, dist=dist, progress=False,
                               marks=(warmup, end))
        try:
            train_loop(config, state, sampler, monitor, dist)
        finally:
            monitor.close()
    return _rates(steps * config.train.batch_size, monitor.times[warmup], monitor.times[end])


def plain_images_per_s(spatial_dims: int, pairs: torch.Tensor, device: torch.device,
                       batch_size: int, width: int, warmup: int, steps: int,
                       seed: int = 0) -> dict[str, float]:
    """Images/s of the plain recipe, minibatches drawn from the same ``pairs`` tensor."""
    gan = PlainDCGAN(spatial_dims, pairs.shape[-1], device, ngf=width, ndf=width,
                     nc=pairs.shape[1], seed=seed)
    data = pairs.to(device)
    rng = torch.Generator(device=device).manual_seed(seed)
    t0 = _clock(device)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = _clock(device)
        pick = torch.randint(len(data), (batch_size,), device=device, generator=rng)
        gan.step(data[pick])
    return _rates(steps * batch_size, t0, _clock(device))


def compare(spatial_dims: int, patch_size: int, device: torch.device, repeats: int, warmup: int,
            steps: int, batch_size: int = 64, width: int = 64) -> dict[str, Any]:
    """medgan (plain recipe), medgan (default stabilisers) and plain; each repeat runs all
    three from fresh models, in an order rotated from repeat to repeat."""
    bank = synthetic_bank(spatial_dims, patch_size, n=max(256, 4 * batch_size))
    configs = {name: recipe_config(spatial_dims, patch_size, name == "medgan_stabilisers",
                                   batch_size, width)
               for name in ("medgan", "medgan_stabilisers")}

    def run(name: str, seed: int) -> dict[str, float]:
        if name == "plain":
            return plain_images_per_s(spatial_dims, bank.pairs(), device, batch_size, width,
                                      warmup, steps, seed)
        return medgan_images_per_s(configs[name], bank, device, warmup, steps, seed)

    names = ["plain", "medgan", "medgan_stabilisers"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % 3:] + names[:r % 3]:
            runs[name].append(run(name, r))
    out: dict[str, Any] = {
        "spatial_dims": spatial_dims, "patch_size": patch_size, "batch_size": batch_size,
        "width": width, "warmup_steps": warmup, "timed_steps": steps, "repeats": repeats,
    }
    for clock in ("wall", "cpu"):
        rates = {name: [x[clock] for x in v] for name, v in runs.items()}
        key = "images_per_s" if clock == "wall" else "images_per_cpu_s"
        out[key] = {name: summary(v) for name, v in rates.items()}
        suffix = "" if clock == "wall" else "_cpu"
        out["ratio_medgan_vs_plain" + suffix] = summary(
            [m / p for m, p in zip(rates["medgan"], rates["plain"], strict=True)])
        out["ratio_stabilisers_vs_off" + suffix] = summary(
            [s / m for s, m in zip(rates["medgan_stabilisers"], rates["medgan"], strict=True)])
    return out
