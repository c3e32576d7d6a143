"""Which patients a generator was trained on: case ids and a SHA-256 per image/label file.

Recorded in every checkpoint (``training_cases`` in ``checkpoint.json``) and the model card, so
a benchmark can refuse a generator that has seen its test patients
(:mod:`medgan.evaluation.leakage`). File hashes catch a test scan renamed to another case id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medgan.data.datalist import Case, image_files

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (a DICOM folder: of its sorted files' bytes)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def _file_names(paths: Sequence[str]) -> list[str]:
    """Short unique names: the base name, or ``parent/name`` where base names repeat."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else f"{Path(p).parent.name}/{n}"
            for n, p in zip(names, paths, strict=True)]


def case_record(case: Case, label: bool = True) -> dict[str, Any]:
    """``{"id": case id, "files": {name: sha256}}`` for the image file(s) and (``label``) the
    label file."""
    paths = image_files(case) + ([case["label"]] if label and case.get("label") else [])
    return {"id": str(case["case_id"]),
            "files": {n: file_sha256(p) for n, p in zip(_file_names(paths), paths, strict=True)}}


def training_cases(cases: Iterable[Case], used_ids: Iterable[str] | None = None,
                   label: bool = True) -> list[dict[str, Any]]:
    """Records (:func:`case_record`) of the ``cases`` whose id is in ``used_ids`` (all: None)."""
    keep = None if used_ids is None else {str(i) for i in used_ids}
    return [case_record(c, label) for c in cases if keep is None or str(c["case_id"]) in keep]


def recorded_ids(meta: dict[str, Any]) -> list[str] | None:
    """Case ids recorded in checkpoint metadata, or None when it records none (older)."""
    cases = meta.get("training_cases")
    return None if cases is None else [str(c["id"]) for c in cases]
