"""The one place where the storage key layout is defined.

Layout (all ASCII, fixed-width lowercase hex so that string order is numeric order)::

    meta/format                              {"format": N} (the store format, see below)
    meta/migrate                             progress of an unfinished format migration
    meta/repo/<repo uuid>                    repo document (JSON): alias, description, log,
                                             properties, node packs, overridden node ids
    meta/node/<repo uuid>/<version id>       one version node record (JSON)
    meta/pack/<repo uuid>/<first>-<last>     an immutable pack of locked node records (binary)
    meta/inst/<repo uuid>/<name>             one data instance record (JSON)
    meta/branch/<repo uuid>/<name>           a branch ref: the id of the branch's leaf
    meta/tag/<repo uuid>/<name>              a tag ref: the id of the tag's node
    meta/vid/<repo uuid>                     the repo's version id counter (last id handed out)
    meta/gen/<repo uuid>                     change journal: a counter and the latest changes
    meta/snap/<repo uuid>                    state snapshot: the records a full load read, as of
                                             a journal stamp (object stores, ``file://``;
                                             derived, see :mod:`diced.repo.history`)
    meta/alias/<hex(alias)>                  repo uuid owning an alias (unique)
    meta/counter/<name>                      store-wide counters (instance ids, ...)
    meta/head/<repo uuid>                    UUID of the version the repo's head was last moved to
    meta/job/<repo uuid>/<hex(job name)>     an unfinished cluster job (:mod:`diced.cluster`)
    lock/<repo uuid>/<version id>            present once the version is locked
    lease/<repo uuid>/<stripe>               a writer's lease on a stripe of keys (object
                                             stores only, :mod:`diced.repo.writers`)
    d/<inst>/<ckey>/<version id><m>          a value written at a version; m = "d" data, "t" tombstone
    w/<inst>/<version id>/<ckey>/<m>         per-version index of what the version wrote
    i/<inst>/<version id>/t                  compacted chunk index of a locked version (table)
    i/<inst>/<version id>/b/<bucket>         one bucket of compacted index entries
    i/<inst>/<version id>/p/<bucket>/<n>     a pack: copies of the values the version wrote
                                             in a bucket, read with ranged GETs (opt-in,
                                             derived, see :mod:`diced.repo.chunkpacks`)

All versions of one logical key (``d/<inst>/<ckey>/``) sit next to each other in version
order, so an ordered store finds the nearest ancestor's write with one seek, and the
per-version index lets diff, merge and object stores work from what changed instead of
scanning everything.

Stores without ordered scans (object stores, ``file://``) also keep a compacted index per
locked version and key space (:mod:`diced.repo.manifests`), so that a read at any history
depth costs a constant number of requests: the table ``i/<inst>/<vid>/t`` names, for each
bucket of ckeys, the version whose bucket object ``i/<inst>/<holder>/b/<bucket>`` holds the
bucket's entries (ckey -> greatest writer id and mark) as seen from ``vid`` (small indexes
are stored inline in the table). Every ``i/`` object is immutable and written create-only;
a child references its parent's unchanged buckets. They are derived data: deleting all of
``i/<inst>/<vid>/`` for any set of versions is always safe (readers rebuild a missing table
from the nearest compacted ancestors and the ``w/`` manifests), but a bucket object may be
referenced by the tables of descendants, so whoever rewrites or deletes the data of a
locked version (squash, GC) must delete the ``i/`` objects of that version AND of all its
descendants (:func:`diced.repo.manifests.drop_compacted`). Deleting a leaf version may
delete its own ``i/<inst>/<vid>/`` only.

A chunk key (``ckey``) is the chunk coordinates as 8-hex-digit numbers joined by ``.``; a
keyvalue key is the hex of its UTF-8 bytes (hex preserves byte order and prefixes); a label
key (label index, mapping, members) is the label as 16 hex digits.

A ``<name>`` is ``n`` + the name when it is made of letters, digits, ``_``, ``-`` and ``.``
(every name diced accepts), else ``x`` + the hex of its UTF-8 bytes.

Every metadata change is a compare-and-set of one of these keys (see :mod:`diced.repo.meta`),
so it writes O(1) small records whatever the size of the history.

Store formats: 1 stored values as they are; 2 ends every value with its CRC32C
(:mod:`diced.backends.checksum`); 3 (current) also splits each repo's metadata document into
the per-record keys above. :mod:`diced.migrate` upgrades format-1 and format-2 stores.
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
    "branch_key",
    "branch_prefix",
    "chunk_ckey",
    "chunk_prefix",
    "compact_bucket_key",
    "compact_pack_key",
    "compact_prefix",
    "compact_table_key",
    "counter_key",
    "data_key",
    "data_prefix",
    "describe_ckey",
    "describe_store_key",
    "gen_key",
    "head_key",
    "index_key",
    "index_prefix",
    "instance_key",
    "instance_prefix",
    "job_key",
    "job_prefix",
    "kv_ckey",
    "lease_key",
    "lock_key",
    "name_of_key",
    "node_key",
    "node_prefix",
    "pack_key",
    "pack_prefix",
    "parse_chunk_ckey",
    "parse_data_key",
    "parse_index_key",
    "parse_kv_ckey",
    "repo_key",
    "repo_meta_prefixes",
    "snapshot_key",
    "tag_key",
    "tag_prefix",
    "vid_counter_key",
]

FORMAT_KEY = "meta/format"
MIGRATE_KEY = "meta/migrate"
#: the store format: 2 = every value carries a CRC32C trailer; 3 = repo metadata in
#: per-record keys (:data:`REPO_FORMAT` 2)
FORMAT_VERSION = 3
#: the format of repo metadata, independent of the store format: 1 = one JSON document
#: holding every node and instance; 2 = per-record keys (node, instance, branch, tag, packs)
REPO_FORMAT = 2
DATA = "d"
TOMB = "t"


def repo_key(repo_uuid: str) -> str:
    """Key of a repo's metadata document."""
    return f"meta/repo/{repo_uuid}"


def node_key(repo_uuid: str, vid: int) -> str:
    """Key of the record of version ``vid``."""
    return f"meta/node/{repo_uuid}/{vid:08x}"


def node_prefix(repo_uuid: str) -> str:
    """Prefix of every node record of a repo."""
    return f"meta/node/{repo_uuid}/"


def pack_key(repo_uuid: str, first: int, last: int) -> str:
    """Key of the pack of locked node records with ids ``first..last``."""
    return f"meta/pack/{repo_uuid}/{first:08x}-{last:08x}"


def pack_prefix(repo_uuid: str) -> str:
    """Prefix of every node pack of a repo."""
    return f"meta/pack/{repo_uuid}/"


def instance_key(repo_uuid: str, name: str) -> str:
    """Key of the record of data instance ``name``."""
    return f"meta/inst/{repo_uuid}/{_name_part(name)}"


def instance_prefix(repo_uuid: str) -> str:
    """Prefix of every instance record of a repo."""
    return f"meta/inst/{repo_uuid}/"


def branch_key(repo_uuid: str, name: str) -> str:
    """Key of the ref of branch ``name`` (``"master"`` for the default branch)."""
    return f"meta/branch/{repo_uuid}/{_name_part(name)}"


def branch_prefix(repo_uuid: str) -> str:
    """Prefix of every branch ref of a repo."""
    return f"meta/branch/{repo_uuid}/"


def tag_key(repo_uuid: str, name: str) -> str:
    """Key of the ref of tag ``name``."""
    return f"meta/tag/{repo_uuid}/{_name_part(name)}"


def tag_prefix(repo_uuid: str) -> str:
    """Prefix of every tag ref of a repo."""
    return f"meta/tag/{repo_uuid}/"


def vid_counter_key(repo_uuid: str) -> str:
    """Key of a repo's version id counter."""
    return f"meta/vid/{repo_uuid}"


def gen_key(repo_uuid: str) -> str:
    """Key of a repo's change journal (what changed lately, for cheap refreshes)."""
    return f"meta/gen/{repo_uuid}"


def snapshot_key(repo_uuid: str) -> str:
    """Key of a repo's state snapshot (:func:`diced.repo.history.load_state`)."""
    return f"meta/snap/{repo_uuid}"


_NAME_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _name_part(name: str) -> str:
    # names of letters, digits, "_", "-" and "." (all that diced accepts) stay readable and
    # short ("n" + name: 256 characters at most); anything else is hex ("x" + hex)
    if name and set(name) <= _NAME_SAFE:
        return "n" + name
    return "x" + name.encode().hex()


def name_of_key(key: str) -> str:
    """The name a ``meta/inst|branch|tag/<repo>/<name>`` key stands for."""
    part = key.rsplit("/", 1)[1]
    return part[1:] if part[:1] == "n" else bytes.fromhex(part[1:]).decode()


def repo_meta_prefixes(repo_uuid: str) -> list[str]:
    """Every key prefix holding a repo's metadata (deleting the repo removes them)."""
    return [node_prefix(repo_uuid), pack_prefix(repo_uuid), instance_prefix(repo_uuid),
            branch_prefix(repo_uuid), tag_prefix(repo_uuid)]


def alias_key(alias: str) -> str:
    """Key mapping a repo alias to its root UUID."""
    return f"meta/alias/{alias.encode().hex()}"


def head_key(repo_uuid: str) -> str:
    """Where a repo remembers its head (as git's ``HEAD``): the UUID last checked out."""
    return f"meta/head/{repo_uuid}"


def job_key(repo_uuid: str, name: str) -> str:
    """Key of the record of an unfinished cluster job (its reserved version id, ...)."""
    return f"meta/job/{repo_uuid}/{name.encode().hex()}"


def job_prefix(repo_uuid: str) -> str:
    """Prefix of the records of a repo's unfinished cluster jobs."""
    return f"meta/job/{repo_uuid}/"


def counter_key(name: str) -> str:
    """Key of a store-wide counter."""
    return f"meta/counter/{name}"


def lock_key(repo_uuid: str, vid: int) -> str:
    """Key present once version ``vid`` of the repo is locked."""
    return f"lock/{repo_uuid}/{vid:08x}"


def lease_key(repo_uuid: str, stripe: int) -> str:
    """Key of the writers' lease on stripe ``stripe`` of the repo's keys."""
    return f"lease/{repo_uuid}/{stripe:04x}"


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
    return f"i/{inst:08x}/" if vid is None else f"i/{inst:08x}/{vid:08x}/"


def compact_table_key(inst: int, vid: int) -> str:
    """Key of the compacted index table of locked version ``vid`` in space ``inst``."""
    return f"i/{inst:08x}/{vid:08x}/t"


def compact_bucket_key(inst: int, vid: int, bucket: str) -> str:
    """Key of bucket object ``bucket`` written by the compaction of version ``vid``."""
    return f"i/{inst:08x}/{vid:08x}/b/{bucket}"


def compact_pack_key(inst: int, vid: int, bucket: str, part: int) -> str:
    """Key of pack ``part`` of the values version ``vid`` wrote in bucket ``bucket``
    (:mod:`diced.repo.chunkpacks`)."""
    return f"i/{inst:08x}/{vid:08x}/p/{bucket}/{part:x}"


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
