"""Deprecated: torchrun support lives in :mod:`medgan.distributed` since 0.2."""

from medgan._deprecated import moved_module

_new = moved_module(__name__, "medgan.distributed")
globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
