"""medgan.training.state: TrainState creation, its checkpoint round trip, EMA calibration, RNGs.

The "training" here is a few optimiser steps on random tensors drawn from the state's own
generators; what matters is that a restored state continues exactly as the original does.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar
from medgan.config import config_from_dict
from medgan.training.state import TrainState

CHANNELS = 1
SIDECAR = {"config": {}}  # what read_sidecar needs; the model description is not tested here


def config(ema: bool = True, lr: float = 2e-4, spatial_dims: int = 2):
    return config_from_dict({
        "modality": "ct", "spatial_dims": spatial_dims, "data": {"patch_size": 32},
        "model": {"latent_dim": 8, "ngf": 4, "ndf": 4},
        "train": {"steps": 10, "batch_size": 4, "lr_g": lr, "lr_d": lr,
                  "ema_decay": 0.9 if ema else None},
    })


def create(seed: int = 0, **kwargs) -> TrainState:
    cfg = config(**kwargs)
    return TrainState.create(cfg, CHANNELS, torch.device("cpu"), seed)


def train(state: TrainState, steps: int) -> None:
    """GAN-like D and G updates; randomness from the loop, host and global torch generators."""
    g, d = state.generator, state.discriminator
    for _ in range(steps):
        real = torch.rand(4, CHANNELS + 1, 32, 32, generator=state.rng) * 2 - 1
        real = real.flip(-1) if torch.rand((), generator=state.host_rng) < 0.5 else real
        real = real + 0.01 * torch.randn_like(real)  # the global CPU generator
        z = g.sample_latent(4, generator=state.rng)
        fake = g(z)
        loss_d = torch.nn.functional.softplus(-d(real)).mean() + \
            torch.nn.functional.softplus(d(fake.detach())).mean()
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()
        loss_g = torch.nn.functional.softplus(-d(fake)).mean()
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        state.opt_g.step()
        state.update_ema(0.9)
        state.step += 1


def snapshot(state: TrainState) -> dict:
    """Everything a resume must bring back, as plain copies."""
    out = {"step": state.step, "rng.loop": state.rng.get_state(),
           "rng.host": state.host_rng.get_state(), "rng.torch_cpu": torch.get_rng_state(),
           "opt_g": copy.deepcopy(state.opt_g.state_dict()["state"]),
           "opt_d": copy.deepcopy(state.opt_d.state_dict()["state"])}
    for name in ("generator", "discriminator"):
        out[name] = copy.deepcopy(getattr(state, name).state_dict())
    if state.ema is not None:
        out["ema"] = copy.deepcopy(state.ema.module.state_dict())
        out["ema.n_averaged"] = state.ema.n_averaged.clone()
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):  # a state dict, or optimiser state {idx: {name: tensor}}
            assert a[key].keys() == b[key].keys(), key
            for sub in a[key]:
                x, y = a[key][sub], b[key][sub]
                pairs = [(x[n], y[n]) for n in x] if isinstance(x, dict) else [(x, y)]
                for u, v in pairs:
                    assert torch.equal(torch.as_tensor(u), torch.as_tensor(v)), f"{key}.{sub}"
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("ema", [True, False])
def test_checkpoint_restore_round_trip_is_exact(tmp_path, ema) -> None:
    original = create(seed=0, ema=ema)
    train(original, 3)
    folder = original.checkpoint(tmp_path / "checkpoints", {**SIDECAR, "note": "test"})
    saved = snapshot(original)
    train(original, 2)  # the uninterrupted run goes on
    expected = snapshot(original)

    resumed = create(seed=99, ema=ema)  # other weights and streams until restored
    meta = resumed.restore(folder)
    assert meta["note"] == "test" and meta["step"] == 3
    assert_same(snapshot(resumed), saved)
    train(resumed, 2)
    assert_same(snapshot(resumed), expected)


def test_checkpoint_files_and_names(tmp_path) -> None:
    state = create()
    train(state, 1)
    folder = state.checkpoint(tmp_path, SIDECAR, stats={"images_per_s": 5.0})
    meta = read_sidecar(folder)
    assert set(meta["files"]) == {"generator.safetensors", "generator_ema.safetensors",
                                  "discriminator.safetensors", "training_state.safetensors"}
    assert set(meta["training"]) == {"opt_g", "opt_d", "scaler"}
    assert meta["training"]["scaler"] == {}  # AMP scaling is off on the CPU
    tensors = load_file(str(folder / "training_state.safetensors"))
    assert {"rng.loop", "rng.host", "rng.torch_cpu", "ema.n_averaged"} <= set(tensors)
    assert any(k.startswith("opt_g.") for k in tensors)
    assert any(k.startswith("opt_d.") for k in tensors)
    assert not any(".rank" in k for k in tensors)


def test_restore_keeps_the_configured_learning_rate(tmp_path) -> None:
    original = create(lr=1e-3)
    train(original, 1)
    folder = original.checkpoint(tmp_path, SIDECAR)
    resumed = create(lr=5e-5)
    resumed.restore(folder)
    assert [g["lr"] for g in (*resumed.opt_g.param_groups, *resumed.opt_d.param_groups)] == [
        5e-5, 5e-5]


def test_same_seed_same_state_other_seed_other_state() -> None:
    a, b, c = create(seed=1), create(seed=1), create(seed=2)
    assert_same(snapshot(a), snapshot(b))
    assert not torch.equal(a.rng.get_state(), c.rng.get_state())
    first = next(iter(a.generator.state_dict()))
    assert not torch.equal(a.generator.state_dict()[first], c.generator.state_dict()[first])


# ---- EMA calibration ----
def batchnorm_stats(state: TrainState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.ema.module.state_dict().items()
            if "running" in k or "num_batches" in k}


def count_forwards(state: TrainState) -> list[int]:
    calls = [0]
    state.ema.module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_calibrate_ema_runs_once_per_step_and_gives_the_same_statistics() -> None:
    state = create()
    train(state, 2)
    calls = count_forwards(state)
    state.calibrate_ema()
    first, runs = batchnorm_stats(state), calls[0]
    assert runs > 0 and state.calibrated_step == 2
    state.calibrate_ema()
    assert calls[0] == runs, "a second calibration at the same step ran the generator again"
    state.step += 1  # a new step with unchanged weights: calibrated again, to the same values
    state.calibrate_ema()
    assert calls[0] == 2 * runs
    after = batchnorm_stats(state)
    assert all(torch.equal(first[k], after[k]) for k in first)


def test_calibrate_ema_sets_statistics_for_the_averaged_weights() -> None:
    state = create()
    train(state, 3)
    stale = batchnorm_stats(state)
    state.calibrate_ema()
    fresh = batchnorm_stats(state)
    assert any(not torch.equal(stale[k], fresh[k]) for k in fresh if "running_mean" in k)
    assert state.ema.module.training  # the train/eval mode is given back


def test_calibrate_ema_does_not_touch_the_training_random_streams() -> None:
    state = create()
    train(state, 1)
    before = (state.rng.get_state(), state.host_rng.get_state(), torch.get_rng_state())
    state.calibrate_ema()
    after = (state.rng.get_state(), state.host_rng.get_state(), torch.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))


def test_sampling_generator_is_the_calibrated_ema_or_the_raw_generator() -> None:
    with_ema = create()
    train(with_ema, 1)
    assert with_ema.sampling_generator is with_ema.ema.module
    assert with_ema.calibrated_step == 1
    without = create(ema=False)
    without.calibrate_ema()  # nothing to calibrate
    assert without.sampling_generator is without.generator


# ---- one random state per rank ----
def rank_states(n: int) -> list[dict[str, torch.Tensor]]:
    """Distinct per-rank states, as torchrun ranks seeded ``seed + rank`` would have."""
    return [create(seed=10 + r).rng_state() for r in range(n)]


def test_rng_state_names() -> None:
    assert set(create().rng_state()) == {"rng.loop", "rng.torch_cpu", "rng.host"}


def test_each_rank_restores_its_own_stream(tmp_path) -> None:
    states = rank_states(3)
    state = create()
    folder = state.checkpoint(tmp_path, SIDECAR, rng_states=states)
    tensors = load_file(str(folder / "training_state.safetensors"))
    names = {k for k in tensors if k.startswith("rng.")}
    assert names == {f"{n}{suffix}" for n in ("rng.loop", "rng.torch_cpu", "rng.host")
                     for suffix in ("", ".rank1", ".rank2")}
    for rank in range(3):
        resumed = create(seed=50)
        resumed.restore(folder, rank=rank)
        assert torch.equal(resumed.rng.get_state(), states[rank]["rng.loop"]), rank
        assert torch.equal(resumed.host_rng.get_state(), states[rank]["rng.host"]), rank
        assert torch.equal(torch.get_rng_state(), states[rank]["rng.torch_cpu"]), rank


def test_a_rank_without_saved_state_keeps_its_fresh_stream(tmp_path, caplog) -> None:
    folder = create().checkpoint(tmp_path, SIDECAR, rng_states=rank_states(2))
    resumed = create(seed=50)
    fresh = resumed.rng.get_state()
    with caplog.at_level(logging.WARNING, logger="medgan.training.state"):
        resumed.restore(folder, rank=3)
    assert torch.equal(resumed.rng.get_state(), fresh)
    assert "no random state for rank 3" in caplog.text and str(folder) in caplog.text
