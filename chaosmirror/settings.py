"""The options of a copying run, parsed once at the edge and passed inside as one frozen value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaosmirror.lifecycle import Run
from chaosmirror.manifest import Platform
from chaosmirror.ref import SourceMirror, Target
from chaosmirror.registry import Registries
from chaosmirror.transport import Policy

JOBS = 16
FAR_JOBS = 32


@dataclass(frozen=True, kw_only=True)
class Settings:
    target: Target | None = None  # None for exports, which write to disk
    groups: tuple[str, ...] = ()
    optional: bool = True  # also the images a release marks optional (--no-optional leaves them out)
    platforms: tuple[Platform, ...] = ()
    source_mirrors: tuple[SourceMirror, ...] = ()
    jobs: int | None = None  # None: JOBS, or FAR_JOBS for a far target
    insecure: frozenset[str] = frozenset()
    ca_file: Path | None = None
    engine: str = "auto"
    signatures: bool = True  # also the signatures, attestations, SBOMs and referrers stored next to each image
    retries: int = Policy.retries
    timeout: float = Policy.timeout
    env: dict[str, str] | None = field(default=None, repr=False)

    def workers(self, *, far: bool = False) -> int:
        """Parallel copies: as asked, else more for a far target, where each copy waits on round trips."""
        return self.jobs or (FAR_JOBS if far else JOBS)

    def registries(self, *, run: Run | None = None, note: Callable[[str], None] = lambda m: None) -> Registries:
        return Registries(insecure=self.insecure, ca_file=self.ca_file, env=self.env,
                          policy=Policy(retries=self.retries, timeout=self.timeout), run=run or Run(),
                          mirror_hosts=frozenset(m.host for m in self.source_mirrors), jobs=self.workers(far=True),
                          note=note)  # fmt: skip
