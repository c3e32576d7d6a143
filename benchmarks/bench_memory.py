"""Peak memory of training, one configuration per subprocess so that peaks do not mix.

The child (``python benchmarks/bench_memory.py '<json>'``) records its resident set size after
the imports and the data, trains a few steps of ``medgan``'s loop with the default
stabilisers, and prints one JSON line: peak CPU RSS (``VmHWM``) and, on CUDA, the peak memory
allocated by PyTorch.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB.

    Linux: ``VmHWM`` of /proc/self/status. Not ``ru_maxrss``, which survives ``exec`` and so
    reports the parent's size when that was larger (the benchmark driver, here).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from bench_train import medgan_images_per_s
    from common import recipe_config, synthetic_bank

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dims, size, batch = spec["spatial_dims"], spec["patch_size"], spec["batch_size"]
    bank = synthetic_bank(dims, size, n=2 * batch)
    config = recipe_config(dims, size, True, batch, spec["width"])
    baseline = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rate = medgan_images_per_s(config, bank, device, warmup=0, steps=spec["steps"])
    out = {**spec, "baseline_rss_mib": baseline, "peak_rss_mib": _peak_rss_mib(),
           "images_per_s": rate["wall"], "cuda_max_allocated_mib": None}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def measure(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; a failure or timeout is recorded, not raised."""
    cmd = [sys.executable, str(HERE / "bench_memory.py"), json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {**spec, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def measure_all(specs: list[dict[str, Any]], timeout_s: float, parallel: bool = False
                ) -> list[dict[str, Any]]:
    """:func:`measure` for each spec; ``parallel`` runs the children at the same time (their
    peaks stay separate, but their speed and, on one GPU, their memory headroom do not)."""
    if not parallel:
        return [measure(spec, timeout_s) for spec in specs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        return list(pool.map(lambda spec: measure(spec, timeout_s), specs))


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
