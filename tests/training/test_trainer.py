"""The training loop: outputs, resume exactness, NaN guard, interrupts, checkpoints, devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.config import config_from_dict
from medgan.errors import CheckpointError, ConfigError, OutputError, TrainingDivergedError
from medgan.training import trainer as trainer_module
from medgan.training.trainer import train


def tiny_config(spatial_dims: int = 2, steps: int = 6, model: dict | None = None,
                **train_overrides):
    return config_from_dict({
        "modality": "ct", "spatial_dims": spatial_dims,
        "data": {"patch_size": 32, "patches_per_case": 6, "min_lesion_voxels": 5,
                 "lesion_free_fraction": 0.2},
        "model": {"latent_dim": 8, "ngf": 4, "ndf": 4, **(model or {})},
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "sample_every": 3,
                  "checkpoint_every": 3, "ema_decay": 0.9, **train_overrides},
    })


@pytest.fixture
def dataset(make_dataset) -> Path:
    return make_dataset(n=2, shape=(40, 40, 18))


def _weights(run: Path, stem: str = "generator") -> dict[str, torch.Tensor]:
    return load_file(str(resolve_checkpoint(run) / f"{stem}.safetensors"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_train_writes_every_artefact(tmp_path, dataset, spatial_dims):
    run = tmp_path / "run"
    result = train(tiny_config(spatial_dims), data=dataset, out=run, progress=False)
    assert result.steps == 6
    for name in ("config.yaml", "MODEL_CARD.md", "loss_curves.png", "samples/final.png",
                 "samples/step-00000003.png", "history.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    meta = read_sidecar(result.checkpoint)
    assert meta["step"] == 6
    assert meta["config"]["modality"] == "ct" and meta["config"]["spatial_dims"] == spatial_dims
    assert "modality" not in meta and "spatial_dims" not in meta  # stored once, in config
    assert meta["format_version"] == 2
    assert meta["intensity"]["units"] == "HU"
    assert "images_per_s" not in meta  # timings are not part of the hashed sidecar
    assert json.loads((result.checkpoint / "stats.json").read_text())["images_per_s"] > 0
    ids = [c["id"] for c in meta["training_cases"]]
    assert len(set(ids)) == meta["n_cases"] == len(ids) > 0
    assert all(len(c["files"]) == 2 and all(len(h) == 64 for h in c["files"].values())
               for c in meta["training_cases"])  # image and label
    assert len(meta["data_fingerprint"]) == 64
    assert set(meta["files"]) == {"generator.safetensors", "generator_ema.safetensors",
                                  "discriminator.safetensors", "training_state.safetensors"}
    card = (run / "MODEL_CARD.md").read_text()
    assert "not be used for diagnosis" in card and meta["data_fingerprint"] in card
    assert all(case_id in card for case_id in ids)


def test_one_step_changes_weights(tmp_path, dataset):
    torch.manual_seed(0)
    cfg = tiny_config(steps=1)
    from medgan.checkpoint import build_generator

    torch.manual_seed(0)
    initial = build_generator(cfg, 1).state_dict()
    train(cfg, data=dataset, out=tmp_path / "run", progress=False)
    after = _weights(tmp_path / "run")
    changed = [k for k in initial if k.endswith("weight") and not torch.equal(initial[k], after[k])]
    assert changed, "no generator weight changed after one step"


def test_resume_matches_uninterrupted_run(tmp_path, dataset):
    full = tmp_path / "full"
    train(tiny_config(steps=6), data=dataset, out=full, seed=3, progress=False)
    part = tmp_path / "part"
    train(tiny_config(steps=3), data=dataset, out=part, seed=3, progress=False)
    train(tiny_config(steps=6), data=dataset, out=part, seed=3, resume=True, progress=False)
    for stem in ("generator", "generator_ema", "discriminator"):
        a, b = _weights(full, stem), _weights(part, stem)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{stem}.{key} differs after resume"
    assert read_sidecar(resolve_checkpoint(part))["step"] == 6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, dataset, monkeypatch):
    real_loss = trainer_module.generator_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(trainer_module, "generator_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="step 5"):
        train(tiny_config(steps=8), data=dataset, out=run, progress=False)
    meta = read_sidecar(resolve_checkpoint(run))
    assert meta["step"] == 3  # the checkpoint before the NaN, never one after it
    for tensor in _weights(run).values():
        assert torch.isfinite(tensor.float()).all()


def test_interrupt_saves_checkpoint(tmp_path, dataset, monkeypatch):
    real_step = trainer_module.Monitor.after_step

    def interrupt(self, *args):
        real_step(self, *args)
        if self.state.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Monitor, "after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=6), data=dataset, out=tmp_path / "run", progress=False)
    assert read_sidecar(resolve_checkpoint(tmp_path / "run"))["step"] == 2


def test_refuses_non_empty_run_dir(tmp_path, dataset):
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="`resume`"):
        train(tiny_config(), data=dataset, out=run, progress=False)
    assert (run / "mine.txt").read_text() == "keep me"


def test_resume_without_run_is_clear(tmp_path, dataset):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny_config(), data=dataset, out=tmp_path / "nothing", resume=True)


def test_resume_refuses_model_change(tmp_path, dataset):
    run = tmp_path / "run"
    train(tiny_config(steps=2), data=dataset, out=run, progress=False)
    other = tiny_config(steps=4, model={"ngf": 8})
    with pytest.raises(ConfigError, match="only train"):
        train(other, data=dataset, out=run, resume=True, progress=False)


def test_cuda_request_without_gpu(tmp_path, dataset):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA"):
        train(tiny_config(), data=dataset, out=tmp_path / "run", device="cuda")


@pytest.mark.parametrize("loss,extra", [
    ("hinge", {}), ("wgan-gp", {}), ("bce", {"d_steps": 2}),
])
def test_loss_variants_train(tmp_path, dataset, loss, extra):
    model = {"d_norm": "none", "spectral_norm": True} if loss == "wgan-gp" else {}
    cfg = tiny_config(steps=2, loss=loss, model=model, **extra)
    result = train(cfg, data=dataset, out=tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())


def test_cli_train_and_resume(tmp_path, dataset, make_config):
    cfg = make_config()
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--config", str(cfg), "--data", str(dataset), "--out",
                               str(run), "--steps", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "checkpoint:" in res.output
    res = runner.invoke(main, ["train", "--out", str(run), "--resume", "--steps", "3",
                               "--config", str(cfg), "--data", str(dataset), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 3


def test_cli_resume_without_config_uses_run_data_and_steps(tmp_path, dataset, make_config):
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--config", str(make_config()), "--data", str(dataset),
                               "--out", str(run), "--steps", "2", "--seed", "5",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["train", "--out", str(run), "--resume", "--steps", "4",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    meta = read_sidecar(resolve_checkpoint(run))
    assert meta["step"] == 4 and meta["seed"] == 5
    assert meta["data_source"] == str(dataset.resolve())
    res = runner.invoke(main, ["train", "--out", str(run), "--resume", "--set",
                               "model.ngf=16"])
    assert res.exit_code == 2 and "only train.*" in res.output


def test_cli_dry_run_prints_config(make_config):
    res = CliRunner().invoke(main, ["train", "--config", str(make_config()), "--dry-run",
                                    "--set", "train.batch_size=16"])
    assert res.exit_code == 0, res.output
    assert "batch_size: 16" in res.output


def test_cli_bad_override(make_config):
    res = CliRunner().invoke(main, ["train", "--config", str(make_config()), "--set",
                                    "train.batch_size=-3", "--dry-run"])
    assert res.exit_code == 2
    assert "train.batch_size" in res.output
