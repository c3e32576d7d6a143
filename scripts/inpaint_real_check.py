"""Short real-data check of the lesion inpainter (issue 14), 2D, on the CPU.

``--dataset brats``: axial 64x64 FLAIR patches of the first five BraTS cases in ../shared/data
(in-plane 2x2 block-averaged to 2 mm, so a whole tumour and its surroundings fit a patch); the
sixth case is held out. ``--dataset lidc``: 64x64 patches around the LIDC-IDRI nodules (8-bit
lung window, nominal 1 mm); the last 50 patients are held out.

Trains :func:`medgan.training.inpaint_step.train_inpainter`, then on held-out data writes

* ``<out>/inpaint_<dataset>_restore.png``: erase-and-restore of real lesions and of healthy
  blobs (context | inpainted | real | mask);
* ``<out>/inpaint_<dataset>_insert.png``: new lesions inserted by
  :class:`medgan.augment.inpaint.RandLesionInpaint` (before | after, label outlined);

and prints the L1 restore error inside the erase region, against a baseline that fills it with
the mean of the context ring. Run with ``OMP_NUM_THREADS=1``. Only the PNGs are written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medgan.augment.inpaint import RandLesionInpaint
from medgan.augment.masks import RealMaskSource
from medgan.augment.placement import PlacementSettings
from medgan.data.intensity import IntensityMapping
from medgan.training.inpaint_step import (
    InpaintSettings,
    build_conditional_batch,
    inpaint_grid,
    restore_l1,
    train_inpainter,
)
from medgan.visualize import save_grid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "brats2015"
MAPPING = IntensityMapping("none", (-4.0,), (5.0,))  # z-scores inside the brain -> [-1, 1]
LIDC_MAPPING = IntensityMapping("none", (0.0,), (255.0,))  # 8-bit lung window
P = 64


def load_case(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FLAIR z-scores (outside the brain at the mapping's low end), label > 0, brain mask; all
    block-averaged 2x2 in-plane -> (120, 120, 155)."""
    flair = nib.load(folder / "flair.nii.gz").get_fdata(dtype=np.float32)
    lesion = nib.load(folder / "label.nii.gz").get_fdata(dtype=np.float32) > 0
    brain = nib.load(folder / "brainmask.nii.gz").get_fdata(dtype=np.float32) > 0
    flair = np.where(brain, flair, MAPPING.low[0])

    def pool(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, a.shape[2]).mean((1, 3))

    return pool(flair), pool(lesion.astype(np.float32)) > 0.5, pool(brain.astype(np.float32)) > 0.5


def patches(flair: np.ndarray, lesion: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
            healthy_per_case: int = 40) -> torch.Tensor:
    """Model-space pairs (N, 2, 64, 64): lesion-centred slices (tumour bbox <= 44 px) and
    lesion-free brain patches."""
    out = []
    for z in range(flair.shape[2]):
        m = lesion[..., z]
        if m.sum() < 20:
            continue
        idx = np.argwhere(m)
        if (idx.max(0) - idx.min(0)).max() > 44:
            continue
        c = (idx.min(0) + idx.max(0)) // 2 + rng.integers(-8, 9, 2)
        s = [int(np.clip(v - P // 2, 0, n - P)) for v, n in zip(c, m.shape, strict=True)]
        out.append((flair[s[0]:s[0] + P, s[1]:s[1] + P, z], m[s[0]:s[0] + P, s[1]:s[1] + P]))
    free = [z for z in range(flair.shape[2])
            if not lesion[..., z].any() and brain[..., z].sum() > 1200]
    for z in rng.choice(free, min(healthy_per_case, len(free)), replace=False) if free else []:
        idx = np.argwhere(brain[..., z])
        c = idx[rng.integers(len(idx))]
        s = [int(np.clip(v - P // 2, 0, n - P)) for v, n in zip(c, brain.shape[:2], strict=True)]
        out.append((flair[s[0]:s[0] + P, s[1]:s[1] + P, z], np.zeros((P, P), bool)))
    img = torch.from_numpy(np.stack([o[0] for o in out]))[:, None]
    msk = torch.from_numpy(np.stack([o[1] for o in out]))[:, None].float()
    return torch.cat([MAPPING.forward(img.transpose(0, 1)).transpose(0, 1), msk * 2 - 1], 1)


def ring_mean_l1(pairs: torch.Tensor, settings: InpaintSettings, seed: int) -> tuple[float, float]:
    """Baseline: fill E with the mean of its context ring; returns (baseline L1, n voxels)."""
    b = build_conditional_batch(pairs, settings, np.random.default_rng(seed))
    ring = torch.nn.functional.max_pool2d(b.erase, 7, 1, 3) - b.erase
    mean = (b.x * ring).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp_min(1)
    fill = mean.reshape(-1, 1, 1, 1).expand_as(b.x)
    return float(restore_l1(fill, b.x, b.erase)), float(b.erase.sum())


def brats_data(rng: np.random.Generator) -> dict:
    cases = sorted(p for p in DATA.iterdir() if p.is_dir())
    train = torch.cat([patches(*load_case(c), rng) for c in cases[:5]])
    flair, lesion, brain = load_case(cases[5])
    held = patches(flair, lesion, brain, rng)
    free = [z for z in range(flair.shape[2])
            if not lesion[..., z].any() and brain[..., z].sum() > 1800]
    items = [(flair[None, ..., z], np.zeros((1, *flair.shape[:2]), np.uint8), brain[None, ..., z])
             for z in free[:: max(1, len(free) // 12)]]
    return {"train": train, "held": held, "items": items, "mapping": MAPPING,
            "spacing": (2.0, 2.0), "held_name": cases[5].name,
            "settings": {"blob_radius": (4.0, 12.0), "tissue_threshold": -0.95}}


def lidc_patches(files: list[Path], rng: np.random.Generator) -> torch.Tensor:
    """Model-space pairs (N, 2, 64, 64) around the nodule of every slice that has >= 10 px."""
    out = []
    for f in files:
        img = nib.load(f).get_fdata(dtype=np.float32)
        lab = nib.load(str(f).replace("imagesTr", "labelsTr")).get_fdata(dtype=np.float32) > 0
        for z in range(img.shape[2]):
            m = lab[..., z]
            if m.sum() < 10:
                continue
            idx = np.argwhere(m)
            c = (idx.min(0) + idx.max(0)) // 2 + rng.integers(-8, 9, 2)
            s = [int(np.clip(v - P // 2, 0, n - P)) for v, n in zip(c, m.shape, strict=True)]
            out.append((img[s[0]:s[0] + P, s[1]:s[1] + P, z], m[s[0]:s[0] + P, s[1]:s[1] + P]))
    img = torch.from_numpy(np.stack([o[0] for o in out]))[:, None]
    msk = torch.from_numpy(np.stack([o[1] for o in out]))[:, None].float()
    return torch.cat([LIDC_MAPPING.forward(img.transpose(0, 1)).transpose(0, 1), msk * 2 - 1], 1)


def lidc_data(rng: np.random.Generator) -> dict:
    from scipy.ndimage import binary_closing, binary_fill_holes

    files = sorted((SHARED / "lidc_nodules" / "imagesTr").glob("*.nii.gz"))
    train, held = lidc_patches(files[:-50], rng), lidc_patches(files[-50:], rng)
    items = []
    for f in files[-50::6]:  # one slice (the largest nodule section) of every 6th held-out case
        img = nib.load(f).get_fdata(dtype=np.float32)
        lab = nib.load(str(f).replace("imagesTr", "labelsTr")).get_fdata(dtype=np.float32) > 0
        z = int(lab.sum((0, 1)).argmax())
        lung = binary_fill_holes(binary_closing(img[..., z] < 60, iterations=2)) & ~lab[..., z]
        items.append((img[None, ..., z], lab[None, ..., z].astype(np.uint8), lung[None]))
    return {"train": train, "held": held, "items": items, "mapping": LIDC_MAPPING,
            "spacing": (1.0, 1.0), "held_name": f"the last 50 patients ({files[-50].name[:14]} on)",
            "settings": {"blob_radius": (3.0, 8.0), "tissue_threshold": None}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=("brats", "lidc"), default="brats")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    data = (brats_data if args.dataset == "brats" else lidc_data)(rng)
    train, held = data["train"], data["held"]
    print(f"train patches {len(train)} ({int((train[:, 1] > 0).flatten(1).any(1).sum())} with "
          f"lesion), held-out patches {len(held)} from {data['held_name']}", flush=True)
    settings = InpaintSettings(spatial_dims=2, patch_size=P, ngf=32, ndf=32, batch_size=16,
                               erase_margin=3, **data["settings"])
    t0 = time.time()
    history: list[dict[str, float]] = []
    gen = train_inpainter(train, settings, args.steps, seed=args.seed, history=history)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s", flush=True)
    with torch.no_grad():
        b = build_conditional_batch(held, settings, np.random.default_rng(123))
        noise = gen.sample_noise(len(held), torch.Generator().manual_seed(1))
        l1 = float(restore_l1(gen(b.x, b.mask, b.erase, noise), b.x, b.erase))
    base, _ = ring_mean_l1(held, settings, 123)
    first, last = np.mean([h["loss_l1"] for h in history[:50]]), np.mean(
        [h["loss_l1"] for h in history[-50:]])
    print(json.dumps({"train_l1_first50": round(first, 4), "train_l1_last50": round(last, 4),
                      "heldout_l1": round(l1, 4), "heldout_l1_ring_mean_baseline": round(base, 4)}))
    lesion_rows = torch.nonzero((held[:, 1] > 0).flatten(1).any(1)).flatten()
    pick = lesion_rows[torch.linspace(0, len(lesion_rows) - 1, 6).long()]
    free_rows = torch.nonzero(~(held[:, 1] > 0).flatten(1).any(1)).flatten()[:2]
    healthy = InpaintSettings(**{**settings.__dict__, "empty_fraction": 1.0})
    lesion_only = InpaintSettings(**{**settings.__dict__, "empty_fraction": 0.0})
    grid = torch.cat([inpaint_grid(gen, held[pick], lesion_only, seed=5),
                      inpaint_grid(gen, held[pick[:2] if len(free_rows) < 2 else free_rows],
                                   healthy, seed=6)])
    save_grid(grid, args.out / f"inpaint_{args.dataset}_restore.png", nrow=4)
    insert_demo(gen, train, data, args.out / f"inpaint_{args.dataset}_insert.png")


def insert_demo(gen, train: torch.Tensor, data: dict, path: Path) -> None:
    """RandLesionInpaint on held-out slices (before | after), region = brain / lung mask."""
    source = RealMaskSource(train[:, 1] > 0, 2, spacing_mm=data["spacing"],
                            scale_range=(0.7, 1.2))
    t = RandLesionInpaint(gen, source, data["mapping"], prob=1.0,
                          placement=PlacementSettings(region="key", margin_mm=4.0),
                          spacing_mm=data["spacing"]).set_random_state(0)
    tiles = []
    for img, lab, region in data["items"]:
        out, new = t(img.copy(), lab, region_map=region)
        if (new == lab).all() or len(tiles) == 8:
            continue
        for im, m in ((img, lab), (out, new)):
            tiles.append(torch.cat([torch.as_tensor(data["mapping"].forward(im)).float(),
                                    torch.as_tensor(m).float() * 2 - 1])[None])
    print("insert skipped:", dict(t.skipped), "applied:", t.applied, flush=True)
    save_grid(torch.cat(tiles), path, nrow=2)


if __name__ == "__main__":
    main()
