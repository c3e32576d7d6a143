"""Load a trained generator from a checkpoint, with everything needed to use its output.

A checkpoint carries its own config, intensity mapping and voxel spacing (see
:mod:`medgan.checkpoint.metadata`), so sampling needs nothing but its path. Loading goes through
:func:`~medgan.checkpoint.read_sidecar`, which verifies every file's SHA-256 and refuses
pickles; weights are read from safetensors only, into the network
:func:`~medgan.checkpoint.build_generator` builds for the checkpoint's model kind.

Every generated sample is identified by one integer seed: its latent vector is drawn on the CPU
from ``torch.Generator().manual_seed(seed)``, so ``generate(1, seed=s)`` reproduces a sample on
any device. :func:`sample_seed` derives the seed of sample ``index`` of a run started with
``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.checkpoint import (
    SIDECAR,
    CheckpointSpec,
    build_generator,
    checkpoint_sha256,
    load_weights,
    read_sidecar,
    read_spec,
    resolve_checkpoint,
)
from medgan.checkpoint.files import LESION_MASKS
from medgan.checkpoint.metadata import TRAINING_KEYS
from medgan.devices import preferred_memory_format, resolve_device
from medgan.errors import CheckpointError, ConfigError
from medgan.models.inpaint import mm_to_voxels
from medgan.sampling.facts import CheckpointFacts, spec_field
from medgan.sampling.inpainter import LoadedInpainter

log = logging.getLogger(__name__)

SEED_BITS = 53  # derived seeds stay exact in JSON readers that use doubles
DECODE_CHUNK = 16  # latents per generator forward pass (fixed: see LoadedGenerator.decode)


def sample_seed(seed: int, index: int, attempt: int = 0) -> int:
    """Seed of sample ``index`` (and retry ``attempt``) of a run with base ``seed``.

    Derived with NumPy's ``SeedSequence``, so neighbouring indices give unrelated streams;
    the result is below 2**53.
    """
    state = np.random.SeedSequence([seed, index, attempt]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(64 - SEED_BITS))


@dataclass
class LoadedGenerator(CheckpointFacts):
    """A generator in eval mode plus the checkpoint facts needed to interpret its output.

    ``spec`` is the validated checkpoint description (read from ``metadata``, the raw sidecar
    entries without the training state, when not given).
    """

    generator: torch.nn.Module = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)
    checkpoint_path: Path
    checkpoint_sha256: str
    device: torch.device
    use_ema: bool = True
    spec: CheckpointSpec | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = read_spec(self.metadata, self.checkpoint_path)

    # ---- checkpoint facts (the shared ones in CheckpointFacts) ----
    latent_dim = spec_field("latent_dim", "Size of the latent vector z.")

    @property
    def patch_shape(self) -> tuple[int, ...]:
        """``P`` of the generated ``(C + 1, *P)`` pairs."""
        return (self.patch_size,) * self.spatial_dims


    # ---- generation ----
    def latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One latent vector per seed, drawn on the CPU -> ``(len(seeds), latent_dim)``."""
        if not seeds:
            return torch.zeros(0, self.latent_dim)
        return torch.cat([self._draw(1, torch.Generator().manual_seed(int(s))) for s in seeds])

    def _draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        return self.generator.sample_latent(n, generator=generator, device=device).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor, chunk: int = DECODE_CHUNK,
               output_device: str | torch.device | None = "cpu") -> torch.Tensor:
        """Latents ``(n, latent_dim)`` -> pairs ``(n, C + 1, *P)`` in [-1, 1], last = mask.

        Every forward pass sees exactly ``chunk`` latents (the last group is zero-padded):
        kernels may round differently for different batch shapes, so a fixed shape makes each
        sample's output independent of how many others are decoded with it (bit for bit, on
        the same device). Results are moved to ``output_device`` chunk by chunk (None keeps
        them on the generator's device).
        """
        if chunk < 1:
            raise ConfigError(f"chunk must be a positive integer, not {chunk}")
        out = []
        for start in range(0, z.shape[0], chunk):
            part = z[start:start + chunk].to(self.device, torch.float32)
            k = part.shape[0]
            if k < chunk:
                part = torch.cat([part, part.new_zeros(chunk - k, part.shape[1])])
            pairs = self.generator(part)[:k].float().contiguous()
            out.append(pairs if output_device is None else pairs.to(output_device))
        if not out:
            dev = self.device if output_device is None else torch.device(output_device)
            return torch.zeros(0, self.image_channels + 1, *self.patch_shape, device=dev)
        return torch.cat(out)

    def generate(self, n: int, seed: int | None = None, generator: torch.Generator | None = None,
                 batch_size: int = 64, output_device: str | torch.device | None = "cpu"
                 ) -> torch.Tensor:
        """``n`` pairs ``(n, C + 1, *P)`` in model space [-1, 1] (image channels, then mask).

        Latents come from ``generator``, else from a CPU generator seeded with ``seed``, else
        from torch's global RNG. ``batch_size`` latents are decoded and moved per step (in
        forward chunks of :data:`DECODE_CHUNK`). ``generate(1, seed=s)[0]`` is bit for bit the
        sample that :func:`medgan.sampling.sample` records with seed ``s`` (same device).
        """
        if n < 0:
            raise ConfigError(f"n must be a non-negative integer, not {n}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size}")
        if seed is not None and generator is not None:
            raise ConfigError("pass either seed or generator to generate(), not both")
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        z = self._draw(n, generator)  # all at once: the stream must not depend on batch_size
        parts = [self.decode(z[start:start + batch_size], output_device=output_device)
                 for start in range(0, n, batch_size)]
        return torch.cat(parts) if parts else self.decode(z, output_device=output_device)


def _weights_stem(meta: dict[str, Any], folder: Path, use_ema: bool) -> str:
    if not use_ema:
        return "generator"
    if "generator_ema.safetensors" in meta["files"]:
        return "generator_ema"
    log.info("%s: no EMA weights (train.ema_decay was null); using generator.safetensors",
             folder)
    return "generator"


def load_generator(path: str | Path, device: str | torch.device = "cpu",
                   use_ema: bool = True, kind: str | None = None
                   ) -> LoadedGenerator | LoadedInpainter:
    """Load the generator of a checkpoint for sampling.

    A ``dcgan`` checkpoint gives a :class:`LoadedGenerator` (latent -> image + mask pairs), an
    ``inpaint`` one a :class:`~medgan.sampling.inpainter.LoadedInpainter`.

    Args:
        path: run folder, its ``checkpoints/`` folder (latest checkpoint) or one checkpoint
            folder.
        device: "cpu", "cuda", "cuda:1" or "auto".
        use_ema: load the EMA weights (``generator_ema.safetensors``, the better sampler) when
            the checkpoint has them; False loads ``generator.safetensors``.
        kind: the model kind the caller needs (``"dcgan"``, ``"inpaint"``); None = any.

    Raises:
        CheckpointError: missing, tampered, pickled or incompatible checkpoint, or one of
            another ``kind``.
    """
    folder = resolve_checkpoint(path)
    meta = read_sidecar(folder)  # verifies hashes and format_version, refuses pickles
    sidecar = folder / SIDECAR
    spec = read_spec(meta, sidecar)
    if kind is not None and spec.kind != kind:
        raise CheckpointError(f"{folder}: holds a {spec.kind!r} model, but a {kind!r} model is "
                              "needed here")
    config = spec.config
    dev = resolve_device(device)
    stem = _weights_stem(meta, folder, use_ema)
    net = build_generator(config, spec.image_channels)
    try:
        net.load_state_dict(load_weights(folder, stem, "cpu"))
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise CheckpointError(f"{folder / (stem + '.safetensors')}: weights do not fit the "
                              f"generator described in {SIDECAR} ({first})") from None
    layout = preferred_memory_format(config.spatial_dims, dev, config.train.channels_last)
    net.to(dev, memory_format=layout).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    public = {k: v for k, v in meta.items() if k not in TRAINING_KEYS}
    if spec.kind == "inpaint":
        net.erase_margin = mm_to_voxels(config.inpaint.erase_margin_mm, spec.spacing_mm,
                                        spec.spatial_dims)
        masks = None
        if f"{LESION_MASKS}.safetensors" in meta["files"]:
            masks = load_weights(folder, LESION_MASKS, "cpu")["masks"].numpy() > 0
        return LoadedInpainter(net, public, folder, checkpoint_sha256(folder), dev, spec,
                               use_ema=stem == "generator_ema", lesion_masks=masks)
    return LoadedGenerator(net, public, folder, checkpoint_sha256(folder), dev,
                           use_ema=stem == "generator_ema", spec=spec)
