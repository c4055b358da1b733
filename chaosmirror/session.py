"""The registries and the engine of one run, opened and closed together (`Session`), and the
engine of a dry run, which copies nothing (`NoCopies`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from chaosmirror.engines import Engine, make_engine
from chaosmirror.errors import EngineError
from chaosmirror.lifecycle import Run
from chaosmirror.manifest import Descriptor, Manifest, Platform
from chaosmirror.registry import Registries
from chaosmirror.report import Report
from chaosmirror.settings import Settings


class NoCopies:
    """The engine of a dry run: plans as skopeo would, needs nothing installed, copies nothing."""

    name = ""
    exact = True
    platform: Platform | None = None
    stages = False

    def copy(self, src: object, dst: object) -> str:
        raise EngineError("a dry run copies nothing")

    def refuses(self, manifests: list[Manifest]) -> str:
        return ""

    def reuses(self, blob: Descriptor) -> bool:
        return True

    def close(self) -> None:
        pass


class Session:
    """The registries and the engine of one run: opened together, closed together (at once when
    the run stops, which ends every transfer in flight), timed on the report."""

    def __init__(self, settings: Settings, report: Report, *, run: Run | None = None,
                 on_bytes: Callable[[int], None] | None = None, copies: bool = True,
                 on_phase: Callable[[str], None] = lambda m: None) -> None:  # fmt: skip
        self.settings = settings
        self.report = report
        self.on_bytes = on_bytes
        self.copies = copies
        self.run = run or Run.current() or Run()

        def note(message: str) -> None:
            report.notes.append(message)
            on_phase(message)

        self.registries = settings.registries(run=self.run, note=note)
        self.engine: Engine | None = None
        self._unhook: Callable[[], None] = lambda: None

    def __enter__(self) -> tuple[Registries, Engine]:
        self._unhook = self.run.on_stop(self.registries.close)
        if self.copies or self.settings.engine == "docker":  # a docker plan needs the daemon's platform
            self.engine = make_engine(self.settings.engine, self.registries, on_bytes=self.on_bytes)
        else:
            self.engine = NoCopies()
        self.report.engine = self.engine.name
        return self.registries, self.engine

    def __exit__(self, *exc: object) -> None:
        self._unhook()
        if self.engine is not None:
            self.engine.close()
        self.registries.close()
        for host, count in sorted(self.registries.retried().items()):
            self.report.notes.append(f"{count} requests to {host} were retried")
        for host, limiter in sorted(self.registries.shared.limiters.items()):
            if limiter.cuts:
                self.report.notes.append(f"{host} rate-limited us (HTTP 429): chaosmirror cut its parallel requests "
                                         f"there {limiter.cuts} times, down to {limiter.lowest}")  # fmt: skip
        self.report.finished = time.time()
