"""Image manifests and indexes (OCI and Docker v2), platforms, and index filtering. Pure code.

A `Manifest` is the exact bytes a registry served plus their digest; nothing here re-serialises
a manifest except `filter_index`, which builds a new index for a subset of platforms.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from chaosmirror.errors import ChaosmirrorError, RefError
from chaosmirror.ref import check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_TYPES))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise RefError(f"--platform {text!r}: use os/arch or os/arch/variant, e.g. linux/arm64")
        return cls(*parts)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Platform:
        return cls(str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", "")))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: Platform) -> bool:
        """Does `other` (an image's platform) satisfy this one (what the user asked for)?"""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant:
            return True
        default = "v8" if self.architecture == "arm64" else ""
        return self.variant == (other.variant or default)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Descriptor:
        try:
            digest = check_digest(str(doc["digest"]))
            plat = Platform.from_json(doc["platform"]) if isinstance(doc.get("platform"), dict) else None
            notes = tuple(sorted((str(k), str(v)) for k, v in (doc.get("annotations") or {}).items()))
            return cls(str(doc.get("mediaType", "")), digest, int(doc["size"]), plat, notes)
        except (KeyError, TypeError, ValueError, RefError) as exc:
            raise ChaosmirrorError(f"{where}: a descriptor in the manifest is malformed ({exc})") from None


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str = "", *, where: str = "manifest") -> Manifest:
        """Check the bytes parse; take the media type from the document when the header lacks it."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise ChaosmirrorError(f"{where}: the manifest is not JSON") from None
        if not isinstance(doc, dict):
            raise ChaosmirrorError(f"{where}: the manifest is not a JSON object")
        inner = str(doc.get("mediaType", ""))
        if not inner:
            inner = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        kind = media_type.split(";", maxsplit=1)[0].strip() if media_type else ""
        if kind not in (*INDEX_TYPES, *IMAGE_TYPES):
            kind = inner
        return cls(data, kind, sha256_digest(data))

    @cached_property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.data)  # type: ignore[no-any-return]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def children(self) -> list[Descriptor]:
        """An index's entries (platform manifests and attestations)."""
        return [Descriptor.from_json(d, self.digest) for d in self.doc.get("manifests", [])] if self.is_index else []

    def config(self) -> Descriptor:
        return Descriptor.from_json(self.doc.get("config"), self.digest)

    def blobs(self) -> list[Descriptor]:
        """An image manifest's config and layers."""
        if self.is_index:
            return []
        return [self.config(), *(Descriptor.from_json(d, self.digest) for d in self.doc.get("layers", []))]


def as_manifest(data: bytes) -> Manifest | None:
    """`data` as a manifest or index when it is one (a blob may be a layer or a config), else None."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        return None
    is_index = isinstance(doc.get("manifests"), list)
    is_image = isinstance(doc.get("config"), dict) and "digest" in doc["config"] and isinstance(doc.get("layers"), list)
    return Manifest.from_bytes(data) if is_index or is_image else None


def references(top: str, read: Callable[[str], bytes | None]) -> list[str]:
    """`top` and every digest it references, each once, following whatever manifests `read` returns."""
    out: dict[str, None] = {}
    todo = [top]
    while todo:
        digest = todo.pop()
        if digest in out:
            continue
        out[digest] = None
        data = read(digest)
        manifest = as_manifest(data) if data is not None else None
        if manifest is not None:
            todo += [d.digest for d in manifest.children()] + [d.digest for d in manifest.blobs()]
    return list(out)


def platform_children(index: Manifest) -> list[Descriptor]:
    """An index's runnable images: entries with a real platform (not buildx attestations)."""
    return [d for d in index.children() if d.platform and d.platform.os != "unknown"]


def select(index: Manifest, wanted: tuple[Platform, ...]) -> list[Descriptor]:
    """Entries of `index` for the wanted platforms, plus attestations that describe a kept entry."""
    kept = [d for d in platform_children(index) if any(w.matches(d.platform) for w in wanted if d.platform)]
    kept_digests = {d.digest for d in kept}
    attached = [d for d in index.children() if dict(d.annotations).get("vnd.docker.reference.digest") in kept_digests]
    return kept + attached


def filter_index(index: Manifest, keep: list[Descriptor]) -> Manifest:
    """A new index with only the `keep` entries, everything else of the original unchanged."""
    digests = {d.digest for d in keep}
    doc = dict(index.doc)
    doc["manifests"] = [m for m in index.doc["manifests"] if m.get("digest") in digests]
    data = json.dumps(doc, indent=3).encode()
    return Manifest(data, index.media_type, sha256_digest(data))
