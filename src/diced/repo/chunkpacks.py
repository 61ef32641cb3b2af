"""Chunk packs: the chunks a locked version wrote, several per object, read with ranged GETs.

On an object store every chunk is an object, so a cold read of N chunks costs N GETs, and a
server's per-request cost (and a client's) is paid N times. A version locked with
``commit(pack=True)`` (or packed later, :meth:`diced.repo.repo.Repo.pack`) also stores
copies of the chunks it wrote, grouped by index bucket (8³ neighbouring chunks of a 3-D
grid): ``i/<space>/<vid>/p/<bucket>/<n>``, each part at most :data:`PACK_MAX` bytes. Where
each value sits (part, offset, length) is recorded beside its index entry in the version's
compacted index (:mod:`diced.repo.manifests`), and descendants' indexes carry it forward, so
a read finds it in the index it already fetched: no extra round. Values of one pack that a
read wants are fetched with ranged GETs, neighbours closer than :data:`GAP` in one request
of at most :data:`SPAN_MAX` bytes, the requests concurrent.

Packs are derived and redundant, like the compacted indexes they live beside:

* the chunk objects stay; a pack that is missing, short or damaged is skipped and its
  values are read from them (logged once per pack);
* each packed value carries its own CRC32C, seeded with the space, chunk and writer, so a
  range that does not hold exactly that value (a pack rebuilt after a squash, under a reader
  holding old offsets) fails the check instead of returning another chunk's bytes;
* they live under ``i/<space>/<vid>/``, which squash, GC, dropped versions and deleted
  instances already delete whole (:func:`diced.repo.manifests.drop_compacted`).

Only chunk-grid spaces are packed (arrays, label blocks, pyramid levels); label indexes and
keyvalue spaces are not. Ordered stores (LMDB) read a chunk with one local seek and are not
packed. The cost is storage: a packed version's chunks are stored twice.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from crc32c import crc32c

from diced.backends.arriving import Arriving
from diced.backends.base import Backend
from diced.backends.checksum import ChecksummedBackend
from diced.errors import BackendError
from diced.repo import keys as K
from diced.repo.manifests import bucket_of, each

log = logging.getLogger(__name__)

__all__ = ["GAP", "PACK_MAX", "SPAN_MAX", "PackRead", "Packed", "arrival_order", "launch",
           "plan", "prepare", "read_packed", "spans", "stream_packed", "take", "write_packs"]

#: a pack part holds at most this many bytes (a bucket's values are split past it): as much
#: as one ranged GET reads, so larger parts would not save requests; packing holds one part
#: per writing thread in memory
PACK_MAX = 8 << 20
#: values of one pack closer than this are read in one ranged GET (what lies between is
#: read and dropped: a small gap costs less than a request, a chunk or two of images more)
GAP = 256 << 10
#: one ranged GET reads at most this many bytes (longer runs are split, read concurrently)
SPAN_MAX = 8 << 20
#: values read per batch while building packs
_BATCH = 64
_CHECK = 4
_WRITE_THREADS = 8

#: (part, offset, length): where a packed value sits in its writer's pack of its bucket
Loc = tuple[int, int, int]

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _seed(inst: int, vid: int, ckey: str) -> int:
    return crc32c(f"{inst:08x}/{ckey}/{vid:08x}".encode())


def _check(inst: int, vid: int, ckey: str, payload: bytes | memoryview) -> int:
    return crc32c(payload, _seed(inst, vid, ckey))


def packable(ckey: str) -> bool:
    """Whether ``ckey`` is a chunk of a grid (packs hold only those)."""
    return bucket_of(ckey).startswith("c")


def write_packs(backend: Backend, inst: int, vid: int, ckeys: Sequence[str], *,
                overwrite: bool = False) -> dict[str, Loc]:
    """Pack the values version ``vid`` wrote at ``ckeys`` (chunk keys it wrote data at; the
    others are skipped) and return where each went. Parts are written create-only (their
    bytes follow from the version's immutable values) or, with ``overwrite``, replaced.

    Memory: one part and one batch of values at a time per writing thread.
    """
    by_bucket: dict[str, list[str]] = {}
    for c in sorted(ckeys):
        if packable(c):
            by_bucket.setdefault(bucket_of(c), []).append(c)
    out: dict[str, Loc] = {}
    out_lock = threading.Lock()

    def put(key: str, data: bytes) -> None:
        if overwrite:
            backend.set(key, data)
        else:
            backend.compare_and_set(key, None, data)

    def one(bucket: str) -> None:
        part, parts, size = 0, [], 0
        mine: dict[str, Loc] = {}
        names = by_bucket[bucket]
        for i in range(0, len(names), _BATCH):
            batch = names[i:i + _BATCH]
            for c, v in zip(batch, backend.get_many([K.data_key(inst, c, vid) for c in batch]),
                            strict=True):
                if v is None:  # the manifest names it but it is gone: nothing to copy
                    continue
                item = len(v) + _CHECK
                if parts and size + item > PACK_MAX:
                    put(K.compact_pack_key(inst, vid, bucket, part), b"".join(parts))
                    part, parts, size = part + 1, [], 0
                mine[c] = (part, size, item)
                parts += [v, _check(inst, vid, c, v).to_bytes(_CHECK, "little")]
                size += item
        if parts:
            put(K.compact_pack_key(inst, vid, bucket, part), b"".join(parts))
        with out_lock:
            out.update(mine)

    each(one, sorted(by_bucket), 1 if backend.capabilities.atomic_update else _WRITE_THREADS)
    return out


def spans(items: list[tuple[int, int, int]], cap: int | None = None
          ) -> list[tuple[int, int, list[int]]]:
    """``(start, end, [item index])`` runs over ``(offset, length, index)`` items of one pack
    sorted by offset: neighbours closer than :data:`GAP` share a run of at most
    :data:`SPAN_MAX` bytes (and at most ``cap`` items)."""
    out: list[tuple[int, int, list[int]]] = []
    for off, length, i in items:
        if out:
            start, end, idx = out[-1]
            if (end <= off and off - end <= GAP and off + length - start <= SPAN_MAX
                    and (cap is None or len(idx) < cap)):
                idx.append(i)
                out[-1] = (start, off + length, idx)
                continue
        out.append((off, off + length, [i]))
    return out


def plan(inst: int, wanted: Sequence[tuple[str, int, Loc]], cap: int | None = None
         ) -> list[tuple[str, int, int, list[int]]]:
    """The ranged reads that fetch each ``(ckey, writer id, loc)`` of ``wanted``:
    ``(pack key, start, end, [index into wanted])``, neighbours of one pack merged by
    :func:`spans` (at most ``cap`` values per read)."""
    by_pack: dict[str, list[tuple[int, int, int]]] = {}
    for i, (ckey, vid, (part, off, length)) in enumerate(wanted):
        key = K.compact_pack_key(inst, vid, bucket_of(ckey), part)
        by_pack.setdefault(key, []).append((off, length, i))
    return [(key, start, end, idx) for key, items in by_pack.items()
            for start, end, idx in spans(sorted(items), cap)]


@dataclass(slots=True, eq=False)
class Packed:
    """One value to read from its writer's pack (:func:`prepare`)."""

    #: the caller's index of the value
    i: int
    #: where the value sits in its read's range, and its chunk and writer (its check is
    #: seeded with them)
    lo: int
    length: int
    ckey: str
    vid: int
    #: the pack object, and the bytes of the read once :func:`launch` sent it
    key: str
    buf: Arriving | None = None


@dataclass(slots=True, eq=False)
class PackRead:
    """One ranged GET of a pack: bytes ``[start, end)`` of ``key``, holding ``values``."""

    key: str
    start: int
    end: int
    values: list[Packed]


def prepare(inst: int, wanted: Sequence[tuple[str, int, Loc]], cap: int | None = None
            ) -> list[PackRead]:
    """The ranged GETs that fetch the ``(ckey, writer id, loc)`` of ``wanted`` (:func:`plan`,
    at most ``cap`` values each), not sent yet; each value's ``i`` is its index in
    ``wanted``."""
    return [PackRead(key, first, end, [
        Packed(i, wanted[i][2][1] - first, wanted[i][2][2], wanted[i][0], wanted[i][1], key)
        for i in idx]) for key, first, end, idx in plan(inst, wanted, cap)]


def launch(backend: Backend, reads: Sequence[PackRead]) -> None:
    """Send ``reads`` and return at once, the bytes streaming in where the backend can:
    :func:`take` waits for a value, :func:`arrival_order` hands values on as they come."""
    # below the checksum layer (its trailer ends the pack, so offsets are the same): a
    # range is checked value by value, and the checked layer would read the whole pack
    below = backend.raw if isinstance(backend, ChecksummedBackend) else backend
    arriving = below.stream_ranges([(r.key, r.start, r.end) for r in reads])
    for r, buf in zip(reads, arriving, strict=True):
        for p in r.values:
            p.buf = buf


def take(backend: Backend, inst: int, p: Packed) -> memoryview | None:
    """The payload of ``p`` once its bytes are in (a view, valid while the caller keeps
    it), or ``None`` where the pack is missing, short, unreadable or fails the value's
    check: read it from its chunk object then. ``backend`` names the store in the log."""
    assert p.buf is not None, "take() of a value whose read was not launched"
    try:
        view = p.buf.wait(p.lo + p.length)
    except BackendError as exc:  # the chunk objects may still be readable
        _warn(backend, p.key, f"could not be read ({exc})")
        return None
    if view is None:
        _warn(backend, p.key, "is missing or shorter than its index says")
        return None
    end = p.lo + p.length
    body = view[p.lo:end - _CHECK]
    if _check(inst, p.vid, p.ckey, body) != int.from_bytes(view[end - _CHECK:end], "little"):
        _warn(backend, p.key, f"holds a damaged or different value for "
                              f"{K.describe_ckey(p.ckey)}")
        return None
    return body


def arrival_order(reads: Sequence[PackRead], ready: queue.SimpleQueue[Packed]) -> None:
    """Put each value of ``reads`` (launched) in ``ready`` as soon as its bytes are in (or
    its read has ended without them), exactly once, so that readers decode in the order
    the bytes arrive, not in the order they were asked for."""
    for r in reads:
        ps = r.values
        assert ps[0].buf is not None, "arrival_order() of reads not launched"
        ps[0].buf.on_filled([p.lo + p.length for p in ps], lambda k, ps=ps: ready.put(ps[k]))


def stream_packed(backend: Backend, inst: int, wanted: Sequence[tuple[str, int, Loc]]
                  ) -> Iterator[tuple[int, memoryview | None]]:
    """``(index into wanted, payload)`` for each ``(ckey, writer id, loc)``, read from the
    writer's pack, each as soon as its bytes are in (one round of concurrent ranged GETs,
    streamed where the backend can: the caller decodes a value while the next ones are on
    the wire). The payload is as :func:`take` gives it."""
    reads = prepare(inst, wanted)
    launch(backend, reads)
    for r in reads:
        for p in r.values:
            yield p.i, take(backend, inst, p)


def read_packed(backend: Backend, inst: int, wanted: Sequence[tuple[str, int, Loc]]
                ) -> list[memoryview | None]:
    """:func:`stream_packed` as a list, once every value is in."""
    out: list[memoryview | None] = [None] * len(wanted)
    for i, v in stream_packed(backend, inst, wanted):
        out[i] = v
    return out


def _warn(backend: Backend, key: str, what: str) -> None:
    """Log a pack read that fell back, once per store and pack."""
    with _warned_lock:
        if (backend.url, key) in _warned:
            return
        _warned.add((backend.url, key))
    log.warning("pack %s in %s %s; reading its chunks from their own objects", key,
                backend.url, what)
