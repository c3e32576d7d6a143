"""Locate a checkpoint and read its verified sidecar: JSON and hashes only, no torch.

The CLI uses these before loading any heavy library, so a wrong path is reported at once. The
folder layout and how checkpoints are written are described in :mod:`medgan.checkpoint.store`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from medgan._version import __version__
from medgan.errors import CheckpointError

SIDECAR = "checkpoint.json"
STATS = "stats.json"
LATEST = "latest.json"
#: Stem of the safetensors file of an inpainting checkpoint that holds training lesion masks
#: ``masks`` ``(N, *P)`` uint8 (shapes only; the default lesion shapes for insertion).
LESION_MASKS = "lesion_masks"
#: Version written by this release; 1 (medgan 0.1) kept modality, spatial_dims, patch_size and
#: latent_dim twice (top level and in ``config``); 2 keeps them in ``config`` only and adds
#: ``training_cases``.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_sha256(folder: Path) -> str:
    """The identity of a checkpoint: SHA-256 of its sidecar (which hashes every weight file)."""
    return sha256_file(Path(folder) / SIDECAR)


def kept_message(checkpoint_dir: Path) -> str:
    """Which checkpoint survives a failed write, for the error message."""
    try:
        latest = json.loads((checkpoint_dir / LATEST).read_text())["latest"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no earlier checkpoint exists"
    return f"the previous checkpoint {checkpoint_dir / latest} is kept"


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder, its ``checkpoints/`` folder, a checkpoint folder or a file in it."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint does not exist")
    if p.is_file():
        p = p.parent
    for candidate in (p, p / "checkpoints"):
        latest = candidate / LATEST
        if latest.is_file():
            try:
                name = json.loads(latest.read_text())["latest"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                name = None
            if not isinstance(name, str) or not name.startswith("step-") or "/" in name:
                raise CheckpointError(f"{latest}: unreadable checkpoint pointer")
            return candidate / name
    if (p / SIDECAR).is_file():
        return p
    raise CheckpointError(f"{p}: no medgan checkpoint here (no {SIDECAR} or checkpoints/{LATEST})")


def read_sidecar(folder: Path) -> dict[str, Any]:
    """Read and verify a checkpoint folder's sidecar and file hashes (no weights loaded).

    The result is the sidecar as written; :func:`medgan.checkpoint.metadata.upgrade` turns a
    format-1 sidecar into the current layout.
    """
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist (a checkpoint "
                              f"pointer names it, but it was moved or deleted)")
    pickles = [f.name for f in folder.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{folder / pickles[0]}: refusing a checkpoint folder that contains pickle files; "
            "medgan loads weights only from safetensors"
        )
    try:
        meta = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: missing {SIDECAR}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{folder / SIDECAR}: not valid JSON") from None
    if not isinstance(meta, dict) or "files" not in meta or "config" not in meta:
        raise CheckpointError(f"{folder / SIDECAR}: not a medgan checkpoint sidecar")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{folder}: checkpoint format {meta.get('format_version')} written by medgan "
            f"{meta.get('medgan_version')} cannot be read by medgan {__version__}"
        )
    for name, digest in meta["files"].items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in {SIDECAR} but missing")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f}: SHA-256 does not match {SIDECAR}; file is corrupt or "
                                  "was modified")
    return meta
