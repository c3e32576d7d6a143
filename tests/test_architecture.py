"""The package layout: data flows one way, no import cycles, one owner per contract.

Every ``import`` in ``medgan/`` is read from the source (module level and inside functions, so
a function-local import cannot hide a cycle), plus the names packages export lazily; imports
under ``if TYPE_CHECKING:`` serve annotations only and never run, so they do not count.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "medgan"
#: Modules that only forward an old import path to its new home (deprecated in 0.2).
SHIMS = {"medgan.training.checkpoint", "medgan.training.distributed",
         "medgan.evaluation.diversity", "medgan.evaluation.memorisation"}
#: (importer prefix, imported prefix, allowed exceptions): arrows that must not exist.
FORBIDDEN = [
    ("medgan.sampling", "medgan.training", ()),
    ("medgan.evaluation", "medgan.training.", ()),  # the package's public train() is allowed
    ("medgan.augment", "medgan.training", ()),
    ("medgan.training", "medgan.evaluation", ()),
    ("medgan.sampling", "medgan.evaluation", ()),
    ("medgan.training", "medgan.sampling", ()),
    ("medgan.checkpoint", "medgan.training", ()),
    ("medgan.checkpoint", "medgan.sampling", ()),
    ("medgan.checkpoint", "medgan.evaluation", ()),
    ("medgan.data", "medgan.models", ()),
    ("medgan.data", "medgan.training", ()),
    ("medgan.data", "medgan.sampling", ()),
    ("medgan.data", "medgan.evaluation", ()),
    ("medgan.data", "medgan.checkpoint", ()),
    ("medgan.models", "medgan.data", ()),
    ("medgan.models", "medgan.training", ()),
    ("medgan.models", "medgan.checkpoint", ()),
    ("medgan.similarity", "medgan.", ("medgan.similarity",)),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> medgan modules it imports (a package import points at its __init__)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If)
                      and getattr(n.test, "id", None) == "TYPE_CHECKING"]:
            block.body = []  # annotations only: never executed, not an import
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = resolve(name, node, path.name == "__init__.py")
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}
        text = path.read_text(encoding="utf-8")
        targets |= set(re.findall(r'"(medgan(?:\.\w+)+)"', text)) if "lazy_getattr" in text \
            or name in SHIMS else set()
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


GRAPH = import_graph()


@pytest.mark.parametrize(("importer", "imported", "allowed"), FORBIDDEN,
                         ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_no_forbidden_arrow(importer, imported, allowed):
    bad = sorted(
        f"{src} -> {dst}" for src, dsts in GRAPH.items() if src not in SHIMS
        and (src == importer or src.startswith(importer + "."))
        for dst in dsts
        if (dst == imported.rstrip(".") and not imported.endswith(".") or dst.startswith(
            imported if imported.endswith(".") else imported + ".")) and dst not in SHIMS
        and not any(dst == a or dst.startswith(a + ".") for a in allowed)
    )
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_even_through_function_local_imports():
    # a package's __init__ and the modules it exports form its public face, not a cycle:
    # drop the edges from a module up to the __init__ of its own package
    graph = {src: {d for d in dsts if not (src.startswith(d + ".") and d != "medgan")}
             for src, dsts in GRAPH.items() if src not in SHIMS}
    graph = {src: {d for d in dsts if d != "medgan"} for src, dsts in graph.items()}
    assert _cycles(graph) == []


def test_the_checker_sees_a_cycle_and_a_forbidden_arrow():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "medgan.training.monitor" in GRAPH and "medgan.similarity" in GRAPH[
        "medgan.training.monitor"]


def test_no_module_over_400_lines():
    long = {module_name(p): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, long


def test_light_modules_do_not_load_torch():
    """What the CLI needs to validate input must import without torch or MONAI."""
    code = ("import sys, medgan, medgan.cli, medgan.runs, medgan.config, medgan.info, "
            "medgan.checkpoint.files, medgan.checkpoint.metadata, medgan.data.datalist, "
            "medgan.sampling.output, medgan.evaluation.arms, medgan.modalities; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_model_kinds_in_the_config_match_the_registry():
    from medgan.checkpoint import KINDS
    from medgan.config import MODEL_KINDS

    assert set(MODEL_KINDS) == set(KINDS)


@pytest.mark.parametrize(("old", "new", "name"), [
    ("medgan.training.checkpoint", "medgan.checkpoint", "read_sidecar"),
    ("medgan.training.distributed", "medgan.distributed", "DistInfo"),
    ("medgan.evaluation.diversity", "medgan.similarity", "mean_pairwise_msssim"),
    ("medgan.evaluation.memorisation", "medgan.similarity", "nearest_real_patches"),
])
def test_moved_modules_still_import_with_a_deprecation_warning(old, new, name):
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert f"moved to {new}" in out
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
