"""Small, real container images built with the standard library.

Tests, the demo and the benchmark cannot reach docker.io, so they build stand-in images here, in
every shape registries serve: OCI and Docker v2 manifests and indexes, gzip'd, zstd and plain tar
layers, foreign (non-distributable) layers that registries do not store, BuildKit attestation
manifests inside an index, cosign signature tags and OCI 1.1 referrers. Everything is
deterministic for a given seed, so digests are stable from run to run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"  # Windows base layers
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SPDX = "text/spdx+json"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SLSA = "https://slsa.dev/provenance/v0.2"
SPDX_PREDICATE = "https://spdx.dev/Document"


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
    urls: tuple[str, ...] = ()  # a foreign layer: clients fetch it from here, registries do not store it
    annotations: tuple[tuple[str, str], ...] = ()

    def descriptor(self) -> dict[str, object]:
        extra: dict[str, object] = {"urls": list(self.urls)} if self.urls else {}
        if self.annotations:
            extra["annotations"] = dict(self.annotations)
        return self.blob.descriptor(**extra)


def zstd_frame(data: bytes) -> bytes:
    """`data` as one zstd frame of raw (stored) blocks: valid zstd (RFC 8878) that any decoder reads,
    written without a compressor (the standard library has none)."""
    header = struct.pack("<IB", 0xFD2FB528, 0b1110_0000) + struct.pack("<Q", len(data))  # single segment, 8-byte size
    blocks = []
    chunks = [data[i : i + 128 * 1024] for i in range(0, len(data), 128 * 1024)] or [b""]
    for n, chunk in enumerate(chunks):
        last = 1 if n == len(chunks) - 1 else 0
        blocks.append(struct.pack("<I", last | (len(chunk) << 3))[:3] + chunk)  # block type 0: raw
    return header + b"".join(blocks)


def _tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def make_layer(files: dict[str, bytes], *, level: int = 1, compression: str = "gzip", docker: bool = False,
               urls: tuple[str, ...] = ()) -> Layer:  # fmt: skip
    """A tar holding `files` (gzip'd, zstd or plain), with fixed metadata so the digest depends only on
    content. With `urls`, a foreign layer (Docker's type for Windows base layers, always gzip)."""
    tar_bytes = _tar(files)
    if compression == "zstd":
        data, media_type = zstd_frame(tar_bytes), MT_LAYER_ZSTD
    elif compression == "none":
        data, media_type = tar_bytes, MT_LAYER_TAR
    else:
        data = gzip.compress(tar_bytes, compresslevel=level, mtime=0)
        media_type = DOCKER_FOREIGN if urls else DOCKER_LAYER if docker else MT_LAYER
    return Layer(Blob(media_type, data), sha256(tar_bytes), urls)


def random_layer(seed: str, size: int, **options: object) -> Layer:
    """A layer with one file of `size` incompressible bytes, like a real binary-heavy layer."""
    rng = random.Random(seed)
    return make_layer({f"opt/{seed}.bin": rng.randbytes(size)}, **options)  # type: ignore[arg-type]


def foreign_layer(seed: str, size: int) -> Layer:
    """A Windows-style base layer that registries do not store: its manifest entry names where
    clients download it (Microsoft's registry, as for the servercore and nanoserver bases)."""
    blob = random_layer(seed, size).blob
    url = f"https://mcr.microsoft.com/v2/windows/servercore/blobs/{blob.digest}"
    return random_layer(seed, size, urls=(url,))


@dataclass(frozen=True)
class Image:
    """One manifest: a platform's image (or an attestation manifest) plus every blob a registry stores
    for it (its config and layers, but no foreign layer)."""

    manifest: Blob
    blobs: tuple[Blob, ...]
    platform: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)  # on its entry in an index

    @property
    def is_attestation(self) -> bool:
        return self.annotations.get("vnd.docker.reference.type") == "attestation-manifest"


def make_image(
    layers: list[Layer],
    *,
    os: str = "linux",
    arch: str = "amd64",
    variant: str = "",
    os_version: str = "",
    labels: dict[str, str] | None = None,
    docker: bool = False,
) -> Image:
    platform = {"os": os, "architecture": arch} | ({"variant": variant} if variant else {})
    platform |= {"os.version": os_version} if os_version else {}
    config = {
        **platform,
        "config": {"Labels": labels or {}, "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "created": "2024-01-01T00:00:00Z",
    }
    config_blob = Blob(DOCKER_CONFIG if docker else MT_CONFIG, json.dumps(config, sort_keys=True).encode())
    media_type = DOCKER_MANIFEST if docker else MT_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    stored = tuple(layer.blob for layer in layers if not layer.urls)
    return Image(Blob(media_type, json.dumps(manifest).encode()), (config_blob, *stored), platform)


def attestation(image: Image, *, sbom: bool = True) -> Image:
    """BuildKit's attestation manifest for `image` (`docker buildx build`, default since buildx 0.10):
    in-toto statements (SLSA provenance, and an SPDX SBOM) as layers, platform unknown/unknown in the
    index, annotated with the digest of the image it describes."""
    subject = [{"name": "_", "digest": {"sha256": image.manifest.digest.split(":", 1)[1]}}]
    statements = [(SLSA, {"builder": {"id": "https://github.com/docker/buildx"}})]
    if sbom:
        statements.append((SPDX_PREDICATE, {"spdxVersion": "SPDX-2.3", "name": "sbom"}))
    layers = []
    for kind, predicate in statements:
        doc = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": kind, "subject": subject,
               "predicate": predicate}  # fmt: skip
        data = json.dumps(doc).encode()
        layers.append(Layer(Blob(IN_TOTO, data), sha256(data), annotations=(("in-toto.io/predicate-type", kind),)))
    config = {"architecture": "unknown", "os": "unknown", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}  # fmt: skip
    config_blob = Blob(MT_CONFIG, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_blob.descriptor(),
                "layers": [layer.descriptor() for layer in layers]}  # fmt: skip
    notes = {"vnd.docker.reference.digest": image.manifest.digest, "vnd.docker.reference.type": "attestation-manifest"}
    return Image(Blob(MT_MANIFEST, json.dumps(manifest).encode()), (config_blob, *(la.blob for la in layers)),
                 {"os": "unknown", "architecture": "unknown"}, notes)  # fmt: skip


@dataclass(frozen=True)
class Artifact:
    """What a tag points at: one image, or an index over several platform images (and, from buildx,
    their attestation manifests, `extras`)."""

    top: Blob
    images: tuple[Image, ...]
    extras: tuple[Image, ...] = ()

    @property
    def digest(self) -> str:
        return self.top.digest

    def all_blobs(self) -> list[Blob]:
        seen: dict[str, Blob] = {}
        for image in (*self.images, *self.extras):
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())

    def manifests(self) -> list[Blob]:
        """Child manifests first, so a registry accepts the index that references them."""
        children = [image.manifest for image in (*self.images, *self.extras)]
        return children if children == [self.top] else [*children, self.top]


def single(image: Image) -> Artifact:
    return Artifact(image.manifest, (image,))


def index(images: list[Image], *, attestations: list[Image] | None = None, docker: bool = False) -> Artifact:
    """An OCI index (or, `docker`, a Docker manifest list) over `images`, then any attestations."""
    extras = attestations or []
    entries = []
    for image in [*images, *extras]:
        extra: dict[str, object] = {"platform": image.platform}
        if image.annotations:
            extra["annotations"] = image.annotations
        entries.append(image.manifest.descriptor(**extra))
    media_type = DOCKER_LIST if docker else MT_INDEX
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return Artifact(Blob(media_type, json.dumps(doc).encode()), tuple(images), tuple(extras))


# --- what is stored next to an image: cosign tags and OCI 1.1 referrers ----------------------------


@dataclass(frozen=True)
class Attached:
    """An artifact about the manifest `subject`, stored in the image's repository: a cosign tag
    (`kind` sig, att or sbom, at `sha256-<hex>.<kind>`) or an OCI 1.1 referrer (`kind` referrer: a
    manifest with a `subject`, put by digest and listed in the fallback tag `sha256-<hex>`)."""

    kind: str
    subject: str
    artifact: Artifact

    @property
    def tag(self) -> str:
        return "" if self.kind == "referrer" else cosign_tag(self.subject, self.kind)

    @property
    def digest(self) -> str:
        return self.artifact.digest


def cosign_tag(subject: str, kind: str) -> str:
    return f"{subject.replace(':', '-')}.{kind}"


def _artifact(layers: list[Layer], *, config: Blob, extra: dict[str, object] | None = None) -> Artifact:
    doc = {"schemaVersion": 2, "mediaType": MT_MANIFEST, **(extra or {}), "config": config.descriptor(),
           "layers": [layer.descriptor() for layer in layers]}  # fmt: skip
    image = Image(Blob(MT_MANIFEST, json.dumps(doc).encode()), (config, *(la.blob for la in layers)), {})
    return single(image)


def cosign(subject: str, kind: str, *, reference: str, seed: str = "") -> Attached:
    """What `cosign sign` (`sig`), `cosign attest` (`att`) or `cosign attach sbom` (`sbom`) stores
    for `subject`: an OCI manifest whose layer is the payload, with the signature in annotations."""
    fake_sig = base64.b64encode(hashlib.sha256(f"{seed}{subject}{kind}".encode()).digest()).decode()
    if kind == "sig":
        payload = {"critical": {"identity": {"docker-reference": reference},
                                "image": {"docker-manifest-digest": subject},
                                "type": "cosign container image signature"}, "optional": None}  # fmt: skip
        media_type, notes = COSIGN_SIGNATURE, (("dev.cosignproject.cosign/signature", fake_sig),)
    elif kind == "att":
        statement = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": SLSA,
                     "subject": [{"name": reference, "digest": {"sha256": subject.split(":", 1)[1]}}]}  # fmt: skip
        payload = {"payloadType": "application/vnd.in-toto+json",
                   "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
                   "signatures": [{"sig": fake_sig}]}  # fmt: skip
        media_type, notes = DSSE, (("dev.cosignproject.cosign/signature", ""), ("predicateType", SLSA))
    elif kind == "sbom":
        payload = {"spdxVersion": "SPDX-2.3", "name": reference, "documentDescribes": [subject]}
        media_type, notes = SPDX, ()
    else:
        raise ValueError(f"unknown cosign kind {kind!r}")
    data = json.dumps(payload).encode()
    layer = Layer(Blob(media_type, data), sha256(data), annotations=notes)
    config = {"architecture": "", "created": "0001-01-01T00:00:00Z", "os": "", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}  # fmt: skip
    return Attached(kind, subject, _artifact([layer], config=Blob(MT_CONFIG, json.dumps(config).encode())))


def referrer(subject: Blob, *, seed: str = "") -> Attached:
    """A cosign 3 style sigstore bundle as an OCI 1.1 referrer of `subject` (artifactType, an empty
    config, a `subject` descriptor)."""
    bundle = {"mediaType": SIGSTORE_BUNDLE, "messageSignature": {"messageDigest": {"algorithm": "SHA2_256",
              "digest": base64.b64encode(bytes.fromhex(subject.digest.split(":", 1)[1])).decode()},
              "signature": base64.b64encode(f"{seed}sig".encode()).decode()}}  # fmt: skip
    data = json.dumps(bundle).encode()
    layer = Layer(Blob(SIGSTORE_BUNDLE, data), sha256(data))
    extra = {"artifactType": SIGSTORE_BUNDLE, "subject": subject.descriptor(),
             "annotations": {"dev.sigstore.bundle.content": "message-signature"}}  # fmt: skip
    return Attached("referrer", subject.digest, _artifact([layer], config=Blob(MT_EMPTY, b"{}"), extra=extra))


def referrers_index(referrers: list[Attached]) -> Blob:
    """The fallback tag's index (`sha256-<hex>`) listing `referrers` of one subject, as a client
    writes it to a registry without the referrers API (OCI distribution-spec 1.1, "Unavailable
    Referrers API")."""
    entries = []
    for ref in referrers:
        doc = json.loads(ref.artifact.top.data)
        extra = {"artifactType": doc["artifactType"]}
        if "annotations" in doc:
            extra["annotations"] = doc["annotations"]
        entries.append(ref.artifact.top.descriptor(**extra))
    return Blob(MT_INDEX, json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}).encode())


def fallback_tag(subject: str) -> str:
    return subject.replace(":", "-")


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
