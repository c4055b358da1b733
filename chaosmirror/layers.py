"""Shared layers, uploaded once, while the engines copy everything else.

When several images of a run share a layer (a common base image), copying them in parallel would
upload that layer once per image; copying them one by one wastes the parallelism. So every layer
that two or more pending copies share is streamed from the source to the target once, by
chaosmirror's registry client, into the repository of one image that holds it, and then mounted
(a cross-repository link that moves no data) into every other repository that needs it. A copy
waits only for the shared layers it holds; the engine then finds them present and skips them.
Seeding is an optimisation: a layer that fails to seed is left to the engines to upload.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from chaosmirror.errors import ChaosmirrorError
from chaosmirror.ref import ImageRef, LayoutRef
from chaosmirror.registry import Registries


@dataclass(frozen=True)
class SharedLayer:
    digest: str
    size: int
    source: ImageRef | LayoutRef  # where to read it
    home: ImageRef  # the target repository it is uploaded to
    mounts: tuple[ImageRef, ...]  # the other target repositories it is mounted into


def shared_layers(
    holders: Iterable[tuple[ImageRef | LayoutRef, ImageRef, tuple[tuple[str, int], ...]]],
    *,
    min_repos: int = 2,
) -> list[SharedLayer]:
    """Blobs in `min_repos` or more target repositories, largest first; `holders` are (source,
    target, blobs). With `min_repos=1`, every blob: each is uploaded once, to its first repository."""
    seen: dict[str, tuple[int, ImageRef | LayoutRef, dict[str, ImageRef]]] = {}
    for source, target, layers in holders:
        for digest, size in layers:
            entry = seen.setdefault(digest, (size, source, {}))
            entry[2].setdefault(target.repository, target)
    shared = [
        SharedLayer(d, size, src, *_split(list(repos.values())))
        for d, (size, src, repos) in seen.items()
        if len(repos) >= min_repos
    ]
    return sorted(shared, key=lambda layer: -layer.size)


def _split(repos: list[ImageRef]) -> tuple[ImageRef, tuple[ImageRef, ...]]:
    return repos[0], tuple(repos[1:])


class Counted:
    """A stream that tells `on_bytes` how many bytes were read from it."""

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self.stream = stream
        self.on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data:
            self.on_bytes(len(data))
        return data

    def close(self) -> None:
        self.stream.close()


class Seeder:
    """Uploads and mounts shared layers on its own threads; tells `on_done(digest, ok)` as each ends
    and `on_bytes(n)` as the bytes go."""

    def __init__(self, registries: Registries, *, jobs: int, on_done: Callable[[str, bool], None],
                 local: Callable[[SharedLayer], bytes | None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.registries = registries
        self.on_done = on_done
        self.local = local  # the bytes of a blob already read (an image config, in the cache), else None
        self.on_bytes = on_bytes
        self._uploads = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="seed")
        self._mounts = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="mount")
        self._futures: list[Future[None]] = []

    def start(self, layers: list[SharedLayer]) -> None:
        self._futures = [self._uploads.submit(self._seed, layer) for layer in layers]

    def _seed(self, layer: SharedLayer) -> None:
        ok = False
        try:
            if not self.registries.run.stopped:
                ok = self._upload(layer) and all(self._mounts.map(lambda repo: self._mount(layer, repo), layer.mounts))
        except Exception:  # noqa: BLE001 - seeding only saves work: the engine copies what it could not
            ok = False
        finally:
            self.on_done(layer.digest, ok)

    def _upload(self, layer: SharedLayer) -> bool:
        target = self.registries.for_ref(layer.home, "dest")
        try:
            if target.has_blob(layer.home, layer.digest):
                return True
            data = self.local(layer) if self.local else None
            if data is not None:
                target.upload_blob(layer.home, layer.digest, layer.size, lambda: io.BytesIO(data))
            else:
                target.upload_blob(layer.home, layer.digest, layer.size, lambda: self._open(layer.source, layer.digest))
            return True
        except ChaosmirrorError:
            return False

    def _open(self, source: ImageRef | LayoutRef, digest: str) -> BinaryIO:
        if isinstance(source, LayoutRef):
            stream: BinaryIO = open(source.blob_path(digest), "rb")  # noqa: SIM115 - the upload closes it
        else:
            stream = self.registries.for_ref(source, "src").open_blob(source, digest)
        return Counted(stream, self.on_bytes) if self.on_bytes else stream  # type: ignore[return-value]

    def _mount(self, layer: SharedLayer, repo: ImageRef) -> bool:
        try:
            return self.registries.for_ref(repo, "dest").mount_blob(repo, layer.digest, layer.home.repository)
        except ChaosmirrorError:
            return False

    def close(self) -> None:
        for future in self._futures:
            future.result()
        self._uploads.shutdown()
        self._mounts.shutdown()
