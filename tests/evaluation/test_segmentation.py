"""``medgan evaluate segmentation --fast`` end to end on phantoms, resume, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medgan.cli import main
from medgan.evaluation.segmentation_run import (
    BenchmarkSettings,
    segment_volume,
)

ARMS = "real,real+aug,real+aug+synthetic,real+aug+insert,real+aug+carvemix"
RUNS = ["real", "real+aug", "real+aug+synthetic@0.2", "real+aug+insert@0.2",
        "real+aug+carvemix@0.2"]
GEN_YAML = """\
modality: ct
spatial_dims: 2
data: {patch_size: 32, spacing_mm: [1.0, 1.0, 1.0], patches_per_case: 6, min_lesion_voxels: 5,
       lesion_free_fraction: 0.2}
model: {latent_dim: 8, ngf: 4, ndf: 4}
train: {steps: 3, batch_size: 4, log_every: 1, sample_every: 2, checkpoint_every: 2,
        ema_decay: 0.9}
"""


def invoke(*args: str | Path):
    return CliRunner().invoke(main, ["evaluate", "segmentation", *map(str, args)])


@pytest.fixture(scope="module")
def gen_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gencfg") / "gen.yaml"
    path.write_text(GEN_YAML, encoding="utf-8")
    return path


def bench_args(data: Path, config: Path, out: Path, *extra: str) -> list[str | Path]:
    return ["--data", data, "--train-generator", config, "--generator-steps", "2", "--out", out,
            "--fast", "--seeds", "1", "--train-cases", "3,all", "--arms", ARMS, "--ratio", "0.2",
            "--iterations", "10", "--min-component-voxels", "3", "--device", "cpu",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def benchmark(phantom_data, gen_config, tmp_path_factory) -> Path:
    """A finished --fast benchmark with per-regime generators: all arms at ratio 0.2, one seed,
    regimes 3 (2 training + 1 validation patients) and all (3 + 1): 5 runs each."""
    out = tmp_path_factory.mktemp("bench") / "out"
    result = invoke(*bench_args(phantom_data, gen_config, out))
    assert result.exit_code == 0, result.output
    return out


def test_report_files(benchmark: Path) -> None:
    for name in ("report.md", "report.json", "dice.png", "examples.png", "protocol.json"):
        assert (benchmark / name).is_file(), name
    report = json.loads((benchmark / "report.json").read_text())
    split = report["protocol"]["split"]
    assert len(split["test"]) == 2 and list(split["regimes"]) == ["3", "all"]
    assert [len(split["regimes"][r]) for r in ("3", "all")] == [2, 3]
    assert [len(split["validation"][r]) for r in ("3", "all")] == [1, 1]
    assert set(report["summary"]["all"]) == set(RUNS)
    assert len(report["runs"]) == 10
    for run in report["runs"]:
        assert (benchmark / "runs" / run["regime"] / run["run"] / "seed0.json").is_file()
        assert {c["case_id"] for c in run["cases"]} == set(split["test"])
        assert run["train_cases"] == split["regimes"][run["regime"]]
        assert run["validation_cases"] == split["validation"][run["regime"]]
        assert not set(run["train_cases"]) & (set(split["test"]) | set(run["validation_cases"]))
        assert run["validation_curve"] and run["best_iteration"] == 10
        assert len(run["cases_postprocessed"]) == 2
    carve = report["summary"]["all"]["real+aug+carvemix@0.2"]
    assert carve["n_patients"] == 2 and carve["n_seeds"] == 1 and carve["picked"]
    assert abs(carve["added_lesion_fraction"] - 0.2) < 0.01
    assert {"low", "high", "mean", "wilcoxon_p"} <= set(carve["dice_diff_vs_reference"])
    assert "postprocessed" in carve
    text = (benchmark / "report.md").read_text()
    assert "medgan evaluate segmentation" in text and "How to read" in text
    assert "Wilcoxon" in text and "Post-processed" in text and "(picked)" in text


def test_generators_trained_on_exactly_the_regime_patients(benchmark: Path, phantom_data) -> None:
    from medgan.checkpoint import read_sidecar, resolve_checkpoint
    from medgan.data import load_datalist
    from medgan.data.provenance import file_sha256

    protocol = json.loads((benchmark / "protocol.json").read_text())
    paths = {c["case_id"]: c for c in load_datalist(phantom_data)}
    assert set(protocol["generators"]) == {"3", "all"}
    for regime, gen in protocol["generators"].items():
        meta = read_sidecar(resolve_checkpoint(gen["checkpoint"]))
        recorded = [c["id"] for c in meta["training_cases"]]
        assert sorted(recorded) == sorted(protocol["split"]["regimes"][regime])
        assert sorted(gen["case_ids"]) == sorted(recorded)
        assert Path(gen["checkpoint"]).is_relative_to(benchmark / "generators")
        for case in meta["training_cases"]:
            image, label = paths[case["id"]]["image"], paths[case["id"]]["label"]
            assert case["files"] == {f"imagesTr/{Path(image).name}": file_sha256(image),
                                     f"labelsTr/{Path(label).name}": file_sha256(label)}


def test_resume_skips_finished_generators_and_runs(benchmark: Path, phantom_data,
                                                   gen_config) -> None:
    removed = benchmark / "runs" / "all" / "real" / "seed0.json"
    removed.unlink()
    kept = benchmark / "runs" / "all" / "real+aug" / "seed0.json"
    before = kept.stat().st_mtime_ns
    gens = sorted((benchmark / "generators").glob("*/run/checkpoints/*/checkpoint.json"))
    stamps = [g.stat().st_mtime_ns for g in gens]
    result = invoke(*bench_args(phantom_data, gen_config, benchmark, "--resume"))
    assert result.exit_code == 0, result.output
    assert "10 runs (9 resumed)" in result.output
    assert removed.is_file() and kept.stat().st_mtime_ns == before
    assert sorted((benchmark / "generators").glob("*/run/checkpoints/*/checkpoint.json")) == gens
    assert [g.stat().st_mtime_ns for g in gens] == stamps


def test_resume_refuses_other_protocol(benchmark: Path, phantom_data, gen_config) -> None:
    result = invoke(*bench_args(phantom_data, gen_config, benchmark, "--resume",
                                "--validation-fraction", "0.5"))
    assert result.exit_code == 2
    assert "different 'settings'" in result.output


def test_non_empty_out_refused(benchmark: Path, phantom_data, gen_config) -> None:
    result = invoke(*bench_args(phantom_data, gen_config, benchmark))
    assert result.exit_code == 2
    assert "not empty" in result.output and "--resume" in result.output


def test_missing_checkpoint(phantom_data, tmp_path) -> None:
    result = invoke("--data", phantom_data, "--checkpoint", tmp_path / "nope", "--out",
                    tmp_path / "out", "--fast")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_gan_arm_needs_checkpoint_and_arms_are_checked(phantom_data, tmp_path) -> None:
    result = invoke("--data", phantom_data, "--out", tmp_path / "o", "--arms", "real+aug+insert")
    assert result.exit_code == 2 and "--train-generator" in result.output

    result = invoke("--data", phantom_data, "--out", tmp_path / "o", "--arms", "real,magic")
    assert result.exit_code == 2 and "--arms" in result.output


def test_segment_volume_2d_covers_every_slice() -> None:
    class Bright(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] - 0.5

    image = torch.full((1, 40, 36, 5), -1.0)
    image[0, 10:20, 5:15, :] = 1.0
    pred = segment_volume(Bright(), image, 2, 32, BenchmarkSettings.fast(), torch.device("cpu"))
    assert pred.shape == (40, 36, 5)
    assert np.array_equal(pred, (image[0] > 0.5).numpy())


def test_3d_benchmark(phantom_data, tmp_path) -> None:
    from medgan.config import config_from_dict
    from medgan.evaluation import evaluate_segmentation

    cfg = config_from_dict({"modality": "ct", "spatial_dims": 3,
                            "data": {"patch_size": 32, "spacing_mm": [1.0, 1.0, 1.0]}})
    result = evaluate_segmentation(phantom_data, tmp_path / "out", config=cfg, fast=True,
                                   seeds=1, train_cases="all", iterations=2, device="cpu",
                                   ratio=0.25, arms=["real+aug", "real+aug+carvemix"],
                                   progress=False)
    stats = result.summary["all"]["real+aug+carvemix@0.25"]
    assert stats["n_units"] == 2 and stats["added_lesion_fraction"] > 0
    assert (tmp_path / "out" / "examples.png").is_file()


def test_ratio_above_the_lesion_slots_is_refused(phantom_data, tmp_path) -> None:
    from medgan.config import config_from_dict
    from medgan.errors import ConfigError
    from medgan.evaluation import evaluate_segmentation

    cfg = config_from_dict({"modality": "ct", "spatial_dims": 2, "data": {"patch_size": 32}})
    with pytest.raises(ConfigError, match="ratio"):  # fast: 2 slots of 6 patches -> at most 1/3
        evaluate_segmentation(phantom_data, tmp_path / "out", config=cfg, fast=True, ratio=0.5,
                              arms=["real+aug", "real+aug+carvemix"], progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "env", "expected"), [
    ([], {}, 1), (["--threads", "2"], {}, 2), ([], {"MEDGAN_THREADS": "3"}, 3),
])
def test_threads_reach_torch_inside_the_runs(phantom_data, tiny_checkpoint, tmp_path,
                                             monkeypatch, extra, env, expected) -> None:
    """--threads (default 1, whatever the machine) is the count the runs train with."""
    from medgan.errors import OutputError
    from medgan.evaluation import segmentation

    seen: list[int] = []

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise OutputError("stopped by the test")

    monkeypatch.setattr(segmentation, "run_one", record)
    for var in ("MEDGAN_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from medgan.config import save_config
    from medgan.sampling import load_generator

    config = tmp_path / "config.yaml"  # the 'real' arm needs no generator, only a config
    save_config(load_generator(tiny_checkpoint).config, config)
    torch.set_num_threads(4)
    result = invoke("--data", phantom_data, "--config", config, "--out",
                    tmp_path / "out", "--fast", "--seeds", "1", "--arms", "real",
                    "--device", "cpu", "--no-progress", *extra)
    torch.set_num_threads(1)
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert seen == [expected]
