"""The README's main job, end to end: train the quick-start model on the bundled sample, then
sample from it, with the exact `medgan ...` commands of the README's first code block.

Training is shortened with `--set` (the README's command plus overrides), and the subprocesses
run on one thread: what is tested is that the command works and its outputs are sound, not how
fast it is. A busy machine makes it slower, never failing: the time limit is far above the few
minutes the shortened run takes on a loaded 2-core machine. The full quick start's speed is
measured by ``benchmarks/bench_quickstart.py``, which shares :func:`run_readme` with this test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quickstart import readme_commands, run_readme  # noqa: E402

#: Training steps of the shortened run, and the cadence that still writes every artefact.
STEPS = 300
SHORT = ["--set", f"train.steps={STEPS}", "--set", "train.sample_every=150",
         "--set", "train.checkpoint_every=150"]
TIMEOUT_S = 3600  # per command; a hang, not a slow machine, should hit it


def test_readme_has_the_two_commands():
    commands = readme_commands()
    assert [c[1] for c in commands] == ["train", "sample"], commands
    assert commands[0][commands[0].index("--config") + 1] == "configs/quickstart.yaml"


@pytest.mark.slow
def test_readme_main_job(tmp_path):
    runs = run_readme(tmp_path, SHORT, threads=1, timeout=TIMEOUT_S)
    for name in ("train", "sample"):
        assert runs[name]["returncode"] == 0, runs[name]["stderr"][-3000:]
    assert runs["train"]["steps"] == STEPS
    run = tmp_path / "runs" / "quickstart"
    for name in ("MODEL_CARD.md", "samples/final.png", "loss_curves.png", "config.yaml"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    # the fixed-noise samples must not have collapsed onto one image
    assert history["diversity_msssim"][-1][1] < 0.9

    synthetic = run / "synthetic"
    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(str(synthetic / "dataset.json"), data_list_key="training")
    assert len(items) == 32
    lesion_fraction = []
    for item in items:
        img = nib.load(item["image"])
        mask = np.asarray(nib.load(item["label"]).dataobj)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert np.allclose(img.header.get_zooms()[:2], (2.0, 2.0))
        hu = np.asarray(img.dataobj)
        assert hu.min() >= -200.0 - 1e-3 and hu.max() <= 300.0 + 1e-3  # the HU window
        lesion_fraction.append(mask.mean())
    # lesions of plausible, varied size: neither a dot nor the whole patch on average
    assert 0.02 < float(np.mean(lesion_fraction)) < 0.6
    assert float(np.std(lesion_fraction)) > 0.01
