"""CarveMix-style copy-paste of real lesions (a non-GAN augmentation baseline).

CarveMix (Zhang et al., MICCAI 2021) carves a region around a real lesion, bounded by a level
set of the lesion's signed distance map, and pastes image and label of that region into another
training image. Lesions are cut from given cases only (:func:`build_lesion_snippets`; the
segmentation benchmark passes the *training* cases of the current regime), and never pasted into
an image of the case they came from.

* ``distance`` of a snippet is the signed Euclidean distance to the lesion border in voxels
  (negative inside the lesion); the carved region is ``distance <= lam`` with ``lam`` drawn from
  ``lam_range``: ``lam > 0`` adds a rim of surrounding tissue, ``lam < 0`` keeps the core only.
* Inside the region the source image and source label replace the target's (CarveMix's rule);
  outside, the target is unchanged.
* Placement stays inside the body: every pasted lesion voxel must land on an allowed voxel (a
  given ``foreground`` mask, else the body = image above the background value in any channel);
  up to ``num_attempts`` random anchors are tried, and when none fits the data are unchanged.
  The carved rim is clipped to the target's body, so no source tissue lands in the air.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy.ndimage import distance_transform_edt
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from medgan.data.intensity import BACKGROUND
from medgan.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionSnippet:
    """One real lesion with its surroundings, cut from a training case.

    ``image`` (C, *B) model space, ``label`` (1, *B) uint8 source lesion mask, ``distance``
    (*B) signed distance in voxels to the border of this lesion component (negative inside),
    ``center`` the component's centroid in snippet voxel coordinates.
    """

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    distance: np.ndarray
    center: tuple[int, ...]


def _signed_distance(component: np.ndarray) -> np.ndarray:
    inside = distance_transform_edt(component)
    outside = distance_transform_edt(~component)
    return (outside - inside).astype(np.float32)


def _snippet(case_id: str, image: torch.Tensor, label: torch.Tensor, component: np.ndarray,
             bbox: Sequence[int], margin: int) -> LesionSnippet:
    nd = component.ndim
    lo = [max(0, bbox[i] - margin) for i in range(nd)]
    hi = [min(component.shape[i], bbox[nd + i] + margin) for i in range(nd)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    comp = component[box]
    center = tuple(int(round(c)) for c in np.argwhere(comp).mean(0))
    return LesionSnippet(case_id, image[(slice(None), *box)].clone(),
                         label[(slice(None), *box)].clone(), _signed_distance(comp), center)


def build_lesion_snippets(
    cases: Sequence[Mapping[str, Any]], spatial_dims: int, margin_voxels: int = 6,
    max_per_case: int = 16, min_voxels: int = 5,
) -> list[LesionSnippet]:
    """Cut every case's lesions (at most ``max_per_case``) with ``margin_voxels`` of context.

    ``cases`` are dicts with ``image`` (C, X, Y, Z), ``label`` (1, X, Y, Z) and ``case_id``;
    pass training cases only. 3D: connected lesion components; 2D: the components of each axial
    slice (spread evenly over the slices). Components under ``min_voxels`` are skipped.
    """
    snippets: list[LesionSnippet] = []
    for case in cases:
        image = torch.as_tensor(case["image"], dtype=torch.float32)
        label = torch.as_tensor(case["label"]).to(torch.uint8)
        mask = label[0].numpy().astype(bool)
        found: list[LesionSnippet] = []
        if spatial_dims == 3:
            cc = connected_components(mask, connectivity=3)
            regions = sorted(regionprops(cc), key=lambda r: -r.area)[:max_per_case]
            found = [_snippet(case["case_id"], image, label, cc == r.label, r.bbox, margin_voxels)
                     for r in regions if r.area >= min_voxels]
        else:
            for z in np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(0)):
                cc = connected_components(mask[..., z], connectivity=2)
                for r in regionprops(cc):
                    if r.area >= min_voxels:
                        found.append(_snippet(case["case_id"], image[..., z], label[..., z],
                                              cc == r.label, r.bbox, margin_voxels))
            if len(found) > max_per_case:
                keep = np.linspace(0, len(found) - 1, max_per_case).round().astype(int)
                found = [found[i] for i in keep]
        snippets += found
    return snippets


def carve_mix(image: torch.Tensor, label: torch.Tensor, snippet: LesionSnippet, lam: float,
              center: Sequence[int], inside: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the region ``snippet.distance <= lam`` with the lesion centre at ``center``.

    ``image`` (C, *P) and ``label`` (1, *P) of the target; returns new tensors (inputs are not
    modified). Parts of the snippet falling outside the target are dropped, and so are those
    outside ``inside`` (bool ``(*P)``, e.g. the body), when given.
    """
    if snippet.image.shape[0] != image.shape[0]:
        raise ConfigError(f"CarveMix source has {snippet.image.shape[0]} image channel(s), the "
                          f"target {image.shape[0]}")
    out_img, out_lab = image.clone(), label.clone()
    region = torch.from_numpy(snippet.distance <= lam)
    tgt, src = [slice(None)], [slice(None)]
    for axis, (size, c_t, c_s) in enumerate(zip(image.shape[1:], center, snippet.center,
                                                strict=True)):
        start = int(c_t) - int(c_s)  # target coordinate of the snippet's first voxel
        a, b = max(0, start), min(int(size), start + snippet.distance.shape[axis])
        if b <= a:
            return out_img, out_lab
        tgt.append(slice(a, b))
        src.append(slice(a - start, b - start))
    reg = region[tuple(src[1:])]
    if inside is not None:
        reg = reg & torch.as_tensor(inside, dtype=torch.bool)[tuple(tgt[1:])]
    out_img[tuple(tgt)] = torch.where(reg, snippet.image[tuple(src)].to(image.dtype),
                                      image[tuple(tgt)])
    out_lab[tuple(tgt)] = torch.where(reg, snippet.label[tuple(src)].to(label.dtype),
                                      label[tuple(tgt)])
    return out_img, out_lab


def _fits(snippet: LesionSnippet, lam: float, anchor: Sequence[int], allowed: np.ndarray) -> bool:
    """Whether every lesion voxel pasted with its centre at ``anchor`` lands on ``allowed``."""
    lesion = (snippet.label[0].numpy() > 0) & (snippet.distance <= lam)
    coords = np.argwhere(lesion) + (np.asarray(anchor) - np.asarray(snippet.center))
    if len(coords) == 0:
        return False
    if (coords < 0).any() or (coords >= np.asarray(allowed.shape)).any():
        return False
    return bool(allowed[tuple(coords.T)].all())


class RandCarveMixd(Randomizable, MapTransform):
    """With probability ``prob``, paste a carved real lesion from another training case.

    Args:
        keys: the image and label keys, in that order.
        snippets: lesions of the training cases (:func:`build_lesion_snippets`).
        prob: probability of pasting into a given item.
        lam_range: range of the carving level ``lam`` in voxels (see module docstring).
        case_key: item key holding its case id; snippets of that case are never used.
        foreground_key: item key of a mask ``(1, *S)`` where lesion voxels may go; None = the
            body (any voxel above the background value).
        num_attempts: random anchors tried before giving up (data unchanged).
    """

    def __init__(self, keys: KeysCollection, snippets: Sequence[LesionSnippet], prob: float = 0.5,
                 lam_range: tuple[float, float] = (-1.0, 4.0), case_key: str = "case_id",
                 foreground_key: str | None = None, num_attempts: int = 20) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 2:
            raise ConfigError(f"RandCarveMixd keys must be (image, label), not {self.keys}")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"Probability must be a number in [0, 1], not {prob}")
        if num_attempts < 1:
            raise ConfigError(f"num_attempts must be a positive integer, not {num_attempts}")
        self.snippets, self.prob, self.lam_range = list(snippets), prob, lam_range
        self.case_key, self.foreground_key = case_key, foreground_key
        self.num_attempts = int(num_attempts)
        self._do = False
        self._index, self._lam = 0, 0.0
        self._anchors = np.zeros(self.num_attempts)

    def randomize(self, data: Any = None) -> None:
        """Draw: apply or not, which snippet (by rank among allowed ones), ``lam``, anchors."""
        self._do = self.R.rand() < self.prob
        self._index = int(self.R.randint(1 << 30))
        self._lam = float(self.R.uniform(*self.lam_range))
        self._anchors = self.R.random_sample(self.num_attempts)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        own = d.get(self.case_key)
        allowed_snippets = [s for s in self.snippets if s.case_id != own]
        if not self._do or not allowed_snippets:
            return d
        img_key, lab_key = self.keys
        image = torch.as_tensor(d[img_key])
        snippet = allowed_snippets[self._index % len(allowed_snippets)]
        body = (image.amax(0) > BACKGROUND + 1e-3).numpy()
        allowed = body if self.foreground_key is None else (
            torch.as_tensor(d[self.foreground_key]).reshape(image.shape[1:]).numpy() > 0)
        flat = np.flatnonzero(allowed)
        if flat.size == 0:
            return d
        picks = flat[np.minimum((self._anchors * flat.size).astype(int), flat.size - 1)]
        for anchor in zip(*np.unravel_index(picks, allowed.shape), strict=True):
            if _fits(snippet, self._lam, anchor, allowed):
                d[img_key], d[lab_key] = carve_mix(image, torch.as_tensor(d[lab_key]), snippet,
                                                   self._lam, anchor, torch.from_numpy(body))
                return d
        return d
