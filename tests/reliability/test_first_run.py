"""A newcomer's first run: instant input errors, nothing left behind, a way out of a killed
run, helpful --set typos, reproducible checkpoint hashes and portable sample folders."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_process import Medgan, tiny_train_config, write_yaml

from medgan.checkpoint import checkpoint_sha256, resolve_checkpoint
from medgan.cli import main
from medgan.config import config_from_dict
from medgan.training import train

CASES = {
    "train-data-missing": ["train", "--config", "{cfg}", "--data", "/does/not/exist",
                           "--out", "{tmp}/run"],
    "train-out-not-empty": ["train", "--config", "{cfg}", "--out", "{tmp}/full"],
    "train-set-typo": ["train", "--config", "{cfg}", "--set", "model.ngff=32",
                       "--out", "{tmp}/run"],
    "train-config-typo": ["train", "--config", "{bad_cfg}", "--out", "{tmp}/run"],
    "train-resume-nothing": ["train", "--resume", "--out", "{tmp}/nothing"],
    "train-no-config": ["train", "--out", "{tmp}/run"],
    "sample-not-a-run": ["sample", "--checkpoint", "{tmp}/full", "--out", "{tmp}/s"],
    "evaluate-data-missing": ["evaluate", "segmentation", "--data", "/does/not/exist",
                              "--out", "{tmp}/e", "--config", "{cfg}"],
}
EXPECTED = {
    "train-data-missing": "/does/not/exist",
    "train-out-not-empty": "--resume",
    "train-set-typo": "--set: model.ngff: unknown option; did you mean model.ngf?",
    "train-config-typo": "did you mean model.ngf?",
    "train-resume-nothing": "cannot resume: the run folder does not exist",
    "train-no-config": "--config: a config is required for a new run",
    "sample-not-a-run": "no medgan checkpoint here",
    "evaluate-data-missing": "/does/not/exist",
}


@pytest.fixture
def first_run(tmp_path) -> dict[str, str]:
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(steps=2))
    bad = tiny_train_config(steps=2)
    bad["model"]["ngff"] = 8
    bad_cfg = write_yaml(tmp_path / "bad.yaml", bad)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    return {"cfg": str(cfg), "bad_cfg": str(bad_cfg), "tmp": str(tmp_path)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_errors_come_before_torch_loads(first_run, case):
    args = [a.format(**first_run) for a in CASES[case]]
    code = textwrap.dedent(f"""
        import sys
        from medgan.cli import main
        try:
            main({args!r}, prog_name="medgan")
        except SystemExit as exit:
            print("EXIT", exit.code, "TORCH", "torch" in sys.modules, "MONAI",
                  "monai" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert "EXIT 2 TORCH False MONAI False" in done.stdout, done.stdout + done.stderr
    assert EXPECTED[case] in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (Path(first_run["tmp"]) / "run").exists()  # nothing left behind


def test_a_failed_training_leaves_no_folder(tmp_path, make_dataset):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(steps=2))
    data = make_dataset(n=1)
    (Path(data).parent / "labelsTr").rename(Path(data).parent / "gone")  # labels missing
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(data),
                                       "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists()


def test_resume_after_a_kill_before_the_first_checkpoint_trains_from_step_zero(
        tmp_path, make_dataset, caplog):
    data = make_dataset(n=2, shape=(40, 40, 18))
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(steps=400, checkpoint_every=10_000))
    run = tmp_path / "run"
    child = Medgan(["train", "--config", str(cfg), "--data", str(data), "--out", str(run),
                    "--no-progress", "--seed", "3"], tmp_path / "first")
    child.wait_until(lambda: (run / "config.yaml").is_file() and "step 2/" in child.stderr,
                     "the first logged steps")
    child.send(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    assert not (run / "checkpoints" / "latest.json").exists()
    with caplog.at_level(logging.WARNING, logger="medgan"):
        again = CliRunner().invoke(main, ["train", "--resume", "--out", str(run), "--steps",
                                          "3", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "no checkpoint yet: training starts again from step 0" in caplog.text
    meta = json.loads((resolve_checkpoint(run) / "checkpoint.json").read_text())
    assert meta["step"] == 3 and meta["seed"] == 3  # the run's own seed, from run.json


def test_identical_trainings_have_the_same_checkpoint_hash(tmp_path, make_dataset):
    data = make_dataset(n=2, shape=(40, 40, 18))
    config = config_from_dict(tiny_train_config(steps=3, checkpoint_every=3))
    a = train(config, data=data, out=tmp_path / "a", progress=False, seed=1)
    b = train(config, data=data, out=tmp_path / "b", progress=False, seed=1)
    assert checkpoint_sha256(a.checkpoint) == checkpoint_sha256(b.checkpoint)
    assert (a.checkpoint / "stats.json").is_file()


def test_a_moved_sample_folder_still_loads(tmp_path, make_dataset):
    from helpers_checkpoint import make_checkpoint
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    run = make_checkpoint(tmp_path / "runs" / "gen")
    out = tmp_path / "runs" / "gen" / "synthetic"
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "-n", "2", "--out",
                                       str(out), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "dataset.json").read_text())["medgan"]
    assert info["checkpoint"] == "../checkpoints/step-00000000"  # relative to dataset.json
    moved = tmp_path / "elsewhere" / "runs"
    shutil.move(str(tmp_path / "runs"), str(moved))  # the run with its samples, as a colleague
    items = load_decathlon_datalist(str(moved / "gen" / "synthetic" / "dataset.json"),
                                    data_list_key="training")
    pair = LoadImaged(("image", "label"))(items[0])
    assert pair["image"].shape == pair["label"].shape
    shown = CliRunner().invoke(main, ["info", str(moved / "gen" / "synthetic" / "dataset.json"),
                                      "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["synthetic"] is True
    lone = tmp_path / "lone"  # the samples alone: still a valid dataset, the checkpoint unknown
    shutil.copytree(moved / "gen" / "synthetic", lone)
    assert LoadImaged(("image", "label"))(load_decathlon_datalist(
        str(lone / "dataset.json"), data_list_key="training")[1])["image"].ndim >= 3


def test_dry_run_of_a_resume_prints_the_resolved_config(tmp_path, make_dataset):
    data = make_dataset(n=2, shape=(40, 40, 18))
    config = config_from_dict(tiny_train_config(steps=2, checkpoint_every=2))
    train(config, data=data, out=tmp_path / "run", progress=False)
    result = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "run"),
                                       "--steps", "5", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "steps: 5" in result.output and "modality: ct" in result.output
