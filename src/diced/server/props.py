"""Server-side DVID properties of an instance that diced's core does not model: voxel size and
units, DVID tags, the compression name clients read. Kept as one small JSON record per
instance under the backend key ``meta/server/{repo root}/{instance id:08x}`` (not versioned,
as in DVID, where these live in the instance's metadata)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["get_props", "set_props"]

DEFAULTS: dict[str, Any] = {"VoxelSize": [8.0, 8.0, 8.0],
                            "VoxelUnits": ["nanometers", "nanometers", "nanometers"],
                            "Tags": {}}


def _key(root: str, instance_id: int) -> str:
    return f"meta/server/{root}/{int(instance_id):08x}"


def get_props(backend: Any, root: str, instance_id: int) -> dict[str, Any]:
    """The server-side DVID properties of an instance (DVID's defaults filled in)."""
    raw = backend.get(_key(root, instance_id))
    out = json.loads(json.dumps(DEFAULTS))
    if raw:
        try:
            got = json.loads(raw)
        except ValueError:
            got = {}
        if isinstance(got, dict):
            out.update(got)
    return out


def set_props(backend: Any, root: str, instance_id: int, changes: dict[str, Any]) -> None:
    """Update the server-side DVID properties of an instance."""
    cur = get_props(backend, root, instance_id)
    cur.update(changes)
    backend.set(_key(root, instance_id), json.dumps(cur, sort_keys=True).encode())
