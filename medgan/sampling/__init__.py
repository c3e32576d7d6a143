"""Sampling: load a checkpoint, generate pairs, clean up masks, write NIfTI + a datalist.

Names are exported lazily (see :mod:`medgan._lazy`): the CLI checks the output folder before
torch loads.
"""

from medgan._lazy import lazy_getattr

_EXPORTS = {
    "LoadedGenerator": "medgan.sampling.loader", "load_generator": "medgan.sampling.loader",
    "sample_seed": "medgan.sampling.loader", "MaskPostprocess": "medgan.sampling.postprocess",
    "postprocess_mask": "medgan.sampling.postprocess",
    "equivalent_diameter_mm": "medgan.sampling.postprocess", "SampleResult": "medgan.sampling.job",
    "sample": "medgan.sampling.job", "LoadedInpainter": "medgan.sampling.inpainter",
    "write_cases": "medgan.sampling.cases", "CasesResult": "medgan.sampling.cases",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
