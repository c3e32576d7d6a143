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
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medgan._version import __version__
from medgan.config import MedganConfig, save_config
from medgan.data import PatchBank, build_patch_bank, load_datalist
from medgan.devices import preferred_memory_format, resolve_device
from medgan.errors import CheckpointError, ConfigError, OutputError
from medgan.threads import apply_config_threads
from medgan.training import distributed
from medgan.training.batches import PatchSampler
from medgan.training.checkpoint import read_sidecar, resolve_checkpoint
from medgan.training.diffaugment import diff_augment
from medgan.training.losses import discriminator_loss, generator_loss, gradient_penalty
from medgan.training.monitor import Monitor
from medgan.training.state import TrainState, amp_dtype

log = logging.getLogger(__name__)
FIXED_SAMPLES = 64


@dataclass
class TrainResult:
    """What a finished (or resumed-to-completion) run produced."""

    run_dir: Path
    checkpoint: Path
    steps: int
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)
    grid: Path | None = None


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not run_dir.is_dir():
            raise CheckpointError(f"{run_dir}: --resume given but the run folder does not exist")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise OutputError(
            f"{run_dir}: run folder already exists and is not empty; pass --resume to continue "
            "that run or choose another --out"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{run_dir}: cannot write to the run folder ({err.strerror})") from None


def _data_source(config: MedganConfig, data: str | Path | None) -> Path:
    """The datalist to train on: ``data``, or the bundled sample of the config's modality."""
    if data is not None:
        return Path(data).resolve()
    from medgan.datasets import sample_datalist_path

    if config.modality == "none":
        raise ConfigError("modality 'none' has no bundled sample; pass --data DATALIST")
    return sample_datalist_path(config.modality)


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
    """Everything sampling needs besides the weights (recorded in every checkpoint).

    ``world_size`` is the number of training processes (torchrun), each with
    ``train.batch_size`` patches per step.
    """
    return {
        "config": config.to_dict(), "seed": seed, "data_source": str(data_source),
        "modality": config.modality,
        "spatial_dims": config.spatial_dims, "patch_size": config.data.patch_size,
        "image_channels": bank.image_channels, "latent_dim": config.model.latent_dim,
        "spacing_mm": list(bank.spacing_mm), "intensity": bank.intensity.to_dict(),
        "lesion_labels": config.data.lesion_labels, "data_fingerprint": bank.fingerprint,
        "n_cases": len(bank.case_ids), "n_patches": len(bank),
        "n_lesion_patches": int(bank.has_lesion.sum()), "medgan_version": __version__,
        "world_size": world_size,
    }


def _resume_config(run_dir: Path, config: MedganConfig | None, overrides: dict[str, Any] | None
                   ) -> tuple[MedganConfig, Path, dict[str, Any]]:
    """The config to resume with, the checkpoint folder and its sidecar.

    Without ``config`` the run's own config is used, with ``overrides`` (dotted ``train.*``
    keys, e.g. ``{"train.steps": 3000}``) applied.
    """
    folder = resolve_checkpoint(run_dir)
    meta = read_sidecar(folder)
    from medgan.config import config_from_dict

    source = str(folder / "checkpoint.json")
    saved = config_from_dict(meta["config"], source=source)
    if config is None and overrides:
        bad = [k for k in overrides if not k.startswith("train.")]
        if bad:
            raise ConfigError(f"{bad[0]}: only train.* settings may change on resume")
        data = saved.to_dict()
        for key, value in overrides.items():
            data["train"][key.split(".", 1)[1]] = value
        saved = config_from_dict(data, source="--set/--steps")
    if config is not None:
        if config.model != saved.model or config.data != saved.data or \
                config.modality != saved.modality or config.spatial_dims != saved.spatial_dims:
            raise ConfigError(
                f"{run_dir}: --config changes the model, data or modality of the run being "
                "resumed; only train.* settings (e.g. train.steps) may change on resume"
            )
        saved = saved.model_copy(update={"train": config.train})
    return saved, folder, meta


def train(
    config: MedganConfig | None, data: str | Path | None = None, out: str | Path = "runs/medgan",
    resume: bool = False, device: str = "auto", seed: int = 0, skip_bad: bool = False,
    progress: bool = True, overrides: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a DCGAN on lesion-centred patches; write checkpoints, grids and logs to ``out``.

    Under ``torchrun`` every process calls this; they train together (see
    :mod:`medgan.training.distributed`) and only rank 0 writes files.

    Args:
        config: validated config; may be None with ``resume`` (the run's own config is used).
        data: datalist (decathlon JSON, imagesTr/labelsTr folder, DICOM folders); None = the
            bundled sarcoma sample of ``config.modality``.
        out: run folder; must be new or empty unless ``resume``.
        resume: continue from the run's latest checkpoint with identical optimiser/RNG state;
            the run's own seed and (when ``data`` is None) its own datalist are used.
        device: "auto", "cpu" or "cuda" (under torchrun, CUDA means the local rank's GPU).
        seed: seed for weights, patch extraction, noise and augmentation (rank ``r`` draws its
            noise and minibatches from ``seed + r``).
        overrides: with ``resume`` and no ``config``: dotted ``train.*`` changes.
    """
    run_dir = Path(out)
    dist = distributed.setup(resolve_device(device))
    dist.on_main(lambda: _prepare_run_dir(run_dir, resume))
    resume_from = None
    if resume:
        config, resume_from, old_meta = _resume_config(run_dir, config, overrides)
        if int(old_meta.get("seed", seed)) != seed and dist.is_main:
            log.info("resuming with the run's own seed %s", old_meta["seed"])
        seed = int(old_meta.get("seed", seed))
        if data is None and old_meta.get("data_source"):
            data = old_meta["data_source"]
    if config is None:
        raise ConfigError("a --config is required unless --resume is given")
    apply_config_threads(config.train.threads)
    if config.train.sync_batchnorm and dist.active and dist.device.type != "cuda":
        raise ConfigError("train.sync_batchnorm needs one CUDA GPU per process; PyTorch's "
                          "SyncBatchNorm does not run on the CPU. Set it to false for CPU runs")
    source = _data_source(config, data)
    # rank 0 builds (and caches) the bank first; the others then load its cache
    bank = dist.main_first(lambda main: _load_bank(config, source, run_dir, seed, skip_bad,
                                                   progress and main, write_cache=main))
    if dist.is_main and not resume:  # after the data loaded: bad input leaves --out empty
        save_config(config, run_dir / "config.yaml")
    state = TrainState.create(config, bank.image_channels, dist.device, seed + dist.rank)
    meta = checkpoint_metadata(config, bank, seed, source, dist.world_size)
    history: dict[str, list[tuple[int, float]]] = {}
    if resume_from is not None:
        old = state.restore(resume_from, rank=dist.rank)
        history = {k: [tuple(x) for x in v] for k, v in old.get("history", {}).items()}
        if old["data_fingerprint"] != bank.fingerprint and dist.is_main:
            log.warning("the data differ from those the run started with (fingerprint changed)")
        log.info("resumed from %s at step %d", resume_from, state.step)
    prepare_models(config, state, dist)
    sampler = make_sampler(config, state, bank, dist)
    monitor = Monitor(run_dir, config, meta, state, history, dist=dist, progress=progress)
    monitor.last_checkpoint = resume_from  # the last good one until a new one is written
    try:
        train_loop(config, state, sampler, monitor, dist)
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


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config a run was started with (from its latest checkpoint)."""
    return json.loads((resolve_checkpoint(run_dir) / "checkpoint.json").read_text())["config"]
