"""Converting one shard (the unit of work of :func:`diced.export.convert_shards.convert_shards`):
a DVID shard transcoded into its neuroglancer shard file (direct), or an output shard made by
2x majority vote from the previous scale's shard files (downres). Failures are returned as
results, not raised, so a run goes on.

Private to :mod:`diced.export.convert_shards` (and :mod:`diced.export._verify`).
"""

from __future__ import annotations

import logging
import posixpath
import time

import fsspec
import numpy as np

from diced.errors import CorruptDataError, DicedError, FormatError
from diced.export._convert_plan import (
    _check_source_shard,
    _DirectTask,
    _DownresTask,
    _fs,
    _Result,
)
from diced.export._convert_spec import _BLOCK, _WINDOW_ROWS, _OutScale
from diced.export._dvid_source import ArrowRecords as _ArrowRecords
from diced.export._dvid_source import block_and_table as _block_and_table
from diced.export._dvid_source import url as _url

logger = logging.getLogger(__name__)


class _Encoder:
    """Per-thread scratch for encoding output chunks."""

    def __init__(self, out: _OutScale) -> None:
        from diced.export._convert_kernels import max_cseg_words

        self.out = out
        self.words = np.empty(max_cseg_words(64, 64, 64), np.uint32)
        self.vox = np.empty(64 ** 3, np.uint64)


def _convert_direct(task: _DirectTask) -> _Result:
    """Convert one DVID shard into its neuroglancer shard file (the unit of work)."""
    t0 = time.perf_counter()
    try:
        nchunks, nbytes = _convert_direct_inner(task)
    except Exception as exc:  # reported per shard; the run goes on
        logger.debug("shard %s failed", task.label, exc_info=True)
        return _Result(task.out.index, task.label, task.output, error=_reason(exc),
                       seconds=time.perf_counter() - t0)
    return _Result(task.out.index, task.label, task.output, nchunks, nbytes,
                   time.perf_counter() - t0)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DicedError) else f"{type(exc).__name__}: {exc}"


def _convert_direct_inner(task: _DirectTask) -> tuple[int, int]:
    import zstandard

    from diced.export import _convert_kernels as K
    from diced.export._ng_shards import ShardFileWriter, encode_chunk

    c = task.common
    sfs, _ = _fs(c.source, c.storage_options)
    dfs, droot = _fs(c.dest, c.dest_options)
    out = task.out
    sc = out.sc
    index, oc, number = _check_source_shard(sfs, task.shard, out, task.stride)
    if number != task.number:
        raise FormatError(f"{task.label}: shard number changed since planning")
    name = _url(sfs, task.shard.arrow)
    if not len(oc):
        return 0, 0
    # output chunks in (minishard, chunk id) order; rows grouped per output chunk
    ids = sc.chunk_ids(oc)
    minis = sc.minishard_numbers(oc)
    order = np.lexsort((index.coords[:, 2], ids, minis))
    ids_o, minis_o = ids[order], minis[order]
    starts = np.flatnonzero(np.r_[True, ids_o[1:] != ids_o[:-1]])
    bounds = np.r_[starts, len(order)]
    shapes = out.chunk_shape(oc[order[starts]])
    direct = out.transcodable() and task.stride == 1
    records = _ArrowRecords(sfs, task.shard, index, name)
    writer = ShardFileWriter(dfs, posixpath.join(droot, task.output), sc.minishard_bits,
                             sc.minishard_index_encoding, sc.data_encoding, c.gzip_level,
                             c.tmp_dir)
    enc = _Encoder(out)
    dctx = zstandard.ZstdDecompressor()
    czo = sc.chunk_size[2]
    zper = _BLOCK // task.stride
    try:
        g = 0
        ngroups = len(starts)
        while g < ngroups:
            g_end = g
            while g_end < ngroups and bounds[g_end] - bounds[g] < _WINDOW_ROWS:
                g_end += 1
            g_end = max(g_end, g + 1)
            rows = order[bounds[g]:bounds[g_end]]
            fetched = records.rows(rows)
            k = 0
            for gi in range(g, g_end):
                nrows = int(bounds[gi + 1] - bounds[gi])
                sx, sy, sz = (int(v) for v in shapes[gi])
                if direct:
                    batch, i = fetched[k]
                    buf, table = _block_and_table(batch, i, c.supervoxels, name, dctx)
                    err, det, nw = K.dvid_to_cseg(buf, table, sx, sy, sz, enc.words)
                    if err != 0:
                        _raise_block(err, det, name, batch.xyz[i])
                    data = enc.words[:nw].tobytes()
                else:
                    vol = np.zeros((czo, 64, 64), np.uint64)
                    oz0 = int(oc[order[bounds[gi]], 2]) * czo
                    for r in range(nrows):
                        batch, i = fetched[k + r]
                        buf, table = _block_and_table(batch, i, c.supervoxels, name, dctx)
                        err, det = K.decode_block_into(buf, table, enc.vox)
                        if err != 0:
                            _raise_block(err, det, name, batch.xyz[i])
                        z0 = int(batch.xyz[i, 2]) * zper - oz0
                        vol[z0:z0 + zper] = enc.vox.reshape(64, 64, 64)[::task.stride]
                    data = encode_chunk(vol[:sz, :sy, :sx], out.encoding, out.block_size)
                writer.add(int(ids_o[bounds[gi]]), int(minis_o[bounds[gi]]), data)
                k += nrows
            g = g_end
        nbytes = writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        records.close()
    return writer.chunks, nbytes


def _raise_block(err: int, detail: int, name: str, xyz: np.ndarray) -> None:
    from diced.array.codecs.labelblock import _ERRORS
    from diced.export import _convert_kernels as K

    msg = {K.ERR_NOT_64: "block is not 64x64x64"}.get(err) or _ERRORS.get(err, f"error {err}")
    raise CorruptDataError(f"{name}: chunk {tuple(int(v) for v in xyz)}: corrupt DVID block: "
                           f"{msg} (sub-block {detail})")


def _child_index(fs: fsspec.AbstractFileSystem, root: str, prev: _OutScale,
                 number: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from diced.export._convert_kernels import morton_decode
    from diced.export._ng_shards import read_shard_index

    sc = prev.sc
    path = posixpath.join(root, prev.key, sc.shard_file_name(number))
    ids, starts, sizes = read_shard_index(fs, path, sc.minishard_bits,
                                          sc.minishard_index_encoding)
    coords = morton_decode(ids, np.asarray(sc.bits, np.int64))
    return path, ids, coords, starts, sizes


def _convert_downres(task: _DownresTask) -> _Result:
    t0 = time.perf_counter()
    try:
        nchunks, nbytes = _convert_downres_inner(task)
    except Exception as exc:
        logger.debug("downres shard %s failed", task.label, exc_info=True)
        return _Result(task.out.index, task.label, task.output, error=_reason(exc),
                       seconds=time.perf_counter() - t0)
    return _Result(task.out.index, task.label, task.output, nchunks, nbytes,
                   time.perf_counter() - t0)


def _convert_downres_inner(task: _DownresTask) -> tuple[int, int]:
    from diced.array._downres_kernels import downsample_labels
    from diced.export._ng_shards import (
        ShardFileWriter,
        decode_chunk,
        encode_chunk,
        read_chunks,
    )

    c = task.common
    dfs, droot = _fs(c.dest, c.dest_options)
    out, prev = task.out, task.prev
    sc, pc = out.sc, prev.sc
    where: dict[int, tuple[str, int, int]] = {}  # child chunk id -> (path, start, size)
    parents = []
    for child in task.children:
        path, ids, coords, starts, sizes = _child_index(dfs, droot, prev, child)
        if not len(ids):
            continue
        par = coords // 2
        mine = sc.shard_numbers(par) == task.number
        for cid, s, n in zip(ids[mine].tolist(), starts[mine].tolist(), sizes[mine].tolist(),
                             strict=True):
            where[cid] = (path, s, n)
        parents.append(par[mine])
    if not parents or not sum(len(p) for p in parents):
        return 0, 0
    par = np.unique(np.concatenate(parents), axis=0)
    ids = sc.chunk_ids(par)
    minis = sc.minishard_numbers(par)
    order = np.lexsort((ids, minis))
    par, ids, minis = par[order], ids[order], minis[order]
    shapes = out.chunk_shape(par)
    ccs = np.asarray(pc.chunk_size, np.int64)
    writer = ShardFileWriter(dfs, posixpath.join(droot, task.output), sc.minishard_bits,
                             sc.minishard_index_encoding, sc.data_encoding, c.gzip_level,
                             c.tmp_dir)
    octs = np.array([(dx, dy, dz) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)], np.int64)
    try:
        step = 64
        for g in range(0, len(par), step):
            block = par[g:g + step]
            kids = (block[:, None, :] * 2 + octs[None, :, :]).reshape(-1, 3)
            inside = pc.contains(kids)
            kid_ids = np.zeros(len(kids), np.uint64)
            kid_ids[inside] = pc.chunk_ids(kids[inside])
            wanted: dict[str, list[int]] = {}
            for k in np.flatnonzero(inside):
                hit = where.get(int(kid_ids[k]))
                if hit is not None:
                    wanted.setdefault(hit[0], []).append(int(k))
            datas: dict[int, bytes] = {}
            for path, ks in wanted.items():
                got = read_chunks(dfs, path, [where[int(kid_ids[k])][1] for k in ks],
                                  [where[int(kid_ids[k])][2] for k in ks])
                datas.update(zip(ks, got, strict=True))
            for j in range(len(block)):
                src = np.zeros((2 * ccs[2], 2 * ccs[1], 2 * ccs[0]), np.uint64)
                for o in range(8):
                    k = j * 8 + o
                    data = datas.get(k)
                    if data is None:
                        continue
                    if pc.data_encoding == "gzip":
                        from diced.export._ng_shards import gunzip_bytes

                        data = gunzip_bytes(data, f"scale {pc.index} chunk {kids[k].tolist()}")
                    kshape = prev.chunk_shape(kids[k][None])[0]
                    arr = decode_chunk(data, kshape, prev.encoding, prev.block_size,
                                       f"scale {pc.index} chunk {tuple(kids[k].tolist())}")
                    dx, dy, dz = (octs[o] * ccs).tolist()
                    src[dz:dz + arr.shape[0], dy:dy + arr.shape[1], dx:dx + arr.shape[2]] = arr
                lo = np.empty((ccs[2], ccs[1], ccs[0]), np.uint64)
                downsample_labels(src, lo)
                sx, sy, sz = (int(v) for v in shapes[g + j])
                writer.add(int(ids[g + j]), int(minis[g + j]),
                           encode_chunk(lo[:sz, :sy, :sx], out.encoding, out.block_size))
        nbytes = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.chunks, nbytes
