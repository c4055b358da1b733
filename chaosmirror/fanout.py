"""One stream, read once, handed to several readers: a blob read from the bundle a single time and
uploaded to every target that lacks it.

The reading thread calls `pump()`; each upload reads its own `reader(i)`, through a queue of a few
chunks, so memory stays bounded (`DEPTH` chunks per reader) and the slowest upload sets the pace.
An upload that fails calls `drop(i)`: from then on its chunks are discarded, and the others go on.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import Protocol

DEPTH = 4
_END = b""


class Source(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class Fanout:
    def __init__(self, source: Source, count: int, *, chunk: int, depth: int = DEPTH) -> None:
        self.source = source
        self.chunk = chunk
        self._queues: list[queue.Queue[bytes]] = [queue.Queue(maxsize=depth) for _ in range(count)]
        self._dropped = [threading.Event() for _ in range(count)]

    def reader(self, number: int) -> io.RawIOBase:
        return _Reader(self, number)

    def drop(self, number: int) -> None:
        """Reader `number` reads no more: stop queueing for it, and free what is queued."""
        self._dropped[number].set()
        while True:
            try:
                self._queues[number].get_nowait()
            except queue.Empty:
                return

    def pump(self) -> None:
        """Read the source to its end, handing each chunk to every reader still reading."""
        while not all(d.is_set() for d in self._dropped):
            chunk = self.source.read(self.chunk)
            for number in range(len(self._queues)):
                self._put(number, chunk)
            if chunk == _END:
                return

    def _put(self, number: int, chunk: bytes) -> None:
        while not self._dropped[number].is_set():
            try:
                self._queues[number].put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self, number: int) -> bytes:
        return self._queues[number].get()


class _Reader(io.RawIOBase):
    def __init__(self, fanout: Fanout, number: int) -> None:
        super().__init__()
        self.fanout = fanout
        self.number = number
        self._left = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._left and not self._ended:
            self._left = self.fanout._get(self.number)
            self._ended = self._left == _END
        if size is None or size < 0:
            size = len(self._left)
        out, self._left = self._left[:size], self._left[size:]
        return out

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
