"""medgan.checkpoint.store: atomic checkpoint writes, pruning, tensors and optimiser state."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from medgan.checkpoint import store
from medgan.checkpoint.files import (
    FORMAT_VERSION,
    LATEST,
    SIDECAR,
    STATS,
    checkpoint_sha256,
    read_sidecar,
    resolve_checkpoint,
)
from medgan.errors import CheckpointError, OutputError


def weights(value: float = 1.0) -> dict[str, dict[str, torch.Tensor]]:
    return {"generator": {"w": torch.full((2, 3), value), "b": torch.arange(3.0)},
            "discriminator": {"w": torch.full((4,), -value)}}


SIDECAR_IN = {"config": {"modality": "ct"}, "seed": 3}


def save(folder: Path, step: int, value: float = 1.0, **kwargs) -> Path:
    return store.save_checkpoint(folder, step, weights(value), dict(SIDECAR_IN), **kwargs)


def steps_on_disk(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def pointer(folder: Path) -> dict:
    return json.loads((folder / LATEST).read_text())


# ---- what a checkpoint holds ----
def test_save_writes_weights_sidecar_stats_and_pointer(tmp_path) -> None:
    final = save(tmp_path, 7, stats={"images_per_s": 123.0})
    assert final == tmp_path / "step-00000007"
    assert sorted(p.name for p in final.iterdir()) == [
        "checkpoint.json", "discriminator.safetensors", "generator.safetensors", STATS]
    meta = read_sidecar(final)  # verifies every listed hash
    assert set(meta["files"]) == {"generator.safetensors", "discriminator.safetensors"}
    assert meta["step"] == 7 and meta["format_version"] == FORMAT_VERSION
    assert meta["seed"] == 3 and meta["config"] == {"modality": "ct"}
    assert "images_per_s" not in meta and STATS not in meta["files"]
    assert json.loads((final / STATS).read_text()) == {"images_per_s": 123.0}
    assert pointer(tmp_path) == {"latest": "step-00000007", "step": 7}
    assert resolve_checkpoint(tmp_path) == final
    loaded = store.load_weights(final, "generator")
    assert all(torch.equal(loaded[k], v) for k, v in weights()["generator"].items())


def test_save_does_not_change_its_inputs(tmp_path) -> None:
    sidecar = dict(SIDECAR_IN)
    store.save_checkpoint(tmp_path, 1, weights(), sidecar)
    assert sidecar == SIDECAR_IN


@pytest.mark.parametrize("stats", [None, {}])
def test_no_stats_no_stats_file(tmp_path, stats) -> None:
    assert not (save(tmp_path, 1, stats=stats) / STATS).exists()


def test_stats_are_outside_the_checkpoint_identity(tmp_path) -> None:
    fast = save(tmp_path / "a", 5, stats={"images_per_s": 1000.0})
    slow = save(tmp_path / "b", 5, stats={"images_per_s": 1.0})
    bare = save(tmp_path / "c", 5)
    assert checkpoint_sha256(fast) == checkpoint_sha256(slow) == checkpoint_sha256(bare)
    other = save(tmp_path / "d", 5, value=2.0)  # other weights: another checkpoint
    assert checkpoint_sha256(other) != checkpoint_sha256(fast)


def test_device_and_layout_do_not_change_the_files(tmp_path) -> None:
    """Views, non-contiguous and grad-carrying tensors are written as plain CPU copies."""
    base = torch.arange(12.0).reshape(3, 4)
    plain = store.save_checkpoint(tmp_path / "a", 1, {"g": {"w": base.t().contiguous()}}, {})
    param = torch.nn.Parameter(base.clone())
    odd = store.save_checkpoint(tmp_path / "b", 1, {"g": {"w": param.t()}}, {})
    assert checkpoint_sha256(plain) == checkpoint_sha256(odd)


# ---- pruning and rewrites ----
@pytest.mark.parametrize(("keep", "steps", "expected"), [
    (1, [1, 2, 3], ["step-00000003"]),
    (2, [1, 2, 3, 4, 5], ["step-00000004", "step-00000005"]),
    (3, [10, 20], ["step-00000010", "step-00000020"]),
    (2, [5, 10, 100], ["step-00000010", "step-00000100"]),  # by number, not by string length
])
def test_only_the_newest_keep_checkpoints_remain(tmp_path, keep, steps, expected) -> None:
    for step in steps:
        save(tmp_path, step, keep=keep)
    assert steps_on_disk(tmp_path) == expected
    assert pointer(tmp_path)["latest"] == expected[-1]
    assert not list(tmp_path.glob(".*"))


def test_same_step_rewrite_swaps_in_the_new_weights(tmp_path) -> None:
    save(tmp_path, 3, value=1.0)
    first = checkpoint_sha256(tmp_path / "step-00000003")
    final = save(tmp_path, 3, value=2.0)
    assert steps_on_disk(tmp_path) == ["step-00000003"]
    assert checkpoint_sha256(final) != first
    assert torch.equal(store.load_weights(final, "generator")["w"], torch.full((2, 3), 2.0))
    read_sidecar(final)
    assert pointer(tmp_path)["latest"] == "step-00000003"
    assert not list(tmp_path.glob(".*")), "the swapped-out copy was left behind"


def test_the_checkpoint_latest_names_is_never_pruned(tmp_path) -> None:
    """A resume that rewrites an older step keeps it even when newer folders exist."""
    for step in (2, 4):
        save(tmp_path, step, keep=1)
    save(tmp_path, 2, keep=1)
    assert pointer(tmp_path)["latest"] == "step-00000002"
    read_sidecar(resolve_checkpoint(tmp_path))


def test_stale_partial_folders_are_removed_by_the_next_write(tmp_path) -> None:
    save(tmp_path, 1)
    for stale in (".step-00000002.tmp999", ".step-00000001.old999"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "generator.safetensors").write_bytes(b"half")
    save(tmp_path, 2)
    assert not list(tmp_path.glob(".step-*"))


# ---- failures ----
def fail_on(monkeypatch, name: str, when: Callable[..., bool], exc: BaseException) -> None:
    """Make ``store.<name>`` raise ``exc`` for the calls where ``when(*args)`` holds."""
    real = getattr(store, name)

    def failing(*args, **kwargs):
        if when(*args):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(store, name, failing)


def in_tmp(_tensors, path) -> bool:
    """A ``save_file(tensors, path)`` call into the temporary folder."""
    return ".tmp" in Path(path).parent.name


DISK_FULL = OSError(errno.ENOSPC, "No space left on device")
#: (function of store, which of its calls fails)
FAILURES = [
    pytest.param("save_file", in_tmp, id="a weight file"),
    pytest.param("save_file", lambda _, path: path.endswith("discriminator.safetensors"),
                 id="the second weight file"),
    pytest.param("write_json_atomic", lambda path, *_: Path(path).name == SIDECAR,
                 id="the sidecar"),
    pytest.param("write_json_atomic", lambda path, *_: Path(path).name == STATS, id="stats"),
    pytest.param("write_json_atomic", lambda path, *_: Path(path).name == LATEST,
                 id="the pointer"),
]


@pytest.mark.parametrize(("name", "when"), FAILURES)
def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, name, when) -> None:
    previous = save(tmp_path, 2, value=1.0, stats={"images_per_s": 1.0})
    before = checkpoint_sha256(previous)
    fail_on(monkeypatch, name, when, DISK_FULL)
    with pytest.raises(OutputError) as err:
        save(tmp_path, 4, value=2.0, stats={"images_per_s": 1.0})
    message = str(err.value)
    assert str(tmp_path) in message and "step-00000004" in message
    assert "No space left on device" in message
    assert f"the previous checkpoint {previous} is kept" in message
    assert pointer(tmp_path) == {"latest": "step-00000002", "step": 2}
    assert resolve_checkpoint(tmp_path) == previous
    assert checkpoint_sha256(previous) == before
    read_sidecar(previous)
    assert not list(tmp_path.glob(".step-*")), "a partial folder was left behind"


def test_a_failed_first_write_says_nothing_is_kept(tmp_path, monkeypatch) -> None:
    fail_on(monkeypatch, "save_file", in_tmp, DISK_FULL)
    with pytest.raises(OutputError, match="no earlier checkpoint exists"):
        save(tmp_path, 1)
    assert not (tmp_path / LATEST).exists() and steps_on_disk(tmp_path) == []


def test_a_failed_same_step_rewrite_keeps_the_checkpoint(tmp_path, monkeypatch) -> None:
    """The rewrite's swap: the folder latest.json names moves aside, the new one moves in."""
    previous = save(tmp_path, 3, value=1.0)
    before = checkpoint_sha256(previous)
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp" in Path(src).name and Path(dst) == previous:
            raise OSError(errno.EACCES, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    with pytest.raises(OutputError):
        save(tmp_path, 3, value=2.0)
    monkeypatch.undo()
    assert pointer(tmp_path)["latest"] == "step-00000003"
    assert previous.is_dir(), ("the checkpoint latest.json names was moved aside and not "
                               "moved back")
    assert checkpoint_sha256(previous) == before


def test_an_interrupt_drops_the_partial_folder(tmp_path, monkeypatch) -> None:
    previous = save(tmp_path, 1)
    fail_on(monkeypatch, "save_file", in_tmp, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    assert resolve_checkpoint(tmp_path) == previous
    assert not list(tmp_path.glob(".step-*"))


# ---- loading ----
@pytest.mark.parametrize("content", [b"not a safetensors file", b"", None])
def test_load_weights_refuses_what_is_not_safetensors(tmp_path, content) -> None:
    path = tmp_path / "generator.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read as safetensors") as err:
        store.load_weights(tmp_path, "generator")
    assert str(path) in str(err.value)


# ---- optimiser state ----
def model_and_optimizer(kind: str, lr: float, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    make = {"adam": lambda p: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.999)),
            "adamw": lambda p: torch.optim.AdamW(p, lr=lr, betas=(0.9, 0.99)),
            "sgd": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)}[kind]
    return model, make(model.parameters())


def train(model, opt, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path, kind) -> None:
    model, opt = model_and_optimizer(kind, lr=1e-2)
    train(model, opt, 3, seed=1)
    tensors, groups = store.optimizer_to_tensors(opt, "opt_g")
    assert all(isinstance(v, torch.Tensor) and k.startswith("opt_g.") for k, v in tensors.items())
    save_file(tensors, str(tmp_path / "state.safetensors"))
    groups = json.loads(json.dumps(groups))  # as the sidecar stores them

    copy, opt2 = model_and_optimizer(kind, lr=1e-2, seed=9)
    copy.load_state_dict(model.state_dict())
    store.optimizer_from_tensors(opt2, load_file(str(tmp_path / "state.safetensors")), "opt_g",
                                 groups)
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys() and a
    for idx in a:
        assert a[idx].keys() == b[idx].keys()
        for key in a[idx]:
            assert torch.equal(torch.as_tensor(a[idx][key]), torch.as_tensor(b[idx][key])), key
    train(model, opt, 2, seed=2)
    train(copy, opt2, 2, seed=2)
    for (name, p), q in zip(model.named_parameters(), copy.parameters(), strict=True):
        assert torch.equal(p, q), f"{name} differs after resuming the optimiser"


def test_optimizer_keeps_the_configured_learning_rate(tmp_path) -> None:
    """``train.lr_*`` and betas changed on resume take effect; the moments are restored."""
    model, opt = model_and_optimizer("adam", lr=1e-2)
    train(model, opt, 2, seed=1)
    tensors, groups = store.optimizer_to_tensors(opt, "opt_d")
    _, opt2 = model_and_optimizer("adam", lr=5e-4)
    opt2.param_groups[0]["betas"] = (0.0, 0.9)
    store.optimizer_from_tensors(opt2, {**tensors, "opt_g.0.step": torch.tensor(99.0)}, "opt_d",
                                 groups)
    assert opt2.param_groups[0]["lr"] == 5e-4 and opt2.param_groups[0]["betas"] == (0.0, 0.9)
    assert float(opt2.state_dict()["state"][0]["step"]) == 2.0  # not the other prefix's


def test_a_writer_killed_between_its_two_renames_loses_nothing(tmp_path) -> None:
    """SIGKILL after the folder latest.json names moved aside, before the new one moved in:
    the next write moves the old folder back instead of deleting it."""
    folder = tmp_path / "checkpoints"
    save(folder, 2, value=2.0)
    os.replace(folder / "step-00000002", folder / ".step-00000002.old4242")
    save(folder, 3, value=3.0, keep=5)
    assert steps_on_disk(folder) == ["step-00000002", "step-00000003"]
    assert load_file(str(folder / "step-00000002" / "generator.safetensors"))["w"][0, 0] == 2.0
    assert not list(folder.glob(".step-*"))
