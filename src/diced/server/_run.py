"""Run blocking diced calls off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

__all__ = ["blocking"]


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in the worker thread pool (a slow call never blocks others)."""
    return await run_in_threadpool(fn, *args, **kwargs)
