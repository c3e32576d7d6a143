"""One run of the segmentation benchmark: train a MONAI UNet under one arm and seed, then
segment every held-out scan with sliding-window inference and score it.

Training is nnU-Net-like on a CPU budget: random patches, Dice + cross-entropy loss, Adam.
2D networks are trained on axial-slice patches (a ``(P, P, 1)`` crop squeezed to ``(P, P)``) and
segment a test scan slice by slice; 3D networks use ``(P, P, P)`` patches.

Every step's batch is ``batch_size`` *base* patches centred on random body voxels plus
``lesion_slots`` patches centred on lesion voxels, identical in every arm (same patients, same
crops). An arm with ratio ``r`` adds a lesion to a share ``r`` of all patches of the run
(realised exactly, carrying any shortfall to the next step): the insert and CarveMix arms paste
one into randomly chosen real patches (redrawing the lesion and its place until it fits inside
the body), the synthetic arm puts generated lesion-centred pairs into lesion slots instead of
real lesion-centred crops. So every arm trains on the same base patches, the same number of
patches per step and the same share of lesion-centred patches.

Training stops by one rule for every arm: at most ``iterations`` steps; every ``eval_every``
steps the mean Dice on the regime's validation patients is measured and the best weights are
kept; ``patience`` evaluations without improvement stop the run early.

Random streams are separated (case choice, crop, which patches get a lesion, the arm's own
draws, augmentation, network initialisation), each seeded from the run seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from medgan.evaluation.arms import ARMS, GAN_ARMS, REFERENCE_ARM  # noqa: F401 (re-exported)
from medgan.evaluation.metrics import case_metrics, dice_score, remove_small_components

BACKGROUND = -1.0
MAX_BACKGROUND_INDICES = 200_000
MAX_SYNTHETIC_POOL = 4096
CONTEXT = 2  # context crop = CONTEXT x patch size (room to place added lesions)
Item = dict[str, Any]


@dataclass(frozen=True)
class BenchmarkSettings:
    """Training and inference settings shared by every run of a benchmark.

    ``patch_size`` None = the generator's patch size (else 64); ``batch_size`` (base patches
    per step) None = 8 for 2D, 2 for 3D; ``lesion_slots`` (lesion-centred patches per step)
    None = half of ``batch_size``; ``ratio`` is the share of all training patches that carry
    an added lesion (at most ``lesion_slots / (batch_size + lesion_slots)``);
    ``iterations`` is the maximum number of steps, ``eval_every``/``patience`` the validation
    rule (patience 0 = never stop early); ``min_component_voxels`` > 0 adds metrics after
    dropping predicted components smaller than that.
    """

    iterations: int = 2000
    batch_size: int | None = None
    lesion_slots: int | None = None
    patch_size: int | None = None
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    learning_rate: float = 1e-3
    ratio: float = 0.0
    eval_every: int = 200
    patience: int = 4
    validation_fraction: float = 0.2
    min_component_voxels: int = 0
    sw_batch_size: int = 32
    sw_overlap: float = 0.25
    test_fraction: float = 1 / 3
    n_bootstrap: int = 2000

    @classmethod
    def fast(cls, **overrides: Any) -> BenchmarkSettings:
        """Tiny network, 30 iterations at a high learning rate, small patches and batches
        (tests and CI)."""
        base = cls(iterations=30, batch_size=4, lesion_slots=2, patch_size=32,
                   channels=(8, 16, 32), strides=(2, 2), num_res_units=0, learning_rate=1e-2,
                   sw_batch_size=16, eval_every=10, patience=0)
        return replace(base, **overrides)

    @property
    def max_ratio(self) -> float:
        """The largest ratio every arm can realise: all lesion slots synthetic."""
        slots = int(self.lesion_slots or 0)
        return slots / max(1, int(self.batch_size or 0) + slots)

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


# ---- network ----
def build_unet(spatial_dims: int, in_channels: int, settings: BenchmarkSettings) -> Any:
    """MONAI UNet with one output channel (lesion logit)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1,
                channels=settings.channels, strides=settings.strides,
                num_res_units=settings.num_res_units)


@dataclass
class TrainLog:
    """What :func:`train_unet` did: the loss of every step, the validation curve
    ``[(iteration, mean Dice)]``, the iteration whose weights were kept and the last one run."""

    losses: list[float]
    curve: list[tuple[int, float]]
    best_iteration: int
    stopped_at: int

    @property
    def best_dice(self) -> float:
        return max((d for _, d in self.curve), default=float("nan"))


def train_unet(net: torch.nn.Module, stream: PatchStream, settings: BenchmarkSettings,
               device: torch.device, validate: Callable[[], float] | None = None) -> TrainLog:
    """Adam steps on Dice + BCE under the benchmark's stopping rule (module docstring).

    ``validate()`` returns the mean validation Dice of ``net``; without it the run trains for
    ``settings.iterations`` steps and keeps the last weights. With it, ``net`` ends holding the
    weights of the best validation Dice (the first of ties).
    """
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate, weight_decay=1e-5)
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    best, best_it, best_state, stale = -1.0, 0, None, 0
    it = 0
    for it in range(1, settings.iterations + 1):
        net.train()
        images, labels = stream.next()
        loss = loss_fn(net(images.to(device)), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if validate is None or (it % settings.eval_every and it != settings.iterations):
            continue
        dice = float(validate())
        curve.append((it, dice))
        if dice > best:
            best, best_it, stale = dice, it, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if settings.patience and stale >= settings.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return TrainLog(losses, curve, best_it if validate is not None else it, it)


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
    it are background. 2D networks segment every axial slice of the box.
    """
    from monai.inferers import sliding_window_inference

    net.eval()

    def infer(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            x.to(device), (patch_size,) * spatial_dims, settings.sw_batch_size, net,
            overlap=settings.sw_overlap, mode="gaussian", cval=BACKGROUND,
        ).cpu()

    image = torch.as_tensor(image, dtype=torch.float32)
    out = np.zeros(image.shape[1:], dtype=bool)
    box = body_box(image)
    crop = image[(slice(None), *box)]
    if crop.numel() == 0:
        return out
    if spatial_dims == 3:
        out[box] = (infer(crop[None])[0, 0] > 0).numpy()
        return out
    slices = crop.permute(3, 0, 1, 2)  # (Z, C, X, Y)
    logits = [infer(slices[z:z + slices_per_batch])
              for z in range(0, len(slices), slices_per_batch)]
    out[box] = (torch.cat(logits)[:, 0] > 0).permute(1, 2, 0).numpy()  # (X, Y, Z)
    return out


def _score(net: torch.nn.Module, cases: Sequence[Mapping[str, Any]], spatial_dims: int,
           settings: BenchmarkSettings, device: torch.device,
           example_slices: Sequence[tuple[str, int]] = ()
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Per-case metrics (raw; post-processed when ``min_component_voxels`` > 0) and the
    predicted example slices (raw)."""
    raw, post, examples = [], [], {}
    for case in cases:
        pred = segment_volume(net, case["image"], spatial_dims, int(settings.patch_size),
                              settings, device)
        gt = torch.as_tensor(case["label"])[0].numpy().astype(bool)
        raw.append({"case_id": case["case_id"],
                    **case_metrics(pred, gt, case["spacing_mm"]).to_dict()})
        if settings.min_component_voxels > 0:
            kept = remove_small_components(pred, settings.min_component_voxels)
            post.append({"case_id": case["case_id"],
                         **case_metrics(kept, gt, case["spacing_mm"]).to_dict()})
        for cid, z in example_slices:
            if cid == case["case_id"]:
                examples[f"{cid}/{z}"] = pred[..., z]
    return raw, post, examples


def validation_dice(net: torch.nn.Module, cases: Sequence[Mapping[str, Any]], spatial_dims: int,
                    settings: BenchmarkSettings, device: torch.device) -> float:
    """Mean raw Dice of ``net`` on whole validation scans."""
    scores = []
    for case in cases:
        pred = segment_volume(net, case["image"], spatial_dims, int(settings.patch_size),
                              settings, device)
        scores.append(dice_score(pred, torch.as_tensor(case["label"])[0].numpy() > 0))
    return float(np.mean(scores))


def run_one(
    arm: str, seed: int, train_items: Sequence[Item], test_cases: Sequence[Mapping[str, Any]],
    spatial_dims: int, settings: BenchmarkSettings, device: torch.device,
    make_arm: Callable[[str, int, BenchmarkSettings], tuple[Any, Any]],
    example_slices: Sequence[tuple[str, int]],
    val_cases: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train under ``arm`` with ``seed`` (at ``settings.ratio``); score every test case.

    ``make_arm(arm, seed, settings)`` returns ``(arm_transform, synthetic_pool)``; with
    ``val_cases`` training follows the validation rule (:func:`train_unet`). Returns the
    JSON-able result and the predicted axial slices named in ``example_slices``
    (``"<case_id>/<z>"`` -> ``(X, Y)`` bool).
    """
    arm_transform, synthetic = make_arm(arm, seed, settings)
    stream = PatchStream(train_items, spatial_dims, int(settings.patch_size), settings, seed,
                         augment=arm != "real", arm_transform=arm_transform,
                         synthetic=synthetic)
    torch.manual_seed(seed)
    in_channels = int(train_items[0]["image"].shape[0])
    net = build_unet(spatial_dims, in_channels, settings).to(device)
    validate = (None if not val_cases else
                (lambda: validation_dice(net, val_cases, spatial_dims, settings, device)))
    t0 = time.perf_counter()
    log = train_unet(net, stream, settings, device, validate)
    t1 = time.perf_counter()
    per_case, post, examples = _score(net, test_cases, spatial_dims, settings, device,
                                      example_slices)
    tail = log.losses[-10:]
    result = {
        "arm": arm, "seed": seed, "ratio": float(stream.ratio),
        "train_cases": [c["case_id"] for c in train_items],
        "validation_cases": [c["case_id"] for c in val_cases],
        "added_lesion_fraction": stream.n_added / max(1, stream.n_items),
        "patches_per_step": stream.n_base + stream.n_slots,
        "validation_curve": [list(p) for p in log.curve],
        "validation_dice": log.best_dice, "best_iteration": log.best_iteration,
        "stopped_at": log.stopped_at, "cases": per_case,
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "train_seconds": round(t1 - t0, 2), "test_seconds": round(time.perf_counter() - t1, 2),
    }
    if post:
        result["cases_postprocessed"] = post
    return result, examples


def synthetic_pool(generator: Any, settings: BenchmarkSettings, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic patches for arm 3a, fitted to the training patch size (model space)."""
    from medgan.augment import SyntheticLesionDataset

    per_step = int(settings.batch_size) + int(settings.lesion_slots or 0)
    n = min(MAX_SYNTHETIC_POOL,
            max(1, math.ceil(settings.iterations * per_step * settings.ratio)))
    dataset = SyntheticLesionDataset(generator, num_samples=n, seed=seed, units="model")
    size = int(settings.patch_size)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([_fit_patch(torch.as_tensor(i["image"]).float(), size, BACKGROUND)
                          for i in items])
    labels = torch.stack([_fit_patch((torch.as_tensor(i["label"]) > 0).float(), size, 0.0)
                          for i in items])
    return images, labels
