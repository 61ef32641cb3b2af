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
    import fsspec

    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{name}"):
        memory.rm(f"/{name}", recursive=True)


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
