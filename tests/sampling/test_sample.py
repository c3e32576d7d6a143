"""``sample``: output layout, datalist, determinism, overwrite, interrupts, empty-mask redraws."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medgan.sampling.batch_writer as writer_module
from medgan.errors import CheckpointError, ConfigError, OutputError
from medgan.sampling import MaskPostprocess, load_generator, sample, sample_seed


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_datalist_loads_with_monai(tmp_path, ckpt_2d):
    from monai.data import load_decathlon_datalist

    out = tmp_path / "synth"
    result = sample(ckpt_2d, 6, out, seed=1, batch_size=4, progress=False)
    assert sorted(_files(out)) == sorted(
        ["contact_sheet.png", "dataset.json"]
        + [f"{d}/synth_{i:05d}.nii.gz" for d in ("imagesTr", "labelsTr") for i in range(6)])
    items = load_decathlon_datalist(str(out / "dataset.json"), data_list_key="training")
    assert len(items) == 6
    assert all(Path(it["image"]).is_file() and Path(it["label"]).is_file() for it in items)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["synthetic"] is True and meta["numTraining"] == 6
    assert meta["modality"] == {"0": "CT"} and meta["labels"]["1"] == "lesion"
    assert meta["medgan"]["checkpoint_sha256"] == result.checkpoint_sha256
    assert meta["medgan"]["seed"] == 1 and meta["medgan"]["n"] == 6
    for i, case in enumerate(meta["training"]):
        assert case["synthetic"] is True
        assert case["checkpoint_sha256"] == result.checkpoint_sha256
        assert case["seed"] == result.seeds[i]
        label = np.asarray(nib.load(out / case["label"]).dataobj)
        assert label.shape == (32, 32, 1) and label.dtype == np.uint8 and label.any()
    assert (out / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert result.samples_per_s > 0 and result.datalist == out / "dataset.json"


def test_each_file_reproducible_from_its_recorded_seed(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    sample(ckpt_2d, 3, out, seed=2, progress=False)
    g = load_generator(ckpt_2d)
    case = json.loads((out / "dataset.json").read_text())["training"][2]
    hu = np.asarray(nib.load(out / case["image"]).dataobj)[..., 0]
    again = g.intensity.inverse(g.generate(1, seed=case["seed"])[0, :1].numpy())[0]
    np.testing.assert_allclose(hu, again, atol=1e-3)


def test_same_seed_byte_identical_whatever_the_batch_size(tmp_path, ckpt_2d):
    a = sample(ckpt_2d, 5, tmp_path / "a", seed=9, batch_size=5, progress=False)
    sample(ckpt_2d, 5, tmp_path / "b", seed=9, batch_size=2, progress=False, workers=1)
    assert _files(a.out) == _files(tmp_path / "b")
    sample(ckpt_2d, 5, tmp_path / "c", seed=10, progress=False)
    assert _files(a.out)["imagesTr/synth_00000.nii.gz"] != \
        _files(tmp_path / "c")["imagesTr/synth_00000.nii.gz"]


def test_3d_pet(tmp_path, ckpt_3d):
    out = tmp_path / "pet"
    sample(ckpt_3d, 2, out, progress=False)
    img = nib.load(out / "imagesTr" / "synth_00001.nii.gz")
    assert img.shape == (32, 32, 32)
    assert float(np.min(img.dataobj)) >= 0.0 and float(np.max(img.dataobj)) <= 10.0  # SUV
    assert json.loads((out / "dataset.json").read_text())["modality"] == {"0": "PET"}


def test_two_channel_mr(tmp_path):
    from helpers_checkpoint import make_checkpoint

    run = make_checkpoint(tmp_path / "run", modality="mr", image_channels=2, ema=False)
    out = tmp_path / "mr"
    sample(run, 2, out, progress=False)
    assert nib.load(out / "imagesTr" / "synth_00000.nii.gz").shape == (32, 32, 1, 2)
    assert nib.load(out / "labelsTr" / "synth_00000.nii.gz").shape == (32, 32, 1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"0": "MR", "1": "MR"} and meta["tensorImageSize"] == "4D"


def test_refuses_non_empty_output_unless_overwrite(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    sample(ckpt_2d, 4, out, seed=0, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"output folder is not empty; pass `overwrite`") as err:
        sample(ckpt_2d, 2, out, seed=1, progress=False)
    assert str(out) in str(err.value)
    sample(ckpt_2d, 2, out, seed=1, progress=False, overwrite=True)
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert names == ["synth_00000.nii.gz", "synth_00001.nii.gz"]  # outdated 2, 3 removed
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    with pytest.raises(OutputError, match="not a folder"):
        sample(ckpt_2d, 1, out / "notes.txt", progress=False)


class _InterruptAfter(MaskPostprocess):
    """Post-processing that simulates Ctrl-C after ``calls`` masks."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        object.__setattr__(self, "left", calls)

    def __call__(self, mask):
        object.__setattr__(self, "left", self.left - 1)
        if self.left < 0:
            raise KeyboardInterrupt
        return super().__call__(mask)


def test_interrupt_leaves_no_partial_files_and_no_datalist(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    with pytest.raises(KeyboardInterrupt):
        sample(ckpt_2d, 8, out, batch_size=2, progress=False, postprocess=_InterruptAfter(5))
    assert not (out / "dataset.json").exists()
    assert _files(out) == {}  # neither finished nor half-written files, no .partial folder
    assert not any(out.iterdir())
    sample(ckpt_2d, 2, out, progress=False)  # and the folder counts as empty again


def test_interrupt_in_writer_thread_keeps_previous_output(tmp_path, ckpt_2d, monkeypatch):
    out = tmp_path / "synth"
    sample(ckpt_2d, 3, out, seed=0, progress=False)
    before = _files(out)
    calls = {"n": 0}
    real_write = writer_module.write_pair

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_pair", flaky)
    with pytest.raises(KeyboardInterrupt):
        sample(ckpt_2d, 6, out, seed=5, batch_size=2, progress=False, overwrite=True)
    assert _files(out) == before  # the old dataset is untouched until the new one is complete
    assert not list(out.glob(".partial-*"))


def test_dead_partial_folder_is_cleaned_up(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    stale = out / ".partial-999999999" / "imagesTr"
    stale.mkdir(parents=True)
    sample(ckpt_2d, 1, out, progress=False)
    assert not stale.parent.exists()
    live = out / f".partial-{os.getppid()}"
    live.mkdir()
    with pytest.raises(OutputError, match="another medgan sample"):
        sample(ckpt_2d, 1, out, progress=False, overwrite=True)


class _EmptiesHalf(MaskPostprocess):
    """Post-processing that empties about half of the masks, as a function of their content."""

    def __call__(self, mask):
        if hashlib.sha256(mask.numpy().tobytes()).digest()[0] % 2:
            return np.zeros(tuple(mask.shape), np.uint8)
        return super().__call__(mask)


def test_empty_masks_are_redrawn_deterministically(tmp_path, ckpt_2d):
    a = sample(ckpt_2d, 6, tmp_path / "a", seed=0, batch_size=4, progress=False,
               postprocess=_EmptiesHalf())
    assert a.n_redrawn_empty > 0
    redrawn = [i for i, s in enumerate(a.seeds) if s != sample_seed(0, i)]
    assert redrawn
    for i in redrawn:
        assert a.seeds[i] in {sample_seed(0, i, k) for k in range(1, 20)}
    for i in range(6):
        assert np.asarray(nib.load(a.out / "labelsTr" / f"synth_{i:05d}.nii.gz").dataobj).any()
    sample(ckpt_2d, 6, tmp_path / "b", seed=0, batch_size=1, progress=False,
           postprocess=_EmptiesHalf())
    assert _files(a.out) == _files(tmp_path / "b")


def test_gives_up_when_masks_stay_empty(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    with pytest.raises(CheckpointError, match=r"sample 0 had an empty mask .* 20 draws"):
        sample(ckpt_2d, 2, out, progress=False, postprocess=MaskPostprocess(min_size=10**6))
    assert _files(out) == {}


def test_option_errors(tmp_path, ckpt_2d):
    with pytest.raises(ConfigError, match="n must be a positive"):
        sample(ckpt_2d, 0, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="needs real_datalist"):
        sample(ckpt_2d, 1, tmp_path / "x", max_similarity=0.9, progress=False)
    with pytest.raises(ConfigError, match=r"max_similarity must be a number in \(-1, 1\]"):
        sample(ckpt_2d, 1, tmp_path / "x", max_similarity=1.5, real_datalist="x",
               progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_sample(tmp_path, ckpt_2d):
    from click.testing import CliRunner

    from medgan.cli import main

    out = tmp_path / "cli"
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "--n", "2", "--out",
                               str(out), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 pairs" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "-n", "2", "--out",
                               str(out)])
    assert res.exit_code == 2
    assert "output folder is not empty; pass --overwrite" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "--out", str(out),
                               "--overwrite", "--max-similarity", "0.9"])
    assert res.exit_code == 2 and "--real-data" in res.output
