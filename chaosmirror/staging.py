"""A local source for skopeo, so it never reads the source registry's manifests a second time.

By the time skopeo copies an image, chaosmirror's client has put every blob the image needs into
the target (`mirror.run` seeds them all) and the survey has read every manifest it moves (kept in
the local cache). Given the registry as its source, skopeo would GET each manifest again, and on
Docker Hub each GET counts as a pull. So each copy reads from a folder in skopeo's `dir:` format
holding only that copy's manifests and image configs (skopeo reads a config from its source even
when the target holds it): skopeo looks each layer up in the target first, finds it, and never
asks the folder for it. Checked with skopeo 1.9.3 for OCI and Docker manifests and indexes (with
--all, BuildKit attestations included): no request reaches the source. An `oci:` layout would not
do: skopeo 1.9.3 skips index.json entries of Docker media types. A layer missing from the target
after all makes skopeo fail on the missing file, and the copy runs again from the registry.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from chaosmirror.lifecycle import private_dir
from chaosmirror.manifest import Manifest, children_in
from chaosmirror.ref import DirRef, ImageRef

VERSION = "Directory Transport Version: 1.1\n"  # containers/image directory transport, format 1.1


class Staging:
    """Folders of staged copies, one per engine copy, removed when the copy is done (or at close)."""

    def __init__(self, config: Callable[[ImageRef, str, int], bytes]) -> None:
        self.config = config  # (source, digest, size) -> an image config's bytes (from the cache, or read once)
        self._root: Path | None = None
        self._lock = threading.Lock()
        self._count = 0

    def _folder(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = private_dir("stage")
            self._count += 1
            folder = self._root / str(self._count)
        folder.mkdir()
        return folder

    def stage(self, top: Manifest, written: Mapping[str, Manifest], source: ImageRef) -> DirRef:
        """A `dir:` folder holding `top`, its children (`top` an index, each in `written`) and the
        configs of its image manifests (read from `source` through `config`)."""
        children = children_in(top, written)
        folder = self._folder()
        (folder / "version").write_text(VERSION)
        (folder / "manifest.json").write_bytes(top.data)
        for child in children:
            (folder / f"{child.digest.split(':', 1)[1]}.manifest.json").write_bytes(child.data)
        for image in [m for m in (top, *children) if not m.is_index]:
            config = image.config()
            (folder / config.digest.split(":", 1)[1]).write_bytes(self.config(source, config.digest, config.size))
        return DirRef(folder)

    def drop(self, where: DirRef) -> None:
        shutil.rmtree(where.path, ignore_errors=True)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
