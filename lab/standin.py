"""Stand-in images for a release: what docker.io would serve, built offline.

Every image shares a base layer with the others (per architecture), images of a pair share a middle
layer, and each has a layer of its own; every `multiarch_every`-th image is a linux/amd64 +
linux/arm64 index. The content is seeded by the reference, so the same release gives the same digests.

With `varied` (the rig's and the demo's release), some images take the other shapes registries
serve (docs/image-shapes.md), by position in the release:

  1  a Docker v2 manifest (Docker media types), with a cosign .sbom
  3  a Docker manifest list of Docker v2 manifests
  4  a single-platform buildx index (one platform and its attestation), with a .sig of the index
  6  a buildx index: two platforms and their attestation manifests; cosign .sig and .att of the
     index, a .sig of each platform (`cosign sign --recursive`), an OCI 1.1 referrer of the index
     (a sigstore bundle) behind its fallback tag
  8  an image whose own layer is an uncompressed tar
  17 an image whose own layer is zstd
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.images import (
    Artifact,
    Attached,
    Image,
    Layer,
    attestation,
    cosign,
    fallback_tag,
    index,
    make_image,
    random_layer,
    referrer,
    referrers_index,
    single,
)
from lab.registry import Client, push

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Shape:
    base: int = 64 * KiB
    middle: int = 32 * KiB
    own: int = 16 * KiB
    multiarch_every: int = 3
    varied: bool = False  # give some images the other shapes (see the module docstring)


SMALL = Shape(varied=True)
# The benchmark's release: 13 images of about 300 MB in all, shared layers, some multi-arch.
BENCH = Shape(base=20 * MiB, middle=8 * MiB, own=10 * MiB, multiarch_every=3, varied=True)

BUILDX, DOCKER_SINGLE, DOCKER_LIST, ONE_PLATFORM, ZSTD, PLAIN_TAR = 6, 1, 3, 4, 17, 8


def build(repos: list[tuple[str, str]], shape: Shape = SMALL, *, salt: str = "") -> dict[tuple[str, str], Artifact]:
    """Artifacts for `(repository, tag)` pairs, e.g. ("harness/chaos-ddcr", "1.47.0")."""
    cache: dict[tuple[str, str], Layer] = {}

    def layer(seed: str, size: int, compression: str = "gzip", docker: bool = False) -> Layer:
        key = (seed, f"{compression}-{docker}")
        if key not in cache:
            cache[key] = random_layer(seed, size, compression=compression, docker=docker)
        return cache[key]

    out: dict[tuple[str, str], Artifact] = {}
    for i, (repo, tag) in enumerate(repos):
        kind = i if shape.varied else -1
        multi = shape.multiarch_every and i % shape.multiarch_every == 0
        arches = ["amd64", "arm64"] if multi else ["amd64"]
        docker = kind in (DOCKER_SINGLE, DOCKER_LIST)
        own = "zstd" if kind == ZSTD else "none" if kind == PLAIN_TAR else "gzip"
        images = []
        for arch in arches:
            layers = [
                layer(f"{salt}base-{arch}", shape.base, docker=docker),
                layer(f"{salt}middle-{i // 2}-{arch}", shape.middle, docker=docker),
                layer(f"{salt}own-{repo}-{tag}-{arch}", shape.own, own, docker),
            ]
            images.append(make_image(layers, arch=arch, labels={"stand-in-for": f"{repo}:{tag}"}, docker=docker))
        out[(repo, tag)] = _shaped(kind, images, docker)
    return out


def _shaped(kind: int, images: list[Image], docker: bool) -> Artifact:
    if kind in (BUILDX, ONE_PLATFORM):
        return index(images, attestations=[attestation(image) for image in images])
    if len(images) == 1:
        return single(images[0])
    return index(images, docker=docker)


def attached(repos: list[tuple[str, str]], artifacts: dict[tuple[str, str], Artifact],
             shape: Shape = SMALL) -> dict[tuple[str, str], list[Attached]]:  # fmt: skip
    """What cosign (and a referrer-writing signer) would have stored next to the varied images."""
    out: dict[tuple[str, str], list[Attached]] = {}
    if not shape.varied:
        return out
    for i, key in enumerate(repos):
        art = artifacts[key]
        name = f"index.docker.io/{key[0]}"
        if i == BUILDX:
            out[key] = [cosign(art.digest, "sig", reference=name), cosign(art.digest, "att", reference=name),
                        *(cosign(image.manifest.digest, "sig", reference=name) for image in art.images),
                        referrer(art.top)]  # fmt: skip
        elif i == DOCKER_SINGLE:
            out[key] = [cosign(art.digest, "sbom", reference=name)]
        elif i == ONE_PLATFORM:
            out[key] = [cosign(art.digest, "sig", reference=name)]
    return out


def push_all(host: str, artifacts: dict[tuple[str, str], Artifact],
             extras: dict[tuple[str, str], list[Attached]] | None = None) -> dict[tuple[str, str], str]:  # fmt: skip
    """Push to a plain-HTTP registry at `host` (and what is attached to them); return each image's digest."""
    digests = {(repo, tag): push(host, repo, tag, art) for (repo, tag), art in artifacts.items()}
    for (repo, _), found in (extras or {}).items():
        push_attached(host, repo, found)
    return digests


def push_attached(host: str, repo: str, found: list[Attached], **client_args: object) -> None:
    """Put attached artifacts in `repo` as cosign does: a tag each; referrers by digest, then the
    fallback tag `sha256-<hex>` listing them (a registry without the referrers API)."""
    referrers: dict[str, list[Attached]] = {}
    for item in found:
        if item.kind == "referrer":
            referrers.setdefault(item.subject, []).append(item)
            push(host, repo, item.digest, item.artifact, **client_args)
        else:
            push(host, repo, item.tag, item.artifact, **client_args)
    client = Client(host, **client_args)  # type: ignore[arg-type]
    try:
        for subject, listed in referrers.items():
            listing = referrers_index(listed)
            client.put_manifest(repo, fallback_tag(subject), listing.data, listing.media_type)
    finally:
        client.close()
