"""Neuronjson endpoints (DVID ``neuronjson``): one JSON document per body id.

``keys`` -> ``["1000", ...]`` (decimal strings, ascending ids); ``keyrange/<k1>/<k2>``
(numeric range, DVID's key parsing: a key starting above ``9`` means the largest id, below
``0`` means 0); ``keyrangevalues/<k1>/<k2>`` (``?json=true``, ``tar=true`` or protobuf);
``key/<id>`` GET (``?show=user|time|all``, ``?fields=a,b``), HEAD (200/404), POST (a JSON
object; ``?u=<user>`` required, ``?replace=true``, ``?conditionals=f1,f2``), DELETE;
``keyvalues`` (GET: protobuf ``Keys`` body or JSON with ``?json=true``/``?jsontar=true``;
POST protobuf ``KeyValues``); ``query`` (GET or POST, a read: a JSON object or list of
objects, ``?show=``, ``?fields=``, ``?onlyid=true``); ``all``; ``fields``; ``fieldtimes``;
plus ``info``/``help``/``tags``.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from starlette.responses import Response

from diced.server._http import HTTPError, bad, json_body, json_response, parse_bool
from diced.server._proto import ProtoError, decode_keys, decode_keyvalues, encode_keyvalues
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import common_endpoints

__all__ = ["build_type", "parse_key"]

#: most documents one GET/POST ``keyvalues`` may name
MAX_KEYS = 100_000
_U64 = (1 << 64) - 1


def parse_key(text: str, *, lenient: bool = False) -> int:
    """A body id from a key string; ``lenient`` applies DVID's range-bound rules (a key
    starting above ``9`` is the largest id, below ``0`` is 0)."""
    if not isinstance(text, str) or not text:
        raise bad("a neuronjson key is a body id (decimal), got an empty key")
    if lenient and text[0] > "9":
        return _U64
    if lenient and text[0] < "0":
        return 0
    if not text.isdigit() or not text.isascii() or len(text) > 20 or int(text) > _U64:
        raise bad(f"a neuronjson key is a body id (decimal uint64), got {text!r}")
    return int(text)


def _show(req: InstanceRequest) -> str | None:
    show = req.query.get("show")
    if show in (None, ""):
        return None
    if show not in ("user", "time", "all"):
        raise bad(f"query show must be user, time or all, got {show!r}")
    return show


def _fields(req: InstanceRequest) -> list[str] | None:
    text = req.query.get("fields")
    if not text:
        return None
    return [f for f in text.split(",") if f]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _user(req: InstanceRequest) -> str:
    user = req.query.get("u")
    if not user:
        raise bad("neuronjson writes need the user: add ?u=<name> (DVID's user parameter)")
    return user


def _keys(req: InstanceRequest) -> Response:
    ids: list[int] = req.instance().keys()
    return json_response([str(b) for b in ids])


def _range(req: InstanceRequest) -> tuple[int, int]:
    if len(req.parts) != 2:
        raise bad(f"expected {req.keyword}/<key1>/<key2>")
    return parse_key(req.parts[0], lenient=True), parse_key(req.parts[1], lenient=True)


def _keyrange(req: InstanceRequest) -> Response:
    a, b = _range(req)
    ids: list[int] = req.instance().keys()
    return json_response([str(k) for k in ids if a <= k <= b])


def _values_response(req: InstanceRequest, items: list[tuple[str, dict[str, Any] | None]],
                     *, tar: bool, as_json: bool) -> Response:
    if as_json:
        return json_response({k: d for k, d in items if d is not None})
    if tar:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for k, d in items:
                data = b"" if d is None else _json_bytes(d)
                info = tarfile.TarInfo(name=k)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return Response(buf.getvalue(), media_type="application/tar")
    return Response(encode_keyvalues([(k, b"" if d is None else _json_bytes(d))
                                      for k, d in items]),
                    media_type="application/octet-stream")


def _keyrangevalues(req: InstanceRequest) -> Response:
    a, b = _range(req)
    show, fields = _show(req), _fields(req)
    nj = req.instance()
    every: list[int] = nj.keys()
    ids = [k for k in every if a <= k <= b]
    docs = nj.get_many(ids, show=show, fields=fields)
    items = [(str(k), docs.get(k)) for k in ids]
    q = req.query
    return _values_response(req, items, tar=parse_bool(q.get("tar"), "tar"),
                            as_json=parse_bool(q.get("json"), "json"))


def _key(req: InstanceRequest) -> Response:
    if len(req.parts) != 1:
        raise bad("expected key/<body id>")
    body = parse_key(req.parts[0])
    if req.method == "POST":
        doc = json_body(req.body, "neuronjson document")
        if not isinstance(doc, dict):
            raise bad("a neuronjson document is a JSON object")
        cond = [c for c in (req.query.get("conditionals") or "").split(",") if c]
        req.writable().post(body, doc, user=_user(req),
                            replace=parse_bool(req.query.get("replace"), "replace"),
                            conditional=cond)
        return Response(b"", 200)
    if req.method == "DELETE":
        req.writable().delete(body)
        return Response(b"", 200)
    show, fields = _show(req), _fields(req)
    doc = req.instance().get(body, show=show, fields=fields)
    if doc is None:
        if req.method == "HEAD":
            return Response(b"", 404)
        raise HTTPError(404, f'Key "{req.parts[0]}" not found')
    if req.method == "HEAD":
        return Response(b"", 200)
    return json_response(doc)


def _requested_keys(req: InstanceRequest) -> list[str]:
    q = req.query
    if parse_bool(q.get("json"), "json") or parse_bool(q.get("jsontar"), "jsontar"):
        doc = json_body(req.body, "keyvalues request body")
        if not isinstance(doc, list) or not all(isinstance(k, (str, int)) and
                                                not isinstance(k, bool) for k in doc):
            raise bad("keyvalues JSON body must be a list of keys")
        keys = [str(k) for k in doc]
    else:
        try:
            keys, ranges = decode_keys(req.body)
        except ProtoError as exc:
            raise bad(f"keyvalues body is not a protobuf Keys message: {exc}") from None
        keys = keys + [k for k, _, _ in ranges]
    if len(keys) > MAX_KEYS:
        raise bad(f"at most {MAX_KEYS} keys per keyvalues request")
    return keys


def _keyvalues(req: InstanceRequest) -> Response:
    if req.method == "POST":
        try:
            items = decode_keyvalues(req.body)
        except ProtoError as exc:
            raise bad(f"keyvalues body is not a protobuf KeyValues message: {exc}") from None
        if len(items) > MAX_KEYS:
            raise bad(f"at most {MAX_KEYS} documents per POST keyvalues")
        docs: dict[int, Any] = {}
        for k, v in items:
            doc = json_body(v, f"document of key {k!r}")
            if not isinstance(doc, dict):
                raise bad(f"document of key {k!r} is not a JSON object")
            docs[parse_key(k)] = doc
        if docs:
            req.writable().post_many(docs, user=_user(req),
                                     replace=parse_bool(req.query.get("replace"), "replace"))
        return Response(b"", 200)
    keys = _requested_keys(req)
    ids = [parse_key(k) for k in keys]
    found = req.instance().get_many(ids, show=_show(req), fields=_fields(req))
    items = [(k, found.get(b)) for k, b in zip(keys, ids, strict=True)]
    q = req.query
    return _values_response(req, items, tar=parse_bool(q.get("jsontar"), "jsontar"),
                            as_json=parse_bool(q.get("json"), "json"))


def _query(req: InstanceRequest) -> Response:
    doc = json_body(req.body, "query body")
    if not isinstance(doc, (dict, list)):
        raise bad("a neuronjson query is a JSON object or a list of objects")
    onlyid = parse_bool(req.query.get("onlyid"), "onlyid")
    return json_response(req.instance().query(doc, show=_show(req), fields=_fields(req),
                                              onlyid=onlyid))


_query.read_only = True  # type: ignore[attr-defined]  # DVID: POST query is a read


def _all(req: InstanceRequest) -> Response:
    return json_response(req.instance().all(show=_show(req), fields=_fields(req)))


def _field_list(req: InstanceRequest) -> Response:
    return json_response(req.instance().fields())


def _fieldtimes(req: InstanceRequest) -> Response:
    return json_response(req.instance().fieldtimes())


def _info(repo: Any, name: str, record: dict[str, Any], handle: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    return {"Base": base_json(repo, name, record, ""),
            "Extended": {"ProjectID": "", "DatasetID": "", "Schema": "", "SchemaBatch": ""}}


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    """A new neuronjson (DVID's Firestore settings ``ProjectID``/``DatasetID`` are ignored)."""
    from diced.server.settings import check_props, create_props

    check_props(settings)
    nj = repo.create_instance(name, "neuronjson")
    create_props(repo, name, settings)
    return nj


def build_type() -> InstanceType:
    """The ``neuronjson`` HTTP type with its endpoints."""
    t = InstanceType(name="neuronjson", url="github.com/janelia-flyem/dvid/datatype/neuronjson",
                     info=_info, create=_create,
                     help="one JSON document per body id, with user/time stamps and queries")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "keys": E({"GET": _keys}, '["id", ...] ascending'),
        "keyrange": E({"GET": _keyrange}, "<k1>/<k2>: ids with k1 <= id <= k2"),
        "keyrangevalues": E({"GET": _keyrangevalues},
                            "<k1>/<k2>: protobuf KeyValues, ?json=true or ?tar=true"),
        "key": E({"GET": _key, "POST": _key, "DELETE": _key},
                 "<id>: the document (?show=user|time|all, ?fields=); POST ?u=&replace=; "
                 "DELETE; HEAD"),
        "keyvalues": E({"GET": _keyvalues, "POST": _keyvalues},
                       "GET protobuf Keys (or JSON ?json=true|jsontar=true); POST KeyValues"),
        "query": E({"GET": _query, "POST": _query},
                   "JSON query (object or list): matching documents (?show=, ?fields=, "
                   "?onlyid=true)"),
        "all": E({"GET": _all}, "every document (?show=, ?fields=)"),
        "fields": E({"GET": _field_list}, "field names used by the documents"),
        "fieldtimes": E({"GET": _fieldtimes}, "{field: newest _time stamp}"),
    })
    return t


register(build_type())
