"""Sample-quality metrics: known answers, the end-to-end report and the optional FRD."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from medgan.evaluation.quality import (
    FRD_MISSING,
    cross_msssim,
    evaluate_quality,
    frechet_radiomics_distance,
    ks,
    lesion_stats,
    mmd,
)


def blobs(n: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    """``(n, 1, 32, 32)`` smooth random patches in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 40, 40, generator=g) * 2 - 1, 9, 1)
    return (x * 3 + offset).clamp(-1, 1)


def test_identical_sets() -> None:
    x = blobs(40, 0)
    assert abs(mmd(x, x)) < 0.01 * mmd(x, blobs(40, 1, offset=0.8))
    assert ks([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])["statistic"] == 0.0
    assert cross_msssim(x[:1], x[:1], n_pairs=4) == pytest.approx(1.0, abs=1e-5)


def test_very_different_sets() -> None:
    x, y = blobs(40, 0), blobs(40, 1, offset=0.8)
    assert mmd(x, y) > 0.3
    assert mmd(x, y) > 100 * abs(mmd(x, blobs(40, 2)))
    assert ks(np.arange(20.0), np.arange(20.0) + 100)["statistic"] == 1.0
    assert cross_msssim(x, y) < 0.5


def test_lesion_stats_sizes_and_intensities() -> None:
    images = np.zeros((2, 1, 8, 8), np.float32)
    images[0, 0, :2, :2] = 50.0
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :2, :2] = 1
    voxels, means = lesion_stats(images, masks)
    assert voxels.tolist() == [4, 0]
    assert means[0, 0] == 50.0 and math.isnan(means[1, 0])


def test_end_to_end_report(phantom_data, tiny_checkpoint, tmp_path) -> None:
    from medgan.sampling import sample

    sample(tiny_checkpoint, 12, tmp_path / "syn", seed=0, progress=False, device="cpu")
    out = tmp_path / "quality" / "report.json"
    report = evaluate_quality(phantom_data, tmp_path / "syn", out=out, frd=False,
                              progress=False)
    assert report["n_synthetic"] == 12 and report["n_real"] > 0
    assert report["checkpoint_sha256"]  # found through the synthetic dataset.json
    assert 0.0 <= report["diversity"]["real"] <= 1.0
    assert report["usable_masks"]["files"] == 1.0
    assert report["lesion_size"]["unit"] == "mm2"
    assert report["lesion_intensity"]["units"] == "HU"
    saved = json.loads(out.read_text())  # strict JSON: no NaN
    assert saved["frd"]["value"] is None
    assert "MMD" in out.with_suffix(".md").read_text()


def test_frd_missing_package_is_reported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "frd_score", None)
    pair = (np.zeros((3, 1, 16, 16), np.float32), np.ones((3, 16, 16), np.uint8))
    assert frechet_radiomics_distance(pair, pair, (1, 1, 1)) == {"value": None,
                                                                 "note": FRD_MISSING}


def test_frd_when_installed() -> None:
    pytest.importorskip("frd_score")
    pytest.importorskip("radiomics")
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 24, 24), np.uint8)
    masks[:, 8:16, 8:16] = 1
    a = (rng.normal(0, 20, (6, 1, 24, 24)) + 100 * masks[:, None]).astype(np.float32)
    b = (rng.normal(300, 60, (6, 1, 24, 24)) + 10 * masks[:, None]).astype(np.float32)
    result = frechet_radiomics_distance((a, masks), (b, masks), (1, 1, 1))
    assert result["value"] is not None and np.isfinite(result["value"])


def test_config_of_another_modality_is_refused(phantom_data, tiny_checkpoint, tmp_path) -> None:
    """A CT generator's samples compared with real patches normalised as MR would be void."""
    from medgan.checkpoint import read_sidecar, resolve_checkpoint
    from medgan.config import config_from_dict
    from medgan.errors import ConfigError
    from medgan.evaluation.privacy import evaluate_privacy
    from medgan.sampling import sample

    sample(tiny_checkpoint, 2, tmp_path / "syn", seed=0, progress=False, device="cpu")
    trained = read_sidecar(resolve_checkpoint(tiny_checkpoint))["config"]
    assert trained["modality"] == "ct"
    mr = config_from_dict({**trained, "modality": "mr", "intensity": {}}, source="mr.yaml")
    with pytest.raises(ConfigError, match="synthetic samples are ct but the config is for mr"):
        evaluate_quality(phantom_data, tmp_path / "syn", config=mr, frd=False, progress=False)
    with pytest.raises(ConfigError, match="trained on ct but the config is for mr"):
        evaluate_privacy(phantom_data, tmp_path / "syn", checkpoint=tiny_checkpoint, config=mr,
                         progress=False)
