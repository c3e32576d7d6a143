"""Generator / discriminator architectures; ``spatial_dims`` (2 or 3) comes first everywhere."""

from medgan.models.dcgan import Discriminator, Generator, MinibatchStd, init_dcgan_weights

__all__ = ["Discriminator", "Generator", "MinibatchStd", "init_dcgan_weights"]
