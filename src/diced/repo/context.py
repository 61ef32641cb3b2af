"""InstanceContext: what a datatype's instance object may use of the repo.

A datatype (:class:`diced.datatypes.Datatype`) opens an instance with one of these and
never touches the repo's internals: the context gives the version to read and write (the
repo head, or a pinned version), the instance's key spaces, compare-and-set updates of the
instance record, other versions and store-wide counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from diced.repo.meta import next_counter
from diced.repo.resolve import VersionCtx, VersionedSpace

if TYPE_CHECKING:
    from diced.backends.base import Backend
    from diced.repo.repo import Repo, Version

__all__ = ["InstanceContext"]


class InstanceContext:
    """One instance of a repo, seen from one version: the repo head (``vid=None``; the
    version moves with ``commit``/``branch``/``checkout``) or a pinned version.

    Parameters
    ----------
    repo : Repo
        The repo holding the instance.
    name : str
        The instance name.
    record : dict
        The instance record as opened (``{"id", "type", "created", "config"}``).
    vid : int or None
        Pinned version id, or ``None`` to follow the repo head.
    """

    def __init__(self, repo: Repo, name: str, record: dict[str, Any], vid: int | None) -> None:
        self.repo, self.name, self.vid = repo, name, vid
        self._opened = record

    # --- the version -------------------------------------------------------------------------

    def ctx(self) -> VersionCtx:
        """The version to read and write now (resolution context of the key spaces)."""
        return self.repo._ctx(self.repo._head_id if self.vid is None else self.vid)

    @property
    def pinned(self) -> bool:
        """Whether the context reads one fixed version (else it follows the repo head)."""
        return self.vid is not None

    def version(self) -> Version:
        """The :class:`~diced.repo.repo.Version` this context reads now."""
        from diced.repo.repo import Version

        return Version(self.repo, self.repo._dag.nodes[self.ctx().vid])

    def ctx_at(self, version: Any) -> VersionCtx:
        """The resolution context of another version (UUID or prefix, ``branch~N``, or a
        :class:`~diced.repo.repo.Version`)."""
        return self.repo._ctx(self.repo._node(version).id)

    def at(self, version: Any) -> InstanceContext:
        """This instance's context pinned to another version."""
        return InstanceContext(self.repo, self.name, self.record, self.repo._node(version).id)

    def open_at(self, version: Any) -> Any:
        """The instance object pinned to another version (as :meth:`Version.instance`)."""
        from diced.repo.repo import _Ref

        return self.repo._instance(self.name, _Ref(self.repo, self.repo._node(version).id))

    def instance(self, name: str, version: Any = None) -> Any:
        """Another instance of the same repo (a synced one), pinned to this context's current
        version or to ``version``."""
        from diced.repo.repo import _Ref

        vid = self.ctx().vid if version is None else self.repo._node(version).id
        return self.repo._instance(name, _Ref(self.repo, vid))

    # --- storage -----------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The store's byte backend (for instance-private metadata keys)."""
        return self.repo.backend

    @property
    def store_location(self) -> str:
        """Where the store is (its URL or path): what tells copies of a store apart."""
        return str(self.repo.store.location)

    def squashed_elsewhere(self) -> bool:
        """After a value the index names was found missing: whether another process
        squashed versions of the repo since it was read (then the repo is re-read and this
        process's stale index caches dropped, so a second read sees the current index)."""
        return self.repo._squashed_elsewhere()

    @property
    def record(self) -> dict[str, Any]:
        """The instance record as the repo last read it (``config`` may have changed since
        the instance was opened)."""
        return self.repo._instance_records().get(self.name, self._opened)

    @property
    def config(self) -> dict[str, Any]:
        """The instance configuration (``record["config"]``)."""
        return self.record["config"]

    @property
    def id(self) -> int:
        """The id of the instance's own key space."""
        return int(self._opened["id"])

    def space(self, space_id: int | None = None, name: str | None = None,
              kind: str | None = None) -> VersionedSpace:
        """A versioned key space of the instance (default: its own).

        ``name`` (default: the instance name) and ``kind`` (``"chunk"``, ``"key"``,
        ``"label"`` or ``None``: what a key names) only serve error messages about corrupt
        values."""
        return VersionedSpace(self.repo.backend, self.id if space_id is None else int(space_id),
                              self.name if name is None else name, kind)

    def update_record(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Change the instance record with compare-and-set: ``fn(record)`` edits a fresh
        copy in place and runs again if another writer changed the repo meanwhile; raising
        aborts with nothing stored."""
        self.repo._update_instance(self.name, fn)

    def next_counter(self, name: str) -> int:
        """The next value of a store-wide counter (never handed out twice, across processes)."""
        return next_counter(self.repo.backend, name)

    def __repr__(self) -> str:
        where = "head" if self.vid is None else f"version id {self.vid}"
        return f"<InstanceContext {self.name!r} of {self.repo.alias!r} at {where}>"
