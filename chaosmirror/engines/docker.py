"""The Docker Engine engine: copies through a Docker daemon with the docker SDK. The only module that
imports `docker`.

Pull (by digest, so the platform is exact), tag to the HCE name, push. What a daemon cannot do is
said up front: its image store keeps one platform per image and a push writes a new manifest, so
digests change (`exact = False`); the digest actually pushed is what `copy` returns and what the
report records. Credentials go to the SDK as `auth_config`, never through `docker login`. The daemon
trusts registries as it is configured to (`/etc/docker/certs.d/HOST/ca.crt`, `insecure-registries`;
loopback registries may be plain HTTP); chaosmirror does not change its configuration.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from chaosmirror.auth import Role, hint
from chaosmirror.engines.goerrors import classify_message
from chaosmirror.errors import EngineError, Kind
from chaosmirror.manifest import Descriptor, Manifest, Platform
from chaosmirror.ref import ArchiveRef, DirRef, ImageRef, LayoutRef, Location
from chaosmirror.registry import Registries

TIMEOUT = 3600
# What a daemon's push takes from the target as it is, found by digest: the image config it pulled
# (the same bytes), and gzip layers, whose digest it remembers from the pull and asks the target
# for before compressing the layer again (moby distribution/push_v2.go, layerAlreadyExists). It
# writes every layer it finds as a gzip layer, so a layer of another kind is left to its push.
REUSED = frozenset({
    "application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip",
})  # fmt: skip


def explain_daemon(exc: BaseException, host: str) -> str:
    """One clear sentence for each way of not reaching the daemon."""
    text = str(exc)
    if "Permission denied" in text or isinstance(exc.__cause__, PermissionError) or "PermissionError" in text:
        return (f"permission denied on the Docker socket ({host}): add your user to the docker group and log in "
                "again, or run as root")  # fmt: skip
    return (f"cannot reach the Docker daemon at {host}: is it running? Start it, or set DOCKER_HOST to where it "
            f"listens (or install skopeo and use --engine skopeo) [{text[:200]}]")  # fmt: skip


def stream_error(message: str, ref: object, role: Role) -> EngineError:
    """The daemon's error message as an EngineError with its kind and advice. The daemon reports the
    registry's error code ("toomanyrequests: ...") and Go's network errors in their fixed forms."""
    kind: Kind = classify_message(message)
    if kind == "rate-limited":
        text = (f"{ref}: the registry's pull rate limit was hit ({message}); log in "
                f"({hint(role)}), wait, or read through --source-mirror")  # fmt: skip
    elif kind in ("auth", "denied"):
        text = f"{ref}: access denied ({message}); {hint(role)}"
    elif kind == "tls":
        text = (f"{ref}: the Docker daemon does not trust the registry's certificate ({message}); put its CA in "
                "/etc/docker/certs.d/HOST/ca.crt on the daemon's machine")  # fmt: skip
    elif kind == "not-found" or "not found" in message:
        kind, text = "not-found", f"{ref} not found ({message})"
    else:
        text = f"{ref}: {message}"
    return EngineError(text, kind=kind)


def explain_stream(message: str, ref: object, role: Role) -> str:
    return str(stream_error(message, ref, role))


class DockerEngine:
    """Copies through one Docker daemon; safe to call from several threads."""

    name = "docker"
    exact = False  # one platform per image, new manifests on push
    stages = False

    def __init__(self, registries: Registries, *, client: Any = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.registries = registries
        self.host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self.on_bytes = on_bytes
        try:
            self.client: Any = client or docker.from_env(timeout=TIMEOUT)
            self.client.ping()
            version = self.client.version()
        except (DockerException, OSError) as exc:
            raise EngineError(explain_daemon(exc, self.host)) from None
        self.platform: Platform | None = Platform(str(version.get("Os", "linux")), str(version.get("Arch", "amd64")))
        self.version = str(version.get("Version", ""))
        self._lock = threading.Lock()
        self._loaded: set[Path] = set()
        self._added: set[str] = set()  # names this run created in the daemon; removed on close

    def close(self) -> None:
        for name in sorted(self._added, key=lambda n: "@" in n):  # tags first, then pulled digests
            with contextlib.suppress(APIError, DockerException):  # in use by another name, or gone: both fine
                self.client.api.remove_image(name, noprune=False)
        self.client.close()

    # --- the Engine interface -------------------------------------------------------------------

    def copy(self, src: Location, dst: Location) -> str:
        if isinstance(src, LayoutRef | DirRef) or isinstance(dst, LayoutRef | DirRef):
            raise EngineError("the Docker engine cannot read or write OCI layouts: use --engine skopeo, or "
                              "--format docker-archive for bundles")  # fmt: skip
        image = self._pull(src) if isinstance(src, ImageRef) else self._load(src)
        if isinstance(dst, ArchiveRef):
            self.save([(image, dst.name)], dst.path)
            return ""
        return self._push(image, dst)

    def refuses(self, manifests: list[Manifest]) -> str:
        """zstd layers need Docker Engine 23.0 or later (moby/moby#41759: "Add support for pulling
        zstd compressed layers", in the 23.0.0 release notes); 20.10 fails to unpack them."""
        zstd = [d for m in manifests if not m.is_index for d in m.blobs() if d.media_type.endswith("+zstd")
                or d.media_type.endswith(".zstd")]  # fmt: skip
        if zstd and _major(self.version) < 23:
            return (f"the image has {len(zstd)} zstd-compressed layer{'s' if len(zstd) > 1 else ''}, which Docker "
                    f"{self.version} cannot unpack (Docker Engine 23.0 can): use --engine skopeo, which copies "
                    "layers as they are")  # fmt: skip
        return ""

    def reuses(self, blob: Descriptor) -> bool:
        return blob.media_type in REUSED and not blob.foreign

    def save(self, images: Iterable[tuple[str, str]], path: Path) -> None:
        """`docker save` several (image id, name) pairs into one archive: shared layers are stored once."""
        names = []
        for image, name in images:
            self._tag(image, ImageRef.parse(name))
            names.append(_daemon_name(ImageRef.parse(name)))
        api = self.client.api  # the SDK saves one image at a time; the Engine API takes several names
        try:
            response = api.get(f"{api.base_url}/v{api.api_version}/images/get", params={"names": names}, stream=True)
            if response.status_code != 200:
                raise APIError(response.text[:300])
            with open(path, "wb") as out:
                for chunk in response.iter_content(2 * 1024 * 1024):
                    out.write(chunk)
        except (APIError, DockerException, OSError) as exc:
            raise EngineError(f"docker save of {len(names)} images failed: {exc}") from None

    def prepare(self, src: ImageRef) -> str:
        """Pull `src` (for a later `save`); returns the daemon's image id."""
        return self._pull(src)

    # --- daemon operations ------------------------------------------------------------------------

    def _auth(self, ref: ImageRef, role: Role) -> dict[str, str] | None:
        cred = self.registries.get(ref.registry, role).endpoint.credential
        if cred is None:
            return None
        return {"username": cred.username, "password": cred.password, "serveraddress": ref.registry}

    def _follow(self, events: Iterator[dict[str, Any]], ref: object, role: Role) -> dict[str, Any]:
        """Drain a pull/push stream: raise on its error, feed progress, return the last `aux`."""
        aux: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for event in events:
            if self.registries.run.stopped:  # leaving the stream closes it: the daemon drops the transfer
                raise self.registries.run.interrupted()
            if "error" in event:
                raise stream_error(str(event["error"]), ref, role)
            if event.get("aux"):
                aux = event["aux"]
            detail = event.get("progressDetail") or {}
            if self.on_bytes and "current" in detail and event.get("id"):
                layer = str(event["id"])
                step = int(detail["current"]) - seen.get(layer, 0)
                seen[layer] = int(detail["current"])
                if step > 0:
                    self.on_bytes(step)
        return aux

    def _pull(self, ref: ImageRef) -> str:
        repository = f"{ref.registry}/{ref.repository}"
        name = f"{repository}@{ref.digest}" if ref.digest else str(ref)
        try:
            self.client.images.get(name)
        except ImageNotFound:
            with self._lock:
                self._added.add(name)  # not here before this run: removed again on close
        except (APIError, DockerException):
            pass
        try:
            events = self.client.api.pull(repository, tag=ref.reference, stream=True, decode=True,
                                          auth_config=self._auth(ref, "src"))  # fmt: skip
            self._follow(events, ref, "src")
            return str(self.client.images.get(name).id)
        except (APIError, ImageNotFound) as exc:
            raise stream_error(str(exc.explanation or exc), ref, "src") from None
        except DockerException as exc:
            raise EngineError(explain_daemon(exc, self.host)) from None

    def _load(self, archive: ArchiveRef) -> str:
        with self._lock:
            if archive.path not in self._loaded:
                try:
                    with open(archive.path, "rb") as data:
                        self.client.images.load(data)
                except (APIError, DockerException, OSError) as exc:
                    raise EngineError(f"docker load of {archive.path} failed: {exc}") from None
                self._loaded.add(archive.path)
        try:
            return str(self.client.images.get(_daemon_name(ImageRef.parse(archive.name))).id)
        except (APIError, ImageNotFound):
            raise EngineError(f"{archive.path} holds no image named {archive.name}") from None

    def _tag(self, image: str, ref: ImageRef) -> None:
        if not ref.tag or ref.digest:
            # A daemon tags and pushes names with tags; it cannot push to a digest (it writes a new manifest).
            raise EngineError(f"the Docker engine pushes to a tag, not to {ref}: it writes a new manifest, so "
                              "no source digest can be kept")  # fmt: skip
        repository = ImageRef(ref.registry, ref.repository)
        name = f"{repository.short()}:{ref.tag}"
        try:
            self.client.api.tag(image, repository.short(), ref.tag)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot tag {image[:19]} as {name}: {exc}") from None
        with self._lock:
            self._added.add(name)

    def _push(self, image: str, dst: ImageRef) -> str:
        self._tag(image, dst)
        try:
            events = self.client.api.push(f"{dst.registry}/{dst.repository}", tag=dst.tag, stream=True, decode=True,
                                          auth_config=self._auth(dst, "dest"))  # fmt: skip
            aux = self._follow(events, dst, "dest")
        except (APIError, DockerException) as exc:
            raise stream_error(str(exc), dst, "dest") from None
        digest = str(aux.get("Digest", ""))
        if not digest.startswith("sha256:"):
            raise EngineError(f"the daemon pushed {dst} but reported no digest")
        return digest


def _major(version: str) -> int:
    """The major number of a daemon version ("20.10.24+dfsg1" is 20); 0 when unreadable."""
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


def _daemon_name(ref: ImageRef) -> str:
    """How the daemon names a reference: docker.io/library/x:1 is x:1, docker.io/a/b:1 is a/b:1."""
    return ref.short()
