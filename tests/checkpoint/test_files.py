"""medgan.checkpoint.files: finding a checkpoint, verifying its sidecar, its identity.

The module is torch-free, so these checkpoints are hand-written folders: weight files of a few
bytes (only their SHA-256 matters here) and a ``checkpoint.json`` that lists them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from medgan import __version__
from medgan.checkpoint.files import (
    FORMAT_VERSION,
    LATEST,
    SIDECAR,
    checkpoint_sha256,
    read_sidecar,
    resolve_checkpoint,
    sha256_file,
)
from medgan.errors import CheckpointError

WEIGHTS = {"generator.safetensors": b"generator weights",
           "discriminator.safetensors": b"discriminator weights"}


def write_checkpoint(folder: Path, files: dict[str, bytes] = WEIGHTS, **sidecar) -> Path:
    """A checkpoint folder whose sidecar lists ``files`` with their SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    meta = {"config": {"modality": "ct"}, "format_version": FORMAT_VERSION,
            "medgan_version": __version__, "step": 0,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            **sidecar}
    (folder / SIDECAR).write_text(json.dumps(meta), encoding="utf-8")
    return folder


def point_to(checkpoints: Path, name: str) -> None:
    (checkpoints / LATEST).write_text(json.dumps({"latest": name, "step": int(name[5:])}))


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder with checkpoints at steps 2 and 4; ``latest.json`` names step 4."""
    run = tmp_path / "run"
    for step in (2, 4):
        write_checkpoint(run / "checkpoints" / f"step-{step:08d}", step=step)
    point_to(run / "checkpoints", "step-00000004")
    return run


# ---- resolve_checkpoint ----
ACCEPTED = [
    pytest.param(lambda run: run, id="run folder"),
    pytest.param(lambda run: run / "checkpoints", id="checkpoints folder"),
    pytest.param(lambda run: run / "checkpoints" / LATEST, id="latest.json"),
    pytest.param(lambda run: run / "checkpoints" / "step-00000004", id="checkpoint folder"),
    pytest.param(lambda run: run / "checkpoints" / "step-00000004" / SIDECAR, id="sidecar"),
    pytest.param(lambda run: run / "checkpoints" / "step-00000004" / "generator.safetensors",
                 id="weight file"),
    pytest.param(lambda run: str(run), id="run folder as str"),
]


@pytest.mark.parametrize("where", ACCEPTED)
def test_resolve_accepts_every_way_to_name_a_checkpoint(run, where: Callable) -> None:
    assert resolve_checkpoint(where(run)) == run / "checkpoints" / "step-00000004"


def test_resolve_follows_the_pointer_not_the_newest_name(run) -> None:
    point_to(run / "checkpoints", "step-00000002")  # e.g. a same-step rewrite after a resume
    assert resolve_checkpoint(run) == run / "checkpoints" / "step-00000002"
    # a folder that is itself a checkpoint is taken as named, whatever latest.json says
    older = run / "checkpoints" / "step-00000004"
    assert resolve_checkpoint(older) == older


def test_resolve_a_lone_checkpoint_folder(tmp_path) -> None:
    folder = write_checkpoint(tmp_path / "copied")
    assert resolve_checkpoint(folder) == folder


REFUSED = [
    pytest.param(lambda run: run / "nope", "checkpoint does not exist", id="missing path"),
    pytest.param(lambda run: run.parent, "no medgan checkpoint here", id="folder without one"),
    pytest.param(lambda run: (run / "checkpoints" / "step-00000004" / SIDECAR).unlink() or (
        run / "checkpoints" / "step-00000004"), "no medgan checkpoint here",
        id="checkpoint folder without sidecar"),
]


@pytest.mark.parametrize(("where", "message"), REFUSED)
def test_resolve_refuses(run, where: Callable, message: str) -> None:
    path = where(run)
    with pytest.raises(CheckpointError, match=message) as err:
        resolve_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("pointer", [
    '{"latest": ', "[]", '{"step": 4}', "null",
    '{"latest": 4}', '{"latest": "../../etc"}',
])
def test_resolve_refuses_an_unreadable_pointer(run, pointer: str) -> None:
    latest = run / "checkpoints" / LATEST
    latest.write_text(pointer)
    with pytest.raises(CheckpointError, match="unreadable checkpoint pointer") as err:
        resolve_checkpoint(run)
    assert str(latest) in str(err.value)


def test_pointer_to_a_deleted_checkpoint_is_a_checkpoint_error(run) -> None:
    point_to(run / "checkpoints", "step-00000009")
    with pytest.raises(CheckpointError, match="step-00000009"):
        read_sidecar(resolve_checkpoint(run))


# ---- read_sidecar ----
@pytest.fixture
def folder(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "step-00000000")


def test_read_sidecar_returns_the_sidecar_as_written(folder) -> None:
    meta = read_sidecar(folder)
    assert meta == json.loads((folder / SIDECAR).read_text())
    assert set(meta["files"]) == set(WEIGHTS)


def edit(folder: Path, **changes) -> None:
    meta = json.loads((folder / SIDECAR).read_text())
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del meta[key]
    (folder / SIDECAR).write_text(json.dumps(meta))


def pickle_file(suffix: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / f"model{suffix}"
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        return path
    return make


def flip_one_byte(folder: Path) -> Path:
    path = folder / "generator.safetensors"
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def delete_listed_file(folder: Path) -> Path:
    (folder / "discriminator.safetensors").unlink()
    return folder / "discriminator.safetensors"


def write_sidecar(content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / SIDECAR).write_bytes(content)
        return folder / SIDECAR
    return make


def delete_sidecar(folder: Path) -> Path:
    (folder / SIDECAR).unlink()
    return folder


def format_version(version) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        edit(folder, format_version=version, medgan_version="9.9.9")
        return folder
    return make


#: (damage done to a good checkpoint -> the path the error must name, message fragment)
DAMAGE = [
    *[pytest.param(pickle_file(s), "refusing a checkpoint folder that contains pickle files",
                   id=f"pickle {s}") for s in (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".PT")],
    pytest.param(flip_one_byte, "SHA-256 does not match checkpoint.json", id="tampered"),
    pytest.param(delete_listed_file, "listed in checkpoint.json but missing", id="missing file"),
    pytest.param(delete_sidecar, "missing checkpoint.json", id="no sidecar"),
    pytest.param(write_sidecar(b'{"files": '), "not valid JSON", id="invalid JSON"),
    pytest.param(write_sidecar(b"\x80\x04\x95 pickled"), "not valid JSON", id="binary sidecar"),
    pytest.param(write_sidecar(b"[1, 2]"), "not a medgan checkpoint sidecar", id="JSON list"),
    pytest.param(write_sidecar(b'{"config": {}}'), "not a medgan checkpoint sidecar",
                 id="no files entry"),
    *[pytest.param(format_version(v), f"checkpoint format {v} written by medgan 9.9.9 cannot "
                   f"be read by medgan {__version__}", id=f"format {v!r}")
      for v in (FORMAT_VERSION + 1, 0, "2", None)],
]


@pytest.mark.parametrize(("damage", "message"), DAMAGE)
def test_read_sidecar_refuses(folder, damage: Callable[[Path], Path], message: str) -> None:
    named = damage(folder)
    with pytest.raises(CheckpointError) as err:
        read_sidecar(folder)
    assert message in str(err.value)
    assert str(named) in str(err.value)


def test_read_sidecar_refuses_a_missing_format_version(folder) -> None:
    edit(folder, format_version=...)
    with pytest.raises(CheckpointError, match="checkpoint format None"):
        read_sidecar(folder)


@pytest.mark.parametrize("version", [1, 2])
def test_read_sidecar_reads_every_readable_format_unchanged(folder, version: int) -> None:
    edit(folder, format_version=version, modality="ct")
    meta = read_sidecar(folder)
    assert meta["format_version"] == version and meta["modality"] == "ct"  # not upgraded here


def test_an_unlisted_file_is_not_verified(folder) -> None:
    """Only the files the sidecar lists are hashed: extra notes next to them do not matter."""
    (folder / "MODEL_CARD.md").write_text("# card")
    (folder / "stats.json").write_text('{"images_per_s": 3.0}')
    assert read_sidecar(folder)["files"].keys() == WEIGHTS.keys()


# ---- identity ----
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20])
def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_checkpoint_sha256_is_the_hash_of_the_sidecar(folder) -> None:
    digest = checkpoint_sha256(folder)
    assert digest == hashlib.sha256((folder / SIDECAR).read_bytes()).hexdigest()
    before = digest
    edit(folder, step=1)  # any change to the sidecar is a different checkpoint
    assert checkpoint_sha256(folder) != before


def test_checkpoint_sha256_covers_the_weights_through_their_hashes(tmp_path) -> None:
    a = write_checkpoint(tmp_path / "a")
    b = write_checkpoint(tmp_path / "b", files={**WEIGHTS, "generator.safetensors": b"other"})
    same = write_checkpoint(tmp_path / "same")
    assert checkpoint_sha256(a) == checkpoint_sha256(same) != checkpoint_sha256(b)
