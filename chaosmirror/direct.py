"""A registry-to-registry copy done by chaosmirror's own client: every blob, then every manifest,
byte for byte, so every digest is the source's.

The engines copy images; this finishes a copy the skopeo engine kept failing on transient errors
(a faulty network where each skopeo process's fresh connections keep breaking, while this client,
which keeps its connections and retries each request, gets through). The report says when it did.
"""

from __future__ import annotations

from chaosmirror.errors import ChaosmirrorError, RegistryError
from chaosmirror.manifest import children_in
from chaosmirror.plan import Action, Part
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registries, Registry


def copy_part(action: Action, part: Part, src: ImageRef, dst: ImageRef, registries: Registries) -> str:
    """Copy `part` of `action` from `src` to `dst` (a tag, or a digest for one platform of an index);
    return the digest `dst` now holds."""
    source = registries.for_ref(src, "src")
    dest = registries.for_ref(dst, "dest")
    for digest, size in part.layers:
        if not _present(dest, dst, digest):
            dest.upload_blob(dst, digest, size, lambda d=digest: source.open_blob(src, d))  # type: ignore[misc]
    written = {m.digest: m for m in action.manifests}
    top = written.get(part.digest)
    if top is None:
        raise ChaosmirrorError(f"the plan holds no manifest {part.digest} of {action.item.src}")
    for child in children_in(top, written, of=str(action.item.src)):
        dest.put_manifest(dst.with_digest(child.digest), child)
    return dest.put_manifest(dst, top)


def _present(dest: Registry, dst: ImageRef, digest: str) -> bool:
    """Whether `dst`'s repository holds `digest`. A lookup the registry answers with a server error
    does not decide: the upload is tried, and it says why when it fails too (a HEAD has no body, so
    a registry whose disk is full, and which left a broken link behind, says "500" and nothing more)."""
    try:
        return dest.has_blob(dst, digest)
    except RegistryError as exc:
        if exc.status is None or exc.status < 500 or exc.kind == "storage":
            raise
        return False
