"""Per-block label statistics (diced.array.labelstats) against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diced.array.labelstats import (
    block_label_counts,
    label_bbox_in_block,
    mask_of_labels,
    relabel,
    relabel_inplace,
)
from diced.errors import DtypeError, InvalidArgumentError, ShapeMismatchError

BIG = 2**64 - 1
shapes = hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=10)
special = [0, 1, 2, 63, 64, 2**32, 2**63, BIG - 1, BIG]


@st.composite
def label_blocks(draw, shape=shapes):
    """uint64 blocks with few or many labels, runs, and extreme ids."""
    shp = draw(shape)
    n_labels = draw(st.sampled_from([1, 2, 5, 40, 300]))
    palette = draw(
        st.lists(
            st.one_of(st.sampled_from(special), st.integers(0, BIG)),
            min_size=1,
            max_size=n_labels,
            unique=True,
        )
    )
    a = draw(hnp.arrays(np.uint64, shp, elements=st.sampled_from(palette)))
    if draw(st.booleans()):  # runs along x, like real segmentation
        a = np.repeat(a[..., :1], shp[2], axis=2) if shp[2] else a
    return a


def ref_bbox(a, label):
    hits = np.argwhere(a == label)
    if len(hits) == 0:
        return None
    return tuple(int(v) for v in (*hits.min(0), *hits.max(0)))


# -- counts -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(label_blocks())
def test_counts_match_np_unique(a):
    labels, counts = block_label_counts(a)
    u, c = np.unique(a, return_counts=True)
    assert labels.dtype == np.uint64 and counts.dtype == np.int64
    np.testing.assert_array_equal(labels, u)
    np.testing.assert_array_equal(counts, c)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([np.int8, np.uint8, np.int16, np.uint32, np.int64]), st.data())
def test_counts_other_dtypes(dtype, data):
    a = data.draw(hnp.arrays(dtype, hnp.array_shapes(max_dims=4, max_side=8)))
    labels, counts = block_label_counts(a)
    u, c = np.unique(a, return_counts=True)
    assert labels.dtype == a.dtype
    np.testing.assert_array_equal(labels, u)
    np.testing.assert_array_equal(counts, c)


def test_counts_many_labels_and_edge_cases():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, (64, 64, 64), dtype=np.uint64) * 2  # ~262k distinct labels
    labels, counts = block_label_counts(a)
    u, c = np.unique(a, return_counts=True)
    np.testing.assert_array_equal(labels, u)
    np.testing.assert_array_equal(counts, c)
    labels, counts = block_label_counts(np.zeros((0, 4), np.uint64))
    assert labels.size == 0 and counts.size == 0
    labels, counts = block_label_counts(np.full((64, 64, 64), BIG, np.uint64))
    assert labels.tolist() == [BIG] and counts.tolist() == [64**3]
    with pytest.raises(DtypeError):
        block_label_counts(np.zeros(4, np.float64))


def test_counts_non_contiguous():
    a = np.arange(60, dtype=np.uint64).reshape(3, 4, 5) % 7
    labels, counts = block_label_counts(a.transpose(2, 0, 1)[::2])
    u, c = np.unique(a.transpose(2, 0, 1)[::2], return_counts=True)
    np.testing.assert_array_equal(labels, u)
    np.testing.assert_array_equal(counts, c)


# -- bounding boxes -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(label_blocks(), st.sampled_from(special))
def test_bbox_matches_argwhere(a, label):
    assert label_bbox_in_block(a, label) == ref_bbox(a, label)
    first = int(a.flat[0])
    assert label_bbox_in_block(a, first) == ref_bbox(a, first)


def test_bbox_by_hand():
    a = np.zeros((5, 6, 7), np.uint64)
    a[1, 4, 2] = 9
    a[3, 0, 5] = 9
    assert label_bbox_in_block(a, 9) == (1, 0, 2, 3, 4, 5)
    assert label_bbox_in_block(a, 8) is None
    assert label_bbox_in_block(a, -1) is None  # not representable: absent
    assert label_bbox_in_block(a, 0) == (0, 0, 0, 4, 5, 6)
    with pytest.raises(InvalidArgumentError):
        label_bbox_in_block(np.zeros((4, 4), np.uint64), 0)


# -- masks --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(label_blocks(), st.lists(st.sampled_from(special), max_size=5, unique=True))
def test_mask_matches_isin(a, labels):
    sorted_labels = np.array(sorted(labels), dtype=np.uint64)
    np.testing.assert_array_equal(mask_of_labels(a, sorted_labels), np.isin(a, sorted_labels))
    np.testing.assert_array_equal(mask_of_labels(a, sorted(labels)), np.isin(a, sorted_labels))


def test_mask_argument_errors():
    a = np.zeros((2, 2, 2), np.uint64)
    with pytest.raises(InvalidArgumentError):
        mask_of_labels(a, [3, 1])
    np.testing.assert_array_equal(mask_of_labels(a, [0, 0, 1]), np.ones_like(a, bool))
    with pytest.raises(InvalidArgumentError):
        mask_of_labels(a, [-1])
    with pytest.raises(DtypeError):
        mask_of_labels(a, np.array([1.0]))
    assert not mask_of_labels(a, []).any()


# -- relabel ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    label_blocks(), st.dictionaries(st.sampled_from(special), st.sampled_from(special), max_size=6)
)
def test_relabel_matches_dict(a, mapping):
    keys = np.array(sorted(mapping), dtype=np.uint64)
    values = np.array([mapping[k] for k in sorted(mapping)], dtype=np.uint64)
    expected = np.array([mapping.get(int(v), int(v)) for v in a.ravel()], dtype=np.uint64).reshape(
        a.shape
    )
    before = a.copy()
    got = relabel(a, keys, values)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(a, before)  # relabel copies
    relabel_inplace(a, keys, values)
    np.testing.assert_array_equal(a, expected)


def test_relabel_inplace_non_contiguous_and_lists():
    a = np.arange(24, dtype=np.uint64).reshape(2, 3, 4)
    view = a.transpose(2, 1, 0)[::2]
    relabel_inplace(view, [0, 2, 8], [BIG, 0, 5])
    assert a[0, 0, 0] == BIG and a[0, 0, 2] == 0 and a[0, 2, 0] == 5
    assert a[0, 0, 1] == 1  # x = 1 is outside the view: untouched
    b = np.array([[[1, 2, 3]]], np.int16)
    np.testing.assert_array_equal(relabel(b, [-5, 2], [0, -2]), [[[1, -2, 3]]])


def test_relabel_argument_errors():
    a = np.zeros((2, 2, 2), np.uint64)
    with pytest.raises(InvalidArgumentError):
        relabel(a, [2, 1], [0, 0])
    with pytest.raises(ShapeMismatchError):
        relabel(a, [1, 2], [0])
    with pytest.raises(InvalidArgumentError):
        relabel(a, [1], [-1])
    with pytest.raises(InvalidArgumentError):
        relabel(np.zeros(3, np.uint8), [1], [256])
    ro = np.zeros(3, np.uint64)
    ro.flags.writeable = False
    with pytest.raises(InvalidArgumentError):
        relabel_inplace(ro, [0], [1])
    with pytest.raises(DtypeError):
        relabel(np.zeros(3, np.float32), [0], [1])
    np.testing.assert_array_equal(relabel(a, [], []), a)
