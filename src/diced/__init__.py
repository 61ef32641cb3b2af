"""diced: versioned, chunked nD arrays with a numpy facade (Diced Is Cloud-Enabled DVID).

>>> import diced, numpy as np
>>> store = diced.Store("memory://doctest")
>>> repo = store.create_repo("fly")
>>> gray = repo.create_array("grayscale", dtype="uint8", shape=(128, 128, 128))
>>> gray[0:10, 0:10, 0:10] = 7
>>> first = repo.commit("first import")
>>> child = repo.branch("proofreading")
>>> gray[0, 0, 0] = 9
>>> int(repo.version(first.uuid).array("grayscale")[0, 0, 0]), int(gray[0, 0, 0])
(7, 9)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diced import _numba_cache, errors
from diced.errors import DicedError

_numba_cache.configure()  # before any kernel imports numba: no cache files in the source tree

__version__ = "0.1.0"

__all__ = [
    "ArrayDtype",
    "Conflict",
    "DicedError",
    "DicedException",
    "DicedRepo",
    "DicedStore",
    "KeyValue",
    "LabelArray",
    "Repo",
    "Store",
    "Version",
    "VersionedArray",
    "__version__",
    "errors",
]

if TYPE_CHECKING:
    from diced.compat import ArrayDtype, DicedException, DicedRepo, DicedStore
    from diced.datatypes.array import VersionedArray
    from diced.datatypes.keyvalue import KeyValue
    from diced.datatypes.labels import LabelArray
    from diced.repo.merge import Conflict
    from diced.repo.repo import Repo, Version
    from diced.store import Store

_LAZY = {
    "Store": "diced.store",
    "Repo": "diced.repo.repo",
    "Version": "diced.repo.repo",
    "Conflict": "diced.repo.merge",
    "VersionedArray": "diced.datatypes.array",
    "LabelArray": "diced.datatypes.labels",
    "KeyValue": "diced.datatypes.keyvalue",
    "DicedStore": "diced.compat",
    "DicedRepo": "diced.compat",
    "ArrayDtype": "diced.compat",
    "DicedException": "diced.compat",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diced' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
