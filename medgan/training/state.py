"""Everything that makes up one training run's state, and its checkpoint round trip.

``TrainState`` holds the models, the EMA, the optimisers, the AMP scaler and the random
generators. :meth:`TrainState.checkpoint` and :meth:`TrainState.restore` turn it into safetensors
files + sidecar and back, so that resuming reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medgan.checkpoint import (
    build_discriminator,
    build_generator,
    load_weights,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_sidecar,
    save_checkpoint,
)
from medgan.config import MedganConfig
from medgan.distributed import unwrap
from medgan.models import Discriminator, Generator

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Models, EMA, optimisers, scaler and RNGs of a run (``step`` = finished G updates).

    ``generator`` may be wrapped in ``DistributedDataParallel`` under torchrun; ``rng`` lives on
    the training device, ``host_rng`` on the CPU (minibatch picks from a bank kept in host
    memory while training on a GPU).
    """

    generator: Generator | torch.nn.Module
    discriminator: Discriminator | torch.nn.Module
    ema: AveragedModel | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    rng: torch.Generator
    device: torch.device
    host_rng: torch.Generator | None = None
    step: int = 0
    calibrated_step: int = -1  # step at which the EMA's BatchNorm statistics were recomputed
    #: ``(n, rng) -> args`` of one generator call for the EMA calibration (None = ``n`` latents
    #: of an unconditional generator); a conditional model kind sets it
    ema_inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]] | None = None
    #: further safetensors files written with every checkpoint (stem -> tensors)
    extra_files: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def create(cls, config: MedganConfig, image_channels: int, device: torch.device,
               seed: int) -> TrainState:
        torch.manual_seed(seed)
        g = build_generator(config, image_channels).to(device)
        d = build_discriminator(config, image_channels).to(device)
        t = config.train
        ema = None
        if t.ema_decay is not None:
            # BatchNorm statistics are not averaged: they are recomputed for the averaged
            # weights by calibrate_ema() before the EMA generator is used or saved.
            ema = AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                                use_buffers=False)
        opt_g = torch.optim.Adam(g.parameters(), lr=t.lr_g, betas=t.betas)
        opt_d = torch.optim.Adam(d.parameters(), lr=t.lr_d, betas=t.betas)
        fp16 = device.type == "cuda" and amp_dtype(config, device) == torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        rng = torch.Generator(device=device).manual_seed(seed)
        host_rng = torch.Generator().manual_seed(seed)
        return cls(g, d, ema, opt_g, opt_d, scaler, rng, device, host_rng)

    @property
    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator when enabled (BatchNorm calibrated), else the raw one.

        Never the DDP wrapper: its forward would broadcast buffers, a collective that rank 0
        alone must not start.
        """
        if self.ema is None:
            return unwrap(self.generator)
        self.calibrate_ema()
        return self.ema.module

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """One EMA step of the generator weights (the first one copies them).

        The same arithmetic as ``AveragedModel.update_parameters`` with the EMA ``multi_avg_fn``,
        without its per-step copy of the CPU counter ``n_averaged`` to the GPU (a blocking
        copy, i.e. a host synchronisation, on every step).
        """
        if self.ema is None:
            return
        averaged = [p.detach() for p in self.ema.module.parameters()]
        current = [p.detach() for p in unwrap(self.generator).parameters()]
        if int(self.ema.n_averaged) == 0:  # a CPU tensor: no device synchronisation
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        self.ema.n_averaged += 1

    @torch.no_grad()
    def calibrate_ema(self, batches: int = 16, batch_size: int = 64) -> None:
        """Recompute the EMA generator's BatchNorm running statistics for its own weights.

        Averaged weights do not match running statistics gathered by the raw generator, and
        eval-mode samples come out washed out; like SWA's ``update_bn``, we run ``batches``
        forward passes in train mode with a cumulative average. The latents come from a
        private, fixed-seed generator so the training RNG stream is untouched.
        """
        if self.ema is None or self.calibrated_step == self.step:
            return
        model = self.ema.module
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
                 and m.track_running_stats]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        was_training = model.training
        model.train()
        rng = torch.Generator().manual_seed(12345)
        for _ in range(batches):
            if self.ema_inputs is not None:
                model(*self.ema_inputs(batch_size, rng))
            else:
                model(model.sample_latent(batch_size, generator=rng, device=self.device))
        model.train(was_training)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.calibrated_step = self.step

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random generator states (CPU byte tensors), as checkpoints store them."""
        states = {"rng.loop": self.rng.get_state(), "rng.torch_cpu": torch.get_rng_state()}
        if self.host_rng is not None:
            states["rng.host"] = self.host_rng.get_state()
        if self.device.type == "cuda":
            states["rng.torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def _training_tensors(self, rng_states: list[dict[str, torch.Tensor]] | None
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tg, groups_g = optimizer_to_tensors(self.opt_g, "opt_g")
        td, groups_d = optimizer_to_tensors(self.opt_d, "opt_d")
        ranks = rng_states or [self.rng_state()]
        tensors = {**tg, **td, **ranks[0]}  # rank 0 (or the only process): plain names
        for rank, states in enumerate(ranks[1:], start=1):
            tensors.update({f"{name}.rank{rank}": value for name, value in states.items()})
        if self.ema is not None:
            tensors["ema.n_averaged"] = self.ema.n_averaged
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else {}
        return tensors, {"opt_g": groups_g, "opt_d": groups_d, "scaler": scaler}

    def checkpoint(self, checkpoint_dir: Path, sidecar: dict[str, Any],
                   rng_states: list[dict[str, torch.Tensor]] | None = None,
                   stats: dict[str, Any] | None = None) -> Path:
        """Write a full checkpoint (weights, EMA, optimisers, RNGs) for ``self.step``.

        ``rng_states`` holds every rank's :meth:`rng_state` under torchrun (rank order), so that
        each rank resumes its own random stream; None = this process's only. ``stats``
        (timings) are stored outside the hashed sidecar.
        """
        tensors, extra = self._training_tensors(rng_states)
        weights = {"generator": unwrap(self.generator).state_dict(),
                   "discriminator": self.discriminator.state_dict(),
                   "training_state": tensors, **self.extra_files}
        if self.ema is not None:
            self.calibrate_ema()
            weights["generator_ema"] = self.ema.module.state_dict()
        return save_checkpoint(checkpoint_dir, self.step, weights,
                               {**sidecar, "training": extra}, stats=stats)

    def restore(self, folder: Path, rank: int = 0) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`checkpoint`; returns its sidecar.

        Every rank loads the same weights and optimiser state and its own random state
        (``rank``); a rank the checkpoint has no random state for keeps its fresh seed.
        """
        meta = read_sidecar(folder)
        dev = self.device
        unwrap(self.generator).load_state_dict(load_weights(folder, "generator", dev))
        self.discriminator.load_state_dict(load_weights(folder, "discriminator", dev))
        state = load_weights(folder, "training_state", "cpu")
        if self.ema is not None:
            self.ema.module.load_state_dict(load_weights(folder, "generator_ema", dev))
            self.ema.n_averaged.copy_(state["ema.n_averaged"])
        extra = meta["training"]
        optimizer_from_tensors(self.opt_g, state, "opt_g", extra["opt_g"])
        optimizer_from_tensors(self.opt_d, state, "opt_d", extra["opt_d"])
        if extra.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(extra["scaler"])
        self._restore_rng(state, rank, folder)
        self.step = int(meta["step"])
        return meta

    def _restore_rng(self, state: dict[str, torch.Tensor], rank: int, folder: Path) -> None:
        suffix = f".rank{rank}" if rank else ""
        if "rng.loop" + suffix not in state:
            log.warning("%s has no random state for rank %d (saved by fewer processes or on an "
                        "interrupt); this rank restarts its random stream, so the run will not "
                        "repeat an uninterrupted one exactly", folder, rank)
            return
        self.rng.set_state(state["rng.loop" + suffix])
        torch.set_rng_state(state["rng.torch_cpu" + suffix])
        if self.host_rng is not None and "rng.host" + suffix in state:
            self.host_rng.set_state(state["rng.host" + suffix])
        if self.device.type == "cuda" and "rng.torch_cuda" + suffix in state:
            torch.cuda.set_rng_state(state["rng.torch_cuda" + suffix], self.device)


def amp_dtype(config: MedganConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the device and ``train.amp`` (None = full precision)."""
    if device.type != "cuda" or config.train.amp == "off":
        return None
    if config.train.amp == "fp16":
        return torch.float16
    if config.train.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
