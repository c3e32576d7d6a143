"""Single source of the package version (read by pyproject and recorded in checkpoints)."""

__version__ = "0.1.0"
