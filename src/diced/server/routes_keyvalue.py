"""Keyvalue endpoints (filled in below)."""

from __future__ import annotations

from diced.server.registry import InstanceType, register
from diced.server.routes_array import common_endpoints


def _kv_info(repo, name, record, handle):
    from diced.server.instance_json import base_json

    return {"Base": base_json(repo, name, record, "LZ4 compression, level -1"), "Extended": {}}


_T = InstanceType(name="keyvalue", url="github.com/janelia-flyem/dvid/datatype/keyvalue",
                  info=_kv_info, help="a versioned key-value store")
_T.endpoints.update(common_endpoints())
register(_T)
