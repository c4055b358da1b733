"""Copy engines: one small interface, two adapters (skopeo, the Docker Engine), chosen by `make_engine`."""

from __future__ import annotations

import shutil
from typing import Protocol

from chaosmirror.errors import EngineError
from chaosmirror.ref import Location
from chaosmirror.registry import Registries

ENGINES = ("auto", "skopeo", "docker")


class Engine(Protocol):
    """Moves one image (a manifest and everything it references) from `src` to `dst`."""

    name: str

    def copy(self, src: Location, dst: Location) -> str:
        """Copy one image from `src` to `dst` (registry, OCI layout or docker-archive), keeping its
        digest and, for an index, every platform where the formats allow; return the digest `dst`
        now holds. Raises EngineError."""

    def close(self) -> None:
        """Release what the engine holds (temporary auth files, connections)."""


def make_engine(name: str, registries: Registries) -> Engine:
    """The engine called `name`; `auto` is skopeo when installed, else a reachable Docker daemon."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name in ("skopeo", "auto") and (name == "skopeo" or shutil.which("skopeo")):
        from chaosmirror.engines.skopeo import Skopeo

        return Skopeo(registries)
    raise EngineError(
        "skopeo is not installed. Install it (Debian/Ubuntu: `sudo apt-get install skopeo`; "
        "Fedora/RHEL: `sudo dnf install skopeo`; macOS: `brew install skopeo`)."
    )
