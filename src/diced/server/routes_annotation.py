"""Annotation endpoints (DVID ``annotation``; dvid-reference §4.8, element JSON §6.2).

``elements`` (GET ``<size>/<offset>``, POST a JSON list), ``all-elements``, ``blocks`` (GET
``<size>/<offset>``, POST ``{"bx,by,bz": [...]}``), ``label/<id>``, ``tag/<tag>``,
``roi/<roi>[,<uuid>]``, ``element/<x_y_z>`` (DELETE; GET is a diced extension),
``move/<from>/<to>``, ``sync``, ``reload``, plus ``info``/``help``/``tags``. Elements are
answered in DVID's field order (``Pos``, ``Kind``, ``Tags``, ``Prop``, ``Rels``); reads
without relationships leave ``Rels`` out, as DVID does. Every body is validated completely
before anything is stored (the Python API validates all elements first).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from diced.server._http import (
    bad,
    json_body,
    json_response,
    not_found,
    parse_bool,
    parse_label,
    parse_point,
)
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import common_endpoints

__all__ = ["build_type", "relationships_mode", "sync_names", "sync_targets"]

#: most elements accepted by one POST (DVID has no limit; this bounds one request's memory)
MAX_POST_ELEMENTS = 2_000_000
#: most annotation blocks one ``blocks/<size>/<offset>`` request may cover
MAX_BLOCKS = 1 << 20


def relationships_mode(req: InstanceRequest) -> str:
    """DVID's ``?relationships=`` option: ``"false"``, ``"true"`` or ``"verbose"``."""
    value = (req.query.get("relationships") or "false").strip().lower()
    if value in ("", "false", "0", "off", "no"):
        return "false"
    if value in ("true", "1", "on", "yes"):
        return "true"
    if value == "verbose":
        return "verbose"
    raise bad(f"query relationships must be true, false or verbose, got {value!r}")


def _elements_response(ann: Any, els: list[dict[str, Any]], mode: str) -> Response:
    """Elements as JSON; with ``verbose`` each relationship also carries its partner's
    ``Kind``, ``Tags`` and ``Prop`` (each left out when empty, as DVID)."""
    if mode == "verbose":
        partners: dict[tuple[int, ...], dict[str, Any] | None] = {}
        for el in els:
            for r in el.get("Rels", []):
                to = tuple(r["To"])
                if to not in partners:
                    partners[to] = ann.get(to, relationships=False)
                p = partners[to]
                if p is not None:
                    if p["Kind"]:
                        r["Kind"] = p["Kind"]
                    if p["Tags"]:
                        r["Tags"] = list(p["Tags"])
                    if p["Prop"]:
                        r["Prop"] = dict(p["Prop"])
    return json_response(els)


def _box(req: InstanceRequest, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``<size>/<offset>`` (x_y_z each) -> inclusive-exclusive voxel box ``(lo, hi)``."""
    if len(req.parts) != 2:
        raise bad(f"expected {what}/<size x_y_z>/<offset x_y_z>")
    size = parse_point(req.parts[0], "size")
    if any(s <= 0 for s in size):
        raise bad(f"size must be positive, got {req.parts[0]!r}")
    offset = parse_point(req.parts[1], "offset")
    return offset, tuple(o + s for o, s in zip(offset, size, strict=True))


def _element_list(doc: Any, what: str) -> list[Any]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise bad(f"{what} must be a JSON array of elements")
    if len(doc) > MAX_POST_ELEMENTS:
        raise bad(f"{what}: at most {MAX_POST_ELEMENTS} elements per request")
    return doc


def _elements(req: InstanceRequest) -> Response:
    if req.method == "POST":
        if req.parts:
            raise bad("POST elements takes no path after 'elements'")
        els = _element_list(json_body(req.body, "elements body"), "elements body")
        if els:
            req.writable().post(els)
        return Response(b"", 200)
    lo, hi = _box(req, "elements")
    ann = req.instance()
    return json_response(ann.box(lo, hi, relationships=True))


def _all_elements(req: InstanceRequest) -> Response:
    return json_response(_by_block(req.instance()))


def _by_block(ann: Any) -> dict[str, list[dict[str, Any]]]:
    bx, by, bz = ann.block_size
    out: dict[str, list[dict[str, Any]]] = {}
    for el in ann.all(relationships=True):
        x, y, z = el["Pos"]
        out.setdefault(f"{x // bx},{y // by},{z // bz}", []).append(el)
    return out


def _parse_block_key(key: str) -> tuple[int, int, int]:
    parts = key.split(",")
    if len(parts) != 3:
        raise bad(f"block key must be 'bx,by,bz', got {key!r}")
    try:
        vals = tuple(int(p.strip()) for p in parts)
    except ValueError:
        raise bad(f"block key must be 'bx,by,bz' integers, got {key!r}") from None
    return vals  # type: ignore[return-value]


def _blocks(req: InstanceRequest) -> Response:
    if req.method == "POST":
        if req.parts:
            raise bad("POST blocks takes no path after 'blocks'")
        doc = json_body(req.body, "blocks body")
        if not isinstance(doc, dict):
            raise bad('blocks body must be a JSON object {"bx,by,bz": [elements], ...}')
        els: list[Any] = []
        for key, items in doc.items():
            _parse_block_key(key)
            els += _element_list(items, f"block {key!r}")
        if len(els) > MAX_POST_ELEMENTS:
            raise bad(f"blocks body: at most {MAX_POST_ELEMENTS} elements per request")
        if els:
            req.writable().post(els)
        return Response(b"", 200)
    lo, hi = _box(req, "blocks")
    ann = req.instance()
    bs = ann.block_size
    blo = [lo[i] // bs[i] for i in range(3)]
    bhi = [(hi[i] - 1) // bs[i] for i in range(3)]
    n = 1
    for a, b in zip(blo, bhi, strict=True):
        n *= b - a + 1
    if n > MAX_BLOCKS:
        raise bad(f"blocks request covers {n} blocks; at most {MAX_BLOCKS}")
    blocks = [(x, y, z) for z in range(blo[2], bhi[2] + 1) for y in range(blo[1], bhi[1] + 1)
              for x in range(blo[0], bhi[0] + 1)]
    return json_response(ann.blocks(blocks))


def _label(req: InstanceRequest) -> Response:
    if len(req.parts) != 1:
        raise bad("expected label/<label>")
    body = parse_label(req.parts[0])
    mode = relationships_mode(req)
    ann = req.instance()
    return _elements_response(ann, ann.label(body, relationships=mode != "false"), mode)


def _tag(req: InstanceRequest) -> Response:
    if not req.parts:
        raise bad("expected tag/<tag>")
    tag = "/".join(req.parts)
    mode = relationships_mode(req)
    ann = req.instance()
    return _elements_response(ann, ann.tag(tag, relationships=mode != "false"), mode)


def _roi(req: InstanceRequest) -> Response:
    if len(req.parts) != 1:
        raise bad("expected roi/<roi name>[,<uuid>]")
    name, _, uuid = req.parts[0].partition(",")
    if not name:
        raise bad("expected roi/<roi name>[,<uuid>]")
    ann = req.instance()
    if uuid:
        loc = req.catalog.locate(uuid)
        if loc.repo.uuid != req.loc.repo.uuid:
            raise bad(f"version {uuid!r} is not in this repo")
        roi: Any = loc.repo.version(loc.node.uuid).instance(name)
    else:
        roi = req.loc.repo.version(req.uuid).instance(name)
    if getattr(roi, "typename", None) != "roi":
        raise bad(f"instance {name!r} is not an ROI")
    mode = relationships_mode(req)
    return _elements_response(ann, ann.in_roi(roi, relationships=mode != "false"), mode)


def _element(req: InstanceRequest) -> Response:
    if len(req.parts) != 1:
        raise bad("expected element/<x_y_z>")
    pos = parse_point(req.parts[0], "element position")
    if req.method == "DELETE":
        req.writable().delete(pos)
        return Response(b"", 200)
    el = req.instance().get(pos, relationships=True)
    if el is None:
        raise not_found(f"no element at {list(pos)} in annotation {req.name!r}")
    return json_response(el)


def _move(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("expected move/<from x_y_z>/<to x_y_z>")
    a = parse_point(req.parts[0], "move source")
    b = parse_point(req.parts[1], "move destination")
    req.writable().move(a, b)
    return Response(b"", 200)


def sync_names(req: InstanceRequest) -> list[str]:
    """Instance names of a POST ``sync`` body ``{"sync": "name1,name2"}``."""
    doc = json_body(req.body, "sync body")
    names = doc.get("sync") if isinstance(doc, dict) else None
    if not isinstance(names, str):
        raise bad('sync body must be {"sync": "name1,name2,..."}')
    return [n.strip() for n in names.split(",") if n.strip()]


def sync_targets(req: InstanceRequest, names: list[str]) -> list[tuple[str, str]]:
    """``(name, diced type)`` of each sync target, checked to exist at the request's version
    (404 otherwise)."""
    records = req.loc.repo._instance_records()
    ancestors = req.loc.repo.dag.ancestors(req.loc.node.id)
    out = []
    for n in names:
        rec = records.get(n)
        if rec is None or rec["created"] not in ancestors:
            raise not_found(f"no data instance {n!r} at version {req.uuid} to sync with")
        out.append((n, str(rec.get("type"))))
    return out


def _sync(req: InstanceRequest) -> Response:
    names = sync_names(req)
    replace = parse_bool(req.query.get("replace"), "replace")
    targets = sync_targets(req, names)
    labels = [n for n, t in targets if t == "labels"]
    sizers = [n for n, t in targets if t == "labelsz"]
    other = [n for n, t in targets if t not in ("labels", "labelsz")]
    if other:
        raise bad(f"annotation {req.name!r} can sync only with a labelmap or labelsz "
                  f"instance; {other[0]!r} is neither")
    if len(labels) > 1:
        raise bad(f"annotation {req.name!r} can sync with one labelmap, got {labels}")
    ann = req.instance()
    cur = ann.synced
    if labels and cur not in (None, labels[0]):
        raise bad(f"annotation {req.name!r} is synced to {cur!r}; diced cannot change a sync")
    if replace and cur is not None and labels != [cur]:
        raise bad(f"annotation {req.name!r} is synced to {cur!r}; diced cannot remove a sync")
    for n in sizers:
        lsz = req.loc.repo.version(req.uuid).instance(n)
        if lsz.synced not in (None, req.name):
            raise bad(f"labelsz {n!r} already counts {lsz.synced!r}")
    w = req.writable()
    if labels and cur is None:
        w.sync(labels[0])
    for n in sizers:
        req.catalog.fresh(req.loc).version(req.uuid).instance(n).sync(req.name)
    return Response(b"", 200)


def _reload(req: InstanceRequest) -> Response:
    for opt in ("check", "inmemory"):
        parse_bool(req.query.get(opt), opt)
    req.writable().reload()
    return Response(b"", 200)


def _info(repo: Any, name: str, record: dict[str, Any], handle: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    base = base_json(repo, name, record, "")
    sync = record.get("config", {}).get("sync")
    base["Syncs"] = [sync] if sync else []
    bx, by, bz = handle.block_size
    return {"Base": base, "Extended": {"BlockSize": [bx, by, bz]}}


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    """A new annotation (``BlockSize`` optional, default 64; ``sync`` a labelmap name)."""
    from diced.server.settings import block_size, check_props, create_props

    bs = block_size(settings, 64)
    check_props(settings)
    sync = [n.strip() for n in settings.get("sync", "").split(",") if n.strip()]
    if len(sync) > 1:
        raise bad(f"annotation can sync with one labelmap, got {sync}")
    for n in sync:  # checked before anything is created
        if getattr(_visible(repo, n), "typename", None) != "labels":
            raise bad(f"annotation can sync only with a labelmap; {n!r} is not one")
    ann = repo.create_instance(name, "annotation", block_size=list(bs))
    create_props(repo, name, settings)
    if sync:
        ann.sync(sync[0])
    return ann


def _visible(repo: Any, name: str) -> Any:
    """Instance ``name`` at ``repo``'s head, or a 404."""
    from diced.errors import InstanceNotFoundError

    try:
        return repo[name]
    except InstanceNotFoundError:
        raise not_found(f"no data instance {name!r} to sync with") from None


def build_type() -> InstanceType:
    """The ``annotation`` HTTP type with its endpoints."""
    t = InstanceType(name="annotation", url="github.com/janelia-flyem/dvid/datatype/annotation",
                     info=_info, create=_create,
                     help="point annotations (synapses, bookmarks) with tag and label indexes")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "elements": E({"GET": _elements, "POST": _elements},
                      "GET <size>/<offset>: elements in the box (with Rels); POST [elements]"),
        "all-elements": E({"GET": _all_elements}, '{"bx,by,bz": [elements]} of every block'),
        "blocks": E({"GET": _blocks, "POST": _blocks},
                    'GET <size>/<offset>: {"bx,by,bz": [elements]} of the blocks intersecting '
                    'the box; POST the same shape'),
        "label": E({"GET": _label}, "<label>[?relationships=true|verbose]: a body's elements"),
        "tag": E({"GET": _tag}, "<tag>[?relationships=true|verbose]: elements with the tag"),
        "roi": E({"GET": _roi}, "<roi>[,<uuid>]: elements inside an ROI instance"),
        "element": E({"GET": _element, "DELETE": _element},
                     "<x_y_z>: DELETE one element (partners drop their Rels); GET it"),
        "move": E({"POST": _move}, "<from x_y_z>/<to x_y_z>: move an element"),
        "sync": E({"POST": _sync}, '{"sync": "labelmap[,labelsz]"}: sync to a label array'),
        "reload": E({"POST": _reload}, "rebuild the tag and label indexes of this version"),
    })
    return t


register(build_type())
