"""The README's main job, end to end: train the quick-start model on the bundled sample, then
sample from it. Runs the exact `medgan ...` commands of the README's first code block."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_medgan_commands() -> list[list[str]]:
    """The `medgan ...` parts of the first bash block of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.+?)\n```", text, re.S)
    assert block, "README.md has no bash code block"
    parts = [p.strip() for p in block.group(1).split("&&")]
    commands = [shlex.split(p) for p in parts if p.startswith("medgan ")]
    assert [c[1] for c in commands] == ["train", "sample"], commands
    return commands


@pytest.mark.slow
def test_readme_main_job(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for cmd in readme_medgan_commands():
        args = [str(ROOT / a) if a.startswith("configs/") else a for a in cmd[1:]]
        proc = subprocess.run([sys.executable, "-m", "medgan", *args, "--no-progress"],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
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
