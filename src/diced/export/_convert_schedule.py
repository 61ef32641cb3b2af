"""Running the tasks of one scale: tiers of tasks by estimated peak memory, each tier run
sequentially, on dask (threads or processes) or on a ``dask.distributed`` client.

Private to :mod:`diced.export.convert_shards`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from diced.export._convert_plan import _Result


def _tiers(tasks: Sequence[Any], workers: int, memory_limit: int) -> dict[int, list[Any]]:
    """Group tasks by how many of them may run at once within ``memory_limit``."""
    tiers: dict[int, list[Any]] = {}
    for t in tasks:
        k = int(max(1, min(workers, memory_limit // max(t.est_bytes, 1))))
        tiers.setdefault(k, []).append(t)
    for tier in tiers.values():  # biggest first: better packing, earlier OOM signals
        tier.sort(key=lambda t: -t.est_bytes)
    return dict(sorted(tiers.items(), reverse=True))


def _run_tier(func: Callable[[Any], _Result], tasks: list[Any], concurrency: int,
              scheduler: Any, on_done: Callable[[_Result], None]) -> list[_Result]:
    if not tasks:
        return []
    is_client = hasattr(scheduler, "map") and hasattr(scheduler, "gather")
    if not is_client and (concurrency <= 1 or scheduler == "sync"):
        results = []
        for t in tasks:
            r = func(t)
            on_done(r)
            results.append(r)
        return results
    if is_client:  # distributed.Client: the cluster decides concurrency
        from distributed import as_completed

        # workers that declare a "memory" resource (dask worker --resources memory=BYTES) run
        # only as many tasks at once as their estimates fit in
        workers = scheduler.scheduler_info().get("workers", {}).values()
        use_memory = bool(workers) and all("memory" in w.get("resources", {}) for w in workers)
        futures = [scheduler.submit(func, t, pure=False,
                                    resources={"memory": t.est_bytes} if use_memory else None)
                   for t in tasks]
        results = []
        for fut in as_completed(futures):
            r = fut.result()
            on_done(r)
            results.append(r)
        return results
    import dask
    from dask.callbacks import Callback

    lock = threading.Lock()

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(result, _Result):
                with lock:
                    on_done(result)

    delayed = [dask.delayed(func, pure=False)(t) for t in tasks]
    with _Progress():
        return list(dask.compute(*delayed, scheduler=scheduler, num_workers=concurrency))


def _default_memory_limit() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30
