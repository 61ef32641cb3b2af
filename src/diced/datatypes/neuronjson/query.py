"""DVID's neuronjson document rules as pure functions: the POST update with per-field
``<field>_user`` / ``<field>_time`` stamps (``updateJSON``), the ``show`` / ``fields`` output
selection, and the query language (``query.go``). No I/O.

Query semantics (DVID ``datatype/neuronjson/query.go``):

* a query is an object ``{field: value, ...}``: every field must match (AND); a list of
  objects matches when any object does (OR);
* a field that is absent or ``null`` in a document never matches (except ``exists/0``);
* a number matches a number field equal to it, or a list-of-integers field containing it;
  a string matches a string field equal to it or a list-of-strings field containing it;
* a list of values matches when any of its values does (OR);
* ``"re/<regex>"`` matches string fields (or elements of list-of-string fields) where the
  regex is found (Go's ``regexp.Match``: a search, so anchor with ``^`` yourself); lists may
  mix strings and regexes;
* ``"exists/1"``: the field is present and not null; ``"exists/0"``: absent or null;
* other query values (booleans, null, objects) never match, as in DVID.

Where diced differs: a non-integral number query (``1.5``) matches fields equal to it (DVID
treats a float scalar query as an illegal type and matches nothing).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from diced.errors import InvalidArgumentError

__all__ = ["SHOW", "compile_query", "matches", "select", "update_document"]

#: accepted ``show`` values
SHOW = (None, "user", "time", "all")


def is_meta(field: str) -> bool:
    """Whether a field is a stamp (``*_user`` or ``*_time``)."""
    return field.endswith(("_user", "_time"))


def now_rfc3339() -> str:
    """The current UTC time as DVID stamps fields (Go's ``time.RFC3339``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def update_document(orig: Mapping[str, Any] | None, new: Mapping[str, Any], user: str,
                    conditional: Iterable[str] = (), replace: bool = False,
                    now: str | None = None) -> dict[str, Any]:
    """The stored document after POSTing ``new`` over ``orig`` (DVID's ``updateJSON``).

    * ``null`` deletes a field and stamps ``<field>_user`` / ``<field>_time`` (unless those
      are given, ``null`` stamps being dropped);
    * without ``replace``, fields not posted are kept; ``conditional`` fields already
      present keep their old value;
    * with ``replace``, fields not posted are dropped, and posted ones keep their old stamps
      when unchanged;
    * every field set or changed gets ``<field>_user = user`` (when ``user``) and
      ``<field>_time = now``, except ``bodyid`` and ``user``, and except stamps given
      explicitly.
    """
    now = now or now_rfc3339()
    new = dict(new)
    orig_d = None if orig is None else dict(orig)
    field_user: dict[str, str] = {}
    field_time: dict[str, str] = {}
    for field, value in new.items():
        if field.endswith("_user"):
            field_user[field[:-5]] = value if isinstance(value, str) else ""
        elif field.endswith("_time"):
            field_time[field[:-5]] = value if isinstance(value, str) else ""
    deleted: set[str] = set()
    for field, value in list(new.items()):
        if value is not None:
            continue
        deleted.add(field)
        del new[field]
        if not is_meta(field):
            set_user = field_user.get(field, user)
            set_time = field_time.get(field, now)
            if set_user:
                new[field + "_user"] = set_user
            if set_time:
                new[field + "_time"] = set_time
        if orig_d is not None:
            orig_d.pop(field, None)
    newly_set: set[str] = set()
    new_fields: set[str] = set()
    if orig_d is None:
        for field in new:
            newly_set.add(field)
            if field.endswith("_user"):
                newly_set.add(field[:-5])
    else:
        for field, value in new.items():
            if field not in orig_d or is_meta(field) or orig_d[field] != value:
                newly_set.add(field)
            if not is_meta(field):
                new_fields.add(field)
        if not replace:
            protected = set(conditional)
            for field, old in orig_d.items():
                if field in deleted:
                    continue
                if field not in new:
                    new[field] = old
                    continue
                if field in protected:
                    new[field] = old
                    newly_set.discard(field)
    for field in sorted(newly_set):
        if field in ("bodyid", "user") or field in deleted or is_meta(field):
            continue
        if field + "_user" not in newly_set and user:
            new[field + "_user"] = user
        if field + "_time" not in newly_set:
            new[field + "_time"] = now
    if replace and orig_d is not None:
        for field in new_fields:
            if field == "bodyid" or field in deleted:
                continue
            if field + "_user" not in new:
                new[field + "_user"] = orig_d.get(field + "_user", user)
            if field + "_time" not in new:
                new[field + "_time"] = orig_d.get(field + "_time", now)
    return new


def check_show(show: str | None) -> tuple[bool, bool]:
    """``(show user stamps, show time stamps)`` for DVID's ``show`` option."""
    if show not in SHOW:
        raise InvalidArgumentError(f"show must be one of None, 'user', 'time', 'all'; got {show!r}")
    return show in ("user", "all"), show in ("time", "all")


def select(doc: Mapping[str, Any], show: str | None = None,
           fields: Sequence[str] | None = None) -> dict[str, Any]:
    """The document as returned (DVID's ``selectFields``): ``bodyid`` always; with
    ``fields``, only those fields (and their stamps when shown); stamps only as ``show``
    asks."""
    show_user, show_time = check_show(show)
    out: dict[str, Any] = {}
    if "bodyid" in doc:
        out["bodyid"] = doc["bodyid"]
    if fields:
        for key in fields:
            if key == "bodyid":
                continue
            if key in doc:
                out[key] = doc[key]
            if show_user and key + "_user" in doc:
                out[key + "_user"] = doc[key + "_user"]
            if show_time and key + "_time" in doc:
                out[key + "_time"] = doc[key + "_time"]
        return out
    for key, v in doc.items():
        if (not show_user and key.endswith("_user")) or (not show_time and key.endswith("_time")):
            continue
        out[key] = v
    return out


# --- queries -------------------------------------------------------------------------------


class _Exists:
    __slots__ = ("want",)

    def __init__(self, want: bool) -> None:
        self.want = want


_NEVER = object()  # a query value that matches nothing (DVID's illegal types)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _compile_value(v: Any) -> Any:
    if _is_num(v):
        return ("nums", [v])
    if isinstance(v, str):
        if v.startswith("exists/") and len(v) == 8:
            return _Exists(v[7] != "0")
        if v.startswith("re/") and len(v) > 3:
            try:
                return ("strs", [re.compile(v[3:])])
            except re.error as exc:
                raise InvalidArgumentError(f"bad regex {v!r} in query: {exc}") from None
        return ("strs", [v])
    if isinstance(v, list):
        if all(_is_num(x) for x in v):
            return ("nums", list(v))
        if all(isinstance(x, str) for x in v):
            out: list[Any] = []
            for x in v:
                if x.startswith("re/") and len(x) > 3:
                    try:
                        out.append(re.compile(x[3:]))
                    except re.error as exc:
                        raise InvalidArgumentError(f"bad regex {x!r} in query: {exc}") from None
                else:
                    out.append(x)
            return ("strs", out)
    return _NEVER


def compile_query(query: Any) -> list[dict[str, Any]]:
    """A query object, or a list of them (ORed), in compiled form.

    Raises
    ------
    InvalidArgumentError
        Not an object or a non-empty list of objects, or a bad regex.
    """
    if isinstance(query, Mapping):
        query = [query]
    if not isinstance(query, list) or not query:
        raise InvalidArgumentError("a neuronjson query is an object or a non-empty list of "
                                   f"objects, got {query!r}")
    out = []
    for q in query:
        if not isinstance(q, Mapping) or not all(isinstance(k, str) for k in q):
            raise InvalidArgumentError(f"each neuronjson query is an object, got {q!r}")
        out.append({k: _compile_value(v) for k, v in q.items()})
    return out


def _field_values(v: Any) -> tuple[list[Any], list[str]]:
    """(numbers, strings) a document field offers to a query (DVID's ``checkField``)."""
    if _is_num(v):
        return [v], []
    if isinstance(v, str):
        return [], [v]
    if isinstance(v, list) and v:
        if all(_is_int(x) for x in v):
            return list(v), []
        if all(isinstance(x, str) for x in v):
            return [], list(v)
    return [], []


def _value_match(q: Any, field: Any) -> bool:
    if q is _NEVER:
        return False
    nums, strs = _field_values(field)
    kind, vals = q
    if kind == "nums":
        return any(x == n for x in vals for n in nums)
    for x in vals:
        if isinstance(x, str):
            if x in strs:
                return True
        elif any(x.search(s) for s in strs):
            return True
    return False


def matches(compiled: list[dict[str, Any]], doc: Mapping[str, Any]) -> bool:
    """Whether a document matches a compiled query (:func:`compile_query`)."""
    for q in compiled:
        ok = True
        for key, want in q.items():
            value = doc.get(key)
            if isinstance(want, _Exists):
                ok = want.want == (value is not None)
            else:
                ok = value is not None and _value_match(want, value)
            if not ok:
                break
        if ok:
            return True
    return False
