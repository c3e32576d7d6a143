"""Lazy package exports (PEP 562), so that the CLI can validate input before torch loads.

A package lists ``name -> defining module``; a name is imported on first access. Used by the
packages whose light parts the CLI needs before any heavy import: the root, ``medgan.data``
(datalists) and ``medgan.checkpoint`` (locating and verifying checkpoints). There are no import
cycles to hide: ``tests/test_architecture.py`` walks the import graph.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
