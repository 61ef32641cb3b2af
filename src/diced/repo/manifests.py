"""Version indexes on stores without ordered scans (object stores, ``file://``).

A version's *manifest* is its ``w/<inst>/<vid>/`` index: what the version itself wrote. A
read at version v needs, per key, the greatest writer id among v's ancestors. Merging one
manifest per ancestor costs one listing per version of history, so every locked version
also gets a *compacted index* (as icechunk's snapshots reference manifests), built once:

* the ckey space is split into buckets (:func:`bucket_of`: 8³ neighbouring chunks of a 3-D
  grid, or one of 64 hash buckets for labels and keys);
* the index of a locked version is a table ``i/<inst>/<vid>/t`` giving, for each non-empty
  bucket, the version whose bucket object ``i/<inst>/<holder>/b/<bucket>`` holds the
  bucket's entries (ckey -> greatest writer id and data/tombstone mark) as its descendants
  see them, plus the version's ancestor set as a bitmap. A version writes new bucket objects
  only for the buckets it (or a merge of differently-indexed parents) changed, and
  references the others; a version that wrote nothing in a space copies its parent's table,
  or, when that maps many buckets, stores a tiny table naming it. Small indexes
  (<= :data:`INLINE_MAX` entries) live inline in the table;
* every object is immutable and written create-only; the table is written last, so its
  presence means the version's index is complete;
* an entry whose writer packed its value (:mod:`diced.repo.chunkpacks`) also says where:
  ``"p": {ckey: [part, offset, length]}`` beside ``"d"`` and ``"t"`` (readers that do not
  know packs ignore it). Descendants copy it with the entry, so a read at any version finds
  its ancestors' packs in the index it already fetched. Packing a version already indexed
  (:meth:`diced.repo.repo.Repo.pack`) rewrites its objects and those of its descendants in
  place, with the same entries.

Reading at a locked version therefore costs one table GET, one round of bucket GETs (none
for inline tables), then the chunk GETs, at any depth. An open version reads its parent's
index plus its own ``w/`` listing.

Building never recurses over the version graph: the index of version v is assembled from
the *bases* found by walking v's ancestor set from the greatest id down (the greatest id of
a set closed under ancestors is always a version whose table covers its whole ancestry), and
the manifests of the few ancestors without a table (an old store, or a crash between a
commit and its compaction). :func:`compact_version` runs at commit; a reader that finds a
locked version without a table builds it the same way.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.backends.base import Backend
from diced.errors import CorruptDataError, DicedError
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.repo.repo import Repo

log = logging.getLogger(__name__)

__all__ = ["INLINE_MAX", "IndexView", "bucket_of", "compact_version", "drop_compacted", "each",
           "manifests", "pack_version"]

#: a compacted index with at most this many entries is stored inline in its table
INLINE_MAX = 512
#: hash buckets for ckeys that are not chunk coordinates (labels, keyvalue keys, ...)
HASH_BUCKETS = 64
#: per grid rank: how many low bits of each chunk coordinate stay inside one bucket
_SHIFT = {1: 9, 2: 5, 3: 3}
_TABLE_FORMAT = 1
#: a version that changed nothing refers to its parent's table instead of copying it only
#: when that table maps more buckets than this
_SAME_MIN_BUCKETS = 64
#: parsed bucket objects kept per backend (immutable, LRU)
_MAX_OBJECTS = 1024
_MAX_TABLES = 8192
_WRITE_THREADS = 16

#: ckey -> (writer version id, mark)
Entries = dict[str, tuple[int, str]]
#: ckey -> (pack part, offset, length) of the value its writer (the entry's id) packed
Locs = dict[str, tuple[int, int, int]]
#: (ckey, writer id) -> where that writer packed it: gathered while building a table
_Known = dict[tuple[str, int], tuple[int, int, int]]


def each(fn: Any, items: Sequence[Any], threads: int) -> None:
    """``fn`` over ``items``: on up to ``threads`` threads when there are several items and
    ``threads > 1`` (object stores: one request each, which overlap), else in order."""
    if len(items) > 1 and threads > 1:
        with ThreadPoolExecutor(min(threads, len(items))) as pool:
            list(pool.map(fn, items))
    else:
        for item in items:
            fn(item)


def bucket_of(ckey: str) -> str:
    """The bucket of a ckey: neighbouring chunks share one (``c<coords >> shift>``), other
    keys are hashed into :data:`HASH_BUCKETS` (``h<nn>``)."""
    parts = ckey.split(".")
    if 1 <= len(parts) and all(len(p) == 8 for p in parts) and not ckey.startswith("k"):
        try:
            shift = _SHIFT.get(len(parts), 2)
            return "c" + ".".join(f"{int(p, 16) >> shift:x}" for p in parts)
        except ValueError:
            pass
    return f"h{zlib.crc32(ckey.encode()) % HASH_BUCKETS:02x}"


def _pack(obj: Any) -> bytes:
    return zlib.compress(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), 1)


def _unpack(key: str, raw: bytes) -> Any:
    try:
        return json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"compacted index {key!r} does not decode: {exc}",
                               store_key=key) from exc


def _encode_entries(entries: Entries, known: _Known | None = None) -> dict[str, Any]:
    """``{"d": {ckey: writer}, "t": {...}}``, plus ``"p": {ckey: [part, offset, length]}``
    for values their writer packed (``known``; readers without packs ignore ``"p"``)."""
    out: dict[str, Any] = {K.DATA: {}, K.TOMB: {}}
    packed: dict[str, list[int]] = {}
    for ckey, (vid, mark) in entries.items():
        out[mark][ckey] = vid
        if known and mark == K.DATA:
            loc = known.get((ckey, vid))
            if loc is not None:
                packed[ckey] = list(loc)
    if packed:
        out["p"] = packed
    return out


def _decode_locs(obj: dict[str, Any]) -> Locs:
    return {ckey: (int(a), int(b), int(c)) for ckey, (a, b, c) in obj.get("p", {}).items()}


def _learn(known: _Known, entries: Entries, locs: Locs | None) -> None:
    """Add the pack locations of ``entries`` (as their writers packed them) to ``known``."""
    for ckey, loc in (locs or {}).items():
        hit = entries.get(ckey)
        if hit is not None:
            known[(ckey, hit[0])] = loc


def _decode_entries(obj: dict[str, dict[str, int]]) -> Entries:
    out: Entries = {}
    for mark in (K.DATA, K.TOMB):
        for ckey, vid in obj.get(mark, {}).items():
            out[ckey] = (int(vid), mark)
    return out


def _bits(vids: Iterable[int]) -> np.ndarray:
    arr = np.fromiter(vids, dtype=np.int64)
    out = np.zeros(int(arr.max()) + 1 if arr.size else 0, dtype=bool)
    out[arr] = True
    return out


def _encode_bits(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits).tobytes()).decode() + f":{bits.size}"


def _decode_bits(text: str) -> np.ndarray:
    data, _, n = text.rpartition(":")
    raw = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
    return np.unpackbits(raw, count=int(n)).astype(bool)


def _greater(entries: Entries, ckey: str, hit: tuple[int, str]) -> None:
    old = entries.get(ckey)
    if old is None or hit[0] > old[0]:
        entries[ckey] = hit


@dataclass
class _Table:
    """A parsed compacted index: the version's ancestor bits, and its buckets (bucket ->
    holder version) or its inline entries (``same``: the table it was declared equal to)."""

    vid: int
    anc: np.ndarray
    buckets: dict[str, int] | None = None
    inline: Entries | None = None
    same: int | None = None
    #: pack locations of inline entries
    locs: Locs | None = None


class IndexView:
    """What a set of locked versions shows: compacted bases plus listed manifests.

    ``lookup`` answers many ckeys with at most one round of bucket-object reads.
    """

    def __init__(self, man: _Manifests, inst: int, bases: list[_Table], diff: Entries) -> None:
        self._man = man
        self._inst = inst
        self._bases = bases
        self._diff = diff

    def lookup(self, ckeys: Sequence[str]) -> list[tuple[int, str] | None]:
        """For each ckey, ``(writer id, mark)`` of its greatest writer, or ``None``."""
        return self.lookup_located(ckeys)[0]

    def lookup_located(self, ckeys: Sequence[str]
                       ) -> tuple[list[tuple[int, str] | None], list[tuple[int, int, int] | None]]:
        """:meth:`lookup`, and for each ckey where its writer packed the value (``None``:
        not packed; see :mod:`diced.repo.chunkpacks`)."""
        bucket = [bucket_of(c) for c in ckeys] if any(b.buckets is not None
                                                      for b in self._bases) else []
        objs = self._man._objects(self._inst, {(b.buckets[bk], bk) for b in self._bases
                                               if b.buckets is not None for bk in set(bucket)
                                               if bk in b.buckets})
        out: list[tuple[int, str] | None] = []
        where: list[tuple[int, int, int] | None] = []
        for i, c in enumerate(ckeys):
            best = self._diff.get(c)
            loc = None
            for b in self._bases:
                if b.inline is not None:
                    hit = b.inline.get(c)
                    locs = b.locs
                else:
                    holder = b.buckets.get(bucket[i])  # type: ignore[union-attr]
                    if holder is None:
                        hit = locs = None
                    else:
                        entries, locs = objs[(holder, bucket[i])]
                        hit = entries.get(c)
                if hit is not None and (best is None or hit[0] > best[0]):
                    best = hit
                    loc = locs.get(c) if locs else None
            out.append(best)
            where.append(loc if best is not None and best[1] == K.DATA else None)
        return out, where

    def entries(self) -> Entries:
        """Every ckey the view knows with its greatest writer (reads every bucket)."""
        out: Entries = {}
        wanted = {(h, bk) for b in self._bases if b.buckets is not None
                  for bk, h in b.buckets.items()}
        objs = self._man._objects(self._inst, wanted)
        for b in self._bases:
            if b.inline is not None:
                for c, hit in b.inline.items():
                    _greater(out, c, hit)
            else:
                for bk, h in b.buckets.items():  # type: ignore[union-attr]
                    for c, hit in objs[(h, bk)][0].items():
                        _greater(out, c, hit)
        for c, hit in self._diff.items():
            _greater(out, c, hit)
        return out


class _Manifests:
    """Per-backend caches of immutable index data: manifests of locked versions, compacted
    tables and bucket objects."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._manifest: dict[tuple[int, int], dict[str, str]] = {}
        self._tables: OrderedDict[tuple[int, int], _Table] = OrderedDict()
        self._objs: OrderedDict[tuple[int, int, str], tuple[Entries, Locs]] = OrderedDict()
        self._lock = threading.Lock()
        self._build_locks: dict[int, threading.Lock] = {}
        self._bits: OrderedDict[frozenset[int], np.ndarray] = OrderedDict()
        self._inflight: dict[Any, threading.Event] = {}
        self._epochs: dict[str, int] = {}

    # --- manifests (w/) ----------------------------------------------------------------------

    def manifest(self, inst: int, vid: int, locked: bool) -> dict[str, str]:
        """ckey -> mark of what ``vid`` itself wrote (cached once ``locked``)."""
        key = (inst, vid)
        if locked:
            with self._lock:
                hit = self._manifest.get(key)
            if hit is not None:
                return hit
        out: dict[str, str] = {}
        for k in self.backend.list_keys(K.index_prefix(inst, vid)):
            _, ckey, mark = K.parse_index_key(k)
            out[ckey] = mark
        if locked:
            with self._lock:
                self._manifest[key] = out
        return out

    def _own_writes(self, inst: int, vids: Sequence[int]) -> Entries:
        """Greatest writer per ckey among the manifests of locked ``vids`` (one listing
        round for those not cached)."""
        with self._lock:
            missing = sorted(v for v in set(vids) if (inst, v) not in self._manifest)
        if missing:
            listings = self.backend.list_prefixes([K.index_prefix(inst, v) for v in missing])
            for vid, keys in zip(missing, listings, strict=True):
                man: dict[str, str] = {}
                for k in keys:
                    _, ckey, mark = K.parse_index_key(k)
                    man[ckey] = mark
                with self._lock:
                    self._manifest[(inst, vid)] = man
        out: Entries = {}
        for vid in sorted(set(vids)):
            with self._lock:
                man = self._manifest[(inst, vid)]
            for ckey, mark in man.items():
                out[ckey] = (vid, mark)
        return out

    def bits(self, ancestors: frozenset[int]) -> np.ndarray:
        """``ancestors`` as a boolean array indexed by version id (cached)."""
        with self._lock:
            hit = self._bits.get(ancestors)
            if hit is not None:
                self._bits.move_to_end(ancestors)
                return hit
        out = _bits(ancestors)
        out.flags.writeable = False
        with self._lock:
            self._bits[ancestors] = out
            while len(self._bits) > 64:
                self._bits.popitem(last=False)
        return out

    # --- compacted tables and buckets (i/) ---------------------------------------------------

    def _parse_table(self, inst: int, vid: int, raw: bytes) -> _Table:
        key = K.compact_table_key(inst, vid)
        obj = _unpack(key, raw)
        try:
            if obj.get("format") != _TABLE_FORMAT:
                raise ValueError(f"unknown format {obj.get('format')!r}")
            t = _Table(vid, _decode_bits(obj["anc"]))
            if "same" in obj:
                t.same = int(obj["same"])
            elif "inline" in obj:
                t.inline = _decode_entries(obj["inline"])
                t.locs = _decode_locs(obj["inline"])
            else:
                t.buckets = {str(b): int(h) for b, h in obj["buckets"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptDataError(f"compacted index {key!r} is malformed: {exc}",
                                   store_key=key) from exc
        return t

    def _load(self, cache: OrderedDict, keys: Sequence[Any], fetch: Any, limit: int
              ) -> dict[Any, Any]:
        """Cached values of ``keys``, fetching the missing ones with ``fetch(keys) -> dict``
        (``None`` values are not cached). Single-flight: a key another thread is fetching
        is waited for, not fetched again (concurrent chunk groups of one read share one
        table and bucket fetch)."""
        out: dict[Any, Any] = {}
        mine: list[Any] = []
        wait: list[tuple[Any, threading.Event]] = []
        with self._lock:
            for k in keys:
                hit = cache.get(k)
                if hit is not None:
                    cache.move_to_end(k)
                    out[k] = hit
                elif k in self._inflight:
                    wait.append((k, self._inflight[k]))
                else:
                    self._inflight[k] = threading.Event()
                    mine.append(k)
        if mine:
            try:
                got = fetch(mine)
                with self._lock:
                    for k, v in got.items():
                        if v is not None:
                            cache[k] = v
                    while len(cache) > limit:
                        cache.popitem(last=False)
                out.update(got)
            finally:
                with self._lock:
                    for k in mine:
                        self._inflight.pop(k).set()
        for k, ev in wait:
            ev.wait()
            with self._lock:
                hit = cache.get(k)
            out[k] = hit if hit is not None else fetch([k])[k]
        return out

    def tables(self, inst: int, vids: Sequence[int]) -> dict[int, _Table | None]:
        """The compacted tables of ``vids`` (``None``: not built), ``same`` references
        resolved; one round of GETs for those not cached (two when some are references)."""
        got = self._load(self._tables, [(inst, v) for v in vids],
                         lambda keys: self._fetch_tables(inst, [v for _, v in keys]),
                         _MAX_TABLES)
        raw = {v: got[(inst, v)] for v in vids}
        refs = {t.same for t in raw.values() if t is not None and t.same is not None}
        if not refs:
            return raw
        # a reference always names a table with content (never another reference)
        targets = self._load(self._tables, [(inst, v) for v in sorted(refs)],
                             lambda keys: self._fetch_tables(inst, [v for _, v in keys]),
                             _MAX_TABLES)
        out: dict[int, _Table | None] = {}
        for v, t in raw.items():
            if t is not None and t.same is not None:
                target = targets.get((inst, t.same))
                if target is None or target.same is not None:
                    raise CorruptDataError(
                        f"compacted index of version id {v} in key space {inst} refers to "
                        f"that of version id {t.same}, which is missing",
                        store_key=K.compact_table_key(inst, v))
                t = _Table(v, t.anc, target.buckets, target.inline, t.same, target.locs)
            out[v] = t
        return out

    def _fetch_tables(self, inst: int, todo: list[int]) -> dict[tuple[int, int], _Table | None]:
        raws = self.backend.get_many([K.compact_table_key(inst, v) for v in todo])
        return {(inst, v): None if raw is None else self._parse_table(inst, v, raw)
                for v, raw in zip(todo, raws, strict=True)}

    def _remember(self, inst: int, t: _Table) -> None:
        with self._lock:
            self._tables[(inst, t.vid)] = t
            while len(self._tables) > _MAX_TABLES:
                self._tables.popitem(last=False)

    def _objects(self, inst: int, wanted: Iterable[tuple[int, str]]
                 ) -> dict[tuple[int, str], tuple[Entries, Locs]]:
        """Bucket objects ``(holder, bucket)`` (entries and pack locations), cached; one
        round of GETs for the others."""
        got = self._load(self._objs, [(inst, h, bk) for h, bk in wanted],
                         lambda keys: self._fetch_objects(inst, [(h, bk) for _, h, bk in keys]),
                         _MAX_OBJECTS)
        return {(h, bk): v for (_, h, bk), v in got.items()}

    def _fetch_objects(self, inst: int, todo: list[tuple[int, str]]
                       ) -> dict[tuple[int, int, str], tuple[Entries, Locs]]:
        out: dict[tuple[int, int, str], tuple[Entries, Locs]] = {}
        keys = [K.compact_bucket_key(inst, h, bk) for h, bk in todo]
        for key, (h, bk), raw in zip(keys, todo, self.backend.get_many(keys), strict=True):
            if raw is None:
                raise CorruptDataError(
                    f"compacted index bucket {key!r} is missing (deleted by a squash or GC "
                    "that left the tables of descendants?)", store_key=key)
            obj = _unpack(key, raw)
            try:
                out[(inst, h, bk)] = (_decode_entries(obj), _decode_locs(obj))
            except (AttributeError, TypeError, ValueError) as exc:
                raise CorruptDataError(f"compacted index bucket {key!r} is malformed: {exc}",
                                       store_key=key) from exc
        return out

    def _cover(self, inst: int, bits: np.ndarray) -> tuple[list[_Table], list[int]]:
        """Bases (compacted tables) and table-less versions that together cover the locked,
        ancestor-closed version set ``bits``: walk it from the greatest id down, probing
        1, 2, 4, ... tables per round."""
        rest = bits.copy()
        bases: list[_Table] = []
        plain: list[int] = []
        k = 1
        while True:
            ids = np.flatnonzero(rest)
            if not ids.size:
                break
            top = [int(v) for v in ids[::-1][:k]]
            found = self.tables(inst, top)
            for v in top:
                if not rest[v]:
                    continue
                t = found[v]
                if t is None:
                    plain.append(v)
                    rest[v] = False
                else:
                    bases.append(t)
                    n = min(t.anc.size, rest.size)
                    rest[:n] &= ~t.anc[:n]
            k = min(k * 2, 256)
        return bases, plain

    def view(self, inst: int, ancestors: frozenset[int]) -> IndexView:
        """What the locked, ancestor-closed set ``ancestors`` shows (a parent's view for an
        open version, or the union of a merge's parents)."""
        if not ancestors:
            return IndexView(self, inst, [], {})
        bases, plain = self._cover(inst, self.bits(ancestors))
        return IndexView(self, inst, bases, self._own_writes(inst, plain) if plain else {})

    def locked_view(self, inst: int, vid: int, ancestors: frozenset[int]) -> IndexView:
        """The compacted index of locked version ``vid`` (built now when missing)."""
        return IndexView(self, inst, [self.table(inst, vid, ancestors)], {})

    def table(self, inst: int, vid: int, ancestors: frozenset[int], *, pack: bool = False,
              rebuild: bool = False) -> _Table:
        """The compacted table of locked version ``vid``; built and stored if missing.

        ``pack``: a table built now also packs the values ``vid`` wrote
        (:mod:`diced.repo.chunkpacks`). ``rebuild`` (with ``pack``): build it again even if it
        exists, overwriting the version's own index objects with ones that name the packs
        (same entries, so readers holding the old ones still read right)."""
        if not rebuild:
            t = self.tables(inst, [vid])[vid]
            if t is not None:
                return t
        with self._lock:
            build_lock = self._build_locks.setdefault(inst, threading.Lock())
        with build_lock:  # one thread of this process builds a space's indexes
            t = None if rebuild else self.tables(inst, [vid])[vid]
            if t is None:
                t = self._build(inst, vid, ancestors, pack=pack, overwrite=rebuild)
        return t

    def _build(self, inst: int, vid: int, ancestors: frozenset[int], *, pack: bool = False,
               overwrite: bool = False) -> _Table:
        def b_is_big(b: _Table) -> bool:
            return b.buckets is not None and len(b.buckets) > _SAME_MIN_BUCKETS

        anc = self.bits(ancestors)
        parents = anc.copy()
        parents[vid] = False
        bases, plain = self._cover(inst, parents)
        diff = self._own_writes(inst, [*plain, vid])
        bits_text = _encode_bits(anc)
        known: _Known = {}
        if pack:
            from diced.repo.chunkpacks import write_packs

            own = sorted(c for c, (w, mark) in diff.items() if w == vid and mark == K.DATA)
            known = {(c, vid): loc for c, loc in write_packs(
                self.backend, inst, vid, own, overwrite=overwrite).items()}
        if overwrite:
            self.forget(inst)  # cached objects of ``vid`` lack the pack locations
        if len(bases) == 1 and not diff and b_is_big(bases[0]):
            # nothing changed: point at the base's table (one more GET for readers, so only
            # where copying the base's bucket map would cost more than that)
            b = bases[0]
            same = b.same if b.same is not None else b.vid
            self._store({}, K.compact_table_key(inst, vid),
                        {"format": _TABLE_FORMAT, "anc": bits_text, "same": same}, overwrite)
            t = _Table(vid, anc, b.buckets, b.inline, same)
            self._remember(inst, t)
            return t
        for b in bases:
            if b.inline is not None:
                _learn(known, b.inline, b.locs)
        if all(b.inline is not None for b in bases):
            entries: Entries = {}
            for b in bases:
                for c, hit in b.inline.items():  # type: ignore[union-attr]
                    _greater(entries, c, hit)
            for c, hit in diff.items():
                _greater(entries, c, hit)
            if len(entries) <= INLINE_MAX:
                encoded = _encode_entries(entries, known)
                self._store({}, K.compact_table_key(inst, vid),
                            {"format": _TABLE_FORMAT, "anc": bits_text, "inline": encoded},
                            overwrite)
                t = _Table(vid, anc, inline=entries, locs=_decode_locs(encoded))
                self._remember(inst, t)
                return t
        # bucket by bucket: reference unchanged buckets, write the others at vid
        changed: dict[str, Entries] = {}
        for c, hit in diff.items():
            changed.setdefault(bucket_of(c), {})[c] = hit
        sources: dict[str, set[int]] = {}
        inline_parts: dict[str, list[Entries]] = {}
        for b in bases:
            if b.buckets is not None:
                for bk, h in b.buckets.items():
                    sources.setdefault(bk, set()).add(h)
            else:
                per: dict[str, Entries] = {}
                for c, hit in b.inline.items():  # type: ignore[union-attr]
                    per.setdefault(bucket_of(c), {})[c] = hit
                for bk, part in per.items():
                    inline_parts.setdefault(bk, []).append(part)
        names = set(sources) | set(inline_parts) | set(changed)
        table: dict[str, int] = {}
        rewrite: list[str] = []
        for bk in names:
            src = sources.get(bk, set())
            if bk not in changed and bk not in inline_parts and len(src) == 1:
                table[bk] = next(iter(src))
            else:
                rewrite.append(bk)
        objs = self._objects(inst, {(h, bk) for bk in rewrite for h in sources.get(bk, ())})
        for got, locs in objs.values():
            _learn(known, got, locs)
        new_objs: dict[str, dict[str, Any]] = {}
        for bk in sorted(rewrite):
            entries = {}
            for h in sources.get(bk, ()):
                for c, hit in objs[(h, bk)][0].items():
                    _greater(entries, c, hit)
            for part in inline_parts.get(bk, ()):
                for c, hit in part.items():
                    _greater(entries, c, hit)
            for c, hit in changed.get(bk, {}).items():
                _greater(entries, c, hit)
            new_objs[K.compact_bucket_key(inst, vid, bk)] = _encode_entries(entries, known)
            table[bk] = vid
        self._store(new_objs, K.compact_table_key(inst, vid),
                    {"format": _TABLE_FORMAT, "anc": bits_text, "buckets": table}, overwrite)
        t = _Table(vid, anc, buckets=table)
        self._remember(inst, t)
        return t

    def _store(self, objects: dict[str, Any], table_key: str, table: dict[str, Any],
               overwrite: bool = False) -> None:
        """Create the bucket objects, then the table (create-only: a concurrent builder of
        the same locked version produces the same entries, so losing the race is harmless;
        ``overwrite``: replace them, for a rebuild that adds pack locations)."""
        backend = self.backend
        items = [(k, _pack(v)) for k, v in objects.items()]

        def create(item: tuple[str, bytes]) -> None:
            if overwrite:
                backend.set(item[0], item[1])
            else:
                backend.compare_and_set(item[0], None, item[1])

        each(create, items, 1 if len(items) <= 2 or backend.capabilities.atomic_update
             else _WRITE_THREADS)
        create((table_key, _pack(table)))

    def observe(self, repo: str, squashes: int) -> None:
        """Note the squash count of ``repo``'s document as a handle read it: when it moved
        past what this process saw before, another process squashed versions, whose kept
        version's manifest and indexes changed, so everything cached here is dropped."""
        with self._lock:
            old = self._epochs.get(repo)
            if old is not None and squashes <= old:
                return
            self._epochs[repo] = squashes
            if old is None:
                return
            self._manifest.clear()
            self._tables.clear()
            self._objs.clear()
        log.info("repo %s was squashed by another process: index caches dropped", repo)

    def forget(self, inst: int) -> None:
        """Drop every cached entry of key space ``inst``."""
        with self._lock:
            for k in [k for k in self._manifest if k[0] == inst]:
                del self._manifest[k]
            for k in [k for k in self._tables if k[0] == inst]:
                del self._tables[k]
            for k in [k for k in self._objs if k[0] == inst]:
                del self._objs[k]


_MANIFESTS: dict[int, _Manifests] = {}
_MANIFESTS_LOCK = threading.Lock()


def manifests(backend: Backend) -> _Manifests:
    """The index caches of ``backend`` (one per backend object)."""
    with _MANIFESTS_LOCK:
        m = _MANIFESTS.get(id(backend))
        if m is None or m.backend is not backend:
            m = _MANIFESTS[id(backend)] = _Manifests(backend)
        return m


def compact_version(repo: Repo, vid: int, *, pack: bool = False) -> None:
    """Build the compacted index of locked version ``vid`` in every key space of every
    instance it holds (nothing to do on ordered stores such as LMDB); with ``pack``, also
    pack the chunks it wrote (:mod:`diced.repo.chunkpacks`).

    Called by :meth:`Repo.commit` after the lock; a failure is logged, not raised (the
    commit has happened; a later read builds the missing index, without packs).
    """
    try:
        pack_version(repo, vid, pack=pack, rebuild=pack)
    except Exception as exc:  # the commit stands; readers build what is missing
        log.warning("compacting version id %d of repo %s failed (a read will retry): %r",
                    vid, repo.uuid, exc, exc_info=not isinstance(exc, DicedError))


def pack_version(repo: Repo, vid: int, *, pack: bool = True, rebuild: bool = True) -> int:
    """Build (``rebuild``: again) the compacted index of locked version ``vid`` in every
    key space it holds, packing what it wrote when ``pack``; returns the number of spaces.
    Raises what fails (:func:`compact_version` logs it instead)."""
    backend = repo.backend
    if backend.capabilities.ordered_scan:
        return 0
    from diced.repo.repo import instance_spaces

    ctx = repo._ctx(vid)
    if not ctx.locked:
        return 0
    spaces = [sid for rec in repo._doc["instances"].values()
              if rec.get("created", 0) in ctx.ancestors for sid in instance_spaces(rec)
              if not backend.capabilities_for(K.data_prefix(sid)).ordered_scan]
    man = manifests(backend)

    def one(sid: int) -> None:
        man.table(sid, vid, ctx.ancestors, pack=pack, rebuild=rebuild)

    each(one, spaces, 1 if backend.capabilities.atomic_update else 8)
    return len(spaces)


def drop_compacted(backend: Backend, spaces: Iterable[int], vids: Iterable[int]) -> int:
    """Delete the compacted indexes (``i/<inst>/<vid>/``) of versions ``vids`` in key spaces
    ``spaces`` and forget what this process cached of those spaces; returns the number of
    keys deleted.

    For GC and squash: deleting a leaf version may drop its own index; rewriting or deleting
    the data of a locked version must also drop the indexes of all its descendants (their
    tables may refer to its bucket objects). Readers rebuild whatever is missing.
    """
    spaces, vids = list(spaces), list(vids)
    prefixes = [K.compact_prefix(inst, vid) for inst in spaces for vid in vids]
    keys = [k for listing in backend.list_prefixes(prefixes) for k in listing]
    if keys:
        backend.delete_many(keys)
    man = manifests(backend)
    for inst in spaces:
        man.forget(inst)
    return len(keys)
