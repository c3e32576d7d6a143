"""Static check of the package source: nothing in medgan/ can unpickle or execute a file.

``torch.load`` (without ``weights_only=True``), ``pickle``/``dill``/``joblib`` loads,
``np.load(..., allow_pickle=True)``, ``yaml.load`` with a non-safe loader, ``eval``/``exec``
and ``marshal`` would let a checkpoint, cache or config run code. The check parses every module
(so comments and docstrings that mention these names do not count) and is tested on snippets
that must be caught, so that it cannot pass vacuously.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "medgan"
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line: what`` for every construct that can deserialise or run code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            bad = [n for n in names if n.split(".")[0] in UNSAFE_MODULES]
            found += [f"{where}: import {n}" for n in bad]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        if isinstance(node.func, ast.Name) and name in UNSAFE_BUILTINS:
            found.append(f"{where}: {name}()")
        elif name.endswith("torch.load") or name == "load" and "weights_only" in kwargs:
            if not _is_true(kwargs.get("weights_only")):
                found.append(f"{where}: {name}() without weights_only=True")
        elif name.split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: {name}()")
        elif name.endswith(("yaml.load", "yaml.load_all")):
            loader = kwargs.get("Loader")
            if loader is None or _dotted(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: {name}() without a safe Loader")
        elif name.endswith(("yaml.unsafe_load", "yaml.full_load")):
            found.append(f"{where}: {name}()")
        if _is_true(kwargs.get("allow_pickle")):
            found.append(f"{where}: {name}(allow_pickle=True)")
    return found


def test_package_has_no_unsafe_deserialisation():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, PACKAGE
    found = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"),
                                                        str(f.relative_to(PACKAGE.parent)))]
    assert found == []


def test_only_safetensors_and_json_are_read_from_checkpoints():
    """The checkpoint module reads weights through safetensors' ``load_file`` only."""
    source = (PACKAGE / "checkpoint" / "store.py").read_text(encoding="utf-8")
    assert "from safetensors.torch import load_file, save_file" in source
    assert "torch.load" not in source and "pickle.load" not in source


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "from torch import load\nload(path, weights_only=False)",
    "import pickle\npickle.load(fh)",
    "import pickle as p\n",
    "from pickle import loads\n",
    "import joblib\njoblib.load(path)",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(text)",
    "eval(expression)",
    "exec(code)",
])
def test_the_check_catches(snippet):
    assert unsafe_calls(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(path, weights_only=True)",
    "import numpy as np\nnp.load(path)",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "from safetensors.torch import load_file\nload_file(path)",
    "model.eval()",
    "net.to(device).eval()",
    "import torch\ntorch.compile(model)",
    "# torch.load(path) in a comment\n'''pickle.load in a docstring'''",
])
def test_the_check_allows(snippet):
    assert unsafe_calls(snippet) == []
