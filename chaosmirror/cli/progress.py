"""Progress on stderr a person can plan by: bytes moved, throughput and time left.

On a terminal, a tqdm bar in bytes (images done in its postfix) once the plan says how many bytes a
run moves; before that, and for runs that only count images, a bar of images. In CI logs, one plain
line per image and, every few seconds while bytes move, one line of bytes, rate and time left.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, TextIO

import click

EVERY = 10.0  # seconds between two lines of bytes in a log


class Progress:
    def __init__(self, stream: TextIO, *, every: float = EVERY) -> None:
        self.stream = stream
        self.tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        self.every = every
        self.bar: Any = None
        self.bytes = 0
        self.total_bytes = 0
        self.images = 0
        self.done = 0
        self.started = time.monotonic()
        self._said = time.monotonic()
        self._lock = threading.Lock()

    def phase(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            click.echo(message, file=self.stream)

    def start(self, total: int) -> None:
        """A bar of `total` images, until the plan gives the bytes."""
        self.images = total
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", file=self.stream, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} images [{elapsed}<{remaining}]")  # fmt: skip

    def _bytes_bar(self, total: int) -> None:
        from tqdm import tqdm

        if self.bar is not None:
            self.bar.close()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, file=self.stream,
                        dynamic_ncols=True, initial=min(self.bytes, total))  # fmt: skip
        self.bar.set_postfix_str(self._images(), refresh=True)

    def _images(self) -> str:
        return f"{self.done}/{self.images} images"

    def event(self, event: Any) -> None:
        from chaosmirror.report import human_size

        if event.kind == "planned":
            with self._lock:
                self.total_bytes, self.images, self.done, self.started = event.size, event.count, 0, time.monotonic()
            if self.tty and event.size:
                self._bytes_bar(event.size)
            elif event.size:
                click.echo(f"copying {event.count} images, {human_size(event.size)}", file=self.stream)
            return
        entry = event.entry
        if event.kind == "start":
            if self.bar is not None and self.bar.unit == "image":
                self.bar.set_postfix_str(event.action.item.dst.name, refresh=True)
            return
        counted = entry is not None and entry.status in ("copied", "failed", "interrupted")
        if counted:
            with self._lock:
                self.done += 1
        if entry is None or entry.status == "skipped":
            self._advance_images()
            return
        size = f" {human_size(entry.size)}" if entry.size else ""
        line = f"{entry.status:7} {entry.destination}{size} {entry.seconds:.1f}s"
        if entry.status == "failed":
            line = f"failed  {entry.source}: {entry.error}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            click.echo(line, file=self.stream)
        self._advance_images()

    def _advance_images(self) -> None:
        if self.bar is None:
            return
        if self.bar.unit == "image":
            self.bar.update(1)
        else:
            self.bar.set_postfix_str(self._images(), refresh=False)

    def moved(self, count: int) -> None:
        """Bytes sent (chaosmirror's uploads, or the Docker engine's per-layer progress)."""
        from chaosmirror.report import human_size

        with self._lock:
            self.bytes += count
            now = time.monotonic()
            due = not self.tty and now - self._said >= self.every
            if due:
                self._said = now
        if self.bar is not None and self.bar.unit != "image":
            self.bar.update(count)
        elif self.bar is not None:
            self.bar.set_postfix_str(f"{human_size(self.bytes)} moved", refresh=False)
        if due:
            click.echo(self.line(now), file=self.stream)

    def line(self, now: float) -> str:
        """One line of bytes, rate and time left, for a log."""
        from chaosmirror.report import human_size

        seconds = max(now - self.started, 1e-6)
        rate = self.bytes / seconds
        text = f"moved {human_size(self.bytes)}"
        if self.total_bytes:
            share = min(100.0, 100.0 * self.bytes / self.total_bytes)
            left = max(0.0, self.total_bytes - self.bytes) / rate if rate else 0.0
            text += (
                f" of {human_size(self.total_bytes)} ({share:.0f}%), {human_size(int(rate))}/s, about {left:.0f}s left"
            )
        else:
            text += f", {human_size(int(rate))}/s"
        return f"{text}; {self._images()} done"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
