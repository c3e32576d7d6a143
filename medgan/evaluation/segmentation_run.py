"""One run of the segmentation benchmark: train a MONAI UNet under one arm and seed, then
segment every held-out scan with sliding-window inference and score it.

Training is nnU-Net-like on a CPU budget: random patches with foreground oversampling
(``RandCropByPosNegLabeld``, 1 in 3 patches centred on lesion), Dice + cross-entropy loss, Adam.
2D networks are trained on axial-slice patches (a ``(P, P, 1)`` crop squeezed to ``(P, P)``) and
segment a test scan slice by slice; 3D networks use ``(P, P, P)`` patches.

Random streams are separated (case choice, crop, arm-specific insertion, augmentation, synthetic
replacement, network initialisation), each seeded from the run seed, so all arms of one seed see
the same sequence of real patches and start from the same weights: the arms differ only in what
the arm adds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from medgan.evaluation.metrics import case_metrics

ARMS = ("real", "real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")
REFERENCE_ARM = "real+aug"
GAN_ARMS = ("real+aug+synthetic", "real+aug+insert")
BACKGROUND = -1.0
MAX_BACKGROUND_INDICES = 200_000
MAX_SYNTHETIC_POOL = 4096
CONTEXT = 2  # context crop = CONTEXT x patch size (room to place added lesions)
Item = dict[str, Any]


@dataclass(frozen=True)
class BenchmarkSettings:
    """Training and inference settings shared by every run of a benchmark.

    ``patch_size`` None = the generator's patch size (else 64); ``batch_size`` None = 8 for 2D,
    2 for 3D; ``ratio`` is the share of training patches that carry added lesions: replaced by
    a synthetic patch (arm 3a), given a GAN lesion (3b) or a CarveMix lesion (4).
    """

    iterations: int = 1000
    batch_size: int | None = None
    patch_size: int | None = None
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    learning_rate: float = 1e-3
    ratio: float = 0.5
    foreground_fraction: float = 1 / 3
    sw_batch_size: int = 32
    sw_overlap: float = 0.25
    test_fraction: float = 1 / 3
    n_bootstrap: int = 2000

    @classmethod
    def fast(cls, **overrides: Any) -> BenchmarkSettings:
        """Tiny network, 30 iterations at a high learning rate, small patches and batches
        (tests and CI)."""
        base = cls(iterations=30, batch_size=4, patch_size=32, channels=(8, 16, 32),
                   strides=(2, 2), num_res_units=0, learning_rate=1e-2, sw_batch_size=16)
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ---- data ----
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


def _fit_patch(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
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
    """Training batches ``(B, C, *P)`` images and ``(B, 1, *P)`` labels for one arm and seed.

    Each real patch is the centre of a context crop of twice its size (``context_roi``): the
    arm transform (GAN insertion, CarveMix) works on the context crop, restricted by its
    ``foreground`` mask (body voxels of the central patch) to place whole lesions inside the
    patch, and the central patch is then cut out and augmented.

    Args:
        cases: prepared training cases (:func:`prepare_training_case` with ``context_roi``).
        arm_transform: arm-specific dictionary transform (insertion, CarveMix); None for none.
        synthetic: pool of synthetic ``(image, label)`` patches replacing a ``ratio`` share of
            the real ones (arm 3a); None for none.
    """

    def __init__(self, cases: Sequence[Item], spatial_dims: int, patch_size: int,
                 settings: BenchmarkSettings, seed: int, augment: bool,
                 arm_transform: Any = None,
                 synthetic: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        from monai.transforms import RandCropByPosNegLabeld

        self.cases, self.spatial_dims, self.settings = list(cases), spatial_dims, settings
        self.patch_size = patch_size
        f = settings.foreground_fraction
        self.crop = RandCropByPosNegLabeld(
            ("image", "label"), label_key="label",
            spatial_size=context_roi(spatial_dims, patch_size), pos=f, neg=1.0 - f,
            num_samples=1, fg_indices_key="fg", bg_indices_key="bg",
        ).set_random_state(seed=_stream_seed(seed, 1))
        self.pick = np.random.default_rng([seed, 2])
        self.replace_rng = np.random.default_rng([seed, 3])
        self.arm_transform = arm_transform
        if arm_transform is not None:
            arm_transform.set_random_state(seed=_stream_seed(seed, 4))
        self.augment = (augmentation(spatial_dims, patch_size)
                        .set_random_state(seed=_stream_seed(seed, 5)) if augment else None)
        self.synthetic = synthetic
        self._next_synthetic = 0
        self.n_items = self.n_added = 0

    def _centre(self, x: torch.Tensor) -> tuple[slice, ...]:
        """Index of the central patch of a context crop ``(C, *S)``."""
        p = self.patch_size
        return (slice(None), *(slice((n - p) // 2, (n - p) // 2 + p) for n in x.shape[1:]))

    def _context(self) -> Item:
        """A real context crop with its allowed-placement mask ``foreground`` (1, *S)."""
        case = self.cases[int(self.pick.integers(len(self.cases)))]
        item = self.crop(case)[0]
        image = torch.as_tensor(item["image"]).float()
        label = torch.as_tensor(item["label"]).float()
        if self.spatial_dims == 2:
            image, label = image[..., 0], label[..., 0]
        allowed = torch.zeros_like(label, dtype=torch.bool)
        centre = self._centre(image)
        allowed[centre] = (image[centre].amax(0, keepdim=True) > BACKGROUND + 1e-3)
        return {"image": image, "label": label, "case_id": case["case_id"],
                "foreground": allowed}

    def _item(self) -> Item:
        context = self._context()  # always drawn, so real patches match across arms
        use_synthetic = self.replace_rng.random() < self.settings.ratio
        self.n_items += 1
        if self.synthetic is not None and use_synthetic:
            images, labels = self.synthetic
            k = self._next_synthetic % len(images)
            self._next_synthetic += 1
            item = {"image": images[k], "label": labels[k]}
            self.n_added += 1
        else:
            if self.arm_transform is not None:
                before = context["image"]
                context = self.arm_transform(context)
                self.n_added += int(not torch.equal(torch.as_tensor(context["image"]), before))
            centre = self._centre(context["image"])
            item = {"image": torch.as_tensor(context["image"])[centre],
                    "label": torch.as_tensor(context["label"])[centre]}
        if self.augment is not None:
            item = self.augment(item)
        return item

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self._item() for _ in range(self.settings.batch_size)]
        images = torch.stack([torch.as_tensor(i["image"]).float() for i in items])
        labels = torch.stack([(torch.as_tensor(i["label"]) > 0.5).float() for i in items])
        return images, labels


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


# ---- network ----
def build_unet(spatial_dims: int, in_channels: int, settings: BenchmarkSettings) -> Any:
    """MONAI UNet with one output channel (lesion logit)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1,
                channels=settings.channels, strides=settings.strides,
                num_res_units=settings.num_res_units)


def train_unet(net: torch.nn.Module, stream: PatchStream, settings: BenchmarkSettings,
               device: torch.device) -> list[float]:
    """``settings.iterations`` Adam steps on Dice + BCE; returns the loss of every step."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate, weight_decay=1e-5)
    net.train()
    losses = []
    for _ in range(settings.iterations):
        images, labels = stream.next()
        loss = loss_fn(net(images.to(device)), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def body_box(image: torch.Tensor, margin: int = 4) -> tuple[slice, ...]:
    """Bounding box ``(X, Y, Z)`` of the non-background voxels of ``(C, X, Y, Z)``, plus
    ``margin`` in-plane (nnU-Net likewise crops scans to their non-zero region)."""
    body = image.amax(0) > BACKGROUND + 1e-3
    if not body.any():
        return tuple(slice(0, 0) for _ in body.shape)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = torch.nonzero(body.any(dim=other[1]).any(dim=other[0])).flatten()
        pad = margin if axis < 2 else 0
        box.append(slice(max(0, int(idx[0]) - pad), min(body.shape[axis], int(idx[-1]) + 1 + pad)))
    return tuple(box)


@torch.no_grad()
def segment_volume(net: torch.nn.Module, image: torch.Tensor, spatial_dims: int, patch_size: int,
                   settings: BenchmarkSettings, device: torch.device,
                   slices_per_batch: int = 32) -> np.ndarray:
    """Binary prediction ``(X, Y, Z)`` for a whole scan ``(C, X, Y, Z)``.

    Sliding-window inference (Gaussian blending) over the body's bounding box; voxels outside
    it are background. 2D networks segment every axial slice of the box, the windows of
    ``slices_per_batch`` slices at a time (:func:`sliding_window_slices`; the same logits as
    MONAI's ``sliding_window_inference`` on those slices).
    """
    from monai.inferers import sliding_window_inference

    from medgan.evaluation.sliding_window import sliding_window_slices

    net.eval()
    image = torch.as_tensor(image, dtype=torch.float32)
    out = np.zeros(image.shape[1:], dtype=bool)
    box = body_box(image)
    crop = image[(slice(None), *box)]
    if crop.numel() == 0:
        return out
    if spatial_dims == 3:
        logits = sliding_window_inference(
            crop[None].to(device), (patch_size,) * 3, settings.sw_batch_size, net,
            overlap=settings.sw_overlap, mode="gaussian", cval=BACKGROUND).cpu()
        out[box] = (logits[0, 0] > 0).numpy()
        return out
    logits = sliding_window_slices(net, crop.permute(3, 0, 1, 2), patch_size,  # (Z, C, X, Y)
                                   settings.sw_batch_size, settings.sw_overlap, BACKGROUND,
                                   device, group=slices_per_batch)
    out[box] = (logits[:, 0] > 0).permute(1, 2, 0).numpy()  # (X, Y, Z)
    return out


def run_one(
    arm: str, seed: int, train_items: Sequence[Item], test_cases: Sequence[Mapping[str, Any]],
    spatial_dims: int, settings: BenchmarkSettings, device: torch.device,
    make_arm: Callable[[str, int], tuple[Any, Any]], example_slices: Sequence[tuple[str, int]],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train under ``arm`` with ``seed``; score every test case.

    ``make_arm(arm, seed)`` returns ``(arm_transform, synthetic_pool)`` for the arm.
    Returns the JSON-able result and the predicted axial slices named in ``example_slices``
    (``"<case_id>/<z>"`` -> ``(X, Y)`` bool).
    """
    patch_size = int(settings.patch_size)
    arm_transform, synthetic = make_arm(arm, seed)
    stream = PatchStream(train_items, spatial_dims, patch_size, settings, seed,
                         augment=arm != "real", arm_transform=arm_transform,
                         synthetic=synthetic)
    torch.manual_seed(seed)
    in_channels = int(train_items[0]["image"].shape[0])
    net = build_unet(spatial_dims, in_channels, settings).to(device)
    t0 = time.perf_counter()
    losses = train_unet(net, stream, settings, device)
    t1 = time.perf_counter()
    per_case, examples = [], {}
    for case in test_cases:
        pred = segment_volume(net, case["image"], spatial_dims, patch_size, settings, device)
        gt = torch.as_tensor(case["label"])[0].numpy().astype(bool)
        per_case.append({"case_id": case["case_id"],
                         **case_metrics(pred, gt, case["spacing_mm"]).to_dict()})
        for cid, z in example_slices:
            if cid == case["case_id"]:
                examples[f"{cid}/{z}"] = pred[..., z]
    tail = losses[-10:]
    result = {
        "arm": arm, "seed": seed, "train_cases": [c["case_id"] for c in train_items],
        "added_lesion_fraction": stream.n_added / max(1, stream.n_items),
        "cases": per_case, "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "train_seconds": round(t1 - t0, 2), "test_seconds": round(time.perf_counter() - t1, 2),
    }
    return result, examples


def synthetic_pool(generator: Any, settings: BenchmarkSettings, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic patches for arm 3a, fitted to the training patch size (model space)."""
    from medgan.augment import SyntheticLesionDataset

    n = min(MAX_SYNTHETIC_POOL,
            max(1, math.ceil(settings.iterations * settings.batch_size * settings.ratio)))
    dataset = SyntheticLesionDataset(generator, num_samples=n, seed=seed, units="model")
    size = int(settings.patch_size)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([_fit_patch(torch.as_tensor(i["image"]).float(), size, BACKGROUND)
                          for i in items])
    labels = torch.stack([_fit_patch((torch.as_tensor(i["label"]) > 0).float(), size, 0.0)
                          for i in items])
    return images, labels
