"""Several processes with torchrun (CPU, Gloo): lock-step training, rank-0-only files, resume,
sampling split across ranks, and torchrun with one process being a plain run.

Each torchrun launch runs ``dist_harness.py``, which drives ``medgan.cli.main`` in every process
and records per-rank weight hashes. What is expected to be identical:

* across the ranks of one run: the step count and the weights of both models (DDP averages
  the generator's gradients, :func:`average_gradients` the discriminator's). Not the
  BatchNorm running statistics: each rank updates them from its own batch (DDP overwrites the
  generator's with rank 0's before each forward pass), training never reads them, and only
  rank 0's are saved;
* a 2-rank run resumed from its checkpoint and the same run uninterrupted (every rank resumes
  its own random stream), checkpoint for checkpoint;
* ``medgan sample`` on 2 ranks and on 1 process, file for file;
* ``torchrun --nproc-per-node 1`` and a plain call.

Not expected: a 2-rank run and a 1-process run giving the same weights. The ranks see
different minibatches and noise (each its own shard and seed), BatchNorm normalises each
rank's own batch, and the effective batch is twice as large.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers_data import config_dict, phantom_arrays, spacing_affine, write_nifti
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.sampling import sample

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).with_name("dist_harness.py")
EXIT_HARNESS = Path(__file__).with_name("dist_exit_harness.py")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(config.yaml, dataset.json): two CT phantoms, 32x32 patches, a tiny 2D model."""
    root = tmp_path_factory.mktemp("dist-inputs")
    entries = []
    for i in range(2):
        image, label, _ = phantom_arrays((40, 40, 18), "ct", seed=i)
        affine = spacing_affine()
        entries.append({
            "image": str(write_nifti(root / "imagesTr" / f"case_{i}.nii.gz", image, affine)),
            "label": str(write_nifti(root / "labelsTr" / f"case_{i}.nii.gz", label, affine)),
        })
    data = root / "dataset.json"
    data.write_text(json.dumps({"training": entries}), encoding="utf-8")
    raw = config_dict("ct", 2, patches_per_case=6, lesion_free_fraction=0.2)
    raw["model"] = {"latent_dim": 8, "ngf": 4, "ndf": 4}
    raw["train"] = {"steps": 4, "batch_size": 4, "log_every": 2, "sample_every": 3,
                    "checkpoint_every": 3, "ema_decay": 0.9}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config, data


def _launch(nproc: int, script: Path, *args: str) -> None:
    """``torchrun --standalone`` of ``script`` on ``nproc`` CPU processes; must exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", str(script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def torchrun(nproc: int, out: Path, inputs: tuple[Path, Path], *extra: str) -> list[list[dict]]:
    """Run the harness on ``nproc`` CPU processes; returns every rank's records."""
    config, data = inputs
    _launch(nproc, HARNESS, str(out), str(config), str(data), *extra)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, inputs) -> tuple[Path, list[list[dict]]]:
    out = tmp_path_factory.mktemp("two-ranks")
    return out, torchrun(2, out, inputs)


def _weights(run: Path, stem: str) -> dict[str, torch.Tensor]:
    return load_file(str(resolve_checkpoint(run) / f"{stem}.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    for stem in ("generator", "generator_ema", "discriminator"):
        wa, wb = _weights(a, stem), _weights(b, stem)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{stem}.{key} differs between {a} and {b}"


def _trained(records: list[dict]) -> list[dict]:
    return [r for r in records if "step" in r]


def test_ranks_train_in_lock_step(two_ranks):
    _, ranks = two_ranks
    rank0, rank1 = _trained(ranks[0]), _trained(ranks[1])
    assert [r["run"] for r in rank0] == [r["run"] for r in rank1] == ["full", "part", "part"]
    for r0, r1 in zip(rank0, rank1, strict=True):
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["step"] == r1["step"]
        assert r0["g_params"] == r1["g_params"]
        assert r0["d_params"] == r1["d_params"]
        assert r0["g_buffers"] != r1["g_buffers"]  # BatchNorm statistics of each rank's data
    assert [r["step"] for r in rank0] == [4, 2, 4]


def test_only_rank_zero_writes(two_ranks):
    out, _ = two_ranks
    run = out / "full"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["cache", "checkpoints", "config.yaml", "history.json", "loss_curves.png", "run.json",
         "MODEL_CARD.md", "samples", "tensorboard"])
    assert len(list((run / "cache").iterdir())) == 1
    writers = {f.name.rsplit(".", 2)[1] for f in (run / "tensorboard").iterdir()}
    assert len(writers) == 1  # event files of one process (name: ...<host>.<pid>.<n>)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["final.png",
                                                                   "step-00000003.png"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".partial" in p.name]
    meta = read_sidecar(resolve_checkpoint(run))
    assert meta["world_size"] == 2 and meta["step"] == 4
    state = load_file(str(resolve_checkpoint(run) / "training_state.safetensors"))
    assert {"rng.loop", "rng.loop.rank1"} <= set(state)


def test_resume_under_torchrun_matches_uninterrupted_run(two_ranks):
    out, (records, _) = two_ranks
    rank0 = _trained(records)
    assert rank0[0]["g_params"] == rank0[2]["g_params"]  # full == part resumed, in memory
    assert rank0[0]["d_params"] == rank0[2]["d_params"]
    _assert_same_weights(out / "full", out / "part")


def test_sync_batchnorm_on_cpu_is_refused_before_writing(two_ranks):
    out, ranks = two_ranks
    for records in ranks:
        assert {"run": "syncbn", "exit_code": 2} in records
    assert not (out / "syncbn").exists()  # refused before the run folder was made


def test_sample_on_two_ranks_matches_one_process(two_ranks, tmp_path):
    out, _ = two_ranks
    single = tmp_path / "synth"
    sample(out / "full", 6, single, seed=5, batch_size=4, device="cpu", progress=False)
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file())
    assert len(files) == 2 * 6 + 2  # images, labels, dataset.json, contact_sheet.png
    assert files == sorted(p.relative_to(out / "synth") for p in (out / "synth").rglob("*")
                           if p.is_file())
    for f in files:
        if f.name == "dataset.json":  # the checkpoint path is relative to each folder
            one, two = (json.loads((d / f).read_text()) for d in (single, out / "synth"))
            paths = [(d / x["medgan"].pop("checkpoint")).resolve()
                     for d, x in ((single, one), (out / "synth", two))]
            assert one == two and paths[0] == paths[1]
            continue
        assert (single / f).read_bytes() == (out / "synth" / f).read_bytes(), f


def test_torchrun_with_one_process_is_a_plain_run(tmp_path, inputs):
    records = torchrun(1, tmp_path / "torchrun", inputs, "--train-only")
    assert records[0][0]["world_size"] == 1
    config, data = inputs
    result = main.main(["train", "--config", str(config), "--data", str(data), "--out",
                        str(tmp_path / "plain"), "--steps", "4", "--device", "cpu", "--seed",
                        "3", "--no-progress", "--threads", "1"],  # torchrun's children: 1
                       standalone_mode=False)
    assert result is None
    _assert_same_weights(tmp_path / "torchrun" / "full", tmp_path / "plain")
    assert read_sidecar(resolve_checkpoint(tmp_path / "plain"))["world_size"] == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_processes_exit_cleanly_right_after_a_collective():
    """The exit hook destroys the group while Python is alive (see ``_destroy_group``).

    Before it collected reference cycles, 8 of 8 launches of this harness aborted on a
    2-core machine; one launch is already a strong check, three make a miss unlikely.
    """
    for _ in range(3):
        _launch(2, EXIT_HARNESS)
