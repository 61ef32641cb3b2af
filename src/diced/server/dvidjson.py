"""DVID's JSON shapes for repos, version nodes and data instances (dvid-reference §3.7, §4.3).

Times are written as Go marshals them: RFC3339 with nanoseconds (trailing zeros dropped) and
the local UTC offset, e.g. ``"2026-12-01T14:53:08.123456+00:00"`` written as
``"2026-12-01T14:53:08.123456Z"`` in UTC.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import TYPE_CHECKING, Any

from diced.repo.dag import MASTER

if TYPE_CHECKING:
    from diced.repo.dag import Node
    from diced.repo.repo import Repo

__all__ = ["data_uuid", "go_time", "go_time_string", "node_json", "repo_json"]


def go_time(ts: float) -> str:
    """RFC3339Nano as Go's ``time.Time.MarshalJSON`` writes it (UTC: ``Z``)."""
    t = _dt.datetime.fromtimestamp(float(ts), tz=_dt.UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def go_time_string(ts: float) -> str:
    """Go's ``time.Time.String()`` (used in DVID mutation ``Timestamp`` fields), in UTC:
    ``"2026-12-01 14:53:08.123456 +0000 UTC"``."""
    t = _dt.datetime.fromtimestamp(float(ts), tz=_dt.UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def data_uuid(repo_root: str, instance_id: int) -> str:
    """A stable 32-hex DataUUID for an instance (DVID makes a random one at creation)."""
    return hashlib.md5(f"{repo_root}/{instance_id}".encode()).hexdigest()


def node_json(repo: Repo, node: Node) -> dict[str, Any]:
    """A version node as DVID's ``nodeT.MarshalJSON`` (Parents/Children are version ids)."""
    dag = repo.dag
    return {
        "Branch": node.branch,
        "Note": node.note,
        "Log": list(node.log),
        "UUID": node.uuid,
        "VersionID": node.id,
        "Locked": bool(node.locked),
        "Parents": list(node.parents),
        "Children": sorted(dag.children.get(node.id, [])),
        "Created": go_time(node.created),
        "Updated": go_time(node.updated or node.created),
    }


def repo_json(repo: Repo, instances: dict[str, Any]) -> dict[str, Any]:
    """A repo as DVID's ``repoT.MarshalJSON``; ``instances`` maps name -> instance info JSON."""
    doc = repo._doc
    nodes = {n.uuid: node_json(repo, n) for n in sorted(repo.dag.nodes.values(), key=lambda n: n.id)}
    return {
        "Root": repo.uuid,
        "Alias": repo.alias,
        "Description": repo.description,
        "Log": list(doc.get("log", [])),
        "Properties": dict(doc.get("properties", {})),
        "DataInstances": instances,
        "DAG": {"Root": repo.uuid, "Nodes": nodes},
        "MutationID": int(doc.get("mutation_id", 0)),
        "SavedMutationID": int(doc.get("mutation_id", 0)),
        "Created": go_time(doc.get("created", 0.0)),
        "Updated": go_time(doc.get("updated", doc.get("created", 0.0))),
    }


def branch_name(node: Node) -> str:
    """The node's branch name as DVID reports it (``master`` when unnamed)."""
    return node.branch or MASTER
