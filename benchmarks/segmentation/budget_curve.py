"""Is the UNet budget long enough? Train one ``real+aug`` network of the LIDC 2D benchmark
(regime 10, seed 0, its 8 training patients) for ITERATIONS steps and print the mean Dice on
the first 20 test patients of the benchmark's split every 250 steps.

    python benchmarks/segmentation/budget_curve.py DATA_ROOT [ITERATIONS]

This looks at test patients, so use it only to size the budget, never to choose an arm or a
ratio. Output lines: ``iteration  training loss  Dice  seconds``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def main(data_root: Path, iterations: int = 3000) -> None:
    from monai.losses import DiceCELoss

    from medgan.config import load_config
    from medgan.data import load_case, load_datalist
    from medgan.evaluation.segmentation_run import (
        BenchmarkSettings,
        PatchStream,
        build_unet,
        context_roi,
        prepare_training_case,
        validation_dice,
    )
    from medgan.evaluation.splits import make_split

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "lidc_nodules_2d.yaml")
    datalist = load_datalist(data_root / "lidc_nodules" / "dataset.json")
    split = make_split([c["case_id"] for c in datalist], [5, 10], 1 / 3, 0, 0.2)
    wanted = set(split.regimes["10"]) | set(split.test[:20])
    cases = {}
    for case in datalist:
        if case["case_id"] in wanted:
            loaded = load_case(case, cfg)
            cases[case["case_id"]] = {
                "case_id": case["case_id"], "image": loaded["image"].as_tensor().float(),
                "label": loaded["label"].as_tensor().to(torch.uint8),
                "spacing_mm": (1.0, 1.0, 1.0)}
    settings = replace(BenchmarkSettings(), batch_size=8, lesion_slots=4, patch_size=64,
                       iterations=iterations)
    items = [prepare_training_case(cases[i], context_roi(2, 64)) for i in split.regimes["10"]]
    test = [cases[i] for i in split.test[:20]]
    stream = PatchStream(items, 2, 64, settings, seed=0, augment=True)
    torch.manual_seed(0)
    net = build_unet(2, 1, settings)
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate, weight_decay=1e-5)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    start = time.time()
    for it in range(1, iterations + 1):
        net.train()
        images, labels = stream.next()
        loss = loss_fn(net(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 250 == 0:
            dice = validation_dice(net, test, 2, settings, torch.device("cpu"))
            print(it, round(float(loss.detach()), 3), round(dice, 4), round(time.time() - start),
                  flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
