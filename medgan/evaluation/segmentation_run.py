"""One run of the segmentation benchmark: train a MONAI UNet under one arm and seed, then
segment every held-out scan with sliding-window inference and score it.

Training is nnU-Net-like on a CPU budget: random patches, Dice + cross-entropy loss, Adam.
2D networks are trained on axial-slice patches (a ``(P, P, 1)`` crop squeezed to ``(P, P)``) and
segment a test scan slice by slice; 3D networks use ``(P, P, P)`` patches.

Patches: :mod:`medgan.evaluation.segmentation_patches` (the same base patches in every arm,
lesion-centred slots, an exact realised share of added lesions).

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

from medgan.augment import SyntheticLesionDataset
from medgan.evaluation.arms import ARMS, GAN_ARMS, REFERENCE_ARM  # noqa: F401 (re-exported)
from medgan.evaluation.metrics import case_metrics, dice_score, remove_small_components
from medgan.evaluation.segmentation_patches import (  # noqa: F401 (re-exported)
    BACKGROUND,
    PatchStream,
    augmentation,
    context_roi,
    fit_patch,
    prepare_training_case,
)
from medgan.threads import torch_threads

MAX_SYNTHETIC_POOL = 4096
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
    dropping predicted components smaller than that; ``placement_range`` ``(low, high)`` in
    model units [-1, 1] restricts where every lesion-adding arm may put a lesion to body voxels
    whose first channel lies in that range (e.g. lung parenchyma), None = the whole body.
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
    placement_range: tuple[float, float] | None = None

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
    image = torch.as_tensor(image)
    top = image[0] if image.shape[0] == 1 else image.amax(0)  # amax over 1 channel: a copy
    body = (top > BACKGROUND + 1e-3).cpu().numpy()  # numpy's any: 10x faster than torch's here
    if not body.any():
        return tuple(slice(0, 0) for _ in body.shape)
    box = []
    for axis in range(3):
        idx = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = margin if axis < 2 else 0
        box.append(slice(max(0, int(idx[0]) - pad), min(body.shape[axis], int(idx[-1]) + 1 + pad)))
    return tuple(box)


@torch.no_grad()
def segment_volume(net: torch.nn.Module, image: torch.Tensor, spatial_dims: int, patch_size: int,
                   settings: BenchmarkSettings, device: torch.device,
                   slices_per_batch: int = 32, threads: int | None = None) -> np.ndarray:
    """Binary prediction ``(X, Y, Z)`` for a whole scan ``(C, X, Y, Z)``.

    Sliding-window inference (Gaussian blending) over the body's bounding box; voxels outside
    it are background. 2D networks segment every axial slice of the box, the windows of
    ``slices_per_batch`` slices at a time (:func:`sliding_window_slices`; the same logits as
    MONAI's ``sliding_window_inference`` on those slices). ``threads``: torch CPU threads
    for this call (None = the current setting); the logits do not depend on it.
    """
    with torch_threads(threads):
        return _segment_volume(net, image, spatial_dims, patch_size, settings, device,
                               slices_per_batch)


def _segment_volume(net: torch.nn.Module, image: torch.Tensor, spatial_dims: int,
                    patch_size: int, settings: BenchmarkSettings, device: torch.device,
                    slices_per_batch: int) -> np.ndarray:
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


def _score(net: torch.nn.Module, cases: Sequence[Mapping[str, Any]], spatial_dims: int,
           settings: BenchmarkSettings, device: torch.device,
           example_slices: Sequence[tuple[str, int]] = (), threads: int | None = None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Per-case metrics (raw; post-processed when ``min_component_voxels`` > 0) and the
    predicted example slices (raw)."""
    raw, post, examples = [], [], {}
    for case in cases:
        pred = segment_volume(net, case["image"], spatial_dims, int(settings.patch_size),
                              settings, device, threads=threads)
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
                    settings: BenchmarkSettings, device: torch.device,
                    threads: int | None = None) -> float:
    """Mean raw Dice of ``net`` on whole validation scans."""
    scores = []
    for case in cases:
        pred = segment_volume(net, case["image"], spatial_dims, int(settings.patch_size),
                              settings, device, threads=threads)
        scores.append(dice_score(pred, torch.as_tensor(case["label"])[0].numpy() > 0))
    return float(np.mean(scores))


def run_one(
    arm: str, seed: int, train_items: Sequence[Item], test_cases: Sequence[Mapping[str, Any]],
    spatial_dims: int, settings: BenchmarkSettings, device: torch.device,
    make_arm: Callable[[str, int, BenchmarkSettings], tuple[Any, Any]],
    example_slices: Sequence[tuple[str, int]],
    val_cases: Sequence[Mapping[str, Any]] = (), inference_threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train under ``arm`` with ``seed`` (at ``settings.ratio``); score every test case.

    ``make_arm(arm, seed, settings)`` returns ``(arm_transform, synthetic_pool)``; with
    ``val_cases`` training follows the validation rule (:func:`train_unet`). Returns the
    JSON-able result and the predicted axial slices named in ``example_slices``
    (``"<case_id>/<z>"`` -> ``(X, Y)`` bool). ``inference_threads``: torch threads while
    segmenting validation and test scans (None = the training setting).
    """
    arm_transform, synthetic = make_arm(arm, seed, settings)
    stream = PatchStream(train_items, spatial_dims, int(settings.patch_size), settings, seed,
                         augment=arm != "real", arm_transform=arm_transform,
                         synthetic=synthetic)
    torch.manual_seed(seed)
    in_channels = int(train_items[0]["image"].shape[0])
    net = build_unet(spatial_dims, in_channels, settings).to(device)
    validate = (None if not val_cases else
                (lambda: validation_dice(net, val_cases, spatial_dims, settings, device,
                                         inference_threads)))
    t0 = time.perf_counter()
    log = train_unet(net, stream, settings, device, validate)
    t1 = time.perf_counter()
    per_case, post, examples = _score(net, test_cases, spatial_dims, settings, device,
                                      example_slices, inference_threads)
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
    per_step = int(settings.batch_size) + int(settings.lesion_slots or 0)
    n = min(MAX_SYNTHETIC_POOL,
            max(1, math.ceil(settings.iterations * per_step * settings.ratio)))
    dataset = SyntheticLesionDataset(generator, num_samples=n, seed=seed, units="model")
    size = int(settings.patch_size)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([fit_patch(torch.as_tensor(i["image"]).float(), size, BACKGROUND)
                          for i in items])
    labels = torch.stack([fit_patch((torch.as_tensor(i["label"]) > 0).float(), size, 0.0)
                          for i in items])
    return images, labels
