"""The one place where the storage key layout is defined.

Layout (all ASCII, fixed-width lowercase hex so that string order is numeric order)::

    meta/format                              {"format": N} (the store format, see below)
    meta/migrate                             progress of an unfinished format migration
    meta/repo/<repo uuid>                    repo document (JSON): DAG, instances, alias, log
    meta/alias/<hex(alias)>                  repo uuid owning an alias (unique)
    meta/counter/<name>                      store-wide counters (instance ids, ...)
    meta/head/<repo uuid>                    UUID of the version the repo's head was last moved to
    lock/<repo uuid>/<version id>            present once the version is locked
    d/<inst>/<ckey>/<version id><m>          a value written at a version; m = "d" data, "t" tombstone
    w/<inst>/<version id>/<ckey>/<m>         per-version index of what the version wrote
    x/<inst>/<version id>/t                  compacted chunk index of a locked version (table)
    x/<inst>/<version id>/b/<bucket>         one bucket of compacted index entries

All versions of one logical key (``d/<inst>/<ckey>/``) sit next to each other in version
order, so an ordered store finds the nearest ancestor's write with one seek, and the
per-version index lets diff, merge and object stores work from what changed instead of
scanning everything.

Stores without ordered scans (object stores, ``file://``) also keep a compacted index per
locked version and key space (:mod:`diced.repo.manifests`), so that a read at any history
depth costs a constant number of requests: the table ``x/<inst>/<vid>/t`` names, for each
bucket of ckeys, the version whose bucket object ``x/<inst>/<holder>/b/<bucket>`` holds the
bucket's entries (ckey -> greatest writer id and mark) as seen from ``vid`` (small indexes
are stored inline in the table). Every ``x/`` object is immutable and written create-only;
a child references its parent's unchanged buckets. They are derived data: deleting all of
``x/<inst>/<vid>/`` for any set of versions is always safe (readers rebuild a missing table
from the nearest compacted ancestors and the ``w/`` manifests), but a bucket object may be
referenced by the tables of descendants, so whoever rewrites or deletes the data of a
locked version (squash, GC) must delete the ``x/`` objects of that version AND of all its
descendants (:func:`diced.repo.manifests.drop_compacted`). Deleting a leaf version may
delete its own ``x/<inst>/<vid>/`` only.

A chunk key (``ckey``) is the chunk coordinates as 8-hex-digit numbers joined by ``.``; a
keyvalue key is the hex of its UTF-8 bytes (hex preserves byte order and prefixes); a label
key (label index, mapping, members) is the label as 16 hex digits.

Store formats: 1 stored values as they are; 2 (current) ends every value with its CRC32C
(:mod:`diced.backends.checksum`). :mod:`diced.migrate` upgrades a format-1 store.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DATA",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "MIGRATE_KEY",
    "REPO_FORMAT",
    "TOMB",
    "alias_key",
    "chunk_ckey",
    "chunk_prefix",
    "compact_bucket_key",
    "compact_prefix",
    "compact_table_key",
    "counter_key",
    "data_key",
    "data_prefix",
    "describe_ckey",
    "describe_store_key",
    "head_key",
    "index_key",
    "index_prefix",
    "kv_ckey",
    "lock_key",
    "parse_chunk_ckey",
    "parse_data_key",
    "parse_index_key",
    "parse_kv_ckey",
    "repo_key",
]

FORMAT_KEY = "meta/format"
MIGRATE_KEY = "meta/migrate"
#: the store format: 2 = every value carries a CRC32C trailer
FORMAT_VERSION = 2
#: the format of a repo document (``meta/repo/<uuid>``), independent of the store format
REPO_FORMAT = 1
DATA = "d"
TOMB = "t"


def repo_key(repo_uuid: str) -> str:
    """Key of a repo's metadata document."""
    return f"meta/repo/{repo_uuid}"


def alias_key(alias: str) -> str:
    """Key mapping a repo alias to its root UUID."""
    return f"meta/alias/{alias.encode().hex()}"


def head_key(repo_uuid: str) -> str:
    """Where a repo remembers its head (as git's ``HEAD``): the UUID last checked out."""
    return f"meta/head/{repo_uuid}"


def counter_key(name: str) -> str:
    """Key of a store-wide counter."""
    return f"meta/counter/{name}"


def lock_key(repo_uuid: str, vid: int) -> str:
    """Key present once version ``vid`` of the repo is locked."""
    return f"lock/{repo_uuid}/{vid:08x}"


def data_prefix(inst: int) -> str:
    """Prefix of every stored value of key space ``inst``."""
    return f"d/{inst:08x}/"


def chunk_prefix(inst: int, ckey: str) -> str:
    """Prefix of every version of logical key ``ckey`` in space ``inst``."""
    return f"d/{inst:08x}/{ckey}/"


def data_key(inst: int, ckey: str, vid: int, mark: str = DATA) -> str:
    """Key of the value (``mark`` DATA) or tombstone (TOMB) of ``ckey`` written at ``vid``."""
    return f"d/{inst:08x}/{ckey}/{vid:08x}{mark}"


def parse_data_key(key: str) -> tuple[str, int, str]:
    """``(ckey, version id, mark)`` of a data key."""
    head, _, tail = key.rpartition("/")
    return head[11:], int(tail[:8], 16), tail[8:]


def index_prefix(inst: int, vid: int | None = None) -> str:
    """Prefix of the per-version index of space ``inst`` (of version ``vid`` if given)."""
    return f"w/{inst:08x}/" if vid is None else f"w/{inst:08x}/{vid:08x}/"


def index_key(inst: int, vid: int, ckey: str, mark: str = DATA) -> str:
    """Per-version index entry: ``vid`` wrote (DATA) or deleted (TOMB) ``ckey`` in space ``inst``."""
    return f"w/{inst:08x}/{vid:08x}/{ckey}/{mark}"


def parse_index_key(key: str) -> tuple[int, str, str]:
    """``(version id, ckey, mark)`` of an index key."""
    rest = key[11:]
    vid = int(rest[:8], 16)
    ckey, _, mark = rest[9:].rpartition("/")
    return vid, ckey, mark


def compact_prefix(inst: int, vid: int | None = None) -> str:
    """Prefix of the compacted indexes of space ``inst`` (of version ``vid`` if given)."""
    return f"x/{inst:08x}/" if vid is None else f"x/{inst:08x}/{vid:08x}/"


def compact_table_key(inst: int, vid: int) -> str:
    """Key of the compacted index table of locked version ``vid`` in space ``inst``."""
    return f"x/{inst:08x}/{vid:08x}/t"


def compact_bucket_key(inst: int, vid: int, bucket: str) -> str:
    """Key of bucket object ``bucket`` written by the compaction of version ``vid``."""
    return f"x/{inst:08x}/{vid:08x}/b/{bucket}"


def chunk_ckey(coords: Sequence[int]) -> str:
    """Logical key of the chunk at grid ``coords`` (8-hex-digit numbers joined by ``.``)."""
    return ".".join(f"{int(c):08x}" for c in coords)


def parse_chunk_ckey(ckey: str) -> tuple[int, ...]:
    """Grid coordinates of a chunk key (inverse of :func:`chunk_ckey`)."""
    return tuple(int(p, 16) for p in ckey.split("."))


def kv_ckey(key: str) -> str:
    """Logical key of a keyvalue key (hex of its UTF-8 bytes)."""
    return "k" + key.encode().hex()


def parse_kv_ckey(ckey: str) -> str:
    """The keyvalue key of a logical key (inverse of :func:`kv_ckey`)."""
    return bytes.fromhex(ckey[1:]).decode()


def describe_ckey(ckey: str) -> str:
    """A readable name for a ckey: chunk coordinates, a keyvalue key or a label."""
    try:
        if ckey.startswith("k"):
            return f"key {parse_kv_ckey(ckey)!r}"
        if len(ckey) == 16 and "." not in ckey:
            return f"label {int(ckey, 16)}"
        return f"chunk {parse_chunk_ckey(ckey)}"
    except (ValueError, UnicodeDecodeError):
        return f"key {ckey!r}"


def describe_store_key(key: str) -> str:
    """A readable name for a backend key (for error messages and reports)."""
    try:
        if key.startswith("d/") and len(key) > 21:
            ckey, vid, mark = parse_data_key(key)
            what = "tombstone" if mark == TOMB else "value"
            return f"{what} of {describe_ckey(ckey)} in key space {int(key[2:10], 16)} " \
                   f"at version id {vid}"
        if key.startswith("w/") and len(key) > 21:
            vid, ckey, _ = parse_index_key(key)
            return f"index entry of {describe_ckey(ckey)} in key space {int(key[2:10], 16)} " \
                   f"at version id {vid}"
    except ValueError:
        pass
    return f"key {key!r}"
