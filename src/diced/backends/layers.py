"""Opening the layers a store is made of: a chain over a read-only base, routed key spaces.

:func:`open_layers` turns the backend at a store's location into the backend the store uses:

1. if the location is the local layer of a chained store (it holds ``~c/chain``), the base
   named there is opened read-only (itself with its layers: a base may be a chain or have
   routed spaces) and the two are chained (:class:`~diced.backends.chain.ChainedBackend`);
2. if the store (the chain, when there is one) has a routes document (``meta/routes``), each
   target is opened and the spaces are routed (:class:`~diced.backends.routed.RoutedBackend`).

Both checks are one batched read at open time. Values are read raw here (below the
checksum layer), so the CRC32C trailer is checked and stripped by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from diced.backends import Backend, open_backend
from diced.backends.chain import CHAIN_KEY, ChainedBackend, ReadOnlyBackend
from diced.backends.checksum import unframe
from diced.backends.routed import PLACEMENT_KEY, ROUTES_KEY, RoutedBackend
from diced.errors import CorruptMetadataError, StoreLocationError, StoreNotFoundError

__all__ = ["LayerOptions", "drop_placed", "ensure_routes", "make_chain", "open_layers", "open_target",
           "options_for", "place_spaces", "read_routes", "same_location"]

#: storage options per layer URL (or per protocol, e.g. ``"s3"``) for chained bases and
#: routed targets; anything not listed gets fsspec's configured defaults
LayerOptions = Mapping[str, Mapping[str, Any]]

_MAX_DEPTH = 8


def _doc(raw: bytes | None, key: str, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(unframe(key, raw, where))
    except ValueError as exc:
        raise CorruptMetadataError(f"{key} in {where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptMetadataError(f"{key} in {where} is not a JSON object")
    return doc


def options_for(url: str, layer_options: LayerOptions | None) -> dict[str, Any]:
    """The storage options for a layer URL: ``layer_options[url]``, else its protocol's."""
    if not layer_options:
        return {}
    if url in layer_options:
        return dict(layer_options[url])
    protocol = url.split("://", 1)[0] if "://" in url else "lmdb"
    return dict(layer_options.get(protocol, {}))


def open_target(url: str, layer_options: LayerOptions | None = None, *,
                read_only: bool = False, create: bool | None = None) -> Backend:
    """Open the backend of a chained base or routed target at ``url``."""
    opts = options_for(url, layer_options)
    if "://" not in url or url.startswith("lmdb://"):
        path = os.path.expanduser(url.removeprefix("lmdb://"))
        if read_only and not os.path.isdir(path):
            raise StoreNotFoundError(f"no store at {url}")
        if read_only:
            opts.setdefault("readonly", True)
        elif create is not None:
            opts.setdefault("create", create)
    elif create is not None:
        opts.setdefault("create", create)
    try:
        return open_backend(url, **opts)
    except TypeError:  # a backend without the create= option
        opts.pop("create", None)
        return open_backend(url, **opts)


def read_routes(backend: Backend) -> dict[int, str]:
    """``{space id: target url}`` from a store's routes document (raw backend)."""
    doc = _doc(backend.get(ROUTES_KEY), ROUTES_KEY, backend.url) or {}
    return {int(s): str(u) for s, u in doc.get("spaces", {}).items()}


def open_layers(backend: Backend, layer_options: LayerOptions | None = None, *,
                _depth: int = 0, read: dict[str, bytes | None] | None = None) -> Backend:
    """``backend`` with the chain and routes its store records (see module docstring);
    ``read`` may hold both records, already read from ``backend``."""
    if isinstance(backend, (ChainedBackend, RoutedBackend)):
        return backend
    if _depth > _MAX_DEPTH:
        raise StoreLocationError(f"{backend.url}: chained stores nest more than {_MAX_DEPTH} "
                                 "deep (a chain whose base leads back to itself?)")
    if read is not None and CHAIN_KEY in read and ROUTES_KEY in read:
        chain_raw, routes_raw = read[CHAIN_KEY], read[ROUTES_KEY]
    else:
        chain_raw, routes_raw = backend.get_many([CHAIN_KEY, ROUTES_KEY])
    view: Backend = backend
    cfg = _doc(chain_raw, CHAIN_KEY, backend.url)
    base: Backend | None = None
    targets: dict[str, Backend] = {}
    try:
        if cfg is not None:
            base_url = cfg.get("base")
            if not isinstance(base_url, str) or not base_url:
                raise CorruptMetadataError(f"{CHAIN_KEY} in {backend.url} names no base store")
            base = open_target(base_url, layer_options, read_only=True)
            base = open_layers(base, layer_options, _depth=_depth + 1)
            if base.get("meta/format") is None:
                raise StoreNotFoundError(
                    f"the base of chained store {backend.url} is gone: no store at {base_url}")
            # the routes of the base are the base's own (its view already applies them)
            view = ChainedBackend(backend, ReadOnlyBackend(base), private=[ROUTES_KEY])
            routes_raw = backend.get(ROUTES_KEY)
        routes = {int(s): str(u) for s, u in
                  (_doc(routes_raw, ROUTES_KEY, backend.url) or {}).get("spaces", {}).items()}
        if routes:
            routed = RoutedBackend(view)
            for space, url in sorted(routes.items()):
                if url not in targets:
                    targets[url] = open_target(url, layer_options)
                routed.add_route(space, targets[url])
            view = routed
    except BaseException:
        for t in [*targets.values(), *([base] if base is not None else [])]:
            t.close()
        raise
    return view


def same_location(a: str, b: str) -> bool:
    """Whether two store locations name the same place (plain paths compared resolved)."""
    def norm(u: str) -> str:
        u = u.removeprefix("lmdb://")
        if "://" not in u:
            return os.path.realpath(os.path.expanduser(u))
        return u.rstrip("/")

    return norm(a) == norm(b)


def make_chain(base: str | os.PathLike[str], local: str | os.PathLike[str],
               layer_options: LayerOptions | None = None, **options: Any) -> str:
    """Make ``local`` the local layer of a chain over the store at ``base``; return the
    base URL as recorded (plain paths made absolute). Re-running it is harmless.

    Raises
    ------
    InvalidArgumentError
        ``base`` and ``local`` are the same location.
    StoreNotFoundError
        There is no store at ``base``.
    StoreLocationError
        ``local`` holds something else: a store, or a chain over another base.
    """
    from diced.backends.chain import chain_config
    from diced.backends.checksum import frame
    from diced.errors import InvalidArgumentError

    base_url, local_loc = os.fspath(base), os.fspath(local)
    if not base_url or not local_loc:
        raise InvalidArgumentError("a chained store needs a base and a local location")
    if "://" not in base_url:
        base_url = os.path.abspath(os.path.expanduser(base_url))
    if same_location(base_url, local_loc):
        raise InvalidArgumentError(
            f"the local layer of a chained store must be another location than its base "
            f"({base_url})")
    b = open_target(base_url, layer_options, read_only=True)
    try:
        b = open_layers(b, layer_options)  # the base may itself be a chain
        if b.get("meta/format") is None:
            raise StoreNotFoundError(f"no store at {base_url} to chain from")
    finally:
        b.close()
    opts = dict(options)
    opts.setdefault("create", True)
    lb = open_backend(local_loc, **opts)
    try:
        have = _doc(lb.get(CHAIN_KEY), CHAIN_KEY, lb.url)
        if have is not None:
            if not same_location(str(have.get("base", "")), base_url):
                raise StoreLocationError(
                    f"{lb.url} is already a chained store over {have.get('base')!r}, "
                    f"not {base_url!r}")
            return str(have["base"])
        if not lb.is_empty():
            raise StoreLocationError(
                f"{lb.url} is not empty; the local layer of a chained store must be a new "
                "or empty location")
        if not lb.compare_and_set(CHAIN_KEY, None, frame(chain_config(base_url))):
            return make_chain(base_url, local_loc, layer_options, **options)
    finally:
        lb.close()
    return base_url


def place_spaces(store: Any, spaces: list[int], url: str) -> str:
    """Route key spaces ``spaces`` of ``store`` to the backend at ``url`` (for an instance
    created with ``storage=url``): record the route, mark the target, and route this
    process's store handle at once. Returns the URL as recorded (paths made absolute).

    Raises
    ------
    InvalidArgumentError
        ``url`` is not a location string, or is the store's own location.
    StoreLocationError
        The target holds something else than key spaces placed there by diced.
    """
    from diced.backends.checksum import frame
    from diced.errors import InvalidArgumentError
    from diced.repo.meta import dump_doc, load_doc, update_docs

    if not isinstance(url, (str, os.PathLike)) or not os.fspath(url):
        raise InvalidArgumentError(f"storage= must be a store location (path or URL), got "
                                   f"{url!r}")
    url = os.fspath(url)
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    if same_location(url, store.location):
        raise InvalidArgumentError(f"storage={url!r} is the store's own location; leave "
                                   "storage= out to keep the instance there")
    raw = store.backend.raw
    routed = raw if isinstance(raw, RoutedBackend) else None
    target = None
    if routed is not None:
        target = next((b for b in routed._targets if same_location(b.url, url)), None)
    opened = target is None
    if target is None:
        target = open_target(url, store._layer_options, create=True)
    try:
        fmt, placement = target.get_many(["meta/format", PLACEMENT_KEY])
        if placement is None:
            if fmt is not None:
                raise StoreLocationError(
                    f"{url} holds a diced store of its own; instances are placed in a new or "
                    "empty location (or one holding other placed instances)")
            if not target.is_empty():
                raise StoreLocationError(
                    f"{url} is not empty; instances are placed in a new or empty location")
            target.set_many({"meta/format": frame(dump_doc({"format": 2})),
                             PLACEMENT_KEY: frame(dump_doc({"placed_from": store.location}))})

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            doc = load_doc(cur[ROUTES_KEY], ROUTES_KEY) or {"format": 1, "spaces": {}}
            for s in spaces:
                doc["spaces"][str(int(s))] = url
            return {ROUTES_KEY: dump_doc(doc)}

        update_docs(store.backend, [ROUTES_KEY], body)
    except BaseException:
        if opened:
            target.close()
        raise
    if routed is None:
        routed = RoutedBackend(raw)
        store.backend.raw = routed
    for s in spaces:
        routed.add_route(int(s), target)
    store.backend.capabilities = routed.capabilities
    return url


def _routed_below(backend: Backend) -> set[int]:
    """Spaces routed by the layers below the store's own routes (a chained base's)."""
    if isinstance(backend, RoutedBackend):
        return _routed_below(backend.main)
    if isinstance(backend, ChainedBackend):
        return _all_routed(backend.base.inner)
    return set()


def _all_routed(backend: Backend) -> set[int]:
    if isinstance(backend, ReadOnlyBackend):
        return _all_routed(backend.inner)
    if isinstance(backend, RoutedBackend):
        return set(backend.routes) | _all_routed(backend.main)
    if isinstance(backend, ChainedBackend):
        return _all_routed(backend.base.inner)
    return set()


def ensure_routes(store: Any, spaces: list[int]) -> None:
    """Make this process's store handle route ``spaces`` as the store records (an instance
    placed elsewhere by another process after this store was opened)."""
    raw = store.backend.raw
    have = raw.routes if isinstance(raw, RoutedBackend) else {}
    if all(s in have for s in spaces) or all(s in _routed_below(raw) for s in spaces):
        return
    from diced.repo.meta import load_doc

    doc = load_doc(store.backend.get(ROUTES_KEY), ROUTES_KEY) or {}
    urls = doc.get("spaces", {})
    missing = [s for s in spaces if s not in have]
    if any(str(s) not in urls for s in missing):
        raise CorruptMetadataError(
            f"key spaces {missing} are placed on another backend but {ROUTES_KEY} does not "
            "say where")
    routed = raw if isinstance(raw, RoutedBackend) else RoutedBackend(raw)
    for s in missing:
        url = urls[str(s)]
        target = next((b for b in routed._targets if same_location(b.url, url)), None)
        routed.add_route(s, target or open_target(url, store._layer_options))
    store.backend.raw = routed
    store.backend.capabilities = routed.capabilities


def drop_placed(store: Any, rec: Mapping[str, Any], drop: Any) -> None:
    """Delete a placed instance's data with ``drop()`` (on its target), then forget its
    routes, so the store no longer opens a target that holds nothing of it."""
    from diced.repo.meta import dump_doc, load_doc, update_docs
    from diced.repo.repo import instance_spaces

    spaces = instance_spaces(dict(rec))
    ensure_routes(store, spaces)  # route the deletes even if placed by another process
    drop()

    def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
        doc = load_doc(cur[ROUTES_KEY], ROUTES_KEY)
        if doc is None:
            return {}
        for s in spaces:
            doc.get("spaces", {}).pop(str(s), None)
        return {ROUTES_KEY: dump_doc(doc) if doc.get("spaces") else None}

    update_docs(store.backend, [ROUTES_KEY], body)
    raw = store.backend.raw
    if isinstance(raw, RoutedBackend):
        for s in spaces:
            raw.remove_route(s)
