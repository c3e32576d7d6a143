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
    PatchStream,
    context_roi,
    prepare_training_case,
    segment_volume,
)

ARMS = "real,real+aug,real+aug+synthetic,real+aug+insert,real+aug+carvemix"


def invoke(*args: str | Path):
    return CliRunner().invoke(main, ["evaluate", "segmentation", *map(str, args)])


@pytest.fixture(scope="module")
def benchmark(phantom_data, tiny_checkpoint, tmp_path_factory) -> Path:
    """A finished --fast benchmark: all arms, one seed, regimes 2 and all (5 runs each)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    result = invoke("--data", phantom_data, "--checkpoint", tiny_checkpoint, "--out", out,
                    "--fast", "--seeds", "1", "--train-cases", "2,all", "--iterations", "10",
                    "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_report_files(benchmark: Path) -> None:
    for name in ("report.md", "report.json", "dice.png", "examples.png", "protocol.json"):
        assert (benchmark / name).is_file(), name
    report = json.loads((benchmark / "report.json").read_text())
    split = report["protocol"]["split"]
    assert len(split["test"]) == 2 and list(split["regimes"]) == ["2", "all"]
    assert not set(split["test"]) & set(split["train_pool"])
    assert set(report["summary"]["all"]) == set(ARMS.split(","))
    assert len(report["runs"]) == 10
    for run in report["runs"]:
        assert (benchmark / "runs" / run["regime"] / run["arm"] / "seed0.json").is_file()
        assert {c["case_id"] for c in run["cases"]} == set(split["test"])
        assert not set(run["train_cases"]) & set(split["test"])
    carve = report["summary"]["all"]["real+aug+carvemix"]
    assert {"low", "high", "mean"} <= set(carve["dice_diff_vs_reference"])
    text = (benchmark / "report.md").read_text()
    assert "medgan evaluate segmentation" in text and "How to read" in text


def test_resume_skips_finished_runs(benchmark: Path, phantom_data, tiny_checkpoint) -> None:
    removed = benchmark / "runs" / "all" / "real" / "seed0.json"
    removed.unlink()
    kept = benchmark / "runs" / "all" / "real+aug" / "seed0.json"
    before = kept.stat().st_mtime_ns
    result = invoke("--data", phantom_data, "--checkpoint", tiny_checkpoint, "--out", benchmark,
                    "--fast", "--seeds", "1", "--train-cases", "2,all", "--iterations", "10",
                    "--device", "cpu", "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert "10 runs (9 resumed)" in result.output
    assert removed.is_file() and kept.stat().st_mtime_ns == before


def test_resume_refuses_other_protocol(benchmark: Path, phantom_data, tiny_checkpoint) -> None:
    result = invoke("--data", phantom_data, "--checkpoint", tiny_checkpoint, "--out", benchmark,
                    "--fast", "--seeds", "1", "--train-cases", "2,all", "--iterations", "10",
                    "--ratio", "0.2", "--resume", "--no-progress")
    assert result.exit_code == 2
    assert "different 'settings'" in result.output


def test_non_empty_out_refused(benchmark: Path, phantom_data, tiny_checkpoint) -> None:
    result = invoke("--data", phantom_data, "--checkpoint", tiny_checkpoint, "--out", benchmark,
                    "--fast")
    assert result.exit_code == 2
    assert "not empty" in result.output and "--resume" in result.output


def test_missing_checkpoint(phantom_data, tmp_path) -> None:
    result = invoke("--data", phantom_data, "--checkpoint", tmp_path / "nope", "--out",
                    tmp_path / "out", "--fast")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_gan_arm_needs_checkpoint_and_arms_are_checked(phantom_data, tmp_path) -> None:
    result = invoke("--data", phantom_data, "--out", tmp_path / "o", "--arms", "real+aug+insert")
    assert result.exit_code == 2 and "--checkpoint" in result.output
    result = invoke("--data", phantom_data, "--out", tmp_path / "o", "--arms", "real,magic")
    assert result.exit_code == 2 and "--arms" in result.output


def test_real_patches_match_across_arms(phantom_data, tiny_checkpoint) -> None:
    from medgan.config import config_from_dict
    from medgan.evaluation.segmentation import load_cases
    from medgan.sampling import load_generator

    cfg = config_from_dict(load_generator(tiny_checkpoint).metadata["config"])
    items = [prepare_training_case(c, context_roi(2, 32))
             for c in load_cases(phantom_data, cfg, progress=False)[:2]]
    s = BenchmarkSettings.fast(batch_size=8, ratio=0.5)
    plain = PatchStream(items, 2, 32, s, seed=1, augment=False)
    other = PatchStream(items, 2, 32, s, seed=1, augment=False,
                        synthetic=(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)))
    a, b = plain.next(), other.next()
    real = b[0].flatten(1).abs().sum(1) > 0  # rows not replaced by the zero synthetic patch
    assert real.any() and (~real).any() and torch.equal(a[0][real], b[0][real])
    assert a[1].mean() > 0  # foreground oversampling finds the lesion


def test_segment_volume_2d_covers_every_slice() -> None:
    class Bright(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] - 0.5

    image = torch.full((1, 40, 36, 5), -1.0)
    image[0, 10:20, 5:15, :] = 1.0
    pred = segment_volume(Bright(), image, 2, 32, BenchmarkSettings.fast(), torch.device("cpu"))
    assert pred.shape == (40, 36, 5)
    assert np.array_equal(pred, (image[0] > 0.5).numpy())


class DiskGenerator(torch.nn.Module):
    """Stub generator: a bright disk (radius 5) with its mask in the centre of a 32 x 32 patch."""

    latent_dim = 4

    def sample_latent(self, n: int, generator=None, device=None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        disk = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 25).float()
        image = (0.2 + 0.6 * disk).expand(len(z), 1, 32, 32)
        return torch.cat([image, disk.expand(len(z), 1, 32, 32) * 2 - 1], dim=1)


def test_insert_and_carvemix_add_lesions_inside_the_patch(phantom_data, tiny_checkpoint) -> None:
    from medgan.augment import RandSyntheticLesiond
    from medgan.config import config_from_dict
    from medgan.evaluation.baselines import RandCarveMixd, build_lesion_snippets
    from medgan.evaluation.segmentation import load_cases
    from medgan.sampling import LoadedGenerator, load_generator

    real = load_generator(tiny_checkpoint)
    stub = LoadedGenerator(DiskGenerator(), {**real.metadata, "latent_dim": 4},
                           real.checkpoint_path, "stub", torch.device("cpu"))

    cases = load_cases(phantom_data, config_from_dict(real.metadata["config"]), progress=False)
    items = [prepare_training_case(c, context_roi(2, 32)) for c in cases[:3]]
    s = BenchmarkSettings.fast(batch_size=8, ratio=1.0)
    for transform in (
        RandSyntheticLesiond(("image", "label"), generator=stub, prob=1.0,
                             foreground_key="foreground"),
        RandCarveMixd(("image", "label"), build_lesion_snippets(items, 2), prob=1.0,
                      foreground_key="foreground"),
    ):
        stream = PatchStream(items, 2, 32, s, seed=0, augment=False, arm_transform=transform)
        images, labels = stream.next()
        assert images.shape == (8, 1, 32, 32) and labels.shape == (8, 1, 32, 32)
        assert stream.n_added / stream.n_items > 0.5, type(transform).__name__


def test_3d_benchmark(phantom_data, tmp_path) -> None:
    from helpers_checkpoint import make_checkpoint

    from medgan.evaluation import evaluate_segmentation

    ckpt = make_checkpoint(tmp_path / "gan3d", spatial_dims=3, patch_size=32, ngf=4,
                           spacing_mm=(1.0, 1.0, 1.0))
    result = evaluate_segmentation(phantom_data, tmp_path / "out", checkpoint=ckpt, fast=True,
                                   seeds=1, train_cases="all", iterations=2, device="cpu",
                                   arms=["real+aug", "real+aug+carvemix"], progress=False)
    stats = result.summary["all"]["real+aug+carvemix"]
    assert stats["n_units"] == 2 and stats["added_lesion_fraction"] > 0
    assert (tmp_path / "out" / "examples.png").is_file()


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
    torch.set_num_threads(4)
    result = invoke("--data", phantom_data, "--checkpoint", tiny_checkpoint, "--out",
                    tmp_path / "out", "--fast", "--seeds", "1", "--arms", "real",
                    "--device", "cpu", "--no-progress", *extra)
    torch.set_num_threads(1)
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert seen == [expected]
