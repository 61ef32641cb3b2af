"""NeuronJSON: one JSON document per body id (DVID's ``neuronjson``), versioned.

Storage: one key per body id (16 hex digits, so keys sort by id), holding the document as
stored, stamps included (``<field>_user``, ``<field>_time``, as DVID keeps them). Merges
compare and conflict per body; diffs list body ids. Queries scan the documents of the
version (DVID's backing-store query path).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from diced.datatypes.neuronjson import query as Q
from diced.errors import InvalidArgumentError, LockedNodeError, NotFoundError
from diced.repo.resolve import Part, modify_parts

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version
    from diced.repo.resolve import VersionCtx

__all__ = ["NeuronJSON", "body_ckey", "parse_body_ckey"]

_BATCH = 4096


def body_ckey(bodyid: int) -> str:
    """Key of a body's document."""
    return f"{bodyid:016x}"


def parse_body_ckey(ckey: str) -> int:
    """Body id of a document key."""
    return int(ckey, 16)


def _bodyid(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        b = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(f"a body id is a non-negative integer, got {value!r}") from None
    if not 0 <= b < 1 << 64:
        raise InvalidArgumentError(f"a body id is a uint64, got {b}")
    return b


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False, allow_nan=False).encode()


class NeuronJSON:
    """Body annotations of one instance at one version (the repo head, or pinned).

    ``nj.post(1000, {"class": "9A"}, user="alice")`` updates fields (stamping
    ``class_user`` / ``class_time``); ``nj.get(1000, show="all")``;
    ``nj.query({"class": ["9A", "9B"], "status": "exists/1"})``. Obtain one with
    ``repo.create_instance(name, "neuronjson")`` or ``repo[name]``.
    """

    typename = "neuronjson"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name = context.repo, context.name
        self._ref = context
        self._space = context.space()

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def at(self, version: Any) -> NeuronJSON:
        """The same instance pinned to another version."""
        return self._ref.open_at(version)

    def __repr__(self) -> str:
        return f"<NeuronJSON {self.name!r} version={self._ref.ctx().uuid[:8]}>"

    def _writable(self) -> VersionCtx:
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        return ctx

    # --- reads ---------------------------------------------------------------------------------

    def _raw(self, bodyids: Sequence[int], ctx: VersionCtx) -> list[dict[str, Any] | None]:
        vals = self._space.read_many([body_ckey(b) for b in bodyids], ctx)
        return [None if v is None else json.loads(v) for v in vals]

    def get(self, bodyid: int, *, show: str | None = None,
            fields: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The document of ``bodyid`` (``None`` when absent), as DVID's GET ``key/<id>``:
        stamps only as ``show`` (``"user"``, ``"time"``, ``"all"``) asks, only ``fields`` if
        given (``bodyid`` always)."""
        Q.check_show(show)
        doc = self._raw([_bodyid(bodyid)], self._ref.ctx())[0]
        return None if doc is None else Q.select(doc, show, fields)

    def __getitem__(self, bodyid: int) -> dict[str, Any]:
        doc = self.get(bodyid)
        if doc is None:
            raise NotFoundError(f"no document for body {bodyid} in {self.name!r}")
        return doc

    def get_many(self, bodyids: Iterable[int], *, show: str | None = None,
                 fields: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
        """Documents of ``bodyids`` that exist (DVID's ``keyvalues?json=true``)."""
        Q.check_show(show)
        ids = [_bodyid(b) for b in bodyids]
        docs = self._raw(ids, self._ref.ctx())
        return {b: Q.select(d, show, fields) for b, d in zip(ids, docs, strict=True)
                if d is not None}

    def __contains__(self, bodyid: object) -> bool:
        try:
            return self._raw([_bodyid(bodyid)], self._ref.ctx())[0] is not None
        except InvalidArgumentError:
            return False

    def keys(self) -> list[int]:
        """Body ids with a document, ascending (DVID's ``keys``, as ints)."""
        return [parse_body_ckey(k) for k in self._space.live_keys(self._ref.ctx())]

    def __len__(self) -> int:
        return len(self._space.live_keys(self._ref.ctx()))

    def _docs(self, ctx: VersionCtx) -> Iterable[dict[str, Any]]:
        keys = self._space.live_keys(ctx)
        for i in range(0, len(keys), _BATCH):
            for v in self._space.read_many(keys[i:i + _BATCH], ctx):
                if v is not None:
                    yield json.loads(v)

    def all(self, *, show: str | None = None, fields: Sequence[str] | None = None
            ) -> list[dict[str, Any]]:
        """Every document, by ascending body id (DVID's ``all``)."""
        Q.check_show(show)
        return [Q.select(d, show, fields) for d in self._docs(self._ref.ctx())]

    def query(self, query: Any, *, show: str | None = None,
              fields: Sequence[str] | None = None, onlyid: bool = False) -> list[Any]:
        """Documents matching a query, by ascending body id (DVID's ``query``; see
        :mod:`diced.datatypes.neuronjson.query` for the rules: objects AND their fields, a
        list of objects ORs them, list values OR, ``re/`` regexes, ``exists/0|1``).

        Parameters
        ----------
        query : dict or list of dict
        show : {None, "user", "time", "all"}
        fields : sequence of str, optional
        onlyid : bool, default False
            Return body ids instead of documents.
        """
        Q.check_show(show)
        compiled = Q.compile_query(query)
        out: list[Any] = []
        for doc in self._docs(self._ref.ctx()):
            if Q.matches(compiled, doc):
                out.append(doc.get("bodyid") if onlyid else Q.select(doc, show, fields))
        return out

    def fields(self, *, counts: bool = False) -> list[str] | dict[str, int]:
        """Field names used by the documents, stamps included (DVID's ``fields``), sorted;
        with ``counts``, ``{field: number of documents having it}``."""
        c: dict[str, int] = {}
        for doc in self._docs(self._ref.ctx()):
            for k in doc:
                c[k] = c.get(k, 0) + 1
        return dict(sorted(c.items())) if counts else sorted(c)

    def fieldtimes(self) -> dict[str, str]:
        """The newest ``<field>_time`` stamp of each field (DVID's ``fieldtimes``)."""
        out: dict[str, str] = {}
        for doc in self._docs(self._ref.ctx()):
            for k, v in doc.items():
                if k.endswith("_time") and isinstance(v, str):
                    f = k[:-5]
                    if v > out.get(f, ""):
                        out[f] = v
        return dict(sorted(out.items()))

    # --- writes --------------------------------------------------------------------------------

    def post(self, bodyid: int, doc: Mapping[str, Any], *, user: str,
             replace: bool = False, conditional: Iterable[str] = ()) -> dict[str, Any]:
        """Update the document of ``bodyid`` with ``doc``'s fields (DVID's POST
        ``key/<id>?u=user``): see :func:`diced.datatypes.neuronjson.query.update_document`
        (``null`` deletes a field; ``replace`` drops fields not posted; ``conditional``
        fields keep a value already set). Returns the stored document (stamps included)."""
        return self.post_many({bodyid: doc}, user=user, replace=replace,
                              conditional=conditional)[_bodyid(bodyid)]

    def post_many(self, docs: Mapping[int, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
                  *, user: str, replace: bool = False, conditional: Iterable[str] = ()
                  ) -> dict[int, dict[str, Any]]:
        """:meth:`post` for many bodies in one transaction (DVID's POST ``keyvalues``):
        ``{bodyid: doc}``, or documents carrying their ``bodyid``. Everything is validated
        before anything is stored."""
        if not isinstance(user, str) or not user:
            raise InvalidArgumentError("neuronjson writes need a user (DVID's ?u=): "
                                       "pass user='name'")
        cond = [conditional] if isinstance(conditional, str) else list(conditional)
        if not all(isinstance(c, str) for c in cond):
            raise InvalidArgumentError(f"conditional is a list of field names, got {conditional!r}")
        if isinstance(docs, Mapping):
            items = [(_bodyid(b), d) for b, d in docs.items()]
        else:
            items = []
            for d in docs:
                if not isinstance(d, Mapping) or "bodyid" not in d:
                    raise InvalidArgumentError(
                        f"documents posted as a list must carry their 'bodyid', got {d!r}")
                items.append((_bodyid(d["bodyid"]), d))
        new: dict[int, dict[str, Any]] = {}
        for b, d in items:
            if not isinstance(d, Mapping) or not all(isinstance(k, str) for k in d):
                raise InvalidArgumentError(f"a neuronjson document is a JSON object, got {d!r}")
            if "bodyid_user" in d or "bodyid_time" in d:
                raise InvalidArgumentError("'bodyid_user' and 'bodyid_time' fields are not allowed")
            if "bodyid" in d and d["bodyid"] is not None and _bodyid(d["bodyid"]) != b:
                raise InvalidArgumentError(f"document bodyid {d['bodyid']!r} does not match key {b}")
            try:
                _dump(d)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"document of body {b} is not JSON: {exc}") from None
            new[b] = dict(d, bodyid=b)
        if not new:
            return {}
        ctx = self._writable()
        now = Q.now_rfc3339()
        result: dict[int, dict[str, Any]] = {}
        keys = [body_ckey(b) for b in new]

        def fn(ckey: str, base: bytes | None) -> bytes:
            b = parse_body_ckey(ckey)
            orig = None if base is None else json.loads(bytes(base))
            doc = Q.update_document(orig, new[b], user, cond, bool(replace), now)
            result[b] = doc
            return _dump(doc)

        modify_parts(ctx, [Part(self._space, keys, fn)])
        return result

    def delete(self, bodyid: int) -> None:
        """Delete the document of ``bodyid`` (DVID's DELETE ``key/<id>``)."""
        b = _bodyid(bodyid)
        ctx = self._writable()
        if self._raw([b], ctx)[0] is None:
            raise NotFoundError(f"no document for body {b} in {self.name!r}")
        self._space.delete(ctx, [body_ckey(b)])
