"""Wall time of the README's quick start: `medgan train` then `medgan sample`, as written there.

    python benchmarks/bench_quickstart.py [--threads N] [--set KEY=VALUE ...] [--out FILE.json]
                                          [--keep DIR]

Runs the `medgan ...` commands of the README's first bash block in a fresh temporary folder
(the bundled sample, no patch cache), each in its own process, and records for each its wall
time and, for training, the images per second it printed; with the machine description and the
load average before, during (every 10 s) and after. The figures quoted in the README,
docs/quickstart.md and docs/faq.md come from this script. ``tests/test_quickstart.py`` runs the
same commands through :func:`run_readme`, with fewer steps, and checks their outputs, not their
speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "medgan-quickstart-benchmark/1"
IMAGES_PER_S = re.compile(r"trained (\d+) steps \(([\d.]+) images/s\)")


def readme_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The `medgan ...` parts of the first bash block of ``readme``, split like a shell."""
    text = readme.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.+?)\n```", text, re.S)
    if block is None:
        raise ValueError(f"{readme}: no bash code block")
    parts = [p.strip() for p in block.group(1).split("&&")]
    return [shlex.split(p) for p in parts if p.startswith("medgan ")]


class LoadSampler:
    """1-minute load average every ``every`` seconds on a daemon thread, while in ``with``."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(round(os.getloadavg()[0], 2))

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_readme(workdir: Path, train_args: list[str] | None = None, threads: int | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run the README's medgan commands in ``workdir``; returns per-command results.

    ``train_args`` are appended to `medgan train` (e.g. ``["--set", "train.steps=150"]``);
    ``threads`` sets OMP_NUM_THREADS / MKL_NUM_THREADS of the subprocesses (None: inherited).
    Each entry has ``argv``, ``returncode``, ``wall_s``, ``stdout``, ``stderr`` and, for
    training, ``steps`` and ``images_per_s`` as printed.
    """
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    results: dict[str, Any] = {}
    for cmd in readme_commands():
        args = [str(ROOT / a) if a.startswith("configs/") else a for a in cmd[1:]]
        if cmd[1] == "train":
            args += train_args or []
        argv = [sys.executable, "-m", "medgan", *args, "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
        entry: dict[str, Any] = {"argv": ["medgan", *args], "returncode": proc.returncode,
                                 "wall_s": round(time.perf_counter() - start, 1),
                                 "stdout": proc.stdout, "stderr": proc.stderr}
        found = IMAGES_PER_S.search(proc.stdout)
        if found:
            entry.update(steps=int(found.group(1)), images_per_s=float(found.group(2)))
        results[cmd[1]] = entry
        if proc.returncode != 0:
            break
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the medgan processes (default: inherited)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra `medgan train --set KEY=VALUE` (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--keep", type=Path, default=None,
                   help="run in this new folder and keep the outputs (sample grids) there "
                        "(default: a temporary folder)")
    args = p.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        p.error(f"--keep {args.keep}: exists; give a new folder")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from common import machine_info

    train_args = [x for kv in args.overrides for x in ("--set", kv)]
    machine = machine_info(torch.device("cpu"))
    del machine["torch_threads"]  # this process's, not the medgan processes'
    machine["omp_num_threads"] = args.threads or os.environ.get("OMP_NUM_THREADS")
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        runs = run_readme(workdir, train_args, args.threads)
    machine["load_average_end"] = list(os.getloadavg())
    machine["load_average_during"] = load.samples
    for name, r in runs.items():
        if r["returncode"] != 0:
            print(f"{name} failed:\n{r['stderr'][-3000:]}", file=sys.stderr)
            return 1
        speed = (f", {r['steps']} steps at {r['images_per_s']:.1f} images/s"
                 if "images_per_s" in r else "")
        print(f"{' '.join(r['argv'])}\n  {r['wall_s']:.1f} s{speed}")
    print(f"load average: start {machine['load_average']}, during {load.samples}, "
          f"end {machine['load_average_end']}")
    results = {"schema": SCHEMA, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine,
               "commands": {k: {x: v for x, v in r.items() if x not in ("stdout", "stderr")}
                            for k, r in runs.items()}}
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"quickstart-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
