"""``medgan sample``: generate N image + mask pairs from a checkpoint as a MONAI-ready dataset.

Output folder::

    imagesTr/synth_00000.nii.gz   image in physical units (float32), RAS affine from spacing_mm
    labelsTr/synth_00000.nii.gz   post-processed binary mask (uint8)
    dataset.json                  decathlon datalist ("training"), every case marked synthetic
    contact_sheet.png             the first 64 pairs, mask outlines in red

Reproducibility: sample ``i`` is drawn from its own seed ``sample_seed(seed, i, attempt)``
(recorded per case in ``dataset.json``), so the same checkpoint and seed give byte-identical
files whatever the batch size, and ``LoadedGenerator.generate(1, seed=case["seed"])`` reproduces
one case. A draw whose mask is empty after post-processing, whose lesion is smaller than the
post-processing ``min_diameter_mm``, or that is too similar to a real training patch (with
``max_similarity``) is replaced by the next attempt of the same index.

Crash safety: files are written into ``<out>/.partial-<pid>/`` and moved into place at the end;
``dataset.json`` is removed before and written (atomically) after the move, so it never lists a
missing or half-written file. On any error or Ctrl-C the partial folder is removed; the previous
contents of ``out`` are untouched unless the interrupt hits the final move (then there is no
``dataset.json``). A partial folder left by a killed process is removed by the next run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medgan._version import __version__
from medgan.atomic import write_json_atomic
from medgan.errors import CheckpointError, ConfigError, DataError, OutputError
from medgan.sampling.loader import (
    DECODE_CHUNK,
    LoadedGenerator,
    load_generator,
    resolve_device,
    sample_seed,
)
from medgan.sampling.postprocess import MaskPostprocess
from medgan.sampling.writer import synthetic_descrip, write_pair
from medgan.training import distributed

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
NAME = "synth_{:05d}.nii.gz"
NAME_RE = re.compile(r"^synth_(\d{5,})\.nii\.gz$")
MAX_ATTEMPTS = 20  # draws per sample before giving up
CONTACT_SHEET_MAX = 64
MODALITY_NAMES = {"ct": "CT", "mr": "MR", "pet": "PET", "none": "image"}
Accept = Callable[[torch.Tensor], torch.Tensor]  # (B, C, *P) images -> (B,) bool keep


@dataclass
class SampleResult:
    """What :func:`sample` wrote; ``seconds`` covers generation + writing (not loading)."""

    out: Path
    datalist: Path
    contact_sheet: Path
    n: int
    seed: int
    checkpoint: Path
    checkpoint_sha256: str
    seeds: list[int]
    n_redrawn_empty: int
    n_redrawn_similar: int
    seconds: float
    n_redrawn_small: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


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
    are redrawn with the next attempt seed; after :data:`MAX_ATTEMPTS` a CheckpointError is raised.
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
                raise _give_up(loaded, i, why)
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


def _give_up(loaded: LoadedGenerator, index: int, reason: str) -> CheckpointError:
    why = _GIVE_UP[reason]
    return CheckpointError(f"{loaded.checkpoint_path}: sample {index} {why[0]} {MAX_ATTEMPTS} "
                           f"draws; {why[1]}")


def _similarity_filter(loaded: LoadedGenerator, real_datalist: str | Path, max_similarity: float,
                       progress: bool) -> Accept:
    """Reject images whose NCC to the nearest real training patch exceeds the threshold."""
    from medgan.config import config_from_dict
    from medgan.data import build_patch_bank, load_datalist
    from medgan.evaluation.memorisation import nearest_real_patches

    config = config_from_dict(loaded.metadata["config"], source=str(loaded.checkpoint_path))
    bank = build_patch_bank(load_datalist(real_datalist), config,
                            seed=int(loaded.metadata.get("seed", 0)), progress=progress)
    if bank.image_channels != loaded.image_channels:
        raise DataError(f"{real_datalist}: images have {bank.image_channels} channel(s) but the "
                        f"generator makes {loaded.image_channels}")
    real = bank.images.to(loaded.device)

    def accept(images: torch.Tensor) -> torch.Tensor:
        _, ncc = nearest_real_patches(images.to(loaded.device), real)
        return (ncc <= max_similarity).cpu()

    return accept


# ---- output folder ----
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours
        return True
    return True


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder (unless overwrite); remove partial folders of dead runs."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if not out.exists():
        return
    for p in out.glob(PARTIAL_PREFIX + "*"):
        pid = p.name[len(PARTIAL_PREFIX):]
        if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
            raise OutputError(f"{out}: another medgan sample (pid {pid}) is writing here")
        shutil.rmtree(p, ignore_errors=True)
    if not overwrite and any(out.iterdir()):
        raise OutputError(
            f"{out}: output folder is not empty; pass --overwrite to replace its contents")


def _finalise(partial: Path, out: Path, n: int, datalist: dict[str, Any]) -> None:
    """Move the finished files into ``out``, drop outdated synth files, write dataset.json."""
    (out / "dataset.json").unlink(missing_ok=True)  # never list files while they change
    for sub in ("imagesTr", "labelsTr"):
        if not (out / sub).exists():  # a new dataset: one rename instead of one per file
            os.replace(partial / sub, out / sub)
            continue
        for f in sorted((partial / sub).iterdir()):
            os.replace(f, out / sub / f.name)
        for f in (out / sub).iterdir():  # left by an earlier, larger run (overwrite)
            m = NAME_RE.match(f.name)
            if m and int(m.group(1)) >= n:
                f.unlink()
    os.replace(partial / "contact_sheet.png", out / "contact_sheet.png")
    write_json_atomic(out / "dataset.json", datalist)
    shutil.rmtree(partial, ignore_errors=True)


def _datalist(loaded: LoadedGenerator, seeds: list[int], seed: int,
              post: MaskPostprocess, max_similarity: float | None) -> dict[str, Any]:
    sha = loaded.checkpoint_sha256
    cases = [{"image": f"./imagesTr/{NAME.format(i)}", "label": f"./labelsTr/{NAME.format(i)}",
              "synthetic": True, "seed": s, "checkpoint_sha256": sha}
             for i, s in enumerate(seeds)]
    name = MODALITY_NAMES[loaded.modality]
    return {
        "name": f"medgan synthetic {name} lesions",
        "description": f"{len(seeds)} synthetic lesion image + mask pairs generated by medgan "
                       f"from checkpoint {sha[:12]} (seed {seed}); not patient data.",
        "tensorImageSize": "3D" if loaded.image_channels == 1 else "4D",
        "modality": {str(c): name for c in range(loaded.image_channels)},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": len(seeds), "numTest": 0, "synthetic": True,
        "medgan": {
            "checkpoint": str(loaded.checkpoint_path.resolve()), "checkpoint_sha256": sha,
            "seed": seed, "medgan_version": __version__, "n": len(seeds),
            "use_ema": loaded.use_ema, "units": loaded.intensity.units,
            "spacing_mm": list(loaded.spacing_mm), "postprocess": post.to_dict(),
            "max_similarity": max_similarity,
        },
        "training": cases, "test": [],
    }


def _check_options(n: int, batch_size: int, max_similarity: float | None,
                   real_datalist: str | Path | None) -> None:
    if n < 1:
        raise ConfigError(f"n must be a positive number of samples, not {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size}")
    if max_similarity is not None:
        if not -1.0 < max_similarity <= 1.0:
            raise ConfigError(f"max_similarity must be a number in (-1, 1], not {max_similarity}")
        if real_datalist is None:
            raise ConfigError("max_similarity needs real_datalist (the real training data to "
                              "compare against)")


def sample(
    checkpoint: str | Path, n: int, out: str | Path, seed: int = 0, batch_size: int = 64,
    device: str = "auto", use_ema: bool = True, overwrite: bool = False,
    max_similarity: float | None = None, real_datalist: str | Path | None = None,
    progress: bool = True, postprocess: MaskPostprocess | None = None, workers: int = 4,
) -> SampleResult:
    """Generate ``n`` pairs from ``checkpoint`` and write them as a decathlon dataset to ``out``.

    Under ``torchrun`` every process calls this: rank ``r`` of ``W`` generates and writes
    samples ``r, r + W, ...`` (each with its own seed, as always), rank 0 writes the datalist
    and the contact sheet once all are done, and the folder is byte for byte the one a single
    process writes. More processes than GPUs may share them (post-processing and writing
    happen on the CPU, which one process alone cannot keep up with on a fast GPU).

    Args:
        checkpoint: run folder, checkpoints folder or checkpoint folder.
        seed: base seed; sample ``i`` uses ``sample_seed(seed, i, attempt)``.
        batch_size: samples generated and post-processed per step; the generator always
            runs on chunks of ``DECODE_CHUNK`` latents, so the files do not depend on it.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        use_ema: sample from the EMA weights when the checkpoint has them.
        overwrite: allow a non-empty ``out``; replaces medgan's outputs there (dataset.json,
            contact_sheet.png, synth_* files) and leaves other files alone.
        max_similarity: drop and redraw samples whose image NCC to the nearest real training
            patch of ``real_datalist`` exceeds this (e.g. 0.95); None disables the check.
        postprocess: mask clean-up settings (default :class:`MaskPostprocess`).
        workers: threads writing files while the next batch is generated.
    """
    _check_options(n, batch_size, max_similarity, real_datalist)
    dist = distributed.setup(resolve_device(device), share_gpus=True)
    return _sample(checkpoint, n, Path(out), seed, batch_size, dist, use_ema, overwrite,
                   max_similarity, real_datalist, progress and dist.is_main,
                   postprocess or MaskPostprocess(), workers)


def _make_partial(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f"{PARTIAL_PREFIX}{os.getpid()}"
        (partial / "imagesTr").mkdir(parents=True)
        (partial / "labelsTr").mkdir()
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    return partial


def _sample(
    checkpoint: str | Path, n: int, out: Path, seed: int, batch_size: int,
    dist: distributed.DistInfo, use_ema: bool, overwrite: bool, max_similarity: float | None,
    real_datalist: str | Path | None, progress: bool, post: MaskPostprocess, workers: int,
) -> SampleResult:
    """:func:`sample` in one process of ``dist``: rank ``r`` of ``W`` makes samples
    ``r, r + W, r + 2W, ...`` into rank 0's partial folder; rank 0 finalises."""
    dist.on_main(lambda: _prepare_out(out, overwrite))
    loaded = load_generator(checkpoint, device=dist.device, use_ema=use_ema)
    accept = None
    if max_similarity is not None and real_datalist is not None:
        accept = _similarity_filter(loaded, real_datalist, max_similarity, progress)
    partial = dist.broadcast(dist.on_main(lambda: _make_partial(out)))
    start = time.perf_counter()
    try:
        seeds, counts, sheet = _write_samples(
            loaded, range(dist.rank, n, dist.world_size), n, seed, batch_size, post, accept,
            partial, workers, progress, render_sheet=not dist.active)
        if dist.active:  # every rank's share of seeds, redraw counts and contact-sheet pairs
            seeds, counts, sheet = _merge(dist.all_gather((seeds, counts, sheet)))
        if dist.is_main:
            if dist.active:
                _render_sheet(sheet, n, partial)
            _finalise(partial, out, n, _datalist(loaded, [seeds[i] for i in range(n)], seed,
                                                 post, max_similarity))
        dist.barrier()  # no rank returns before the files are in place
    except OSError as err:  # disk full, permissions (a failed NIfTI write is an OutputError)
        shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(f"{err.filename or out}: cannot be written ({err.strerror or err}); "
                          f"no new dataset.json was written to {out}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return SampleResult(out, out / "dataset.json", out / "contact_sheet.png", n, seed,
                        loaded.checkpoint_path, loaded.checkpoint_sha256,
                        [seeds[i] for i in range(n)], counts.empty, counts.similar,
                        time.perf_counter() - start, counts.small)


def _merge(shares: list[tuple[dict[int, int], RedrawCounts, dict[int, torch.Tensor]]]
           ) -> tuple[dict[int, int], RedrawCounts, dict[int, torch.Tensor]]:
    seeds: dict[int, int] = {}
    counts = RedrawCounts()
    sheet: dict[int, torch.Tensor] = {}
    for rank_seeds, rank_counts, rank_sheet in shares:
        seeds.update(rank_seeds)
        counts.empty += rank_counts.empty
        counts.similar += rank_counts.similar
        counts.small += rank_counts.small
        sheet.update(rank_sheet)
    return seeds, counts, sheet


def _render_sheet(sheet: dict[int, torch.Tensor], n: int, partial: Path) -> Path:
    """The contact sheet of the first ``min(n, CONTACT_SHEET_MAX)`` pairs (index order)."""
    from medgan.visualize import save_grid

    pairs = torch.stack([sheet[k] for k in range(min(n, CONTACT_SHEET_MAX))])
    return save_grid(pairs, partial / "contact_sheet.png")


def _write_samples(
    loaded: LoadedGenerator, indices: Sequence[int], n: int, seed: int, batch_size: int,
    post: MaskPostprocess, accept: Accept | None, partial: Path, workers: int, progress: bool,
    render_sheet: bool = True,
) -> tuple[dict[int, int], RedrawCounts, dict[int, torch.Tensor]]:
    """Generate samples ``indices`` of ``n`` on the device, write them on a thread pool.

    Returns the seed of each sample, the redraw counts and the model-space pairs of those
    among the first :data:`CONTACT_SHEET_MAX` (for the contact sheet, which is rendered here
    as soon as it is complete when ``render_sheet``).
    """
    seeds: dict[int, int] = {}
    sheet: dict[int, torch.Tensor] = {}
    n_sheet = len([i for i in indices if i < CONTACT_SHEET_MAX])
    counts = RedrawCounts()
    intensity, spacing, sha = loaded.intensity, loaded.spacing_mm, loaded.checkpoint_sha256
    pending: deque[tuple[Future, int]] = deque()  # (task, samples it completes)
    max_pending = 4 * max(1, workers)  # writes in flight while the next batch is generated
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="medgan-write")
    try:
        with tqdm(total=len(indices), desc="sampling", unit="sample",
                  disable=not progress) as bar:
            for batch in iter_batches(loaded, list(indices), seed, post, batch_size, accept,
                                      counts):
                if not batch:
                    continue
                images = torch.stack([b[2] for b in batch])  # (B, C, *P) model space
                physical = intensity.inverse(images.transpose(0, 1).numpy())  # (C, B, *P)
                physical = np.asarray(physical, np.float32).swapaxes(0, 1)
                for (i, s, image, mask), phys in zip(batch, physical, strict=True):
                    seeds[i] = s
                    name = NAME.format(i)
                    pending.append((pool.submit(
                        write_pair, phys, mask, partial / "imagesTr" / name,
                        partial / "labelsTr" / name, spacing, synthetic_descrip(sha, s, i),
                        atomic=False), 1))
                    if i < CONTACT_SHEET_MAX:
                        sheet[i] = torch.cat([image, torch.from_numpy(mask)[None].float() * 2 - 1])
                        if render_sheet and len(sheet) == n_sheet:  # while the rest is made
                            pending.append((pool.submit(_render_sheet, sheet, n, partial), 0))
                while len(pending) > max_pending or (pending and pending[0][0].done()):
                    task, done = pending.popleft()
                    task.result()  # re-raises a failed write
                    bar.update(done)
            while pending:
                task, done = pending.popleft()
                task.result()
                bar.update(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return seeds, counts, sheet
