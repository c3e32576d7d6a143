"""Run under torchrun by test_distributed.py: medgan's CLI in every process, with a record.

    torchrun --standalone --nproc-per-node N dist_harness.py OUT CONFIG DATA [--train-only]

Runs, through ``medgan.cli.main`` exactly as ``torchrun -m medgan`` would: ``train`` to 4 steps
(OUT/full), ``train`` to 2 steps then ``--resume`` to 4 (OUT/part), ``sample`` 6 pairs from
OUT/full (OUT/synth), and ``train`` with ``train.sync_batchnorm`` on the CPU (OUT/syncbn,
refused). At the end of each training run every rank records what it trained (step, world
size, SHA-256 of the generator's weights and buffers and of the discriminator's weights and
buffers), and the exit code of a refused command, in OUT/rank<r>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from medgan.cli import main
from medgan.distributed import unwrap
from medgan.training.monitor import Monitor

RECORDS: list[dict] = []


def _sha(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _recording_finish(finish):
    def wrapped(self: Monitor):
        g, d = unwrap(self.state.generator), self.state.discriminator
        RECORDS.append({
            "run": str(self.run_dir.name), "step": self.state.step,
            "world_size": self.dist.world_size,
            "g_params": _sha(g.parameters()), "g_buffers": _sha(g.buffers()),
            "d_params": _sha(d.parameters()), "d_buffers": _sha(d.buffers()),
        })
        return finish(self)

    return wrapped


def cli(*args: str) -> None:
    main([*args], standalone_mode=False)


def run(out: Path, config: str, data: str, train_only: bool) -> None:
    common = ["--device", "cpu", "--no-progress", "--seed", "3"]
    cli("train", "--config", config, "--data", data, "--out", str(out / "full"), "--steps", "4",
        *common)
    if train_only:
        return
    cli("train", "--config", config, "--data", data, "--out", str(out / "part"), "--steps", "2",
        *common)
    cli("train", "--resume", "--out", str(out / "part"), "--steps", "4", *common)
    cli("sample", "--checkpoint", str(out / "full"), "-n", "6", "--out", str(out / "synth"),
        "--batch-size", "4", "--seed", "5", "--device", "cpu", "--no-progress")
    try:
        cli("train", "--config", config, "--data", data, "--out", str(out / "syncbn"),
            "--set", "train.sync_batchnorm=true", *common)
    except SystemExit as stop:
        RECORDS.append({"run": "syncbn", "exit_code": stop.code})


if __name__ == "__main__":
    torch.set_num_threads(1)
    Monitor.finish = _recording_finish(Monitor.finish)
    out_dir = Path(sys.argv[1])
    run(out_dir, sys.argv[2], sys.argv[3], "--train-only" in sys.argv)
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(RECORDS, indent=1), encoding="utf-8")
