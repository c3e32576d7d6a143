"""``medgan info FILE``: is this a medgan synthetic file, and from which checkpoint?

Understands NIfTI images/masks written by ``medgan sample`` (header ``descrip`` marker), a
synthetic ``dataset.json``, and checkpoint / run folders (sidecar summary). Reads headers and
JSON only; never loads weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medgan.errors import DataError

_MARKER = re.compile(r"medgan synthetic ckpt=(?P<ckpt>[0-9a-f]+) seed=(?P<seed>-?\d+)"
                     r"(?: idx=(?P<idx>\d+))?")


def _nifti_info(path: Path) -> dict[str, Any]:
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as err:  # nibabel raises several types for unreadable files
        raise DataError(f"{path}: cannot be read as NIfTI ({err})") from None
    descrip = bytes(header["descrip"].tobytes()).split(b"\0")[0].decode("ascii", "replace")
    match = _MARKER.search(descrip)
    info: dict[str, Any] = {"file": str(path), "kind": "nifti", "synthetic": bool(match),
                            "descrip": descrip, "shape": list(header.get_data_shape()),
                            "spacing_mm": [round(float(z), 4) for z in header.get_zooms()[:3]]}
    if match:
        info.update(checkpoint_sha256_prefix=match["ckpt"], seed=int(match["seed"]))
        if match["idx"] is not None:
            info["index"] = int(match["idx"])
    return info


def _datalist_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a datalist (expected a JSON object)")
    cases = data.get("training", [])
    synthetic = [c for c in cases if isinstance(c, dict) and c.get("synthetic")]
    info = {"file": str(path), "kind": "datalist", "synthetic": bool(data.get("synthetic")),
            "cases": len(cases), "synthetic_cases": len(synthetic)}
    if isinstance(data.get("medgan"), dict):
        info["medgan"] = data["medgan"]
    return info


def _checkpoint_info(path: Path) -> dict[str, Any]:
    from medgan.training.checkpoint import read_sidecar, resolve_checkpoint, sha256_file

    folder = resolve_checkpoint(path)
    meta = read_sidecar(folder)
    keys = ("modality", "spatial_dims", "patch_size", "image_channels", "spacing_mm", "step",
            "n_cases", "n_patches", "data_fingerprint", "medgan_version")
    cases = meta.get("training_cases")
    return {"file": str(folder), "kind": "checkpoint", "synthetic": False,
            "checkpoint_sha256": sha256_file(folder / "checkpoint.json"),
            **{k: meta.get(k) for k in keys},
            "training_cases": ([c["id"] for c in cases] if cases is not None
                               else "not recorded (trained before medgan recorded them)")}


def describe(path: str | Path) -> dict[str, Any]:
    """Summarise ``path`` (NIfTI, datalist JSON or checkpoint/run folder) as a dict."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: does not exist")
    if p.is_dir() or p.name in ("checkpoint.json", "latest.json"):
        return _checkpoint_info(p)
    if p.name.endswith((".nii", ".nii.gz")):
        return _nifti_info(p)
    if p.suffix == ".json":
        return _datalist_info(p)
    raise DataError(f"{p}: not a NIfTI file, datalist JSON or checkpoint folder")


def format_info(info: dict[str, Any]) -> str:
    """Readable multi-line summary; the first line answers 'is it synthetic?'."""
    kind = info["kind"]
    if kind == "checkpoint":
        head = f"{info['file']}: medgan checkpoint (not a synthetic image)"
    elif info["synthetic"]:
        head = f"{info['file']}: medgan SYNTHETIC {kind}"
    else:
        head = f"{info['file']}: no medgan synthetic marker"
    rows = [f"  {k}: {v}" for k, v in info.items() if k not in ("file", "kind")]
    return "\n".join([head, *rows])
