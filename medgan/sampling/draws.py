"""The redraw loop: decode latents in batches, post-process masks, redraw rejected samples.

Sample ``i`` of a run with base seed ``seed`` is decoded from ``sample_seed(seed, i, attempt)``;
a draw whose mask is empty after post-processing, or that an ``accept`` filter rejects (e.g.
too similar to a real training patch), is replaced by the next attempt of the same index, so
the output never depends on the batch size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medgan.errors import CheckpointError
from medgan.sampling.loader import DECODE_CHUNK, LoadedGenerator, sample_seed
from medgan.sampling.postprocess import MaskPostprocess

MAX_ATTEMPTS = 20  # draws per sample before giving up
Accept = Callable[[torch.Tensor], torch.Tensor]  # (B, C, *P) images -> (B,) bool keep


@dataclass
class RedrawCounts:
    """How many draws were replaced: empty mask after post-processing / too similar to real /
    lesion below the post-processing ``min_diameter_mm``."""

    empty: int = 0
    similar: int = 0
    small: int = 0


def iter_batches(
    loaded: LoadedGenerator, indices: list[int], seed: int, postprocess: MaskPostprocess,
    batch_size: int = 64, accept: Accept | None = None, counts: RedrawCounts | None = None,
    chunk: int = DECODE_CHUNK,
) -> Iterator[list[tuple[int, int, torch.Tensor, np.ndarray]]]:
    """Yield lists of accepted ``(index, sample seed, image (C, *P) CPU float32 in [-1, 1],
    mask (*P) uint8)``, one list per decoded batch.

    Draws whose mask is empty after ``postprocess``, too small for it
    (:meth:`MaskPostprocess.too_small` at the checkpoint's spacing) or that ``accept`` rejects
    are redrawn with the next attempt seed; after :data:`MAX_ATTEMPTS` a CheckpointError is
    raised.
    Samples come out in batch order, not index order, once redraws happen. ``batch_size``
    latents are handled per step, decoded in forward chunks of ``chunk`` (see
    :meth:`LoadedGenerator.decode`; the output does not depend on ``batch_size``).
    """
    counts = counts if counts is not None else RedrawCounts()
    queue = deque((i, 0) for i in indices)
    c = loaded.image_channels
    while queue:
        todo = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        seeds = [sample_seed(seed, i, a) for i, a in todo]
        pairs = loaded.decode(loaded.latents(seeds), chunk)  # (B, C + 1, *P)
        keep = (accept(pairs[:, :c]) if accept is not None
                else torch.ones(len(todo), dtype=torch.bool)).tolist()
        accepted = []
        for (i, attempt), s, pair, ok in zip(todo, seeds, pairs, keep, strict=True):
            mask = postprocess(pair[-1]) if ok else None
            why = _rejection(mask, postprocess, loaded.spacing_mm)
            if why is None:
                accepted.append((i, s, pair[:c], mask))
                continue
            setattr(counts, why, getattr(counts, why) + 1)
            if attempt + 1 >= MAX_ATTEMPTS:
                raise give_up(loaded, i, why)
            queue.append((i, attempt + 1))
        yield accepted


def iter_samples(
    loaded: LoadedGenerator, indices: list[int], seed: int, postprocess: MaskPostprocess,
    batch_size: int = 64, accept: Accept | None = None, counts: RedrawCounts | None = None,
    chunk: int = DECODE_CHUNK,
) -> Iterator[tuple[int, int, torch.Tensor, np.ndarray]]:
    """:func:`iter_batches`, one sample at a time."""
    for batch in iter_batches(loaded, indices, seed, postprocess, batch_size, accept, counts,
                              chunk):
        yield from batch


def _rejection(mask: np.ndarray | None, postprocess: MaskPostprocess,
               spacing_mm: Sequence[float]) -> str | None:
    """The :class:`RedrawCounts` field a draw counts under, or None when it is kept."""
    if mask is None:
        return "similar"
    if not mask.any():
        return "empty"
    return "small" if postprocess.too_small(mask, spacing_mm) else None


_GIVE_UP = {
    "similar": ("was too similar to a real training patch (max_similarity) in every one of",
                "raise max_similarity, or train with more data / stronger augmentation"),
    "empty": ("had an empty mask after post-processing in every one of",
              "train longer, or lower the post-processing min_size"),
    "small": ("had a lesion below the post-processing min_diameter_mm in every one of",
              "train longer, or lower min_diameter_mm"),
}


def give_up(loaded: LoadedGenerator, index: int, reason: str) -> CheckpointError:
    """The error after :data:`MAX_ATTEMPTS` rejected draws of sample ``index``."""
    why = _GIVE_UP[reason]
    return CheckpointError(f"{loaded.checkpoint_path}: sample {index} {why[0]} {MAX_ATTEMPTS} "
                           f"draws; {why[1]}")
