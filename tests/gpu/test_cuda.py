"""The CUDA path: mixed precision, channels_last, device-resident and pinned patch banks, no
per-step host synchronisation, torch.compile, sampling on the GPU.

Skipped without a CUDA GPU (CI has none). On a GPU machine ``benchmarks/gpu/run_checks.sh``
runs this module and the benchmark; see docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_checkpoint import make_checkpoint

from medgan.config import config_from_dict
from medgan.data import IntensityMapping, PatchBank
from medgan.distributed import DistInfo
from medgan.training.monitor import Monitor
from medgan.training.state import TrainState, amp_dtype
from medgan.training.trainer import (
    checkpoint_metadata,
    make_sampler,
    prepare_models,
    train,
    train_loop,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def gpu_config(spatial_dims: int = 2, steps: int = 6, amp: str = "auto", **train_settings):
    return config_from_dict({
        "modality": "ct", "spatial_dims": spatial_dims,
        "data": {"patch_size": 32, "patches_per_case": 6, "min_lesion_voxels": 5,
                 "lesion_free_fraction": 0.2},
        "model": {"latent_dim": 16, "ngf": 8, "ndf": 8},
        "train": {"steps": steps, "batch_size": 8, "log_every": 3, "sample_every": 1000,
                  "checkpoint_every": 1000, "amp": amp, **train_settings},
    })


def random_bank(spatial_dims: int, n: int = 64, size: int = 32) -> PatchBank:
    g = torch.Generator().manual_seed(0)
    shape = (n, 1) + (size,) * spatial_dims
    return PatchBank(
        images=torch.rand(shape, generator=g) * 2 - 1,
        masks=(torch.rand(shape, generator=g) > 0.8).to(torch.uint8),
        has_lesion=torch.ones(n, dtype=torch.bool), case_index=torch.zeros(n, dtype=torch.long),
        case_ids=["synthetic"], intensity=IntensityMapping("none", (-1.0,), (1.0,)),
        case_mappings=[], spacing_mm=(1.0, 1.0, 1.0), fingerprint="synthetic",
    )


class SyncCheckingMonitor(Monitor):
    """Turns CUDA's synchronisation check to "error" for the steps between two log steps:
    any host read-back there (``.item()``, ``.cpu()``, ``nonzero`` ...) raises."""

    def __init__(self, *args, check_from: int, check_to: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check_from, self.check_to = check_from, check_to

    def after_step(self, *args: torch.Tensor) -> None:
        step = self.state.step
        if step == self.check_to:
            torch.cuda.set_sync_debug_mode("default")
        super().after_step(*args)
        if step == self.check_from:
            torch.cuda.set_sync_debug_mode("error")


@pytest.mark.parametrize(("spatial_dims", "stabilisers"), [(2, True), (3, True), (2, False)])
def test_no_host_sync_between_log_steps(tmp_path, spatial_dims, stabilisers):
    """bf16 autocast (GradScaler off): steps 4..9 run with the sync check set to error."""
    extra = {} if stabilisers else {"ema_decay": None, "diffaugment": [], "flip_augment": False}
    config = gpu_config(spatial_dims, steps=12, amp="bf16", log_every=10, **extra)
    bank = random_bank(spatial_dims)
    dist = DistInfo(device=CUDA)
    state = TrainState.create(config, bank.image_channels, CUDA, seed=0)
    prepare_models(config, state, dist)
    sampler = make_sampler(config, state, bank, dist)
    assert sampler.store_device.type == "cuda"  # a small bank lives on the GPU
    monitor = SyncCheckingMonitor(tmp_path, config, checkpoint_metadata(config, bank, 0), state,
                                  {}, dist=dist, progress=False, check_from=3, check_to=9)
    try:
        train_loop(config, state, sampler, monitor, dist)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        monitor.close()
    assert state.step == 12 and monitor.finite_so_far()


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_train_on_cuda_every_precision(tmp_path, make_dataset, amp):
    dataset = make_dataset(n=2, shape=(40, 40, 18))
    result = train(gpu_config(amp=amp), data=dataset, out=tmp_path / "run", device="cuda",
                   progress=False)
    assert result.steps == 6
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    expected = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    if amp != "auto":
        assert amp_dtype(gpu_config(amp=amp), CUDA) == expected


def test_channels_last_2d_batches_and_models(tmp_path):
    config = gpu_config(2)
    bank = random_bank(2)
    dist = DistInfo(device=CUDA)
    state = TrainState.create(config, bank.image_channels, CUDA, seed=0)
    prepare_models(config, state, dist)
    batch = make_sampler(config, state, bank, dist).next()
    assert batch.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in state.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_pinned_host_bank_when_gpu_memory_is_short(monkeypatch):
    """A bank over a quarter of the free GPU memory stays in pinned host memory; batches come
    through the two staging buffers and hold rows of the bank."""
    config = gpu_config(2, flip_augment=False)
    bank = random_bank(2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, 2**34))
    dist = DistInfo(device=CUDA)
    state = TrainState.create(config, bank.image_channels, CUDA, seed=0)
    sampler = make_sampler(config, state, bank, dist)
    assert sampler.store_device.type == "cpu" and sampler.pairs.is_pinned()
    rows = bank.pairs().flatten(1)
    for _ in range(5):  # more than the two staging buffers
        batch = sampler.next()
        assert batch.device.type == "cuda" and batch.shape == (8, 2, 32, 32)
        found = (batch.flatten(1).cpu()[:, None, :] == rows[None]).all(dim=2).any(dim=1)
        assert found.all()


def test_compile_trains_and_checkpoints_plain_names(tmp_path, make_dataset):
    dataset = make_dataset(n=2, shape=(40, 40, 18))
    run = tmp_path / "run"
    result = train(gpu_config(steps=4, compile=True), data=dataset, out=run, device="cuda",
                   progress=False)
    assert result.steps == 4
    from safetensors.torch import load_file

    from medgan.checkpoint import resolve_checkpoint

    names = load_file(str(resolve_checkpoint(run) / "generator.safetensors")).keys()
    assert not [n for n in names if "_orig_mod" in n]


def test_sample_on_cuda_same_files_at_any_batch_size(tmp_path):
    from medgan.sampling import sample

    ckpt = make_checkpoint(tmp_path / "run", spatial_dims=2, patch_size=32)
    a = sample(ckpt, 24, tmp_path / "a", seed=3, batch_size=5, device="cuda", progress=False)
    b = sample(ckpt, 24, tmp_path / "b", seed=3, batch_size=24, device="cuda", progress=False)
    assert a.seeds == b.seeds

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*.nii.gz"))}

    assert files(tmp_path / "a") == files(tmp_path / "b") and len(files(tmp_path / "a")) == 48
