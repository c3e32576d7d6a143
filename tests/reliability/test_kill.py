"""SIGKILL during ``medgan train`` (a real process) at seeded moments, then ``--resume``.

A killed process runs no handler, so this checks the on-disk protocol alone: checkpoints are
written into ``.step-*.tmp<pid>`` folders, renamed into place, and only then is
``latest.json`` replaced. After every kill the checkpoint ``latest.json`` names must verify
(SHA-256 of every file), the resumed run must start exactly there, and no work beyond the last
checkpoint interval may be lost.

The kill during a checkpoint write must land inside the write, which polling cannot promise
(a tiny checkpoint is written in milliseconds). That child runs with a ``sitecustomize`` that
pauses :func:`medgan.checkpoint.store.save_checkpoint` right after it wrote a (seeded) chosen
file into the temporary folder, and writes a marker naming that folder: the kill is sent only
once the marker exists, so it always hits a half-written checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers_process import ENV, latest_step, tiny_train_config, write_yaml
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.config import config_from_dict
from medgan.training.trainer import train

STEPS = 40
EVERY = 2  # checkpoint_every
KILL_PLAN = ("after-checkpoint", "mid-step", "during-checkpoint-write", "mid-step")
SEED = 20251123
WEIGHTS = ("generator", "generator_ema", "discriminator")
#: Files save_checkpoint writes into its temporary folder, in order; the paused write stops
#: after one of them (the rename and latest.json come after the last).
PAUSE_AFTER = ("generator.safetensors", "discriminator.safetensors",
               "training_state.safetensors", "generator_ema.safetensors", "checkpoint.json",
               "stats.json")
PAUSE_HOOK = textwrap.dedent("""\
    # written by tests/reliability/test_kill.py: pause a checkpoint write half-way
    import os
    import time
    from pathlib import Path

    def _pause_checkpoint_writes(marker, after):
        import medgan.checkpoint.store as store

        def pause(path):
            path = Path(path)
            if path.name == after and ".tmp" in path.parent.name and not marker.exists():
                partial = marker.with_name(marker.name + ".partial")
                partial.write_text(str(path.parent))
                os.replace(partial, marker)
                time.sleep(600)  # the test kills this process now

        real_save, real_json = store.save_file, store.write_json_atomic

        def save_file(tensors, filename, *args, **kwargs):
            result = real_save(tensors, filename, *args, **kwargs)
            pause(filename)
            return result

        def write_json_atomic(path, *args, **kwargs):
            result = real_json(path, *args, **kwargs)
            pause(path)
            return result

        store.save_file, store.write_json_atomic = save_file, write_json_atomic

    if os.environ.get("MEDGAN_TEST_PAUSE_MARKER"):
        _pause_checkpoint_writes(Path(os.environ["MEDGAN_TEST_PAUSE_MARKER"]),
                                 os.environ["MEDGAN_TEST_PAUSE_AFTER"])
""")


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


def paused_writes(tmp_path: Path, monkeypatch, after: str) -> Path:
    """Make the next child pause its first checkpoint write after ``after``; returns the marker
    path it writes (holding the temporary folder) when it pauses."""
    hook = tmp_path / "pause_hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK, encoding="utf-8")
    marker = tmp_path / "paused.txt"
    paths = [str(hook), *filter(None, [ENV.get("PYTHONPATH")])]
    monkeypatch.setitem(ENV, "PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setitem(ENV, "MEDGAN_TEST_PAUSE_MARKER", str(marker))
    monkeypatch.setitem(ENV, "MEDGAN_TEST_PAUSE_AFTER", after)
    return marker


def paused_folder(child, marker: Path, run: Path) -> Path:
    """Wait for the paused write; the temporary folder it is writing, checked to exist."""
    child.wait_until(marker.exists, "the paused checkpoint write")
    partial = Path(marker.read_text())
    assert partial.parent == run / "checkpoints" and partial in temporary_folders(run)
    assert re.fullmatch(r"\.step-\d{8}\.tmp\d+", partial.name), partial.name
    return partial


def wait_for_kill_point(child, plan: str, start: int, run: Path, rng: random.Random) -> None:
    if plan == "after-checkpoint":  # a given number of checkpoints later, at a random moment
        target = start + rng.randint(1, 3) * EVERY
        child.wait_until(lambda: (latest_step(run) or 0) >= target, f"checkpoint {target}")
        time.sleep(rng.uniform(0.0, 0.05))
    elif plan == "mid-step":  # a random moment inside a random step
        target = start + rng.randint(1, 5)
        child.wait_until(lambda: logged_step(child.stderr) >= target, f"step {target}")
        time.sleep(rng.uniform(0.0, 0.05))
    # "during-checkpoint-write": the child pauses itself inside the write (see paused_folder)


@pytest.mark.slow
def test_sigkill_then_resume_never_loses_a_checkpoint(tmp_path, train_data, medgan_process,
                                                      monkeypatch):
    rng = random.Random(SEED)
    config = tiny_train_config(steps=STEPS, checkpoint_every=EVERY)
    config_path = write_yaml(tmp_path / "config.yaml", config)
    run = tmp_path / "run"
    base = ["train", "--data", train_data, "--out", run, "--device", "cpu", "--no-progress",
            "--seed", "3"]
    saved = 0
    for k, plan in enumerate(KILL_PLAN):
        marker = None
        with monkeypatch.context() as env:
            if plan == "during-checkpoint-write":
                after = rng.choice(PAUSE_AFTER)
                marker = paused_writes(tmp_path / f"kill{k}", env, after)
            child = medgan_process(*base, *(["--resume"] if k else ["--config", config_path]))
        if k:  # the resumed run starts exactly at the checkpoint verified after the last kill
            resumed = child.wait_until(
                lambda c=child: re.search(r"resumed from (\S+) at step (\d+)", c.stderr),
                "the resume message")
            assert int(resumed[2]) == saved and Path(resumed[1]).name == f"step-{saved:08d}"
        wait_for_kill_point(child, plan, saved, run, rng)
        paused = paused_folder(child, marker, run) if marker is not None else None
        partial = [t.name for t in temporary_folders(run)]
        child.send(signal.SIGKILL)
        assert child.finish() == -signal.SIGKILL, f"kill {k} ({plan}) came after the run ended"
        done = logged_step(child.stderr)
        saved = verified_latest(run)
        if paused is not None:  # the kill hit the write: its checkpoint never became latest
            assert paused.is_dir(), "the paused temporary folder vanished before the kill"
            assert (paused / after).is_file(), f"the kill came before {after} was written"
            writing = int(re.match(r"\.step-(\d+)\.", paused.name)[1])
            assert saved == writing - EVERY, (saved, writing)
            assert not (run / "checkpoints" / f"step-{writing:08d}").exists()
        # latest.json never runs ahead of the work done, and at most one interval is lost
        assert saved <= done <= saved + EVERY, (plan, done, saved)
        where = f", paused after {after}" if paused is not None else ""
        print(f"kill {k} ({plan}{where}): logged step {done}, latest.json step {saved}, "
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
