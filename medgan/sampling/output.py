"""The output folder of ``medgan sample``: refuse what must not be replaced, stage, finalise.

Files are written into ``<out>/.partial-<pid>/`` and moved into place at the end;
``dataset.json`` is removed before and written (atomically) after the move, so it never lists a
missing or half-written file. A partial folder whose process is alive marks the folder as in
use (another ``medgan sample`` is writing there); one left by a killed process is removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medgan.atomic import write_json_atomic
from medgan.errors import OutputError

PARTIAL_PREFIX = ".partial-"
NAME = "synth_{:05d}.nii.gz"
NAME_RE = re.compile(r"^synth_(\d{5,})\.nii\.gz$")
DIR_RE = re.compile(r"^synth_(\d{5,})$")  # DICOM case folders
#: Output format -> its sub-folders.
FORMATS: dict[str, tuple[str, ...]] = {"nifti": ("imagesTr", "labelsTr"), "dicom": ("dicomTr",)}
SEGMENT_LABEL = "lesion"  # the one segment of a synthetic DICOM SEG


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours
        return True
    return True


def prepare_out(out: Path, overwrite: bool) -> None:
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
            f"{out}: output folder is not empty; pass `overwrite` to replace its contents")


def finalise(partial: Path, out: Path, n: int, datalist: dict[str, Any],
             subs: Sequence[str] = FORMATS["nifti"]) -> None:
    """Move the finished files into ``out``, drop outdated synth files, write dataset.json."""
    (out / "dataset.json").unlink(missing_ok=True)  # never list files while they change
    for sub in subs:
        if not (out / sub).exists():  # a new dataset: one rename instead of one per file
            os.replace(partial / sub, out / sub)
            continue
        for f in sorted((partial / sub).iterdir()):
            if f.is_dir() and (out / sub / f.name).exists():  # a DICOM case folder: replaced
                shutil.rmtree(out / sub / f.name)
            os.replace(f, out / sub / f.name)
        for f in (out / sub).iterdir():  # left by an earlier, larger run (overwrite)
            m = NAME_RE.match(f.name) or DIR_RE.match(f.name)
            if m and int(m.group(1)) >= n:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    os.replace(partial / "contact_sheet.png", out / "contact_sheet.png")
    write_json_atomic(out / "dataset.json", datalist)
    shutil.rmtree(partial, ignore_errors=True)


def make_partial(out: Path, subs: Sequence[str] = FORMATS["nifti"]) -> Path:
    """Create ``out`` and this process's staging folder with its ``subs`` sub-folders."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f"{PARTIAL_PREFIX}{os.getpid()}"
        for sub in subs:
            (partial / sub).mkdir(parents=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    return partial


def dicom_entry(subfolder: str, index: int, channels: int = 1) -> dict[str, object]:
    """The dataset.json entry of sample ``index`` written by ``medgan sample --format dicom``."""
    case = f"./{subfolder}/synth_{index:05d}"
    image: object = f"{case}/image" if channels == 1 else \
        [f"{case}/image_{c:04d}" for c in range(channels)]
    return {"image": image, "label": f"{case}/seg/SEG.dcm", "roi_names": [SEGMENT_LABEL]}
