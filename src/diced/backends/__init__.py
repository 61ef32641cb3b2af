"""Storage backends: byte key-value stores behind one small interface.

``open_backend`` picks one from a location:

* a plain path (``~/data/fly.diced``) or ``lmdb://path``: the embedded LMDB store;
* ``memory://...``, ``file://...``, ``gs://...``, ``s3://...`` or any other fsspec URL.

Optional protocols (gs, s3) name the package to install when it is missing.
"""

from __future__ import annotations

import os
from typing import Any

from diced.backends.base import Backend, Capabilities
from diced.errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["Backend", "Capabilities", "open_backend", "register_backend"]

#: protocol -> (module, class name); imported on first use
_REGISTRY: dict[str, tuple[str, str]] = {
    "lmdb": ("diced.backends._lmdb", "LMDBBackend"),
}
#: protocol -> pip package that provides it
_INSTALL_HINTS = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "s3a": "s3fs", "az": "adlfs",
                  "abfs": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def register_backend(protocol: str, module: str, cls: str) -> None:
    """Route ``protocol://`` locations to ``module.cls`` (imported lazily)."""
    _REGISTRY[protocol] = (module, cls)


def _load(protocol: str) -> type[Backend]:
    import importlib

    module, name = _REGISTRY.get(protocol, ("diced.backends._fsspec", "FsspecBackend"))
    return getattr(importlib.import_module(module), name)


def open_backend(location: str | os.PathLike[str] | Backend, **options: Any) -> Backend:
    """Open the backend for ``location`` (see module docstring); backends pass through."""
    if isinstance(location, Backend):
        return location
    if not isinstance(location, (str, os.PathLike)):
        raise InvalidArgumentError(f"a store location must be a path or URL, got {location!r}")
    loc = os.fspath(location)
    if not loc:
        raise InvalidArgumentError("a store location must not be empty")
    if "://" not in loc:
        return _load("lmdb")(loc, **options)
    protocol, rest = loc.split("://", 1)
    if protocol == "lmdb":
        return _load("lmdb")(rest, **options)
    if protocol not in _REGISTRY:
        try:
            import fsspec

            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            pkg = _INSTALL_HINTS.get(protocol, f"the fsspec implementation for {protocol}://")
            raise BackendUnavailableError(
                f"{protocol}:// needs an optional package: pip install {pkg} "
                f"(or pip install 'diced[all]')"
            ) from exc
        except ValueError as exc:
            raise InvalidArgumentError(f"unknown storage protocol {protocol!r} in {loc!r}") from exc
    return _load(protocol)(loc, **options)
