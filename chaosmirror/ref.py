"""Image references: one parsed, immutable value with Docker's normalisation.

`ImageRef.parse("harness/chaos-runner:1.47.0")` is `docker.io/harness/chaos-runner:1.47.0`;
`str()` gives the full form back, so parse(str(ref)) == ref. A `Target` is where images go:
`host[:port][/path]` plus an account, laid out the way HCE composes image names:
`<server>/<account>/<image-name>:<tag>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from chaosmirror.errors import RefError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$"
)


def check_digest(text: str) -> str:
    """Return `text` if it is a sha256 digest (`sha256:` + 64 lowercase hex), else raise RefError."""
    if not _DIGEST_RE.match(text):
        raise RefError(f"not a sha256 digest: {text!r}")
    return text


def is_loopback(host: str) -> bool:
    """True for 127.x.x.x, ::1 and localhost, with or without a port."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    return name in {"localhost", "::1"} or name.startswith("127.")


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part.startswith("[")


@dataclass(frozen=True, order=True)
class ImageRef:
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse `[registry/]repository[:tag][@digest]`, normalising Docker Hub names."""
        original = text
        text = text.strip()
        if not text or any(c.isspace() for c in text):
            raise RefError(f"not an image reference: {original!r}")
        if "://" in text:
            raise RefError(f"not an image reference: {original!r} (leave out the scheme)")
        digest = ""
        if "@" in text:
            text, digest = text.split("@", 1)
            try:
                check_digest(digest)
            except RefError:
                raise RefError(f"{original!r}: {digest!r} is not a sha256 digest") from None
        first, _, rest = text.partition("/")
        if rest and _looks_like_host(first):
            registry, remainder = first, rest
            if not _HOST_RE.match(registry):
                raise RefError(f"{original!r}: {registry!r} is not a registry host")
        else:
            registry, remainder = DOCKER_HUB, text
        tag = ""
        last_slash = remainder.rfind("/")
        colon = remainder.rfind(":")
        if colon > last_slash:
            remainder, tag = remainder[:colon], remainder[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise RefError(f"{original!r}: {tag!r} is not a valid tag")
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in remainder:
            remainder = f"library/{remainder}"
        if not _REPOSITORY_RE.match(remainder):
            raise RefError(
                f"{original!r}: {remainder!r} is not a valid repository name "
                "(lowercase letters, digits and . _ - separators)"
            )
        return cls(registry, remainder, tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """The last path part of the repository: what HCE calls the image name."""
        return self.repository.rsplit("/", 1)[-1]

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the registry API: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        return replace(self, tag="", digest=check_digest(digest))

    def short(self) -> str:
        """The form people write: no docker.io/ and no library/."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text.removeprefix("docker.io/").removeprefix("library/")
        return text


@dataclass(frozen=True)
class Target:
    """A destination registry in HCE's terms: server = host[/path], account = the next path part."""

    host: str
    path: str = ""
    account: str = "harness"

    @classmethod
    def parse(cls, text: str, *, account: str = "harness") -> Target:
        text = text.strip().rstrip("/")
        if "://" in text:
            raise RefError(f"--to {text!r}: give host[:port][/path] without a scheme")
        host, _, path = text.partition("/")
        if not host or not _HOST_RE.match(host):
            raise RefError(f"--to {text!r}: {host!r} is not a registry host[:port]")
        if path and not _REPOSITORY_RE.match(path):
            raise RefError(f"--to {text!r}: {path!r} is not a valid repository path")
        if not account or not _REPOSITORY_RE.match(account):
            raise RefError(f"--account {account!r} is not a valid repository path part")
        return cls(host, path, account)

    @property
    def server(self) -> str:
        """HCE's "registry server": host plus any path, without the account."""
        return f"{self.host}/{self.path}" if self.path else self.host

    def __str__(self) -> str:
        return f"{self.server}/{self.account}"

    def place(self, src: ImageRef) -> ImageRef:
        """Where `src` goes: <server>/<account>/<name>:<tag>, HCE's own rule, so no overrides are needed."""
        repository = "/".join(p for p in (self.path, self.account, src.name) if p)
        return ImageRef(self.host, repository, src.tag)


@dataclass(frozen=True)
class SourceMirror:
    """Read images of `registry` from `host[/path]` instead: docker.io/harness/x -> host/path/harness/x."""

    registry: str
    host: str
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> SourceMirror:
        registry, sep, where = text.partition("=")
        if not sep or not registry or not where:
            raise RefError(f"--source-mirror {text!r}: use REGISTRY=HOST[/PATH], e.g. docker.io=mirror.example.com/hub")
        registry = DOCKER_HUB if registry in _HUB_ALIASES else registry
        target = Target.parse(where)
        return cls(registry, target.host, target.path)

    def apply(self, ref: ImageRef) -> ImageRef:
        if ref.registry != self.registry:
            return ref
        repository = f"{self.path}/{ref.repository}" if self.path else ref.repository
        return replace(ref, registry=self.host, repository=repository)


def pull_ref(ref: ImageRef, mirrors: tuple[SourceMirror, ...]) -> ImageRef:
    """The reference to read `ref` from, after the first source mirror that covers its registry."""
    for mirror in mirrors:
        if mirror.registry == ref.registry:
            return mirror.apply(ref)
    return ref


@dataclass(frozen=True)
class LayoutRef:
    """One image in an OCI image layout on disk, found by its `org.opencontainers.image.ref.name`.

    `shared_blobs`, when set, is where its blobs live instead of `path/blobs` (several layouts
    written side by side share one blob folder, so a shared layer is stored once)."""

    path: Path
    name: str
    shared_blobs: Path | None = None

    def __str__(self) -> str:
        return f"oci:{self.path}:{self.name}"

    def with_digest(self, digest: str) -> LayoutRef:
        """A layout names exactly one manifest per ref name (checked when the bundle is verified)."""
        check_digest(digest)
        return self

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; the digest is validated before it becomes part of a path."""
        hexpart = check_digest(digest).split(":", 1)[1]
        return (self.shared_blobs or self.path / "blobs") / "sha256" / hexpart


@dataclass(frozen=True)
class ArchiveRef:
    """A `docker save` / `docker load` tarball holding one image, tagged `name` inside."""

    path: Path
    name: str

    def __str__(self) -> str:
        return f"docker-archive:{self.path}:{self.name}"


@dataclass(frozen=True)
class DirRef:
    """A folder in skopeo's `dir:` format holding one image's manifests and configs (`staging`)."""

    path: Path

    def __str__(self) -> str:
        return f"dir:{self.path}"


Location = ImageRef | LayoutRef | ArchiveRef | DirRef
