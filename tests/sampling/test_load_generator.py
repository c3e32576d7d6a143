"""Loading a generator from a checkpoint: paths, metadata, EMA choice, refusals, generate()."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from medgan.data.intensity import IntensityMapping
from medgan.errors import CheckpointError, ConfigError
from medgan.sampling import LoadedGenerator, load_generator, sample_seed


def _step_dir(run):
    return next((run / "checkpoints").glob("step-*"))


def test_paths_metadata_and_properties(ckpt_2d):
    folder = _step_dir(ckpt_2d)
    for path in (ckpt_2d, ckpt_2d / "checkpoints", folder, folder / "checkpoint.json"):
        g = load_generator(path)
        assert g.checkpoint_path == folder
    assert isinstance(g, LoadedGenerator)
    assert not g.generator.training
    assert g.modality == "ct" and g.spatial_dims == 2 and g.patch_size == 32
    assert g.image_channels == 1 and g.latent_dim == 8
    assert g.spacing_mm == (1.5, 1.5, 3.0)
    assert g.intensity == IntensityMapping("ct", (-200.0,), (300.0,))
    assert g.lesion_labels == [1]
    assert g.use_ema
    assert "training" not in g.metadata and "history" not in g.metadata
    assert g.metadata["config"]["modality"] == "ct"
    digest = hashlib.sha256((folder / "checkpoint.json").read_bytes()).hexdigest()
    assert g.checkpoint_sha256 == digest


def test_generate_shapes_range_and_seeds(ckpt_2d):
    g = load_generator(ckpt_2d)
    x = g.generate(5, seed=3, batch_size=2)
    assert x.shape == (5, 2, 32, 32) and x.dtype == torch.float32
    assert x.device.type == "cpu" and not x.requires_grad
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, g.generate(5, seed=3, batch_size=5), rtol=0, atol=0)
    assert not torch.equal(x, g.generate(5, seed=4))
    # one sample by its own seed, as recorded by medgan sample
    s = sample_seed(0, 7)
    torch.testing.assert_close(g.generate(1, seed=s)[0], g.decode(g.latents([s]))[0])
    gen = torch.Generator().manual_seed(3)
    torch.testing.assert_close(g.generate(5, generator=gen), x)
    with pytest.raises(ConfigError, match="not both"):
        g.generate(1, seed=1, generator=torch.Generator())
    assert g.generate(0).shape == (0, 2, 32, 32)


def test_3d_without_ema_falls_back_to_raw_weights(ckpt_3d):
    g = load_generator(ckpt_3d)
    assert not g.use_ema
    assert g.generate(2, seed=0).shape == (2, 2, 32, 32, 32)
    assert g.spatial_dims == 3 and g.modality == "pet"


@pytest.mark.parametrize(("use_ema", "stem"), [(True, "generator_ema"), (False, "generator")])
def test_ema_choice_loads_that_weights_file(ckpt_2d, use_ema, stem):
    from safetensors.torch import load_file

    g = load_generator(ckpt_2d, use_ema=use_ema)
    assert g.use_ema is use_ema
    expected = load_file(str(_step_dir(ckpt_2d) / f"{stem}.safetensors"))
    state = g.generator.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def _corrupt(tmp_path, ckpt, edit):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    folder = _step_dir(run)
    edit(folder)
    return run, folder


def test_refuses_other_format_version(tmp_path, ckpt_2d):
    def edit(folder):
        meta = json.loads((folder / "checkpoint.json").read_text())
        meta["format_version"] = 99
        (folder / "checkpoint.json").write_text(json.dumps(meta))

    run, folder = _corrupt(tmp_path, ckpt_2d, edit)
    with pytest.raises(CheckpointError, match=r"checkpoint format 99 .* cannot be read") as err:
        load_generator(run)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_refuses_tampered_weights_and_pickles(tmp_path, ckpt_2d):
    run, folder = _corrupt(tmp_path, ckpt_2d, lambda f: (
        f / "generator_ema.safetensors").write_bytes(b"tampered"))
    with pytest.raises(CheckpointError, match="generator_ema.safetensors: SHA-256"):
        load_generator(run)
    shutil.rmtree(run)
    run, folder = _corrupt(tmp_path, ckpt_2d, lambda f: (f / "model.pt").write_bytes(b"x"))
    with pytest.raises(CheckpointError, match="model.pt: refusing"):
        load_generator(run)


def test_refuses_sidecar_without_sampling_facts(tmp_path, ckpt_2d):
    def edit(folder):
        meta = json.loads((folder / "checkpoint.json").read_text())
        del meta["intensity"]
        (folder / "checkpoint.json").write_text(json.dumps(meta))

    run, folder = _corrupt(tmp_path, ckpt_2d, edit)
    with pytest.raises(CheckpointError, match="checkpoint.json: missing intensity"):
        load_generator(run)


def test_missing_path_and_bad_device(tmp_path, ckpt_2d):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            load_generator(ckpt_2d, device="cuda")


def test_sample_seed_is_stable_and_json_safe():
    seeds = {sample_seed(0, i, a) for i in range(50) for a in range(3)}
    assert len(seeds) == 150 and all(0 <= s < 2**53 for s in seeds)
    assert sample_seed(5, 1) == sample_seed(5, 1) != sample_seed(6, 1)
    assert sample_seed(3, 0) == 6087796937441198  # changing the derivation changes every output
