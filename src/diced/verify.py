"""Checking a whole store: checksums, decodability, label indexes (``Store.verify``).

:func:`verify_store` walks every stored value of a store, a repo, or the history of one
version, and reports:

* ``checksum``: a value whose CRC32C does not match (any key: chunks, index entries,
  keyvalue values, metadata);
* ``undecodable``: a chunk, label-index entry, mapping or member list whose checksum is
  fine but whose bytes do not decode (written corrupt, or by a buggy writer);
* ``missing-data``: a version manifest naming a value that is not there (an interrupted
  write on a non-atomic backend);
* ``label-index``: a label index that disagrees with the label blocks at a version;
* ``metadata``: a repo document that cannot be read.

With ``repair=True``, problems at **open** versions are fixed: a corrupt or undecodable
value written there is removed (the version then shows its parent's value, as if it had
never written it), and the label indexes of open versions are rebuilt from their blocks.
Locked versions are never changed: their problems are reported with ``repaired=False``,
to be fixed by branching from a good version.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from diced.backends.checksum import TRAILER, frame, verify_value
from diced.errors import CorruptDataError, DicedError
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.repo.repo import Repo
    from diced.store import Store

log = logging.getLogger(__name__)

__all__ = ["Problem", "VerifyReport", "verify_store"]

_BATCH = 512


@dataclass
class Problem:
    """One thing :func:`verify_store` found wrong."""

    kind: str
    message: str
    repo: str | None = None
    instance: str | None = None
    version: str | None = None
    key: Any = None
    store_key: str | None = None
    locked: bool | None = None
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The problem as a JSON-ready dict (chunk coordinates as a list)."""
        out = asdict(self)
        if isinstance(out["key"], tuple):
            out["key"] = list(out["key"])
        return out

    def __str__(self) -> str:
        where = ", ".join(x for x in (
            self.repo and f"repo {self.repo!r}", self.instance and f"{self.instance!r}",
            self.version and f"version {self.version[:12]}",
            self.key is not None and f"{self.key}") if x)
        state = " [repaired]" if self.repaired else (
            " [locked: not repaired]" if self.locked else "")
        return f"{self.kind}: {where + ': ' if where else ''}{self.message}{state}"


@dataclass
class VerifyReport:
    """What :func:`verify_store` checked and found."""

    location: str
    repair: bool = False
    values: int = 0
    chunks: int = 0
    label_versions: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem is left (none found, or every one repaired)."""
        return all(p.repaired for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (what ``diced verify --json`` prints)."""
        return {"location": self.location, "ok": self.ok, "repair": self.repair,
                "values": self.values, "chunks": self.chunks,
                "label_versions": self.label_versions,
                "problems": [p.to_dict() for p in self.problems]}

    def summary(self) -> str:
        """A few lines for people: counts, then each problem."""
        left = sum(not p.repaired for p in self.problems)
        fixed = len(self.problems) - left
        head = (f"{self.location}: {self.values} values, {self.chunks} chunks decoded, "
                f"label indexes checked at {self.label_versions} versions: ")
        if not self.problems:
            return head + "OK"
        return head + f"{len(self.problems)} problems ({fixed} repaired, {left} left)"


@dataclass
class _Space:
    """What a key space belongs to."""

    repo: Repo
    instance: str
    role: str  # "data", "scale N", "index", "mapping", "members"
    handle: Any  # the instance where it was created (codec, chunks, dtype)


def verify_store(store: Store, repo: str | None = None, version: str | None = None,
                 repair: bool = False) -> VerifyReport:
    """Check (and with ``repair=True`` fix, at open versions) a store; see the module doc.

    Parameters
    ----------
    repo:
        Only this repo (name or UUID prefix); default every repo and every other key.
    version:
        Only the history of this version (UUID prefix, branch, tag); needs ``repo``.
    repair:
        Remove corrupt values written at open versions and rebuild their label indexes.
    """
    from diced.errors import InvalidArgumentError
    from diced.repo.repo import _Ref

    if version is not None and repo is None:
        raise InvalidArgumentError("verify: give the repo of the version too")
    report = VerifyReport(store.location, repair)
    repos: list[Repo] = []
    if repo is not None:
        repos.append(store.open_repo(repo))
    else:
        for root in store._repo_uuids():
            try:
                from diced.repo.repo import Repo

                repos.append(Repo(store, root))
            except DicedError as exc:
                report.problems.append(Problem("metadata", str(exc), repo=root,
                                               store_key=K.repo_key(root)))
    spaces: dict[int, _Space] = {}
    scopes: dict[int, frozenset[int] | None] = {}
    for r in repos:
        scope = None if version is None else r._dag.ancestors(r._node(version).id)
        for name, rec in r._doc["instances"].items():
            try:
                handle = r._instance(name, _Ref(r, rec["created"]))
            except DicedError as exc:
                report.problems.append(Problem("metadata", str(exc), repo=r.alias, instance=name))
                continue
            for role, sid in _roles(rec):
                spaces[sid] = _Space(r, name, role, handle)
                scopes[sid] = scope
    # 1. every value: checksum, and decodability of what has a format
    groups: list[list[str]]  # prefixes listed together (a space's values and manifests)
    if repo is None:
        groups = [[""]]
    else:
        r = repos[0]
        groups = [[K.repo_key(r.uuid)], [f"lock/{r.uuid}/"]]
        groups += [[K.data_prefix(sid), K.index_prefix(sid)] for sid in spaces]
        groups += [[f"meta/label/{rec['id']:08x}/"] for rec in r._doc["instances"].values()]
    raw = store.raw_backend
    for group in groups:
        keys = [k for prefix in group for k in raw.list_keys(prefix)]
        if repo is not None and version is not None:
            keys = [k for k in keys if _in_scope(k, spaces, scopes)]
        _check_values(store, keys, spaces, report)
        _check_manifests(store, keys, spaces, report)
    # 2. label indexes against blocks
    index_problems: list[tuple[Problem, Repo, str, int]] = []
    for r in repos:
        for name, rec in sorted(r._doc["instances"].items()):
            if rec["type"] != "labels" or name not in {s.instance for s in spaces.values()
                                                       if s.repo is r}:
                continue
            for vid in _label_versions(r, rec, version):
                for p in _check_label_index(r, name, vid, report):
                    index_problems.append((p, r, name, vid))
    if repair:
        _repair(store, spaces, report, index_problems)
    return report


def _roles(rec: dict[str, Any]) -> list[tuple[str, int]]:
    cfg = rec.get("config", {})
    out = [("data", rec["id"])]
    out += [(f"scale {i}", sid) for i, sid in enumerate(cfg.get("subinstances", []), 1)]
    out += list(cfg.get("spaces", {}).items())
    return out


def _space_of(key: str) -> int | None:
    if key.startswith(("d/", "w/")) and len(key) > 11:
        try:
            return int(key[2:10], 16)
        except ValueError:
            return None
    return None


def _vid_of(key: str) -> int | None:
    try:
        if key.startswith("d/"):
            return K.parse_data_key(key)[1]
        if key.startswith("w/"):
            return K.parse_index_key(key)[0]
    except ValueError:
        return None
    return None


def _in_scope(key: str, spaces: dict[int, _Space], scopes: dict[int, Any]) -> bool:
    sid = _space_of(key)
    if sid is None or scopes.get(sid) is None:
        return True
    return _vid_of(key) in scopes[sid]


def _where(key: str, spaces: dict[int, _Space]) -> dict[str, Any]:
    """Problem fields naming the repo, instance, version and chunk/key of a backend key."""
    sid = _space_of(key)
    if sid is None or sid not in spaces:
        if key.startswith("meta/repo/"):
            return {"store_key": key}
        return {"store_key": key}
    sp = spaces[sid]
    vid = _vid_of(key)
    ckey = K.parse_data_key(key)[0] if key.startswith("d/") else K.parse_index_key(key)[1]
    node = sp.repo._dag.nodes.get(vid) if vid is not None else None
    name = sp.instance if sp.role == "data" else f"{sp.instance} ({sp.role})"
    space = _space_handle(sp, sid)
    return {"repo": sp.repo.alias, "instance": name,
            "version": node.uuid if node else (None if vid is None else f"id {vid}"),
            "key": space.describe(ckey)[1], "store_key": key,
            "locked": None if node is None else bool(node.locked)}


def _space_handle(sp: _Space, sid: int) -> Any:
    from diced.repo.resolve import VersionedSpace

    if sp.handle.typename == "keyvalue":
        kind = "key"
    elif sp.handle.typename not in ("array", "labels"):
        kind = None  # other datatypes: keys are described as stored
    else:
        kind = "chunk" if sp.role == "data" or sp.role.startswith("scale") else "label"
    return VersionedSpace(sp.repo.backend, sid, sp.instance, kind)


def _decoder(sp: _Space) -> Any:
    """``check(bytes)`` raising CorruptDataError for bytes that do not decode, or None."""
    from diced.datatypes.labels._common import decode_index

    h = sp.handle
    if h.typename not in ("array", "labels"):
        return None  # other datatypes: checksums only (their values have no codec here)
    if sp.role == "data" or sp.role.startswith("scale"):
        if h.typename == "keyvalue":
            return None
        return lambda b: h.codec.decode(b, h.chunks, h.dtype)
    if sp.role == "index":
        return decode_index

    def sized(b: bytes, unit: int = 8, exact: bool = sp.role == "mapping") -> None:
        if (len(b) != unit) if exact else (not b or len(b) % unit):
            raise CorruptDataError(f"{sp.role} value of {len(b)} bytes")

    return sized


def _check_values(store: Store, keys: Sequence[str], spaces: dict[int, _Space],
                  report: VerifyReport) -> None:
    raw = store.raw_backend
    decoders: dict[int, Any] = {}
    for i in range(0, len(keys), _BATCH):
        batch = keys[i:i + _BATCH]
        for key, value in zip(batch, raw.get_many(batch), strict=True):
            if value is None:
                continue  # deleted meanwhile
            report.values += 1
            if not verify_value(value):
                report.problems.append(Problem(
                    "checksum", f"stored {K.describe_store_key(key)} fails its CRC32C check",
                    **_where(key, spaces)))
                continue
            sid = _space_of(key)
            if sid not in spaces or not key.startswith("d/") or not key.endswith(K.DATA):
                continue
            if sid not in decoders:
                decoders[sid] = _decoder(spaces[sid])
            check = decoders[sid]
            if check is None:
                continue
            try:
                payload = value[:-TRAILER]
                deref = getattr(store.backend, "payload", None)  # deduplicating stores
                check(payload if deref is None else deref(key, payload))
                report.chunks += 1
            except (CorruptDataError, ValueError) as exc:
                report.problems.append(Problem("undecodable", str(exc), **_where(key, spaces)))


def _check_manifests(store: Store, keys: Sequence[str], spaces: dict[int, _Space],
                     report: VerifyReport) -> None:
    """Every ``w/`` entry must have its ``d/`` value (and the other way round)."""
    present = {k for k in keys if k.startswith("d/")}
    for key in keys:
        if not key.startswith("w/"):
            continue
        vid, ckey, mark = K.parse_index_key(key)
        sid = int(key[2:10], 16)
        data = K.data_key(sid, ckey, vid, mark)
        if data not in present and not store.raw_backend.get_many([data])[0]:
            w = _where(data, spaces)
            report.problems.append(Problem(
                "missing-data", f"the manifest of version {w.get('version')} names "
                f"{K.describe_store_key(data)}, which is missing", **w))


def _label_versions(repo: Repo, rec: dict[str, Any], version: str | None) -> list[int]:
    """Versions whose label index view can differ from their parent's: those that wrote
    blocks or index entries, and merges (or just ``version``)."""
    if version is not None:
        vid = repo._node(version).id
        return [vid] if rec["created"] in repo._dag.ancestors(vid) else []
    from diced.repo.resolve import VersionedSpace

    spaces = [rec["id"], rec["config"]["spaces"]["index"]]
    out = []
    for node in repo._dag.topological():
        if rec["created"] not in repo._dag.ancestors(node.id):
            continue
        if len(node.parents) > 1 or any(
                VersionedSpace(repo.backend, s).written_at(node.id) for s in spaces):
            out.append(node.id)
    return out


def _expected_index(labels: Any, ctx: Any) -> tuple[dict[int, dict], list[str]]:
    """``{label: {block: count}}`` from the blocks visible at ``ctx``; unreadable blocks."""
    from diced.array.labelstats import block_label_counts

    space = labels._space
    expected: dict[int, dict] = defaultdict(dict)
    bad: list[str] = []
    ckeys = space.live_keys(ctx)
    for i in range(0, len(ckeys), 64):
        part = ckeys[i:i + 64]
        try:
            values = space.read_many(part, ctx)
        except CorruptDataError:
            values = []
            for c in part:  # one by one: find the unreadable ones
                try:
                    values.append(space.read_many([c], ctx)[0])
                except CorruptDataError:
                    values.append(None)
                    bad.append(c)
        for ckey, value in zip(part, values, strict=True):
            if value is None:
                continue
            try:
                labs, counts = block_label_counts(labels._decode(value))
            except CorruptDataError:
                bad.append(ckey)
                continue
            bc = K.parse_chunk_ckey(ckey)
            for lab, n in zip(labs.tolist(), counts.tolist(), strict=True):
                if lab:
                    expected[lab][bc] = n
    return expected, bad


def _actual_index(labels: Any, ctx: Any) -> tuple[dict[int, dict], list[str]]:
    from diced.datatypes.labels._common import decode_index

    space = labels._index
    actual: dict[int, dict] = {}
    bad: list[str] = []
    ckeys = space.live_keys(ctx)
    for ckey in ckeys:
        try:
            actual[int(ckey, 16)] = decode_index(space.read_many([ckey], ctx)[0])
        except CorruptDataError:
            bad.append(ckey)
    return actual, bad


def _check_label_index(repo: Repo, name: str, vid: int, report: VerifyReport
                       ) -> list[Problem]:
    from diced.repo.repo import _Ref

    labels = repo._instance(name, _Ref(repo, vid))
    ctx = repo._ctx(vid)
    expected, bad_blocks = _expected_index(labels, ctx)
    actual, bad_index = _actual_index(labels, ctx)
    report.label_versions += 1
    node = repo._dag.nodes[vid]
    where = {"repo": repo.alias, "instance": f"{name} (label index)", "version": node.uuid,
             "locked": bool(node.locked)}
    unreadable = {int(c, 16) for c in bad_index}  # reported as checksum/undecodable
    found = []
    for lab in sorted(set(expected) | set(actual)):
        want, have = expected.get(lab, {}), actual.get(lab, {})
        if lab in unreadable or want == have:
            continue
        found.append(Problem(
            "label-index", f"the index gives {sum(have.values())} voxels in {len(have)} blocks, "
            f"the blocks hold {sum(want.values())} in {len(want)}"
            + (f" ({len(bad_blocks)} unreadable blocks not counted)" if bad_blocks else ""),
            key=lab, **where))
    report.problems.extend(found)
    return found


def _repair(store: Store, spaces: dict[int, _Space], report: VerifyReport,
            index_problems: Sequence[tuple[Problem, Repo, str, int]]) -> None:
    """Fix what can be fixed at open versions (see the module docstring)."""
    raw = store.raw_backend
    rebuild: dict[tuple[str, str, int], tuple[Repo, list[Problem]]] = {}
    for p in report.problems:
        if p.kind == "label-index" or p.locked is not False or p.store_key is None:
            continue  # locked, unknown version, or metadata: never touched
        key = p.store_key
        sid = _space_of(key)
        if sid not in spaces:
            continue
        sp = spaces[sid]
        if key.startswith("d/"):
            ckey, vid, mark = K.parse_data_key(key)
            raw.delete_many([key, K.index_key(sid, vid, ckey, mark)])
            _forget(store, sid)
            p.repaired = True
            p.message += "; removed: the version now shows its parent's value"
            if sp.handle.typename == "labels":
                rebuild.setdefault((sp.repo.uuid, sp.instance, vid), (sp.repo, []))
        elif p.kind == "checksum" and key.startswith("w/"):
            raw.set(key, frame(b""))  # manifest entries are always empty
            _forget(store, sid)
            p.repaired = True
            p.message += "; rewritten"
    for p, repo, name, vid in index_problems:
        if p.locked is False:
            rebuild.setdefault((repo.uuid, name, vid), (repo, []))[1].append(p)
    for (_, name, vid), (repo, problems) in rebuild.items():
        _rebuild_index(repo, name, vid)
        for p in problems:
            p.repaired = True
            p.message += "; rebuilt from the blocks"


def _forget(store: Store, sid: int) -> None:
    from diced.repo.manifests import manifests as _manifests

    _manifests(store.backend).forget(sid)


def _rebuild_index(repo: Repo, name: str, vid: int) -> None:
    """Rewrite the label index (and max label) of open version ``vid`` from its blocks."""
    from diced.datatypes.labels._common import encode_index, lkey
    from diced.repo.repo import _Ref

    labels = repo._instance(name, _Ref(repo, vid))
    ctx = repo._ctx(vid)
    expected, _ = _expected_index(labels, ctx)
    actual, bad = _actual_index(labels, ctx)
    changes: dict[str, bytes | None] = {}
    for lab in set(expected) | set(actual) | {int(c, 16) for c in bad}:
        want = expected.get(lab, {})
        if want != actual.get(lab) or lkey(lab) in bad:
            changes[lkey(lab)] = encode_index(want)
    if changes:
        labels._index.write(ctx, changes)
    log.info("rebuilt %d label index entries of %r at version %s", len(changes), name,
             ctx.uuid)
