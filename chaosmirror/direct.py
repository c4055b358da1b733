"""A registry-to-registry copy done by chaosmirror's own client: every blob, then every manifest,
byte for byte, so every digest is the source's.

The engines copy images; this finishes a copy the skopeo engine kept failing on transient errors
(a faulty network where each skopeo process's fresh connections keep breaking, while this client,
which keeps its connections and retries each request, gets through). The report says when it did.
"""

from __future__ import annotations

from chaosmirror.errors import ChaosmirrorError
from chaosmirror.manifest import children_in
from chaosmirror.plan import Action, Part
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registries


def copy_part(action: Action, part: Part, src: ImageRef, dst: ImageRef, registries: Registries) -> str:
    """Copy `part` of `action` from `src` to `dst` (a tag, or a digest for one platform of an index);
    return the digest `dst` now holds."""
    source = registries.for_ref(src, "src")
    dest = registries.for_ref(dst, "dest")
    for digest, size in part.layers:
        if not dest.has_blob(dst, digest):
            dest.upload_blob(dst, digest, size, lambda d=digest: source.open_blob(src, d))  # type: ignore[misc]
    written = {m.digest: m for m in action.manifests}
    top = written.get(part.digest)
    if top is None:
        raise ChaosmirrorError(f"the plan holds no manifest {part.digest} of {action.item.src}")
    for child in children_in(top, written, of=str(action.item.src)):
        dest.put_manifest(dst.with_digest(child.digest), child)
    return dest.put_manifest(dst, top)
