"""What medgan's random lesion transforms share.

:class:`RandLesionArray` is the base of the array transforms that add a lesion to an image
(checks of the input against the generator, counted skip reasons, the apply-or-not draw).
:class:`RandArrayTwind` is the base of their dictionary twins: it decides with its own ``prob``
whether to act, seeds the twin with :meth:`set_random_state` and reports the twin's skip
reasons, so the image and its label always get the same draw.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from medgan.augment.arrays import Array, check_generator_input
from medgan.errors import ConfigError


def check_prob(prob: float) -> float:
    """``prob`` as a float in [0, 1], else a :class:`ConfigError`."""
    if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
        raise ConfigError(f"prob must be a number in [0, 1], not {prob}")
    return float(prob)


class RandLesionArray(RandomizableTransform):
    """Base of an array transform ``(image, label) -> (image, label)`` driven by a generator
    (``self.generator`` with ``spatial_dims`` and ``image_channels``)."""

    generator: Any

    def __init__(self, prob: float) -> None:
        RandomizableTransform.__init__(self, check_prob(prob))
        self.skipped: Counter[str] = Counter()

    def _skip(self, reason: str, img: Array, label: Array | None) -> tuple[Array, Array | None]:
        """Leave the data as they are and count why."""
        self.skipped[reason] += 1
        return img, label

    def _start(self, img: Array, randomize: bool) -> bool:
        """Check ``img`` ``(C, *S)``, draw when ``randomize``; True when this call applies."""
        check_generator_input(img, self.generator.spatial_dims, self.generator.image_channels)
        if randomize:
            self.randomize()
        return self._do_transform


class RandArrayTwind(RandomizableTransform, MapTransform):
    """Base of a random dictionary transform that delegates to ``array_transform``."""

    array_transform: Any

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, check_prob(prob))

    @property
    def skipped(self) -> Counter[str]:
        """Reasons of the calls that left the data unchanged, counted (in this process)."""
        return self.array_transform.skipped

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> RandArrayTwind:
        super().set_random_state(seed, state)
        self.array_transform.set_random_state(seed, state)
        return self
