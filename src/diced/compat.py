"""DICED's API (``DicedStore``, ``DicedRepo``, ``DicedArray``, ``ArrayDtype``) over diced.

These are compatibility names over the same objects: a ``DicedStore`` is a
:class:`diced.Store`, a ``DicedRepo`` a :class:`diced.Repo`, a ``DicedArray`` a
:class:`diced.VersionedArray`. What differs is DICED's conventions:

* arrays made by ``DicedRepo.create_array`` have no fixed shape: coordinates are absolute
  DVID coordinates from -2**31 to 2**31 (negative numbers are coordinates, not "from the
  end"), slices need explicit start and stop, and reads outside the written extents give 0.
  Under the hood they are arrays of extent 2**32 per axis whose ``origin`` is -2**31;
* ``create_branch(message)`` makes a new version from the locked head **and moves the repo
  to it** (DICED forgot to, so its README's Scenario 3 failed);
* files live in a keyvalue instance named ``.files``; ``.meta/restrictions`` (a JSON list)
  hides instances from ``list_instances``.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import numpy as np

from diced.datatypes.array.array import VersionedArray
from diced.errors import (
    DicedError,
    DuplicateNameError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    NotFoundError,
)
from diced.repo.repo import Repo
from diced.store import Store

__all__ = ["ArrayDtype", "DicedArray", "DicedException", "DicedRepo", "DicedStore"]

#: DICED's exception name; every diced error is one.
DicedException = DicedError

_SPAN = 1 << 32
_ORIGIN = -(1 << 31)
_CHUNKS = {1: (262144,), 2: (512, 512), 3: (64, 64, 64)}


class ArrayDtype(enum.Enum):
    """DICED's array types (diced itself takes any numeric numpy dtype)."""

    uint8 = np.uint8
    uint16 = np.uint16
    uint32 = np.uint32
    uint64 = np.uint64


class DicedArray(VersionedArray):
    """A DICED-style array: absolute coordinates, explicit slices, no shape limit in view."""

    def _translate(self, index: Any) -> tuple[Any, ...]:
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) != self.ndim:
            raise InvalidArgumentError(
                f"{self.name!r} is {self.ndim}-dimensional; index with {self.ndim} ints or slices")
        out = []
        for s in index:
            if isinstance(s, slice):
                if s.start is None or s.stop is None:
                    raise InvalidArgumentError("DICED slices need an explicit start and stop")
                out.append(slice(int(s.start), int(s.stop)))
            elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
                out.append(int(s))
            else:
                raise InvalidArgumentError(f"unsupported DICED index {s!r}")
        return tuple(out)

    def __getitem__(self, index: Any) -> Any:
        value = self.abs[self._translate(index)]
        return value.item() if isinstance(value, np.generic) else value

    def __setitem__(self, index: Any, value: Any) -> None:
        self.abs[self._translate(index)] = value

    def get_numdims(self) -> int:
        """Number of dimensions (DICED's name for ``ndim``)."""
        return self.ndim

    def get_extents(self) -> Any:
        """Block-aligned bounding box of the written data, as slices in absolute coordinates."""
        coords = self.stored_chunks()
        if not coords:
            ext = tuple(slice(0, 0) for _ in range(self.ndim))
        else:
            arr = np.array(coords)
            lo = arr.min(axis=0) * np.array(self.chunks) + np.array(self.origin)
            hi = (arr.max(axis=0) + 1) * np.array(self.chunks) + np.array(self.origin)
            ext = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        return ext[0] if self.ndim == 1 else ext


class DicedRepo(Repo):
    """DICED's repo methods on a :class:`diced.Repo`."""

    def __init__(self, store: Store, uuid: str, head: str | None = None,
                 readonly: bool = False) -> None:
        super().__init__(store, uuid, head)
        self.readonly = readonly
        if not readonly and not self.head.locked:
            for name in (".meta", ".files"):
                if name not in self.instances():
                    try:
                        self.create_keyvalue(name)
                    except DuplicateNameError:
                        pass

    # versions
    def change_version(self, uuid: str) -> None:
        """Move the repo to version ``uuid`` (``checkout``)."""
        self.checkout(uuid)

    def get_current_version(self) -> str:
        """UUID of the current version (the head)."""
        return self.current_uuid

    def get_commit_log(self) -> list[tuple[str, str]]:
        """``[(uuid, note), ...]`` of the first-parent history of the head, oldest first; open versions read ``"(open node)"``."""
        return [(v.uuid, v.note if v.locked else "(open node)") for v in self.log()]

    def lock_node(self, message: str) -> None:
        """Lock (commit) the current version with ``message``."""
        self.commit(message)

    def create_branch(self, message: str) -> str:
        """A new open version from the locked head; the repo moves to it. Returns its UUID."""
        head = self.head
        if not head.locked:
            from diced.errors import UnlockedNodeError

            raise UnlockedNodeError(f"version {head.uuid} is open; lock_node() it first")
        siblings = [self._dag.nodes[c] for c in self._dag.children[head.id]]
        if any(n.branch == head.node.branch and n.tag is None for n in siblings):
            child = self.branch(f"branch-{head.uuid[:8]}-{len(siblings)}", message)
        else:
            child = self.newversion(message)
        return child.uuid

    # arrays
    def create_array(self, name: str, dtype: Any, dims: int = 3, islabel3D: bool = False,
                     lossycompression: bool = False, versioned: bool = True, *,
                     shape: Any = None, **kwargs: Any) -> Any:
        if shape is not None:
            return super().create_array(name, dtype, shape, **kwargs)
        if dims not in _CHUNKS:
            raise InvalidArgumentError("DICED arrays are 1D, 2D or 3D")
        geometry = {"shape": (_SPAN,) * dims, "chunks": _CHUNKS[dims], "origin": (_ORIGIN,) * dims}
        if islabel3D:
            if dims != 3 or np.dtype(getattr(dtype, "value", dtype)) != np.uint64:
                raise InvalidArgumentError("label arrays are 3D uint64")
            self.create_labels(name, geometry["shape"], origin=geometry["origin"])
        else:
            super().create_array(name, dtype, geometry["shape"], chunks=geometry["chunks"],
                                 origin=geometry["origin"])
        return self.get_array(name)

    def get_array(self, name: str) -> DicedArray:
        """The array ``name`` with DICED's interface (absolute coordinates, ``get_extents``).

        Parameters
        ----------
        name : str

        Returns
        -------
        DicedArray

        Raises
        ------
        InstanceNotFoundError
            No such array.
        """
        inst = self[name]
        if not isinstance(inst, VersionedArray):
            raise InstanceNotFoundError(f"{name!r} is not an array")
        arr = DicedArray.__new__(DicedArray)
        arr.__dict__.update(inst.__dict__)
        return arr

    def delete_array(self, name: str) -> None:
        """Delete the array ``name`` and its data from every version (irreversible)."""
        self.delete_instance(name)

    def list_instances(self, showhidden: bool = False) -> list[Any]:
        """``[(name, type), ...]`` of the instances at the current version.

        Parameters
        ----------
        showhidden : bool
            Also list DICED's internal instances (``.meta``, ``.files``) and those it hides.

        Returns
        -------
        list of tuple
        """
        inst = self.instances()
        if showhidden:
            return [(n, t) for n, t in inst.items()]
        hidden: set[str] = set()
        if ".meta" in inst:
            raw = self[".meta"].get("restrictions")
            if raw:
                hidden = set(json.loads(raw))
        return [n for n, t in inst.items() if t in ("array", "labels") and n not in hidden
                and not n.startswith(".")]

    # files
    def _files(self) -> Any:
        if ".files" not in self.instances():
            raise NotFoundError("this repo has no .files instance")
        return self[".files"]

    def upload_filedata(self, name: str, data: bytes | str) -> None:
        """Store a file in the repo's ``.files`` keyvalue at the current (open) version.

        Parameters
        ----------
        name : str
        data : bytes or str
            ``str`` is stored UTF-8 encoded.

        Raises
        ------
        LockedNodeError
            The current version is locked.
        """
        if self.head.locked:
            raise LockedNodeError(f"version {self.current_uuid} is locked")
        self._files()[name] = data.encode() if isinstance(data, str) else data

    def download_filedata(self, name: str) -> bytes:
        """A file stored with :meth:`upload_filedata`.

        Raises
        ------
        NotFoundError
            No such file at the current version.
        """
        value = self._files().get(name)
        if value is None:
            raise NotFoundError(f"file {name!r} does not exist")
        return value

    def list_files(self) -> list[str]:
        """Names of the files at the current version."""
        return self._files().keys()

    def delete_file(self, name: str) -> None:
        """Delete a file at the current (open) version."""
        del self._files()[name]


class DicedStore(Store):
    """DICED's store: ``DicedStore("~/myrepo.diced")`` or ``DicedStore("gs://bucket",
    permissionfile="key.json")``. No DVID server is started: diced is embedded."""

    def __init__(self, location: str, port: int = 8000, rpcport: int = 8001,
                 permissionfile: str | None = None, appdir: str | None = None,
                 **options: Any) -> None:
        if permissionfile is not None:
            if "://" not in location:
                location = f"gs://{location}"
            options.setdefault("token", permissionfile)
        if location.startswith("dvid://"):
            raise InvalidArgumentError(
                "diced is embedded and does not attach to a DVID server; "
                "serve a diced store with `diced serve` instead")
        super().__init__(location, **options)
        self.port, self.rpcport = port, rpcport

    def create_repo(self, name: str, description: str = "", **kw: Any) -> DicedRepo:  # type: ignore[override]
        repo = super().create_repo(name, description, **kw)
        return DicedRepo(self, repo.uuid)

    def open_repo(self, name: str | None = None, uuid: str | None = None,  # type: ignore[override]
                  readonly: bool = False) -> DicedRepo:
        repo = super().open_repo(name, uuid)
        return DicedRepo(self, repo.uuid, repo.current_uuid, readonly=readonly)

    def get_repouuid(self, name: str) -> str:
        """The root UUID of the repo ``name``."""
        return self._repo_uuid(name, None)

    def _shutdown_store(self) -> None:
        self.close()
