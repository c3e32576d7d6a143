"""Old import paths kept working for one release, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def moved_module(old: str, new: str) -> Any:
    """Warn that module ``old`` moved to ``new`` and return the new module."""
    home = new.rsplit(".", 1)[0] if new.startswith("medgan.checkpoint.") else new
    warnings.warn(f"{old} moved to {home}; import it from there (the old path goes in 0.3)",
                  DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)
