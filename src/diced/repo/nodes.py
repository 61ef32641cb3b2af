"""Version nodes: the :class:`Node` record, and the :class:`Columns` a
:class:`~diced.repo.dag.DAG` snapshot keeps them in (numpy arrays indexed by version id;
notes and logs of packed nodes decoded on access from a :class:`TextSource`)."""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from diced.errors import CorruptMetadataError

__all__ = ["MASTER", "Columns", "Node", "TextSource", "new_uuid"]

#: DVID's name for the unnamed default branch.
MASTER = "master"
_HEX = re.compile(r"^[0-9a-f]+$")


def new_uuid() -> str:
    """A fresh random version UUID: 32 lowercase hex characters, as DVID makes them."""
    return uuidlib.uuid4().hex


@dataclass
class Node:
    """One version node."""

    uuid: str
    id: int
    parents: list[int]
    branch: str = ""
    note: str = ""
    log: list[str] = field(default_factory=list)
    locked: bool = False
    created: float = 0.0
    updated: float = 0.0
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node as its stored JSON record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        """A node from its stored record.

        Raises
        ------
        CorruptMetadataError
            The record has missing or unknown fields.
        """
        try:
            node = cls(**d)
        except TypeError as exc:
            raise CorruptMetadataError(f"bad version node record {d!r}: {exc}") from exc
        if not isinstance(node.id, int) or not isinstance(node.parents, list) \
                or not isinstance(node.uuid, str):
            raise CorruptMetadataError(f"bad version node record {d!r}")
        return node

    @property
    def branch_name(self) -> str:
        """The node's branch, ``'master'`` for the default branch."""
        return self.branch or MASTER


def _is_uuid(s: str) -> bool:
    return len(s) == 32 and _HEX.match(s) is not None


class TextSource:
    """Notes and logs of the nodes of one pack: one JSON ``[note, log]`` per node, laid end
    to end (``ends``: where each ends); a node's text is decoded when it is asked for."""

    def __init__(self, blob: bytes, ends: np.ndarray) -> None:
        self._blob, self._ends = blob, ends

    def get(self, pos: int) -> tuple[str, list[str]]:
        """``(note, log)`` of the pack's ``pos``-th node."""
        import json

        start = int(self._ends[pos - 1]) if pos else 0
        try:
            note, log = json.loads(self._blob[start:int(self._ends[pos])])
        except (ValueError, TypeError) as exc:
            raise CorruptMetadataError(f"a node pack's note and log of node {pos} do not "
                                       f"decode: {exc}") from exc
        return str(note), [str(x) for x in log]


class Columns:
    """The mutable columns a :class:`DAG` snapshot is made from (one row per version id)."""

    def __init__(self, size: int = 16) -> None:
        size = max(int(size), 2)
        self.exists = np.zeros(size, bool)
        self.fp = np.full(size, -1, np.int64)  # first parent
        self.extra: dict[int, tuple[int, ...]] = {}  # further parents of merge nodes
        self.uuid16 = np.zeros((size, 16), np.uint8)
        self.special: dict[int, str] = {}  # UUIDs that are not 32 hex characters (tags)
        self.branch = np.zeros(size, np.int32)
        self.bnames: list[str] = [""]
        self.bindex: dict[str, int] = {"": 0}
        self.tag: dict[int, str] = {}
        self.locked = np.zeros(size, bool)
        self.created = np.zeros(size, np.float64)
        self.updated = np.zeros(size, np.float64)
        self.texts: dict[int, tuple[str, list[str]]] = {}
        self.pack_of = np.full(size, -1, np.int32)
        self.pack_pos = np.zeros(size, np.int32)
        self.packs: list[TextSource] = []

    def copy(self) -> Columns:
        """An independent copy (arrays and dicts; pack texts are shared, they never change)."""
        out = Columns.__new__(Columns)
        for k, v in self.__dict__.items():
            out.__dict__[k] = v.copy() if hasattr(v, "copy") else v
        return out

    @property
    def size(self) -> int:
        """Rows allocated (the largest storable id + 1)."""
        return len(self.exists)

    def reserve(self, size: int) -> None:
        """Grow every column to hold ids below ``size``."""
        if size <= self.size:
            return
        new = max(size, self.size * 2)
        for name in ("exists", "fp", "branch", "locked", "created", "updated", "pack_of",
                     "pack_pos", "uuid16"):
            old = getattr(self, name)
            shape = (new, *old.shape[1:])
            fill = -1 if name in ("fp", "pack_of") else 0
            arr = np.full(shape, fill, old.dtype)
            arr[:len(old)] = old
            setattr(self, name, arr)

    def branch_id(self, name: str) -> int:
        """Index of branch name ``name`` (added if new)."""
        i = self.bindex.get(name)
        if i is None:
            i = self.bindex[name] = len(self.bnames)
            self.bnames.append(name)
        return i

    def put(self, n: Node) -> None:
        """Store (or replace) node ``n``."""
        vid = n.id
        if vid < 0 or any((not isinstance(p, int)) or p >= vid or p < 0 for p in n.parents):
            raise CorruptMetadataError(f"version node {n.uuid} (id {vid}) has bad parents "
                                       f"{n.parents!r}: parents must have smaller ids")
        self.reserve(vid + 1)
        self.exists[vid] = True
        self.fp[vid] = n.parents[0] if n.parents else -1
        if len(n.parents) > 1:
            self.extra[vid] = tuple(n.parents[1:])
        else:
            self.extra.pop(vid, None)
        if _is_uuid(n.uuid):
            self.uuid16[vid] = np.frombuffer(bytes.fromhex(n.uuid), np.uint8)
            self.special.pop(vid, None)
        else:
            self.uuid16[vid] = 0
            self.special[vid] = n.uuid
        self.branch[vid] = self.branch_id(n.branch)
        if n.tag is not None:
            self.tag[vid] = n.tag
        else:
            self.tag.pop(vid, None)
        self.locked[vid] = bool(n.locked)
        self.created[vid] = float(n.created)
        self.updated[vid] = float(n.updated)
        self.texts[vid] = (n.note, list(n.log))
        self.pack_of[vid] = -1

    def drop(self, vid: int) -> None:
        """Forget node ``vid``."""
        if vid < self.size:
            self.exists[vid] = False
            self.fp[vid] = -1
        for d in (self.extra, self.special, self.tag, self.texts):
            d.pop(vid, None)

    def note_log(self, vid: int) -> tuple[str, list[str]]:
        """``(note, log)`` of node ``vid``."""
        hit = self.texts.get(vid)
        if hit is not None:
            return hit[0], list(hit[1])
        p = int(self.pack_of[vid])
        if p < 0:
            return "", []
        return self.packs[p].get(int(self.pack_pos[vid]))

    def uuid_of(self, vid: int) -> str:
        """The UUID string of node ``vid``."""
        s = self.special.get(vid)
        return s if s is not None else self.uuid16[vid].tobytes().hex()

    def node(self, vid: int) -> Node:
        """A :class:`Node` built from the columns."""
        parents = [] if self.fp[vid] < 0 else [int(self.fp[vid]), *self.extra.get(vid, ())]
        note, log = self.note_log(vid)
        return Node(self.uuid_of(vid), vid, parents, self.bnames[self.branch[vid]], note, log,
                    bool(self.locked[vid]), float(self.created[vid]), float(self.updated[vid]),
                    self.tag.get(vid))
