"""Byte ranges that arrive while the reader works: :class:`Arriving`.

A ranged GET of a chunk pack (:mod:`diced.repo.chunkpacks`) can carry dozens of chunks. Read
whole, the first chunk's decode waits for the last byte; streamed into an :class:`Arriving`,
a reader decodes each chunk as soon as its bytes are in while the rest are still on the wire
(what TensorStore gets from one GET per chunk, with one GET per run of chunks).

:meth:`diced.backends.base.Backend.stream_ranges` returns one per requested range. A
producer (the event loop of native reads, :mod:`diced.backends._native`) writes the bytes
in order with :meth:`Arriving.put` and ends with :meth:`Arriving.finish`,
:meth:`Arriving.missing` or :meth:`Arriving.fail`; a reader blocks in :meth:`Arriving.wait`
until the bytes it needs are in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Arriving"]


class Arriving:
    """The ``size`` bytes of one requested range, filled front to back by one producer.

    Thread-safe between one producer and any number of readers. The bytes below the fill
    mark never change once written, so a reader may use a view of them while later bytes
    are being written.
    """

    __slots__ = ("_cond", "_error", "_filled", "_gone", "_marks", "_next", "_notify", "_view",
                 "_want", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._view = memoryview(np.empty(size, np.uint8))  # (bytearray would zero it first)
        self._filled = 0
        self._want = size + 1  # the smallest fill mark a waiting reader needs
        self._gone = False  # the range does not exist (absent object, shorter than asked)
        self._error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())
        self._marks: Sequence[int] = ()
        self._next = 0
        self._notify: Callable[[int], None] | None = None

    @classmethod
    def ready(cls, value: bytes | None, size: int) -> Arriving:
        """A range read whole already (``None``: it does not exist)."""
        a = cls.__new__(cls)
        a.size = size
        a._filled = size if value is not None else 0
        a._view = memoryview(value) if value is not None else memoryview(b"")
        a._want = size + 1
        a._gone = value is None
        a._error = None
        a._cond = threading.Condition(threading.Lock())
        a._marks, a._next, a._notify = (), 0, None
        return a

    # --- the producer --------------------------------------------------------------------

    @property
    def filled(self) -> int:
        """Bytes written so far (where the next :meth:`put` writes)."""
        return self._filled

    def put(self, piece: bytes | memoryview) -> None:
        """Append the next bytes of the range (beyond ``size``: dropped)."""
        n = min(len(piece), self.size - self._filled)
        if n <= 0:
            return
        f = self._filled
        self._view[f:f + n] = memoryview(piece)[:n]
        with self._cond:
            self._filled = f + n
            if self._filled >= self._want:  # every waiter wakes and says again what it needs
                self._want = self.size + 1
                self._cond.notify_all()
            due = self._due()
        self._fire(due)

    def finish(self) -> None:
        """The producer is done: a range that ends before ``size`` does not exist."""
        with self._cond:
            if self._filled < self.size:
                self._gone = True
            self._cond.notify_all()
            due = self._due()
        self._fire(due)

    def missing(self) -> None:
        """The range does not exist (the object is absent or shorter)."""
        with self._cond:
            self._gone = True
            self._cond.notify_all()
            due = self._due()
        self._fire(due)

    def fail(self, exc: BaseException) -> None:
        """The read failed: readers waiting for bytes not yet in get ``exc``."""
        with self._cond:
            self._error = exc
            self._cond.notify_all()
            due = self._due()
        self._fire(due)

    def _due(self) -> range:
        """(Under the lock) the marks of :meth:`on_filled` reached since the last call."""
        first, marks = self._next, self._marks
        if self._gone or self._error is not None:
            self._next = len(marks)
        else:
            while self._next < len(marks) and marks[self._next] <= self._filled:
                self._next += 1
        return range(first, self._next)

    def _fire(self, due: range) -> None:
        notify = self._notify
        if notify is not None:
            for k in due:
                notify(k)

    # --- readers ---------------------------------------------------------------------------

    def on_filled(self, marks: Sequence[int], notify: Callable[[int], None]) -> None:
        """Call ``notify(k)`` once for each ``k``, as soon as the first ``marks[k]`` bytes
        are in or the read has ended without them (marks ascending; once per range). It
        runs in the producer's thread (or in this one, for marks already reached), so it
        must be quick: hand the work on, e.g. to a queue."""
        with self._cond:
            if self._notify is not None:
                raise RuntimeError("on_filled is set once per range")
            self._marks, self._next, self._notify = list(marks), 0, notify
            due = self._due()
        self._fire(due)

    def wait(self, upto: int) -> memoryview | None:
        """A view of the range once its first ``upto`` bytes are in (valid as long as this
        object lives), or ``None`` if the range does not exist; raises the producer's error
        when it failed before them."""
        upto = min(upto, self.size)
        if self._filled >= upto and not self._gone:
            return self._view
        with self._cond:
            while self._filled < upto and not self._gone and self._error is None:
                self._want = min(self._want, upto)
                self._cond.wait()
            if self._filled >= upto and not self._gone:
                return self._view
            if self._gone:
                return None
            assert self._error is not None
            raise self._error
