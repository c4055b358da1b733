"""A local cache of manifests and image configs by digest, so a rerun reads nothing twice.

Docker Hub counts every manifest GET as a pull (a HEAD is free) and limits pulls per hour. A
manifest named by its digest never changes, so once read it is kept here, content-addressed:
`$XDG_CACHE_HOME/chaosmirror/blobs/sha256/<hex>` (default `~/.cache/chaosmirror`). A file is used
only when its bytes still hash to its name; anything else is removed and read again. The survey
HEADs each tag (its digest) and finds the manifest here, so a rerun of an unchanged release GETs no
manifest at all. Removing the folder is always safe. Nothing secret is ever written here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from chaosmirror.errors import ChaosmirrorError, RefError
from chaosmirror.manifest import Manifest
from chaosmirror.ref import ImageRef, check_digest
from chaosmirror.registry import Registry

MAX_MANIFEST = 4 * 1024 * 1024  # distribution's own limit
MAX_CONFIG = 4 * 1024 * 1024


def cache_folder(env: Mapping[str, str] | None = None) -> Path:
    """Where the cache lives: CHAOSMIRROR_CACHE_DIR, else $XDG_CACHE_HOME/chaosmirror, else ~/.cache/chaosmirror."""
    env = os.environ if env is None else env
    if env.get("CHAOSMIRROR_CACHE_DIR"):
        return Path(env["CHAOSMIRROR_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "chaosmirror"


class ManifestCache:
    """Manifests and configs by digest, verified on every read; safe to share between threads and runs.
    A folder that cannot be written makes the cache a pass-through, never a failure."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = 0
        self.reads = 0  # GETs made because the cache did not have it
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ManifestCache:
        return cls(cache_folder(env))

    def _path(self, digest: str) -> Path | None:
        if self.folder is None:
            return None
        try:
            return self.folder / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]
        except RefError:
            return None

    def get(self, digest: str) -> bytes | None:
        """The bytes of `digest` if held and intact; a damaged file is removed."""
        path = self._path(digest)
        try:
            if path is None or not path.is_file() or path.stat().st_size > MAX_MANIFEST:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            path.unlink(missing_ok=True)
            return None
        with self._lock:
            self.hits += 1
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Keep `data` under `digest` (only if it hashes to it), written atomically."""
        path = self._path(digest)
        if path is None or "sha256:" + hashlib.sha256(data).hexdigest() != digest or path.exists():
            return
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(path)
        except OSError:
            partial.unlink(missing_ok=True)  # a read-only or full disk: the cache just does not keep it

    def manifest(self, registry: Registry, ref: ImageRef, media_type: str = "") -> Manifest:
        """The manifest `ref` names by digest: from the cache, else one GET (then kept)."""
        assert ref.digest, "the cache holds manifests by digest"
        data = self.get(ref.digest)
        if data is not None:
            try:
                return Manifest.from_bytes(data, media_type, where=str(ref))
            except ChaosmirrorError:
                pass  # bytes that hash right but do not parse cannot come from a registry: read it again
        manifest = registry.manifest(ref)
        with self._lock:
            self.reads += 1
        self.put(manifest.digest, manifest.data)
        return manifest

    def blob(self, registry: Registry, ref: ImageRef, digest: str, size: int = 0) -> bytes:
        """A small blob (an image config): from the cache, else one GET (then kept)."""
        data = self.get(digest)
        if data is not None:
            return data
        if size > MAX_CONFIG:
            raise ChaosmirrorError(f"{digest} of {ref} is {size} bytes: too large to be an image config")
        data = registry.blob(ref, digest)
        self.put(digest, data)
        return data
