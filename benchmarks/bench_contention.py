"""Throughput under contention: medgan training and sampling alone and next to one competitor.

Each measurement is a fresh process that chooses its CPU threads exactly as the ``medgan``
commands do (:func:`medgan.threads.configure_threads` before torch is imported), then trains
the quick-start model (2D 64x64, 32 base channels, batch 32, default stabilisers, on a
synthetic patch bank) for a fixed number of timed steps, or samples ``n`` pairs end to end
from a 2D generator of the same size. Three conditions alternate, in an order rotated from
repeat to repeat: alone ("quiet"), next to a plain Python busy loop, and next to a second
medgan training (itself started as the command starts it). Each competitor is started first
and given time to become busy. The figure of merit is the loaded / quiet ratio of each repeat
(adjacent runs, so that a change in background load hits both alike): one competitor on two
cores leaves a fair share of 0.5.

``python benchmarks/bench_contention.py worker train|sample ...`` is the measured process;
``--raw`` skips medgan's thread choice (torch's defaults, or whatever OMP_NUM_THREADS and
OMP_WAIT_POLICY say). ``python benchmarks/bench_contention.py options train|sample REPEATS
OUT.json [worker arguments]`` compares the thread options of :data:`OPTIONS`, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMPETITORS = ("busy_loop", "medgan_train")
#: Variables that would override the thread choice under test; removed from the workers' env.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "MEDGAN_THREADS",
               "GOMP_SPINCOUNT")
BUSY_LOOP = "while True:\n    pass\n"


# ---- the measured process ----
def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench_contention.py worker")
    p.add_argument("kind", choices=["train", "sample"])
    p.add_argument("--raw", action="store_true", help="no medgan thread choice")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--forever", action="store_true", help="train until killed (competitor)")
    args = p.parse_args(argv)
    choice = None
    if not args.raw:
        from medgan.threads import configure_threads

        choice = configure_threads(None)
    import torch

    info: dict[str, Any] = {"threads": torch.get_num_threads(),
                            "source": choice.source if choice else "torch default",
                            "usable_cores": choice.usable_cores if choice else None,
                            "wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if args.kind == "train":
        info["rate"] = _train(args.steps, args.warmup, args.forever)
    else:
        info["rate"] = _sample(args.checkpoint, args.n)
    print(json.dumps(info), flush=True)


def _train(steps: int, warmup: int, forever: bool) -> float:
    """Images/s of medgan's training loop on the quick-start settings."""
    import torch
    from bench_train import medgan_images_per_s
    from common import synthetic_bank

    from medgan.config import load_config

    config = load_config(ROOT / "configs" / "quickstart.yaml")
    bank = synthetic_bank(2, config.data.patch_size, n=256)
    cpu = torch.device("cpu")
    rate = medgan_images_per_s(config, bank, cpu, warmup, steps)["wall"]
    while forever:
        print("ready", flush=True)
        medgan_images_per_s(config, bank, cpu, 0, steps)
    return rate


def _sample(checkpoint: Path, n: int) -> float:
    """Samples/s of ``medgan.sampling.sample`` end to end (after a small warm-up call)."""
    from medgan.sampling import sample

    with tempfile.TemporaryDirectory(prefix="medgan-bench-contention-") as tmp:
        sample(checkpoint, 32, Path(tmp) / "warm-up", device="cpu", progress=False)
        return sample(checkpoint, n, Path(tmp) / "out", device="cpu", progress=False,
                      seed=1).samples_per_s


# ---- the driver ----
def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(MPLBACKEND="Agg", **(extra or {}))
    return env


def _start_competitor(name: str, timeout_s: float) -> subprocess.Popen:
    """Start a competitor and return once it is busy."""
    if name == "busy_loop":
        proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=_env(None))
        time.sleep(1.0)
        return proc
    proc = subprocess.Popen([sys.executable, str(HERE / "bench_contention.py"), "worker",
                             "train", "--forever", "--warmup", "2", "--steps", "10"],
                            env=_env(None), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # first "ready": it has trained and is training on
        line = proc.stdout.readline() if proc.stdout else ""
        if not line or line.strip() == "ready":
            break
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_worker(kind: str, worker_args: list[str], env: dict[str, str] | None,
                timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "bench_contention.py"), "worker", kind, *worker_args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=_env(env), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "load_average": load}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1],
                "load_average": load}
    return {**json.loads(lines[-1]), "load_average": load,
            "seconds": round(time.perf_counter() - t0, 1)}


def measure(kind: str, repeats: int, worker_args: list[str],
            competitors: tuple[str, ...] = COMPETITORS, env: dict[str, str] | None = None,
            timeout_s: float = 900.0) -> dict[str, Any]:
    """Quiet and loaded runs of ``kind`` ("train" or "sample"), interleaved ``repeats`` times.

    Returns every run (rate, threads chosen, load average at its start) and, per competitor,
    the loaded / quiet ratio of each repeat with their median.
    """
    conditions = ["quiet", *competitors]
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in conditions}
    for r in range(repeats):
        for cond in conditions[r % len(conditions):] + conditions[:r % len(conditions)]:
            comp = None if cond == "quiet" else _start_competitor(cond, timeout_s)
            try:
                runs[cond].append(_run_worker(kind, worker_args, env, timeout_s))
            finally:
                _stop(comp)
            print(f"[contention] {kind} {cond} repeat {r}: {runs[cond][-1]}", file=sys.stderr)
    out: dict[str, Any] = {"kind": kind, "repeats": repeats, "worker_args": worker_args,
                           "env": env or {}, "runs": runs, "ratio_loaded_vs_quiet": {}}
    for comp in competitors:
        ratios = [c["rate"] / q["rate"] for q, c in zip(runs["quiet"], runs[comp], strict=True)
                  if "rate" in q and "rate" in c]
        out["ratio_loaded_vs_quiet"][comp] = {
            "per_repeat": ratios, "median": sorted(ratios)[len(ratios) // 2] if ratios else None}
    return out


#: Thread options compared by :func:`compare_options`: (worker arguments, extra environment).
OPTIONS: dict[str, tuple[list[str], dict[str, str]]] = {
    "torch default": (["--raw"], {}),
    "1 thread": (["--raw"], {"OMP_NUM_THREADS": "1"}),
    "all cores passive": (["--raw"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "all cores short spin": (["--raw"], {"GOMP_SPINCOUNT": "10000"}),
    "medgan default": ([], {}),
}


def compare_options(kind: str, repeats: int, worker_args: list[str],
                    competitor: str = "busy_loop", timeout_s: float = 1800.0,
                    only: list[str] | None = None) -> dict[str, Any]:
    """Every entry of :data:`OPTIONS` quiet and next to ``competitor``, all interleaved: each
    repeat runs every option (in a rotated order), each quiet then loaded."""
    names = [n for n in OPTIONS if n in (only or OPTIONS)]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        n: {"quiet": [], competitor: []} for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            extra_args, env = OPTIONS[name]
            for cond in ("quiet", competitor):
                comp = None if cond == "quiet" else _start_competitor(cond, timeout_s)
                try:
                    result = _run_worker(kind, [*extra_args, *worker_args], env, timeout_s)
                finally:
                    _stop(comp)
                runs[name][cond].append(result)
                print(f"[options] {kind} {name} {cond} repeat {r}: {result}", file=sys.stderr)
    return {"kind": kind, "repeats": repeats, "competitor": competitor, "runs": runs}


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "worker":
        _worker(argv[1:])
        return 0
    if argv and argv[0] == "options":
        kind, repeats, out = argv[1], int(argv[2]), Path(argv[3])
        only = [n for n in os.environ.get("BENCH_OPTIONS", "").split(",") if n]
        result = compare_options(kind, repeats, argv[4:], only=only or None)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["train", "sample"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raw", action="store_true")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of the measured process")
    p.add_argument("--competitors", default=",".join(COMPETITORS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="medgan-bench-contention-") as tmp:
        worker_args = ["--raw"] if args.raw else []
        if args.kind == "sample":
            worker_args += ["--checkpoint", str(make_sample_checkpoint(Path(tmp)))]
        else:
            worker_args += ["--steps", str(args.steps)]
        result = measure(args.kind, args.repeats, worker_args,
                         tuple(c for c in args.competitors.split(",") if c), env)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps(result["ratio_loaded_vs_quiet"], indent=2))
    return 0


def make_sample_checkpoint(folder: Path) -> Path:
    """The quick-start-sized 2D generator checkpoint the sampling runs load."""
    from bench_sample import make_checkpoint

    return make_checkpoint(folder / "run", 2, 64, width=32)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(_main(sys.argv[1:]))
