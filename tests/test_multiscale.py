"""Multiscale pyramids (``max_scale``) of label and image arrays, kept up to date by every write.

Each level is compared with a pure-numpy pyramid recomputed from the full scale-0 volume
(2x2x2 groups, zero padding past odd edges as chunks are zero-filled there):

* labels: the most frequent non-zero label wins, ties go to the smallest label, a group of
  zeros stays zero (DVID ``downresArray``, reference §7.1);
* images: the mean rounded down.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_labels import new_repo, open_store

from diced.array.sparsevol import decode_rles, runs_to_mask
from diced.errors import InvalidArgumentError, LabelNotFoundError

BIG = 1 << 40


@pytest.fixture
def store(store_location):
    s = open_store(store_location)
    yield s
    s.close()


def _groups(v: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    v = np.pad(v, [(0, n % 2) for n in v.shape])
    z, y, x = (n // 2 for n in v.shape)
    return v.reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8), (z, y, x)


def down_labels(v: np.ndarray) -> np.ndarray:
    g, shape = _groups(v)
    g = np.sort(g, axis=1)  # ascending, so the first maximum is the smallest label
    votes = (g[:, :, None] == g[:, None, :]).sum(axis=2)
    votes[g == 0] = 0
    return g[np.arange(len(g)), votes.argmax(axis=1)].reshape(shape)


def down_image(v: np.ndarray) -> np.ndarray:
    g, shape = _groups(v)
    return (g.astype(np.uint64).sum(axis=1) // 8).astype(v.dtype).reshape(shape)


def pyramid(v: np.ndarray, levels: int, down) -> list[np.ndarray]:
    out = [v]
    for _ in range(levels):
        out.append(down(out[-1]))
    return out


def check_pyramid(arr, ref: np.ndarray, down, **read) -> None:
    for level, want in enumerate(pyramid(ref, arr.max_scale, down)):
        view = arr.scale(level)
        assert view.shape == want.shape
        got = view.read(..., **read) if read else view[...]
        np.testing.assert_array_equal(got, want, err_msg=f"scale {level}")
        ch = np.array(arr.chunks)
        nonzero = {tuple(c) for c in np.argwhere(want) // ch}
        assert set(view.stored_chunks()) == nonzero, f"scale {level} stores all-zero chunks"


def test_reference_rule_by_hand():
    """The numpy reference itself, on groups written out by hand."""
    cases = [
        ([0, 0, 0, 0, 0, 0, 0, 0], 0),
        ([0, 0, 0, 0, 0, 0, 0, 9], 9),  # any non-zero beats background, even 1 vs 7
        ([1, 1, 2, 2, 0, 0, 0, 0], 1),  # tie: smallest
        ([7, 7, 3, 3, 5, 5, 0, 0], 3),
        ([4, 4, 4, 2, 2, 2, 2, 0], 2),
        ([BIG + 1, BIG + 1, BIG, 6, 6, 0, 0, 0], 6),
        ([8, 1, 2, 3, 4, 5, 6, 7], 1),
    ]
    for vals, want in cases:
        v = np.array(vals, np.uint64).reshape(2, 2, 2)
        assert int(down_labels(v)[0, 0, 0]) == want
    assert down_labels(np.ones((3, 5, 1), np.uint64)).shape == (2, 3, 1)
    img = np.arange(248, 256, dtype=np.uint8).reshape(2, 2, 2)
    assert int(down_image(img)[0, 0, 0]) == sum(range(248, 256)) // 8 == 251


SHAPE, CHUNKS = (100, 70, 90), (32, 32, 32)


@st.composite
def writes(draw, shape=SHAPE):
    ops = []
    for _ in range(draw(st.integers(1, 5))):
        lo = [draw(st.integers(0, n - 1)) for n in shape]
        hi = [draw(st.integers(a + 1, min(n, a + 50))) for a, n in zip(lo, shape, strict=True)]
        kind = draw(st.sampled_from(["const", "noise", "zero", "halves"]))
        ops.append((tuple(lo), tuple(hi), kind, draw(st.integers(0, 2**31))))
    return ops


def label_value(shape, kind, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = np.array([0, 1, 2, 3, 11, BIG + 5], np.uint64)
    if kind == "const":
        return np.full(shape, pool[1 + seed % 5], np.uint64)
    if kind == "zero":
        return np.zeros(shape, np.uint64)
    if kind == "halves":  # sharp boundaries at odd positions: ties and edge groups
        out = np.full(shape, pool[1 + seed % 5], np.uint64)
        out[: shape[0] // 2] = pool[1 + (seed // 5) % 5]
        return out
    return pool[rng.integers(0, len(pool), shape)]


def test_label_pyramid_random_writes(store, store_location):
    @settings(max_examples=6 if store_location.kind == "lmdb" else 2, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(ops=writes())
    def run(ops):
        L = new_repo(store).create_labels("seg", SHAPE, chunks=CHUNKS, max_scale=3)
        ref = np.zeros(SHAPE, np.uint64)
        for lo, hi, kind, seed in ops:
            sel = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            val = label_value(ref[sel].shape, kind, seed)
            L[sel] = val
            ref[sel] = val
        check_pyramid(L, ref, down_labels, supervoxels=True)

    run()


def test_label_pyramid_write_blocks_and_clear(store):
    L = new_repo(store).create_labels("seg", (128, 128, 64), chunks=(32, 32, 32), max_scale=2)
    rng = np.random.default_rng(0)
    ref = np.zeros(L.shape, np.uint64)
    coords = [(0, 0, 0), (1, 0, 0), (3, 3, 1), (2, 1, 0)]
    blocks = [rng.integers(0, 3, (32, 32, 32)).astype(np.uint64) * np.uint64(i + 1)
              for i in range(len(coords))]
    L.write_blocks(np.array(coords), blocks)
    for (z, y, x), b in zip(coords, blocks, strict=True):
        ref[z * 32:(z + 1) * 32, y * 32:(y + 1) * 32, x * 32:(x + 1) * 32] = b
    check_pyramid(L, ref, down_labels)
    # clear one octant, then everything: lower levels follow, all-zero chunks vanish
    L[0:32, 0:32, 0:32] = 0
    ref[0:32, 0:32, 0:32] = 0
    check_pyramid(L, ref, down_labels)
    L[...] = 0
    for level in range(3):
        assert L.scale(level).stored_chunks() == []
        assert not L.scale(level)[...].any()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_image_pyramid_random_writes(store, store_location, dtype):
    info = np.iinfo(dtype)

    @settings(max_examples=4 if store_location.kind == "lmdb" else 2, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(ops=writes())
    def run(ops):
        arr = new_repo(store).create_array("img", dtype, SHAPE, chunks=CHUNKS, max_scale=2)
        ref = np.zeros(SHAPE, dtype)
        for lo, hi, kind, seed in ops:
            sel = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            shape = ref[sel].shape
            rng = np.random.default_rng(seed)
            if kind == "zero":
                val = np.zeros(shape, dtype)
            elif kind == "const":
                val = np.full(shape, info.max - seed % 3, dtype)  # sums overflow the dtype
            else:
                val = rng.integers(0, int(info.max) + 1, shape).astype(dtype)
            arr[sel] = val
            ref[sel] = val
        check_pyramid(arr, ref, down_image)

    run()


def test_scale_views_are_read_only(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    L[0:20, 0:20, 0:20] = 4
    L[30:40, 0:20, 0:20] = 5
    img = repo.create_array("img", "uint8", (64, 64, 64), chunks=(16, 16, 16), max_scale=1)
    for view in (L.scale(1), L.scale(2), img.scale(1)):
        with pytest.raises(InvalidArgumentError):
            view[0, 0, 0] = 1
        with pytest.raises(InvalidArgumentError):
            view[...] = 0
    lo = L.scale(1)
    for call in (lambda: lo.write_blocks([[0, 0, 0]], [np.ones((16,) * 3, np.uint64)]),
                 lambda: lo.merge(4, [5]), lambda: lo.cleave(4, [4]), lambda: lo.renumber(9, 4),
                 lambda: lo.split_supervoxel(4, (np.ones((2, 2, 2), bool), (0, 0, 0)))):
        with pytest.raises(InvalidArgumentError):
            call()
    for bad in (3, -1, 1.0):
        with pytest.raises(InvalidArgumentError):
            L.scale(bad)
    with pytest.raises(InvalidArgumentError):
        img.scale(2)
    assert L.scale(1).shape == (32, 32, 32) and L.scale(2).shape == (16, 16, 16)
    assert L.count(4) == 8000 and L.count(5) == 4000  # nothing changed
    L.scale(0)[0, 0, 0] = 6  # scale 0 is the array itself
    assert int(L[0, 0, 0]) == 6


def test_sparsevol_at_scale_1(store):
    repo = new_repo(store)
    shape = (96, 80, 112)
    L = repo.create_labels("seg", shape, chunks=(32, 32, 32), max_scale=2)
    rng = np.random.default_rng(3)
    vol = np.zeros(shape, np.uint64)
    for lab in range(1, 12):
        z, y, x = rng.integers(0, 60, 3)
        d = rng.integers(5, 40, 3)
        vol[z:z + d[0], y:y + d[1], x:x + d[2]] = lab
    vol[rng.random(shape) < 0.02] = 3  # speckle: survives or not at scale 1 by majority
    L[...] = vol
    levels = pyramid(vol, 2, down_labels)
    for scale in (1, 2):
        lo = levels[scale]
        for lab in range(1, 12):
            if not (vol == lab).any():
                continue
            runs = decode_rles(L.sparsevol(lab, scale=scale))
            np.testing.assert_array_equal(runs_to_mask(runs, (0, 0, 0), lo.shape), lo == lab)
            assert int(runs[:, 3].sum()) == int((lo == lab).sum())
            coords = L.sparsevol(lab, scale=scale, format="coords")
            assert len(coords) == int((lo == lab).sum())
    # bodies at scale 1: the mapping applies to the lores supervoxels
    L.merge(2, [5, 7])
    body = levels[1].copy()
    body[np.isin(body, [5, 7])] = 2
    runs = decode_rles(L.sparsevol(2, scale=1))
    np.testing.assert_array_equal(runs_to_mask(runs, (0, 0, 0), body.shape), body == 2)
    runs = decode_rles(L.sparsevol(2, scale=1, supervoxels=True))
    np.testing.assert_array_equal(runs_to_mask(runs, (0, 0, 0), body.shape), levels[1] == 2)
    np.testing.assert_array_equal(L.scale(1)[...], body)
    with pytest.raises(LabelNotFoundError):
        L.sparsevol(99, scale=1)


def test_pyramid_follows_resize(store):
    L = new_repo(store).create_labels("seg", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    rng = np.random.default_rng(4)
    vol = rng.integers(1, 4, (64, 64, 64)).astype(np.uint64)
    L[...] = vol
    L.resize((64, 45, 37))  # odd edges: lores voxels straddling the cut change
    check_pyramid(L, vol[:, :45, :37], down_labels)


def test_image_pyramid_follows_resize(store):
    img = new_repo(store).create_array("img", "uint8", (64, 64, 64), chunks=(16, 16, 16),
                                       max_scale=2)
    vol = np.random.default_rng(4).integers(0, 256, (64, 64, 64)).astype(np.uint8)
    img[...] = vol
    img.resize((64, 45, 37))
    check_pyramid(img, vol[:, :45, :37], down_image)


def test_pyramid_is_versioned(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    v0 = np.zeros(L.shape, np.uint64)
    v0[0:40, 0:40, 0:40] = 1
    L[...] = v0
    root = repo.commit()
    repo.newversion()
    v1 = v0.copy()
    v1[10:30, 5:63, 20:21] = 2
    v1[50:64, 50:64, 50:64] = 3
    L[10:30, 5:63, 20:21] = 2
    L[50:64, 50:64, 50:64] = 3
    check_pyramid(L, v1, down_labels)
    check_pyramid(repo.version(root.uuid).labels("seg"), v0, down_labels)


def test_each_write_updates_the_pyramid_once(store):
    """A label write recomputes each lower-resolution chunk once (twice before the fix)."""
    L = new_repo(store).create_labels("seg", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    calls = []
    orig = L._update_pyramid

    def spy(ctx, coords):
        calls.append(sorted(set(coords)))
        return orig(ctx, coords)

    L._update_pyramid = spy
    L[0:20, 0:20, 0:20] = 3
    assert len(calls) == 1
    L.write_blocks([[3, 3, 3]], [np.full((16, 16, 16), 4, np.uint64)])
    assert len(calls) == 2
    ref = np.zeros(L.shape, np.uint64)
    ref[0:20, 0:20, 0:20] = 3
    ref[48:, 48:, 48:] = 4
    check_pyramid(L, ref, down_labels)


@pytest.mark.parametrize("kind", ["labels", "image"])
def test_pyramid_after_repo_merge(store, kind):
    """A lower-resolution chunk above scale-0 chunks written on different branches shows both
    sides at the merge (repo.merge rebuilds pyramid levels from the merged scale 0)."""
    repo = new_repo(store)
    if kind == "labels":
        repo.create_labels("a", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    else:
        repo.create_array("a", "uint8", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    root = repo.commit()
    x = repo.branch("x")
    x.array("a")[0:16, 0:16, 0:16] = 7  # same scale-1 chunk, different scale-0 chunks
    repo.commit()
    y = repo.branch("y", parent=root.uuid)
    y.array("a")[16:32, 16:32, 16:32] = 9
    repo.commit()
    merged = repo.merge(x.uuid, y.uuid).array("a")
    full = merged[...]
    assert int((full == 7).sum()) == int((full == 9).sum()) == 16 ** 3
    check_pyramid(merged, full, down_labels if kind == "labels" else down_image)


def test_scale_origin_is_floor_of_origin_over_two_to_the_n(store):
    repo = new_repo(store)
    img = repo.create_array("img", "uint8", (32, 32, 32), chunks=(8, 8, 8), max_scale=2,
                            origin=(-5, 7, 12))
    img.abs[-5:-3, 7:9, 12:14] = 9
    assert img.origin == (-5, 7, 12) and img.scale(0).origin == (-5, 7, 12)
    assert img.scale(1).origin == (-3, 3, 6)  # floor, as the exports write voxel_offset
    assert img.scale(2).origin == (-2, 1, 3)
    assert img.scale(2).scale(1).origin == (-3, 3, 6)  # a level is always from level 0
    assert img.scale(2).info()["origin"] == (-2, 1, 3)
    # absolute indexing at a scale uses that scale's origin
    assert img.scale(1).abs[-3, 3, 6] == img.scale(1)[0, 0, 0]
    from diced.export.zarr_view import DicedZarrStore

    for level in (0, 1, 2):
        attrs = DicedZarrStore(img, scale=level)._meta_bytes
        import json

        assert json.loads(attrs)["attributes"]["diced"]["origin"] == list(
            img.scale(level).origin)
