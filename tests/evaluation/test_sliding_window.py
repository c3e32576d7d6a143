"""The slice-stack sliding window gives MONAI's logits to the bit, and the same predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medgan.evaluation.segmentation_run import (
    BACKGROUND,
    BenchmarkSettings,
    body_box,
    build_unet,
    segment_volume,
)
from medgan.evaluation.sliding_window import scan_interval, sliding_window_slices

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_inference import body_box_v01  # noqa: E402  (0.1's body_box, kept there verbatim)


def reference_logits(net, slices: torch.Tensor, patch_size: int, sw_batch_size: int,
                     overlap: float, group: int) -> torch.Tensor:
    """The previous path: MONAI's sliding_window_inference on each group of slices."""
    with torch.no_grad():
        return torch.cat([
            sliding_window_inference(slices[z:z + group], (patch_size,) * 2, sw_batch_size,
                                     net, overlap=overlap, mode="gaussian", cval=BACKGROUND)
            for z in range(0, len(slices), group)])


def scan(shape: tuple[int, ...], channels: int = 1, seed: int = 0) -> torch.Tensor:
    """``(C, X, Y, Z)`` body-like ellipse of random tissue in a background of -1."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.meshgrid(torch.linspace(-1, 1, shape[0]), torch.linspace(-1, 1, shape[1]),
                          indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    image = torch.full((channels, *shape), BACKGROUND)
    image[:, body] = torch.rand(channels, int(body.sum()), shape[2], generator=g) * 2 - 1
    return image


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(2, 1, BenchmarkSettings.fast()).eval()


@pytest.mark.parametrize(("shape", "sw_batch_size", "group"), [
    ((70, 45, 40), 16, 32),   # two groups, batches that straddle slices
    ((70, 45, 9), 7, 4),      # odd batch and group sizes
    ((20, 50, 5), 1, 32),     # slices narrower than the window: padded; one window per batch
    ((32, 32, 3), 16, 32),    # one window per slice
])
def test_logits_equal_monai(net, shape, sw_batch_size, group):
    slices = scan(shape).permute(3, 0, 1, 2)  # (Z, C, X, Y), not contiguous, as in use
    expected = reference_logits(net, slices, 32, sw_batch_size, 0.25, group)
    got = sliding_window_slices(net, slices, 32, sw_batch_size, 0.25, BACKGROUND,
                                torch.device("cpu"), group=group)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_two_channel_input():
    torch.manual_seed(1)
    net = build_unet(2, 2, BenchmarkSettings.fast()).eval()
    slices = scan((50, 60, 6), channels=2).permute(3, 0, 1, 2)
    expected = reference_logits(net, slices, 32, 16, 0.25, 32)
    assert torch.equal(sliding_window_slices(net, slices, 32, 16, 0.25, BACKGROUND,
                                             torch.device("cpu")), expected)


def test_segment_volume_predictions_equal_the_previous_path(net):
    """The whole-scan prediction: body box, slice stack, threshold; identical voxels."""
    settings = BenchmarkSettings.fast()
    image = torch.full((1, 90, 80, 12), BACKGROUND)
    image[:, 10:75, 8:70, 1:11] = scan((65, 62, 10), seed=3)
    pred = segment_volume(net, image, 2, 32, settings, torch.device("cpu"))
    box = body_box(image)
    crop = image[(slice(None), *box)].permute(3, 0, 1, 2)
    expected = np.zeros(image.shape[1:], dtype=bool)
    logits = reference_logits(net, crop, 32, settings.sw_batch_size, settings.sw_overlap, 32)
    expected[box] = (logits[:, 0] > 0).permute(1, 2, 0).numpy()
    assert 0 < expected.sum() < expected.size  # both classes present: a real comparison
    assert np.array_equal(pred, expected)


def test_scan_interval_follows_monai():
    assert scan_interval((100, 64), (64, 64), 0.25) == (48, 64)
    assert scan_interval((100, 100), (2, 2), 0.75) == (1, 1)


class CountingNet(torch.nn.Module):
    """Wraps a network and counts the windows it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.windows = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += len(x)
        return self.net(x)


def test_constant_windows_are_predicted_once_with_the_same_logits(net):
    """Slices above and below the body and the box corners hold background only: they are
    predicted once per scan, and the logits stay MONAI's to the bit."""
    image = scan((90, 80, 6))
    slices = torch.cat([torch.full((3, 1, 90, 80), BACKGROUND), image.permute(3, 0, 1, 2),
                        torch.full((3, 1, 90, 80), BACKGROUND)])
    counting = CountingNet(net)
    expected = reference_logits(net, slices, 32, 16, 0.25, 32)
    got = sliding_window_slices(counting, slices, 32, 16, 0.25, BACKGROUND,
                                torch.device("cpu"))
    full = CountingNet(net)
    sliding_window_slices(full, slices, 32, 16, 0.25, BACKGROUND, torch.device("cpu"),
                          skip_constant=False)
    assert torch.equal(got, expected)
    assert full.windows == 12 * 12  # 4 x 3 windows per slice
    assert counting.windows <= 6 * 12 + 16  # the empty slices' windows: one batch in all


def test_inference_threads_give_the_same_logits(net):
    """segment_volume's ``threads`` changes the CPU threads, not a single logit."""
    slices = scan((90, 80, 8), seed=5).permute(3, 0, 1, 2)
    previous = torch.get_num_threads()
    one = sliding_window_slices(net, slices, 32, 16, 0.25, BACKGROUND, torch.device("cpu"))
    from medgan.threads import torch_threads

    with torch_threads(2):
        assert torch.get_num_threads() == 2
        two = sliding_window_slices(net, slices, 32, 16, 0.25, BACKGROUND,
                                    torch.device("cpu"))
    assert torch.get_num_threads() == previous
    assert torch.equal(one, two)


@pytest.mark.parametrize("channels", [1, 2])
def test_body_box_equals_the_previous_one(channels):
    """Random boxes (touching the edges too), empty scans, NaN voxels, 1 and 2 channels."""
    g = torch.Generator().manual_seed(channels)
    for trial in range(40):
        image = torch.full((channels, 30, 25, 12), BACKGROUND)
        if trial % 10:  # every tenth scan stays empty
            lo = [int(torch.randint(0, s, (1,), generator=g)) for s in image.shape[1:]]
            hi = [int(torch.randint(a + 1, s + 1, (1,), generator=g))
                  for a, s in zip(lo, image.shape[1:], strict=True)]
            c = int(torch.randint(0, channels, (1,), generator=g))
            image[c, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = torch.rand(
                hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], generator=g)
        if trial % 7 == 3:
            image[0, 0, 0, 0] = float("nan")
        assert body_box(image) == body_box_v01(image), trial
