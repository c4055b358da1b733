"""The options of a copying run, parsed once at the edge and passed inside as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chaosmirror.manifest import Platform
from chaosmirror.ref import SourceMirror, Target
from chaosmirror.registry import Registries


@dataclass(frozen=True, kw_only=True)
class Settings:
    target: Target | None = None  # None for exports, which write to disk
    groups: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    source_mirrors: tuple[SourceMirror, ...] = ()
    jobs: int = 16
    insecure: frozenset[str] = frozenset()
    ca_file: Path | None = None
    engine: str = "auto"
    env: dict[str, str] | None = field(default=None, repr=False)

    def registries(self) -> Registries:
        return Registries(insecure=self.insecure, ca_file=self.ca_file, env=self.env)
