"""Store: the top-level handle on a backend holding repos."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Self

from diced.backends import Backend, open_backend
from diced.errors import (
    AmbiguousVersionError,
    CorruptMetadataError,
    DuplicateNameError,
    InvalidArgumentError,
    RepoNotFoundError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.dag import Node, new_uuid
from diced.repo.meta import dump_doc, load_doc, update_docs
from diced.repo.repo import Repo, _check_name

log = logging.getLogger(__name__)

__all__ = ["Store"]


class Store:
    """A place holding repos: a local path (embedded LMDB) or an fsspec URL.

    Parameters
    ----------
    location:
        ``"~/data/fly.diced"`` (LMDB), ``"memory://name"``, ``"file:///path"``,
        ``"gs://bucket/path"``, ``"s3://bucket/path"``, or an open :class:`Backend`.
    **options:
        Passed to the backend (fsspec storage options, or ``durable=`` for LMDB).
    """

    def __init__(self, location: str | os.PathLike[str] | Backend, **options: Any) -> None:
        self.backend = open_backend(location, **options)
        self.location = self.backend.url
        self._check_format()

    def _check_format(self) -> None:
        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            doc = load_doc(cur[K.FORMAT_KEY], "store format record")
            if doc is None:
                return {K.FORMAT_KEY: dump_doc({"format": K.FORMAT_VERSION, "created": time.time()})}
            if doc.get("format") != K.FORMAT_VERSION:
                raise CorruptMetadataError(
                    f"store {self.location} has format {doc.get('format')!r}; this diced reads "
                    f"format {K.FORMAT_VERSION}")
            return {}

        raw = self.backend.get(K.FORMAT_KEY)
        if raw is None:
            update_docs(self.backend, [K.FORMAT_KEY], body)
        else:
            body({K.FORMAT_KEY: raw})

    def _next_counter(self, name: str) -> int:
        key = K.counter_key(name)
        got: dict[str, int] = {}

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            n = int(cur[key] or b"0") + 1
            got["n"] = n
            return {key: str(n).encode()}

        update_docs(self.backend, [key], body)
        return got["n"]

    # --- repos -------------------------------------------------------------------------------

    def create_repo(self, alias: str, description: str = "", *, uuid: str | None = None) -> Repo:
        """Create a repo with a unique alias; its root version is open and is the head."""
        _check_name(alias, "repo alias")
        root = uuid or new_uuid()
        now = time.time()
        doc = {
            "format": K.FORMAT_VERSION, "uuid": root, "alias": alias,
            "description": str(description), "created": now, "updated": now, "log": [],
            "properties": {}, "next_id": 2, "mutation_id": 0,
            "nodes": [Node(root, 1, [], "", "", [], False, now, now).to_dict()],
            "instances": {},
        }
        ak, rk = K.alias_key(alias), K.repo_key(root)

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            if cur[ak] is not None:
                raise DuplicateNameError(f"a repo named {alias!r} already exists in {self.location}")
            if cur[rk] is not None:
                raise DuplicateNameError(f"a repo with root {root} already exists")
            return {ak: root.encode(), rk: dump_doc(doc)}

        update_docs(self.backend, [ak, rk], body)
        return Repo(self, root)

    def _repo_uuid(self, alias: str | None, uuid: str | None) -> str:
        if (alias is None) == (uuid is None):
            raise InvalidArgumentError("give exactly one of a repo name or uuid=")
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

        The head is the given ``version``, else the version named by ``uuid``, else the
        newest version on the master branch.
        """
        root = self._repo_uuid(name, uuid)
        return Repo(self, root, version if version is not None else uuid)

    def repos(self) -> dict[str, Repo]:
        out = {}
        for r in self._repo_uuids():
            repo = Repo(self, r)
            out[repo.alias] = repo
        return out

    def list_repos(self) -> list[tuple[str, str]]:
        """``[(alias, root uuid), ...]`` as DICED returned them."""
        out = []
        for r in self._repo_uuids():
            doc = load_doc(self.backend.get(K.repo_key(r)), f"repo {r}")
            if doc is not None:
                out.append((doc.get("alias", ""), r))
        return sorted(out)

    def delete_repo(self, name: str | None = None, uuid: str | None = None) -> None:
        """Delete a repo, all its versions and data (irreversible)."""
        root = self._repo_uuid(name, uuid)
        repo = Repo(self, root)
        from diced.repo.resolve import VersionedSpace

        ak, rk = K.alias_key(repo.alias), K.repo_key(root)
        update_docs(self.backend, [ak, rk], lambda cur: {ak: None, rk: None})
        from diced.repo.repo import instance_spaces

        for rec in repo._doc["instances"].values():
            for space in instance_spaces(rec):
                VersionedSpace(self.backend, space).drop()
            self.backend.delete_many(list(self.backend.list_keys(f"meta/label/{rec['id']:08x}/")))
        self.backend.delete_many(list(self.backend.list_keys(f"lock/{root}/")))

    def serve(self, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> Any:
        """Serve this store over DVID's HTTP API from a background thread.

        Returns a :class:`diced.server.ServerHandle` (``.url``, ``.stop()``, context manager).
        ``options``: ``read_only``, ``token``, ``cors_origins``, ``max_body_bytes`` (see
        :func:`diced.server.serve`). Needs ``pip install 'diced[server]'``.
        """
        from diced.server.run import serve

        return serve(self, host=host, port=port, **options)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.location!r}>"
