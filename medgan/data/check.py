"""Dataset integrity check (``medgan check-data``), in the spirit of nnU-Net's verification.

Each case is read as it is on disk (no resampling) and checked: files readable, image/label
shape and geometry agree, finite and non-constant intensities, label values as configured, a
lesion present, and the scan large enough for the patch at the configured spacing. The report
also lists spacing, size, lesion count and lesion volume per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import label as connected_components
from tqdm.auto import tqdm

from medgan.config import MedganConfig
from medgan.data.datalist import Case, image_files
from medgan.data.transforms import CheckCase, check_modality, read_image, read_label
from medgan.errors import DataError


@dataclass
class CaseReport:
    """What ``check-data`` found for one case; ``errors`` make it unusable."""

    case_id: str
    image: str
    label: str
    shape: list[int] = field(default_factory=list)
    channels: int = 0
    spacing_mm: list[float] = field(default_factory=list)
    intensity_range: list[float] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    lesion_components: int = 0
    lesion_volume_ml: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # RTSTRUCT / SEG: structures found and used

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class DatasetReport:
    """All case reports plus dataset-level statistics."""

    cases: list[CaseReport]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    @property
    def n_bad(self) -> int:
        return sum(not c.ok for c in self.cases)

    def summary(self) -> dict[str, Any]:
        good = [c for c in self.cases if c.ok]
        spacing = np.asarray([c.spacing_mm for c in good]) if good else np.zeros((0, 3))
        shape = np.asarray([c.shape for c in good]) if good else np.zeros((0, 3))
        stats = {}
        if good:
            stats = {
                "spacing_mm_median": np.median(spacing, 0).round(3).tolist(),
                "spacing_mm_min": spacing.min(0).round(3).tolist(),
                "spacing_mm_max": spacing.max(0).round(3).tolist(),
                "shape_median": np.median(shape, 0).astype(int).tolist(),
                "shape_min": shape.min(0).tolist(),
                "shape_max": shape.max(0).tolist(),
                "lesion_volume_ml_median": float(np.median([c.lesion_volume_ml for c in good])),
                "cases_without_lesion": sum(c.lesion_components == 0 for c in good),
            }
        return {"cases": len(self.cases), "usable": len(good), "unusable": self.n_bad, **stats}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(),
                "cases": [asdict(c) for c in self.cases]}


def _check_one(case: Case, config: MedganConfig) -> CaseReport:
    rep = CaseReport(case["case_id"], ", ".join(image_files(case)), case["label"])
    try:
        channels = [read_image(f) for f in image_files(case)]
        label, dicom_label = read_label(case, channels[0], config.data.roi_names)
        check_modality(case, config.modality)  # after reading: unreadable files come first
    except DataError as err:
        rep.errors.append(str(err))
        return rep
    if dicom_label is not None:
        rep.notes += dicom_label.notes()
        rep.warnings += dicom_label.problems()
    image = channels[0]
    rep.shape = list(image.shape[1:])
    rep.channels = sum(int(c.shape[0]) for c in channels)
    rep.spacing_mm = [round(float(s), 4) for s in image.pixdim[:3]]
    try:
        for f, ch in zip(image_files(case), channels, strict=True):
            CheckCase()(ch, label, f, case["label"])
    except DataError as err:
        rep.errors.append(str(err))
        return rep
    rep.intensity_range = [float(min(c.min() for c in channels)),
                           float(max(c.max() for c in channels))]
    values = np.unique(label.numpy().astype(np.int64))
    rep.label_values = values.tolist()
    unexpected = sorted(set(values.tolist()) - {0} - set(config.data.lesion_labels))
    if unexpected:
        rep.warnings.append(
            f"{case['label']}: label values {unexpected} are not in data.lesion_labels "
            f"{config.data.lesion_labels} and are treated as background"
        )
    lesion = np.isin(label.numpy()[0], config.data.lesion_labels)
    rep.lesion_components = int(connected_components(lesion, connectivity=3).max())
    rep.lesion_volume_ml = round(float(lesion.sum() * np.prod(rep.spacing_mm)) / 1000.0, 3)
    if rep.lesion_components == 0:
        rep.warnings.append(
            f"{case['label']}: no lesion voxels (values {config.data.lesion_labels})"
        )
    _check_size(rep, config)
    return rep


def _check_size(rep: CaseReport, config: MedganConfig) -> None:
    """Scan extent (in voxels at the target spacing) against the patch size."""
    wanted = config.data.spacing_mm or (0.0, 0.0, 0.0)
    target = [t if t > 0 else sp for t, sp in zip(wanted, rep.spacing_mm, strict=True)]
    extent = [s * sp / t for s, sp, t in zip(rep.shape, rep.spacing_mm, target, strict=True)]
    axes = extent[:2] if config.spatial_dims == 2 else extent
    p = config.data.patch_size
    if min(axes) < p / 2:
        rep.errors.append(
            f"{rep.image}: scan is {' x '.join(f'{e:.0f}' for e in axes)} voxels at the target "
            f"spacing, smaller than half of data.patch_size={p}; lower the patch size or the "
            "spacing"
        )
    elif min(axes) < p:
        rep.warnings.append(
            f"{rep.image}: scan ({' x '.join(f'{e:.0f}' for e in axes)} voxels) is smaller than "
            f"the {p}-voxel patch; patches will be padded"
        )


def check_dataset(cases: Sequence[Case], config: MedganConfig, progress: bool = True,
                  problems: Sequence[str] = ()) -> DatasetReport:
    """Check every case; never raises for a bad case (see each :class:`CaseReport`).

    ``problems`` are datalist-level findings (unpaired/missing files), reported as bad cases.
    """
    reports = [
        _check_one(c, config)
        for c in tqdm(cases, desc="checking", unit="case", disable=not progress, leave=False)
    ]
    for msg in problems:
        path = msg.split(": ", 1)[0]
        reports.append(CaseReport(Path(path).name.split(".")[0], path, "", errors=[msg]))
    return DatasetReport(reports)


def format_report(report: DatasetReport) -> str:
    """Human-readable table plus the problems, one line each."""
    header = f"{'case':<28} {'shape':<16} {'spacing mm':<20} {'ch':>2} {'lesions':>7} " \
             f"{'vol ml':>8}  status"
    lines = [header, "-" * len(header)]
    for c in report.cases:
        status = "ERROR" if c.errors else ("warn" if c.warnings else "ok")
        shape = "x".join(map(str, c.shape)) or "-"
        spacing = "x".join(f"{s:.2f}" for s in c.spacing_mm) or "-"
        lines.append(f"{c.case_id[:28]:<28} {shape:<16} {spacing:<20} {c.channels:>2} "
                     f"{c.lesion_components:>7} {c.lesion_volume_ml:>8.2f}  {status}")
    s = report.summary()
    lines.append("")
    lines.append(f"{s['usable']} of {s['cases']} case(s) usable")
    if "spacing_mm_median" in s:
        lines.append(f"spacing mm: median {s['spacing_mm_median']}, min {s['spacing_mm_min']}, "
                     f"max {s['spacing_mm_max']}")
        lines.append(f"shape: median {s['shape_median']}, min {s['shape_min']}, "
                     f"max {s['shape_max']}")
        lines.append(f"lesion volume ml: median {s['lesion_volume_ml_median']:.2f}; "
                     f"cases without lesion: {s['cases_without_lesion']}")
    problems = [(e, "error") for c in report.cases for e in c.errors]
    problems += [(w, "warning") for c in report.cases for w in c.warnings]
    problems += [(n, "info") for c in report.cases for n in c.notes]
    if problems:
        lines.append("")
        lines += [f"{kind}: {msg}" for msg, kind in problems]
    return "\n".join(lines)
