"""Store: the top-level handle on a backend holding repos."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Self

from diced.backends import Backend, open_backend
from diced.backends.chain import CHAIN_KEY
from diced.backends.checksum import ChecksummedBackend
from diced.backends.dedup import DEDUP_KEY
from diced.backends.layers import LayerOptions, open_layers
from diced.backends.routed import ROUTES_KEY
from diced.errors import (
    AmbiguousVersionError,
    DuplicateNameError,
    InvalidArgumentError,
    RepoNotFoundError,
    StoreFormatError,
    StoreLocationError,
    StoreNotFoundError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.dag import Node, new_uuid
from diced.repo.history import first_state
from diced.repo.meta import dump_doc, load_doc, next_counter, update_docs
from diced.repo.repo import Repo, _check_name, drop_instance_data

log = logging.getLogger(__name__)

__all__ = ["Store"]


#: the records a store's open reads (see :meth:`Store.__init__`)
_OPEN_KEYS = [CHAIN_KEY, ROUTES_KEY, K.FORMAT_KEY, K.MIGRATE_KEY, DEDUP_KEY]


class Store:
    """A place holding repos: a local path (embedded LMDB) or an fsspec URL.

    Every value is stored with a CRC32C that is checked on every read
    (:mod:`diced.backends.checksum`); :meth:`verify` checks a whole store.

    Parameters
    ----------
    location:
        ``"~/data/fly.diced"`` (LMDB), ``"memory://name"``, ``"file:///path"``,
        ``"gs://bucket/path"``, ``"s3://bucket/path"``, or an open :class:`Backend`.
    create:
        ``None`` (default): open the store at ``location``, or make one there if the
        location is new or empty; a non-empty location that is not a store is refused.
        ``False``: only open an existing store (read-only tools use this).
        ``True``: also make a store in a non-empty directory.
    layer_options:
        Storage options for the other backends the store is made of, keyed by URL or by
        protocol (``{"s3": {"endpoint_url": ...}}``): the base of a chained store
        (:meth:`chain`) and the targets of instances created with ``storage=``. Without
        them those backends get fsspec's configured defaults.
    migrate:
        Upgrade a store written by an older diced to the current storage format in place
        (see :func:`diced.migrate.migrate_store`); without it such a store is refused with
        :class:`~diced.errors.StoreFormatError`.
    dedup:
        Make a new store deduplicating: identical chunk and value payloads written at any
        version or position are stored once (:mod:`diced.backends.dedup`). The choice is
        recorded in the store; later openers follow it whatever they pass.
    **options:
        Passed to the backend (fsspec storage options, or ``durable=`` for LMDB).

    Raises
    ------
    StoreLocationError
        ``location`` is a regular file, lies below one, cannot be read, or is a non-empty
        location that holds no store.
    StoreNotFoundError
        ``create=False`` and there is no store at ``location``.
    StoreFormatError
        The store has another storage format (and ``migrate`` was not given).
    """

    def __init__(self, location: str | os.PathLike[str] | Backend, *,
                 create: bool | None = None, migrate: bool = False, dedup: bool = False,
                 layer_options: LayerOptions | None = None, **options: Any) -> None:
        if create is not None and not isinstance(location, Backend):
            options["create"] = create
        backend = open_backend(location, **options)
        self._layer_options = layer_options
        read: dict[str, bytes | None] = {}
        if not isinstance(backend, ChecksummedBackend):
            try:
                # what opening reads, in one round (one request each, all in flight on an
                # object store): the chain and routes records, and the store's own format,
                # migration and dedup records, used below when no chain sits in between
                read = dict(zip(_OPEN_KEYS, backend.get_many(_OPEN_KEYS), strict=True))
                plain = backend
                backend = open_layers(backend, layer_options, read=read)
                if backend is not plain:  # a chain or routes: read through them as before
                    read = {}
            except BaseException:
                if not isinstance(location, Backend):
                    backend.close()
                raise
            backend = ChecksummedBackend(backend)
        self.backend: ChecksummedBackend = backend
        self.location = self.backend.url
        self._check_format(create, migrate, read)
        self._check_dedup(dedup, read)

    def _check_dedup(self, wanted: bool, read: dict[str, bytes | None]) -> None:
        """Switch to the deduplicating wrapper when the store is (or is made) one; ``read``
        may hold the marker as read at the open (only for a store that existed then)."""
        from diced.backends.dedup import DedupBackend

        if isinstance(self.backend, DedupBackend):
            return
        if read.get(K.FORMAT_KEY) is not None and DEDUP_KEY in read:
            # checked as a read through the backend would check it (a damaged one raises)
            on = self.backend._unframe(DEDUP_KEY, read[DEDUP_KEY]) is not None
        else:
            on = self.backend.get(DEDUP_KEY) is not None
        if wanted and not on:
            if next(iter(self.backend.list_keys("d/")), None) is not None:
                from diced.errors import InvalidArgumentError

                raise InvalidArgumentError(
                    f"store {self.location} already holds data stored without deduplication; "
                    "dedup=True can only be chosen for a new (or data-free) store")
            self.backend.set(DEDUP_KEY, b"1")
            on = True
        if on:
            self.backend = DedupBackend(self.backend.raw)

    @property
    def dedup(self) -> bool:
        """Whether identical value payloads are stored once (:mod:`diced.backends.dedup`)."""
        from diced.backends.dedup import DedupBackend

        return isinstance(self.backend, DedupBackend)

    @classmethod
    def chain(cls, base: str | os.PathLike[str], local: str | os.PathLike[str], *,
              layer_options: LayerOptions | None = None, **options: Any) -> Self:
        """Open a chained store: edits in ``local`` over the read-only store at ``base``.

        DVID's "work in progress" setup: ``base`` is a published store (a ``gs://`` or
        ``s3://`` bucket, a ``file://`` tree or an LMDB directory) whose versions everyone
        shares; ``local`` (a new or empty location, normally an LMDB path) receives every
        write (new versions, branches, instances, chunks, metadata). Reads of chunks a
        version did not change fall through to ``base``; ``base`` is never written. The
        first call records the base in ``local``, so ``diced.Store(local)`` (or the CLI on
        ``local``) opens the chain again later. See :mod:`diced.backends.chain`.

        Parameters
        ----------
        base : str or path
            Location of the published store (must exist).
        local : str or path
            Location of the local layer (made if new).
        layer_options : mapping, optional
            Storage options for ``base`` (and routed targets), by URL or protocol.
        **options
            Passed to the local backend (e.g. ``durable=`` for LMDB).

        Returns
        -------
        Store

        Raises
        ------
        StoreNotFoundError
            There is no store at ``base``.
        StoreLocationError
            ``local`` holds a store of its own or a chain over another base.
        InvalidArgumentError
            ``base`` and ``local`` are the same location.
        """
        from diced.backends.layers import make_chain

        make_chain(base, local, layer_options, **options)
        return cls(local, layer_options=layer_options, **options)

    @property
    def is_chained(self) -> bool:
        """Whether the store is the local layer of a chain over a read-only base."""
        from diced.backends.chain import ChainedBackend
        from diced.backends.routed import RoutedBackend

        raw = self.raw_backend
        if isinstance(raw, RoutedBackend):
            raw = raw.main
        return isinstance(raw, ChainedBackend)

    @property
    def raw_backend(self) -> Backend:
        """The backend without checksum handling: values exactly as stored."""
        return self.backend.raw

    def _check_format(self, create: bool | None, migrate: bool,
                      read: dict[str, bytes | None]) -> None:
        """Make the store, or check its storage format (migrating it with ``migrate``);
        ``read`` may hold the format and migration records as read at the open."""
        raw = read[K.FORMAT_KEY] if K.FORMAT_KEY in read else self.raw_backend.get(K.FORMAT_KEY)
        progress = read.get(K.MIGRATE_KEY, ...) if raw is not None else ...
        if raw is None:
            if create is False:
                raise StoreNotFoundError(f"no store at {self.location}")
            if create is not True and not self.raw_backend.is_empty() \
                    and self.raw_backend.get(K.FORMAT_KEY) is None:  # not made meanwhile
                raise StoreLocationError(
                    f"{self.location} is not empty and holds no diced store; use a new or "
                    "empty location (or pass create=True to make a store there anyway)")

            def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
                if cur[K.FORMAT_KEY] is not None:  # another process made it meanwhile
                    return {}
                return {K.FORMAT_KEY: dump_doc({"format": K.FORMAT_VERSION,
                                                "created": time.time()})}

            update_docs(self.backend, [K.FORMAT_KEY], body)
            raw = self.raw_backend.get(K.FORMAT_KEY)
        from diced.migrate import stored_format

        found = stored_format(self.raw_backend, raw, progress)
        if found == K.FORMAT_VERSION:
            return
        if not migrate:
            raise StoreFormatError(
                f"store {self.location} has storage format {found!r}; this diced reads format "
                f"{K.FORMAT_VERSION} (checksummed values, per-record repo metadata). Upgrade it in "
                f"place, once, "
                f"with `diced migrate {self.location}` or diced.Store(..., migrate=True); "
                "no other process may use the store meanwhile")
        from diced.migrate import migrate_store

        migrate_store(self.raw_backend)
        read.clear()  # the records read at the open are in the old format

    def _next_counter(self, name: str) -> int:
        return next_counter(self.backend, name)

    # --- repos -------------------------------------------------------------------------------

    def create_repo(self, alias: str, description: str = "", *, uuid: str | None = None,
                    exist_ok: bool = False) -> Repo:
        """Create a repo with a unique alias; its root version is open and is the head.

        Parameters
        ----------
        alias : str
            Repo name, unique in the store.
        description : str, optional
            Free text.
        uuid : str, optional
            Root version UUID (32 hex characters); default: a new random one.
        exist_ok : bool, default False
            If a repo ``alias`` exists, open it (as :meth:`open_repo` does: the head is where
            it was left) instead of raising, so re-running a notebook cell works. The
            description is not compared; a different ``uuid`` still raises.

        Returns
        -------
        Repo

        Raises
        ------
        DuplicateNameError
            A repo ``alias`` exists (and ``exist_ok`` is false, or its root is not ``uuid``).
        """
        _check_name(alias, "repo alias")
        if exist_ok:
            raw = self.backend.get(K.alias_key(alias))
            if raw is not None:
                if uuid is not None and raw.decode() != uuid:
                    raise DuplicateNameError(
                        f"a repo named {alias!r} already exists in {self.location} with root "
                        f"{raw.decode()}, not {uuid}")
                return self.open_repo(alias)
        root = uuid or new_uuid()
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) != 32
                                 or any(c not in "0123456789abcdef" for c in uuid)):
            raise InvalidArgumentError(f"a repo UUID must be 32 lowercase hex characters: {uuid!r}")
        now = time.time()
        meta = {
            "format": K.REPO_FORMAT, "uuid": root, "alias": alias,
            "description": str(description), "created": now, "updated": now, "log": [],
            "properties": {}, "mutation_id": 0, "packs": [], "overrides": [],
        }
        records = first_state(root, Node(root, 1, [], "", "", [], False, now, now), meta)
        # claim the alias, then the root (its node record), each create-only; the repo
        # document, written last, makes the repo visible
        ak = K.alias_key(alias)
        if not self.backend.compare_and_set(ak, None, root.encode()):
            raise DuplicateNameError(f"a repo named {alias!r} already exists in {self.location}")
        nk = K.node_key(root, 1)
        if self.backend.get(K.repo_key(root)) is not None or \
                not self.backend.compare_and_set(nk, None, records.pop(nk)):
            self.backend.compare_and_set(ak, root.encode(), None)
            raise DuplicateNameError(f"a repo with root {root} already exists")
        rk = K.repo_key(root)
        doc = records.pop(rk)
        self.backend.set_many(records)
        self.backend.set(rk, doc)
        return Repo(self, root)

    def _repo_uuid(self, alias: str | None, uuid: str | None) -> str:
        if (alias is None) == (uuid is None):
            raise InvalidArgumentError("give exactly one of a repo name or uuid=")
        if uuid is not None and (not isinstance(uuid, str) or not uuid):
            raise InvalidArgumentError(f"uuid= must be a non-empty UUID or prefix, got {uuid!r}")
        if alias is not None:
            raw = self.backend.get(K.alias_key(alias)) if isinstance(alias, str) and alias else None
            if raw is None:
                raise RepoNotFoundError(f"no repo named {alias!r} in {self.location}")
            return raw.decode()
        hits = [r for r in self._repo_uuids() if r.startswith(str(uuid).lower())]
        if len(hits) == 1:
            return hits[0]
        # any version UUID (prefix) of any repo opens that repo
        for r in self._repo_uuids():
            repo = Repo(self, r)
            try:
                repo._dag.resolve(str(uuid))
            except (VersionNotFoundError, AmbiguousVersionError, InvalidArgumentError):
                continue  # not (unambiguously) in this repo
            return r
        raise RepoNotFoundError(f"no repo or version matches uuid {uuid!r}")

    def _repo_uuids(self) -> list[str]:
        return [k.rsplit("/", 1)[1] for k in self.backend.list_keys("meta/repo/")]

    def open_repo(self, name: str | None = None, uuid: str | None = None, *,
                  version: str | None = None) -> Repo:
        """Open a repo by alias or by the UUID (prefix) of its root or any of its versions.

        Parameters
        ----------
        name : str, optional
            The repo's alias.
        uuid : str, optional
            UUID (or unique prefix) of the repo's root or of any of its versions.
        version : str, optional
            Where to put the head (any version spec: UUID prefix, ``branch``, ``branch~N``, tag).

        Returns
        -------
        Repo
            Its head is ``version`` if given, else the version named by ``uuid``, else where
            the head was last moved (by ``checkout``, ``branch``, ``newversion``, ``merge`` or
            ``commit``, in any process; stored in the repo like git's ``HEAD``), else the
            newest version on the master branch.

        Raises
        ------
        RepoNotFoundError
            No such repo.
        """
        root = self._repo_uuid(name, uuid)
        return Repo(self, root, version if version is not None else uuid)

    def repos(self) -> dict[str, Repo]:
        """Every repo of the store, opened.

        Returns
        -------
        dict
            ``{alias: Repo}``.
        """
        out = {}
        for r in self._repo_uuids():
            repo = Repo(self, r)
            out[repo.alias] = repo
        return out

    def list_repos(self) -> list[tuple[str, str]]:
        """``[(alias, root uuid), ...]`` as DICED returned them."""
        out = []
        roots = self._repo_uuids()
        for r, raw in zip(roots, self.backend.get_many([K.repo_key(r) for r in roots]),
                          strict=True):
            doc = load_doc(raw, f"repo {r}")
            if doc is not None:
                out.append((doc.get("alias", ""), r))
        return sorted(out)

    def delete_repo(self, name: str | None = None, uuid: str | None = None) -> None:
        """Delete a repo, all its versions and data (irreversible)."""
        root = self._repo_uuid(name, uuid)
        repo = Repo(self, root)
        ak, rk = K.alias_key(repo.alias), K.repo_key(root)
        hk = K.head_key(root)
        # the snapshot and the document first (the repo disappears), then everything else
        self.backend.delete(K.snapshot_key(root))
        self.backend.delete(rk)
        self.backend.compare_and_set(ak, root.encode(), None)
        for rec in repo._instance_records().values():
            drop_instance_data(self.backend, rec, self)
        more = [hk, K.gen_key(root), K.vid_counter_key(root)]
        for prefix in [f"lock/{root}/", *K.repo_meta_prefixes(root)]:
            more += self.backend.list_keys(prefix)
        self.backend.delete_many(more)

    def verify(self, repo: str | None = None, version: str | None = None,
               repair: bool = False) -> Any:
        """Check every stored value: checksums, that chunks and label indexes decode, and
        that label indexes agree with the blocks; optionally repair open versions.

        Parameters
        ----------
        repo:
            Only this repo (default: the whole store).
        version:
            Only the history of this version of ``repo``.
        repair:
            Remove corrupt or undecodable values written at open versions (the version
            then shows its parent's value) and rebuild label indexes of open versions.
            Locked versions are never changed; their problems are reported.

        Returns
        -------
        diced.verify.VerifyReport
            ``.ok``, ``.problems`` (each naming repo, instance, version and chunk/key),
            ``.summary()``, ``.to_dict()``.
        """
        from diced.verify import verify_store

        return verify_store(self, repo, version, repair)

    def serve(self, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> Any:
        """Serve this store over DVID's HTTP API from a background thread.

        Returns a :class:`diced.server.ServerHandle` (``.url``, ``.stop()``, context manager).
        ``options``: ``read_only``, ``token``, ``cors_origins``, ``max_body_bytes`` (see
        :func:`diced.server.serve`). Needs ``pip install 'diced[server]'``.
        """
        from diced.server.run import serve

        return serve(self, host=host, port=port, **options)

    def gc(self) -> Any:
        """Reclaim the data of every repo's deleted and squashed versions (and, in a
        deduplicating store, payloads nothing refers to any more).

        Returns
        -------
        diced.repo.gc.GCReport
        """
        from diced.repo.gc import collect

        return collect(self)

    def close(self) -> None:
        """Release the backend (files, LMDB environment). The store is unusable afterwards."""
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.location!r}>"
