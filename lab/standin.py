"""Stand-in images for a release: what docker.io would serve, built offline.

Every image shares a base layer with the others (per architecture), images of a pair share a middle
layer, and each has a layer of its own; every `multiarch_every`-th image is a linux/amd64 +
linux/arm64 index. The content is seeded by the reference, so the same release gives the same digests.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.images import Artifact, Layer, index, make_image, random_layer, single
from lab.registry import push

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Shape:
    base: int = 64 * KiB
    middle: int = 32 * KiB
    own: int = 16 * KiB
    multiarch_every: int = 3


SMALL = Shape()
# The benchmark's release: 13 images of about 300 MB in all, shared layers, some multi-arch.
BENCH = Shape(base=20 * MiB, middle=8 * MiB, own=10 * MiB, multiarch_every=3)


def build(repos: list[tuple[str, str]], shape: Shape = SMALL, *, salt: str = "") -> dict[tuple[str, str], Artifact]:
    """Artifacts for `(repository, tag)` pairs, e.g. ("harness/chaos-ddcr", "1.47.0")."""
    cache: dict[str, Layer] = {}

    def layer(seed: str, size: int) -> Layer:
        if seed not in cache:
            cache[seed] = random_layer(seed, size)
        return cache[seed]

    out: dict[tuple[str, str], Artifact] = {}
    for i, (repo, tag) in enumerate(repos):
        arches = ["amd64", "arm64"] if shape.multiarch_every and i % shape.multiarch_every == 0 else ["amd64"]
        images = []
        for arch in arches:
            layers = [
                layer(f"{salt}base-{arch}", shape.base),
                layer(f"{salt}middle-{i // 2}-{arch}", shape.middle),
                layer(f"{salt}own-{repo}-{tag}-{arch}", shape.own),
            ]
            images.append(make_image(layers, arch=arch, labels={"stand-in-for": f"{repo}:{tag}"}))
        out[(repo, tag)] = single(images[0]) if len(images) == 1 else index(images)
    return out


def push_all(host: str, artifacts: dict[tuple[str, str], Artifact]) -> dict[tuple[str, str], str]:
    """Push to a plain-HTTP registry at `host`; return each image's digest."""
    return {(repo, tag): push(host, repo, tag, art) for (repo, tag), art in artifacts.items()}
