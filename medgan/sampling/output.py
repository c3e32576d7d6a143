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
from pathlib import Path
from typing import Any

from medgan.atomic import write_json_atomic
from medgan.errors import OutputError

PARTIAL_PREFIX = ".partial-"
NAME = "synth_{:05d}.nii.gz"
NAME_RE = re.compile(r"^synth_(\d{5,})\.nii\.gz$")


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


def finalise(partial: Path, out: Path, n: int, datalist: dict[str, Any]) -> None:
    """Move the finished files into ``out``, drop outdated synth files, write dataset.json."""
    (out / "dataset.json").unlink(missing_ok=True)  # never list files while they change
    for sub in ("imagesTr", "labelsTr"):
        if not (out / sub).exists():  # a new dataset: one rename instead of one per file
            os.replace(partial / sub, out / sub)
            continue
        for f in sorted((partial / sub).iterdir()):
            os.replace(f, out / sub / f.name)
        for f in (out / sub).iterdir():  # left by an earlier, larger run (overwrite)
            m = NAME_RE.match(f.name)
            if m and int(m.group(1)) >= n:
                f.unlink()
    os.replace(partial / "contact_sheet.png", out / "contact_sheet.png")
    write_json_atomic(out / "dataset.json", datalist)
    shutil.rmtree(partial, ignore_errors=True)


def make_partial(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f"{PARTIAL_PREFIX}{os.getpid()}"
        (partial / "imagesTr").mkdir(parents=True)
        (partial / "labelsTr").mkdir()
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    return partial
