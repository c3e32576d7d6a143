"""Sampling: load a checkpoint, generate pairs, clean up masks, write NIfTI + a datalist."""

from medgan.sampling.loader import LoadedGenerator, load_generator, sample_seed
from medgan.sampling.postprocess import MaskPostprocess, equivalent_diameter_mm, postprocess_mask
from medgan.sampling.sample import SampleResult, sample

__all__ = [
    "LoadedGenerator", "MaskPostprocess", "SampleResult", "equivalent_diameter_mm",
    "load_generator", "postprocess_mask", "sample", "sample_seed",
]
