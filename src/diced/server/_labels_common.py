"""Request helpers shared by the labelmap endpoints (:mod:`diced.server.routes_labels` and
its route families): query arguments, DVID's JSON text answers, label existence."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from diced.server._http import bad, parse_bool, parse_label, query_int
from diced.server.registry import InstanceRequest


def _sv(req: InstanceRequest) -> bool:
    return parse_bool(req.query.get("supervoxels"), "supervoxels")


def _scale(req: InstanceRequest) -> int:
    return query_int(req.query, "scale", 0, lo=0, hi=20)


def _text_json(text: str) -> Response:
    return Response(text.encode(), media_type="application/json")


def _int_list(values: Any) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


def _label_arg(req: InstanceRequest, what: str = "label") -> int:
    if not req.parts:
        raise bad(f"DVID requires {what} to follow '{req.keyword}' command")
    label = parse_label(req.parts[0], what)
    if label == 0:
        raise bad("Label 0 is protected background value and cannot be queried as body.")
    return label


def _exists(arr: Any, label: int, supervoxels: bool) -> bool:
    return arr.count(label, supervoxels=supervoxels) > 0
