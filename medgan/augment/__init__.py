"""Feed synthetic lesions to segmentation training: a MONAI-style dataset, a mixing sampler and
a random transform that pastes generated lesions into real images."""

from medgan.augment.arrays import body_region
from medgan.augment.dataset import SyntheticLesionDataset, mix_real_synthetic
from medgan.augment.transforms import RandSyntheticLesion, RandSyntheticLesiond
from medgan.sampling.loader import LoadedGenerator, load_generator

__all__ = [
    "LoadedGenerator", "RandSyntheticLesion", "RandSyntheticLesiond", "SyntheticLesionDataset",
    "body_region", "load_generator", "mix_real_synthetic",
]
