"""Labelsz endpoints (DVID ``labelsz``): per-body element counts of a synced annotation.

``count/<label>/<index type>`` -> ``{"Label": id, "<type>": n}``; ``counts/<index type>``
(GET with a JSON body of labels) -> ``[{"Label", "<type>"}, ...]`` in the order asked;
``top/<N>/<index type>`` and ``threshold/<T>/<index type>?offset=&n=`` -> the same objects,
most first (ties by ascending label); ``sync`` (POST ``{"sync": "annotation"}``);
``reload`` (a no-op: counts are derived at each request); plus ``info``/``help``/``tags``.
Index types: ``PostSyn``, ``PreSyn``, ``Gap``, ``Note``, ``Unknown``, ``AllSyn``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from diced.server._http import (
    HTTPError,
    bad,
    json_body,
    json_response,
    label_list,
    parse_bool,
    parse_int,
    parse_label,
    query_int,
)
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_annotation import sync_names, sync_targets
from diced.server.routes_array import common_endpoints

__all__ = ["build_type"]

#: largest N of ``top`` and ``n`` of ``threshold``
MAX_N = 10_000_000


def _index_type(text: str) -> str:
    from diced.datatypes.labelsz import INDEX_TYPES

    if text not in INDEX_TYPES:
        raise bad(f"index type must be one of {', '.join(INDEX_TYPES)}; got {text!r}")
    return text


def _count(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("expected count/<label>/<index type>")
    body = parse_label(req.parts[0])
    kind = _index_type(req.parts[1])
    return json_response(req.instance().count(body, kind))


def _counts(req: InstanceRequest) -> Response:
    if len(req.parts) != 1:
        raise bad("expected counts/<index type> with a JSON body of labels")
    kind = _index_type(req.parts[0])
    ids = label_list(json_body(req.body, "counts body"), "counts body")
    return json_response(req.instance().counts(ids, kind))


_counts.read_only = True  # type: ignore[attr-defined]


def _top(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("expected top/<N>/<index type>")
    n = parse_int(req.parts[0], "N", lo=0, hi=MAX_N)
    kind = _index_type(req.parts[1])
    return json_response(req.instance().top(n, kind))


def _threshold(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("expected threshold/<T>/<index type>[?offset=&n=]")
    t = parse_int(req.parts[0], "T", lo=0, hi=(1 << 63) - 1)
    kind = _index_type(req.parts[1])
    offset = query_int(req.query, "offset", 0, lo=0, hi=(1 << 62))
    n = query_int(req.query, "n", 0, lo=0, hi=MAX_N)
    return json_response(req.instance().threshold(t, kind, offset=offset, n=n))


def _sync(req: InstanceRequest) -> Response:
    names = sync_names(req)
    replace = parse_bool(req.query.get("replace"), "replace")
    targets = sync_targets(req, names)
    anns = [n for n, t in targets if t == "annotation"]
    if len(anns) != len(targets) or len(anns) > 1:
        raise bad(f"labelsz {req.name!r} syncs with one annotation instance, got {names}")
    cur = req.instance().synced
    if anns and cur not in (None, anns[0]) or replace and cur is not None and anns != [cur]:
        raise HTTPError(400, f"labelsz {req.name!r} counts {cur!r}; diced cannot change a sync")
    if anns and cur is None:
        req.writable().sync(anns[0])
    return Response(b"", 200)


def _reload(req: InstanceRequest) -> Response:
    return Response(b"", 200)  # nothing stored: every answer is derived at request time


def _info(repo: Any, name: str, record: dict[str, Any], handle: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    base = base_json(repo, name, record, "")
    cfg = record.get("config", {})
    base["Syncs"] = [cfg["sync"]] if cfg.get("sync") else []
    return {"Base": base, "Extended": {"StaticROI": cfg.get("roi", "")}}


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    """A new labelsz (``ROI`` optional: an ROI name, ``name,uuid`` accepted; ``sync`` an
    annotation name)."""
    from diced.errors import InstanceNotFoundError
    from diced.server._http import not_found
    from diced.server.settings import check_props, create_props

    check_props(settings)
    roi = settings.get("roi", "").split(",")[0].strip() or None
    sync = [n.strip() for n in settings.get("sync", "").split(",") if n.strip()]
    if len(sync) > 1:
        raise bad(f"labelsz syncs with one annotation instance, got {sync}")
    for n, want in [(roi, "roi")] * (roi is not None) + [(s, "annotation") for s in sync]:
        try:
            inst = repo[n]
        except InstanceNotFoundError:
            raise not_found(f"no data instance {n!r} for labelsz {name!r}") from None
        if getattr(inst, "typename", None) != want:
            raise bad(f"{n!r} is not an {want} instance")
    lsz = repo.create_instance(name, "labelsz", roi=roi)
    create_props(repo, name, settings)
    if sync:
        lsz.sync(sync[0])
    return lsz


def build_type() -> InstanceType:
    """The ``labelsz`` HTTP type with its endpoints."""
    t = InstanceType(name="labelsz", url="github.com/janelia-flyem/dvid/datatype/labelsz",
                     info=_info, create=_create,
                     help="per-body counts of a synced annotation's elements by kind")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "count": E({"GET": _count}, '<label>/<index type>: {"Label": id, "<type>": n}'),
        "counts": E({"GET": _counts, "POST": _counts},
                    "<index type>, JSON body [labels]: [{Label, <type>}] in that order"),
        "top": E({"GET": _top}, "<N>/<index type>: the N bodies with most elements"),
        "threshold": E({"GET": _threshold},
                       "<T>/<index type>?offset=&n=: bodies with at least T elements"),
        "sync": E({"POST": _sync}, '{"sync": "annotation"}: the annotation counted'),
        "reload": E({"POST": _reload}, "accepted; counts are always current here"),
    })
    return t


register(build_type())
