"""Properties of the mask post-processing on arbitrary generated mask channels (hypothesis).

The example-based tests are in tests/sampling/test_mask_postprocess.py; these check the
guarantees the written label maps rely on, for any input: binary uint8 of the same shape,
idempotent, no component below ``min_size`` (full connectivity), at most one component with
``keep_largest``, no enclosed hole when filling, and never a lesion voxel outside the filled
thresholded input.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import binary_fill_holes
from skimage.measure import label as connected_components

from medgan.sampling import postprocess_mask

SHAPES = st.one_of(
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8)),
)


@st.composite
def masks(draw) -> np.ndarray:
    """A mask channel in [-1, 1]: noise, or blobs (a coarse random pattern upsampled)."""
    shape = draw(SHAPES)
    if draw(st.booleans()):
        return draw(arrays(np.float32, shape, elements=st.floats(-1, 1, width=32)))
    coarse = draw(arrays(np.bool_, tuple(max(1, s // 3) for s in shape)))
    blobs = coarse
    for axis, size in enumerate(shape):
        blobs = np.repeat(blobs, 3, axis=axis).take(range(size), axis=axis, mode="clip")
    return np.where(blobs, 0.8, -0.8).astype(np.float32)


SETTINGS = st.fixed_dictionaries({
    "fill_holes": st.booleans(),
    "min_size": st.one_of(st.none(), st.integers(0, 30)),
    "keep_largest": st.booleans(),
})


def components(mask: np.ndarray) -> np.ndarray:
    """Sizes of the connected components (full connectivity, as the post-processing)."""
    labels = connected_components(mask, connectivity=mask.ndim)
    return np.bincount(labels.ravel())[1:]


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_binary_uint8_of_the_same_shape(mask, kw):
    out = postprocess_mask(mask, **kw)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    assert set(np.unique(out).tolist()) <= {0, 1}


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_idempotent(mask, kw):
    once = postprocess_mask(mask, **kw)
    np.testing.assert_array_equal(postprocess_mask(once.astype(np.float32), **kw), once)


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_no_component_smaller_than_min_size(mask, kw):
    out = postprocess_mask(mask, **kw)
    min_size = kw["min_size"] if kw["min_size"] is not None else {2: 10, 3: 20}[mask.ndim]
    assert (components(out) >= min_size).all()


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_keep_largest_leaves_at_most_one_component(mask, kw):
    out = postprocess_mask(mask, **{**kw, "keep_largest": True})
    sizes = components(out)
    assert len(sizes) <= 1
    if sizes.size:  # ... and it is the largest one that survived the other steps
        rest = postprocess_mask(mask, **{**kw, "keep_largest": False})
        assert sizes[0] == components(rest).max()


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_filled_masks_have_no_enclosed_hole(mask, kw):
    out = postprocess_mask(mask, **{**kw, "fill_holes": True})
    np.testing.assert_array_equal(binary_fill_holes(out).astype(np.uint8), out)


@settings(max_examples=150, deadline=None)
@given(masks(), SETTINGS)
def test_never_adds_lesion_outside_the_filled_input(mask, kw):
    out = postprocess_mask(mask, **kw)
    allowed = binary_fill_holes(mask > 0) if kw["fill_holes"] else mask > 0
    assert not (out.astype(bool) & ~allowed).any()
    if not (mask > 0).any():
        assert not out.any()
