"""medgan.training.monitor: logging, sample and checkpoint cadence, the NaN guard, final artefacts.

No data and no optimisation: a tiny :class:`TrainState` stands still while the test plays the
loop, advancing ``state.step`` and handing the monitor chosen losses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from medgan.checkpoint import build_metadata, read_sidecar, resolve_checkpoint
from medgan.config import config_from_dict
from medgan.data.intensity import IntensityMapping
from medgan.errors import TrainingDivergedError
from medgan.training.monitor import Monitor, TrainResult
from medgan.training.state import TrainState

CASES = [{"id": "patient_017", "files": {"img.nii.gz": "1" * 64, "lab.nii.gz": "2" * 64}},
         {"id": "patient_042", "files": {"img.nii.gz": "3" * 64, "lab.nii.gz": "4" * 64}}]


def make_monitor(run: Path, steps: int, log_every: int, sample_every: int,
                 checkpoint_every: int) -> tuple[Monitor, list[int]]:
    """A monitor over a tiny 2D state; also returns the steps ``state.checkpoint`` wrote."""
    config = config_from_dict({
        "modality": "ct", "spatial_dims": 2, "data": {"patch_size": 32},
        "model": {"latent_dim": 8, "ngf": 4, "ndf": 4},
        "train": {"steps": steps, "batch_size": 4, "log_every": log_every,
                  "sample_every": sample_every, "checkpoint_every": checkpoint_every,
                  "ema_decay": 0.9},
    })
    state = TrainState.create(config, 1, torch.device("cpu"), seed=0)
    meta = build_metadata(config, image_channels=1, spacing_mm=(1.0, 1.0, 2.0),
                          intensity=IntensityMapping("ct", (-200.0,), (300.0,)).to_dict(),
                          training_cases=CASES, seed=0, n_patches=12, n_lesion_patches=9,
                          data_fingerprint="f" * 64)
    written: list[int] = []
    real_checkpoint = state.checkpoint

    def checkpoint(*args, **kwargs):
        written.append(state.step)
        return real_checkpoint(*args, **kwargs)

    state.checkpoint = checkpoint
    monitor = Monitor(run, config, meta, state, {}, progress=False)
    return monitor, written


def play(monitor: Monitor, steps: range, bad: dict[int, tuple[str, float]] | None = None
         ) -> None:
    """Steps with loss_d = step and loss_g = -step, except ``bad[step] = (loss, value)``."""
    for step in steps:
        monitor.state.step = step
        losses = {"loss_d": torch.tensor(float(step)), "loss_g": torch.tensor(-float(step))}
        if bad and step in bad:
            name, value = bad[step]
            losses[name] = torch.tensor(value)
        monitor.after_step(losses["loss_d"], losses["loss_g"], torch.full((4,), 0.5),
                           torch.full((4,), -0.5))


#: (steps, log_every, sample_every, checkpoint_every) -> logged steps, grids, checkpoints
CADENCE = [
    pytest.param((6, 2, 3, 2), [2, 4, 6], [3, 6], [2, 4, 6], id="every interval divides"),
    pytest.param((5, 2, 10, 2), [2, 4, 5], [], [2, 4, 5], id="last step off the grid"),
    pytest.param((4, 3, 4, 4), [3, 4], [4], [4], id="checkpoint at the final step once"),
    pytest.param((3, 1, 1, 100), [1, 2, 3], [1, 2, 3], [3], id="only the final checkpoint"),
]


@pytest.mark.parametrize(("settings", "logged", "grids", "checkpoints"), CADENCE)
def test_cadence(tmp_path, caplog, settings, logged, grids, checkpoints) -> None:
    steps = settings[0]
    monitor, written = make_monitor(tmp_path / "run", *settings)
    monitor.start()
    with caplog.at_level(logging.INFO, logger="medgan.training.monitor"):
        play(monitor, range(1, steps + 1))
    monitor.close()
    result = monitor.finish()
    assert [s for s, _ in monitor.history["loss_d"]] == logged
    # each logged value is the mean over the steps since the previous log
    starts = [0, *logged[:-1]]
    expected = [sum(range(a + 1, b + 1)) / (b - a) for a, b in zip(starts, logged, strict=True)]
    assert [v for _, v in monitor.history["loss_d"]] == pytest.approx(expected)
    assert [v for _, v in monitor.history["loss_g"]] == pytest.approx([-v for v in expected])
    assert [f"step {s}/{steps}" in caplog.text for s in logged] == [True] * len(logged)
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == sorted([f"step-{s:08d}.png" for s in grids] + ["final.png"])
    assert [s for s, _ in monitor.history["diversity_msssim"]] == [*grids, steps]
    assert written == checkpoints, "a step was checkpointed twice or a checkpoint was missed"
    assert result.checkpoint == resolve_checkpoint(tmp_path / "run")
    assert read_sidecar(result.checkpoint)["step"] == steps


def test_finish_returns_the_result_and_writes_the_model_card(tmp_path) -> None:
    run = tmp_path / "run"
    monitor, _ = make_monitor(run, 4, 2, 100, 100)
    monitor.start()
    play(monitor, range(1, 5))
    monitor.close()
    result = monitor.finish()
    assert isinstance(result, TrainResult)
    assert (result.run_dir, result.steps) == (run, 4)
    assert result.checkpoint == run / "checkpoints" / "step-00000004"
    assert result.grid == run / "samples" / "final.png" and result.grid.is_file()
    assert result.images_per_s > 0
    assert result.losses["loss_d"] == pytest.approx(3.5)  # mean of steps 3 and 4
    assert result.losses["loss_g"] == pytest.approx(-3.5)
    for card in (run / "MODEL_CARD.md", result.checkpoint / "MODEL_CARD.md"):
        text = card.read_text()
        assert "## Training cases" in text and "Outputs are synthetic" in text
        for case in CASES:
            name, digest = next(iter(case['files'].items()))
            assert f"| {case['id']} | {name} `{digest[:16]}`" in text
    history = json.loads((run / "history.json").read_text())
    assert [s for s, _ in history["loss_d"]] == [2, 4]
    assert (run / "loss_curves.png").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    meta = read_sidecar(result.checkpoint)
    assert [c["id"] for c in meta["training_cases"]] == ["patient_017", "patient_042"]
    assert meta["history"]["loss_d"] == [[2, 1.5], [4, 3.5]]
    stats = json.loads((result.checkpoint / "stats.json").read_text())
    assert stats["images_per_s"] == pytest.approx(result.images_per_s)


#: (bad steps, log_every) -> the step named in the error, last good checkpoint step
NAN = [
    pytest.param({3: ("loss_d", float("nan"))}, 2, 3, 2, id="NaN loss_d between logs"),
    pytest.param({3: ("loss_g", float("inf"))}, 2, 3, 2, id="Inf loss_g between logs"),
    pytest.param({4: ("loss_g", float("-inf"))}, 2, 4, 2, id="on a log step"),
    pytest.param({3: ("loss_d", float("nan")), 4: ("loss_g", float("nan"))}, 2, 3, 2,
                 id="the first bad step is named"),
    pytest.param({5: ("loss_d", float("nan"))}, 100, 5, 4, id="caught before the checkpoint"),
]


@pytest.mark.parametrize(("bad", "log_every", "named", "kept"), NAN)
def test_non_finite_loss_raises_naming_the_first_bad_step(tmp_path, bad, log_every, named,
                                                         kept) -> None:
    run = tmp_path / "run"
    monitor, written = make_monitor(run, 8, log_every, 100, 2)
    monitor.start()
    with pytest.raises(TrainingDivergedError) as err:
        play(monitor, range(1, 9), bad)
    monitor.close()
    message = str(err.value)
    assert f"a loss became NaN/Inf at step {named};" in message
    assert f"last good checkpoint: {run / 'checkpoints' / f'step-{kept:08d}'}" in message
    assert not monitor.finite_so_far()
    assert written[-1] == kept and resolve_checkpoint(run).name == f"step-{kept:08d}"
    with pytest.raises(TrainingDivergedError):  # and nothing is saved afterwards
        monitor.finish()
    assert written[-1] == kept


def test_divergence_before_any_checkpoint_says_so(tmp_path) -> None:
    monitor, written = make_monitor(tmp_path / "run", 8, 1, 100, 100)
    monitor.start()
    with pytest.raises(TrainingDivergedError, match="none was written yet"):
        play(monitor, range(1, 3), {1: ("loss_d", float("nan"))})
    monitor.close()
    assert written == [] and not (tmp_path / "run" / "checkpoints").exists()

