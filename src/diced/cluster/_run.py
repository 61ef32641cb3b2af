"""Running tasks on dask: a ``distributed.Client``, a scheduler address, or, with neither,
the active default client if there is one, else threads of this process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from diced.errors import BackendUnavailableError, InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = ["client_for", "compute", "run_tasks"]


@contextmanager
def client_for(client: Any, *, use_default: bool = True) -> Iterator[Any]:
    """The ``distributed.Client`` to run on, or ``None`` for threads of this process.

    ``client``: a Client, a scheduler address (``"tcp://host:8786"``; a client is opened
    and closed here), ``"threads"`` (threads of this process), or ``None``: the active
    default client if any (and ``use_default``), else threads.
    """
    if client == "threads" or (client is None and not use_default):
        yield None
        return
    if client is None:
        try:
            from distributed import default_client
        except ImportError:
            yield None
            return
        try:
            found = default_client()
        except ValueError:  # no client is active
            found = None
        yield found
        return
    if isinstance(client, str):
        try:
            from distributed import Client
        except ImportError as exc:
            raise BackendUnavailableError(
                "a scheduler address needs dask.distributed: pip install 'diced[cluster]'"
            ) from exc
        c = Client(client)
        try:
            yield c
        finally:
            c.close()
        return
    if not (hasattr(client, "compute") and hasattr(client, "gather")):
        raise InvalidArgumentError(
            f"client must be a distributed.Client or a scheduler address, got {client!r}")
    yield client


def compute(tasks: Sequence[Any], client: Any = None, *, threads: int = 2,
            local: bool = False) -> list[Any]:
    """Compute dask collections / delayed objects on the cluster, in order (``local``: the
    store lives in this process, so without an explicit client use threads, not the
    default client).

    The first task that raises makes this raise (the rest are cancelled). A task lost with
    its worker is rerun by the scheduler (``distributed``'s rule).
    """
    if not tasks:
        return []
    import dask

    with client_for(client, use_default=not local) as c:
        if c is None:
            return list(dask.compute(*tasks, scheduler="threads", num_workers=max(1, threads)))
        futures = c.compute(list(tasks))
        try:
            return c.gather(futures)
        except BaseException:
            c.cancel(futures)
            raise


def run_tasks(fn: Callable[[Any], Any], items: Sequence[Any], client: Any = None, *,
              threads: int = 2, local: bool = False) -> list[Any]:
    """``[fn(x) for x in items]`` on the cluster (see :func:`compute`)."""
    import dask

    return compute([dask.delayed(fn, pure=False)(x) for x in items], client, threads=threads,
                   local=local)
