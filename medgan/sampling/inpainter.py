"""A loaded lesion inpainter (``model.kind: inpaint``) and what is needed to use it on scans.

:func:`medgan.sampling.load_generator` returns a :class:`LoadedInpainter` for an inpainting
checkpoint: the generator in eval mode, its intensity mapping and spacing, the erase margin in
voxels and the training lesion masks the checkpoint carries. :meth:`LoadedInpainter.inpaint`
restores the erase region of patches; :class:`medgan.augment.RandLesionInpaint` and
:func:`medgan.sampling.cases.write_cases` insert lesions into whole scans with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.checkpoint import CheckpointSpec
from medgan.errors import ConfigError
from medgan.models.inpaint import InpaintGenerator, erase_region
from medgan.sampling.facts import CheckpointFacts


@dataclass
class LoadedInpainter(CheckpointFacts):
    """An :class:`~medgan.models.inpaint.InpaintGenerator` in eval mode plus checkpoint facts.

    ``lesion_masks`` ``(N, *P)`` bool are training lesion masks stored with the checkpoint
    (None when it has none); ``generator.erase_margin`` is the erase margin in voxels.
    """

    generator: InpaintGenerator = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)
    checkpoint_path: Path
    checkpoint_sha256: str
    device: torch.device
    spec: CheckpointSpec = field(repr=False)
    use_ema: bool = True
    lesion_masks: np.ndarray | None = field(default=None, repr=False)

    @property
    def erase_margin(self) -> int:
        """Margin in voxels by which a mask is dilated to the erase region."""
        return int(self.generator.erase_margin)

    @torch.no_grad()
    def inpaint(self, context: torch.Tensor, mask: torch.Tensor, seed: int = 0,
                erase: torch.Tensor | None = None) -> torch.Tensor:
        """Restore the erase region of patches in model space.

        Args:
            context: ``(B, C, *P)`` or ``(C, *P)`` patches in [-1, 1] (values inside the
                erase region are ignored).
            mask: lesion mask ``(B, 1, *P)`` / ``(1, *P)`` in {0, 1}; empty = healthy fill.
            seed: noise seed (sample ``i`` of a batch uses the ``i``-th draw of it).
            erase: erase region of the same shape as ``mask``; None = ``mask`` dilated by
                :attr:`erase_margin`.

        Returns:
            The patches ``(B, C, *P)`` (or ``(C, *P)``) on the CPU: the input outside the erase
            region, bit for bit; the generator's fill inside.
        """
        single = context.ndim == self.spatial_dims + 1
        x = context[None] if single else context
        m = mask[None] if single else mask
        if m.shape[0] != x.shape[0]:
            raise ConfigError(f"mask must have one entry per context patch ({x.shape[0]}), not "
                              f"{m.shape[0]}")
        dev = self.device
        m = (m > 0.5).float().to(dev)
        e = erase_region(m, self.erase_margin) if erase is None else (erase > 0.5).float().to(dev)
        noise = self.generator.sample_noise(x.shape[0], torch.Generator().manual_seed(int(seed)),
                                            device=dev)
        out = self.generator(x.float().to(dev), m, e, noise).float().cpu()
        return out[0] if single else out
