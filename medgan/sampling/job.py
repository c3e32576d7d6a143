"""``medgan sample``: generate N image + mask pairs from a checkpoint as a MONAI-ready dataset.

Output folder::

    imagesTr/synth_00000.nii.gz   image in physical units (float32), RAS affine from spacing_mm
    labelsTr/synth_00000.nii.gz   post-processed binary mask (uint8)
    dataset.json                  decathlon datalist ("training"), every case marked synthetic
    contact_sheet.png             the first 64 pairs, mask outlines in red

With ``file_format="dicom"`` the pairs are ``dicomTr/synth_00000/image/`` (a DICOM series) and
``dicomTr/synth_00000/seg/SEG.dcm`` (a DICOM SEG) instead, see
:mod:`medgan.sampling.dicom_writer`; dataset.json lists those.

Reproducibility: sample ``i`` is drawn from its own seed ``sample_seed(seed, i, attempt)``
(recorded per case in ``dataset.json``), so the same checkpoint and seed give byte-identical
files whatever the batch size, and ``LoadedGenerator.generate(1, seed=case["seed"])`` reproduces
one case. A draw whose mask is empty after post-processing, whose lesion is smaller than the
post-processing ``min_diameter_mm``, or that is too similar to a real training patch (with
``max_similarity``) is replaced by the next attempt of the same index.

Crash safety: see :mod:`medgan.sampling.output`. On any error or Ctrl-C the partial folder is
removed; the previous contents of ``out`` are untouched unless the interrupt hits the final move
(then there is no ``dataset.json``).

The jobs live in their own modules: the redraw loop in :mod:`.draws`, the similarity filter in
:mod:`.filters`, the output folder in :mod:`.output`, the datalist in :mod:`.datalist` and the
writer pool in :mod:`.batch_writer`; this module wires them, once per process under torchrun.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from medgan import distributed
from medgan.devices import resolve_device
from medgan.errors import ConfigError, OutputError
from medgan.sampling.batch_writer import render_sheet, write_samples
from medgan.sampling.datalist import synthetic_datalist
from medgan.sampling.draws import RedrawCounts, iter_batches, iter_samples
from medgan.sampling.filters import similarity_filter
from medgan.sampling.loader import load_generator
from medgan.sampling.output import FORMATS, finalise, make_partial, prepare_out
from medgan.sampling.postprocess import MaskPostprocess

__all__ = ["RedrawCounts", "SampleJob", "SampleResult", "iter_batches", "iter_samples", "sample"]


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
class SampleJob:
    """The settings of one :func:`sample` call (see its arguments)."""

    checkpoint: str | Path
    n: int
    out: Path
    seed: int = 0
    batch_size: int = 64
    use_ema: bool = True
    overwrite: bool = False
    max_similarity: float | None = None
    real_datalist: str | Path | None = None
    progress: bool = True
    postprocess: MaskPostprocess | None = None
    workers: int = 4
    file_format: str = "nifti"


def _check_options(n: int, batch_size: int, max_similarity: float | None,
                   real_datalist: str | Path | None, file_format: str = "nifti") -> None:
    if file_format not in FORMATS:
        raise ConfigError(f"must be one of {', '.join(FORMATS)}, not {file_format!r}",
                          param="file_format")
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
    file_format: str = "nifti",
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
        file_format: "nifti" (NIfTI pairs) or "dicom" (a DICOM series + DICOM SEG per sample,
            see :mod:`medgan.sampling.dicom_writer`; ct, mr and pet checkpoints; new UIDs in
            every run, so only the pixel data is reproducible, not the bytes).
    """
    _check_options(n, batch_size, max_similarity, real_datalist, file_format)
    dist = distributed.setup(resolve_device(device), share_gpus=True)
    job = SampleJob(checkpoint, n, Path(out), seed, batch_size, use_ema, overwrite,
                    max_similarity, real_datalist, progress and dist.is_main,
                    postprocess or MaskPostprocess(), workers, file_format)
    return run_job(job, dist)


def run_job(job: SampleJob, dist: distributed.DistInfo) -> SampleResult:
    """:func:`sample` in one process of ``dist``: rank ``r`` of ``W`` makes samples
    ``r, r + W, r + 2W, ...`` into rank 0's partial folder; rank 0 finalises."""
    out, n, seed = job.out, job.n, job.seed
    post = job.postprocess or MaskPostprocess()
    dist.on_main(lambda: prepare_out(out, job.overwrite))
    loaded = load_generator(job.checkpoint, device=dist.device, use_ema=job.use_ema,
                            kind="dcgan")
    if job.file_format == "dicom" and loaded.modality == "none":
        raise ConfigError(f"{loaded.checkpoint_path}: file_format 'dicom' needs a ct, mr or pet "
                          "checkpoint, not modality 'none'")
    accept = None
    if job.max_similarity is not None and job.real_datalist is not None:
        accept = similarity_filter(loaded, job.real_datalist, job.max_similarity, job.progress)
    subs = FORMATS[job.file_format]
    partial = dist.broadcast(dist.on_main(lambda: make_partial(out, subs)))
    start = time.perf_counter()
    try:
        seeds, counts, sheet = write_samples(
            loaded, range(dist.rank, n, dist.world_size), n, seed, job.batch_size, post,
            accept, partial, job.workers, job.progress, draw_sheet=not dist.active,
            file_format=job.file_format)
        if dist.active:  # every rank's share of seeds, redraw counts and contact-sheet pairs
            seeds, counts, sheet = _merge(dist.all_gather((seeds, counts, sheet)))
        if dist.is_main:
            if dist.active:
                render_sheet(sheet, n, partial)
            datalist = synthetic_datalist(loaded, [seeds[i] for i in range(n)], seed, post,
                                          job.max_similarity, out, job.file_format)
            finalise(partial, out, n, datalist, subs)
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
