"""Training patches of the segmentation benchmark: context crops, the per-step batch of base
patches + lesion slots, and the arms' added lesions (see :class:`PatchStream`).

Every step's batch is ``batch_size`` *base* patches centred on random body voxels plus
``lesion_slots`` patches centred on lesion voxels, identical in every arm (same patients, same
crops). An arm with ratio ``r`` adds a lesion to a share ``r`` of all patches of the run
(realised exactly, carrying any shortfall to the next step): the insert and CarveMix arms paste
one into randomly chosen real patches (redrawing the lesion and its place until it fits inside
the body), the synthetic arm puts generated lesion-centred pairs into lesion slots instead of
real lesion-centred crops. So every arm trains on the same base patches, the same number of
patches per step and the same share of lesion-centred patches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medgan.data.intensity import BACKGROUND

if TYPE_CHECKING:
    from medgan.evaluation.segmentation_run import BenchmarkSettings

MAX_BACKGROUND_INDICES = 200_000
CONTEXT = 2  # context crop = CONTEXT x patch size (room to place added lesions)
Item = dict[str, Any]


def prepare_training_case(case: Mapping[str, Any], roi: Sequence[int]) -> Item:
    """Pad a loaded case to at least ``roi`` (X, Y, Z) and index its fore-/background voxels.

    ``case`` holds ``image`` (C, X, Y, Z) in [-1, 1], ``label`` (1, X, Y, Z) and ``case_id``.
    Background indices (inside the body only) are subsampled to at most 200k, reproducibly.
    """
    from monai.transforms import SpatialPad

    image = torch.as_tensor(case["image"], dtype=torch.float32)
    label = torch.as_tensor(case["label"]).to(torch.uint8)
    size = [max(s, r) for s, r in zip(image.shape[1:], roi, strict=True)]
    if size != list(image.shape[1:]):
        image = torch.as_tensor(SpatialPad(size, value=BACKGROUND)(image))
        label = torch.as_tensor(SpatialPad(size, value=0)(label))
    lesion = label[0].numpy().astype(bool)
    body = (image.amax(0) > BACKGROUND + 1e-3).numpy() & ~lesion
    bg = np.flatnonzero(body if body.any() else ~lesion)
    if len(bg) > MAX_BACKGROUND_INDICES:
        bg = np.sort(np.random.default_rng(0).choice(bg, MAX_BACKGROUND_INDICES, replace=False))
    return {"image": image, "label": label, "case_id": case["case_id"],
            "fg": np.flatnonzero(lesion), "bg": bg}


def fit_patch(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Centre-crop or pad ``(C, *P)`` to edge ``size``."""
    from monai.transforms import ResizeWithPadOrCrop

    spatial = (size,) * (x.ndim - 1)
    if tuple(x.shape[1:]) == spatial:
        return x
    return torch.as_tensor(ResizeWithPadOrCrop(spatial, value=value)(x))


def augmentation(spatial_dims: int, patch_size: int) -> Any:
    """Standard MONAI spatial + intensity augmentation of a ``(C, *P)`` patch (intensity
    transforms touch the image only)."""
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    flips = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
    angle = math.pi / 12
    return Compose([
        *flips,
        RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)),
        RandAffined(keys, prob=0.2, rotate_range=(angle,) * (1 if spatial_dims == 2 else 3),
                    scale_range=(0.15,) * spatial_dims, mode=("bilinear", "nearest"),
                    padding_mode="border", spatial_size=(patch_size,) * spatial_dims,
                    cache_grid=True),
        RandScaleIntensityd("image", factors=0.15, prob=0.15),
        RandShiftIntensityd("image", offsets=0.1, prob=0.15),
        RandGaussianNoised("image", prob=0.15, std=0.05),
    ])


def context_roi(spatial_dims: int, patch_size: int) -> tuple[int, int, int]:
    """Size ``(X, Y, Z)`` of the context crop around each training patch: twice the patch
    in-plane (and through-plane in 3D), so added lesions can be placed inside the body."""
    c = CONTEXT * patch_size
    return (c, c, 1 if spatial_dims == 2 else c)


class PatchStream:
    """Training batches ``(N, C, *P)`` images and ``(N, 1, *P)`` labels for one arm and seed,
    ``N = batch_size + lesion_slots`` (see the module docstring).

    Each real patch is the centre of a context crop of twice its size (``context_roi``): the
    arm transform (GAN insertion, CarveMix) works on the context crop, restricted by its
    ``foreground`` mask (body voxels of the central patch) to place whole lesions inside the
    patch, and the central patch is then cut out and augmented.

    Args:
        cases: prepared training cases (:func:`prepare_training_case` with ``context_roi``).
        arm_transform: arm-specific dictionary transform (insertion, CarveMix) that adds a
            lesion whenever it fits (probability 1); None for none.
        synthetic: pool of synthetic ``(image, label)`` patches put into lesion slots (arm
            3a); None for none.
        redraws: calls of ``arm_transform`` on one patch before trying another patch.
    """

    def __init__(self, cases: Sequence[Item], spatial_dims: int, patch_size: int,
                 settings: BenchmarkSettings, seed: int, augment: bool,
                 arm_transform: Any = None,
                 synthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
                 redraws: int = 5) -> None:
        self.cases, self.spatial_dims, self.settings = list(cases), spatial_dims, settings
        self.lesion_cases = [c for c in self.cases if len(c["fg"])] or self.cases
        self.patch_size, self.redraws = patch_size, redraws
        self.n_base, self.n_slots = int(settings.batch_size), int(settings.lesion_slots or 0)
        self.crop_base = self._crop(0.0, _stream_seed(seed, 1))
        self.crop_lesion = self._crop(1.0, _stream_seed(seed, 6))
        self.pick = np.random.default_rng([seed, 2])
        self.pick_lesion = np.random.default_rng([seed, 7])
        self.choose = np.random.default_rng([seed, 3])
        self.arm_transform = arm_transform
        if arm_transform is not None:
            arm_transform.set_random_state(seed=_stream_seed(seed, 4))
        self.augment = (augmentation(spatial_dims, patch_size)
                        .set_random_state(seed=_stream_seed(seed, 5)) if augment else None)
        self.synthetic = synthetic
        adds = arm_transform is not None or synthetic is not None
        self.ratio = float(settings.ratio) if adds else 0.0
        self._due = 0.0
        self._next_synthetic = 0
        self.n_items = self.n_added = 0

    def _crop(self, pos: float, seed: int) -> Any:
        from monai.transforms import RandCropByPosNegLabeld

        return RandCropByPosNegLabeld(
            ("image", "label"), label_key="label",
            spatial_size=context_roi(self.spatial_dims, self.patch_size), pos=pos,
            neg=1.0 - pos, num_samples=1, fg_indices_key="fg", bg_indices_key="bg",
        ).set_random_state(seed=seed)

    def _centre(self, x: torch.Tensor) -> tuple[slice, ...]:
        """Index of the central patch of a context crop ``(C, *S)``."""
        p = self.patch_size
        return (slice(None), *(slice((n - p) // 2, (n - p) // 2 + p) for n in x.shape[1:]))

    def _context(self, crop: Any, pick: np.random.Generator, cases: Sequence[Item]) -> Item:
        """A real context crop with its allowed-placement mask ``foreground`` (1, *S)."""
        case = cases[int(pick.integers(len(cases)))]
        item = crop(case)[0]
        image = torch.as_tensor(item["image"]).float()
        label = torch.as_tensor(item["label"]).float()
        if self.spatial_dims == 2:
            image, label = image[..., 0], label[..., 0]
        allowed = torch.zeros_like(label, dtype=torch.bool)
        centre = self._centre(image)
        allowed[centre] = (image[centre].amax(0, keepdim=True) > BACKGROUND + 1e-3)
        if self.settings.placement_range is not None:  # e.g. lung parenchyma only
            low, high = self.settings.placement_range
            first = image[centre][:1]
            allowed[centre] &= (first >= low) & (first <= high)
        return {"image": image, "label": label, "case_id": case["case_id"],
                "foreground": allowed}

    def _with_lesion(self, context: Item) -> Item | None:
        """``context`` with an added lesion, or None when none fitted in ``redraws`` draws."""
        for _ in range(self.redraws):
            out = self.arm_transform(context)
            if not torch.equal(torch.as_tensor(out["image"]), context["image"]):
                return out
        return None

    def _patch(self, context: Item) -> Item:
        centre = self._centre(context["image"])
        return {"image": torch.as_tensor(context["image"])[centre],
                "label": torch.as_tensor(context["label"])[centre]}

    def _add(self, contexts: list[Item], order: np.ndarray, n_add: int) -> tuple[list[Item], int]:
        """Items with ``n_add`` added lesions (fewer when they do not fit)."""
        items: list[Item | None] = [None] * len(contexts)
        added = 0
        if self.synthetic is not None:
            images, labels = self.synthetic
            for slot in range(self.n_base, self.n_base + min(n_add, self.n_slots)):
                k = self._next_synthetic % len(images)
                self._next_synthetic += 1
                items[slot] = {"image": images[k], "label": labels[k]}
                added += 1
        elif self.arm_transform is not None:
            for idx in order:
                if added == n_add:
                    break
                changed = self._with_lesion(contexts[idx])
                if changed is not None:
                    items[idx], added = self._patch(changed), added + 1
        return [it if it is not None else self._patch(c) for it, c in zip(items, contexts,
                                                                           strict=True)], added

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        contexts = ([self._context(self.crop_base, self.pick, self.cases)
                     for _ in range(self.n_base)]
                    + [self._context(self.crop_lesion, self.pick_lesion, self.lesion_cases)
                       for _ in range(self.n_slots)])  # always drawn: identical in every arm
        order = self.choose.permutation(len(contexts))
        self._due += self.ratio * len(contexts)
        n_add = min(int(self._due), len(contexts))
        items, added = self._add(contexts, order, n_add)
        self._due = min(self._due - added, len(contexts))  # a shortfall carries over
        self.n_items += len(items)
        self.n_added += added
        if self.augment is not None:
            items = [self.augment(i) for i in items]
        images = torch.stack([torch.as_tensor(i["image"]).float() for i in items])
        labels = torch.stack([(torch.as_tensor(i["label"]) > 0.5).float() for i in items])
        return images, labels


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
