"""Feedback and bookkeeping around the loop: progress bar, TensorBoard, NaN guard, sample grids,
mode-collapse warning, checkpoint cadence and the final artefacts (grid, loss curve, model card).

Losses are accumulated on the device; the host reads them only every ``log_every`` steps and
before each checkpoint, so training never waits on a per-step synchronisation. Under torchrun
every rank has a Monitor (same cadence, so collectives match) and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medgan.atomic import write_text_atomic
from medgan.config import MedganConfig
from medgan.distributed import DistInfo
from medgan.errors import TrainingDivergedError
from medgan.similarity import mean_pairwise_msssim
from medgan.training.model_card import write_model_card
from medgan.training.state import TrainState
from medgan.visualize import save_curves, save_grid

log = logging.getLogger(__name__)
FIXED_SAMPLES = 64
COLLAPSE_SAMPLES = 24
#: Scalars the DCGAN loop reports per step (:meth:`Monitor.after_step`).
DCGAN_SCALARS = ("loss_d", "loss_g", "d_real_logit", "d_fake_logit")


@dataclass
class TrainResult:
    """What a finished (or resumed-to-completion) run produced."""

    run_dir: Path
    checkpoint: Path
    steps: int
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)
    grid: Path | None = None


class Monitor:
    """Called once per finished step by the loop; only the main process writes files.

    ``scalars`` names the values a loop reports per step (:meth:`record`); the first two are
    shown on the progress bar. ``grid(path) -> path`` writes a sample grid for a model kind
    whose samples are not drawn from latents (None: the fixed-latent grid of an unconditional
    generator, with the mode-collapse check).
    """

    def __init__(self, run_dir: Path, config: MedganConfig, meta: dict[str, Any],
                 state: TrainState, history: dict[str, list[tuple[int, float]]],
                 dist: DistInfo | None = None, progress: bool = True,
                 scalars: tuple[str, ...] = DCGAN_SCALARS,
                 grid: Callable[[Path], Path] | None = None) -> None:
        self.run_dir, self.config, self.meta, self.state = run_dir, config, meta, state
        self.history = history
        self.dist = dist if dist is not None else DistInfo(device=state.device)
        self.enabled, self.progress = self.dist.is_main, progress
        self.checkpoint_dir = run_dir / "checkpoints"
        self.samples_dir = run_dir / "samples"
        self.last_checkpoint: Path | None = None
        self.last_saved_step = -1
        self.images_per_s = 0.0
        self.writer = None
        self.bar = None
        self.scalars, self.grid = scalars, grid
        dev = state.device
        if grid is None:
            g = torch.Generator().manual_seed(int(meta["seed"]) + 1)
            latent = config.model.latent_dim
            self.fixed_z = torch.randn(FIXED_SAMPLES, latent, generator=g).to(dev)
        self._reset_window()
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=dev)

    # ---- set-up / tear-down ----
    def start(self) -> None:
        if self.enabled:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"),
                                        purge_step=self.state.step or None)
        self.bar = tqdm(total=self.config.train.steps, initial=self.state.step, unit="step",
                        desc="training", disable=not (self.enabled and self.progress),
                        dynamic_ncols=True)
        self._t0, self._steps0 = time.perf_counter(), self.state.step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def _reset_window(self) -> None:
        dev = self.state.device
        self.sums = torch.zeros(len(self.scalars), device=dev)  # one per name in scalars
        self.count = 0

    # ---- per step ----
    def after_step(self, loss_d: torch.Tensor, loss_g: torch.Tensor, d_real: torch.Tensor,
                   d_fake: torch.Tensor) -> None:
        values = torch.stack([loss_d, loss_g, d_real.float().mean(), d_fake.float().mean()])
        self.record(values, guarded=2)

    def record(self, values: torch.Tensor, guarded: int | None = None) -> None:
        """One finished step's scalars ``(len(scalars),)``; the first ``guarded`` (all when
        None) must stay finite (else training stops with :class:`TrainingDivergedError`)."""
        step, t = self.state.step, self.config.train
        nonfinite = ~torch.isfinite(values[:guarded]).all()
        self.first_bad.masked_fill_(nonfinite & ~self.bad, step)  # no host tensor, no sync
        self.bad |= nonfinite
        self.sums += values
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % t.log_every == 0 or step == t.steps:
            self._log(step)
        if self.enabled and (step % t.sample_every == 0):
            self.save_samples(f"step-{step:08d}")
        if step % t.checkpoint_every == 0 and step != t.steps:
            self.save_checkpoint()

    def finite_so_far(self) -> bool:
        return not bool(self.bad)

    def _raise_if_diverged(self) -> None:
        if bool(self.bad):
            where = f"{self.last_checkpoint}" if self.last_checkpoint else "none was written yet"
            raise TrainingDivergedError(
                f"training diverged: a loss became NaN/Inf at step {int(self.first_bad)}; "
                f"stopped without saving; last good checkpoint: {where}. Try a lower learning "
                "rate, train.loss 'hinge' or model.spectral_norm: true"
            )

    def _log(self, step: int) -> None:
        self._raise_if_diverged()
        means = (self.sums / max(self.count, 1)).tolist()
        elapsed = time.perf_counter() - self._t0
        done = step - self._steps0
        world = int(self.meta.get("world_size", 1))
        self.images_per_s = done * self.config.train.batch_size * world / max(elapsed, 1e-9)
        for name, value in zip(self.scalars, means, strict=True):
            self.history.setdefault(name, []).append((step, value))
            if self.writer is not None:
                self.writer.add_scalar(f"train/{name}", value, step)
        if self.writer is not None:
            self.writer.add_scalar("train/images_per_s", self.images_per_s, step)
        if self.bar is not None and not self.bar.disable:
            shown = {n: f"{v:.3f}" for n, v in zip(self.scalars[:2], means, strict=False)}
            self.bar.set_postfix(**shown, img_s=f"{self.images_per_s:.0f}", refresh=False)
        elif self.enabled:
            text = "  ".join(f"{n} {v:.3f}" for n, v in zip(self.scalars, means, strict=True))
            log.info("step %d/%d  %s  %.0f images/s", step, self.config.train.steps, text,
                     self.images_per_s)
        self._reset_window()

    # ---- artefacts ----
    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        gen = self.state.sampling_generator
        was_training = gen.training
        gen.eval()
        out = gen(self.fixed_z).float().cpu()
        gen.train(was_training)
        return out

    def save_samples(self, name: str) -> Path:
        if self.grid is not None:
            return self.grid(self.samples_dir / f"{name}.png")
        samples = self.fixed_samples()
        path = save_grid(samples, self.samples_dir / f"{name}.png", nrow=8)
        channels = samples.shape[1] - 1
        score = mean_pairwise_msssim(samples[:COLLAPSE_SAMPLES, :channels])
        self.history.setdefault("diversity_msssim", []).append((self.state.step, score))
        if self.writer is not None:
            self.writer.add_scalar("samples/mean_pairwise_msssim", score, self.state.step)
        if score > self.config.train.collapse_threshold:
            log.warning(
                "possible mode collapse at step %d: mean pairwise MS-SSIM of the fixed samples "
                "is %.3f (> %.2f); see %s", self.state.step, score,
                self.config.train.collapse_threshold, path,
            )
        return path

    def save_checkpoint(self, gather: bool = True) -> Path | None:
        """Checkpoint the current step; rank 0 writes, and returns the folder.

        Under torchrun every rank must call this (``gather``: their random states are
        collected so that each resumes its own stream); ``gather=False`` saves rank 0's alone
        (on an interrupt, when the other ranks may be anywhere).
        """
        if self.last_saved_step == self.state.step:
            return self.last_checkpoint
        rng_states = self.dist.all_gather(self.state.rng_state()) if gather else None
        if not self.enabled:
            self.last_saved_step = self.state.step
            return None
        self._raise_if_diverged()
        sidecar = {**self.meta, "history": self.history}
        stats = {"images_per_s": self.images_per_s}  # kept out of the hashed sidecar
        self.last_checkpoint = self.state.checkpoint(self.checkpoint_dir, sidecar, rng_states,
                                                     stats=stats)
        self.last_saved_step = self.state.step  # after the write: an interrupted one is redone
        return self.last_checkpoint

    def finish(self) -> TrainResult:
        """Final checkpoint, grid, loss curves and model card."""
        self._raise_if_diverged()
        losses = {k: v[-1][1] for k, v in self.history.items() if v}
        if not self.enabled:
            self.save_checkpoint()  # joins rank 0's gathering of the random states
            return TrainResult(self.run_dir, self.checkpoint_dir, self.state.step,
                               self.images_per_s, losses)
        grid = self.save_samples("final")
        checkpoint = self.save_checkpoint()
        save_curves({k: v for k, v in self.history.items() if k.startswith("loss")},
                    self.run_dir / "loss_curves.png")
        write_text_atomic(self.run_dir / "history.json", json.dumps(self.history))
        write_model_card(self.run_dir, checkpoint, self.meta, self.history, self.state.step,
                         self.images_per_s)
        return TrainResult(self.run_dir, checkpoint, self.state.step, self.images_per_s,
                           losses, grid)
