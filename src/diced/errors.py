"""The diced exception tree.

Every error raised on purpose by diced derives from :class:`DicedError`. Classes also
inherit the matching builtin (``KeyError``, ``ValueError``, ...) so that code written for
plain Python containers keeps working. Each class has a stable ``code`` string, pinned by
a test, that servers and logs can use.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousVersionError",
    "BackendError",
    "BackendUnavailableError",
    "ChecksumError",
    "ConcurrencyError",
    "ConversionError",
    "CorruptDataError",
    "CorruptMetadataError",
    "DicedError",
    "DtypeError",
    "DuplicateNameError",
    "FormatError",
    "IndexOutOfBoundsError",
    "InstanceNotFoundError",
    "InvalidArgumentError",
    "InvalidIndexError",
    "LabelNotFoundError",
    "LockedNodeError",
    "MergeConflictError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RepoNotFoundError",
    "ShapeMismatchError",
    "StoreFormatError",
    "StoreLocationError",
    "StoreNotFoundError",
    "UnknownDatatypeError",
    "UnlockedNodeError",
    "VersionNotFoundError",
]


class DicedError(Exception):
    """Root of every exception diced raises on purpose."""

    code = "diced_error"


class BackendError(DicedError, OSError):
    """A storage backend failed (I/O error, bad URL, ...)."""

    code = "backend_error"


class StoreLocationError(BackendError):
    """A location cannot hold a store: a regular file, a path below a file, an unreadable
    path, or a non-empty directory that is not a diced store."""

    code = "store_location"


class BackendUnavailableError(BackendError):
    """The backend for a URL needs an optional package that is not installed."""

    code = "backend_unavailable"


class ReadOnlyStoreError(BackendError, PermissionError):
    """A write reached a store opened read-only (the published base of a chained store)."""

    code = "read_only_store"


class ConcurrencyError(DicedError, RuntimeError):
    """A compare-and-set lost a race with another writer; retry or re-read."""

    code = "concurrency_error"


class ConversionError(DicedError, RuntimeError):
    """A conversion finished with failed parts; ``report`` says which and how to retry them."""

    code = "conversion_failed"

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class CorruptDataError(DicedError, ValueError):
    """Stored or supplied bytes do not decode (truncated, oversized, inconsistent).

    Raised on stored data, it says where: ``instance`` (name), ``version`` (UUID),
    ``key`` (chunk coordinates, keyvalue key or label) and ``store_key`` (the backend key),
    each ``None`` when unknown.
    """

    code = "corrupt_data"

    def __init__(self, message: str = "", *, instance: str | None = None,
                 version: str | None = None, key: object = None,
                 store_key: str | None = None) -> None:
        super().__init__(message)
        self.instance = instance
        self.version = version
        self.key = key
        self.store_key = store_key


class ChecksumError(CorruptDataError):
    """A stored value fails its CRC32C check: the bytes changed after they were written."""

    code = "checksum_mismatch"


class CorruptMetadataError(CorruptDataError):
    """Store metadata (repos, DAG, instances) is unreadable or of an unknown format."""

    code = "corrupt_metadata"


class StoreFormatError(CorruptMetadataError):
    """The store was written in another storage format; migrate it (``diced migrate``)."""

    code = "store_format"


class NotFoundError(DicedError, KeyError):
    """Something named does not exist."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages readable
        return str(self.args[0]) if self.args else self.__class__.__name__


class StoreNotFoundError(NotFoundError):
    """No store exists at a location that was opened with ``create=False``."""

    code = "store_not_found"


class RepoNotFoundError(NotFoundError):
    """No repo with that name or UUID in the store."""

    code = "repo_not_found"


class VersionNotFoundError(NotFoundError):
    """No version matches the UUID, prefix, branch or tag given."""

    code = "version_not_found"


class AmbiguousVersionError(DicedError, ValueError):
    """A UUID prefix matches more than one version."""

    code = "ambiguous_version"


class InstanceNotFoundError(NotFoundError):
    """No data instance of that name is visible at the version."""

    code = "instance_not_found"


class LabelNotFoundError(NotFoundError):
    """The label does not exist at the version."""

    code = "label_not_found"


class UnknownDatatypeError(NotFoundError):
    """No datatype of that name is built in, registered or installed (entry point)."""

    code = "unknown_datatype"


class DuplicateNameError(DicedError, ValueError):
    """A repo, instance, branch or tag name is already taken."""

    code = "duplicate_name"


class LockedNodeError(DicedError, PermissionError):
    """A write was attempted on a locked (committed) version."""

    code = "locked_node"


class UnlockedNodeError(DicedError, ValueError):
    """A child (branch, new version, merge) was requested from an open version."""

    code = "unlocked_node"


class MergeConflictError(DicedError, RuntimeError):
    """A merge found conflicts and the chosen strategy does not resolve them."""

    code = "merge_conflict"

    def __init__(self, message: str, conflicts: list | None = None) -> None:
        super().__init__(message)
        self.conflicts = list(conflicts or [])


class InvalidArgumentError(DicedError, ValueError):
    """An argument has the wrong value or form."""

    code = "invalid_argument"


class IndexOutOfBoundsError(InvalidArgumentError, IndexError):
    """An index lies outside the array."""

    code = "index_out_of_bounds"


class InvalidIndexError(InvalidArgumentError, IndexError):
    """An index of a form arrays do not take (a float, two ``...``, a bool scalar, ...)."""

    code = "invalid_index"


class ShapeMismatchError(InvalidArgumentError):
    """A value cannot be broadcast to the selection it is written to."""

    code = "shape_mismatch"


class DtypeError(InvalidArgumentError, TypeError):
    """A dtype is unsupported, or a value cannot be cast safely to the array's dtype."""

    code = "dtype_error"


class FormatError(InvalidArgumentError):
    """An input file or spec (neuroglancer info, CSV index, RLE, ...) is malformed."""

    code = "format_error"
