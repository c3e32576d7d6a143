"""Show what the lesion-adding arms of a segmentation benchmark feed the UNet.

    python benchmarks/segmentation/arm_patches.py OUT REGIME PNG [--arms A,B] [--n 8] [--seed 0]

Rebuilds the training patch stream of ``REGIME`` from the benchmark folder ``OUT`` (its
protocol: data, config, split, settings and the regime's recorded generator/inpainter), with
the same code the runs use, and draws the first ``n`` patches that received an added lesion in
each arm: the patch before (real crop) and after, with the added lesion outlined in red and
any real lesion in yellow. No augmentation is applied, so before and after differ only where
the arm wrote. Images are in model units [-1, 1], shown as grey levels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def added_patches(out: Path, regime: str, arm: str, n: int, seed: int
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(before, after, real_label, added_label)`` 2D arrays of ``n`` patches of ``arm``."""
    from medgan.config import config_from_dict
    from medgan.data import load_datalist
    from medgan.evaluation.arm_transforms import ArmFactory
    from medgan.evaluation.segmentation import load_cases
    from medgan.evaluation.segmentation_run import (
        BenchmarkSettings,
        PatchStream,
        context_roi,
        prepare_training_case,
    )
    from medgan.sampling import load_generator

    protocol = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    cfg = config_from_dict(protocol["config"])
    raw = dict(protocol["settings"])
    settings = BenchmarkSettings(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in raw.items()})
    ids = protocol["split"]["regimes"][regime]
    wanted = [{"image": str(c["image"]), "label": str(c["label"]), "case_id": c["case_id"]}
              for c in load_datalist(protocol["data"]) if c["case_id"] in ids]
    tmp = out / f".arm_patches_{regime}.json"
    tmp.write_text(json.dumps({"training": wanted}), encoding="utf-8")
    try:
        cases = load_cases(tmp, cfg, progress=False)
    finally:
        tmp.unlink()
    roi = context_roi(cfg.spatial_dims, int(settings.patch_size))
    items = [prepare_training_case(c, roi) for c in cases]
    nets: dict[str, Any] = {}
    for role in ("generators", "inpainters"):
        entry = (protocol.get(role) or {}).get(regime)
        nets[role] = load_generator(entry["checkpoint"], device="cpu") if entry else None
    factory = ArmFactory(nets["generators"], items, cfg.spatial_dims, nets["inpainters"],
                         cases[0]["spacing_mm"], protocol.get("inpaint_mask_source"))
    arm_settings = BenchmarkSettings(**{**settings.__dict__, "ratio": 0.2})
    transform, _ = factory(arm, seed, arm_settings)
    stream = PatchStream(items, cfg.spatial_dims, int(settings.patch_size), arm_settings, seed,
                         augment=False, arm_transform=transform)
    found = []
    for _ in range(200):
        contexts = [stream._context(stream.crop_base, stream.pick, stream.cases)
                    for _ in range(stream.n_base)]
        for ctx in contexts:
            changed = stream._with_lesion(ctx)
            if changed is None:
                continue
            before, after = stream._patch(ctx), stream._patch(changed)
            real = before["label"][0].numpy() > 0.5
            added = (after["label"][0].numpy() > 0.5) & ~real
            found.append((before["image"][0].numpy(), after["image"][0].numpy(), real, added))
            if len(found) == n:
                return found
    return found


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("regime")
    p.add_argument("png", type=Path)
    p.add_argument("--arms", default="real+aug+carvemix,real+aug+inpaint")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgan.visualize import save_figure

    arms = args.arms.split(",")
    rows = [(arm, added_patches(args.out, args.regime, arm, args.n, args.seed)) for arm in arms]
    fig, axes = plt.subplots(2 * len(arms), args.n, figsize=(1.4 * args.n, 2.9 * len(arms)),
                             dpi=110, squeeze=False)
    for r, (arm, patches) in enumerate(rows):
        for c in range(args.n):
            for k, title in enumerate(("before", "after")):
                ax = axes[2 * r + k, c]
                ax.axis("off")
                if c >= len(patches):
                    continue
                before, after, real, added = patches[c]
                ax.imshow((before if k == 0 else after).T, cmap="gray", vmin=-1, vmax=1,
                          origin="lower")
                if real.any():
                    ax.contour(real.T, levels=[0.5], colors="yellow", linewidths=0.6)
                if k == 1 and added.any():
                    ax.contour(added.T, levels=[0.5], colors="red", linewidths=0.7)
                if c == 0:
                    ax.set_title(f"{arm}: {title}", fontsize=7, loc="left")
    fig.tight_layout()
    return save_figure(fig, args.png)


if __name__ == "__main__":
    print(main())
