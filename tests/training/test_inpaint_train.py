"""``medgan train`` with ``model.kind: inpaint``: config, checkpoints, resume, grids, 3D."""

from __future__ import annotations

import pytest
import torch
from helpers_inpaint import inpaint_config
from PIL import Image
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.config import config_from_dict
from medgan.errors import ConfigError
from medgan.sampling import LoadedInpainter, load_generator
from medgan.training import train


@pytest.fixture
def dataset(make_dataset):
    return make_dataset(n=2, shape=(40, 40, 10))


def _weights(run, stem):
    return load_file(str(resolve_checkpoint(run) / f"{stem}.safetensors"))


def test_config_round_trips_and_refuses_what_does_not_apply():
    cfg = inpaint_config()
    assert config_from_dict(cfg.to_dict()) == cfg  # a saved inpaint config reloads
    base = cfg.to_dict()
    for section, key, value, match in [
        ("model", "latent_dim", 32, "model.latent_dim does not apply"),
        ("train", "diffaugment", [], "train.diffaugment does not apply"),
        ("train", "loss", "wgan-gp", "'bce' or 'hinge'"),
        ("train", "d_steps", 2, "train.d_steps 1 \\(not 2\\)"),
        ("model", "upsample", "resize", "model.upsample does not apply"),
        ("inpaint", "local_size", 64, "at most data.patch_size=32"),
        ("inpaint", "blob_radius_mm", [5, 2], "0 < low <= high"),
        ("inpaint", "mask_source", "gan", "mask_source"),
        ("inpaint", "erase_margn_mm", 3, "did you mean inpaint.erase_margin_mm"),
    ]:
        bad = {**base, section: {**base[section], key: value}}
        with pytest.raises(ConfigError, match=match):
            config_from_dict(bad)


def test_settings_convert_mm_to_voxels_at_the_patch_spacing():
    from medgan.training.inpaint_step import InpaintSettings

    cfg = inpaint_config(inpaint={"erase_margin_mm": 3.0, "blob_radius_mm": [2.0, 5.0]})
    fine = InpaintSettings.from_config(cfg, 1, (0.5, 0.5, 2.0))
    assert fine.erase_margin == 6 and fine.blob_radius == (4.0, 10.0)
    coarse = InpaintSettings.from_config(cfg, 1, (2.0, 3.0, 5.0))  # finest in-plane: 2 mm
    assert coarse.erase_margin == 2 and coarse.blob_radius == (1.0, 2.0)
    assert (fine.loss, fine.batch_size, fine.ngf) == ("hinge", 4, 8)


def test_dcgan_config_with_default_inpaint_section_still_loads():
    cfg = config_from_dict({"modality": "ct"})
    assert cfg.model.kind == "dcgan"
    assert config_from_dict(cfg.to_dict()) == cfg


def test_train_writes_checkpoint_grid_and_card(tmp_path, dataset):
    run = tmp_path / "run"
    result = train(inpaint_config(steps=2), data=dataset, out=run, seed=1, progress=False)
    folder = resolve_checkpoint(run)
    meta = read_sidecar(folder)
    assert meta["config"]["model"]["kind"] == "inpaint" and meta["step"] == 2
    assert {"generator.safetensors", "generator_ema.safetensors", "discriminator.safetensors",
            "lesion_masks.safetensors", "training_state.safetensors"} <= set(meta["files"])
    masks = load_file(str(folder / "lesion_masks.safetensors"))["masks"]
    assert masks.dtype == torch.uint8 and masks.shape[1:] == (32, 32)
    assert all(m.any() for m in masks)
    assert set(result.losses) >= {"loss_d", "loss_g_adv", "loss_l1"}
    width, height = Image.open(result.grid).size
    assert width > height  # 4 columns (context | inpainted | real | mask), 3 rows
    assert "lesion inpainter" in (run / "MODEL_CARD.md").read_text()
    assert any((run / "tensorboard").iterdir())
    loaded = load_generator(run)
    assert isinstance(loaded, LoadedInpainter)
    assert loaded.erase_margin == 3 and loaded.lesion_masks.shape == masks.shape
    assert loaded.use_ema and not loaded.generator.training


def test_resume_matches_uninterrupted_run(tmp_path, dataset):
    full, part = tmp_path / "full", tmp_path / "part"
    train(inpaint_config(steps=4), data=dataset, out=full, seed=3, progress=False)
    train(inpaint_config(steps=2), data=dataset, out=part, seed=3, progress=False)
    train(inpaint_config(steps=4), data=dataset, out=part, seed=3, resume=True, progress=False)
    for stem in ("generator", "generator_ema", "discriminator", "lesion_masks"):
        a, b = _weights(full, stem), _weights(part, stem)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{stem}.{key} differs after resume"
    ha, hb = (read_sidecar(resolve_checkpoint(r))["history"] for r in (full, part))
    assert ha["loss_l1"] == hb["loss_l1"]


def test_local_discriminator_is_trained_and_checkpointed(tmp_path, dataset):
    run = tmp_path / "run"
    cfg = inpaint_config(steps=1, inpaint={"local_discriminator": True, "local_size": 16})
    train(cfg, data=dataset, out=run, progress=False)
    assert any(k.startswith("local.") for k in _weights(run, "discriminator"))


def test_torchrun_is_refused_for_inpaint(tmp_path, dataset, monkeypatch):
    from medgan.distributed import DistInfo
    from medgan.training import inpaint_loop

    with pytest.raises(ConfigError, match="one process"):
        inpaint_loop.InpaintRun(inpaint_config(), None, None,  # type: ignore[arg-type]
                                DistInfo(device=torch.device("cpu"), world_size=2), 0)


@pytest.mark.slow
def test_3d_inpaint_trains_on_32_cubed_patches(tmp_path, make_dataset):
    data = make_dataset(n=2, shape=(40, 40, 36))
    run = tmp_path / "run3d"
    result = train(inpaint_config(steps=2, spatial_dims=3), data=data, out=run, progress=False)
    assert result.steps == 2
    loaded = load_generator(run)
    assert loaded.spatial_dims == 3 and loaded.lesion_masks.shape[1:] == (32, 32, 32)
    out = loaded.inpaint(torch.zeros(1, 32, 32, 32), torch.zeros(1, 32, 32, 32), seed=0)
    assert out.shape == (1, 32, 32, 32)
    from medgan.sampling.cases import write_cases

    cases = write_cases(loaded, data, 1, tmp_path / "cases")  # a 3D lesion in a 3D host
    assert cases.n == 1 and cases.insertions[0][0].mask.ndim == 3
