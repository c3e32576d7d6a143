"""Segmentation inference: seconds per scan of the segmentation benchmark's 2D sliding-window
inference, the 0.1 path against the slice-stack path, at identical predictions.

Every configuration segments the whole scan the way ``segment_volume`` does (the body's
bounding box, every axial slice of it, 64 x 64 windows with Gaussian blending, threshold at
0) with the full-size ``BenchmarkSettings()`` UNet (untrained, seeded, eval mode):

* ``reference``: MONAI's ``sliding_window_inference`` on groups of 32 slices (the 0.1 path);
* ``stack``: ``sliding_window_slices(skip_constant=False)``;
* ``stack+skip``: ``sliding_window_slices(skip_constant=True)`` (single-valued windows once);
* ``stack+skip, 2 threads``: the same under ``torch_threads(2)`` (with >= 2 usable CPUs).

The configurations alternate within each repeat, in an order rotated from repeat to repeat;
every run's logits are compared with the reference's (``torch.equal``), and its binary
prediction too.

    python benchmarks/bench_inference.py [--quick] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
GROUP = 32  # slices per group, as segment_volume
PHANTOM_SHAPE = {"quick": (96, 96, 12), "full": (240, 240, 155)}


# ---- scans: (C, X, Y, Z) in [-1, 1], background -1 ----
def brats_scan(root: Path) -> Any:
    """The first BraTS case's FLAIR (z-scored inside the brain): clip(z, -5, 5) / 5 inside the
    brain mask, -1 outside."""
    import nibabel as nib
    import numpy as np
    import torch

    case = sorted(p for p in root.iterdir() if (p / "flair.nii.gz").is_file())[0]
    flair = nib.load(case / "flair.nii.gz").get_fdata(dtype=np.float32)
    brain = nib.load(case / "brainmask.nii.gz").get_fdata(dtype=np.float32) > 0
    image = np.where(brain, np.clip(flair, -5.0, 5.0) / 5.0, -1.0).astype(np.float32)
    return case.name, torch.from_numpy(image)[None]


def lidc_scan(root: Path) -> Any:
    """The LIDC crop with the most slices (the first of ties), 8-bit -> [-1, 1]."""
    import nibabel as nib
    import numpy as np
    import torch

    files = sorted((root / "imagesTr").glob("*.nii.gz"))
    best = max(files, key=lambda f: (nib.load(f).shape[2], -files.index(f)))
    image = nib.load(best).get_fdata(dtype=np.float32) / 127.5 - 1.0
    return best.name.split(".")[0], torch.from_numpy(image.astype(np.float32))[None]


def phantom(shape: tuple[int, int, int], seed: int = 0) -> Any:
    """Ellipsoidal body of noisy tissue in a -1 background, empty slices above and below (a
    sixth of the slices each): the body's cross-section shrinks towards its ends, as a head's."""
    import torch

    g = torch.Generator().manual_seed(seed)
    nx, ny, nz = shape
    x = torch.linspace(-1, 1, nx)[:, None, None]
    y = torch.linspace(-1, 1, ny)[None, :, None]
    z = torch.linspace(-1, 1, nz)[None, None, :]
    body = (x / 0.8) ** 2 + (y / 0.65) ** 2 + (z / 0.67) ** 2 < 1
    tissue = (torch.rand(shape, generator=g) * 0.6 - 0.3
              + 0.3 * torch.sin(8 * x) * torch.cos(6 * y))
    image = torch.where(body, tissue.clamp(-0.95, 1.0), torch.tensor(-1.0))
    return f"phantom {nx}x{ny}x{nz}", image[None].float()


def load_scans(quick: bool) -> list[dict[str, Any]]:
    """(a) BraTS and (b) LIDC when ``../shared/data`` has them, (c) always the phantom."""
    scans = []
    if not quick:
        for source, folder, loader in (("brats2015", "brats2015", brats_scan),
                                       ("lidc_nodules", "lidc_nodules", lidc_scan)):
            if (SHARED / folder).is_dir():
                name, image = loader(SHARED / folder)
                scans.append({"source": source, "name": name, "image": image})
            else:
                print(f"[inference] {SHARED / folder} absent; skipped", file=sys.stderr)
    name, image = phantom(PHANTOM_SHAPE["quick" if quick else "full"])
    scans.append({"source": "phantom", "name": name, "image": image})
    return scans


# ---- the configurations ----
def configurations() -> list[str]:
    names = ["reference", "stack", "stack+skip"]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (usable or 1) >= 2:
        names.append("stack+skip, 2 threads")
    return names


def _infer(config: str, net: Any, crop: Any, settings: Any) -> Any:
    """Logits ``(Z, 1, X, Y)`` of the crop's slices ``(Z, C, X, Y)`` under ``config``."""
    import torch
    from monai.inferers import sliding_window_inference

    from medgan.evaluation.segmentation_run import BACKGROUND
    from medgan.evaluation.sliding_window import sliding_window_slices
    from medgan.threads import torch_threads

    patch, cpu = 64 if settings.patch_size is None else settings.patch_size, torch.device("cpu")
    if config == "reference":
        with torch.no_grad(), torch_threads(1):
            return torch.cat([
                sliding_window_inference(crop[z:z + GROUP], (patch,) * 2, settings.sw_batch_size,
                                         net, overlap=settings.sw_overlap, mode="gaussian",
                                         cval=BACKGROUND)
                for z in range(0, len(crop), GROUP)])
    threads = 2 if config.endswith("2 threads") else 1
    with torch_threads(threads):
        return sliding_window_slices(net, crop, patch, settings.sw_batch_size,
                                     settings.sw_overlap, BACKGROUND, cpu, group=GROUP,
                                     skip_constant="skip" in config)


def body_box_v01(image: Any, margin: int = 4) -> tuple[slice, ...]:
    """medgan 0.1's ``body_box``, verbatim (the reference path's)."""
    import torch

    from medgan.evaluation.segmentation_run import BACKGROUND

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


def segment(config: str, net: Any, image: Any, settings: Any) -> tuple[Any, Any]:
    """Whole-scan inference as ``segment_volume`` runs it: (crop logits, binary ``(X, Y, Z)``);
    the reference with 0.1's ``body_box``, the others with medgan's."""
    import numpy as np

    from medgan.evaluation.segmentation_run import body_box

    out = np.zeros(image.shape[1:], dtype=bool)
    box = body_box_v01(image) if config == "reference" else body_box(image)
    crop = image[(slice(None), *box)].permute(3, 0, 1, 2)  # (Z, C, X, Y)
    logits = _infer(config, net, crop, settings)
    out[box] = (logits[:, 0] > 0).permute(1, 2, 0).numpy()
    return logits, out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def measure_scan(scan: dict[str, Any], net: Any, settings: Any, repeats: int,
                 configs: list[str]) -> dict[str, Any]:
    """Seconds per scan of every configuration (interleaved, rotated), with the equality checks
    against the reference logits of an untimed first run (which also warms the kernels up)."""
    import numpy as np
    import torch

    from medgan.evaluation.segmentation_run import body_box, segment_volume

    image = scan["image"]
    box = body_box(image)
    if box != body_box_v01(image):
        raise AssertionError(f"{scan['name']}: body_box differs from 0.1's")
    ref_logits, ref_pred = segment("reference", net, image, settings)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(repeats):
        for config in configs[r % len(configs):] + configs[:r % len(configs)]:
            load = os.getloadavg()[0]
            (logits, pred), wall, cpu = _timed(lambda c=config: segment(c, net, image, settings))
            runs[config].append({
                "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4), "load_average": load,
                "logits_equal": bool(torch.equal(logits, ref_logits)),
                "predictions_equal": bool(np.array_equal(pred, ref_pred))})
            print(f"[inference] {scan['name']} {config} repeat {r}: {runs[config][-1]}",
                  file=sys.stderr)
    library = segment_volume(net, image, 2, 64 if settings.patch_size is None
                             else settings.patch_size, settings, torch.device("cpu"), threads=1)
    ref_median = _median([x["seconds"] for x in runs["reference"]])
    summary = {}
    for config, rs in runs.items():
        med = _median([x["seconds"] for x in rs])
        summary[config] = {
            "seconds_median": med, "seconds": [x["seconds"] for x in rs],
            "cpu_seconds_median": _median([x["cpu_seconds"] for x in rs]),
            "speedup_vs_reference": ref_median / med,
            "speedup_per_repeat": [ref["seconds"] / x["seconds"]
                                   for ref, x in zip(runs["reference"], rs, strict=True)],
            "logits_equal": all(x["logits_equal"] for x in rs),
            "predictions_equal": all(x["predictions_equal"] for x in rs)}
    crop_shape = [int(s.stop - s.start) for s in box]
    return {"source": scan["source"], "name": scan["name"], "shape": list(image.shape[1:]),
            "body_box": crop_shape, "foreground_voxels": int(ref_pred.sum()),
            "repeats": repeats, "runs": runs, "configs": summary,
            "segment_volume_equal": bool(np.array_equal(library, ref_pred)),
            "identical": all(s["logits_equal"] and s["predictions_equal"]
                             for s in summary.values()) and bool(np.array_equal(library,
                                                                                 ref_pred))}


def measure(quick: bool, repeats: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every scan of :func:`load_scans` under every configuration (module docstring)."""
    import torch

    from medgan.evaluation.segmentation_run import BenchmarkSettings, build_unet

    settings = BenchmarkSettings()
    repeats = repeats or (1 if quick else 5)
    torch.manual_seed(seed)
    net = build_unet(2, 1, settings).eval()
    configs = configurations()
    out = []
    for scan in load_scans(quick):
        result = measure_scan(scan, net, settings, repeats, configs)
        result.update(seed=seed, channels=list(settings.channels), patch_size=64,
                      sw_batch_size=settings.sw_batch_size, overlap=settings.sw_overlap,
                      group=GROUP, wait_policy=os.environ.get("OMP_WAIT_POLICY"))
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from medgan.threads import prefer_passive_wait

    prefer_passive_wait()  # before torch loads, as every medgan command
    result = {"load_average": list(os.getloadavg()),
              "scans": measure(args.quick, args.repeats)}
    result["load_average_end"] = list(os.getloadavg())
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    for scan in result["scans"]:
        for config, s in scan["configs"].items():
            print(f"{scan['name']}: {config} {s['seconds_median']:.2f} s "
                  f"x{s['speedup_vs_reference']:.2f} identical {s['logits_equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
