"""Generate on the device while a thread pool encodes and writes the previous batches.

NIfTI encoding (gzip) runs on the CPU and releases the GIL, so ``workers`` threads write while
the main thread decodes the next batch; a bounded queue of pending writes keeps memory flat and
re-raises the first failed write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medgan.sampling.dicom_writer import SyntheticSource, write_dicom_case
from medgan.sampling.draws import Accept, RedrawCounts, iter_batches
from medgan.sampling.loader import LoadedGenerator
from medgan.sampling.output import FORMATS, NAME
from medgan.sampling.postprocess import MaskPostprocess
from medgan.sampling.writer import ras_affine, synthetic_descrip, write_pair
from medgan.visualize import save_grid

CONTACT_SHEET_MAX = 64


def render_sheet(sheet: dict[int, torch.Tensor], n: int, partial: Path) -> Path:
    """The contact sheet of the first ``min(n, CONTACT_SHEET_MAX)`` pairs (index order)."""
    pairs = torch.stack([sheet[k] for k in range(min(n, CONTACT_SHEET_MAX))])
    return save_grid(pairs, partial / "contact_sheet.png")


def write_samples(
    loaded: LoadedGenerator, indices: Sequence[int], n: int, seed: int, batch_size: int,
    post: MaskPostprocess, accept: Accept | None, partial: Path, workers: int, progress: bool,
    draw_sheet: bool = True, file_format: str = "nifti",
) -> tuple[dict[int, int], RedrawCounts, dict[int, torch.Tensor]]:
    """Generate samples ``indices`` of ``n`` on the device, write them on a thread pool.

    Returns the seed of each sample, the redraw counts and the model-space pairs of those
    among the first :data:`CONTACT_SHEET_MAX` (for the contact sheet, which is rendered here
    as soon as it is complete when ``draw_sheet``).
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
                    if file_format == "dicom":
                        task = pool.submit(_write_dicom, loaded, phys, mask, partial, i, s)
                    else:
                        task = pool.submit(
                            write_pair, phys, mask, partial / "imagesTr" / name,
                            partial / "labelsTr" / name, spacing, synthetic_descrip(sha, s, i),
                            atomic=False)
                    pending.append((task, 1))
                    if i < CONTACT_SHEET_MAX:
                        sheet[i] = torch.cat([image, torch.from_numpy(mask)[None].float() * 2 - 1])
                        if draw_sheet and len(sheet) == n_sheet:  # while the rest is made
                            pending.append((pool.submit(render_sheet, sheet, n, partial), 0))
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


def _write_dicom(loaded: LoadedGenerator, image: np.ndarray, mask: np.ndarray, partial: Path,
                 index: int, seed: int) -> None:
    """One sample as ``dicomTr/synth_XXXXX/`` (DICOM series + SEG) in the staging folder."""
    folder = partial / FORMATS["dicom"][0] / NAME.format(index).removesuffix(".nii.gz")
    write_dicom_case(image, mask, folder, ras_affine(loaded.spacing_mm), loaded.modality,
                     SyntheticSource(loaded.checkpoint_sha256, seed, index), atomic=False)
