"""Atomic file writes: a file appears under its final name complete, or not at all.

Every writer in medgan that replaces a user-visible file (datalists, reports, figures, patch
caches, checkpoint sidecars, NIfTI outputs) goes through :func:`atomic_path`: the content is
written to a hidden temporary name in the target's folder (same file system, so the final
``os.replace`` is atomic) and renamed into place. On any error or interrupt (Ctrl-C, SIGTERM
turned into an exception) the temporary file is removed and the previous file, if any, is left
as it was. A process killed outright (SIGKILL) can leave a ``.<name>.tmp-<pid>-<thread>`` file
behind; it is never read, and the next write of the same name by that pid replaces it.

A target that exists and is not a regular file (``/dev/stdout``, a named pipe, a device) is
written in place: renaming over it would replace the device node or pipe with a file. A
symbolic link is followed, so the link stays and the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def temporary_name(path: Path) -> Path:
    """Hidden sibling of ``path`` unique to this process and thread; keeps the suffix, so that
    writers that choose a format from it (matplotlib, Pillow) still do."""
    suffix = "".join(path.suffixes[-1:])
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}{suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``.

    Raises:
        OSError: the write or the rename failed; ``filename`` is ``path`` (not the temporary
            name) so that messages name the file the user asked for.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():  # a device, pipe or socket: write in place
        try:
            yield path
        except OSError as err:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        return
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:  # an interrupt or a failing serialiser: no partial file is left
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path, fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync)


def write_json_atomic(path: str | Path, data: Any, fsync: bool = True) -> Path:
    """Write ``data`` as indented JSON atomically (fsync'd by default: datalists, sidecars)."""
    return write_text_atomic(path, json.dumps(data, indent=2), fsync)


def save_atomic(path: str | Path, save: Callable[[Path], Any], fsync: bool = False) -> Path:
    """Call ``save(tmp)`` (e.g. ``fig.savefig``, ``image.save``) and rename the result into
    place; returns ``path``."""
    with atomic_path(path, fsync) as tmp:
        save(tmp)
    return Path(path)
