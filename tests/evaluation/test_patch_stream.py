"""Like-for-like arms: the same base patches everywhere, the asked share of added lesions in
every arm, and one stopping rule (best validation Dice) for all."""

from __future__ import annotations

import pytest
import torch

from medgan.evaluation.segmentation_run import (
    BenchmarkSettings,
    PatchStream,
    context_roi,
    prepare_training_case,
    train_unet,
)


@pytest.fixture(scope="module")
def items(phantom_data):
    from medgan.config import config_from_dict
    from medgan.evaluation.segmentation import load_cases

    cfg = config_from_dict({"modality": "ct", "spatial_dims": 2,
                            "data": {"patch_size": 32, "spacing_mm": [1.0, 1.0, 1.0]}})
    return [prepare_training_case(c, context_roi(2, 32))
            for c in load_cases(phantom_data, cfg, progress=False)[:3]]


class DiskGenerator(torch.nn.Module):
    """Stub generator: a bright disk (radius 5) with its mask in the centre of a 32 x 32 patch."""

    latent_dim = 4

    def sample_latent(self, n: int, generator=None, device=None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        disk = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 25).float()
        image = (0.2 + 0.6 * disk).expand(len(z), 1, 32, 32)
        return torch.cat([image, disk.expand(len(z), 1, 32, 32) * 2 - 1], dim=1)


def stub_generator(tmp_path):
    from helpers_checkpoint import make_checkpoint

    from medgan.sampling import LoadedGenerator, load_generator

    real = load_generator(make_checkpoint(tmp_path / "g", patch_size=32,
                                          spacing_mm=(1.0, 1.0, 1.0)))
    return LoadedGenerator(DiskGenerator(), {**real.metadata, "latent_dim": 4},
                           real.checkpoint_path, "stub", torch.device("cpu"))


def test_base_patches_are_identical_in_every_arm(items) -> None:
    s = BenchmarkSettings.fast(ratio=0.25)  # 4 base + 2 lesion-centred patches per step
    plain = PatchStream(items, 2, 32, s, seed=1, augment=False)
    synth = PatchStream(items, 2, 32, s, seed=1, augment=False,
                        synthetic=(torch.full((1, 1, 32, 32), 7.0), torch.ones(1, 1, 32, 32)))
    for _ in range(4):
        (a, la), (b, lb) = plain.next(), synth.next()
        assert a.shape == b.shape == (6, 1, 32, 32)
        assert torch.equal(a[:4], b[:4]) and torch.equal(la[:4], lb[:4])
        assert la[4:].flatten(1).amax(1).eq(1).all()  # lesion slots are centred on a lesion
        changed = b[4:].flatten(1).eq(7.0).all(1)  # synthetic ones only ever in lesion slots
        assert torch.equal(a[4:][~changed], b[4:][~changed])
    assert synth.n_added == round(0.25 * synth.n_items)


@pytest.mark.parametrize("arm", ["insert", "carvemix"])
def test_realised_share_equals_the_ratio(items, tmp_path, arm) -> None:
    from medgan.augment import RandSyntheticLesiond
    from medgan.augment.carvemix import RandCarveMixd, build_lesion_snippets

    keys = ("image", "label")
    transform = (RandSyntheticLesiond(keys, generator=stub_generator(tmp_path), prob=1.0,
                                      foreground_key="foreground") if arm == "insert"
                 else RandCarveMixd(keys, build_lesion_snippets(items, 2), prob=1.0,
                                    foreground_key="foreground"))
    s = BenchmarkSettings.fast(ratio=0.25)
    stream = PatchStream(items, 2, 32, s, seed=0, augment=False, arm_transform=transform)
    plain = PatchStream(items, 2, 32, s, seed=0, augment=False)
    for _ in range(6):
        (a, _), (b, _) = stream.next(), plain.next()
        differs = (a != b).flatten(1).any(1)
        assert 1 <= int(differs.sum()) <= 2  # 0.25 x 6 patches: 1 or 2 per step
    assert stream.n_added == round(0.25 * stream.n_items) == 9


class Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.w


class Stream:
    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones(2, 1, 8, 8), torch.ones(2, 1, 8, 8)


def test_best_validation_weights_are_kept_and_patience_stops() -> None:
    net = Scripted()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    seen = []

    def validate() -> float:
        seen.append(float(net.w.detach()))
        return next(scores)

    s = BenchmarkSettings.fast(iterations=50, eval_every=5, patience=2, learning_rate=0.1)
    log = train_unet(net, Stream(), s, torch.device("cpu"), validate)
    assert [it for it, _ in log.curve] == [5, 10, 15, 20]  # stopped before the 0.9
    assert log.best_iteration == 10 and log.stopped_at == 20 and log.best_dice == 0.5
    assert float(net.w.detach()) == pytest.approx(seen[1])  # the weights validated at iteration 10


def test_without_validation_the_last_weights_are_kept() -> None:
    log = train_unet(Scripted(), Stream(), BenchmarkSettings.fast(iterations=7),
                     torch.device("cpu"))
    assert log.curve == [] and log.best_iteration == log.stopped_at == 7 and len(log.losses) == 7


def test_placement_range_restricts_where_lesions_may_go(items) -> None:
    """``placement_range``: allowed voxels are body voxels of the central patch whose first
    channel is within the range (model units), the same rule for every arm."""
    whole = PatchStream(items, 2, 32, BenchmarkSettings.fast(ratio=0.25), seed=0, augment=False)
    ctx = whole._context(whole.crop_base, whole.pick, whole.cases)
    body = ctx["foreground"]
    values = ctx["image"][:1][body]
    low, high = float(values.quantile(0.25)), float(values.quantile(0.75))
    ranged = PatchStream(items, 2, 32, BenchmarkSettings.fast(ratio=0.25,
                                                              placement_range=(low, high)),
                         seed=0, augment=False)
    same = ranged._context(ranged.crop_base, ranged.pick, ranged.cases)
    assert torch.equal(same["image"], ctx["image"])  # the same crop: only the mask differs
    allowed = same["foreground"]
    assert allowed.any() and not (allowed & ~body).any()
    inside = (ctx["image"][:1] >= low) & (ctx["image"][:1] <= high)
    assert torch.equal(allowed, body & inside)
    assert int(allowed.sum()) < int(body.sum())
