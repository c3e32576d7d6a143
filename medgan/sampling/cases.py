"""Full-size synthetic cases: real host scans with lesions inpainted into them.

``medgan sample --checkpoint RUN --hosts DATALIST`` with an inpainting checkpoint
(``model.kind: inpaint``) writes, per case, a host scan of the user's data with ``k`` lesions
inserted by :class:`~medgan.augment.RandLesionInpaint` (lesion shapes from the checkpoint's
training masks, placed inside the tissue region and away from existing lesions; a 2D checkpoint
works slice by slice). Each case keeps the host's affine, spacing, data type and every voxel
outside the erased regions, bit for bit; its label is the host label with the placed masks added
(``lesion_labels[0]``). Files are marked synthetic, and ``dataset.json`` records per case the
host case id, the seeds and each lesion's position, plus the checkpoint (path relative to the
datalist, SHA-256). Case ``i`` is reproducible from its seed alone.

Hosts whose spacing differs from the checkpoint's training spacing (by more than 1 % on an axis
the generator works on) are handled by ``host_spacing``: ``"resample"`` (the default) keeps
each lesion's size in mm (the mask is scaled to the host's grid and the generator's patch
resampled to the training spacing and back, see :class:`~medgan.augment.RandLesionInpaint`);
``"native"`` works at the host's voxel scale, so lesions come out larger or smaller in mm.

A case in which no lesion could be placed is not written; the reasons are counted. Hosts may
also be DICOM series (:func:`~medgan.sampling.hosts.read_host`), and ``file_format="dicom"``
writes each case as a new synthetic DICOM series on the host's geometry plus a DICOM SEG.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgan._version import __version__
from medgan.augment.arrays import spacing_factors
from medgan.augment.inpaint import Insertion, RandLesionInpaint
from medgan.augment.masks import EllipsoidMaskSource, MaskSource, RealMaskSource
from medgan.augment.placement import PlacementSettings
from medgan.data.datalist import load_datalist
from medgan.errors import CheckpointError, ConfigError, DataError
from medgan.modalities import display_name
from medgan.sampling.datalist import _relative
from medgan.sampling.dicom_writer import SyntheticSource, write_dicom_case
from medgan.sampling.hosts import Host, read_host, write_case
from medgan.sampling.inpainter import LoadedInpainter
from medgan.sampling.loader import load_generator, sample_seed
from medgan.sampling.output import FORMATS, NAME, dicom_entry, finalise, make_partial, prepare_out
from medgan.sampling.writer import synthetic_descrip
from medgan.visualize import save_grid

log = logging.getLogger(__name__)
SHEET_CASES = 8  # cases shown in the contact sheet
HOST_SPACING = ("resample", "native")


@dataclass
class CasesResult:
    """What :func:`write_cases` wrote: ``n`` cases, ``insertions[i]`` the lesions of case ``i``
    (RAS voxel coordinates of the host), ``hosts[i]`` its host case id; ``skipped`` counts the
    lesions that could not be placed, by reason, and ``skipped_cases`` the cases left out."""

    out: Path
    datalist: Path
    contact_sheet: Path
    n: int
    insertions: list[list[Insertion]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_cases: int = 0


def mask_source(loaded: LoadedInpainter, kind: str | None = None) -> MaskSource:
    """Lesion shapes from the checkpoint's training masks: ``"real"`` (deformed) or
    ``"ellipsoid"`` (sized like them); None = the checkpoint's ``inpaint.mask_source``."""
    kind = kind or loaded.config.inpaint.mask_source
    if loaded.lesion_masks is None or not loaded.lesion_masks.any():
        raise CheckpointError(f"{loaded.checkpoint_path}: holds no training lesion masks to "
                              "draw lesion shapes from")
    d, spacing = loaded.spatial_dims, loaded.spacing_mm
    if kind == "real":
        return RealMaskSource(loaded.lesion_masks, d, spacing)
    if kind == "ellipsoid":
        return EllipsoidMaskSource.from_masks(loaded.lesion_masks, d, spacing)
    raise ConfigError(f"mask_source must be 'real' or 'ellipsoid', not {kind!r}")


def _load(checkpoint: str | Path | LoadedInpainter, device: str, use_ema: bool
          ) -> LoadedInpainter:
    loaded = checkpoint if isinstance(checkpoint, LoadedInpainter) else \
        load_generator(checkpoint, device=device, use_ema=use_ema)
    if not isinstance(loaded, LoadedInpainter):
        raise CheckpointError(f"{loaded.checkpoint_path}: is a {loaded.spec.kind!r} checkpoint; "
                              "lesions are inserted into host scans (`hosts`) by a checkpoint "
                              "of model.kind 'inpaint'", param="hosts")
    return loaded


def insert_lesions(transform: RandLesionInpaint, host: Host, k: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, list[Insertion], Counter[str]]:
    """Insert up to ``k`` lesions into ``host`` (RAS arrays): image, label, insertions, and the
    reasons of the ones that could not be placed. Reproducible from ``seed``."""
    transform.set_random_state(seed)
    transform.spacing_mm = host.spacing_mm
    before = Counter(transform.skipped)
    img, lab = host.image[None], host.label[None]
    done: list[Insertion] = []
    for _ in range(k):
        img, lab = transform(img, lab)
        if transform.last is not None:
            done.append(transform.last)
    return img[0], lab[0], done, Counter(transform.skipped) - before


def write_cases(checkpoint: str | Path | LoadedInpainter, hosts: str | Path, n: int,
                out: str | Path, *, seed: int = 0, lesions_per_case: int = 1,
                device: str = "cpu", use_ema: bool = True, overwrite: bool = False,
                mask_source_kind: str | None = None,
                placement: PlacementSettings | None = None,
                host_spacing: str = "resample", file_format: str = "nifti") -> CasesResult:
    """Write ``n`` full-size synthetic cases to ``out`` (imagesTr/ + labelsTr/ or dicomTr/,
    dataset.json, contact_sheet.png); host ``i % len(hosts)`` serves case ``i``.

    Args:
        checkpoint: an inpainting checkpoint (run folder, checkpoint folder) or a loaded one.
        hosts: datalist of host scans (NIfTI image or DICOM series, + label; one channel).
        lesions_per_case: lesions inserted per case (those that fit).
        mask_source_kind: "real" or "ellipsoid"; None = the checkpoint's setting.
        placement: where lesions may go (default: inside the body, 2 mm from lesions).
        host_spacing: hosts at another spacing than the training spacing: "resample" (lesions
            keep their size in mm) or "native" (the host's voxel scale); module docstring.
        file_format: "nifti" (imagesTr/ + labelsTr/, the host's layout and header) or "dicom"
            (dicomTr/synth_XXXXX/: a new CT/MR/PT series of the case on the host's geometry + a
            DICOM SEG of its label, new UIDs, marked synthetic, no host attribute copied).
    """
    if file_format not in FORMATS:
        raise ConfigError(f"file_format must be one of {', '.join(FORMATS)}, not "
                          f"{file_format!r}", param="format")
    if host_spacing not in HOST_SPACING:
        raise ConfigError(f"host_spacing must be one of {', '.join(HOST_SPACING)}, not "
                          f"{host_spacing!r}", param="host_spacing")
    if n < 1:
        raise ConfigError(f"n must be a positive integer, not {n}")
    if lesions_per_case < 1:
        raise ConfigError(f"lesions_per_case must be a positive integer, not {lesions_per_case}")
    out = Path(out)
    loaded = _load(checkpoint, device, use_ema)
    try:
        cases = load_datalist(hosts)
    except DataError as err:
        raise DataError(err.message, param="hosts") from None
    source = mask_source(loaded, mask_source_kind)
    transform = RandLesionInpaint(
        loaded, source, prob=1.0, placement=placement, lesion_value=loaded.lesion_labels[0],
        generator_spacing_mm=loaded.spacing_mm if host_spacing == "resample" else None)
    prepare_out(out, overwrite)
    subs = FORMATS[file_format]
    partial = make_partial(out, subs)
    result = CasesResult(out, out / "dataset.json", out / "contact_sheet.png", 0)
    entries: list[dict[str, Any]] = []
    sheet: list[torch.Tensor] = []
    noted: set[str] = set()
    for i in range(n):
        host = read_host(cases[i % len(cases)], loaded.image_channels,
                         loaded.config.data.roi_names)
        case_seed = sample_seed(seed, i)
        image, label, done, skipped = insert_lesions(transform, host, lesions_per_case,
                                                     case_seed)
        factors = transform.scale_factors(host.image[None])
        if host.case_id not in noted:  # once per host
            noted.add(host.case_id)
            _log_spacing(host, loaded, factors, host_spacing)
        result.skipped += skipped
        if not done:
            result.skipped_cases += 1
            log.warning("case %d (host %s): no lesion could be placed (%s)", i, host.case_id,
                        ", ".join(f"{r}: {c}" for r, c in skipped.items()))
            continue
        index = result.n
        name = NAME.format(index)
        descrip = synthetic_descrip(loaded.checkpoint_sha256, case_seed, index)
        if file_format == "dicom":
            write_dicom_case(image[None], label > 0, partial / subs[0] / name.removesuffix(
                ".nii.gz"), host.ras_affine, loaded.modality,
                SyntheticSource(loaded.checkpoint_sha256, case_seed, index), atomic=False)
            files = dicom_entry(subs[0], index)
        else:
            write_case(partial / subs[0] / name, partial / subs[1] / name, host, image, label,
                       descrip)
            files = {"image": f"./{subs[0]}/{name}", "label": f"./{subs[1]}/{name}"}
        entries.append(_entry(files, host, case_seed, done, skipped, loaded, out, factors))
        result.insertions.append(done)
        result.hosts.append(host.case_id)
        result.n += 1
        if len(sheet) < 3 * SHEET_CASES:
            sheet += _sheet_row(host, image, label, done[0], loaded)
    if result.n == 0:
        shutil.rmtree(partial, ignore_errors=True)
        reasons = ", ".join(f"{r}: {c}" for r, c in result.skipped.items())
        raise DataError(f"{hosts}: no lesion could be placed in any host case ({reasons})",
                        param="hosts")
    save_grid(torch.stack(sheet), partial / "contact_sheet.png", nrow=3)
    finalise(partial, out, result.n, _datalist(entries, loaded, seed, lesions_per_case,
                                                 transform, out, hosts, host_spacing), subs)
    return result


def _log_spacing(host: Host, loaded: LoadedInpainter, factors: tuple[float, ...] | None,
                 host_spacing: str) -> None:
    d = loaded.spatial_dims
    trained = [round(float(s), 3) for s in loaded.spacing_mm[:d]]
    own = [round(float(s), 3) for s in host.spacing_mm[:d]]
    if factors is not None:
        log.info("host %s: spacing %s mm, the checkpoint's %s mm: patches resampled, lesions "
                 "keep their size in mm", host.case_id, own, trained)
    elif host_spacing == "native" and spacing_factors(loaded.spacing_mm[:d],
                                                      host.spacing_mm[:d]) is not None:
        log.warning("host %s has spacing %s mm, the checkpoint was trained at %s mm: lesions are "
                    "inserted at the host's voxel scale (host_spacing native)", host.case_id,
                    own, trained)


def _entry(files: dict[str, Any], host: Host, case_seed: int, done: list[Insertion],
           skipped: Counter[str], loaded: LoadedInpainter, out: Path,
           factors: tuple[float, ...] | None) -> dict[str, Any]:
    lesions = [{"seeds": list(ins.seeds), "offset_voxel_ras": list(ins.offset),
                "extent_voxels": list(ins.mask.shape), "voxels": int(ins.mask.sum())}
               for ins in done]
    return {**files, "synthetic": True,
            "host_case_id": host.case_id, "host_image": _relative(host.image_path, out),
            "seed": case_seed, "lesions": lesions, "skipped": dict(skipped),
            "host_spacing_mm": list(host.spacing_mm),
            "resampled": factors is not None,
            "checkpoint_sha256": loaded.checkpoint_sha256}


def _datalist(entries: list[dict[str, Any]], loaded: LoadedInpainter, seed: int, k: int,
              transform: RandLesionInpaint, out: Path, hosts: str | Path,
              host_spacing: str) -> dict[str, Any]:
    sha = loaded.checkpoint_sha256
    name = display_name(loaded.modality)
    p = transform.placement
    return {
        "name": f"medgan synthetic {name} cases (inpainted lesions)",
        "description": f"{len(entries)} real host scans with up to {k} lesion(s) each inpainted "
                       f"by medgan checkpoint {sha[:12]} (seed {seed}); the lesions are "
                       "synthetic, the rest of each scan is the host's.",
        "tensorImageSize": "3D", "modality": {"0": name},
        "labels": {"0": "background", str(loaded.lesion_labels[0]): "lesion"},
        "numTraining": len(entries), "numTest": 0, "synthetic": True,
        "medgan": {
            "checkpoint": _relative(loaded.checkpoint_path, out), "checkpoint_sha256": sha,
            "kind": "inpaint", "seed": seed, "medgan_version": __version__, "n": len(entries),
            "lesions_per_case": k, "hosts": _relative(Path(hosts), out),
            "use_ema": loaded.use_ema, "units": loaded.intensity.units,
            "mask_source": type(transform.mask_source).__name__,
            "placement": {"region": p.region, "margin_mm": p.margin_mm,
                          "intensity_range": p.intensity_range},
            "erase_margin_voxels": loaded.erase_margin,
            "training_spacing_mm": list(loaded.spacing_mm), "host_spacing": host_spacing,
        },
        "training": entries, "test": [],
    }


def _sheet_row(host: Host, image: np.ndarray, label: np.ndarray, first: Insertion,
               loaded: LoadedInpainter) -> list[torch.Tensor]:
    """host | synthetic | synthetic with the label outline: axial slices through the first
    lesion, ``(2, S, S)`` tiles in [-1, 1] (S = 2 x patch size; centred on the lesion, or on the
    slice when it fits; padded with -1). A tile covers twice the generator's field of view, so
    a resampled host's crop (2 x its window) is resized to S."""
    d = loaded.spatial_dims
    z = int(first.window[-1]) if d == 2 else int(first.offset[2] + first.mask.shape[2] // 2)
    size = 2 * (first.window[0].stop - first.window[0].start)
    centre = [o + s // 2 if n > size else n // 2  # a slice that fits is shown whole
              for o, s, n in zip(first.offset[:2], first.mask.shape[:2], image.shape[:2],
                                 strict=True)]
    tiles = []
    for vol, lab in ((host.image, host.label), (image, np.zeros_like(label)), (image, label)):
        sl = np.asarray(loaded.intensity.forward(vol[None, :, :, z].astype(np.float32)))[0]
        crop = np.full((2, size, size), -1.0, np.float32)
        src = [slice(max(c - size // 2, 0), min(c + size // 2, n))
               for c, n in zip(centre, sl.shape, strict=True)]
        dst = tuple(slice(s.start - (c - size // 2), s.stop - (c - size // 2))
                    for s, c in zip(src, centre, strict=True))
        crop[0][dst] = sl[tuple(src)]
        crop[1][dst] = np.where(lab[:, :, z][tuple(src)] > 0, 1.0, -1.0)
        tile = torch.from_numpy(crop)
        if size != 2 * loaded.patch_size:
            shape = (2 * loaded.patch_size,) * 2
            tile = torch.cat([
                F.interpolate(tile[None, :1], size=shape, mode="area")[0],
                F.interpolate(tile[None, 1:], size=shape, mode="nearest")[0]])
        tiles.append(tile)
    return tiles
