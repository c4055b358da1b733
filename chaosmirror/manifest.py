"""Image manifests and indexes (OCI and Docker v2), platforms, and index filtering. Pure code.

A `Manifest` is the exact bytes a registry served plus their digest; nothing here re-serialises
a manifest except `filter_index`, which builds a new index for a subset of platforms. The shapes
registries serve are described in docs/image-shapes.md: BuildKit attestation manifests inside an
index (`attestations`), foreign layers a registry does not store (`Descriptor.foreign`), OCI 1.1
artifacts with a `subject` (`Manifest.subject`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
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
ATTESTATION = "attestation-manifest"  # BuildKit's vnd.docker.reference.type for an attestation manifest


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
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Descriptor:
        try:
            digest = check_digest(str(doc["digest"]))
            plat = Platform.from_json(doc["platform"]) if isinstance(doc.get("platform"), dict) else None
            notes = tuple(sorted((str(k), str(v)) for k, v in (doc.get("annotations") or {}).items()))
            urls = tuple(str(u) for u in doc.get("urls") or ())
            return cls(str(doc.get("mediaType", "")), digest, int(doc["size"]), plat, notes, urls,
                       str(doc.get("artifactType", "")))  # fmt: skip
        except (KeyError, TypeError, ValueError, RefError) as exc:
            raise ChaosmirrorError(f"{where}: a descriptor in the manifest is malformed ({exc})") from None

    @property
    def foreign(self) -> bool:
        """A layer clients download from its `urls` (Windows base layers): registries need not
        store it, skopeo never copies it, and a copy keeps the reference as it is."""
        return bool(self.urls)

    @property
    def attestation_of(self) -> str:
        """The digest of the image a BuildKit attestation manifest describes, or ""."""
        notes = dict(self.annotations)
        if notes.get("vnd.docker.reference.type") != ATTESTATION:
            return ""
        return notes.get("vnd.docker.reference.digest", "")


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

    def stored_blobs(self) -> list[Descriptor]:
        """The blobs a registry holds for this manifest: its config and layers, less foreign layers."""
        return [d for d in self.blobs() if not d.foreign]

    def foreign_layers(self) -> list[Descriptor]:
        return [d for d in self.blobs() if d.foreign]

    @property
    def subject(self) -> str:
        """The digest an OCI 1.1 artifact (a referrer) is about, or ""."""
        subject = self.doc.get("subject")
        return str(subject.get("digest", "")) if isinstance(subject, dict) else ""


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
            todo += [d.digest for d in manifest.children()] + [d.digest for d in manifest.stored_blobs()]
    return list(out)


def children_in(top: Manifest, written: Mapping[str, Manifest], *, of: str = "") -> list[Manifest]:
    """The child manifests of `top` (none for an image manifest), each from `written` by digest;
    ChaosmirrorError naming the first that is not there."""
    if not top.is_index:
        return []
    missing = [d.digest for d in top.children() if d.digest not in written]
    if missing:
        raise ChaosmirrorError(f"the plan holds no manifest {missing[0]}{f' of {of}' if of else ''}")
    return [written[d.digest] for d in top.children()]


def platform_children(index: Manifest) -> list[Descriptor]:
    """An index's runnable images: entries with a real platform (not buildx attestations)."""
    return [d for d in index.children() if d.platform and d.platform.os != "unknown" and not d.attestation_of]


def attestations(index: Manifest) -> list[Descriptor]:
    """An index's BuildKit attestation manifests (provenance, SBOM), each naming the image it describes."""
    return [d for d in index.children() if d.attestation_of]


def select(index: Manifest, wanted: tuple[Platform, ...]) -> list[Descriptor]:
    """Entries of `index` for the wanted platforms, plus attestations that describe a kept entry."""
    kept = [d for d in platform_children(index) if any(w.matches(d.platform) for w in wanted if d.platform)]
    kept_digests = {d.digest for d in kept}
    return kept + [d for d in attestations(index) if d.attestation_of in kept_digests]


def filter_index(index: Manifest, keep: list[Descriptor]) -> Manifest:
    """A new index with only the `keep` entries, everything else of the original unchanged."""
    digests = {d.digest for d in keep}
    doc = dict(index.doc)
    doc["manifests"] = [m for m in index.doc["manifests"] if m.get("digest") in digests]
    data = json.dumps(doc, indent=3).encode()
    return Manifest(data, index.media_type, sha256_digest(data))
