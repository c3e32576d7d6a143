"""The GAN training loop (``medgan train``), readable top to bottom.

One iteration = ``d_steps`` discriminator updates then one generator update, as in the
pytorch/examples DCGAN. Real patches come from the cached :class:`~medgan.data.PatchBank`
(on the device when it fits), losses stay on the device and are read back only every
``log_every`` steps, and checkpoints are atomic. Ctrl-C saves a checkpoint and re-raises
``KeyboardInterrupt``; a NaN/Inf loss raises :class:`TrainingDivergedError` and keeps the last
good checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from medgan import distributed
from medgan.checkpoint import build_metadata
from medgan.config import MedganConfig, save_config
from medgan.data import PatchBank, build_patch_bank, load_datalist
from medgan.datasets import bundled_datalist_path
from medgan.devices import preferred_memory_format, resolve_device
from medgan.errors import ConfigError
from medgan.runs import CONFIG_FILE, create_run_dir, plan_run, resolve_run_config
from medgan.threads import apply_config_threads
from medgan.training.batches import PatchSampler
from medgan.training.diffaugment import diff_augment
from medgan.training.inpaint_loop import INPAINT_SCALARS, InpaintRun
from medgan.training.losses import discriminator_loss, generator_loss, gradient_penalty
from medgan.training.monitor import Monitor, TrainResult
from medgan.training.state import TrainState, amp_dtype

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "checkpoint_metadata", "train", "train_loop"]


def _data_source(config: MedganConfig, data: str | Path | None) -> Path:
    """The datalist to train on: ``data``, or the bundled sample of the config's modality."""
    if data is not None:
        return Path(data).resolve()

    if config.modality == "none":
        raise ConfigError("modality 'none' has no bundled sample; pass a datalist", param="data")
    return bundled_datalist_path(config.modality)


def _load_bank(config: MedganConfig, data: Path, run_dir: Path, seed: int,
               skip_bad: bool, progress: bool, write_cache: bool = True) -> PatchBank:
    problems: list[str] | None = [] if skip_bad else None
    cases = load_datalist(data, problems)
    for p in problems or []:
        log.warning("skipping: %s", p)
    cache_dir = config.data.cache_dir or run_dir / "cache"
    return build_patch_bank(cases, config, cache_dir=cache_dir, skip_bad=skip_bad, seed=seed,
                            progress=progress, write_cache=write_cache)


def checkpoint_metadata(config: MedganConfig, bank: PatchBank, seed: int,
                        data_source: str | Path = "", world_size: int = 1) -> dict[str, Any]:
    """The model description every checkpoint of this run records (see
    :func:`medgan.checkpoint.build_metadata`), from the config and the patch bank."""
    return build_metadata(
        config, image_channels=bank.image_channels, spacing_mm=bank.spacing_mm,
        intensity=bank.intensity.to_dict(), training_cases=bank.case_records, seed=seed,
        data_source=data_source, data_fingerprint=bank.fingerprint, n_patches=len(bank),
        n_lesion_patches=int(bank.has_lesion.sum()), world_size=world_size)


def train(
    config: MedganConfig | None, data: str | Path | None = None, out: str | Path = "runs/medgan",
    resume: bool = False, device: str = "auto", seed: int = 0, skip_bad: bool = False,
    progress: bool = True, overrides: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the model of ``config.model.kind`` (a DCGAN, or a lesion inpainter: see
    :mod:`medgan.training.inpaint_loop`) on lesion-centred patches; write checkpoints, grids
    and logs to ``out``.

    Under ``torchrun`` every process calls this; they train together (see
    :mod:`medgan.distributed`) and only rank 0 writes files.

    Args:
        config: validated config; may be None with ``resume`` (the run's own config is used).
        data: datalist (decathlon JSON, imagesTr/labelsTr folder, DICOM folders); None = the
            bundled sarcoma sample of ``config.modality``.
        out: run folder; must be new or empty unless ``resume``. Nothing is created in it
            until the data have loaded.
        resume: continue from the run's latest checkpoint with identical optimiser/RNG state;
            the run's own seed and (when ``data`` is None) its own datalist are used. A run
            with no checkpoint yet starts again from step 0 (its patch cache is reused).
        device: "auto", "cpu" or "cuda" (under torchrun, CUDA means the local rank's GPU).
        seed: seed for weights, patch extraction, noise and augmentation (rank ``r`` draws its
            noise and minibatches from ``seed + r``).
        overrides: with ``resume`` and no ``config``: dotted ``train.*`` changes.
    """
    dist = distributed.setup(resolve_device(device))
    # rank 0 checks the folder; the others must not look once rank 0 may have written there
    plan = dist.broadcast(dist.on_main(lambda: plan_run(out, resume)))
    run_dir = plan.run_dir
    config = resolve_run_config(plan, config, overrides)
    apply_config_threads(config.train.threads)
    if plan.resume:
        record = plan.record or {}
        if "seed" in record and int(record["seed"]) != seed and dist.is_main:
            log.info("resuming with the run's own seed %s", record["seed"])
        seed = int(record.get("seed", seed))
        if data is None and record.get("data_source"):
            data = record["data_source"]
        if plan.restarts and dist.is_main:
            log.warning("%s has no checkpoint yet: training starts again from step 0 (the "
                        "patch cache is reused when it matches)", run_dir)
    if config.train.sync_batchnorm and dist.active and dist.device.type != "cuda":
        raise ConfigError("train.sync_batchnorm needs one CUDA GPU per process; PyTorch's "
                          "SyncBatchNorm does not run on the CPU. Set it to false for CPU runs")
    source = _data_source(config, data)
    # rank 0 builds (and caches) the bank first; the others then load its cache
    bank = dist.main_first(lambda main: _load_bank(config, source, run_dir, seed, skip_bad,
                                                   progress and main, write_cache=main))
    if dist.is_main and not plan.resume:  # after the data loaded: bad input leaves no folder
        create_run_dir(run_dir, seed, source)
        save_config(config, run_dir / CONFIG_FILE)
    state = TrainState.create(config, bank.image_channels, dist.device, seed + dist.rank)
    meta = checkpoint_metadata(config, bank, seed, source, dist.world_size)
    history: dict[str, list[tuple[int, float]]] = {}
    if plan.checkpoint is not None:
        old = state.restore(plan.checkpoint, rank=dist.rank)
        history = {k: [tuple(x) for x in v] for k, v in old.get("history", {}).items()}
        if old["data_fingerprint"] != bank.fingerprint and dist.is_main:
            log.warning("the data differ from those the run started with (fingerprint changed)")
        log.info("resumed from %s at step %d", plan.checkpoint, state.step)
    prepare_models(config, state, dist)
    if config.model.kind == "inpaint":
        run = InpaintRun(config, state, bank, dist, seed)
        monitor = Monitor(run_dir, config, meta, state, history, dist=dist, progress=progress,
                          scalars=INPAINT_SCALARS, grid=run.save_grid)
        loop = lambda: run.loop(monitor)  # noqa: E731
    else:
        sampler = make_sampler(config, state, bank, dist)
        monitor = Monitor(run_dir, config, meta, state, history, dist=dist, progress=progress)
        loop = lambda: train_loop(config, state, sampler, monitor, dist)  # noqa: E731
    monitor.last_checkpoint = plan.checkpoint  # the last good one until a new one is written
    try:
        loop()
    except KeyboardInterrupt:
        if dist.is_main and monitor.finite_so_far():
            path = monitor.save_checkpoint(gather=False)
            log.warning("interrupted at step %d; checkpoint saved to %s", state.step, path)
        raise
    finally:
        monitor.close()
    return monitor.finish()


def memory_format(config: MedganConfig, device: torch.device) -> torch.memory_format:
    """Layout of models and batches (see :func:`~medgan.devices.preferred_memory_format`)."""
    return preferred_memory_format(config.spatial_dims, device, config.train.channels_last)


def prepare_models(config: MedganConfig, state: TrainState, dist: distributed.DistInfo) -> None:
    """Memory format, SyncBatchNorm, DDP and ``torch.compile``, after creation and resume.

    channels-last follows :func:`memory_format` (``train.channels_last``); SyncBatchNorm to
    several CUDA processes (``train.sync_batchnorm``); ``train.compile`` compiles the models in
    place, so checkpoints keep their plain parameter names.
    """
    t = config.train
    layout = memory_format(config, state.device)
    if layout != torch.contiguous_format:
        for model in (state.generator, state.discriminator, state.ema):
            if model is not None:
                model.to(memory_format=layout)
    distributed.wrap(state, dist, sync_batchnorm=t.sync_batchnorm)
    if t.compile:
        distributed.unwrap(state.generator).compile()
        if t.loss != "wgan-gp":  # compiled graphs do not support the penalty's double backward
            state.discriminator.compile()


def make_sampler(config: MedganConfig, state: TrainState, bank: PatchBank,
                 dist: distributed.DistInfo) -> PatchSampler:
    """The minibatch source of this process (its own shard under torchrun)."""
    return PatchSampler(bank, state.device, config.train.batch_size, state.rng,
                        flips=config.train.flip_augment, shard=(dist.rank, dist.world_size),
                        host_rng=state.host_rng,
                        memory_format=memory_format(config, state.device))


def train_loop(config: MedganConfig, state: TrainState, sampler: PatchSampler, monitor: Monitor,
               dist: distributed.DistInfo) -> None:
    """Train from ``state.step`` to ``train.steps``; ``monitor`` sees every finished step.

    Nothing here reads a value back from the device: losses go to the monitor as tensors.
    """
    t = config.train
    g, d = state.generator, state.discriminator
    g_core = distributed.unwrap(g)
    dtype = amp_dtype(config, state.device)
    autocast = (torch.autocast(state.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    channels = g_core.image_channels
    batch = t.batch_size
    g.train()
    d.train()
    monitor.start()
    while state.step < t.steps:
        real = sampler.next()  # (B, C + 1, *P) in [-1, 1]
        # ---- discriminator: maximise log D(x) + log(1 - D(G(z))) (or hinge / WGAN-GP) ----
        for _ in range(t.d_steps):
            z = g_core.sample_latent(batch, generator=state.rng, device=state.device)
            with autocast:
                fake = g(z)
                real_in = diff_augment(real, t.diffaugment, channels, generator=state.rng)
                fake_in = diff_augment(fake.detach(), t.diffaugment, channels,
                                       generator=state.rng)
                d_real, d_fake = d(real_in), d(fake_in)
            loss_d = discriminator_loss(d_real.float(), d_fake.float(), t.loss, t.real_label)
            if t.loss == "wgan-gp" and t.gp_weight > 0:
                loss_d = loss_d + t.gp_weight * gradient_penalty(
                    d, real_in.float(), fake_in.float(), generator=state.rng
                )
            state.opt_d.zero_grad(set_to_none=True)
            state.scaler.scale(loss_d).backward()
            distributed.average_gradients(d, dist)
            state.scaler.step(state.opt_d)
        # ---- generator: maximise log D(G(z)) (non-saturating), reusing the last fake ----
        with autocast:
            d_fake_g = d(diff_augment(fake, t.diffaugment, channels, generator=state.rng))
        loss_g = generator_loss(d_fake_g.float(), t.loss)
        state.opt_g.zero_grad(set_to_none=True)
        state.scaler.scale(loss_g).backward()
        state.scaler.step(state.opt_g)
        state.scaler.update()
        if t.ema_decay is not None:
            state.update_ema(t.ema_decay)
        state.step += 1
        monitor.after_step(loss_d.detach(), loss_g.detach(), d_real.detach(), d_fake.detach())
