"""Writing checkpoints and loading their tensors (safetensors only; never a pickle).

Layout of one checkpoint folder (``<run>/checkpoints/step-00000500/``)::

    generator.safetensors        generator weights (+ BatchNorm buffers)
    generator_ema.safetensors    EMA of the generator weights (used for sampling)
    discriminator.safetensors    discriminator weights
    training_state.safetensors   optimiser moments, RNG states (resume only)
    checkpoint.json              config, step, metadata, SHA-256 of every file above
    stats.json                   measured throughput of the session that wrote it (not hashed)

The SHA-256 of ``checkpoint.json`` identifies the checkpoint
(:func:`~medgan.checkpoint.files.checkpoint_sha256`): two runs that produce identical weights,
history and settings have the same one, because timings live in ``stats.json``.

A checkpoint is written into a temporary folder and renamed into place, then
``<run>/checkpoints/latest.json`` is replaced atomically; a crash at any moment leaves either the
old or the new checkpoint, never a mix. Loading never unpickles: only safetensors and JSON are
read, files are verified against the recorded hashes, and pickle files are refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medgan._version import __version__
from medgan.atomic import write_json_atomic
from medgan.checkpoint.files import (
    FORMAT_VERSION,
    LATEST,
    SIDECAR,
    STATS,
    kept_message,
    sha256_file,
)
from medgan.errors import CheckpointError, OutputError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    checkpoint_dir: Path, step: int, weights: Mapping[str, Mapping[str, torch.Tensor]],
    sidecar: dict[str, Any], keep: int = 2, stats: dict[str, Any] | None = None,
) -> Path:
    """Write ``weights`` (file stem -> state dict) and the sidecar as ``step-<step>``.

    ``stats`` (timings) go to ``stats.json``, outside what :func:`checkpoint_sha256` covers.

    Returns the folder; older checkpoints beyond the newest ``keep`` are removed. A write that
    fails (disk full, no permission) raises :class:`OutputError` and leaves the previous
    checkpoint and ``latest.json`` as they were.
    """
    name = f"step-{step:08d}"
    final = checkpoint_dir / name
    tmp = checkpoint_dir / f".{name}.tmp{os.getpid()}"
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        hashes = {}
        for stem, state in weights.items():
            path = tmp / f"{stem}.safetensors"
            save_file(_tensors(state), str(path))
            hashes[path.name] = sha256_file(path)
        meta = {**sidecar, "format_version": FORMAT_VERSION, "medgan_version": __version__,
                "step": step, "files": hashes}
        write_json_atomic(tmp / SIDECAR, meta)
        if stats:
            write_json_atomic(tmp / STATS, stats)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # the same step written again (e.g. on resume): swap, never delete
            old = checkpoint_dir / f".{name}.old{os.getpid()}"  # what latest.json points to
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)  # put back what latest.json points to
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(checkpoint_dir)
        write_json_atomic(checkpoint_dir / LATEST, {"latest": name, "step": step})
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(err, "strerror", None) or str(err)
        raise OutputError(f"{checkpoint_dir}: cannot write checkpoint {name} ({reason}); "
                          f"{kept_message(checkpoint_dir)}") from None
    except BaseException:  # an interrupt: drop the half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(checkpoint_dir, keep, protect=name)
    return final


def _prune(checkpoint_dir: Path, keep: int, protect: str) -> None:
    folders = sorted(p for p in checkpoint_dir.glob("step-*") if p.is_dir())
    for old in folders[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoint_dir.glob(".step-*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed writer
    for old in checkpoint_dir.glob(".step-*.old*"):  # a writer killed between its two renames
        final = checkpoint_dir / old.name[1:].rsplit(".old", 1)[0]
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)


def load_weights(folder: Path, stem: str, device: str | torch.device = "cpu"
                 ) -> dict[str, torch.Tensor]:
    """Load one verified safetensors file of a checkpoint folder."""
    path = folder / f"{stem}.safetensors"
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({err})") from None


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str
                         ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split an optimiser state dict into tensors (safetensors) and JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {
        f"{prefix}.{idx}.{key}": torch.as_tensor(value)
        for idx, state in sd["state"].items() for key, value in state.items()
    }
    return tensors, sd["param_groups"]


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                           prefix: str, param_groups: list[dict[str, Any]]) -> None:
    """Restore the moments and step counts; ``lr`` and ``betas`` stay those ``opt`` was built
    with (the current config), so that ``train.lr_*`` changed on resume takes effect."""
    configured = [{k: g[k] for k in ("lr", "betas") if k in g} for g in opt.param_groups]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": param_groups})
    for group, settings in zip(opt.param_groups, configured, strict=True):
        group.update(settings)
