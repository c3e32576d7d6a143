"""MONAI transform chains that turn a case's files into normalised, resampled tensors.

``load_case`` runs, for one datalist entry::

    LoadCased            read image channel(s) + label (NIfTI via nibabel, DICOM via pydicom)
    EnsureChannelFirst   (C, X, Y, Z)
    CheckCased           geometry agrees, finite, not constant, label integer-valued
    Orientationd         RAS
    Spacingd             configured spacing (bilinear image, nearest label)
    LesionMaskd          label values in ``lesion_labels`` -> binary uint8 mask
    NormalizeModalityd   modality-specific mapping to [-1, 1], recorded for the inverse
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, PydicomReader
from monai.transforms import (
    Compose,
    LoadImage,
    MapTransform,
    Orientationd,
    Spacingd,
    Transform,
)

from medgan.config import MedganConfig
from medgan.data.datalist import Case, image_files
from medgan.data.dicom_label_reader import read_dicom_label
from medgan.data.dicom_labels import dicom_label_kind, one_slice_volume
from medgan.data.intensity import NormalizeModalityd
from medgan.errors import DataError
from medgan.modalities import modality_of_name

GEOMETRY_TOL_MM = 1e-2
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # axis codes: low end, high end


@functools.cache
def _loader(kind: str) -> LoadImage:
    """One MONAI ``LoadImage`` per reader kind (building one instantiates every reader)."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = PydicomReader() if kind == "dicom" else NibabelReader()
        return LoadImage(reader=reader, image_only=True, ensure_channel_first=True)


def _reader_kind(path: str) -> str:
    p = Path(path)
    return "dicom" if p.is_dir() or p.suffix.lower() in (".dcm", ".dicom", "") else "nifti"


def _reader_detail(text: str) -> str:
    """The designated reader's own error line.

    MONAI's ``LoadImage`` wraps reader failures in a generic "cannot find a suitable reader ...
    install the reader libraries" message followed by each reader's traceback; the first
    traceback is the reader medgan asked for.
    """
    marker = "Traceback (most recent call last):"
    if marker not in text:
        return text
    first = text.split(marker)[1].splitlines()
    errors = [ln.strip() for ln in first if re.match(r"^[A-Za-z_][\w.]*: ", ln.strip())]
    return errors[-1].split(": ", 1)[1] if errors else text


def _explain_read_error(path: str, err: Exception) -> str:
    lowered = " ".join(str(err).split()).lower()
    text = " ".join(_reader_detail(str(err)).split())
    if "pixel data" in lowered and ("plugin" in lowered or "decod" in lowered):
        return (
            f"{path}: DICOM pixel data is compressed with an encoding that no installed decoder "
            "handles; install the decoders with: pip install 'medgan[dicom]'"
        )
    if isinstance(err, (EOFError, OSError)) or "compressed file ended" in lowered:
        return f"{path}: file is truncated or corrupt ({text[:160]})"
    return f"{path}: cannot be read as a NIfTI image or DICOM series ({text[:160]})"


def _is_multiframe_dicom(path: Path) -> bool:
    """Whether the (first) DICOM file holds several frames (enhanced / multi-frame objects)."""
    import pydicom

    first = path if path.is_file() else min(f for f in path.iterdir() if f.is_file())
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
        return int(ds.get("NumberOfFrames") or 1) > 1
    except Exception:  # not readable as DICOM: the reader below reports it
        return False


def _dicom_modality(path: Path) -> str | None:
    """The Modality tag of the (first) file of a DICOM series; None when unreadable."""
    import pydicom

    try:
        first = path if path.is_file() else min(f for f in path.iterdir() if f.is_file())
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM, or unreadable: the reader reports it
        return None
    return str(ds.get("Modality") or "") or None


def case_modality(case: Case) -> tuple[str, str] | None:
    """``(modality, evidence)`` the case's own files or datalist declare, None when unknown.

    Evidence is the decathlon ``modality`` field of a ``dataset.json`` or, for DICOM series, the
    Modality tag. Channels that disagree, or names medgan does not know, give None.
    """
    declared = case.get("declared_modality")
    if declared:
        names, where = declared["names"], f"'modality' of {declared['source']}"
    else:
        dicoms = [Path(f) for f in image_files(case) if _reader_kind(f) == "dicom"]
        names = [m for f in dicoms if f.exists() and (m := _dicom_modality(f))]
        if not names or len(names) != len(image_files(case)):
            return None
        where = f"DICOM Modality tag of {dicoms[0]}"
    found = {modality_of_name(n) for n in names}
    if len(found) != 1 or None in found or "none" in found:
        return None
    return found.pop(), f"{'/'.join(names)} in the {where}"


def check_modality(case: Case, modality: str) -> None:
    """Refuse a case whose files declare another modality than the config/checkpoint's."""
    if modality == "none":
        return
    found = case_modality(case)
    if found is not None and found[0] != modality:
        raise DataError(
            f"{image_files(case)[0]}: the scan is {found[0].upper()} ({found[1]}) but the "
            f"config or checkpoint is for modality {modality!r} ({modality.upper()}); use a "
            "config/checkpoint of the same modality as the data"
        )


def read_image(path: str) -> MetaTensor:
    """Read one image with MONAI ``LoadImage`` -> channel-first MetaTensor with an affine."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file does not exist")
    if p.is_dir() and not any(f.is_file() for f in p.iterdir()):
        raise DataError(f"{path}: DICOM folder is empty")
    if _reader_kind(path) == "dicom" and _is_multiframe_dicom(p):
        # MONAI's PydicomReader ignores per-frame geometry: the volume would be mis-oriented
        raise DataError(
            f"{path}: multi-frame (enhanced) DICOM is not supported; convert it to NIfTI "
            "first, e.g. with dcm2niix"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _loader(_reader_kind(path))(path)
    except Exception as err:  # readers raise many types; each is a user-file problem here
        raise DataError(_explain_read_error(path, err)) from None
    if img.ndim == 3 and _reader_kind(path) == "dicom":  # a one-slice series (2D samples)
        img = one_slice_volume(img, path)
    if img.ndim != 4:
        raise DataError(
            f"{path}: expected a 3D volume (optionally with channels), got shape "
            f"{tuple(img.shape[1:])}"
        )
    return img


def _same_geometry(a: MetaTensor, b: MetaTensor) -> bool:
    return a.shape[1:] == b.shape[1:] and np.allclose(
        np.asarray(a.affine), np.asarray(b.affine), atol=GEOMETRY_TOL_MM
    )


def read_label(case: Case, image: MetaTensor, roi_names: Sequence[str | int] = ("*GTV*",)
               ) -> tuple[MetaTensor, Any]:
    """The case's label ``(1, X, Y, Z)`` and, for an RTSTRUCT / SEG, what reading it found.

    NIfTI / DICOM image labels are read as images; RTSTRUCT and DICOM SEG files are rasterised
    onto ``image``'s grid (:mod:`medgan.data.dicom_label_reader`), with the case's own
    ``roi_names`` when its datalist entry gives them.
    """
    path = case["label"]
    if not dicom_label_kind(path):
        return read_image(path), None
    return read_dicom_label(path, image, image_files(case)[0],
                            case.get("roi_names") or list(roi_names))


class LoadCased(MapTransform):
    """Read ``image`` (one file/series or a list = channels) and ``label`` of a case.

    ``roi_names`` picks the structures of RTSTRUCT / DICOM SEG labels (``data.roi_names``).
    """

    def __init__(self, keys: KeysCollection = ("image", "label"),
                 roi_names: Sequence[str | int] = ("*GTV*",)) -> None:
        super().__init__(keys)
        self.roi_names = list(roi_names)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        channels = [read_image(f) for f in image_files(d)]
        for f, ch in zip(image_files(d)[1:], channels[1:], strict=True):
            if not _same_geometry(channels[0], ch):
                raise DataError(
                    f"{f}: channel shape/geometry differs from {image_files(d)[0]} "
                    f"({tuple(ch.shape[1:])} vs {tuple(channels[0].shape[1:])})"
                )
        image = channels[0] if len(channels) == 1 else torch.cat(channels, dim=0)
        if not isinstance(image, MetaTensor):
            image = MetaTensor(image, affine=channels[0].affine, meta=channels[0].meta)
        d["image"] = image.float()
        label, report = read_label(data, channels[0], self.roi_names)
        if report is not None:
            for line in report.problems():
                logging.getLogger(__name__).warning(line)
        if label.shape[0] != 1:
            raise DataError(f"{d['label']}: label must have one channel, not {label.shape[0]}")
        d["label"] = label
        d["source_images"] = image_files(data)
        d["source_label"] = str(data["label"])
        return d


class CheckCase(Transform):
    """Raise :class:`DataError` for an image/label pair that cannot be used."""

    def __call__(self, image: MetaTensor, label: MetaTensor, image_file: str,
                 label_file: str) -> None:
        if not _same_geometry(image, label):
            raise DataError(
                f"{label_file}: label shape/geometry does not match the image {image_file} "
                f"(shape {tuple(label.shape[1:])} vs {tuple(image.shape[1:])}, or the affines "
                "differ)"
            )
        if not torch.isfinite(image).all():
            n = int((~torch.isfinite(image)).sum())
            raise DataError(f"{image_file}: image contains {n} NaN/Inf voxel(s)")
        if float(image.max() - image.min()) == 0.0:
            raise DataError(f"{image_file}: image is constant ({float(image.min()):g} everywhere)")
        lab = label.as_tensor()
        if not torch.isfinite(lab).all() or not torch.equal(lab, lab.round()):
            raise DataError(f"{label_file}: label contains non-integer values")
        if float(lab.min()) < 0:
            raise DataError(f"{label_file}: label contains negative values")


class CheckCased(MapTransform):
    """Dictionary twin of :class:`CheckCase` (passes the data through unchanged)."""

    def __init__(self, keys: KeysCollection = ("image", "label")) -> None:
        super().__init__(keys)
        self.checker = CheckCase()

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        self.checker(
            data["image"], data["label"], ", ".join(data["source_images"]), data["source_label"]
        )
        return data


class LesionMask(Transform):
    """Binary lesion mask: 1 where the label value is one of ``lesion_labels``."""

    def __init__(self, lesion_labels: Sequence[int]) -> None:
        self.lesion_labels = torch.as_tensor(list(lesion_labels))

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        values = torch.as_tensor(label).round().long()
        mask = torch.isin(values, self.lesion_labels.to(values.device)).to(torch.uint8)
        return MetaTensor(mask, meta=label.meta) if isinstance(label, MetaTensor) else mask


class LesionMaskd(MapTransform):
    """Dictionary twin of :class:`LesionMask`."""

    def __init__(self, keys: KeysCollection, lesion_labels: Sequence[int]) -> None:
        super().__init__(keys)
        self.masker = LesionMask(lesion_labels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.masker(d[key])
        return d


def build_case_transforms(config: MedganConfig) -> Compose:
    """The full load -> check -> RAS -> spacing -> mask -> normalise chain for ``config``."""
    chain: list[Any] = [
        LoadCased(roi_names=config.data.roi_names),
        CheckCased(),
        # labels given explicitly: nibabel's RAS convention (MONAI's current default, which
        # warns that it will change to the meta-tensor's own space)
        Orientationd(keys=("image", "label"), axcodes="RAS", labels=RAS_LABELS),
    ]
    if config.data.spacing_mm is not None:
        chain.append(
            Spacingd(
                keys=("image", "label"),
                pixdim=config.data.spacing_mm,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    chain += [
        LesionMaskd(keys="label", lesion_labels=config.data.lesion_labels),
        NormalizeModalityd(keys="image", modality=config.modality, config=config.intensity),
    ]
    return Compose(chain)


def load_case(case: Case, config: MedganConfig) -> dict[Hashable, Any]:
    """Load, check and preprocess one case.

    Returns a dict with ``image`` ``(C, X, Y, Z)`` float32 in [-1, 1] (RAS, configured spacing),
    ``label`` ``(1, X, Y, Z)`` uint8 binary lesion mask, ``case_id`` and ``medgan_intensity``.
    Raises :class:`DataError` naming the file for any unusable input.
    """
    try:
        out = build_case_transforms(config)(dict(case))
    except DataError:
        raise
    except RuntimeError as err:  # MONAI wraps transform errors; unwrap our own
        cause = err.__cause__
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    check_modality(case, config.modality)  # after reading: unreadable files are named first
    out["image"] = out["image"].float()
    return out
