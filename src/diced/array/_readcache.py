"""Read helpers of :class:`~diced.array.array.VersionedArray` for the locked-chunk cache
(:mod:`diced.backends.cache`): which reads use it, serving hits, copying chunks out."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.backends.cache import ChunkCache, chunk_cache

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from diced.array.indexing import ChunkProjection, Selection
    from diced.repo.resolve import VersionCtx


def _locked_cache(ctx: VersionCtx, read_bytes: int) -> tuple[ChunkCache | None, bool]:
    """``(cache, keep)``: the cache to look chunks up in (only for locked versions with a
    known UUID, and ``None`` when disabled), and whether to store the chunks this read
    decodes (not for reads larger than half the cache, which would only evict)."""
    if not ctx.locked or not ctx.uuid:
        return None, False
    cache = chunk_cache()
    if not cache.enabled:
        return None, False
    return cache, read_bytes <= cache.max_bytes // 2


def _cache_ident(location: str, ctx: VersionCtx, inst: int) -> tuple[Any, ...]:
    """What names a locked version's instance in the chunk cache: the store's location,
    the repo, the version id (never reused in a repo; a tag's UUID is its name, back when a
    deleted tag is made again) and UUID (copies of a store that went separate ways may give
    one id to different versions), and the instance id."""
    return (location, ctx.repo, ctx.vid, ctx.uuid, inst)


def _copy_out(p: ChunkProjection, chunk: np.ndarray, out: np.ndarray,
              post: Callable[[np.ndarray], Any] | None) -> None:
    """Copy the part of a decoded ``chunk`` that projection ``p`` selects into ``out``,
    then apply ``post`` to the copied values (never to ``chunk``, which may be cached)."""
    if p.fancy:  # index arrays: out[out_sel] would be a copy, so assign into it
        vals = chunk[p.chunk_sel]
        if post is not None:
            vals = np.array(vals)
            post(vals)
        out[p.out_sel] = vals
        return
    target = out[p.out_sel]
    target[...] = chunk[p.chunk_sel]
    if post is not None:
        post(target)


def _decode_part(codec: Any, data: Any, chunks: tuple[int, ...], p: ChunkProjection,
                 scratch: np.ndarray) -> bool:
    """Decode only the leading-axis rows projection ``p`` needs into ``scratch``, when the
    codec can (blosc2) and the rows are a proper part of the chunk; ``False``: decode all."""
    part = getattr(codec, "decode_rows", None)
    if part is None or p.fancy:
        return False
    s = p.chunk_sel[0]
    if not isinstance(s, slice) or s.step not in (None, 1) or s.start is None \
            or s.stop is None:
        return False
    lo, hi = s.start, s.stop
    if lo <= 0 and hi >= chunks[0]:
        return False
    return bool(part(data, chunks, scratch.dtype, lo, hi, scratch))


#: cached bytes a read copies out in the calling thread; above it the copies are shared
#: with the pool (large copies gain from a second core, small ones lose to the hand-offs)
INLINE_COPY_BYTES = 32 << 20
#: results of at least this many bytes copy their cached chunks row by row in the numba
#: kernel (:mod:`diced.array._copy_kernels`), which runs without the GIL, so the copies are
#: shared with the pool (a 256^3 uint8 read of 64 cached chunks: 7.0 ms in numpy, 5.0 ms in
#: the kernel in one thread, 3.5 ms in two; medians on this 2-core VM)
BOX_COPY_BYTES = 4 << 20
#: results of at least this many bytes decode their cached label blocks in ``workers``
#: threads. A hand-off to the pool costs about 150 µs on this VM: 20 reads of unaligned
#: 64^3 boxes of pinky40 (2 MiB each) took 12.0 ms split in two, 11.5 ms in one thread
#: (4.1 and 1.0 ms with the kernel a no-op), so a box that size is decoded in the caller
DECODE_SPLIT_BYTES = 4 << 20
#: results of at least this many bytes are written by the copy kernels with streaming
#: stores (see :mod:`diced.array._copy_kernels`); smaller ones stay in the core's cache
STREAM_BYTES = 1 << 20

#: no staging buffer: :func:`~diced.array.codecs._labelbox_kernels.decode_grid` writes
#: straight into the result
_NO_STAGE = np.empty(0, np.uint64)


def _decode_box(codec: Any, data: Any, p: ChunkProjection, scratch: np.ndarray,
                out: np.ndarray) -> bool:
    """Decode the rows of a 3-d chunk that projection ``p`` (step-1 slices) needs and copy
    its box into ``out``, in one GIL-free call of the codec (blosc2); ``False``: not done."""
    cz, cy, cx = p.chunk_sel
    oz, oy, ox = p.out_sel
    box = np.array([cz.start, cz.stop, cy.start, cy.stop, cx.start, cx.stop], np.int64)
    origin = np.array([oz.start, oy.start, ox.start], np.int64)
    return bool(codec.decode_box(data, cz.start, cz.stop, box, origin, scratch, out))


def _kernels() -> Any:
    """The kernels once loaded (:mod:`diced.array._copy_kernels`' ``copy_grid`` and
    ``copy_boxes``, :mod:`diced.array.codecs._labelbox_kernels`' ``decode_grid`` and
    ``decode_part``), else ``None``: the first call (a read that found its chunks cached)
    starts loading them in a background thread, and reads copy with numpy (label blocks:
    decode whole blocks) until they are there.

    Loading imports numba and its kernels' machine code (from numba's cache, or compiled):
    0.4-0.6 s on this VM. Done in the read that needed it, a notebook's or a viewer's
    second look at a region (the first read of a cached chunk) took 635-752 ms, where the
    first, cold, read took 25-47 ms. A read that only fills the cache starts nothing, so a
    process that reads once never waits for the loader at exit."""
    global _KERNELS_LOADER
    if _KERNELS is not None:
        return _KERNELS
    with _KERNELS_LOCK:
        if _KERNELS_LOADER is None:
            _KERNELS_LOADER = threading.Thread(target=_load_kernels, daemon=True,
                                               name="diced-copy-kernels")
            _KERNELS_LOADER.start()
    return None


def load_copy_kernels() -> Any:
    """The kernels (see :func:`_kernels`), waiting for the background loader (started here
    if need be); ``None`` if they cannot be loaded (logged). For tests, and callers that want
    every warm read on the kernel path from the start."""
    if _kernels() is None:
        loader = _KERNELS_LOADER
        if loader is not None:
            loader.join()
    return _KERNELS


def _load_kernels() -> None:
    """Import the kernels and load their machine code (a call on empty arguments), then
    publish the module. A failure is logged once and leaves reads on the numpy path."""
    global _KERNELS
    try:
        from diced.array import _copy_kernels as ck
        from diced.array.codecs import _labelbox_kernels as lk

        ck.copy_grid(np.zeros(0, np.int64), 0, 0, np.zeros(21, np.int64), 0, False)
        ck.copy_boxes(np.zeros(0, np.int64), np.zeros((0, 6), np.int64), 0, 0, 0, False)
        lk.decode_grid(np.zeros(0, np.int64), 0, 0, np.zeros(21, np.int64), 0, _NO_STAGE)
    except Exception as exc:  # noqa: BLE001 - numba missing or broken: numpy copies instead
        log.warning("the copy kernels could not be loaded; cached chunks are copied with "
                    "numpy (label blocks decoded whole): %r", exc)
        return
    _KERNELS = SimpleNamespace(copy_grid=ck.copy_grid, copy_boxes=ck.copy_boxes,
                               decode_grid=lk.decode_grid, decode_part=lk.decode_part)


_KERNELS: Any = None
_KERNELS_LOADER: threading.Thread | None = None
_KERNELS_LOCK = threading.Lock()


def _kernels_after_fork() -> None:
    """In a forked child: a loader the parent had running does not exist here."""
    global _KERNELS_LOADER, _KERNELS_LOCK
    _KERNELS_LOCK = threading.Lock()
    if _KERNELS is None:
        _KERNELS_LOADER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_kernels_after_fork)


@atexit.register
def _finish_loading() -> None:
    """At exit, let a running loader finish (at most half a second or so) rather than stop
    a daemon thread inside numba's compiler while the interpreter and LLVM tear down."""
    loader = _KERNELS_LOADER
    if loader is not None and loader.is_alive():
        loader.join(10)


def _in_shares(work: Callable[[int, int], None], k: int, pool: Callable[[], Executor]) -> None:
    """``work(i, k)`` for ``i < k``: share 0 in this thread, the others in ``pool()``; waits
    for every share, and the first error raised reaches the caller."""
    executor = pool()
    futures = [executor.submit(work, i, k) for i in range(1, k)]
    try:
        work(0, k)
    finally:
        for f in futures:
            f.result()


def _serve_box(sel: Selection, chunks: tuple[int, ...], cache: ChunkCache,
               prefix: tuple[Any, ...], out: np.ndarray,
               post: Callable[[np.ndarray], Any] | None,
               pool: Callable[[], Executor], workers: int,
               blocks: Callable[[], np.ndarray] | None = None
               ) -> tuple[bool, dict[tuple[int, ...], np.ndarray | None] | None]:
    """Serve a step-1 box selection (up to 3-d) whose chunks are all cached, whole-shaped
    and C-contiguous, in one call of the numba kernel (:func:`~diced.array._copy_kernels.
    copy_grid`: no per-chunk projections, no per-chunk copies in Python), shared by
    ``workers`` threads for results of :data:`BOX_COPY_BYTES` and more; then ``post(out)``.
    With ``blocks`` (a label array's chunks, cached as DVID label blocks: see
    :func:`cacheable_block`; the calling thread's scratch chunk), the box is decoded from
    them instead (:func:`~diced.array.codecs._labelbox_kernels.decode_grid`, staging in
    the scratch chunk of the thread that runs it for results of :data:`STREAM_BYTES` and
    more), shared from :data:`DECODE_SPLIT_BYTES`.
    Returns ``(True, None)`` when served, else ``(False, found)``: the chunks looked up by
    grid coordinates (``None`` for a miss), or ``None`` when the selection does not qualify,
    for :func:`_serve_cached` (so no chunk is looked up, or counted, twice).

    This is the whole of a warm read of a box but for the kernel, so it is kept lean: one
    flat geometry list, one lookup round, no per-chunk arrays (a viewer reads box after
    box)."""
    nd = out.ndim
    if nd > 3 or nd != len(chunks) or out.size == 0 or not out.flags.c_contiguous:
        return False, None
    pad = 3 - nd
    # per axis (padded to 3 at the front): lo, hi, first chunk, chunks, chunk size, chunk
    # byte stride, result byte stride (see copy_grid)
    geo = [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    ranges = []
    for a, (d, c, o, so) in enumerate(zip(sel.dims, chunks, out.shape, out.strides)):
        lo, hi = d.start, d.stop
        if d.step != 1 or hi - lo != o:
            return False, None
        f = lo // c
        n = (hi - 1) // c - f + 1
        i = a + pad
        geo[i], geo[3 + i], geo[6 + i], geo[9 + i], geo[12 + i], geo[18 + i] = \
            lo, hi, f, n, c, so
        ranges.append(range(f, f + n))
    coords = list(itertools.product(*ranges))
    n = len(coords)
    addrs = np.empty(n, np.int64)
    chunk_list = cache.get_many([(*prefix, k) for k in coords], addrs)
    dt = out.dtype
    if blocks is not None:
        if nd != 3 or any(c is None for c in chunk_list):
            return False, dict(zip(coords, chunk_list))
    else:
        for c in chunk_list:
            if c is None or c.shape != chunks or (c.dtype is not dt and c.dtype != dt) \
                    or not c.flags.c_contiguous:
                return False, dict(zip(coords, chunk_list))
    kernels = _kernels()
    if kernels is None:  # still loading (see _kernels): numpy copies, from what was found
        return False, dict(zip(coords, chunk_list))
    if blocks is not None:
        split = DECODE_SPLIT_BYTES

        def run(addrs: np.ndarray, q0: int, q1: int, g: np.ndarray, dst: int,
                stream: bool) -> None:
            stage = blocks().reshape(-1) if stream else _NO_STAGE  # type: ignore[misc]
            kernels.decode_grid(addrs, q0, q1, g, dst, stage)
    else:
        run, split = kernels.copy_grid, BOX_COPY_BYTES
        for a, st in enumerate(chunk_list[0].strides):
            geo[15 + pad + a] = st
    g = np.array(geo, np.int64)
    dst = out.ctypes.data
    stream = out.nbytes >= STREAM_BYTES
    k = min(workers, n)
    if out.nbytes < split or k < 2:
        run(addrs, 0, n, g, dst, stream)
        if post is not None:
            post(out)
        return True, None
    # k shares of the result's chunks, then (for ``post``) of its slabs along the first axis
    _in_shares(lambda i, k: run(addrs, n * i // k, n * (i + 1) // k, g, dst, stream), k, pool)
    if post is not None:
        _in_shares(lambda i, k: post(out[len(out) * i // k:len(out) * (i + 1) // k]), k, pool)
    del chunk_list  # the chunks stay referenced until every copy is done
    return True, None


def _serve_cached(projections: Iterable[ChunkProjection], cache: ChunkCache,
                  prefix: tuple[Any, ...], out: np.ndarray,
                  post: Callable[[np.ndarray], Any] | None,
                  pool: Callable[[], Executor], workers: int,
                  found_by: dict[tuple[int, ...], np.ndarray | None] | None = None,
                  blocks: Callable[[], np.ndarray] | None = None) -> list[ChunkProjection]:
    """Serve every projection whose chunk is cached (one cache lookup for the read, or
    none when ``found_by`` holds the chunks already looked up) and return the others, to
    be read. Hits are copied out in the calling thread, with no
    hand-off to a pool, unless they add up to more than :data:`INLINE_COPY_BYTES` or the
    result to :data:`BOX_COPY_BYTES` (copied by the numba kernel); then ``workers`` shares
    of them are copied in ``pool()`` and this thread together. With ``blocks`` (for a
    label array whose chunks are cached as DVID label blocks: the calling thread's scratch
    chunk, see :func:`_decode_hit`), hits are decoded, shared from
    :data:`DECODE_SPLIT_BYTES` of result."""
    projs = list(projections)
    if found_by is None:
        found = cache.get_many([(*prefix, p.coords) for p in projs])
    else:
        found = [found_by.get(p.coords) for p in projs]
    hits = [(p, c) for p, c in zip(projs, found) if c is not None]
    if not hits:
        return projs
    misses = [p for p, c in zip(projs, found) if c is None]
    if blocks is not None:
        _decode_hits(hits, out, post, blocks, pool, workers)
        return misses

    # large results: row copies in the numba kernel, shared by ``workers`` threads; small
    # ones in numpy, whose copies cost less than the kernel's set-up per chunk (a 100^3
    # box over 27 cached chunks: 0.43 ms in numpy, 0.67 ms in the kernel in one thread)
    boxes, rest = _box_copies(hits, out) \
        if out.nbytes >= BOX_COPY_BYTES and _kernels() is not None else (None, hits)

    def copy(i: int, k: int) -> None:
        if boxes is not None:
            boxes.run(i, k)
            if post is not None:
                for p in boxes.projections[i::k]:
                    post(out[p.out_sel])
        for p, chunk in rest[i::k]:
            _copy_out(p, chunk, out, post)

    nbytes = sum(c.nbytes for _, c in hits)
    if (nbytes <= INLINE_COPY_BYTES and (boxes is None or rest)) or len(hits) < 2:
        copy(0, 1)
        return misses
    _in_shares(copy, max(2, min(workers, len(hits))), pool)
    return misses


def cacheable_block(block: Any) -> np.ndarray:
    """The DVID label block serialization ``block`` (bytes-like, already checked by a full
    decode) as the read-only uint8 array the locked-chunk cache keeps for a label array's
    chunk (a copy, unless ``block`` is ``bytes``: a view into a backend's buffer may not
    outlive its read)."""
    return np.frombuffer(block if isinstance(block, bytes) else bytes(block), np.uint8)


def _decode_hit(p: ChunkProjection, block: np.ndarray, out: np.ndarray,
                post: Callable[[np.ndarray], Any] | None,
                scratch: Callable[[], np.ndarray]) -> None:
    """Fill projection ``p`` of ``out`` from a cached label block: a step-1 box of a 3-d
    C-contiguous result is decoded straight into ``out``
    (:func:`~diced.array.codecs._labelbox_kernels.decode_part`: only the voxels it needs);
    anything else (index arrays, strided slices, kernels still loading: the first hit
    starts loading them, see :func:`_kernels`) decodes the whole block into ``scratch()``
    (the calling thread's chunk-shaped uint64 buffer) and copies from it."""
    kernels = _kernels()
    if kernels is not None and not p.fancy and out.ndim == 3 and out.flags.c_contiguous:
        lo, hi, dst = [], [], out.ctypes.data
        for cs, os_, st in zip(p.chunk_sel, p.out_sel, out.strides):
            if cs.step not in (None, 1) or os_.step not in (None, 1):
                break
            lo.append(cs.start)
            hi.append(cs.stop)
            dst += os_.start * st
        else:
            kernels.decode_part(block.ctypes.data, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2],
                                dst, out.strides[0], out.strides[1])
            if post is not None:
                post(out[p.out_sel])
            return
    from diced.array.codecs.labelblock import decode_block

    chunk = scratch()
    _copy_out(p, decode_block(block, chunk.shape, out=chunk), out, post)


def _decode_hits(hits: list[tuple[ChunkProjection, np.ndarray]], out: np.ndarray,
                 post: Callable[[np.ndarray], Any] | None, scratch: Callable[[], np.ndarray],
                 pool: Callable[[], Executor], workers: int) -> None:
    """:func:`_decode_hit` of every hit, in ``workers`` threads (this one and the pool's)
    when the hits fill :data:`DECODE_SPLIT_BYTES` or more of ``out``."""
    def run(i: int, k: int) -> None:
        for p, block in hits[i::k]:
            _decode_hit(p, block, out, post, scratch)

    k = min(workers, len(hits))
    if k < 2 or min(out.nbytes, len(hits) * scratch().nbytes) < DECODE_SPLIT_BYTES:
        run(0, 1)
        return
    _in_shares(run, k, pool)


class _BoxCopies:
    """Row copies of whole boxes of C-contiguous chunks into a C-contiguous 2-d or 3-d
    result, for :func:`diced.array._copy_kernels.copy_boxes`; ``run(i, k)`` does every
    ``k``-th box from the ``i``-th."""

    def __init__(self, projections: list[ChunkProjection], srcs: list[int],
                 rows: list[tuple[int, ...]], out: np.ndarray) -> None:
        self.projections = projections
        self.src = np.array(srcs, np.int64)
        self.geometry = np.array(rows, np.int64).reshape(len(rows), 6)
        self.out = out
        self.d_z = out.strides[0] if out.ndim == 3 else 0
        self.d_y = out.strides[-2]

    def run(self, i: int, k: int) -> None:
        _KERNELS.copy_boxes(self.src[i::k], self.geometry[i::k], self.out.ctypes.data,
                            self.d_z, self.d_y, self.out.nbytes >= STREAM_BYTES)


def _box_copies(hits: list[tuple[ChunkProjection, np.ndarray]], out: np.ndarray
                ) -> tuple[_BoxCopies | None, list[tuple[ChunkProjection, np.ndarray]]]:
    """Split ``hits`` into row copies for the numba kernel (step-1 boxes of C-contiguous
    chunks of ``out``'s dtype, 2-d or 3-d, checked to lie inside chunk and ``out``) and
    the rest, for numpy. The hits must stay referenced while the copies run."""
    if out.ndim not in (2, 3) or not out.flags.c_contiguous or out.size == 0:
        return None, hits
    projs: list[ChunkProjection] = []
    srcs: list[int] = []
    rows: list[tuple[int, ...]] = []
    rest = []
    it = out.itemsize
    d_strides = out.strides
    for p, chunk in hits:
        g = None if p.fancy or chunk.dtype != out.dtype or chunk.ndim != out.ndim \
            or not chunk.flags.c_contiguous else _geometry(p, chunk, out.shape, d_strides, it)
        if g is None:
            rest.append((p, chunk))
        else:
            projs.append(p)
            srcs.append(chunk.ctypes.data + g[0])
            rows.append(g[1:])
    return (_BoxCopies(projs, srcs, rows, out) if rows else None), rest


def _geometry(p: ChunkProjection, chunk: np.ndarray, shape: tuple[int, ...],
              d_strides: tuple[int, ...], it: int) -> tuple[int, ...] | None:
    """``(source offset, s_z, s_y, nz, ny, width, destination offset)`` of a box copy,
    or ``None`` when ``p`` is not a non-empty step-1 box inside the chunk and ``shape``."""
    src_off = dst_off = 0
    n = []
    for cs, os_, c, o, s_c, s_o in zip(p.chunk_sel, p.out_sel, chunk.shape, shape,
                                        chunk.strides, d_strides):
        if type(cs) is not slice or type(os_) is not slice:
            return None
        c0, c1, cstep = cs.indices(c)
        o0, o1, ostep = os_.indices(o)
        if cstep != 1 or ostep != 1 or c1 <= c0 or c1 - c0 != o1 - o0:
            return None
        src_off += c0 * s_c
        dst_off += o0 * s_o
        n.append(c1 - c0)
    if chunk.ndim == 2:
        return (src_off, 0, chunk.strides[0], 1, n[0], n[1] * it, dst_off)
    return (src_off, chunk.strides[0], chunk.strides[1], n[0], n[1], n[2] * it, dst_off)


_PREFETCH: Any = None
_PREFETCH_LOCK = __import__("threading").Lock()


def _prefetch_pool() -> Any:
    """One background thread: prefetches run one after another, never in the caller."""
    global _PREFETCH
    if _PREFETCH is None:
        from concurrent.futures import ThreadPoolExecutor

        with _PREFETCH_LOCK:
            if _PREFETCH is None:
                _PREFETCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diced-prefetch")
    return _PREFETCH


def prefetch(arr: Any, selection: Any, margin: int) -> Any:
    """:meth:`VersionedArray.prefetch`: a Future of the number of chunks warmed."""
    from concurrent.futures import Future

    from diced.array.indexing import Selection, plan_selection
    from diced.errors import InvalidArgumentError

    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise InvalidArgumentError(f"margin must be a non-negative integer, got {margin!r}")
    ctx = arr._ref.ctx()
    shape = arr._shape_at(ctx)
    sel = plan_selection(selection, shape, "basic")
    if not isinstance(sel, Selection):
        raise InvalidArgumentError("prefetch takes a basic selection (integers and slices)")
    cache = chunk_cache()
    done: Future = Future()
    if not ctx.locked or not ctx.uuid or not cache.enabled:
        done.set_result(0)  # only locked versions are cached
        return done
    box = []
    for d, n, c in zip(sel.dims, shape, arr.chunks, strict=True):
        lo, hi = (d.start, d.stop) if d.step > 0 else (d.stop + 1, d.start + 1)
        lo = max(0, (max(lo, 0) // c - margin) * c)
        hi = min(n, (-(-max(hi, lo + 1) // c) + margin) * c)
        box.append(slice(lo, max(lo, hi)))
    nchunks = 1
    for s, c in zip(box, arr.chunks, strict=True):
        nchunks *= -(-(s.stop - s.start) // c)
    if nchunks * arr._cached_chunk_nbytes() > cache.max_bytes // 2:
        done.set_result(0)  # bounded: never more than half the cache
        return done
    sub = arr.at(ctx.uuid) if hasattr(arr, "at") else arr
    target = tuple(box)

    def run() -> int:
        sub[target]
        return nchunks

    return _prefetch_pool().submit(run)
