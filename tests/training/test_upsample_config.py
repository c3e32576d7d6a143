"""``model.upsample``: validation, the configs in configs/, training with it, and checkpoints
written before the key existed (medgan 0.1), which must load as transposed convolutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint
from monai.networks.blocks import UpSample
from torch import nn

from medgan.checkpoint import SIDECAR, read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.config import config_from_dict
from medgan.errors import ConfigError
from medgan.sampling import load_generator
from medgan.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _kinds(net: torch.nn.Module) -> tuple[int, int]:
    """(transposed convs, resize stages) in a generator."""
    conv_t = sum(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in net.modules())
    return conv_t, sum(isinstance(m, UpSample) for m in net.modules())


@pytest.mark.parametrize("bad", ["bilinear", "RESIZE", 2, None])
def test_bad_value_names_the_key_and_the_choices(bad):
    with pytest.raises(ConfigError, match=r"model\.upsample: must be 'deconv' or 'resize', not"):
        config_from_dict({"modality": "ct", "model": {"upsample": bad}}, source="cfg.yaml")


def test_bad_value_from_the_command_line(make_config):
    res = CliRunner().invoke(main, ["train", "--config", str(make_config()), "--set",
                                    "model.upsample=pixelshuffle", "--dry-run"])
    assert res.exit_code == 2
    assert "--set: model.upsample: must be 'deconv' or 'resize', not 'pixelshuffle'" in res.output
    assert "Traceback" not in res.output


def test_missing_key_means_deconv():
    assert config_from_dict({"modality": "ct"}).model.upsample == "deconv"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_use_resize(path):
    model = yaml.safe_load(path.read_text())["model"]
    if model.get("kind", "dcgan") != "dcgan":
        pytest.skip("model.upsample belongs to the DCGAN generator")
    assert model["upsample"] == "resize"


def _strip_upsample(run: Path) -> Path:
    """Rewrite the checkpoint sidecar as medgan 0.1 wrote it: no model.upsample key."""
    sidecar = resolve_checkpoint(run) / SIDECAR
    meta = json.loads(sidecar.read_text())
    del meta["config"]["model"]["upsample"]
    sidecar.write_text(json.dumps(meta, indent=2))
    return sidecar


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_checkpoint_without_the_key_loads_as_deconv(tmp_path, spatial_dims):
    run = make_checkpoint(tmp_path / "run", spatial_dims=spatial_dims, ngf=4)
    before = load_generator(run).generate(3, seed=7)
    sidecar = _strip_upsample(run)
    assert "upsample" not in json.loads(sidecar.read_text())["config"]["model"]
    loaded = load_generator(run)
    assert _kinds(loaded.generator) == (4, 0)  # 32 px: the 1 -> 4 seed, then 8, 16, 32
    assert torch.equal(loaded.generate(3, seed=7), before)


def test_resize_run_trains_samples_and_resumes(tmp_path, make_dataset):
    """A tiny resize run: checkpoint, model card, loading and resume all keep the kind."""
    dataset = make_dataset(n=2, shape=(40, 40, 18))
    config = config_from_dict({
        "modality": "ct", "spatial_dims": 2,
        "data": {"patch_size": 32, "patches_per_case": 6, "min_lesion_voxels": 5},
        "model": {"latent_dim": 8, "ngf": 4, "ndf": 4, "upsample": "resize"},
        "train": {"steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 2,
                  "checkpoint_every": 2, "ema_decay": 0.9},
    })
    run = tmp_path / "run"
    result = train(config, data=dataset, out=run, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    assert read_sidecar(result.checkpoint)["config"]["model"]["upsample"] == "resize"
    assert "resize upsampling" in (run / "MODEL_CARD.md").read_text()
    conv_t, stages = _kinds(load_generator(run).generator)
    assert (conv_t, stages) == (1, 3)
    resumed = train(config.model_copy(update={"train": config.train.model_copy(
        update={"steps": 3})}), data=dataset, out=run, resume=True, progress=False)
    assert resumed.steps == 3
    assert read_sidecar(resumed.checkpoint)["config"]["model"]["upsample"] == "resize"


def test_resume_refuses_switching_the_kind(tmp_path, make_dataset):
    dataset = make_dataset(n=2, shape=(40, 40, 18))
    base = {"modality": "ct", "data": {"patch_size": 32, "patches_per_case": 6,
                                       "min_lesion_voxels": 5},
            "model": {"latent_dim": 8, "ngf": 4, "ndf": 4},
            "train": {"steps": 1, "batch_size": 4, "checkpoint_every": 1}}
    run = tmp_path / "run"
    train(config_from_dict(base), data=dataset, out=run, progress=False)
    switched = {**base, "model": {**base["model"], "upsample": "resize"},
                "train": {**base["train"], "steps": 2}}
    with pytest.raises(ConfigError, match="only train"):
        train(config_from_dict(switched), data=dataset, out=run, resume=True, progress=False)
