"""medgan benchmarks: training, data pipeline, sampling and memory, in one run.

    python benchmarks/run.py [--device auto|cpu|cuda] [--quick] [--out FILE.json]
    python benchmarks/run.py --only contention      # CPU throughput next to a competitor
    python benchmarks/run.py --only inference       # segmentation inference, 0.1 path vs now

Prints a table and the target checks (PASS/FAIL) and writes everything, with the machine
description, to a JSON file (default ``benchmarks/results/<device>-<time>.json``). ``--quick``
runs tiny versions of every section (a smoke test; its numbers mean nothing). See
docs/benchmarks.md for what each figure measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCHEMA = "medgan-benchmark/1"
SECTIONS = ("train", "data", "sample", "memory", "contention", "inference")
DEFAULT_SECTIONS = ("train", "data", "sample", "memory")  # contention, inference when asked for
#: Per mode: (spatial_dims, patch_size, batch_size, width) of each training comparison.
TRAIN_CASES = {"quick": [(2, 32, 8, 8), (3, 32, 2, 4)], "full": [(2, 64, 64, 64), (3, 32, 64, 64)]}
#: warm-up steps, timed steps, repeats.
TRAIN_STEPS = {"quick": (1, 2, 2), "cpu": (2, 5, 3), "cuda": (20, 100, 5)}
MEMORY_CASES = {"quick": [(2, 32, 8, 8), (3, 32, 2, 4)],
                "full": [(2, 64, 64, 64), (2, 128, 64, 64), (3, 32, 64, 64), (3, 64, 64, 64)]}
SAMPLE_N = {"quick": (16, 8), "cpu": (512, 128), "cuda": (4096, 1024)}  # 2D, 3D
SAMPLING_TARGET = 0.5  # end to end >= half the bare forward throughput
CONTENTION_TARGET = 0.4  # loaded / quiet throughput next to one CPU-bound competitor
#: Per mode: (timed training steps, samples, repeats) of the contention runs.
CONTENTION = {"quick": (2, 16, 1), "full": (60, 1024, 3)}
INFERENCE_TARGET = 3.0  # best medgan configuration / the 0.1 path, seconds per scan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quick", action="store_true", help="tiny settings, < 60 s (smoke test)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated sections among {', '.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=None, help="training repeats (median)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per repeat")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per repeat")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="training check passes when medgan/plain >= 1 - tolerance")
    p.add_argument("--memory-timeout", type=float, default=1800.0,
                   help="seconds allowed per memory subprocess")
    args = p.parse_args(argv)
    bad = [s for s in args.only.split(",") if s not in SECTIONS]
    if bad:
        p.error(f"--only must list sections among {', '.join(SECTIONS)}, not {bad[0]!r}")
    return args


def run_train(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    from bench_train import compare

    warmup, steps, repeats = TRAIN_STEPS["quick" if args.quick else device.type]
    warmup = args.warmup if args.warmup is not None else warmup
    steps, repeats = args.steps or steps, args.repeats or repeats
    return [compare(dims, size, device, repeats, warmup, steps, batch, width)
            for dims, size, batch, width in TRAIN_CASES[mode]]


def run_data(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    from bench_data import measure

    batch = 8 if args.quick else 64
    return [measure(dims, size, device, batch, draws=5 if args.quick else 20, quick=args.quick)
            for dims, size, _, _ in TRAIN_CASES[mode]]


def run_sample(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    from bench_sample import measure

    n2, n3 = SAMPLE_N["quick" if args.quick else device.type]
    (d2, s2, _, w2), (d3, s3, _, w3) = TRAIN_CASES[mode]
    repeats = 1 if args.quick else 5
    return [measure(d2, s2, device, n2, w2, repeats=repeats),
            measure(d3, s3, device, n3, w3, repeats=repeats)]


def run_memory(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    from bench_memory import measure_all

    steps = 1 if args.quick or device.type == "cpu" else 3
    specs = [{"spatial_dims": d, "patch_size": s, "batch_size": b, "width": w, "steps": steps,
              "device": str(device), "threads": args.threads}
             for d, s, b, w in MEMORY_CASES[mode]]
    return measure_all(specs, args.memory_timeout, parallel=args.quick)


def run_contention(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    import tempfile

    from bench_contention import make_sample_checkpoint, measure

    if device.type != "cpu":
        print("[contention] CPU only; skipped on", device, file=sys.stderr)
        return []
    steps, n, repeats = CONTENTION[mode]
    repeats = args.repeats or repeats
    with tempfile.TemporaryDirectory(prefix="medgan-bench-contention-") as tmp:
        ckpt = make_sample_checkpoint(Path(tmp))
        train_args = ["--steps", str(args.steps or steps), "--warmup", "1" if args.quick else "5"]
        return [measure("train", repeats, train_args),
                measure("sample", repeats, ["--checkpoint", str(ckpt), "--n", str(n)])]


def run_inference(args: argparse.Namespace, mode: str, device: Any) -> list[dict[str, Any]]:
    from bench_inference import measure

    if device.type != "cpu":
        print("[inference] CPU only; skipped on", device, file=sys.stderr)
        return []
    return measure(quick=args.quick, repeats=args.repeats)


def checks(results: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """The targets: training parity with plain PyTorch, data pipeline, sampling overhead."""
    out = []
    device = results["machine"]["device"]
    consumption = {}
    for t in results.get("training", []):
        ratio = t["ratio_medgan_vs_plain"]["median"]
        out.append({"name": f"training {t['spatial_dims']}D medgan/plain ({device})",
                    "target": f">= {1 - tolerance:g}", "value": ratio,
                    "passed": ratio >= 1 - tolerance})
        rates = t["images_per_s"]
        consumption[t["spatial_dims"]] = max(rates["medgan"]["median"],
                                             rates["medgan_stabilisers"]["median"])
    for d in results.get("data", []):
        need = consumption.get(d["spatial_dims"])
        if need is None:
            continue
        have = d["sampler_patches_per_s"]["median"]
        out.append({"name": f"data {d['spatial_dims']}D cached sampler / training consumption",
                    "target": ">= 1", "value": have / need, "passed": have >= need})
    for s in results.get("sampling", []):
        ratio = s["ratio_end_to_end_vs_bare"]
        out.append({"name": f"sampling {s['spatial_dims']}D end to end / bare forward",
                    "target": f">= {SAMPLING_TARGET:g}", "value": ratio,
                    "passed": ratio >= SAMPLING_TARGET})
    for c in results.get("contention", []):
        for comp, ratio in c["ratio_loaded_vs_quiet"].items():
            value = ratio["median"]
            out.append({"name": f"contention {c['kind']} next to {comp.replace('_', ' ')}: "
                                "loaded / quiet", "target": f">= {CONTENTION_TARGET:g}",
                        "value": value, "passed": value is not None
                        and value >= CONTENTION_TARGET})
    for scan in results.get("inference", []):
        best = max((c for c in scan["configs"] if c != "reference"),
                   key=lambda c: scan["configs"][c]["speedup_vs_reference"])
        value = scan["configs"][best]["speedup_vs_reference"]
        out.append({"name": f"inference {scan['name']}: 0.1 path / "
                            f"{best} seconds per scan, identical predictions",
                    "target": f">= {INFERENCE_TARGET:g}", "value": value,
                    "passed": scan["identical"] and value >= INFERENCE_TARGET})
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) < 10:
        return f"{x:.3f}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _contention_line(c: dict[str, Any]) -> str:
    """Median rate and torch threads per condition, then the per-repeat loaded/quiet ratios."""
    parts = []
    for cond, runs in c["runs"].items():
        rates = [r["rate"] for r in runs if "rate" in r]
        used = "/".join(str(t) for t in sorted({r["threads"] for r in runs if "threads" in r}))
        rate = _fmt(statistics.median(rates)) if rates else "-"
        parts.append(f"{cond.replace('_', ' ')} {rate} ({used or '-'} threads)")
    ratios = "; ".join(f"{k.replace('_', ' ')}/quiet {_fmt(v['median'])} "
                       f"[{', '.join(_fmt(x) for x in v['per_repeat'])}]"
                       for k, v in c["ratio_loaded_vs_quiet"].items())
    unit = "images/s" if c["kind"] == "train" else "samples/s"
    return f"contention {c['kind']}: " + " | ".join(parts) + f" {unit}; {ratios}"


def _inference_line(scan: dict[str, Any]) -> str:
    """Median seconds per scan and speed-up of every configuration, and the equality check."""
    parts = [f"{name} {_fmt(c['seconds_median'])} s (x{_fmt(c['speedup_vs_reference'])})"
             for name, c in scan["configs"].items()]
    box = "x".join(str(s) for s in scan["body_box"])
    return (f"inference {scan['name']} (box {box}): " + " | ".join(parts)
            + f"; identical logits and predictions: {scan['identical']}")


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\nmedgan {m['medgan']} | torch {m['torch']} | MONAI {m['monai']} | {m['device']} "
          f"| {m['gpu'] or m['cpu_model']} | {m['cpu_cores']} cores | torch threads "
          f"{m['torch_threads']} | load {m['load_average']}")
    for t in results.get("training", []):
        r = t["images_per_s"]
        print(f"train {t['spatial_dims']}D {t['patch_size']} b{t['batch_size']} w{t['width']}: "
              f"plain {_fmt(r['plain']['median'])} | medgan {_fmt(r['medgan']['median'])} | "
              f"+stabilisers {_fmt(r['medgan_stabilisers']['median'])} images/s; "
              f"medgan/plain {_fmt(t['ratio_medgan_vs_plain']['median'])} "
              f"[{_fmt(t['ratio_medgan_vs_plain']['min'])}-"
              f"{_fmt(t['ratio_medgan_vs_plain']['max'])}] (CPU time "
              f"{_fmt(t['ratio_medgan_vs_plain_cpu']['median'])}); stabilisers/off "
              f"{_fmt(t['ratio_stabilisers_vs_off']['median'])}")
    for d in results.get("data", []):
        print(f"data {d['spatial_dims']}D {d['patch_size']} ({d['patches']} patches, "
              f"{d['cases']} cases): first epoch {_fmt(d['first_epoch_patches_per_s'])} | "
              f"cached {_fmt(d['cached_patches_per_s'])} | sampler "
              f"{_fmt(d['sampler_patches_per_s']['median'])} patches/s")
    for s in results.get("sampling", []):
        print(f"sample {s['spatial_dims']}D {s['patch_size']} n{s['n']}: end to end "
              f"{_fmt(s['end_to_end_samples_per_s']['median'])} | bare forward "
              f"{_fmt(s['bare_forward_samples_per_s']['median'])} samples/s "
              f"(ratio {_fmt(s['ratio_end_to_end_vs_bare'])} "
              f"[{_fmt(s['ratio_end_to_end_vs_bare_range']['min'])}-"
              f"{_fmt(s['ratio_end_to_end_vs_bare_range']['max'])}])")
    for mem in results.get("memory", []):
        what = (f"memory {mem['spatial_dims']}D {mem['patch_size']} b{mem['batch_size']} "
                f"w{mem['width']}: ")
        if "error" in mem:
            print(what + mem["error"])
            continue
        print(what + f"peak RSS {_fmt(mem['peak_rss_mib'])} MiB (after set-up "
              f"{_fmt(mem['baseline_rss_mib'])}) | CUDA max allocated "
              f"{_fmt(mem['cuda_max_allocated_mib'])} MiB")
    for c in results.get("contention", []):
        print(_contention_line(c))
    for scan in results.get("inference", []):
        print(_inference_line(scan))
    for c in results["checks"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {_fmt(c['value'])} "
              f"(target {c['target']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "inference" in args.only.split(","):  # OpenMP reads it once, when torch loads
        from medgan.threads import prefer_passive_wait

        prefer_passive_wait()  # sleeping waits, as every medgan command (see medgan.threads)
    import torch

    from medgan.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    mode = "quick" if args.quick else "full"
    from common import machine_info

    results: dict[str, Any] = {
        "schema": SCHEMA, "quick": args.quick, "tolerance": args.tolerance,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(device), "seconds": {},
    }
    sections = args.only.split(",")
    runners = {"train": ("training", run_train), "data": ("data", run_data),
               "sample": ("sampling", run_sample), "memory": ("memory", run_memory),
               "contention": ("contention", run_contention),
               "inference": ("inference", run_inference)}
    for section in SECTIONS:
        if section in sections:
            key, runner = runners[section]
            t0 = time.perf_counter()
            results[key] = runner(args, mode, device)
            results["seconds"][key] = time.perf_counter() - t0
            print(f"[{section}] done in {results['seconds'][key]:.0f} s", file=sys.stderr)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["checks"] = checks(results, args.tolerance)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or HERE / "results" / f"{device.type}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
