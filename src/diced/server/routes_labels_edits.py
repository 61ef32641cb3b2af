"""Labelmap proofreading endpoints: label allocation (``maxlabel``, ``nextlabel``), edits
(``merge``, ``cleave``, ``split-supervoxel``, ``renumber``), the mutation log (``mutations``,
``lastmod``) and the label index that carries the last mutation (``index``, ``indices``)
(dvid-reference §4.5, §4.6, §8); registered by :mod:`diced.server.routes_labels`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from starlette.responses import Response

from diced.server._http import (
    bad,
    json_body,
    label_list,
    parse_bool,
    parse_int,
    parse_label,
)
from diced.server._labels_common import (
    _exists,
    _label_arg,
    _text_json,
)
from diced.server.dvidjson import go_time_string
from diced.server.geometry import array_extent
from diced.server.registry import InstanceRequest

__all__ = ["go_timestamp", "label_index_bytes", "last_mod", "mutation_records"]


def _maxlabel(req: InstanceRequest) -> Response:
    if req.method == "POST":
        raise bad("POST maxlabel is not supported by diced: the max label follows the "
                  "written labels, and nextlabel allocations never reuse ids")
    return _text_json(f'{{"maxlabel": {req.instance().maxlabel()}}}')


def _nextlabel(req: InstanceRequest) -> Response:
    if req.method == "POST":
        if not req.parts:
            raise bad("DVID requires number of requested labels to follow POST /nextlabel")
        count = parse_int(req.parts[0], "number of labels", lo=1, hi=1 << 32)
        start, end = req.writable().allocate(count)
        return _text_json(f'{{"start": {start}, "end": {end}}}')
    return _text_json(f'{{"nextlabel": {req.instance().nextlabel()}}}')


def _merge(req: InstanceRequest) -> Response:
    labels = label_list(json_body(req.body, "merge body"), "merge op", limit=100_000)
    if len(labels) < 2:
        raise bad("Bad merge op JSON: need [target, label1, label2, ...]")
    if any(x == 0 for x in labels):
        raise bad("Error on merge: label 0 cannot be merged")
    arr = req.writable()
    for x in labels:
        if not _exists(arr, x, False):
            raise bad(f"Error on merge: label {x} does not exist")
    mutid = arr.merge(labels[0], labels[1:])
    return _text_json(f'{{"MutationID": {int(mutid)}}}')


def _latest_mutation(arr: Any, action: str, **match: int) -> int:
    for rec in reversed(arr.mutations()):
        if rec.get("Action") == action and all(rec.get(k) == v for k, v in match.items()):
            return int(rec["MutationID"])
    return 0


def _cleave(req: InstanceRequest) -> Response:
    label = _label_arg(req, "label ID")
    svs = label_list(json_body(req.body, "cleave body"), "cleave supervoxels", limit=1_000_000)
    if not svs:
        raise bad("cleave needs a non-empty JSON list of supervoxels")
    arr = req.writable()
    new = arr.cleave(label, svs)
    mutid = _latest_mutation(arr, "cleave", CleavedLabel=int(new))
    return _text_json(f'{{"CleavedLabel": {int(new)}, "MutationID": {mutid}}}')


def _split_supervoxel(req: InstanceRequest) -> Response:
    from diced.array.sparsevol import decode_rles

    sv = _label_arg(req, "label ID")
    split = req.query.get("split")
    remain = req.query.get("remain")
    split_id = parse_label(split, "split") if split else None
    remain_id = parse_label(remain, "remain") if remain else None
    if not req.body or req.body[:1] != b"\x00":
        raise bad("split-supervoxel body must be a legacy sparsevol RLE (payload descriptor 0)")
    decode_rles(req.body)  # validate before anything is written
    arr = req.writable()
    a, b = arr.split_supervoxel(sv, req.body, split=split_id, remain=remain_id)
    mutid = _latest_mutation(arr, "split-supervoxel", SplitSupervoxel=int(a))
    return _text_json(f'{{"SplitSupervoxel": {int(a)}, "RemainSupervoxel": {int(b)}, '
                      f'"MutationID": {mutid}}}')


def _renumber(req: InstanceRequest) -> Response:
    pairs = label_list(json_body(req.body, "renumber body"), "renumber op", limit=200_000)
    if len(pairs) % 2:
        raise bad("Bad renumber op JSON, must be even list of numbers [new1, old1, new2, old2, ...]")
    arr = req.writable()
    for i in range(0, len(pairs), 2):
        new, old = pairs[i], pairs[i + 1]
        if not _exists(arr, old, False):
            raise bad(f"Error on renumber: label {old} does not exist")
        arr.renumber(new, old)
    return Response(b"", 200)


def go_timestamp(core: str) -> str:
    """A core mutation timestamp (``"%Y-%m-%d %H:%M:%S"`` UTC) in Go's ``time.String()`` form."""
    import calendar
    import time

    try:
        return go_time_string(calendar.timegm(time.strptime(core, "%Y-%m-%d %H:%M:%S")))
    except (TypeError, ValueError):
        return str(core)


def _rfc3339(core: str) -> str:
    import calendar
    import time

    from diced.server.dvidjson import go_time

    try:
        return go_time(calendar.timegm(time.strptime(core, "%Y-%m-%d %H:%M:%S")))
    except (TypeError, ValueError):
        return str(core)


def mutation_records(arr: Any) -> list[dict[str, Any]]:
    """This version's mutation log as DVID's /mutations lists it (the ``-complete`` records)."""
    out = []
    for rec in arr.mutations():
        r = dict(rec)
        if not str(r.get("Action", "")).endswith("-complete"):
            r["Action"] = f"{r.get('Action')}-complete"
        r["Timestamp"] = go_timestamp(r.get("Timestamp", ""))
        out.append(r)
    return out


def _mutations(req: InstanceRequest) -> Response:
    recs = mutation_records(req.instance())
    body = "[" + ",".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in recs) + "]"
    return _text_json(body)


_LABEL_FIELDS = ("Target", "OrigLabel", "CleavedLabel", "Body", "NewLabel", "Supervoxel",
                 "SplitSupervoxel", "RemainSupervoxel")


def last_mod(arr: Any, label: int, svs: list[int]) -> tuple[int, str]:
    """(mutation id, RFC3339 time) of the newest logged edit touching ``label`` or its
    supervoxels, over the version's ancestry; ``(0, "")`` when none."""
    watch = {int(label), *svs}
    for rec in reversed(arr.mutations(ancestors=True)):
        hit = any(rec.get(f) in watch for f in _LABEL_FIELDS) or \
            any(x in watch for x in rec.get("Labels", []) or []) or \
            any(x in watch for x in rec.get("CleavedSupervoxels", []) or [])
        if hit:
            return int(rec["MutationID"]), _rfc3339(rec.get("Timestamp", ""))
    return 0, ""


def _lastmod(req: InstanceRequest) -> Response:
    label = _label_arg(req)
    arr = req.instance()
    svs = [int(s) for s in arr.supervoxels(label)]
    if not svs:
        return Response(b"", 404)
    mutid, when = last_mod(arr, label, svs)
    return _text_json(f'{{"mutation id": {mutid}, "last mod user": "", "last mod app": "", '
                      f'"last mod time": {json.dumps(when)} }}')


def label_index_bytes(arr: Any, label: int) -> bytes | None:
    """The body's ``LabelIndex`` protobuf, or ``None`` when the label has no voxels."""
    from diced.array.sparsevol import encode_block_index
    from diced.server._proto import encode_label_index

    svs = [int(s) for s in arr.supervoxels(label)]
    if not svs:
        return None
    lo, _ = array_extent(arr)
    b0 = np.array(lo) // np.array(arr.chunks)
    blocks: dict[int, dict[int, int]] = {}
    for sv in svs:
        for (bz, by, bx), n in arr.block_counts(sv, supervoxels=True).items():
            if n:
                key = int(encode_block_index(bx + b0[2], by + b0[1], bz + b0[0]))
                blocks.setdefault(key, {})[sv] = int(n)
    if not blocks:
        return None
    mutid, when = last_mod(arr, label, svs)
    return encode_label_index(label, blocks, last_mutid=mutid, last_mod_time=when)


def _index(req: InstanceRequest) -> Response:
    if req.method == "POST":
        raise bad("POST index is not supported by diced: the label index is maintained with "
                  "every block write")
    if not req.parts:
        raise bad("DVID requires label to follow 'index' command")
    label = parse_label(req.parts[0])
    if label == 0:
        raise bad("there is no index for protected label 0")
    data = label_index_bytes(req.instance(), label)
    if data is None:
        return Response(b"", 404)
    if parse_bool(req.query.get("metadata-only"), "metadata-only"):
        arr = req.instance()
        mutid, when = last_mod(arr, label, [int(s) for s in arr.supervoxels(label)])
        return _text_json(f'{{"num_voxels":{arr.count(label)},"last_mutid":{mutid},'
                          f'"last_mod_time":"{when}","last_mod_user":"","last_mod_app":""}}')
    return Response(data, media_type="application/octet-stream")


def _indices(req: InstanceRequest) -> Response:
    from diced.server._proto import encode_label_indices

    if req.method == "POST":
        raise bad("POST indices is not supported by diced: the label index is maintained with "
                  "every block write")
    labels = label_list(json_body(req.body, "indices request body"), "indices request",
                        limit=50_000)
    arr = req.instance()
    parts = []
    for x in labels:
        data = label_index_bytes(arr, x) if x else None
        if data is not None:
            parts.append(data)
    return Response(encode_label_indices(parts), media_type="application/octet-stream")
