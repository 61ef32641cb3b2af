"""Where numba caches compiled kernels: a user cache directory, never the source tree.

numba's ``cache=True`` writes ``__pycache__/*.nbi`` / ``*.nbc`` next to a module's source
when that directory is writable, which litters a checkout (and races between checkouts).
Unless the user chose a directory (``NUMBA_CACHE_DIR``), diced points numba at
``<user cache dir>/diced/numba``: ``platformdirs.user_cache_dir("diced")`` when platformdirs
is installed, else ``$XDG_CACHE_HOME`` (default ``~/.cache``), ``~/Library/Caches`` on macOS
and ``%LOCALAPPDATA%`` on Windows. This runs when ``diced`` is imported, before any kernel
module imports numba; if numba was imported earlier, its loaded configuration is updated.
"""

from __future__ import annotations

import os
import sys

__all__ = ["configure", "default_cache_dir"]


def default_cache_dir() -> str:
    """``<user cache dir>/diced/numba`` for this platform."""
    try:
        from platformdirs import user_cache_dir

        return os.path.join(user_cache_dir("diced", appauthor=False), "numba")
    except ImportError:
        pass
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "diced", "numba")


def configure() -> None:
    """Set ``NUMBA_CACHE_DIR`` to :func:`default_cache_dir` unless the user set it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = default_cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None and not getattr(config, "CACHE_DIR", ""):
        config.CACHE_DIR = path  # numba was imported first: its config is already read
