"""Instance info JSON (dvid-reference §4.3): the ``Base`` object shared by every type."""

from __future__ import annotations

from typing import Any

from diced.server.dvidjson import data_uuid
from diced.server.props import get_props
from diced.server.registry import TYPES, dvid_typename

__all__ = ["base_json", "instance_info"]


def base_json(repo: Any, name: str, record: dict[str, Any], compression: str) -> dict[str, Any]:
    """The ``Base`` part of DVID's instance ``info`` JSON."""
    typename = dvid_typename(record)
    t = TYPES.get(typename)
    props = get_props(repo.backend, repo.uuid, record["id"])
    return {
        "TypeName": typename,
        "TypeURL": t.url if t else f"github.com/janelia-flyem/dvid/datatype/{typename}",
        "TypeVersion": "0.1",
        "DataUUID": data_uuid(repo.uuid, record["id"]),
        "Name": name,
        "RepoUUID": repo.uuid,
        "Compression": compression,
        # every stored value carries a CRC32C, verified on read (diced.backends.checksum)
        "Checksum": "CRC32C checksum",
        "Syncs": [],
        "Versioned": True,
        "KVStore": str(repo.store.location),
        "LogStore": "",
        "Tags": dict(props.get("Tags", {})),
    }


def instance_info(repo: Any, version_uuid: str, name: str) -> dict[str, Any]:
    """The info JSON of an instance at a version (``{"Base": ..., "Extended": ...}``)."""
    record = repo._doc["instances"][name]
    t = TYPES.get(dvid_typename(record))
    handle = repo.version(version_uuid).instance(name)
    if t is None or t.info is None:
        return {"Base": base_json(repo, name, record, ""), "Extended": {}}
    return t.info(repo, name, record, handle)
