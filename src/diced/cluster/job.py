"""A cluster job: many workers write one new version, published by one metadata commit.

The driver reserves a fresh version id (:meth:`Repo._reserve_id`), workers write chunks at
a :class:`~diced.repo.resolve.VersionCtx` for that id (ancestors: the parent's plus itself),
and :meth:`Job.publish` adds the version node (and any instance the job created) in one
metadata change at the end. Until then nothing the job wrote is visible: no version has
the reserved id among its ancestors.

A record under ``meta/job/<repo uuid>/`` (:func:`diced.repo.keys.job_key`) holds the
reserved id and the job's parameters, so a job that failed (a worker killed, the driver
interrupted) is resumed by running it again: the rerun finds the record, reuses the id, and
skips the chunks the version's per-version index (``w/``) already lists.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diced.errors import (
    ConcurrencyError,
    DuplicateNameError,
    InvalidArgumentError,
    UnlockedNodeError,
)
from diced.repo import keys as K
from diced.repo.meta import dump_doc, load_doc, next_counter
from diced.repo.resolve import VersionCtx, VersionedSpace

if TYPE_CHECKING:
    from diced.repo.repo import Repo, Version

log = logging.getLogger(__name__)

__all__ = ["Job", "JobInfo", "list_jobs"]


@dataclass(frozen=True)
class JobInfo:
    """An unfinished job as recorded in the store."""

    name: str
    kind: str
    vid: int
    parent: str
    branch: str | None
    created: float


def list_jobs(repo: Repo) -> list[JobInfo]:
    """The repo's unfinished (failed or running) cluster jobs."""
    out = []
    keys = list(repo.backend.list_keys(K.job_prefix(repo.uuid)))
    for key, raw in zip(keys, repo.backend.get_many(keys), strict=True):
        rec = load_doc(raw, key)
        if rec is not None:
            out.append(JobInfo(rec["name"], rec["kind"], int(rec["vid"]), rec["parent"],
                               rec.get("branch"), float(rec.get("created", 0))))
    return sorted(out, key=lambda j: j.created)


class Job:
    """One resumable job writing a new child version of ``parent``.

    Use :meth:`start`; then write at :attr:`ctx` (workers get it pickled), then
    :meth:`publish`.
    """

    def __init__(self, repo: Repo, name: str, record: dict[str, Any]) -> None:
        self.repo, self.name, self.record = repo, name, record
        self.vid: int = int(record["vid"])
        parent = repo._node(record["parent"])
        anc = repo._ctx(parent.id).ancestors | {self.vid}
        #: where the job writes (picklable: no ``uuid_of``)
        self.ctx = VersionCtx(repo.uuid, self.vid, frozenset(anc), False, "")
        self.parent_ctx = VersionCtx(repo.uuid, parent.id, repo._ctx(parent.id).ancestors,
                                     True, parent.uuid)
        #: where derived data (the label index) is compared against: the parent
        self.base_ctx = self.parent_ctx
        #: whether this run continues one that stopped before publishing
        self.resumed = bool(record.get("_resumed"))

    @property
    def key(self) -> str:
        """The store key of the job record."""
        return K.job_key(self.repo.uuid, self.name)

    # --- starting ----------------------------------------------------------------------------

    @classmethod
    def start(cls, repo: Repo, kind: str, params: dict[str, Any], *, parent: Any = None,
              name: str | None = None, branch: str | None = None, note: str = "",
              new_instances: dict[str, tuple[str, dict[str, Any]]] | None = None) -> Job:
        """Start a job, or resume the unfinished job of the same name.

        Parameters
        ----------
        repo : Repo
        kind : str
            What the job does (``"ingest"``, ``"map_blocks"``, ...).
        params : dict
            JSON-able parameters; a rerun must give the same ones to resume.
        parent : version, optional
            The locked version the new version is a child of (default: the repo head).
        name : str, optional
            Job name (default: ``kind`` + target + parent UUID, so the same call resumes).
        branch : str, optional
            Start a new branch for the version (default: continue the parent's branch).
        note : str
            Note of the new version.
        new_instances : dict, optional
            ``{name: (datatype name, creation options)}`` created by the job; they appear
            with the version.

        Raises
        ------
        UnlockedNodeError
            The parent is open.
        ConcurrencyError
            A job of that name with other parameters is unfinished.
        """
        repo.refresh()
        p = repo._node(parent)
        if not p.locked:
            raise UnlockedNodeError(
                f"version {p.uuid} is open; commit it before a job writes a child of it")
        if branch is not None:
            from diced.repo.repo import _check_name

            _check_name(branch, "branch")
        name = name or f"{kind}:{params.get('target', '')}:{p.uuid}"
        key = K.job_key(repo.uuid, name)
        want = {"kind": kind, "params": params, "parent": p.uuid, "branch": branch}
        for _attempt in range(5):
            raw = repo.backend.get(key)
            if raw is not None:
                rec = load_doc(raw, key) or {}
                have = {k: rec.get(k) for k in want}
                if dump_doc(have) != dump_doc(want):
                    raise ConcurrencyError(
                        f"an unfinished job {name!r} ({rec.get('kind')}) has other parameters; "
                        "rerun it with the same ones, pass another job name, or abandon it "
                        "(diced.cluster.Job.abandon)")
                rec["_resumed"] = True
                log.info("resuming job %r at version id %s", name, rec["vid"])
                return cls(repo, name, rec)
            if new_instances:
                _check_new_instances(repo, new_instances, p.id)
            vid = repo._reserve_id()
            rec = {**want, "name": name, "vid": vid, "note": note, "created": time.time(),
                   "instances": _configure(repo, vid, new_instances or {})}
            if repo.backend.compare_and_set(key, None, dump_doc(rec)):
                log.info("job %r reserved version id %d", name, vid)
                return cls(repo, name, rec)
        raise ConcurrencyError(f"job {name!r}: its record kept changing under another driver")

    # --- what workers need ---------------------------------------------------------------

    @classmethod
    def load(cls, repo: Repo, name: str) -> Job:
        """The unfinished job ``name`` (see :func:`list_jobs`), e.g. to :meth:`abandon` it.

        Raises
        ------
        NotFoundError
            No unfinished job has that name.
        """
        from diced.errors import NotFoundError

        key = K.job_key(repo.uuid, name)
        rec = load_doc(repo.backend.get(key), key)
        if rec is None:
            raise NotFoundError(f"no unfinished job {name!r} in repo {repo.alias!r}")
        return cls(repo, name, rec)

    def instance_record(self, name: str) -> dict[str, Any]:
        """The record of instance ``name`` as the job sees it (created by the job, or
        visible at the parent)."""
        rec = self.record["instances"].get(name)
        if rec is not None:
            return rec
        from diced.errors import InstanceNotFoundError

        self.repo.refresh()
        rec = self.repo._doc["instances"].get(name)
        if rec is None or rec["created"] not in self.parent_ctx.ancestors:
            raise InstanceNotFoundError(
                f"no data instance {name!r} at version {self.parent_ctx.uuid[:12]}")
        return rec

    def written(self, space_id: int) -> set[str]:
        """ckeys the job's version already holds in key space ``space_id`` (data or
        tombstones): what a resumed run skips."""
        return set(VersionedSpace(self.repo.backend, space_id).written_at(self.vid))

    # --- finishing ------------------------------------------------------------------------

    def set_shape(self, instance: str, shape: tuple[int, ...]) -> None:
        """Record a new shape of ``instance`` for the job's version (stored at publish)."""
        self.record.setdefault("shapes", {})[instance] = [int(n) for n in shape]

    def publish(self, *, lock: bool = False, move_head: bool = False) -> Version:
        """Add the job's version to the DAG (with the instances it created and the shapes
        it changed) in one metadata change, then remove the job record.

        Parameters
        ----------
        lock : bool
            Also commit (lock) the new version.
        move_head : bool
            Make it the repo head.
        """
        from diced.repo.dag import MASTER

        repo, vid = self.repo, self.vid
        repo.refresh()
        node = repo._dag.nodes.get(vid)
        if node is None:
            parent = repo._node(self.record["parent"])
            branch = self.record.get("branch")
            new = self.record.get("instances") or {}
            shapes = self.record.get("shapes") or {}

            if branch == MASTER:
                raise InvalidArgumentError("'master' is the default branch; leave branch=None")
            # the instance records and shapes first: they name the job's version id, which
            # no version has yet, so nothing shows until the node itself is published
            for name, rec in new.items():
                rec = copy.deepcopy(rec)
                if name in shapes:
                    rec["config"]["shapes"][str(vid)] = shapes[name]
                repo._put_instance(name, rec, same_ok=True,
                                   taken=f"instance {name!r} was created while job "
                                         f"{self.name!r} ran")
            for name, shape in shapes.items():
                if name not in new:
                    repo._update_instance(
                        name, lambda rec, shape=shape: rec["config"]["shapes"].__setitem__(
                            str(vid), shape))
            # a new branch is created only once; continuing the parent's branch moves its
            # ref by compare-and-set (another child made meanwhile refuses the publish)
            version = repo._add_child([parent.id], branch or parent.branch,
                                      self.record.get("note", ""), vid=vid,
                                      move_head=move_head,
                                      ref="create" if branch is not None else "advance")
        else:  # published by an earlier run that stopped before removing the record
            from diced.repo.repo import Version

            version = Version(repo, node)
        if lock and not version.locked:
            version = repo.commit(uuid=version.uuid)
        repo.backend.delete(self.key)
        log.info("job %r published version %s", self.name, version.uuid)
        return version

    def abandon(self) -> None:
        """Forget the job: its record goes; what it wrote stays unreachable (no version
        has its id) and is left to garbage collection."""
        self.repo.backend.delete(self.key)


def _check_new_instances(repo: Repo, new: dict[str, tuple[str, dict[str, Any]]],
                         vid: int) -> None:
    """Refuse bad names and options before an id is reserved (nothing stored)."""
    from diced.datatypes import get_datatype
    from diced.repo.repo import _check_name

    for name, (typename, options) in new.items():
        _check_name(name, "instance name")
        if name in repo._doc["instances"]:
            raise DuplicateNameError(f"repo {repo.alias!r} already has an instance {name!r}")
        try:
            get_datatype(typename).configure(vid, **options)
        except TypeError as exc:  # an option the datatype does not take
            raise InvalidArgumentError(f"instance {name!r}: {exc}") from exc


def _configure(repo: Repo, vid: int, new: dict[str, tuple[str, dict[str, Any]]]
               ) -> dict[str, dict[str, Any]]:
    from diced.datatypes import get_datatype

    out = {}
    for name, (typename, options) in new.items():
        dt = get_datatype(typename)
        config = dt.configure(vid, **options)
        inst_id = next_counter(repo.backend, "instance")
        dt.allocate(config, lambda: next_counter(repo.backend, "instance"))
        out[name] = {"id": inst_id, "type": dt.name, "created": vid, "config": config}
    return out
