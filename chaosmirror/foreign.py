"""Foreign layers: layers a manifest names by URL (Windows base layers), which registries need not store.

Clients download such a layer from its `urls`; registries keep only the reference. skopeo never
copies one (its registry destination accepts the URLs as they are) and neither does chaosmirror,
so the manifest, and its digest, stay exact. Whether a target accepts the manifest is its own
policy: distribution 2.8 refuses it unless `validation.manifests.urls.allow` lists the URLs ("If
Allow and Deny are empty, allow nothing", registry/handlers/app.go), answering HTTP 500 with
MANIFEST_BLOB_UNKNOWN; Docker Hub accepts Microsoft's. So each manifest with foreign layers is put
by chaosmirror's client first, once, without retrying a refusal: a refusal fails that image with
the reason and what to do, and nothing is written at its tag (never an image without its layer).
"""

from __future__ import annotations

from chaosmirror.errors import ChaosmirrorError, RegistryError
from chaosmirror.manifest import Manifest
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registry


class ForeignRefused(ChaosmirrorError):
    """The target refuses a manifest whose foreign layers it would have to accept by URL."""

    exit_code = 1


def with_foreign(manifests: tuple[Manifest, ...] | list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if not m.is_index and m.foreign_layers()]


def describe(manifest: Manifest) -> str:
    layers = manifest.foreign_layers()
    urls = sorted({u.split("/v2/", 1)[0] for d in layers for u in d.urls})
    return f"{len(layers)} foreign layer{'s' if len(layers) > 1 else ''} (downloaded by clients from {', '.join(urls)})"


def put_first(dest: Registry, repo: ImageRef, manifests: tuple[Manifest, ...] | list[Manifest]) -> None:
    """Put each manifest with foreign layers by digest, unless the target holds it; its other blobs
    must be there already. Raises ForeignRefused when the target will not take one."""
    for manifest in with_foreign(manifests):
        ref = repo.with_digest(manifest.digest)
        if dest.digest(ref, push=True) == manifest.digest:
            continue
        try:
            dest.put_manifest(ref, manifest, retry=False)
        except RegistryError as exc:
            if exc.kind in ("auth", "denied", "storage", "refused", "dns", "tls"):
                raise
            raise ForeignRefused(
                f"{repo.registry} refused manifest {manifest.digest[:19]}, which has "
                f"{describe(manifest)} that registries do not store ({exc}). A registry accepts such a layer only "
                "by its URL: allow the URLs in the target (distribution: validation.manifests.urls.allow in its "
                "config; Harbor and Artifactory accept them), or leave that platform out with --platform "
                "(e.g. --platform linux/amd64). Nothing was written at the tag"
            ) from None
