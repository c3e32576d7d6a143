"""Ctrl-C (SIGINT) and SIGTERM during ``medgan train``, ``sample`` and ``evaluate segmentation``.

Each command runs as a real ``python -m medgan`` process and is signalled while it works. It
must exit with 130 (SIGINT) or 143 (SIGTERM) and one ``Interrupted.`` line, and leave:

* train: a checkpoint of the interrupted step that verifies, pointed to by ``latest.json``;
* sample: the output folder exactly as it was (no half-written file, no datalist that lists a
  file that is not there);
* evaluate segmentation: only complete per-run JSON files, which ``--resume`` then reuses.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint
from helpers_process import SIGNALS, files_of, latest_step, tiny_train_config, write_yaml

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.checkpoint import store as checkpoint_module
from medgan.cli import main
from medgan.sampling import sample


def assert_interrupted(child, code: int) -> None:
    assert child.finish() == code, child.stderr[-3000:]
    assert "Traceback" not in child.stderr, child.stderr[-3000:]
    assert child.stderr.rstrip().splitlines()[-1] == "Interrupted."


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_train(tmp_path, train_data, medgan_process, sig, code):
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=10_000))
    run = tmp_path / "run"
    child = medgan_process("train", "--config", config, "--data", train_data, "--out", run,
                           "--device", "cpu", "--no-progress")
    child.wait_until(lambda: (latest_step(run) or 0) >= 4, "checkpoint 4")
    child.send(sig)
    assert_interrupted(child, code)
    saved = re.search(r"interrupted at step (\d+); checkpoint saved to (\S+)", child.stderr)
    assert saved, child.stderr[-2000:]
    step = int(saved[1])
    folder = resolve_checkpoint(run)
    assert folder == Path(saved[2]) and latest_step(run) == step >= 4
    assert read_sidecar(folder)["step"] == step  # every file verifies against its hash
    assert not list((run / "checkpoints").glob(".step-*"))


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory) -> Path:
    """An untrained 2D CT generator at 1 mm (fits the phantoms of the benchmark), recorded as
    trained on no patient of them (so the benchmark's leak check lets it through)."""
    return make_checkpoint(tmp_path_factory.mktemp("gan"), spacing_mm=(1.0, 1.0, 1.0),
                           training_cases=[])


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_sample_keeps_the_previous_output(tmp_path, generator_run, medgan_process, sig, code):
    out = tmp_path / "synthetic"
    sample(generator_run, 3, out, seed=1, progress=False)
    (out / "notes.txt").write_text("not medgan's")
    before = files_of(out)
    child = medgan_process("sample", "--checkpoint", generator_run, "-n", "100000", "--out", out,
                           "--overwrite", "--batch-size", "16", "--device", "cpu",
                           "--no-progress")
    child.wait_until(lambda: len(list(out.glob(".partial-*/imagesTr/synth_*"))) >= 20,
                     "20 written samples")
    child.send(sig)
    assert_interrupted(child, code)
    assert files_of(out) == before  # no half-written file, no partial folder, old set intact
    listed = json.loads((out / "dataset.json").read_text())["training"]
    assert all((out / c[k]).is_file() for c in listed for k in ("image", "label"))


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_evaluate_segmentation_then_resume(tmp_path, make_dataset, generator_run,
                                           medgan_process, sig, code):
    data = make_dataset(n=6, shape=(40, 40, 8))
    out = tmp_path / "bench"
    args = ["evaluate", "segmentation", "--data", data, "--checkpoint", generator_run, "--out",
            out, "--fast", "--seeds", "1", "--train-cases", "all", "--iterations", "10",
            "--arms", "real,real+aug,real+aug+synthetic", "--ratio", "0.2", "--device", "cpu",
            "--no-progress"]
    child = medgan_process(*args)
    child.wait_until(lambda: list(out.glob("runs/*/*/seed0.json")), "a finished run")
    child.send(sig)
    assert_interrupted(child, code)
    finished = sorted(out.glob("runs/*/*/seed*.json"))
    assert 1 <= len(finished) < 3 and not (out / "report.json").exists()
    for path in [*finished, out / "protocol.json"]:
        json.loads(path.read_text())  # complete: written atomically
    for path in finished:
        assert path.with_suffix(".npz").is_file()  # its examples were written before it
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--resume"]])
    assert result.exit_code == 0, result.output
    assert f"3 runs ({len(finished)} resumed)" in result.output


def _worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.is_file() else []


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_dataloader_workers(tmp_path, make_dataset,
                                                              medgan_process):
    """``docker stop``, Slurm and ``kill -TERM -PGID`` signal the DataLoader workers too."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to find the DataLoader worker processes")
    data = make_dataset(n=12, shape=(96, 96, 24))
    config = tiny_train_config(num_workers=2)
    config["data"]["spacing_mm"] = [0.5, 0.5, 0.5]  # slow preprocessing: time to signal
    config_path = write_yaml(tmp_path / "config.yaml", config)
    run = tmp_path / "run"
    child = medgan_process("train", "--config", config_path, "--data", data, "--out", run,
                           "--device", "cpu", "--no-progress")
    child.wait_until(lambda: len(_worker_pids(child.proc.pid)) >= 2, "two DataLoader workers")
    child.send(signal.SIGTERM, group=True)
    assert_interrupted(child, 143)
    assert "DataLoader worker" not in child.stderr
    assert not (run / "config.yaml").exists()  # stopped while the data were still loading


def test_ctrl_c_in_the_middle_of_a_checkpoint_write(tmp_path, train_data, monkeypatch):
    """The interrupt lands inside the periodic checkpoint of step 4 (in-process, exact): the
    half-written folder goes, and the interrupt handler writes step 4 in full."""
    real_save = checkpoint_module.save_file
    calls = {"n": 0}

    def save_file(tensors, path, *args, **kwargs):
        if "step-00000004" in path:
            calls["n"] += 1
            if calls["n"] == 2:  # the second weight file of the first attempt
                raise KeyboardInterrupt
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=8))
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--data",
                                       str(train_data), "--out", str(run), "--device", "cpu",
                                       "--no-progress"])
    assert result.exit_code == 130, result.output
    assert result.stderr.rstrip().splitlines()[-1] == "Interrupted."
    folder = resolve_checkpoint(run)
    assert folder.name == "step-00000004" and read_sidecar(folder)["step"] == 4
    assert not list((run / "checkpoints").glob(".step-*"))


class _InterruptedFinalizer:
    """Raises an interrupt from ``__del__``, where Python prints it and carries on."""

    def __init__(self, code: int | None) -> None:
        self.code = code

    def __del__(self) -> None:
        raise KeyboardInterrupt(*([self.code] if self.code else []))


@pytest.mark.parametrize(("code", "expected"), [(None, 130), (143, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_lost_in_a_finalizer_is_delivered_again(monkeypatch, code, expected):
    """A signal that lands in a finalizer (torch's DataLoader, the import system) would be
    dropped and the command would run on; the CLI sends it again."""
    import time

    import medgan.info

    def long_work(path):
        _InterruptedFinalizer(code)  # dropped at once: __del__ raises, Python ignores it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a command that would otherwise run on
            time.sleep(0.001)
        raise AssertionError("the lost interrupt was not delivered again")

    monkeypatch.setattr(medgan.info, "describe", long_work)
    result = CliRunner().invoke(main, ["info", "anything"])
    assert result.exit_code == expected, result.output
    assert result.stderr.rstrip().splitlines()[-1] == "Interrupted."
    assert "Exception ignored" not in result.stderr
