"""medgan.atomic: complete files or none, the old file kept on any failure."""

from __future__ import annotations

import errno
import json

import pytest

from medgan.atomic import (
    atomic_path,
    save_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_interrupt_or_failing_serialiser_keeps_old_file(tmp_path, error):
    target = tmp_path / "dice.png"
    target.write_bytes(b"old")

    def save(tmp):
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(error):
        save_atomic(target, save)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_os_error_names_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "examples.npz"

    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert info.value.filename == str(target)
    assert info.value.errno == errno.ENOSPC
    assert not target.exists() and _leftovers(tmp_path) == []


def test_temporary_keeps_suffix_for_format_detection(tmp_path):
    seen = []
    save_atomic(tmp_path / "grid.png", lambda tmp: seen.append(tmp.suffix) or tmp.write_bytes(b""))
    assert seen == [".png"]


def test_missing_folder_is_an_os_error_naming_the_target(tmp_path):
    target = tmp_path / "no" / "such" / "file.txt"
    with pytest.raises(OSError) as info:
        write_text_atomic(target, "x")
    assert info.value.filename == str(target)


def test_device_is_written_in_place_not_replaced(tmp_path):
    """Renaming over /dev/full (as root) would replace the device node with a file."""
    import os
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError), atomic_path(fifo) as target:
        assert target == fifo  # no temporary name: the pipe itself is opened
        raise OSError(errno.EPIPE, "stop before blocking on the pipe", str(target))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if os.path.exists("/dev/full"):
        with pytest.raises(OSError) as info:
            write_text_atomic("/dev/full", "x" * 10_000)
        assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_symlink_is_kept_and_its_target_replaced(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
