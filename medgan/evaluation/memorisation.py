"""Deprecated: moved to :mod:`medgan.similarity` in 0.2."""

from medgan._deprecated import moved_module

_new = moved_module(__name__, "medgan.similarity")
globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
