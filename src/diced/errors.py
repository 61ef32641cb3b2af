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
    "LabelNotFoundError",
    "LockedNodeError",
    "MergeConflictError",
    "NotFoundError",
    "RepoNotFoundError",
    "ShapeMismatchError",
    "UnlockedNodeError",
    "VersionNotFoundError",
]


class DicedError(Exception):
    """Root of every exception diced raises on purpose."""

    code = "diced_error"


class BackendError(DicedError, OSError):
    """A storage backend failed (I/O error, bad URL, ...)."""

    code = "backend_error"


class BackendUnavailableError(BackendError):
    """The backend for a URL needs an optional package that is not installed."""

    code = "backend_unavailable"


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
    """Stored or supplied bytes do not decode (truncated, oversized, inconsistent)."""

    code = "corrupt_data"


class CorruptMetadataError(CorruptDataError):
    """Store metadata (repos, DAG, instances) is unreadable or of an unknown format."""

    code = "corrupt_metadata"


class NotFoundError(DicedError, KeyError):
    """Something named does not exist."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages readable
        return str(self.args[0]) if self.args else self.__class__.__name__


class RepoNotFoundError(NotFoundError):
    code = "repo_not_found"


class VersionNotFoundError(NotFoundError):
    code = "version_not_found"


class AmbiguousVersionError(DicedError, ValueError):
    """A UUID prefix matches more than one version."""

    code = "ambiguous_version"


class InstanceNotFoundError(NotFoundError):
    code = "instance_not_found"


class LabelNotFoundError(NotFoundError):
    code = "label_not_found"


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


class ShapeMismatchError(InvalidArgumentError):
    """A value cannot be broadcast to the selection it is written to."""

    code = "shape_mismatch"


class DtypeError(InvalidArgumentError, TypeError):
    """A dtype is unsupported, or a value cannot be cast safely to the array's dtype."""

    code = "dtype_error"


class FormatError(InvalidArgumentError):
    """An input file or spec (neuroglancer info, CSV index, RLE, ...) is malformed."""

    code = "format_error"
