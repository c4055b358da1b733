"""Small, real container images built with the standard library.

Tests, the demo and the benchmark cannot reach docker.io, so they build stand-in images here:
gzip'd tar layers, OCI configs and manifests, multi-arch indexes, and layers shared between images.
Everything is deterministic for a given seed, so digests are stable from run to run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str


def make_layer(files: dict[str, bytes], *, level: int = 1) -> Layer:
    """A gzip'd tar holding `files`, with fixed metadata so the digest depends only on content."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return Layer(Blob(MT_LAYER, gzip.compress(tar_bytes, compresslevel=level, mtime=0)), sha256(tar_bytes))


def random_layer(seed: str, size: int) -> Layer:
    """A layer with one file of `size` incompressible bytes, like a real binary-heavy layer."""
    rng = random.Random(seed)
    return make_layer({f"opt/{seed}.bin": rng.randbytes(size)})


@dataclass(frozen=True)
class Image:
    """One platform's image: its manifest blob plus every blob it references."""

    manifest: Blob
    blobs: tuple[Blob, ...]
    platform: dict[str, str]


def make_image(
    layers: list[Layer],
    *,
    os: str = "linux",
    arch: str = "amd64",
    variant: str = "",
    labels: dict[str, str] | None = None,
) -> Image:
    platform = {"os": os, "architecture": arch} | ({"variant": variant} if variant else {})
    config = {
        **platform,
        "config": {"Labels": labels or {}, "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "created": "2024-01-01T00:00:00Z",
    }
    config_blob = Blob(MT_CONFIG, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    return Image(
        Blob(MT_MANIFEST, json.dumps(manifest).encode()), (config_blob, *(layer.blob for layer in layers)), platform
    )


@dataclass(frozen=True)
class Artifact:
    """What a tag points at: one image, or an index over several platform images."""

    top: Blob
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return self.top.digest

    def all_blobs(self) -> list[Blob]:
        seen: dict[str, Blob] = {}
        for image in self.images:
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())

    def manifests(self) -> list[Blob]:
        """Child manifests first, so a registry accepts the index that references them."""
        children = [image.manifest for image in self.images]
        return children if children == [self.top] else [*children, self.top]


def single(image: Image) -> Artifact:
    return Artifact(image.manifest, (image,))


def index(images: list[Image]) -> Artifact:
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [image.manifest.descriptor(platform=image.platform) for image in images],
    }
    return Artifact(Blob(MT_INDEX, json.dumps(doc).encode()), tuple(images))


def write_oci_layout(path: Path, artifacts: dict[str, Artifact]) -> None:
    """Write an OCI image layout at `path`, one index.json entry per ref name."""
    blobs_dir = path / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for name, art in artifacts.items():
        for blob in [*art.all_blobs(), *art.manifests()]:
            target = blobs_dir / blob.digest.split(":", 1)[1]
            if not target.exists():
                target.write_bytes(blob.data)
        entries.append(art.top.descriptor(annotations={"org.opencontainers.image.ref.name": name}))
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
