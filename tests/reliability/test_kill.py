"""SIGKILL during ``medgan train`` (a real process) at seeded moments, then ``--resume``.

A killed process runs no handler, so this checks the on-disk protocol alone: checkpoints are
written into ``.step-*.tmp<pid>`` folders, renamed into place, and only then is
``latest.json`` replaced. After every kill the checkpoint ``latest.json`` names must verify
(SHA-256 of every file), the resumed run must start exactly there, and no work beyond the last
checkpoint interval may be lost.
"""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers_process import latest_step, tiny_train_config, write_yaml
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.config import config_from_dict
from medgan.training.trainer import train

STEPS = 40
EVERY = 2  # checkpoint_every
KILL_PLAN = ("after-checkpoint", "mid-step", "during-checkpoint-write", "mid-step")
SEED = 20251123
WEIGHTS = ("generator", "generator_ema", "discriminator")


def logged_step(stderr: str) -> int:
    """The last step the child logged (``log_every`` is 1), 0 before the first."""
    steps = re.findall(r"^INFO: step (\d+)/", stderr, flags=re.MULTILINE)
    return int(steps[-1]) if steps else 0


def verified_latest(run: Path) -> int:
    """The step of the checkpoint ``latest.json`` points to, after verifying every file."""
    folder = resolve_checkpoint(run)
    assert folder.parent == run / "checkpoints" and not folder.name.startswith(".")
    meta = read_sidecar(folder)  # raises on a missing or modified file
    assert meta["step"] == latest_step(run)
    assert set(meta["files"]) == {f"{w}.safetensors" for w in WEIGHTS} | {
        "training_state.safetensors"}
    return int(meta["step"])


def temporary_folders(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob(".step-*"))


def wait_for_kill_point(child, plan: str, start: int, run: Path, rng: random.Random) -> None:
    if plan == "after-checkpoint":  # a given number of checkpoints later, at a random moment
        target = start + rng.randint(1, 3) * EVERY
        child.wait_until(lambda: (latest_step(run) or 0) >= target, f"checkpoint {target}")
        time.sleep(rng.uniform(0.0, 0.05))
    elif plan == "mid-step":  # a random moment inside a random step
        target = start + rng.randint(1, 5)
        child.wait_until(lambda: logged_step(child.stderr) >= target, f"step {target}")
        time.sleep(rng.uniform(0.0, 0.05))
    else:  # the moment a checkpoint's temporary folder shows up (best effort: 1 ms polling)
        deadline = start + 5 * EVERY
        while not temporary_folders(run) and logged_step(child.stderr) < deadline:
            assert child.proc.poll() is None, child.stderr[-2000:]
            time.sleep(0.001)


@pytest.mark.slow
def test_sigkill_then_resume_never_loses_a_checkpoint(tmp_path, train_data, medgan_process):
    rng = random.Random(SEED)
    config = tiny_train_config(steps=STEPS, checkpoint_every=EVERY)
    config_path = write_yaml(tmp_path / "config.yaml", config)
    run = tmp_path / "run"
    base = ["train", "--data", train_data, "--out", run, "--device", "cpu", "--no-progress",
            "--seed", "3"]
    saved = 0
    for k, plan in enumerate(KILL_PLAN):
        child = medgan_process(*base, *(["--resume"] if k else ["--config", config_path]))
        if k:  # the resumed run starts exactly at the checkpoint verified after the last kill
            resumed = child.wait_until(
                lambda c=child: re.search(r"resumed from (\S+) at step (\d+)", c.stderr),
                "the resume message")
            assert int(resumed[2]) == saved and Path(resumed[1]).name == f"step-{saved:08d}"
        wait_for_kill_point(child, plan, saved, run, rng)
        partial = [t.name for t in temporary_folders(run)]
        child.send(signal.SIGKILL)
        assert child.finish() == -signal.SIGKILL, f"kill {k} ({plan}) came after the run ended"
        done = logged_step(child.stderr)
        saved = verified_latest(run)
        # latest.json never runs ahead of the work done, and at most one interval is lost
        assert saved <= done <= saved + EVERY, (plan, done, saved)
        print(f"kill {k} ({plan}): logged step {done}, latest.json step {saved}, "
              f"partial folders at the kill {partial}")  # shown with pytest -s
        for tmp in temporary_folders(run):  # a partial folder is never taken for a checkpoint
            assert resolve_checkpoint(run) != tmp
    final = medgan_process(*base, "--resume")
    assert final.finish() == 0, final.stderr[-3000:]
    assert verified_latest(run) == STEPS
    assert not temporary_folders(run), "stale partial checkpoint folders were not cleaned up"
    assert (run / "MODEL_CARD.md").is_file()
    folder = resolve_checkpoint(run)
    killed = {w: load_file(str(folder / f"{w}.safetensors")) for w in WEIGHTS}
    for stem, weights in killed.items():
        for key, value in weights.items():
            assert torch.isfinite(value.float()).all(), f"{stem}.{key} is not finite"
    # four kills and resumes end with the weights of a run that was never interrupted
    reference = train(config_from_dict(config), data=train_data, out=tmp_path / "ref", seed=3,
                      device="cpu", progress=False)
    for stem, weights in killed.items():
        expected = load_file(str(reference.checkpoint / f"{stem}.safetensors"))
        for key, value in expected.items():
            assert torch.equal(weights[key], value), f"{stem}.{key} differs after the kills"
