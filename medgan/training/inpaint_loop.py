"""The training loop of ``model.kind: inpaint`` (erase-and-restore), read top to bottom.

Same run folder, patch bank, checkpoints, resume, EMA, TensorBoard and model card as the DCGAN
loop (:mod:`medgan.training.trainer` creates the :class:`TrainState` and the
:class:`Monitor`); what differs is the step: a real minibatch becomes a conditional batch
(context, mask ``M``, erase region ``E``, see :func:`build_conditional_batch`), then one
discriminator and one generator update (:func:`inpaint_train_step`). Every random draw comes
from the state's checkpointed generators, so a resumed run repeats an uninterrupted one.

Checkpoints also hold ``lesion_masks.safetensors``: up to :data:`MAX_MASKS` training lesion
masks (shapes only), the default lesion shapes when the checkpoint inserts lesions
(``medgan sample --hosts``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medgan import distributed
from medgan.checkpoint.files import LESION_MASKS
from medgan.config import MedganConfig
from medgan.data import PatchBank
from medgan.errors import ConfigError, DataError
from medgan.training.batches import PatchSampler
from medgan.training.inpaint_step import (
    InpaintSettings,
    build_conditional_batch,
    inpaint_train_step,
    save_inpaint_grid,
)
from medgan.training.monitor import Monitor
from medgan.training.state import TrainState

#: Scalars the inpainting loop reports per step.
INPAINT_SCALARS = ("loss_d", "loss_g_adv", "loss_l1")
#: Largest number of training lesion masks stored with a checkpoint.
MAX_MASKS = 256


def training_masks(bank: PatchBank, limit: int = MAX_MASKS) -> torch.Tensor:
    """Up to ``limit`` lesion masks ``(N, *P)`` uint8 of the bank, evenly spaced in its order."""
    masks = bank.pairs()[bank.has_lesion.bool(), -1] > 0
    if len(masks) == 0:
        raise DataError("the patch bank holds no lesion patch: the inpainter needs lesion masks "
                        "to learn from (check data.lesion_labels)")
    pick = np.unique(np.linspace(0, len(masks) - 1, min(limit, len(masks))).round().astype(int))
    return masks[torch.from_numpy(pick)].to(torch.uint8).contiguous()


class InpaintRun:
    """The inpainting loop bound to one run's state and patch bank.

    Sets ``state.ema_inputs`` (EMA BatchNorm calibration on conditional batches) and
    ``state.extra_files`` (the training masks) and the generators' ``erase_margin``.
    """

    def __init__(self, config: MedganConfig, state: TrainState, bank: PatchBank,
                 dist: distributed.DistInfo, seed: int) -> None:
        if dist.active:
            raise ConfigError("model.kind 'inpaint' trains in one process; run medgan train "
                              "without torchrun")
        self.config, self.state, self.seed = config, state, seed
        self.settings = InpaintSettings.from_config(config, bank.image_channels, bank.spacing_mm)
        for net in (distributed.unwrap(state.generator),
                    state.ema.module if state.ema is not None else None):
            if net is not None:
                net.erase_margin = self.settings.erase_margin
        self.pairs = bank.pairs().float()
        self.sampler = PatchSampler(bank, state.device, config.train.batch_size, state.rng,
                                    flips=config.train.flip_augment, host_rng=state.host_rng)
        lesion = torch.nonzero(bank.has_lesion.bool()).flatten()
        rows = lesion if len(lesion) else torch.arange(len(self.pairs))
        pick = np.linspace(0, len(rows) - 1, min(config.inpaint.grid_samples, len(rows)))
        self.grid_pairs = self.pairs[rows[torch.from_numpy(pick.round().astype(int))]]
        state.ema_inputs = self.calibration_inputs
        state.extra_files = {LESION_MASKS: {"masks": training_masks(bank)}}

    def _numpy_rng(self, generator: torch.Generator) -> np.random.Generator:
        """A NumPy generator seeded by one draw of a (checkpointed) CPU torch generator."""
        return np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))

    def calibration_inputs(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``(x, mask, erase, noise)`` of ``n`` random conditional samples from ``rng``."""
        dev = self.state.device
        rows = torch.randint(len(self.pairs), (n,), generator=rng)
        batch = build_conditional_batch(self.pairs[rows].to(dev), self.settings,
                                        self._numpy_rng(rng))
        noise = distributed.unwrap(self.state.generator).sample_noise(n, rng, device=dev)
        return batch.x, batch.mask, batch.erase, noise

    def save_grid(self, path: Path) -> Path:
        """context | inpainted | real | mask of the fixed grid patches (sampling generator)."""
        gen = self.state.sampling_generator
        was_training = gen.training
        try:
            return save_inpaint_grid(gen, self.grid_pairs, path, self.settings, seed=self.seed)
        finally:
            gen.train(was_training)

    def loop(self, monitor: Monitor) -> None:
        """Train from ``state.step`` to ``train.steps``; ``monitor`` records every step."""
        state, t, s = self.state, self.config.train, self.settings
        g, critics = state.generator, state.discriminator
        g.train()
        critics.train()
        monitor.start()
        while state.step < t.steps:
            real = self.sampler.next()  # (B, C + 1, *P) in [-1, 1]
            batch = build_conditional_batch(real, s, self._numpy_rng(state.host_rng))
            noise = g.sample_noise(t.batch_size, state.rng, device=state.device)
            # ---- one D update, then one G update (adversarial + L1 inside E) ----
            losses = inpaint_train_step(g, critics.global_net, state.opt_g, state.opt_d, batch,
                                        noise, s, critics.local)
            if t.ema_decay is not None:
                state.update_ema(t.ema_decay)
            state.step += 1
            monitor.record(torch.tensor([losses[name] for name in INPAINT_SCALARS],
                                        device=state.device))
