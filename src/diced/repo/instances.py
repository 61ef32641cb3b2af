"""Data instances of a repo: creating, opening, listing and deleting them, and the
instance records' helpers (key spaces, data removal, datatypes); a mixin of
:class:`diced.repo.repo.Repo`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from diced.datatypes.registry import get_datatype
from diced.errors import (
    DuplicateNameError,
    InstanceNotFoundError,
    LockedNodeError,
    UnknownDatatypeError,
)
from diced.repo import keys as K
from diced.repo.context import InstanceContext
from diced.repo.meta import Step, dump_doc, load_doc, next_counter
from diced.repo.names import _check_name
from diced.repo.version import Version, _Ref

if TYPE_CHECKING:
    from diced.datatypes.base import Datatype

__all__ = ["RepoInstancesMixin", "drop_instance_data", "instance_spaces"]


class RepoInstancesMixin:
    """Instance creation, lookup and deletion of a :class:`~diced.repo.repo.Repo` (see the
    module docstring)."""

    def instances(self, uuid: str | Version | None = None) -> dict[str, str]:
        """Names and types of the instances visible at a version (default: head)."""
        anc = self._dag.ancestors(self._node(uuid).id)
        return {n: r["type"] for n, r in sorted(self._state.instances.items()) if r["created"] in anc}

    def _instance(self, name: str, ref: _Ref) -> Any:
        rec = self._state.instances.get(name)
        if rec is None:
            self.refresh()
            rec = self._state.instances.get(name)
        vid = self._head_id if ref.vid is None else ref.vid
        if rec is None or rec["created"] not in self._dag.ancestors(vid):
            raise InstanceNotFoundError(
                f"no data instance {name!r} at version {self._dag.nodes[vid].uuid[:12]} "
                f"of repo {self.alias!r}")
        if rec.get("storage") is not None:  # placed elsewhere, maybe by another process
            from diced.backends.layers import ensure_routes

            ensure_routes(self.store, instance_spaces(rec))
        return _datatype(rec["type"]).open(InstanceContext(self, name, rec, ref.vid))

    def __getitem__(self, name: str) -> Any:
        """``repo[name]``: the instance ``name`` at the head (see :meth:`array`)."""
        return self._instance(name, _Ref(self, None))

    def array(self, name: str) -> Any:
        """The array (or label array) ``name``, following the head.

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        VersionedArray or LabelArray
            A handle that reads and writes whatever version is the head at each call
            (``repo.version(v).array(name)`` gives one pinned to ``v``).

        Raises
        ------
        InstanceNotFoundError
            No instance ``name`` is visible at the head.
        """
        return self[name]

    def labels(self, name: str) -> Any:
        """The label array ``name``, following the head (same as :meth:`array`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        LabelArray
        """
        return self[name]

    def keyvalue(self, name: str) -> Any:
        """The keyvalue ``name``, following the head (same as :meth:`array`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        KeyValue
        """
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self.instances()

    def create_instance(self, name: str, typename: str, *, exist_ok: bool = False,
                        storage: str | None = None, **options: Any) -> Any:
        """Create a data instance of any registered datatype at the head.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo (letters, digits, ``_``, ``-``, ``.``).
        typename : str
            The datatype: diced's name (``"array"``, ``"labels"``, ``"keyvalue"``, or a
            registered one) or DVID's (``"uint8blk"``, ``"labelmap"``, ...); see
            :func:`diced.datatypes.get_datatype`.
        exist_ok : bool, default False
            Return the existing instance ``name`` if it has this type and configuration.
        storage : str, optional
            Keep the instance's data on another backend than the store's (DVID's
            per-instance storage): a path (LMDB) or URL (``gs://``, ``s3://``,
            ``file://``) of a new or empty location, or one already holding other
            instances of this store. The store records the placement and reopens it.
            Default: the store's own backend. See :mod:`diced.backends.routed`.
        **options
            The datatype's creation options (validated by its ``configure``).

        Returns
        -------
        object
            The datatype's instance object, following the repo head.

        Raises
        ------
        UnknownDatatypeError
            No datatype is called ``typename``.
        DuplicateNameError
            The name is taken.
        LockedNodeError
            The head is locked.
        """
        dt = get_datatype(typename)
        return self._create_instance(name, dt.name, dt.configure(self._head_id, **options),
                                     exist_ok=exist_ok, storage=storage)

    def _existing_instance(self, name: str, typename: str, config: dict[str, Any]) -> Any:
        """For ``exist_ok=True``: the instance ``name`` if it exists with this configuration,
        ``None`` if it does not exist; :class:`DuplicateNameError` if it differs."""
        self.refresh()
        rec = self._state.instances.get(name)
        if rec is None:
            return None
        where = f"repo {self.alias!r} already has an instance {name!r}"
        if rec["type"] != typename:
            raise DuplicateNameError(f"{where} of type {rec['type']!r}, not {typename!r}")
        if rec["created"] not in self._dag.ancestors(self._head_id):
            raise DuplicateNameError(
                f"{where}, created on another branch (not visible at the head "
                f"{self.current_uuid[:12]}); names are unique per repo")
        inst = self[name]
        have = rec.get("config", {})
        wanted = {k: v for k, v in config.items() if k not in ("shapes", "allocate")}
        diffs = [f"{k}={have.get(k)!r} (asked {v!r})" for k, v in sorted(wanted.items())
                 if dump_doc({"v": have.get(k)}) != dump_doc({"v": v})]  # NaN == NaN here
        shapes = config.get("shapes")
        if shapes:
            asked = tuple(next(iter(shapes.values())))
            if tuple(inst.shape) != asked:
                diffs.insert(0, f"shape={tuple(inst.shape)} (asked {asked})")
        if diffs:
            raise DuplicateNameError(f"{where} with a different configuration: "
                                     f"{', '.join(diffs)}")
        return inst

    def _create_instance(self, name: str, typename: str, config: dict[str, Any],
                         exist_ok: bool = False, storage: str | None = None) -> Any:
        _check_name(name, "instance name")
        if exist_ok:
            found = self._existing_instance(name, typename, config)
            if found is not None:
                placed = self._doc["instances"][name].get("storage")
                if storage is not None and (placed is None or not _same_location(placed,
                                                                                 storage)):
                    raise DuplicateNameError(
                        f"repo {self.alias!r} already has an instance {name!r} stored at "
                        f"{placed or 'the store itself'}, not {storage!r}")
                return found
        head = self._dag.nodes[self._head_id]
        if head.locked:
            raise LockedNodeError(f"version {head.uuid} is locked; new instances need an open version")
        self.refresh()  # refuse a taken name before allocating ids for it
        if name in self._state.instances:
            raise DuplicateNameError(f"repo {self.alias!r} already has an instance {name!r}")
        vid = head.id
        lk = K.lock_key(self.uuid, vid)
        if self.backend.get(lk) is not None:
            raise LockedNodeError(f"version {head.uuid} was locked")
        inst_id = next_counter(self.backend, "instance")
        _datatype(typename).allocate(config, lambda: next_counter(self.backend, "instance"))
        rec: dict[str, Any] = {"id": inst_id, "type": typename, "created": vid,
                               "config": config}
        if storage is not None:  # routed before the record is published: no stray writes
            from diced.backends.layers import place_spaces

            rec["storage"] = place_spaces(self.store, instance_spaces(rec), storage)

        def unlocked(cur: bytes | None) -> bytes | None:
            if cur is not None:  # locked meanwhile: the record is taken back
                raise LockedNodeError(f"version {head.uuid} was locked; no instance made")
            return cur

        # the record, then the lock check: a commit racing with this either comes first
        # (the record is taken back) or finds the instance made before the lock
        self._put_instance(name, rec, [(lk, unlocked)])
        return self[name]

    def _put_instance(self, name: str, rec: dict[str, Any], steps: Iterable[Step] = (),
                      *, taken: str | None = None, same_ok: bool = False) -> None:
        """Create instance ``name``'s record (create-only), with ``steps`` in the same change.

        ``same_ok``: an identical record already stored is kept (a resumed job); ``taken``:
        the message when the name is taken (default: the repo already has it)."""
        ik, raw = K.instance_key(self.uuid, name), dump_doc(rec)

        def create(cur: bytes | None) -> bytes:
            if cur is not None and not (same_ok and load_doc(cur, name) == load_doc(raw, name)):
                raise DuplicateNameError(
                    taken or f"repo {self.alias!r} already has an instance {name!r}")
            return raw

        self._run([(ik, create), *steps], [("i", name)])
        self._set_instance(name, load_doc(raw, name))

    def _set_instance(self, name: str, rec: dict[str, Any] | None) -> None:
        insts = dict(self._state.instances)
        if rec is None:
            insts.pop(name, None)
        else:
            insts[name] = rec
        self._state.instances = dict(sorted(insts.items()))

    def _update_instance(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        """Change instance ``name``'s record by compare-and-set: ``fn(record)`` edits a fresh
        copy in place (again after a lost race); raising aborts with nothing stored."""
        def body(cur: bytes | None) -> bytes:
            rec = load_doc(cur, f"instance record {name!r}")
            if rec is None:
                raise InstanceNotFoundError(f"no data instance {name!r}")
            fn(rec)
            return dump_doc(rec)

        ik = K.instance_key(self.uuid, name)
        vals = self._run([(ik, body)], [("i", name)])
        self._set_instance(name, load_doc(vals[ik], name))

    def create_array(self, name: str, dtype: Any, shape: Iterable[int] | None = None, *,
                     chunks: Iterable[int] | None = None, fill_value: Any = 0,
                     codec: Any = None, origin: Iterable[int] | None = None,
                     max_scale: int = 0, exist_ok: bool = False,
                     storage: str | None = None) -> Any:
        """Create an nD array at the head.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo (letters, digits, ``_``, ``-``, ``.``).
        dtype : dtype-like
            Any numeric numpy dtype.
        shape : sequence of int
            Array shape.
        chunks : sequence of int, optional
            Chunk shape (default: 64³ in 3-D, 512² in 2-D, 262144 in 1-D).
        fill_value : scalar, default 0
            What unwritten voxels read as.
        codec : str or dict, optional
            Chunk codec (default blosc zstd level 1 with shuffle).
        origin : sequence of int, optional
            Absolute coordinate of index 0 on each axis (see ``arr.abs``).
        max_scale : int, default 0
            ``> 0`` (3-D only) keeps a mean-downsampled pyramid of that many levels, updated
            on every write and read with ``arr.scale(n)[...]``.
        exist_ok : bool, default False
            Return the existing array ``name`` if it has this configuration (so re-running a
            notebook cell works); a different configuration still raises.
        storage : str, optional
            Keep the array's chunks on another backend (e.g. immutable grayscale on
            ``gs://`` while label arrays stay on the local LMDB store); see
            :meth:`create_instance`.

        Returns
        -------
        VersionedArray
            A handle following the repo head.

        Raises
        ------
        DuplicateNameError
            ``name`` exists (with ``exist_ok=True``: exists with another type or configuration).
        LockedNodeError
            The head is locked (and the array does not exist yet).
        """
        return self.create_instance(name, "array", dtype=dtype, shape=shape, chunks=chunks,
                                    fill_value=fill_value, codec=codec, origin=origin,
                                    max_scale=max_scale, exist_ok=exist_ok, storage=storage)

    def create_labels(self, name: str, shape: Iterable[int] | None = None, *,
                      exist_ok: bool = False, **kwargs: Any) -> Any:
        """Create a uint64 label array stored as DVID compressed label blocks.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo.
        shape : sequence of int
            3-D shape (z, y, x).
        exist_ok : bool, default False
            Return the existing label array ``name`` if it has this configuration.
        **kwargs
            ``chunks`` (multiples of 8, default 64³), ``max_scale``, ``codec``, ``origin``,
            ``storage`` (see :meth:`create_instance`).

        Returns
        -------
        LabelArray
            A handle following the repo head.

        Raises
        ------
        DuplicateNameError
            ``name`` exists (with ``exist_ok=True``: exists with another type or configuration).
        """
        return self.create_instance(name, "labels", shape=shape, exist_ok=exist_ok, **kwargs)

    def create_keyvalue(self, name: str, *, exist_ok: bool = False,
                        storage: str | None = None) -> Any:
        """Create a versioned dict of bytes (DVID keyvalue).

        Parameters
        ----------
        name : str
            Instance name, unique in the repo.
        exist_ok : bool, default False
            Return the existing keyvalue ``name`` instead of raising.
        storage : str, optional
            Keep its values on another backend (see :meth:`create_instance`).

        Returns
        -------
        KeyValue
            A handle following the repo head.
        """
        return self.create_instance(name, "keyvalue", exist_ok=exist_ok, storage=storage)

    def delete_instance(self, name: str) -> None:
        """Delete an instance and its data from every version (irreversible, as in DVID)."""
        rec = self._state.instances.get(name)
        if rec is None:
            raise InstanceNotFoundError(f"no data instance {name!r}")

        ik = K.instance_key(self.uuid, name)
        old: dict[str, bytes | None] = {}

        def remove(cur: bytes | None) -> None:
            old["rec"] = cur

        self._run([(ik, remove)], [("i", name)])
        self._set_instance(name, None)
        if old.get("rec") is not None:
            drop_instance_data(self.backend, load_doc(old["rec"], name), self.store)

    def _merge_instance_meta(self, parent_ids: list[int], vid: int) -> None:
        """Versioned parts of instance records (array shapes) at a merge node, merged by
        each instance's datatype (:meth:`Datatype.merge_record`)."""
        parents = [self._dag.ancestors(p) for p in parent_ids]
        import copy

        for name, rec in list(self._state.instances.items()):
            dt = _datatype_or_base(rec["type"])
            if not dt.merge_record(copy.deepcopy(rec), parents, vid):
                continue  # only write records that change

            def fn(r: dict[str, Any], dt: Datatype = dt) -> None:
                dt.merge_record(r, parents, vid)

            self._update_instance(name, fn)


def instance_spaces(rec: dict[str, Any]) -> list[int]:
    """Every key-space id an instance owns (its own, pyramid levels, label spaces)."""
    return _datatype_or_base(rec["type"]).spaces(rec)


def drop_instance_data(backend: Any, rec: dict[str, Any], store: Any = None) -> None:
    """Delete everything an instance stored (its record is already gone); for an instance
    placed on another backend (``storage=``), also its routes (``store`` given)."""
    if store is not None and rec.get("storage") is not None:
        from diced.backends.layers import drop_placed

        drop_placed(store, rec, lambda: _datatype_or_base(rec["type"]).drop(backend, rec))
        return
    _datatype_or_base(rec["type"]).drop(backend, rec)


def _datatype_or_base(typename: str) -> Datatype:
    """The instance's datatype, or the generic one when the type is not installed (so a
    repo or instance of an unknown type can still be deleted)."""
    try:
        return get_datatype(typename)
    except UnknownDatatypeError:
        from diced.datatypes.base import Datatype

        return Datatype()


def _same_location(a: str, b: str) -> bool:
    from diced.backends.layers import same_location

    return same_location(a, b if "://" in b else os.path.abspath(os.path.expanduser(b)))


def _datatype(typename: str) -> Datatype:
    """The registered datatype of a stored instance record's type."""
    try:
        return get_datatype(typename)
    except UnknownDatatypeError as exc:
        raise UnknownDatatypeError(
            f"instance type {typename!r} is not known to this diced: install the package "
            f"that provides it ({exc})") from exc
