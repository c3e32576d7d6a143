"""``benchmarks/run.py --quick`` runs every section and writes the documented JSON.

Only the shape of the results is checked, never the speed: the quick settings are tiny and the
machine is whatever runs the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300

pytestmark = pytest.mark.slow

SUMMARY = {"median", "min", "max", "n"}
MACHINE = {"cpu_model", "cpu_cores", "torch", "monai", "medgan", "torch_threads", "device", "gpu",
           "load_average", "load_average_end"}
TRAINING = {"spatial_dims", "patch_size", "batch_size", "width", "warmup_steps", "timed_steps",
            "repeats", "images_per_s", "images_per_cpu_s", "ratio_medgan_vs_plain",
            "ratio_medgan_vs_plain_cpu", "ratio_stabilisers_vs_off",
            "ratio_stabilisers_vs_off_cpu"}
DATA = {"spatial_dims", "patch_size", "source", "cases", "patches", "first_epoch_s",
        "first_epoch_patches_per_s", "cached_s", "cached_patches_per_s", "sampler_batch_size",
        "sampler_patches_per_s"}
SAMPLING = {"spatial_dims", "patch_size", "n", "width", "batch_size", "redrawn_empty_masks",
            "end_to_end_samples_per_s", "bare_forward_samples_per_s", "ratio_end_to_end_vs_bare"}
MEMORY = {"spatial_dims", "patch_size", "batch_size", "width", "steps", "device",
          "baseline_rss_mib", "peak_rss_mib", "images_per_s", "cuda_max_allocated_mib"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--device", "cpu",
         "--out", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_quick_run_writes_every_section(results):
    data, _ = results
    assert data["schema"] == "medgan-benchmark/1" and data["quick"] is True
    assert set(data["machine"]) >= MACHINE
    assert data["machine"]["device"] == "cpu" and data["machine"]["gpu"] is None
    assert [t["spatial_dims"] for t in data["training"]] == [2, 3]
    for t in data["training"]:
        assert set(t) >= TRAINING
        assert set(t["images_per_s"]) == {"plain", "medgan", "medgan_stabilisers"}
        for rate in t["images_per_s"].values():
            assert set(rate) == SUMMARY and rate["median"] > 0
    for d in data["data"]:
        assert set(d) >= DATA and d["patches"] > 0
    for s in data["sampling"]:
        assert set(s) >= SAMPLING and s["ratio_end_to_end_vs_bare"] > 0
    assert len(data["memory"]) == 2
    for m in data["memory"]:
        assert set(m) >= MEMORY, m.get("error")
        assert m["peak_rss_mib"] >= m["baseline_rss_mib"] > 0
        assert m["cuda_max_allocated_mib"] is None


def test_quick_run_prints_table_and_checks(results):
    data, stdout = results
    names = [c["name"] for c in data["checks"]]
    assert len(names) == 6  # training x2, data x2, sampling x2
    for check in data["checks"]:
        assert set(check) == {"name", "target", "value", "passed"}
        assert isinstance(check["passed"], bool)
        assert ("PASS  " if check["passed"] else "FAIL  ") + check["name"] in stdout
    assert "train 2D" in stdout and "sample 3D" in stdout and "memory 3D" in stdout


@pytest.mark.parametrize("script", ["fetch_wheels.sh", "run_checks.sh"])
def test_gpu_scripts_parse_and_are_executable(script):
    """The GPU check scripts only run on a GPU machine; here they must at least parse."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)


CONTENTION = {"kind", "repeats", "worker_args", "env", "runs", "ratio_loaded_vs_quiet"}


def test_quick_contention_section(tmp_path):
    """``--only contention --quick``: quiet and loaded runs of train and sample, the threads
    each measured process chose, per-repeat ratios and their checks (never the speed)."""
    out = tmp_path / "contention.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MEDGAN_THREADS")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--device", "cpu",
         "--only", "contention", "--out", str(out)],
        capture_output=True, text=True, timeout=2 * TIMEOUT_S, cwd=ROOT, env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    data = json.loads(out.read_text())
    assert [c["kind"] for c in data["contention"]] == ["train", "sample"]
    for c in data["contention"]:
        assert set(c) >= CONTENTION
        assert set(c["runs"]) == {"quiet", "busy_loop", "medgan_train"}
        for runs in c["runs"].values():
            assert len(runs) == 1 and runs[0]["rate"] > 0, runs
            assert runs[0]["threads"] >= 1 and runs[0]["source"] == "automatic"
            assert runs[0]["wait_policy"] == "PASSIVE"
        for ratio in c["ratio_loaded_vs_quiet"].values():
            assert len(ratio["per_repeat"]) == 1 and ratio["median"] > 0
    assert len(data["checks"]) == 4
    assert "contention train: quiet" in done.stdout and "contention sample: quiet" in done.stdout


def test_quick_inference_section(tmp_path):
    """``--only inference --quick``: the tiny phantom under every configuration, seconds per
    scan, speed-ups, logits and predictions identical to the 0.1 path, and its check."""
    out = tmp_path / "inference.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--device", "cpu",
         "--only", "inference", "--out", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT,
        env={**env, "MKL_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    data = json.loads(out.read_text())
    assert set(data["machine"]) >= MACHINE
    # the thread environment the figures ran under: what was set, and medgan's passive waits
    assert data["machine"]["thread_environment"]["MKL_NUM_THREADS"] == "1"
    assert data["machine"]["thread_environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "GOMP_SPINCOUNT" not in data["machine"]["thread_environment"]
    (scan,) = data["inference"]  # quick: the phantom only
    assert scan["source"] == "phantom" and scan["repeats"] == 1
    assert list(scan["configs"])[:3] == ["reference", "stack", "stack+skip"]
    for config in scan["configs"].values():
        assert config["seconds_median"] > 0 and config["speedup_vs_reference"] > 0
        assert config["logits_equal"] and config["predictions_equal"]
    assert scan["segment_volume_equal"] and scan["identical"]
    assert scan["foreground_voxels"] > 0
    (check,) = data["checks"]
    assert check["target"] == ">= 3" and isinstance(check["passed"], bool)
    assert ("PASS  " if check["passed"] else "FAIL  ") + check["name"] in done.stdout
    assert "identical logits and predictions: True" in done.stdout
