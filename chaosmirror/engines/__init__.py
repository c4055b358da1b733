"""Copy engines: one small interface, two adapters (skopeo, the Docker Engine), chosen by `make_engine`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from chaosmirror.errors import EngineError
from chaosmirror.manifest import Descriptor, Manifest, Platform
from chaosmirror.ref import ImageRef, Location
from chaosmirror.registry import Registries

ENGINES = ("auto", "skopeo", "docker")


class Engine(Protocol):
    """Moves one image (a manifest and everything it references) from one place to another."""

    name: str
    exact: bool  # keeps manifests byte for byte: same digests, whole indexes
    platform: Platform | None  # the one platform an inexact engine copies when none is asked for
    stages: bool  # can copy from a `dir:` folder of staged manifests (see `staging`)

    def copy(self, src: Location, dst: Location) -> str:
        """Copy one image from `src` to `dst` (registry, OCI layout, staged dir or docker-archive), keeping its
        digest and, for an index, every platform where the engine and formats allow; return the
        digest `dst` now holds. Raises EngineError."""

    def close(self) -> None:
        """Release what the engine holds (temporary auth files, connections, daemon tags)."""

    def refuses(self, manifests: list[Manifest]) -> str:
        """Why this engine cannot copy an image made of `manifests` (say, a layer format it cannot
        unpack), or "" when it can. Asked before the copy, so the image fails with the reason."""

    def reuses(self, blob: Descriptor) -> bool:
        """Whether the engine, finding `blob` in the target repository by its digest, uses it as it
        is rather than uploading its own: chaosmirror's client may then put it there first."""


@runtime_checkable
class ArchiveWriter(Protocol):
    """An engine that writes several images into one docker archive (layers shared between them once)."""

    def prepare(self, src: ImageRef) -> str:
        """Fetch `src`; return an id for `save`."""

    def save(self, images: Iterable[tuple[str, str]], path: Path) -> None:
        """Write the (id, name) images into one `docker load`-able archive at `path`."""


def make_engine(name: str, registries: Registries, *, on_bytes: Callable[[int], None] | None = None) -> Engine:
    """The engine called `name`; `auto` is skopeo when installed, else a reachable Docker daemon."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "skopeo" or (name == "auto" and shutil.which("skopeo")):
        from chaosmirror.engines.skopeo import Skopeo

        return Skopeo(registries)
    from chaosmirror.engines.docker import DockerEngine

    try:
        return DockerEngine(registries, on_bytes=on_bytes)
    except EngineError as exc:
        if name == "docker":
            raise
        raise EngineError(
            "no copy engine: skopeo is not installed (Debian/Ubuntu: `sudo apt-get install skopeo`; Fedora/RHEL: "
            "`sudo dnf install skopeo`; macOS: `brew install skopeo`), and the Docker daemon is not usable "
            f"either: {exc}"
        ) from None
