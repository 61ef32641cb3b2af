"""The datatype interface: what the repo core knows about any kind of data instance.

DVID's second promise is extensible datatypes, and so is diced's: the repo core
(:mod:`diced.repo`, :mod:`diced.store`) stores *instances*, each a record
``{"id", "type", "created", "config"}`` in the repo document plus one or more versioned key
spaces, and knows nothing else about them. Everything type-specific sits behind one small
class, :class:`Datatype`:

* naming: :attr:`Datatype.name` (diced's stored type name) and :attr:`Datatype.dvid_names`
  (DVID's type names, which also find the type);
* creating an instance: :meth:`Datatype.configure` validates options into the stored
  configuration, :meth:`Datatype.allocate` asks for extra key spaces;
* opening it at a version: :meth:`Datatype.open` gets an :class:`InstanceContext` and returns
  the object users call (a ``VersionedArray``, a ``KeyValue``, ...);
* versioning: :meth:`Datatype.merge_spaces`, :meth:`Datatype.describe_key`,
  :meth:`Datatype.after_merge`, :meth:`Datatype.merge_record` and :meth:`Datatype.diff` let
  :meth:`Repo.merge <diced.repo.repo.Repo.merge>` and :meth:`Repo.diff
  <diced.repo.repo.Repo.diff>` handle every type the same way (three-way per key with typed
  conflicts, then derived data rebuilt from the merged keys);
* HTTP: :attr:`Datatype.http_routes` names the module a server imports to serve the type.

The :class:`InstanceContext` is all an instance object needs from the repo: the version it
reads and writes, its key spaces, compare-and-set updates of its record, other versions.

Register a datatype with :func:`diced.datatypes.register_datatype`, or from another package
with an entry point in the group ``diced.datatypes`` (see :mod:`diced.datatypes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from diced.repo.diff import InstanceDiff, diff_space
from diced.repo.resolve import VersionCtx, VersionedSpace

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext

__all__ = ["Datatype"]


class Datatype:
    """One kind of data instance. Subclass it, set :attr:`name`, implement :meth:`open`
    (and :meth:`configure` if the type takes options), and register an instance of it.

    Every method has a default that suits a type whose data is one versioned key space
    merged key by key (as a keyvalue); array-like types override the rest.

    Attributes
    ----------
    name : str
        The type name stored in instance records (``"array"``, ``"labels"``,
        ``"keyvalue"``). Never change it once stores hold instances of the type.
    dvid_names : tuple of str
        DVID's names for the type (``"labelmap"``, ``"uint8blk"``, ...), the first being what
        :meth:`dvid_typename` answers by default. Lookups by these names find the type.
    http_routes : str or None
        Dotted name of a module that, when imported, registers this type's HTTP endpoints
        with the server (which dispatches by :meth:`dvid_typename`). ``None``: no endpoints.
        Importing it is the server's business; the core never does.
    """

    name: ClassVar[str] = ""
    dvid_names: ClassVar[tuple[str, ...]] = ()
    http_routes: ClassVar[str | None] = None

    # --- creating ----------------------------------------------------------------------------

    def configure(self, vid: int, **options: Any) -> dict[str, Any]:
        """Validate creation options into the instance configuration (stored as JSON).

        Parameters
        ----------
        vid : int
            Id of the (open) version the instance is created at.
        **options
            What the user passed to :meth:`Repo.create_instance
            <diced.repo.repo.Repo.create_instance>`.

        Returns
        -------
        dict
            JSON-serialisable configuration. Must not allocate anything: ``exist_ok``
            compares it with an existing instance's configuration.

        Raises
        ------
        InvalidArgumentError
            Bad options (nothing is stored).
        """
        if options:
            from diced.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"datatype {self.name!r} takes no options, got {sorted(options)}")
        return {}

    def allocate(self, config: dict[str, Any], new_space: Callable[[], int]) -> None:
        """Add the ids of extra key spaces to ``config`` (in place); ``new_space()`` returns
        a fresh store-wide key-space id. The instance's own space (``record["id"]``) is
        allocated by the repo. Default: none."""

    def spaces(self, record: dict[str, Any]) -> list[int]:
        """Every key-space id the instance owns (dropped with it). The default covers
        ``record["id"]``, ``config["subinstances"]`` and the values of ``config["spaces"]``."""
        cfg = record.get("config", {})
        return [record["id"], *cfg.get("subinstances", []), *cfg.get("spaces", {}).values()]

    def drop(self, backend: Any, record: dict[str, Any]) -> None:
        """Delete every value the instance stored, in every version (the instance is gone
        from the repo document already). Default: drop each of :meth:`spaces`."""
        for space in self.spaces(record):
            VersionedSpace(backend, space).drop()

    def dvid_typename(self, record: dict[str, Any]) -> str:
        """DVID's type name for one instance (a server dispatches routes by it)."""
        return self.dvid_names[0] if self.dvid_names else self.name

    # --- opening -----------------------------------------------------------------------------

    def open(self, context: InstanceContext) -> Any:
        """The object users call for this instance at ``context``'s version.

        ``context.ctx()`` is the version to read and write at each call (the repo head for
        unpinned handles, so keep the context, not one ``VersionCtx``)."""
        raise NotImplementedError(f"datatype {self.name!r} does not implement open()")

    # --- versioning --------------------------------------------------------------------------

    def merge_spaces(self, record: dict[str, Any]) -> list[tuple[str, int]]:
        """Key spaces merged key by key, as ``(suffix, space id)``; the suffix (``""`` for the
        instance's own space) is appended to the instance name in conflict records and passed
        to :meth:`describe_key`. Data derived from these (indexes, pyramids) is not listed:
        :meth:`after_merge` rebuilds it."""
        return [("", record["id"])]

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        """A user-facing key (chunk coordinates, keyvalue key, ...) for a stored ``ckey`` of
        the merge space ``suffix``; used in :class:`~diced.repo.merge.Conflict` and diffs."""
        return ckey

    def after_merge(self, instance: Any, ctx: VersionCtx, touched: Sequence[str],
                    parents: Sequence[VersionCtx]) -> None:
        """Rebuild derived data at a merge node before it is published.

        Parameters
        ----------
        instance
            The object :meth:`open` returned, opened at the repo head (use ``ctx`` instead).
        ctx : VersionCtx
            The merge node, already holding the merged keys of every merge space.
        touched : sequence of str
            Keys of the primary space written on any side since the merge base.
        parents : sequence of VersionCtx
            The merged versions.
        """

    def merge_record(self, record: dict[str, Any], parents: Sequence[frozenset[int]],
                     vid: int) -> bool:
        """Merge versioned parts of the instance record in place (array shapes), given the
        ancestor sets of the parents and the merge node id. Returns whether it changed."""
        return False

    def diff(self, backend: Any, record: dict[str, Any], a: VersionCtx, b: VersionCtx
             ) -> InstanceDiff:
        """What the instance changed from ``a`` to ``b``. Default: the keys of the primary
        space added, removed and changed, described by :meth:`describe_key`."""
        added, removed, changed = diff_space(VersionedSpace(backend, record["id"]), a, b)
        return InstanceDiff([self.describe_key(k) for k in added],
                            [self.describe_key(k) for k in removed],
                            [self.describe_key(k) for k in changed])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
