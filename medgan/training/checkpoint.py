"""Deprecated: the checkpoint format lives in :mod:`medgan.checkpoint` since 0.2."""

from medgan._deprecated import moved_module

for _name in ("medgan.checkpoint.files", "medgan.checkpoint.store"):
    _new = moved_module(__name__, _name)
    globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
