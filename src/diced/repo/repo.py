"""Repo: the version DAG facade over a store's backend.

The :class:`Repo` class is assembled from topic mixins: refs and branch/tag creation
(:mod:`diced.repo.refs`), locking, merging and removing versions (:mod:`diced.repo.commits`)
and data instances (:mod:`diced.repo.instances`); its version handles are
:class:`~diced.repo.version.Version` (:mod:`diced.repo.version`). This module keeps the
handle's head and its metadata changes (compare-and-set steps over the change journal).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from diced.errors import (
    BackendError,
    RepoNotFoundError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.commits import RepoCommitsMixin
from diced.repo.dag import DAG, MASTER, Node
from diced.repo.history import (
    RepoState,
    catch_up,
    journal,
    journal_fn,
    load_state,
    node_record,
    parse_node,
)
from diced.repo.instances import (  # noqa: F401  (names other modules import from here)
    RepoInstancesMixin,
    _datatype,
    drop_instance_data,
    instance_spaces,
)
from diced.repo.manifests import manifests
from diced.repo.merge import Conflict
from diced.repo.meta import (
    Step,
    dump_doc,
    load_doc,
    run_steps,
)
from diced.repo.names import NAME_MAX, _check_name  # noqa: F401  (imported from here)
from diced.repo.refs import RepoRefsMixin
from diced.repo.resolve import VersionCtx
from diced.repo.version import Version, _Ref  # noqa: F401  (_Ref: imported from here)

log = logging.getLogger(__name__)

__all__ = ["Conflict", "Repo", "Version"]


class _NeedOverride(Exception):
    """A node record turned out locked: list it in the overrides first (internal)."""


class Repo(RepoRefsMixin, RepoCommitsMixin, RepoInstancesMixin):
    """A repo: a DAG of versions holding data instances.

    The handle has a *head*: the version that ``repo.create_array``, ``repo.array(name)``
    and other unpinned handles read and write. ``commit`` locks the head; ``branch``,
    ``newversion``, ``merge`` and ``checkout`` move it. Handles obtained through
    :meth:`version` are pinned to one version and never move.
    """

    def __init__(self, store: Any, uuid: str, head: str | None = None) -> None:
        self.store = store
        self.backend = store.backend
        self.uuid = uuid
        self._pending_uuid: dict[int, str] = {}
        self._set_state(load_state(self.backend, uuid))
        if head:
            node = self._node(head)
        else:  # the head stored by the last handle that moved it, read with the metadata
            node = self._saved_head(self._state.head_raw)
        self._head_id = node.id

    def _saved_head(self, raw: bytes | None | bool = False) -> Node:
        """The head stored by the last handle that moved it (as git's ``HEAD``), or the
        newest version on the master branch when none was stored or it no longer exists.
        ``raw``: the stored head if already fetched (``False``: fetch it)."""
        if raw is False:
            raw = self.backend.get(K.head_key(self.uuid))
        if raw:
            node = self._dag.by_uuid.get(raw.decode("ascii", "replace"))
            if node is not None:
                return node
            log.warning("repo %s: stored head %r is not a version; opening master", self.uuid, raw)
        return self._dag.branch_leaf(MASTER)

    def _move_head(self, vid: int) -> None:
        """Make ``vid`` the head and remember it in the store for the next ``open_repo``."""
        self._head_id = vid
        uuid = self._dag.nodes[vid].uuid
        try:
            self.backend.set(K.head_key(self.uuid), uuid.encode())
        except (BackendError, OSError, PermissionError) as exc:  # read-only stores still move
            log.warning("repo %s: could not store the head (%s); it moves for this handle only",
                        self.alias, exc)

    # --- metadata --------------------------------------------------------------------------

    def _set_state(self, state: RepoState) -> None:
        self._state = state
        self._dag = state.dag
        manifests(self.backend).observe(self.uuid, int(state.meta.get("squashes", 0)))

    @property
    def _doc(self) -> dict[str, Any]:
        """The repo document with the instance records under ``"instances"`` (read-only view;
        change metadata with :meth:`_update_repo`, :meth:`_update_node`,
        :meth:`_update_instance`)."""
        return {**self._state.meta, "instances": self._state.instances}

    @property
    def _stamp(self) -> bytes | None:
        """The repo's change journal as last read: equal stamps mean equal metadata."""
        return self._state.gen_raw

    @property
    def _state_raw(self) -> bytes | None:
        """The repo document as last read."""
        return self._state.meta_raw

    def _instance_records(self) -> dict[str, dict[str, Any]]:
        """``{name: instance record}`` of every instance of the repo, as last read."""
        return self._state.instances

    def refresh(self, _raw: Any = False, *, full: bool = False) -> None:
        """Re-read the repo's metadata (other processes may have changed it): one read of
        the change journal when nothing changed, the changed records otherwise, everything
        with ``full=True`` or when this handle is far behind."""
        state = None if full else catch_up(self.backend, self.uuid, self._state)
        if state is None:
            state = load_state(self.backend, self.uuid, snapshot=not full)
        if state is not self._state:
            self._set_state(state)

    def _squashed_elsewhere(self) -> bool:
        """Whether another process squashed versions of this repo since this handle last
        read it (one read of the repo document); if so, the handle is refreshed (which drops
        this process's stale index caches, see :meth:`_set_state`)."""
        before = int(self._state.meta.get("squashes", 0))
        doc = load_doc(self.backend.get(K.repo_key(self.uuid)), f"repo {self.uuid}")
        if doc is None or int(doc.get("squashes", 0)) <= before:
            return False
        self.refresh()
        return True

    def _journal(self, *entries: tuple[str, Any]) -> None:
        self._run([], list(entries))

    def _run(self, steps: list[Step], entries: list[tuple[str, Any]],
             head: int | None = None) -> dict[str, bytes | None]:
        """Run a metadata change (see :func:`~diced.repo.meta.run_steps`) with the journal
        entries naming what changed and, if ``head`` is given, the stored head moved there;
        on LMDB one transaction."""
        got: dict[str, Any] = {}
        steps = [*steps, (K.gen_key(self.uuid), journal_fn(self.uuid, entries, got))]
        if head is not None:
            raw_uuid = self._uuid_for_head(head)
            steps.append((K.head_key(self.uuid), lambda cur: raw_uuid))
        out = run_steps(self.backend, steps, lambda keys: self._undone(entries, keys))
        if got["old"] == self._state.gen_n:  # nobody else changed anything since we read
            self._state.gen_raw, self._state.gen_n = got["raw"], got["new"]
        if head is not None:
            self._head_id = head
        return out

    def _undone(self, entries: list[tuple[str, Any]], keys: list[str]) -> None:
        """A change stopped after some of its keys were written and swapped them back: a
        full load in between may have read them (and stored them in a state snapshot), so
        the journal names those keys (of the change's ``entries``; a lock key as its
        version) and readers re-read them. Best effort: a crash here leaves what
        :func:`diced.repo.history.load_state` checks on every open."""
        touched = set(keys)
        of = {"n": lambda v: (K.node_key(self.uuid, int(v)), K.lock_key(self.uuid, int(v))),
              "b": lambda x: (K.branch_key(self.uuid, x),),
              "t": lambda x: (K.tag_key(self.uuid, x),),
              "i": lambda x: (K.instance_key(self.uuid, x),),
              "r": lambda _: (K.repo_key(self.uuid),)}
        named = [e for e in entries if e[0] in of and touched & set(of[e[0]](e[1]))]
        if not named:
            return
        try:
            journal(self.backend, self.uuid, *named)
        except Exception as exc:  # noqa: BLE001 - the change's own error is the one raised
            log.warning("repo %s: a withdrawn change is not in the journal (%r)", self.uuid,
                        exc)

    def _uuid_for_head(self, vid: int) -> bytes:
        pend = self._pending_uuid.get(vid)
        return (pend if pend is not None else self._dag.nodes[vid].uuid).encode()

    def _apply(self, put: Iterable[Node] = (), drop: Iterable[int] = (),
               refs: dict[str, int] | None = None) -> None:
        """Our own change, applied to this handle's snapshot."""
        self._set_state(RepoState(self._state.meta, self._dag.derive(put, drop, refs),
                                  self._state.instances, self._state.gen_raw,
                                  self._state.gen_n, self._state.head_raw,
                                  dict(self._state.extra), self._state.meta_raw))

    def _repo_step(self, fn: Callable[[dict[str, Any]], None],
                   out: dict[str, Any]) -> Step:
        def body(cur: bytes | None) -> bytes:
            doc = load_doc(cur, f"repo {self.uuid}")
            if doc is None:
                raise RepoNotFoundError(f"repo {self.uuid} does not exist (deleted?)")
            fn(doc)
            doc["updated"] = time.time()
            out["doc"] = doc
            return dump_doc(doc)

        return K.repo_key(self.uuid), body

    def _update_repo(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Change the repo document (alias, description, log, properties) by compare-and-set:
        ``fn(doc)`` edits a fresh copy in place (again if another writer won a race);
        raising aborts with nothing stored."""
        out: dict[str, Any] = {}
        vals = self._run([self._repo_step(fn, out)], [("r", "")])
        self._state.meta, self._state.meta_raw = out["doc"], vals[K.repo_key(self.uuid)]
        return out["doc"]

    def _override_step(self, vids: Iterable[int], out: dict[str, Any]) -> Step:
        """A step listing packed (or packable) nodes whose records are about to change, so
        that the records beat the packs (see :mod:`diced.repo.history`)."""
        want = {int(v) for v in vids}

        def fn(doc: dict[str, Any]) -> None:
            doc["overrides"] = sorted(set(doc.get("overrides", [])) | want)

        return self._repo_step(fn, out)

    def _update_node(self, vid: int, fn: Callable[[dict[str, Any]], None], *,
                     steps: tuple[Step, ...] = (), head: int | None = None) -> Node:
        """Change version ``vid``'s record (note, log) by compare-and-set: ``fn(record)``
        edits a fresh copy in place; raising aborts with nothing stored. ``steps`` run
        first, in the same change."""
        key = K.node_key(self.uuid, vid)
        known = self._dag.nodes.get(vid)
        need = vid in self._state.meta.get("overrides", [])
        locked_now = (known is not None and known.locked) or \
            self.backend.get(K.lock_key(self.uuid, vid)) is not None
        out: dict[str, Any] = {}
        node_out: dict[str, Node] = {}
        for _ in range(3):
            override = locked_now and not need

            def body(cur: bytes | None, override: bool = override) -> bytes:
                node = None if cur is None else parse_node(cur, f"record of version id {vid}")
                if node is None:
                    raise VersionNotFoundError(f"version id {vid} not in repo {self.alias!r}")
                if node.locked and not (override or need):
                    raise _NeedOverride
                rec = node.to_dict()
                fn(rec)
                rec["updated"] = time.time()
                new = Node.from_dict(rec)
                node_out["node"] = new
                return node_record(new)

            pre = [self._override_step([vid], out)] if override else []
            try:
                vals = self._run([*pre, *steps, (key, body)], [("n", vid)], head)
            except _NeedOverride:
                locked_now = True
                continue
            break
        else:  # pragma: no cover - the record keeps flipping
            raise VersionNotFoundError(f"version id {vid}: its record keeps changing")
        if "doc" in out:
            self._state.meta, self._state.meta_raw = out["doc"], vals[K.repo_key(self.uuid)]
        node = node_out["node"]
        node.locked = node.locked or locked_now
        self._apply([node])
        return node

    def _ctx(self, vid: int) -> VersionCtx:
        node = self._dag.nodes.get(vid)
        if node is None:
            self.refresh()
            node = self._dag.nodes.get(vid)
            if node is None:
                raise VersionNotFoundError(f"version id {vid} not in repo {self.alias!r}")
        dag = self._dag
        return VersionCtx(self.uuid, vid, dag.ancestors(vid), node.locked, node.uuid,
                          uuid_of=lambda v: dag.nodes[v].uuid)

    @property
    def alias(self) -> str:
        """The repo's name in its store."""
        return self._state.meta.get("alias", "")

    @property
    def description(self) -> str:
        """The repo's free-text description."""
        return self._state.meta.get("description", "")

    @property
    def root(self) -> Version:
        """The repo's root version (its UUID is the repo's UUID)."""
        return Version(self, self._dag.root)

    @property
    def head(self) -> Version:
        """The head: the version unpinned handles read and write.

        Moved by ``checkout``, ``branch``, ``newversion`` and ``merge``, and stored in the
        store, so the next ``store.open_repo`` starts there.
        """
        return Version(self, self._dag.nodes[self._head_id])

    @property
    def current_uuid(self) -> str:
        """UUID of the head version."""
        return self._dag.nodes[self._head_id].uuid

    @property
    def dag(self) -> DAG:
        """The version DAG (a snapshot: :meth:`refresh` re-reads it)."""
        return self._dag

    def view(self, host: str = "127.0.0.1", port: int = 8000, *, open_browser: bool | None = None,
             **options: Any) -> Any:
        """Serve the store and show this repo's web page (``<url>/?repo=<root uuid>``).

        The page opens in a browser when one can be shown (a display exists), else the URL is
        printed. Returns the :class:`diced.server.ServerHandle`; call ``.stop()`` when done.
        """
        from diced.server.run import serve, show_url

        handle = serve(self.store, host=host, port=port, **options)
        show_url(f"{handle.url}/?repo={self.uuid}", open_browser)
        return handle

    def __repr__(self) -> str:
        return f"<Repo {self.alias!r} root={self.uuid[:12]} head={self.current_uuid[:12]}>"

    # --- deleting, squashing and garbage collection (diced.repo.gc) -------------------------

    def delete_version(self, version: str | Version) -> list[str]:
        """Delete a leaf version (DVID's rule: no children, tags included; not the root).

        Its data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        version : str or Version
            UUID (or prefix, ``branch~N``, ...) of the version.

        Returns
        -------
        list of str
            The deleted UUID.

        Raises
        ------
        InvalidArgumentError
            The version has children or is the root.
        """
        from diced.repo.gc import delete_version

        return delete_version(self, version)

    def delete_branch(self, name: str) -> list[str]:
        """Delete branch ``name``: its leaf-first run of versions that nothing else (another
        branch, a tag, a merge) builds on. Data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        name : str
            Branch name (not ``master``).

        Returns
        -------
        list of str
            The deleted UUIDs, leaf first.

        Raises
        ------
        InvalidArgumentError
            ``master``, or the branch leaf has children.
        VersionNotFoundError
            No such branch.
        """
        from diced.repo.gc import delete_branch

        return delete_branch(self, name)

    def squash(self, first: str | Version, last: str | Version) -> Version:
        """Fold the linear run of locked versions ``first .. last`` into ``last``, which keeps
        its UUID, content and children and takes ``first``'s parents. The folded versions'
        data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        first, last : str or Version
            Oldest and newest version of the run.

        Returns
        -------
        Version
            ``last``.

        Raises
        ------
        InvalidArgumentError
            Not a linear run, or ``first`` is the root.
        UnlockedNodeError
            A version of the run is open.
        """
        from diced.repo.gc import squash

        return squash(self, first, last)

    def gc(self) -> Any:
        """Reclaim the data of this repo's deleted and squashed versions.

        Returns
        -------
        diced.repo.gc.GCReport
        """
        from diced.repo.gc import collect

        return collect(self.store, self.uuid)
