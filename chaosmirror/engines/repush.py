"""What an engine that pushes new manifests (the Docker engine) can tell about the target.

A daemon pushes one platform's image and writes a new manifest, so the target never holds the
source's digest. The image's config travels unchanged, though: the target holds this image when
the config of what it holds at the tag (of any platform, for an index skopeo put there) is the
config of the platform manifest the copy would push. Pure code, used by `plan.build_plan`.
"""

from __future__ import annotations

from chaosmirror.manifest import attestations, platform_children
from chaosmirror.plan import Action, Observed, Part


def same_config(seen: Observed, parts: tuple[Part, ...]) -> str:
    """Why the target already holds the image `parts` would push (same config), or ""."""
    configs = frozenset(part.config for part in parts if part.config)
    if configs and seen.target_configs and configs <= seen.target_configs:
        return "target already holds this image (same config)"
    return ""


def docker_left_out(seen: Observed, action: Action) -> tuple[str, ...]:
    """What a copy through a Docker daemon leaves out of the source image, in words for the report."""
    selection = action.selection
    if seen.top is None or selection is None or not seen.top.is_index:
        return ()
    kept = {part.digest for part in selection.parts}
    platforms = ", ".join(selection.platforms) or "one platform"
    out = []
    others = [str(d.platform) for d in platform_children(seen.top) if d.digest not in kept]
    if others:
        out.append(f"platforms {', '.join(others)}: the Docker engine keeps one platform per image ({platforms})")
    notes = attestations(seen.top)
    if notes:
        out.append(f"{len(notes)} attestation manifest{'s' if len(notes) > 1 else ''} (build provenance, SBOM): "
                   "they cannot pass through a Docker daemon")  # fmt: skip
    return tuple(out)
