"""Writes to versioned key spaces: copy-on-write at one version, all or nothing where the
backend can, and the rule that nothing lands in a locked version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diced.backends.base import Backend
from diced.errors import CorruptDataError, LockedNodeError
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.repo.resolve import Resolved, VersionCtx, VersionedSpace

__all__ = ["ExtraFn", "ModifyFn", "Part", "lock_version", "modify_parts"]

#: ``modify(ckey, base) -> new``: base/new are payloads, ``None`` meaning "no value" (fill).
ModifyFn = Callable[[str, bytes | None], bytes | None]


def lock_version(backend: Backend, repo_uuid: str, vid: int) -> None:
    """Mark version ``vid`` locked: once this returns, no write can land at it."""
    backend.set(K.lock_key(repo_uuid, vid), b"1")


@dataclass
class Part:
    """One instance's share of an atomic multi-instance modification."""

    space: VersionedSpace
    ckeys: list[str]
    fn: ModifyFn
    parent_values: Sequence[Resolved | None] | None = None


#: ``extra_fn(current) -> changes`` for plain (unversioned) keys written in the same transaction
ExtraFn = Callable[[dict[str, bytes | None]], Mapping[str, bytes | None]]


def modify_parts(ctx: VersionCtx, parts: Sequence[Part], extra_keys: Sequence[str] = (),
                 extra_fn: ExtraFn | None = None) -> None:
    """Apply several :meth:`VersionedSpace.modify` calls (and plain-key changes) in one
    backend transaction: all or nothing on atomic backends (LMDB, memory).

    Each ``fn`` sees the value inside the transaction and may raise to abort everything.
    """
    if ctx.locked:
        raise LockedNodeError(f"version {ctx.uuid or ctx.vid} is locked; branch from it to write")
    parts = [p for p in parts if p.ckeys]
    if not parts:
        return
    backend = parts[0].space.backend
    vid = ctx.vid
    lock = K.lock_key(ctx.repo, vid)
    plans = []
    read = [lock, *extra_keys]
    for part in parts:
        pv = part.parent_values
        if pv is None:
            pv = part.space.resolve_many(part.ckeys, ctx, strict=True)
        inst = part.space.inst
        dkeys = [K.data_key(inst, c, vid, K.DATA) for c in part.ckeys]
        tkeys = [K.data_key(inst, c, vid, K.TOMB) for c in part.ckeys]
        read += dkeys + tkeys
        plans.append((part, pv, dkeys, tkeys))

    def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
        if cur[lock] is not None:
            raise LockedNodeError(f"version {ctx.uuid or vid} was locked; nothing written")
        changes: dict[str, bytes | None] = {}
        for part, pv, dkeys, tkeys in plans:
            inst = part.space.inst
            for c, dk, tk, p in zip(part.ckeys, dkeys, tkeys, pv, strict=True):
                if cur[dk] is not None:
                    base = cur[dk]
                elif cur[tk] is not None:
                    base = None
                else:
                    base = None if p is None else p[1]
                try:
                    new = part.fn(c, base)
                except CorruptDataError as exc:  # the stored base does not decode
                    raise part.space.locate(exc, ctx, c) from exc
                ik_d, ik_t = K.index_key(inst, vid, c, K.DATA), K.index_key(inst, vid, c, K.TOMB)
                if new is not None:
                    changes.update({dk: bytes(new), ik_d: b"", tk: None, ik_t: None})
                elif p is not None and p[1] is not None:
                    changes.update({tk: b"", ik_t: b"", dk: None, ik_d: None})
                else:
                    changes.update({dk: None, ik_d: None, tk: None, ik_t: None})
        if extra_fn is not None:
            changes.update(extra_fn({k: cur[k] for k in extra_keys}))
        return changes

    try:
        if backend.capabilities.atomic_update:
            backend.update(read, body)
        else:
            _apply_ordered(backend, body(dict(zip(read, backend.get_many(read), strict=True))))
    except CorruptDataError as exc:
        for part in parts:
            if (exc.store_key or "").startswith((K.data_prefix(part.space.inst),
                                                 K.index_prefix(part.space.inst))):
                raise part.space.locate(exc, ctx) from exc
        raise


def _apply_ordered(backend: Backend, changes: Mapping[str, bytes | None]) -> None:
    # Non-atomic stores: data before its index entry, index removal before data removal, so
    # an interrupted write is never visible as an index entry without data.
    def pick(prefix: str, put: bool) -> dict[str, bytes | None]:
        return {k: v for k, v in changes.items()
                if k.startswith(prefix) and (v is not None) == put}

    data_put, idx_put = pick("d/", True), pick("w/", True)
    idx_del, data_del = pick("w/", False), pick("d/", False)
    other = {k: v for k, v in changes.items() if not k.startswith(("d/", "w/"))}
    if data_put:
        backend.set_many(data_put)  # type: ignore[arg-type]
    if idx_put:
        backend.set_many(idx_put)  # type: ignore[arg-type]
    if idx_del:
        backend.delete_many(list(idx_del))
    if data_del:
        backend.delete_many(list(data_del))
    if other:
        backend.apply(other)
