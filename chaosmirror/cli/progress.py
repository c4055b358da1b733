"""Progress on stderr: a tqdm bar on a terminal, one plain line per image otherwise (CI logs)."""

from __future__ import annotations

import os
from typing import Any, TextIO

import click


class Progress:
    """A tqdm bar on a terminal; one plain line per image otherwise (CI logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        self.bar: Any = None
        self.bytes = 0

    def phase(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            click.echo(message, file=self.stream)

    def start(self, total: int) -> None:
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="image",
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} images [{elapsed}<{remaining}]",
            )

    def event(self, event: Any) -> None:
        from chaosmirror.report import human_size

        entry = event.entry
        if event.kind == "start":
            if self.bar is not None:
                self.bar.set_postfix_str(event.action.item.dst.name, refresh=True)
            return
        if entry is None or entry.status == "skipped":
            if self.bar is not None:
                self.bar.update(1)
            return
        size = f" {human_size(entry.size)}" if entry.size else ""
        line = f"{entry.status:7} {entry.destination}{size} {entry.seconds:.1f}s"
        if entry.status == "failed":
            line = f"failed  {entry.source}: {entry.error}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            click.echo(line, file=self.stream)

    def moved(self, count: int) -> None:
        """Bytes an engine reports as transferred (the Docker engine's per-layer progress)."""
        self.bytes += count
        if self.bar is not None:
            from chaosmirror.report import human_size

            self.bar.set_postfix_str(f"{human_size(self.bytes)} moved", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
