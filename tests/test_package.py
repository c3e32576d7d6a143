"""The package root: lazy re-exports resolve, and ``import medgan`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medgan


@pytest.mark.parametrize("name", sorted(medgan.__all__))
def test_every_public_name_resolves(name):
    assert getattr(medgan, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        medgan.nope  # noqa: B018


def test_import_does_not_load_torch():
    code = "import sys, medgan; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
