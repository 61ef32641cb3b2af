"""Find repos and versions from the UUID specs DVID accepts in URLs.

DVID takes, wherever a URL names a version: a full UUID, any unique UUID prefix (across all
repos), ``prefix:branch`` (the leaf of that branch in the prefix's repo), ``:branch`` (only
when the server holds exactly one repo), ``branch~N`` (N steps back along the branch
ancestry) and, in diced, tag names.

Repo handles are cached per root and reused while the repo's metadata is unchanged (one
backend read per request checks that). Cached handles are only read through pinned versions;
a request that changes the DAG or an instance gets a fresh handle (:meth:`Catalog.fresh`), so
the shared handles never move their head.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diced.errors import (
    AmbiguousVersionError,
    InvalidArgumentError,
    NotFoundError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.server._http import HTTPError, bad, not_found

if TYPE_CHECKING:
    from diced.repo.dag import Node
    from diced.repo.repo import Repo
    from diced.store import Store

__all__ = ["Catalog", "Located"]

_SPEC = re.compile(r"^[A-Za-z0-9_.:~-]{1,200}$")


@dataclass(frozen=True)
class Located:
    """A resolved version: its repo handle and node."""

    repo: Repo
    node: Node

    @property
    def uuid(self) -> str:
        """The UUID of the version the request resolved to."""
        return self.node.uuid


def _resolve(repo: Repo, spec: str) -> Node | None:
    try:
        return repo._dag.resolve(spec)
    except (VersionNotFoundError, NotFoundError):
        return None
    except (AmbiguousVersionError, InvalidArgumentError) as exc:
        raise bad(str(exc)) from None


class Catalog:
    """The store's repos, with DVID's UUID resolution."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._repos: dict[str, tuple[tuple[bytes | None, bytes | None], Repo]] = {}
        self._roots: list[str] | None = None

    # --- repos ------------------------------------------------------------------------------

    def roots(self, *, refresh: bool = False) -> list[str]:
        """Root UUIDs of the store's repos (cached; ``refresh=True`` re-lists them)."""
        with self._lock:
            if self._roots is None or refresh:
                self._roots = sorted(self.store._repo_uuids())
            return list(self._roots)

    def repo(self, root: str) -> Repo:
        """A current (cached) handle on the repo with this root UUID."""
        from diced.repo.repo import Repo

        raw, stamp = self.store.backend.get_many([K.repo_key(root), K.gen_key(root)])
        if raw is None:
            with self._lock:
                self._repos.pop(root, None)
                self._roots = None
            raise not_found(f"repo {root} does not exist")
        with self._lock:
            hit = self._repos.get(root)
            if hit is not None and hit[0] == (raw, stamp):  # the journal names every change
                return hit[1]
        repo = Repo(self.store, root)
        with self._lock:
            self._repos[root] = ((repo._state_raw, repo._stamp), repo)
        return repo

    def repos(self) -> list[Repo]:
        """Every repo of the store, skipping ones deleted while listing."""
        out = []
        for root in self.roots(refresh=True):
            try:
                out.append(self.repo(root))
            except HTTPError:
                continue  # deleted meanwhile
        return out

    def forget(self) -> None:
        """Drop the cached repo list (after a repo is created or deleted)."""
        with self._lock:
            self._roots = None

    # --- versions ---------------------------------------------------------------------------

    def locate(self, spec: str) -> Located:
        """The version a DVID UUID spec names, or a 400/404 :class:`HTTPError`."""
        if not isinstance(spec, str) or not _SPEC.match(spec):
            raise bad(f"bad UUID {spec!r}: expected a UUID, a unique prefix, "
                      "'prefix:branch', ':branch' or 'branch~N'")
        for attempt in range(2):
            found = self._search(spec, refresh=bool(attempt))
            if found is not None:
                return found
        raise not_found(f"no version matches UUID {spec!r}")

    def _search(self, spec: str, *, refresh: bool) -> Located | None:
        """Resolve against the cached DAGs (no backend reads), then re-check the one repo that
        matched against its current metadata (one read); ``refresh`` re-reads every repo."""
        roots = self.roots(refresh=refresh)
        if spec.startswith(":") and len(roots) != 1:
            raise bad(f"{spec!r}: a bare ':branch' needs a server with exactly one repo "
                      f"(this one has {len(roots)}); give 'uuidprefix:branch'")
        hits: list[Located] = []
        for root in roots:
            repo = None if refresh else self._cached(root)
            if repo is None:
                try:
                    repo = self.repo(root)
                except HTTPError:
                    continue
            node = _resolve(repo, spec)
            if node is not None:
                hits.append(Located(repo, node))
        if len(hits) > 1:
            raise bad(f"UUID {spec!r} matches versions in {len(hits)} repos; give more characters")
        if not hits:
            return None
        hit = hits[0]
        if refresh:
            return hit
        current = self.repo(hit.repo.uuid)  # one read: is the cached DAG still current?
        if current is hit.repo:
            return hit
        node = _resolve(current, spec)
        return Located(current, node) if node is not None else None

    def _cached(self, root: str) -> Repo | None:
        with self._lock:
            hit = self._repos.get(root)
        return hit[1] if hit is not None else None

    def fresh(self, loc: Located) -> Repo:
        """A new, private repo handle whose head is ``loc``'s version (for mutations)."""
        from diced.repo.repo import Repo

        return Repo(self.store, loc.repo.uuid, loc.node.uuid)
