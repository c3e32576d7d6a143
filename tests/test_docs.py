"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every warning into a failure: a broken link or anchor between pages, a page
missing from the nav, an API reference entry that does not resolve, or a docstring that
mkdocstrings cannot parse (e.g. an ``Args:`` entry naming a parameter the function does not
have). The docs packages come with the ``dev`` extra, so CI always runs this test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed; pip install -e '.[docs]' (included in '.[dev]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # silence mkdocs-material's banner
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "WARNING" in line or "ERROR" in line or "Error" in line]
        pytest.fail("mkdocs build --strict failed:\n" + "\n".join(problems or
                                                                  [result.stderr[-4000:]]))
    return out


def test_site_builds_strict(site: Path) -> None:
    for page in ("index.html", "quickstart/index.html", "reference/api/index.html",
                 "reference/cli/index.html"):
        assert (site / page).is_file(), f"{page} was not built"


def test_cli_reference_lists_every_command(site: Path) -> None:
    from medgan.cli import main

    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        assert f"medgan {name}" in html, f"'medgan {name}' missing from the CLI reference"
        for sub in getattr(command, "commands", {}):
            assert f"medgan {name} {sub}" in html, f"'medgan {name} {sub}' missing"
    assert "Sentinel.UNSET" not in html  # docs/_hooks/click_defaults.py


def test_api_reference_documents_config_fields(site: Path) -> None:
    html = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in ("medgan.config.TrainConfig.ema_decay", "medgan.training.trainer.train",
                   "medgan.augment.RandSyntheticLesiond", "medgan.sampling.loader.load_generator",
                   "medgan.checkpoint.metadata.read_spec", "medgan.sampling.job.sample"):
        assert f'id="{anchor}"' in html, f"{anchor} missing from the API reference"
