"""The benchmark's ``real+aug+inpaint`` arm (per-regime inpainters) and the arm transforms'
units: every arm works on context crops in model space [-1, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medgan.cli import main
from medgan.evaluation.arm_transforms import ArmFactory
from medgan.evaluation.segmentation_run import BenchmarkSettings

INPAINT_YAML = """\
modality: ct
spatial_dims: 2
data: {patch_size: 32, spacing_mm: [1.0, 1.0, 1.0], patches_per_case: 6, min_lesion_voxels: 5,
       lesion_free_fraction: 0.2}
model: {kind: inpaint, ngf: 4, ndf: 4}
inpaint: {erase_margin_mm: 2, blob_radius_mm: [2, 4], local_discriminator: false}
train: {steps: 3, batch_size: 4, log_every: 1, sample_every: 2, checkpoint_every: 2,
        ema_decay: 0.9}
"""


def invoke(*args: str | Path):
    return CliRunner().invoke(main, ["evaluate", "segmentation", *map(str, args)])


@pytest.fixture(scope="module")
def inpaint_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inpcfg") / "inpaint.yaml"
    path.write_text(INPAINT_YAML, encoding="utf-8")
    return path


def args(data: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["--data", data, "--out", out, "--fast", "--seeds", "1", "--train-cases", "3,all",
            "--ratio", "0.2", "--iterations", "10", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def added_arm(phantom_data, inpaint_config, tmp_path_factory) -> Path:
    """A benchmark run first without an inpainter (real+aug only), then resumed with
    --train-inpainter and the inpaint arm added."""
    out = tmp_path_factory.mktemp("inpbench") / "out"
    first = invoke(*args(phantom_data, out, "--config", inpaint_config, "--arms", "real+aug"))
    assert first.exit_code == 0, first.output
    second = invoke(*args(phantom_data, out, "--config", inpaint_config, "--train-inpainter",
                          inpaint_config, "--inpainter-steps", "2", "--resume"))
    assert second.exit_code == 0, second.output
    assert "6 runs (2 resumed)" in second.output  # real+aug, carvemix, inpaint x 2 regimes
    return out


def test_inpainters_trained_on_exactly_the_regime_patients(added_arm: Path) -> None:
    from medgan.checkpoint import read_sidecar, resolve_checkpoint

    protocol = json.loads((added_arm / "protocol.json").read_text())
    assert set(protocol["inpainters"]) == {"3", "all"}
    assert protocol["inpainter_config"]["model"]["kind"] == "inpaint"
    assert protocol["arms"] == ["real+aug", "real+aug+carvemix", "real+aug+inpaint"]
    for regime, entry in protocol["inpainters"].items():
        meta = read_sidecar(resolve_checkpoint(entry["checkpoint"]))
        assert meta["step"] == 2
        recorded = sorted(c["id"] for c in meta["training_cases"])
        assert recorded == sorted(protocol["split"]["regimes"][regime])


def test_inpaint_arm_reaches_its_ratio_and_is_reported(added_arm: Path) -> None:
    report = json.loads((added_arm / "report.json").read_text())
    for regime in ("3", "all"):
        arm = report["summary"][regime]["real+aug+inpaint@0.2"]
        assert abs(arm["added_lesion_fraction"] - 0.2) < 0.01
        assert arm["n_patients"] == 2
        assert "dice_diff_vs_reference" in arm
    text = (added_arm / "report.md").read_text()
    assert "* inpainter: trained per regime" in text and "real+aug+inpaint@0.2" in text


def test_resume_with_another_mask_source_is_refused(added_arm: Path, phantom_data,
                                                    inpaint_config) -> None:
    result = invoke(*args(phantom_data, added_arm, "--config", inpaint_config,
                          "--train-inpainter", inpaint_config, "--inpainter-steps", "2",
                          "--inpaint-mask-source", "ellipsoid", "--resume"))
    assert result.exit_code == 2 and "inpaint_mask_source" in result.output


def test_a_generator_can_be_added_on_resume(added_arm: Path, phantom_data, inpaint_config,
                                            tmp_path) -> None:
    gen_yaml = tmp_path / "gen.yaml"
    gen_yaml.write_text(INPAINT_YAML.replace("kind: inpaint, ", ""), encoding="utf-8")
    result = invoke(*args(phantom_data, added_arm, "--config", inpaint_config,
                          "--train-generator", gen_yaml, "--generator-steps", "2",
                          "--arms", "real+aug,real+aug+insert", "--resume"))
    assert result.exit_code == 0, result.output
    assert "4 runs (2 resumed)" in result.output
    protocol = json.loads((added_arm / "protocol.json").read_text())
    assert set(protocol["generators"]) == {"3", "all"} and protocol["inpaint_mask_source"] == "real"


def test_inpaint_arm_needs_an_inpainter_of_the_inpaint_kind(phantom_data, inpaint_config,
                                                            tmp_path) -> None:
    result = invoke(*args(phantom_data, tmp_path / "a", "--config", inpaint_config, "--arms",
                          "real+aug,real+aug+inpaint"))
    assert result.exit_code == 2 and "--train-inpainter" in result.output
    gen_yaml = tmp_path / "gen.yaml"
    gen_yaml.write_text(INPAINT_YAML.replace("kind: inpaint, ", ""), encoding="utf-8")
    result = invoke(*args(phantom_data, tmp_path / "b", "--train-inpainter", gen_yaml))
    assert result.exit_code == 2
    assert "--train-inpainter" in result.output and "'dcgan'" in result.output
    assert "Traceback" not in result.output


def _context(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 64 x 64 context crop in model space: body at -0.5 with noise, foreground = the
    central 32 x 32 patch."""
    rng = np.random.default_rng(seed)
    image = torch.full((1, 64, 64), -0.5) + torch.from_numpy(
        rng.normal(0, 0.05, (1, 64, 64)).astype(np.float32))
    foreground = torch.zeros((1, 64, 64), dtype=torch.bool)
    foreground[:, 16:48, 16:48] = True
    return {"image": image, "label": torch.zeros((1, 64, 64)), "foreground": foreground}


def test_insert_arm_stays_in_model_space(tiny_checkpoint) -> None:
    """The GAN insertion arm gets model-space crops: the pasted lesion must stay in [-1, 1]
    (a generator mapping to HU would paste values in the hundreds)."""
    from medgan.sampling import load_generator

    generator = load_generator(tiny_checkpoint, device="cpu")
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 16

    def decode(z: torch.Tensor, chunk: int = 1) -> torch.Tensor:  # a bright disc and its mask
        pair = torch.full((len(z), 2, 32, 32), -1.0)
        pair[:, 0][:, disc], pair[:, 1][:, disc] = 0.9, 1.0
        return pair

    generator.decode = decode  # an untrained network's masks are empty
    factory = ArmFactory(generator, [], 2)
    transform, pool = factory("real+aug+insert", 0, BenchmarkSettings.fast(ratio=0.2))
    assert pool is None
    transform.set_random_state(seed=0)
    changed = 0
    for seed in range(6):
        ctx = _context(seed)
        out = transform(dict(ctx))
        image = torch.as_tensor(out["image"])
        assert float(image.min()) >= -1.0 - 1e-6 and float(image.max()) <= 1.0 + 1e-6
        new = torch.as_tensor(out["label"]) > 0
        assert not (new & ~ctx["foreground"]).any()  # the whole lesion inside the patch body
        changed += int(not torch.equal(image, ctx["image"]))
    assert changed > 0


def test_3d_inpaint_arm_end_to_end(tmp_path) -> None:
    """A 3D inpainter trained per regime inside the benchmark; its arm adds lesions to 3D
    patches at the asked share."""
    import nibabel as nib
    from helpers_data import phantom_arrays

    from medgan.config import config_from_dict
    from medgan.evaluation import evaluate_segmentation

    entries = []
    for i in range(6):  # deep enough for 32^3 patches (half a patch at least)
        image, label, _ = phantom_arrays((48, 48, 20), lesion_radius_mm=5.0, seed=i,
                                         lesion_center=(18 + 3 * i, 22, 10))
        for name, arr in (("image", image), ("label", label)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{name}{i}.nii.gz"))
        entries.append({"image": f"image{i}.nii.gz", "label": f"label{i}.nii.gz"})
    data = tmp_path / "dataset.json"
    data.write_text(json.dumps({"training": entries}), encoding="utf-8")

    inpaint = config_from_dict({
        "modality": "ct", "spatial_dims": 3,
        "data": {"patch_size": 32, "spacing_mm": [1.0, 1.0, 1.0], "patches_per_case": 4,
                 "min_lesion_voxels": 5},
        "model": {"kind": "inpaint", "ngf": 4, "ndf": 4},
        "inpaint": {"erase_margin_mm": 2, "blob_radius_mm": [2, 4]},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "sample_every": 2,
                  "checkpoint_every": 2}})
    result = evaluate_segmentation(data, tmp_path / "out", train_inpainter=inpaint,
                                   fast=True, seeds=1, train_cases="all", iterations=4,
                                   device="cpu", ratio=0.25,
                                   arms=["real+aug", "real+aug+inpaint"], progress=False)
    stats = result.summary["all"]["real+aug+inpaint@0.25"]
    assert stats["n_units"] == 2 and abs(stats["added_lesion_fraction"] - 0.25) < 0.01
    protocol = json.loads((tmp_path / "out" / "protocol.json").read_text())
    assert protocol["config"]["spatial_dims"] == 3 and set(protocol["inpainters"]) == {"all"}


def test_placement_range_is_checked(phantom_data, inpaint_config, tmp_path) -> None:
    result = invoke(*args(phantom_data, tmp_path / "o", "--config", inpaint_config, "--arms",
                          "real+aug,real+aug+carvemix", "--placement-range", "0.5", "-0.5"))
    assert result.exit_code == 2 and "--placement-range" in result.output
    assert not (tmp_path / "o").exists()


def test_benchmark_recorded_before_placement_range_resumes(added_arm: Path, phantom_data,
                                                           inpaint_config) -> None:
    """A protocol written before a settings field existed resumes (the field at its default)."""
    path = added_arm / "protocol.json"
    protocol = json.loads(path.read_text())
    del protocol["settings"]["placement_range"]
    path.write_text(json.dumps(protocol))
    result = invoke(*args(phantom_data, added_arm, "--config", inpaint_config, "--arms",
                          "real+aug", "--resume"))
    assert result.exit_code == 0, result.output
    assert "2 runs (2 resumed)" in result.output
