"""Selection planning (normalize_selection + project) and VersionedArray reads and writes,
property-tested against plain numpy arrays."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diced
from diced.array.indexing import normalize_selection, project
from diced.errors import (
    DtypeError,
    IndexOutOfBoundsError,
    InvalidArgumentError,
    InvalidIndexError,
    LockedNodeError,
    ShapeMismatchError,
)
from diced.testing.memory import forget_memory

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]

PROPS = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STORE_PROPS = settings(max_examples=50, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                              HealthCheck.function_scoped_fixture])


# -- strategies ---------------------------------------------------------------------------------

_MAX_SIDE = {1: 12, 2: 9, 3: 6, 4: 4}  # at most a few hundred elements
shapes = st.integers(1, 4).flatmap(
    lambda d: st.lists(st.integers(0, _MAX_SIDE[d]), min_size=d, max_size=d).map(tuple))


def chunks_for(shape):
    return st.tuples(*(st.integers(1, 5) for _ in shape))


@st.composite
def selections(draw, shape):
    """A numpy basic-indexing selection for ``shape``: ints (negative too, numpy ints too),
    slices with any bounds and steps (negative too), at most one Ellipsis, any number of None."""
    items: list = []
    for n in shape:
        if n > 0 and draw(st.integers(0, 3)) == 0:
            i = draw(st.integers(-n, n - 1))
            items.append(np.int64(i) if draw(st.booleans()) else i)
        else:
            bound = st.none() | st.integers(-n - 3, n + 3)
            step = st.none() | st.integers(-4, 4).filter(bool)
            items.append(slice(draw(bound), draw(bound), draw(step)))
    # leave trailing axes implicit
    cut = draw(st.integers(0, len(items)))
    if draw(st.booleans()):
        items = items[:cut]
    # replace a run of axes by an Ellipsis
    if draw(st.booleans()):
        i = draw(st.integers(0, len(items)))
        j = draw(st.integers(i, len(items)))
        items = items[:i] + [Ellipsis] + items[j:]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


def _numpy_or_index_error(src: np.ndarray, sel):
    """``src[sel]``; or, where numpy raises IndexError (an integer out of range once an
    Ellipsis is expanded, say), check that diced raises IndexOutOfBoundsError and give None."""
    try:
        return src[sel]
    except IndexError:
        with pytest.raises(IndexOutOfBoundsError):
            normalize_selection(sel, src.shape)
        return None


# -- the pure planner -----------------------------------------------------------------------


def _chunk_box(coords, chunks, shape):
    lo = [c * k for c, k in zip(coords, chunks)]
    hi = [min(l + k, n) for l, k, n in zip(lo, chunks, shape)]
    return lo, hi


@PROPS
@given(data=st.data())
def test_project_equals_numpy(data):
    shape = data.draw(shapes, label="shape")
    chunks = data.draw(chunks_for(shape), label="chunks")
    sel = data.draw(selections(shape), label="selection")
    src = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    expected = _numpy_or_index_error(src, sel)
    if expected is None:
        return

    s = normalize_selection(sel, shape)
    assert s.result_shape == np.shape(expected)
    assert len(s.dims) == len(shape)
    out = np.full(s.shape, -1, dtype=np.int64)
    count = np.zeros(s.shape, dtype=np.int64)
    seen = set()
    for p in project(s, chunks, shape):
        assert p.coords not in seen, "a chunk was projected twice"
        seen.add(p.coords)
        lo, hi = _chunk_box(p.coords, chunks, shape)
        padded = np.full(chunks, -2, dtype=np.int64)  # -2 marks "outside the array"
        padded[tuple(slice(0, h - l) for l, h in zip(lo, hi))] = src[
            tuple(slice(l, h) for l, h in zip(lo, hi))]
        got = padded[p.chunk_sel]
        assert (got >= 0).all(), "projection reads outside the array"
        out[p.out_sel] = got
        count[p.out_sel] += 1
        covers = all(
            (sl.step in (None, 1)) and sl.indices(k)[:2] == (0, h - l)
            for sl, k, l, h in zip(p.chunk_sel, chunks, lo, hi))
        if p.full:
            assert covers
        elif all(d.step > 0 for d in s.dims):
            assert not covers, "a fully covered chunk was not marked full"
    assert (count == 1).all(), "every selected element comes from exactly one chunk"
    result = out.reshape(s.result_shape)
    assert np.array_equal(result, expected)
    wanted = set(itertools.product(*(
        sorted({i // c for i in range(d.start, d.stop, d.step)})
        for d, c in zip(s.dims, chunks))))
    assert seen == wanted
    # the one-chunk shortcut of the read path gives exactly project's one projection, and
    # declines every other selection (several chunks, nothing selected, a negative step)
    projections = list(project(s, chunks, shape))
    one = s.single_chunk(chunks, shape)
    if one is None:
        assert len(projections) != 1 or any(d.step < 0 for d in s.dims)
    else:
        assert projections == [one]


@PROPS
@given(data=st.data())
def test_normalize_dims_match_python_ranges(data):
    shape = data.draw(shapes)
    sel = data.draw(selections(shape))
    src = np.arange(int(np.prod(shape))).reshape(shape)
    if _numpy_or_index_error(src, sel) is None:
        return
    s = normalize_selection(sel, shape)
    # the undropped buffer of the selection equals numpy's ix_ of the per-axis ranges
    idx = np.ix_(*(np.arange(d.start, d.stop, d.step) if d.size else np.array([], int)
                   for d in s.dims))
    assert np.array_equal(src[idx].reshape(s.result_shape), src[sel])
    for d, n in zip(s.dims, shape):
        assert all(0 <= i < n for i in range(d.start, d.stop, d.step))
        if d.drop:
            assert d.size == 1


@pytest.mark.parametrize("sel, exc", [
    ((5,), IndexOutOfBoundsError),
    ((-6,), IndexOutOfBoundsError),
    ((0, 0, 0), IndexOutOfBoundsError),
    ((Ellipsis, 0, Ellipsis), InvalidIndexError),
    ((Ellipsis, Ellipsis), InvalidIndexError),
    ((1.0,), InvalidIndexError),
    ((0, 1.0), InvalidIndexError),
    ((slice(0.5, 2),), InvalidIndexError),
    ((True,), InvalidIndexError),
    (([0, 1],), InvalidIndexError),
    ((np.array([0, 1]),), InvalidIndexError),
    (("a",), InvalidIndexError),
])
def test_bad_selections(sel, exc):
    with pytest.raises(exc):
        normalize_selection(sel, (5, 4))
    # numpy raises IndexError for them (TypeError for float slice bounds): code written for
    # numpy catches IndexError
    with pytest.raises(IndexError):
        normalize_selection(sel, (5, 4))
    if not isinstance(sel[0], (list, np.ndarray, bool)):  # numpy: fancy / new-axis indexing
        with pytest.raises((IndexError, TypeError)):
            np.zeros((5, 4))[sel]


def test_zero_step_is_value_error_as_numpy():
    with pytest.raises(ValueError):
        np.zeros(5)[0:2:0]
    with pytest.raises(InvalidArgumentError):
        normalize_selection((slice(0, 2, 0),), (5, 4))


def test_out_of_bounds_is_index_error():
    # code written for numpy catches IndexError
    with pytest.raises(IndexError):
        normalize_selection((7,), (5,))


def test_zero_size_selection_projects_nothing():
    s = normalize_selection((slice(3, 1),), (10,))
    assert s.result_shape == (0,)
    assert list(project(s, (4,), (10,))) == []


# -- VersionedArray against numpy ---------------------------------------------------------------


def _pool(dt: np.dtype, fill):
    if dt.kind == "b":
        return [False, True]
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return [info.min, info.max, 0, 1, 2, fill]
    if dt.kind == "f":
        return [0.0, -1.5, 2.25, np.inf, -np.inf, np.nan, -0.0, fill]
    return [0, 1 + 2j, -3.5j, complex(np.inf, 1), complex(-0.0, 0.0), fill]


def _random_values(rng: np.random.Generator, dt: np.dtype, shape, fill):
    pool = np.array(_pool(dt, fill), dtype=dt)
    out = pool[rng.integers(0, len(pool), size=shape)]
    if dt.kind in "iu" and rng.integers(0, 2):
        info = np.iinfo(dt)
        out = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    elif dt.kind in "fc" and rng.integers(0, 2):
        out = rng.standard_normal(size=shape).astype(dt) * 100
        if dt.kind == "c":
            out = out + 1j * rng.standard_normal(size=shape).astype(dt)
    return np.asarray(out, dtype=dt)


def _value_for(rng, dt, result_shape, fill):
    """A value numpy accepts for an assignment to a selection of ``result_shape``: a scalar
    (numpy or Python), the full shape, or a smaller shape that broadcasts."""
    kind = rng.integers(0, 4)
    if kind == 0:
        v = _random_values(rng, dt, (), fill)[()]
        return v.item() if rng.integers(0, 2) else v
    shp = list(result_shape)
    if kind == 2 and shp:
        shp = shp[rng.integers(0, len(shp) + 1):]  # drop leading axes
    if kind == 3:
        shp = [1 if rng.integers(0, 2) else n for n in shp]
    return _random_values(rng, dt, tuple(shp), fill)


def _same(a, b, dt):
    """Equal values, shapes and kinds (a scalar is not a 0-d array, as numpy keeps them
    apart); floats compare sign of zero too (``-0.0`` is not ``0.0``)."""
    if isinstance(a, np.ndarray) != isinstance(b, np.ndarray):
        return False
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if dt.kind in "fc":
        for part in (np.real, np.imag):
            x, y = part(a), part(b)
            if not np.array_equal(np.signbit(x), np.signbit(y)):
                return False
    return bool(np.array_equal(a, b, equal_nan=dt.kind in "fc"))


def _is_fill(x: np.ndarray, fill) -> np.ndarray:
    """Bitwise equal to the fill (what diced drops a chunk for)."""
    words = np.dtype(f"u{min(x.dtype.itemsize, 8)}")
    per = x.dtype.itemsize // words.itemsize
    ref = np.asarray(fill, dtype=x.dtype).reshape(1).view(words)
    flat = np.ascontiguousarray(x).view(words).reshape(x.shape + (per,))
    return (flat == ref).all(axis=-1)


def _nonfill_chunks(ref: np.ndarray, chunks, fill) -> set[tuple[int, ...]]:
    grid = [-(-n // c) for n, c in zip(ref.shape, chunks)]
    out = set()
    for coords in itertools.product(*(range(g) for g in grid)):
        lo, hi = _chunk_box(coords, chunks, ref.shape)
        if not _is_fill(ref[tuple(slice(l, h) for l, h in zip(lo, hi))], fill).all():
            out.add(coords)
    return out


_names = itertools.count()


def check_writes_then_reads(repo, data, dtypes=DTYPES):
    dt = np.dtype(data.draw(st.sampled_from(dtypes), label="dtype"))
    shape = data.draw(shapes, label="shape")
    chunks = data.draw(chunks_for(shape), label="chunks")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    pool = _pool(dt, 0)
    fill = np.asarray(pool[data.draw(st.integers(0, 3), label="fill") % len(pool)], dtype=dt)[()]
    codec = data.draw(st.sampled_from(["blosc", "raw"]), label="codec")
    arr = repo.create_array(f"a{next(_names)}", dt, shape, chunks=chunks, fill_value=fill,
                            codec=codec)
    assert arr.shape == shape and arr.dtype == dt and arr.chunks == chunks
    assert _same(np.asarray(arr.fill_value), np.asarray(fill), dt)
    ref = np.full(shape, fill, dtype=dt)
    assert _same(arr[...], ref, dt)
    assert arr.stored_chunks() == []
    for _ in range(data.draw(st.integers(1, 4), label="writes")):
        sel = data.draw(selections(shape), label="write selection")
        if _numpy_or_index_error(ref, sel) is None:
            with pytest.raises(IndexOutOfBoundsError):
                arr[sel] = fill
            continue
        value = _value_for(rng, dt, np.shape(ref[sel]), fill)
        ref[sel] = value
        arr[sel] = value
    assert _same(arr[...], ref, dt)
    assert np.asarray(arr[...]).dtype == dt
    for _ in range(2):
        sel = data.draw(selections(shape), label="read selection")
        if _numpy_or_index_error(ref, sel) is None:
            with pytest.raises(IndexOutOfBoundsError):
                arr[sel]
            continue
        got = arr[sel]
        assert _same(got, ref[sel], dt), (sel, got, ref[sel])
        assert np.asarray(got).dtype == dt
    # only chunks holding something other than fill are stored
    assert set(arr.stored_chunks()) == _nonfill_chunks(ref, chunks, fill)
    # a fresh handle (re-reading metadata) sees the same
    again = repo.array(arr.name)
    assert _same(np.asarray(again), ref, dt)


@pytest.fixture(scope="module")
def memory_repo():
    name = f"test-indexing-{uuid.uuid4().hex}"
    store = diced.Store(f"memory://{name}")
    yield store.create_repo("props")
    store.close()
    forget_memory(f"memory://{name}")


@pytest.fixture(scope="module")
def lmdb_repo(tmp_path_factory):
    store = diced.Store(tmp_path_factory.mktemp("indexing") / "s.diced", durable=False)
    yield store.create_repo("props")
    store.close()


@STORE_PROPS
@given(data=st.data())
def test_array_matches_numpy_memory(memory_repo, data):
    check_writes_then_reads(memory_repo, data)


@settings(STORE_PROPS, max_examples=20)
@given(data=st.data())
def test_array_matches_numpy_lmdb(lmdb_repo, data):
    check_writes_then_reads(lmdb_repo, data)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_roundtrip(memory_repo, dtype):
    dt = np.dtype(dtype)
    rng = np.random.default_rng(7)
    arr = memory_repo.create_array(f"rt-{dtype}", dt, (13, 7, 5), chunks=(4, 3, 5))
    ref = _random_values(rng, dt, (13, 7, 5), dt.type(0))
    arr[...] = ref
    assert _same(arr[...], ref, dt)
    assert _same(arr[::-3, 1::2, -1], ref[::-3, 1::2, -1], dt)
    # read back through a new version after a commit: the values are unchanged
    repo = memory_repo
    first = repo.commit(f"rt {dtype}")
    assert _same(repo.version(first.uuid).array(arr.name)[...], ref, dt)
    repo.newversion()


# -- writes: casting, broadcasting, errors -----------------------------------------------------


def test_broadcast_scalars_and_smaller_arrays(memory_repo):
    arr = memory_repo.create_array("bcast", "int32", (4, 5, 6), chunks=(3, 3, 3))
    ref = np.zeros((4, 5, 6), np.int32)
    for sel, value in [
        ((slice(None), 1), 7),
        ((Ellipsis, slice(1, 5)), np.arange(4, dtype=np.int32)),
        ((slice(0, 4), slice(None), 2), np.arange(5, dtype=np.int32)[None, :]),
        ((None, 1, slice(None, None, -1)), np.arange(6, dtype=np.int32)),
        ((slice(1, 3), slice(0, 1), slice(0, 2)), np.ones((1, 1, 2), np.int32)),
    ]:
        ref[sel] = value
        arr[sel] = value
    assert np.array_equal(arr[...], ref)


def test_extra_leading_unit_axes_broadcast_as_numpy(memory_repo):
    # numpy accepts a value with more leading length-1 axes than the target
    arr = memory_repo.create_array("lead1", "uint8", (6,), chunks=(4,))
    ref = np.zeros(6, np.uint8)
    value = np.arange(3, dtype=np.uint8).reshape(1, 1, 3)
    ref[1:4] = value
    arr[1:4] = value
    assert np.array_equal(arr[...], ref)


@pytest.mark.parametrize("sel, value", [
    ((slice(0, 3),), np.ones(4, np.uint8)),
    ((slice(0, 3), 0), np.ones((2, 3), np.uint8)),
    ((0,), np.ones((3, 5), np.uint8)),
])
def test_shape_mismatch_writes_nothing(memory_repo, sel, value):
    name = f"mismatch{next(_names)}"
    arr = memory_repo.create_array(name, "uint8", (4, 5), chunks=(2, 2))
    arr[...] = 3
    with pytest.raises(ShapeMismatchError):
        arr[sel] = value
    assert (arr[...] == 3).all()


@pytest.mark.parametrize("dtype, value", [
    ("uint8", 256), ("uint8", -1), ("int8", 128), ("int64", 2**63),
    ("uint16", np.array([1, 70000])), ("int32", np.array([0.5, 1.0])), ("uint8", 1.5),
    ("float32", 1 + 1j), ("int16", np.array([1 + 1j])), ("uint8", np.array(["a"])),
    ("uint64", np.array([-1])),
])
def test_unsafe_casts_refused_and_nothing_written(memory_repo, dtype, value):
    arr = memory_repo.create_array(f"cast{next(_names)}", dtype, (4,), chunks=(2,))
    with pytest.raises(DtypeError):
        arr[0:2] = value
    assert arr.stored_chunks() == []
    assert (arr[...] == 0).all()


def test_safe_casts_accepted(memory_repo):
    arr = memory_repo.create_array("safe", "int16", (4,), chunks=(2,))
    arr[0:2] = np.array([1, 2], dtype=np.uint8)  # another integer type whose values fit
    arr[2:4] = np.array([3, -4], dtype=np.int64)
    arr[3] = np.uint64(5)
    assert list(arr[...]) == [1, 2, 3, 5]
    with pytest.raises(DtypeError):  # floats are never silently truncated, scalar or not
        arr[0:2] = np.array([3.0, 4.0])
    with pytest.raises(DtypeError):
        arr[0] = 5.0
    assert list(arr[...]) == [1, 2, 3, 5]


def test_read_only_at_locked_version(memory_repo):
    repo = memory_repo
    arr = repo.create_array("ro", "uint8", (8,), chunks=(4,))
    arr[:] = 1
    locked = repo.commit("ro")
    pinned = repo.version(locked.uuid).array("ro")
    with pytest.raises(LockedNodeError):
        pinned[0] = 2
    assert (pinned[...] == 1).all()
    repo.newversion()


def test_write_selection_errors(memory_repo):
    arr = memory_repo.create_array("errs", "uint8", (4, 4), chunks=(2, 2))
    with pytest.raises(IndexOutOfBoundsError):
        arr[4, 0] = 1
    with pytest.raises(IndexOutOfBoundsError):
        arr[0, 0, 0] = 1
    with pytest.raises(InvalidArgumentError):
        arr[[0, 1]] = 1
    assert arr.stored_chunks() == []


# -- numpy parity: scalars, 0-d results, -0.0, one casting rule ---------------------------------


def test_ellipsis_with_integers_gives_a_0d_array_as_numpy(memory_repo):
    arr = memory_repo.create_array(f"zero-d{next(_names)}", "int16", (5,), chunks=(2,))
    arr[...] = np.arange(5, dtype=np.int16)
    ref = np.arange(5, dtype=np.int16)
    for sel in [(Ellipsis, 0), (0, Ellipsis), 3, (-1,), ()]:
        got, want = arr[sel], ref[sel]
        assert type(got) is type(want) and np.shape(got) == np.shape(want), sel
        assert np.array_equal(got, want)
    arr3 = memory_repo.create_array(f"zero-d{next(_names)}", "uint8", (2, 3, 4), chunks=(1, 2, 3))
    assert isinstance(arr3[1, 2, 3], np.generic)
    assert isinstance(arr3[1, ..., 2, 3], np.ndarray) and arr3[1, ..., 2, 3].shape == ()


@pytest.mark.parametrize("sel", [(Ellipsis, Ellipsis), 1.0, (0, 1.0), np.float32(2), True,
                                 (slice(0, 1.5),)])
def test_invalid_indexes_raise_index_error_like_numpy(memory_repo, sel):
    arr = memory_repo.create_array(f"badidx{next(_names)}", "uint8", (4, 4), chunks=(2, 2))
    if sel is not True:  # numpy reads a[True] as a new axis
        with pytest.raises((IndexError, TypeError)):
            np.zeros((4, 4))[sel]
    with pytest.raises(InvalidIndexError):
        arr[sel]
    with pytest.raises(InvalidIndexError):
        arr[sel] = 1
    assert arr.stored_chunks() == []


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
def test_negative_zero_is_not_the_fill(memory_repo, dtype):
    arr = memory_repo.create_array(f"negz{next(_names)}", dtype, (4,), chunks=(2,),
                                   fill_value=0.0)
    arr[1] = -0.0
    assert np.signbit(np.real(arr[1])) and arr.stored_chunks() == [(0,)]
    arr[0:2] = np.array([0.0, 0.0], dtype=dtype)  # back to the bitwise fill: dropped
    assert arr.stored_chunks() == [] and not np.signbit(np.real(arr[1]))


def test_nan_fill_keeps_other_nans(memory_repo):
    arr = memory_repo.create_array(f"nanfill{next(_names)}", "float32", (4,), chunks=(2,),
                                   fill_value=np.nan)
    other = (np.array([np.nan], np.float32).view(np.uint32) | 1).view(np.float32)
    arr[0:1] = other
    assert arr[0:1].view(np.uint32)[0] == other.view(np.uint32)[0]
    assert arr.stored_chunks() == [(0,)]
    arr[0] = np.float32(np.nan)
    assert arr.stored_chunks() == []


_CAST_VALUES = [0, 1, 5, -1, 256, 2**63, 1.0, 5.0, 0.5, -0.0, True, False, 1 + 0j, 2j,
                np.float32(2.0), np.int8(-3), np.uint64(7), np.bool_(True), np.float64(np.nan)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_and_array_writes_follow_one_casting_rule(memory_repo, dtype):
    """``a[0] = v`` and ``a[0:1] = np.array([v])`` accept or refuse the same values (and an
    accepted value reads back the same either way)."""
    dt = np.dtype(dtype)
    arr = memory_repo.create_array(f"onerule-{dtype}", dt, (2,), chunks=(1,))
    for v in _CAST_VALUES:
        outcomes = []
        for sel, value in [(0, v), (slice(1, 2), np.array([v]))]:
            try:
                arr[sel] = value
                outcomes.append(("ok", arr[sel if isinstance(sel, int) else 1]))
            except DtypeError:
                outcomes.append(("refused", None))
        (a, va), (b, vb) = outcomes
        assert a == b, (dtype, v, outcomes)
        if a == "ok":
            assert _same(np.asarray(va), np.asarray(vb), dt), (dtype, v)
        if dt.kind in "iub" and isinstance(v, (float, np.floating, complex)):
            assert a == "refused", (dtype, v)  # no float or complex into integers or bools
        if dt.kind == "b" and not isinstance(v, (bool, np.bool_)):
            assert (a == "ok") == (v in (0, 1) and not isinstance(v, (float, complex, np.floating))), v


# -- absolute coordinates against a numpy model with an origin ----------------------------------


@st.composite
def abs_selections(draw, shape, origin):
    """Absolute selections: integers and explicit-bound slices (either step sign), bounds a
    little beyond the extent on both sides."""
    out = []
    for n, o in zip(shape, origin):
        if n and draw(st.integers(0, 3)) == 0:
            out.append(draw(st.integers(o - 2, o + n + 1)))
        else:
            b = st.integers(o - 3, o + n + 3)
            out.append(slice(draw(b), draw(b), draw(st.none() | st.integers(-3, 3).filter(bool))))
    return tuple(out)


def _abs_model(sel, shape, origin):
    """numpy index equal to an absolute selection, or None if it must be refused."""
    out = []
    for s, n, o in zip(sel, shape, origin):
        if isinstance(s, slice):
            step = s.step or 1
            lo, hi = (o, o + n) if step > 0 else (o - 1, o + n - 1)
            if not (lo <= s.start <= hi and lo <= s.stop <= hi):
                return None
            out.append(np.array([i - o for i in range(s.start, s.stop, step)], dtype=np.int64))
        else:
            if not o <= s < o + n:
                return None
            out.append(s - o)
    return tuple(out)


def _apply_model(ref, idx):
    """``ref`` at a mix of ints and index arrays, axes selected independently."""
    arrays = [np.array([i]) if isinstance(i, (int, np.integer)) else i for i in idx]
    view = ref[np.ix_(*arrays)]
    return view.reshape(tuple(len(a) for a, i in zip(arrays, idx)
                              if not isinstance(i, (int, np.integer))))


@STORE_PROPS
@given(data=st.data())
def test_abs_matches_numpy_with_origin(memory_repo, data):
    shape = data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple))
    origin = tuple(data.draw(st.integers(-20, 20)) for _ in shape)
    chunks = data.draw(chunks_for(shape))
    arr = memory_repo.create_array(f"abs{next(_names)}", "int32", shape, chunks=chunks,
                                   origin=origin)
    ref = np.zeros(shape, np.int32)
    for k in range(data.draw(st.integers(1, 4))):
        sel = data.draw(abs_selections(shape, origin))
        idx = _abs_model(sel, shape, origin)
        if idx is None:
            with pytest.raises(IndexOutOfBoundsError):
                arr.abs[sel]
            with pytest.raises(IndexOutOfBoundsError):
                arr.abs[sel] = 1
            continue
        want = _apply_model(ref, idx)
        got = arr.abs[sel]
        assert np.array_equal(got, want) and np.shape(got) == want.shape
        value = np.arange(want.size, dtype=np.int32).reshape(want.shape) + 100 * (k + 1)
        arr.abs[sel] = value
        arrays = [np.array([i]) if isinstance(i, (int, np.integer)) else i for i in idx]
        ref[np.ix_(*arrays)] = value.reshape(tuple(len(a) for a in arrays))
        assert np.array_equal(arr[...], ref)


def test_abs_negative_steps_from_the_issue(memory_repo):
    a = memory_repo.create_array(f"absneg{next(_names)}", "int32", (6,), chunks=(4,),
                                 origin=(10,))
    a[...] = np.arange(10, 16)
    assert list(a.abs[15:9:-1]) == [15, 14, 13, 12, 11, 10]
    assert list(a.abs[15:9:-2]) == [15, 13, 11]
    with pytest.raises(IndexOutOfBoundsError):
        a.abs[15:7:-1]
    with pytest.raises(IndexOutOfBoundsError):
        a.abs[16:9:-1]
    with pytest.raises(IndexOutOfBoundsError):  # a stop below the origin never wraps around
        a.abs[10:9]
    a.abs[11:9:-1] = 7
    assert list(a[...]) == [7, 7, 12, 13, 14, 15]
    with pytest.raises(InvalidIndexError):
        a.abs[10.0]
    with pytest.raises(InvalidIndexError):
        a.abs[10:12.5]


# -- orthogonal, vectorized and mask selections -------------------------------------------------


@st.composite
def orthogonal_selections(draw, shape):
    """Per axis an int, a slice, an int array (negatives, repeats, any order) or a bool array."""
    out = []
    for n in shape:
        kind = draw(st.integers(0, 3)) if n else 1
        if kind == 0:
            out.append(draw(st.integers(-n, n - 1)))
        elif kind == 1:
            b = st.none() | st.integers(-n - 2, n + 2)
            out.append(slice(draw(b), draw(b), draw(st.none() | st.integers(-3, 3).filter(bool))))
        elif kind == 2:
            out.append(np.array(draw(st.lists(st.integers(-n, n - 1), max_size=6)), dtype=np.int64))
        else:
            out.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool))
    if draw(st.booleans()) and out:
        i = draw(st.integers(0, len(out)))
        out = out[:i] + [Ellipsis] + out[i + 1:] if i < len(out) and not isinstance(
            out[i], np.ndarray) else out
    return tuple(out)


def _numpy_oindex(ref, sel):
    """numpy's orthogonal indexing: np.ix_ over per-axis index arrays."""
    items = []
    for s in sel:
        if s is Ellipsis:
            items.extend([slice(None)] * (ref.ndim - (len(sel) - 1)))
        else:
            items.append(s)
    arrays, keep = [], []
    for s, n in zip(items, ref.shape):
        if isinstance(s, slice):
            arrays.append(np.arange(n)[s])
            keep.append(True)
        elif isinstance(s, np.ndarray):
            arrays.append(np.flatnonzero(s) if s.dtype == bool else np.where(s < 0, s + n, s))
            keep.append(True)
        else:
            arrays.append(np.array([s % n]))
            keep.append(False)
    idx = np.ix_(*arrays)
    shape = tuple(len(a) for a, k in zip(arrays, keep) if k)
    return idx, shape


@st.composite
def coordinate_selections(draw, shape):
    """One int array per axis (or an int), broadcastable: 0-d, 1-d or 2-d point sets."""
    pshape = draw(st.sampled_from([(), (0,), (1,), (5,), (2, 3)]))
    out = []
    for n in shape:
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(st.integers(-n, n - 1)))
        else:
            size = int(np.prod(pshape))
            vals = draw(st.lists(st.integers(-n, n - 1), min_size=size, max_size=size))
            out.append(np.array(vals, dtype=np.int64).reshape(pshape))
    return tuple(out)


nonempty_shapes = st.integers(1, 3).flatmap(
    lambda d: st.lists(st.integers(1, _MAX_SIDE[d]), min_size=d, max_size=d).map(tuple))


@PROPS
@given(data=st.data())
def test_orthogonal_planner_equals_numpy_ix(data):
    from diced.array.indexing import normalize_orthogonal

    shape = data.draw(nonempty_shapes)
    chunks = data.draw(chunks_for(shape))
    sel = data.draw(orthogonal_selections(shape))
    src = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    idx, want_shape = _numpy_oindex(src, sel)
    s = normalize_orthogonal(sel, shape)
    assert s.result_shape == want_shape
    out = np.full(s.shape, -1, np.int64)
    seen = set()
    for p in s.project(chunks, shape):
        assert p.coords not in seen
        seen.add(p.coords)
        lo, hi = _chunk_box(p.coords, chunks, shape)
        padded = np.full(chunks, -2, np.int64)
        padded[tuple(slice(0, h - l) for l, h in zip(lo, hi))] = src[
            tuple(slice(l, h) for l, h in zip(lo, hi))]
        got = padded[p.chunk_sel]
        assert (got >= 0).all()
        out[p.out_sel] = got
    assert np.array_equal(out.reshape(want_shape), src[idx].reshape(want_shape))
    # exactly the chunks holding a selected element
    touched = {tuple(int(i) // c for i, c in zip(np.unravel_index(v, shape), chunks))
               for v in src[idx].ravel()}
    assert seen == touched


@PROPS
@given(data=st.data())
def test_coordinate_planner_equals_numpy_fancy(data):
    from diced.array.indexing import normalize_coordinates

    shape = data.draw(nonempty_shapes)
    chunks = data.draw(chunks_for(shape))
    sel = data.draw(coordinate_selections(shape))
    src = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    want = src[sel]
    s = normalize_coordinates(sel, shape)
    assert s.result_shape == np.shape(want)
    out = np.full(s.shape, -1, np.int64)
    n_chunks = 0
    for p in s.project(chunks, shape):
        n_chunks += 1
        lo, hi = _chunk_box(p.coords, chunks, shape)
        block = np.full(chunks, -2, np.int64)
        block[tuple(slice(0, h - l) for l, h in zip(lo, hi))] = src[
            tuple(slice(l, h) for l, h in zip(lo, hi))]
        out[p.out_sel] = block[p.chunk_sel]
    assert np.array_equal(out.reshape(np.shape(want)), want)
    touched = {tuple(int(i) // c for i, c in zip(np.unravel_index(v, shape), chunks))
               for v in np.ravel(want)}
    assert n_chunks == len(touched) == s.count_chunks(chunks, shape)


def check_fancy_against_numpy(repo, data, labels=False):
    if labels:
        shape = tuple(data.draw(st.integers(1, 20)) for _ in range(3))
        chunks = (8, 8, 8)
        dt = np.dtype(np.uint64)
        arr = repo.create_labels(f"fl{next(_names)}", shape, chunks=chunks)
    else:
        shape = data.draw(nonempty_shapes)
        chunks = data.draw(chunks_for(shape))
        dt = np.dtype(data.draw(st.sampled_from(["int16", "float32", "bool", "uint64"])))
        arr = repo.create_array(f"fancy{next(_names)}", dt, shape, chunks=chunks)
    ref = np.zeros(shape, dt)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))

    def values(shape_):
        if dt == bool:
            return rng.integers(0, 2, size=shape_).astype(bool)
        return rng.integers(1, 9, size=shape_).astype(dt)

    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["o", "v", "mask"]))
        if kind == "o":
            sel = data.draw(orthogonal_selections(shape))
            idx, rshape = _numpy_oindex(ref, sel)
            assert np.array_equal(arr.oindex[sel], ref[idx].reshape(rshape))
            value = values(rshape) if data.draw(st.booleans()) else values(())[()]
            arr.oindex[sel] = value
            ref[idx] = np.broadcast_to(value, rshape).reshape(ref[idx].shape)
        elif kind == "v":
            sel = data.draw(coordinate_selections(shape))
            got = arr.vindex[sel]
            assert np.array_equal(got, ref[sel]) and np.shape(got) == np.shape(ref[sel])
            value = values(np.shape(ref[sel])) if data.draw(st.booleans()) else values(())[()]
            arr.vindex[sel] = value
            ref[sel] = value
        else:
            mask = rng.random(shape) < data.draw(st.sampled_from([0.0, 0.1, 0.5]))
            got = arr[mask] if data.draw(st.booleans()) else arr.vindex[mask]
            assert np.array_equal(got, ref[mask])
            value = values(int(mask.sum())) if data.draw(st.booleans()) else values(())[()]
            arr[mask] = value
            ref[mask] = value
        assert np.array_equal(arr[...], ref)
    if labels:  # the label index stayed exact
        for lab in np.unique(ref):
            if lab:
                assert arr.count(int(lab)) == int((ref == lab).sum())
    return arr, ref


@settings(STORE_PROPS, max_examples=25)
@given(data=st.data())
def test_fancy_indexing_matches_numpy(memory_repo, data):
    check_fancy_against_numpy(memory_repo, data)


@settings(STORE_PROPS, max_examples=10)
@given(data=st.data())
def test_fancy_indexing_on_labels_matches_numpy(memory_repo, data):
    check_fancy_against_numpy(memory_repo, data, labels=True)


def test_points_and_masks_on_every_backend(store_location):
    """oindex, vindex and masks, reads and writes, on arrays and label arrays, on each local
    backend; a point read fetches only the chunks holding a point."""
    store = diced.Store(store_location, **store_location.options)
    try:
        repo = store.create_repo("fancy")
        img = repo.create_array("img", "uint16", (20, 30, 40), chunks=(8, 8, 8))
        ref = np.arange(20 * 30 * 40, dtype=np.uint16).reshape(20, 30, 40)
        img[...] = ref
        synapses = np.array([[1, 2, 3], [19, 29, 39], [1, 2, 4], [10, 0, 17]])
        z, y, x = synapses.T
        fetched: list[list[str]] = []
        visit = img._space.visit

        def spy(keys, ctx, fn, **kw):
            fetched.append(list(keys))
            return visit(keys, ctx, fn, **kw)

        img._space.visit = spy
        assert np.array_equal(img.vindex[z, y, x], ref[z, y, x])
        assert sorted(k for ks in fetched for k in ks) == sorted(
            {diced.repo.keys.chunk_ckey(tuple(int(v) // 8 for v in p)) for p in synapses})
        img._space.visit = visit
        rows, cols = [3, 0, 17], np.zeros(40, bool)
        cols[[5, 39]] = True
        assert np.array_equal(img.oindex[rows, 4:9, cols], ref[np.ix_(rows, np.arange(4, 9),
                                                                      np.flatnonzero(cols))])
        img.vindex[z, y, x] = 7
        ref[z, y, x] = 7
        img.oindex[rows, 4:9, cols] = 9
        ref[np.ix_(rows, np.arange(4, 9), np.flatnonzero(cols))] = 9
        mask = ref % 11 == 0
        assert np.array_equal(img[mask], ref[mask])
        img[mask] = 1
        ref[mask] = 1
        assert np.array_equal(img[...], ref)
        v1 = repo.commit("fancy writes")
        assert np.array_equal(repo.version(v1.uuid).array("img").vindex[z, y, x], [7, 7, 7, 7])
        repo.newversion()
        with pytest.raises(LockedNodeError):
            repo.version(v1.uuid).array("img").vindex[z, y, x] = 1
        with pytest.raises(IndexOutOfBoundsError):
            img.vindex[[0, 20], [0, 0], [0, 0]]
        with pytest.raises(IndexOutOfBoundsError):
            img[np.zeros((20, 30), bool)]
        with pytest.raises(InvalidIndexError):
            img.vindex[z, y]
        with pytest.raises(InvalidIndexError):
            img[[0, 1]]
        with pytest.raises(ShapeMismatchError):
            img.vindex[z, y, x] = [1, 2]
        with pytest.raises(DtypeError):
            img.oindex[rows, 0, 0] = 1.5
        assert np.array_equal(img[...], ref)

        seg = repo.create_labels("seg", (24, 24, 24), chunks=(8, 8, 8))
        seg[0:8] = 1
        seg[8:24] = 2
        pts = np.array([[0, 0, 0], [9, 1, 1], [23, 23, 23]])
        assert list(seg.vindex[tuple(pts.T)]) == [1, 2, 2]
        seg.vindex[tuple(pts.T)] = 5
        assert seg.count(5) == 3 and seg.count(1) == 8 * 24 * 24 - 1
        seg.merge(5, [1])
        assert list(seg.oindex[[0, 9], 1, [0, 1]].ravel()) == [5, 5, 2, 5]  # bodies
        m = np.zeros((24, 24, 24), bool)
        m[20:, 20:, 20:] = True
        seg[m] = 3
        assert seg.count(3) == 64 and seg.count(2) == 16 * 24 * 24 - 1 - 64
        assert np.array_equal(seg[m], np.full(64, 3, np.uint64))
    finally:
        store.close()
