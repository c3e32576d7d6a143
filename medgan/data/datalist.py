"""Datalists: which image/label files form a dataset.

Three layouts are understood, all returning the same list of case dicts
``{"image": str | list[str], "label": str, "case_id": str}`` with absolute paths:

* a MONAI decathlon-style ``dataset.json`` (``training`` list, paths relative to the JSON);
* a folder pair ``imagesTr/`` + ``labelsTr/`` matched by file name (nnU-Net ``_0000`` channel
  suffixes are grouped into multi-channel images);
* a folder of DICOM series folders, one case per sub-folder, each holding the image series in
  ``image/`` (or DICOM files directly) and a label: a NIfTI ``label.nii.gz`` / ``mask.nii.gz``,
  or a DICOM RTSTRUCT / SEG file (see :func:`medgan.data.dicom_labels.find_dicom_label`).

A decathlon entry may also give ``roi_names`` (the ROIs / segments of an RTSTRUCT / SEG label
that form the lesion), which then replaces ``data.roi_names`` for that case.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medgan.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
Case = dict[str, Any]


def _strip_nifti(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _resolve_inside(root: Path, rel: Any, source: Path, what: str) -> str:
    """Resolve ``rel`` against ``root``; refuse relative paths that escape ``root``.

    Absolute paths are taken as written (the user chose them explicitly).
    """
    if not isinstance(rel, str) or not rel.strip():
        raise DataError(f"{source}: {what} must be a non-empty path string, not {rel!r}")
    if Path(rel).is_absolute():
        return str(Path(rel))
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{source}: {what} {rel!r} points outside the dataset folder {root}")
    return str(path)


def _case_id(image: str | list[str]) -> str:
    first = Path(image[0] if isinstance(image, list) else image)
    name = _strip_nifti(first.name)
    return re.sub(r"_\d{4}$", "", name) if isinstance(image, list) else name


def load_decathlon_json(path: Path, key: str = "training") -> list[Case]:
    """Read a decathlon ``dataset.json``; relative paths resolve against its folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict) or key not in data:
        raise DataError(f"{path}: no {key!r} list (expected MONAI decathlon format)")
    entries = data[key]
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: {key!r} must be a non-empty list of {{image, label}} entries")
    root = path.parent
    declared = _declared_modality(data.get("modality"), path)
    cases: list[Case] = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DataError(f"{path}: {where} must be an object with 'image' and 'label'")
        image = entry["image"]
        if isinstance(image, list):
            if not image:
                raise DataError(f"{path}: {where}.image is an empty list")
            img: str | list[str] = [
                _resolve_inside(root, p, path, f"{where}.image") for p in image
            ]
        else:
            img = _resolve_inside(root, image, path, f"{where}.image")
        label = _resolve_inside(root, entry["label"], path, f"{where}.label")
        case = {"image": img, "label": label, "case_id": entry.get("case_id")}
        if "roi_names" in entry:
            case["roi_names"] = _roi_names(entry["roi_names"], path, where)
        if declared:
            case["declared_modality"] = declared
        cases.append(case)
    _assign_case_ids(cases)
    return cases


def _roi_names(value: Any, path: Path, where: str) -> list[str | int]:
    ok = isinstance(value, list) and value and all(
        isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.strip()
        for v in value)
    if not ok:
        raise DataError(f"{path}: {where}.roi_names must be a non-empty list of ROI names or "
                        f"numbers, not {value!r}")
    return list(value)


def _declared_modality(value: Any, path: Path) -> dict[str, Any] | None:
    """The decathlon ``modality`` field (``{"0": "CT"}``) as ``{"names", "source"}``."""
    if not isinstance(value, dict) or not value:
        return None
    names = [str(v) for _, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    return {"names": names, "source": str(path)}


def _assign_case_ids(cases: list[Case]) -> None:
    """File stem as case id; the parent folder's name when stems repeat (flair.nii.gz ...);
    else the first folder level that tells all cases apart (STS_001/CT/image/image.nii.gz)."""
    folders = [Path(image_files(c)[0]).parent.parts for c in cases]
    depth = next((d for d in range(min(map(len, folders)))
                  if len({f[d] for f in folders}) == len(folders)), -1)
    for namer in (
        lambda i: _case_id(cases[i]["image"]),
        lambda i: folders[i][-1],
        lambda i: folders[i][depth],
        lambda i: f"{folders[i][-1]}_{_case_id(cases[i]['image'])}",
    ):
        ids = [c["case_id"] or namer(i) for i, c in enumerate(cases)]
        if len(set(ids)) == len(ids):
            break
    for c, cid in zip(cases, ids, strict=True):
        c["case_id"] = str(cid)


def load_folder_pair(folder: Path, problems: list[str] | None = None) -> list[Case]:
    """Match ``imagesTr/*`` with ``labelsTr/*`` by name (``case_0000.nii.gz`` = channel 0)."""
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    groups: dict[str, list[Path]] = {}
    for f in sorted(images_dir.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(NIFTI_SUFFIXES):
            continue
        stem = _strip_nifti(f.name)
        groups.setdefault(re.sub(r"_\d{4}$", "", stem), []).append(f)
    labels = {
        _strip_nifti(f.name): f
        for f in labels_dir.iterdir()
        if f.name.endswith(NIFTI_SUFFIXES) and not f.name.startswith(".")
    }
    if not groups:
        raise DataError(f"{images_dir}: no NIfTI images found")
    cases: list[Case] = []
    unpaired = [str(f[0]) for cid, f in groups.items() if cid not in labels]
    unpaired += [str(f) for cid, f in labels.items() if cid not in groups]
    if unpaired and problems is None:
        raise DataError(
            f"{folder}: {len(unpaired)} file(s) without a matching image/label, e.g. {unpaired[0]}"
        )
    for f in unpaired:
        problems.append(f"{f}: no matching {'label' if 'imagesTr' in f else 'image'} file")
    for cid, files in groups.items():
        if cid not in labels:
            continue
        img: str | list[str] = str(files[0]) if len(files) == 1 else [str(f) for f in files]
        cases.append({"image": img, "label": str(labels[cid]), "case_id": cid})
    return cases


def _dicom_case(case_dir: Path) -> Case | None:
    from medgan.data.dicom_labels import find_dicom_label

    label = next(
        (
            case_dir / f"{n}{s}"
            for n in ("label", "mask", "seg")
            for s in NIFTI_SUFFIXES
            if (case_dir / f"{n}{s}").is_file()
        ),
        None,
    )
    image_dir = case_dir / "image" if (case_dir / "image").is_dir() else case_dir
    if label is None:
        label = find_dicom_label(case_dir, image_dir)
    if label is None:
        return None
    if not any(f.is_file() and not f.name.endswith(NIFTI_SUFFIXES) for f in image_dir.iterdir()):
        if image_dir != case_dir:
            raise DataError(f"{image_dir}: DICOM folder is empty")
        raise DataError(
            f"{case_dir}: holds NIfTI files but no DICOM series; write a dataset.json that says "
            "which file is the image and which the label"
        )
    return {"image": str(image_dir), "label": str(label), "case_id": case_dir.name}


def load_dicom_folders(folder: Path) -> list[Case]:
    """One case per sub-folder: a DICOM series (in ``image/`` or directly) + a label (NIfTI,
    RTSTRUCT or SEG)."""
    cases = [c for d in sorted(folder.iterdir()) if d.is_dir() and (c := _dicom_case(d))]
    if not cases:
        raise DataError(
            f"{folder}: no case folders with a DICOM series and a label (label.nii.gz/"
            "mask.nii.gz, or an RTSTRUCT / DICOM SEG file)"
        )
    return cases


def load_datalist(source: str | Path, problems: list[str] | None = None) -> list[Case]:
    """Read any supported datalist layout; every referenced file must exist.

    With a ``problems`` list, per-case problems (missing or unpaired files) are appended to it
    and those cases dropped instead of raising :class:`DataError` (``--skip-bad``/check-data).
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: datalist does not exist")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise DataError(f"{source}: a datalist file must be a decathlon-style .json")
        cases = load_decathlon_json(source)
    elif (source / "dataset.json").is_file():
        cases = load_decathlon_json(source / "dataset.json")
    elif (source / "imagesTr").is_dir() and (source / "labelsTr").is_dir():
        cases = load_folder_pair(source, problems)
    else:
        cases = load_dicom_folders(source)
    seen: set[str] = set()
    kept: list[Case] = []
    for case in cases:
        missing = [f for f in [*image_files(case), case["label"]] if not Path(f).exists()]
        if missing:
            message = f"{missing[0]}: file listed in {source} does not exist"
            if problems is None:
                raise DataError(message)
            problems.append(message)
            continue
        if case["case_id"] in seen:
            raise DataError(f"{source}: case id {case['case_id']!r} appears twice")
        seen.add(case["case_id"])
        kept.append(case)
    if not kept:
        first = f" ({problems[0]})" if problems else ""
        raise DataError(f"{source}: no usable case left{first}")
    return kept


def image_files(case: Case) -> list[str]:
    """The image path(s) of a case as a list (one per channel)."""
    return list(case["image"]) if isinstance(case["image"], list) else [case["image"]]
