"""The values every renderer takes: which release, which target, and how HCE and the nodes reach it.

A `ConfigRequest` is built once at the edge (cli → `emit.inputs.gather`) and handed to pure renderers,
each of which returns `Rendered` files: a relative path and its text. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from chaosmirror.auth import ENV_NAMES, HIDDEN, Credential
from chaosmirror.errors import ChaosmirrorError
from chaosmirror.ref import ImageRef, Target
from chaosmirror.release import Image, Release

# Kubernetes object names: a Secret name is a DNS-1123 subdomain, a namespace a DNS-1123 label.
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Harness identifiers (org, project, infrastructure): letters, digits, _ and - , no spaces or quotes.
_IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

Level = Literal["account", "organization", "project", "infrastructure"]
# OpenShift's mirrorSourcePolicy: whether a node may still try the original registry when no mirror has
# the image (config.openshift.io/v1 ImageTagMirrorSet / ImageDigestMirrorSet).
SourcePolicy = Literal["AllowContactingSource", "NeverContactSource"]
SOURCE_POLICIES: tuple[SourcePolicy, ...] = ("AllowContactingSource", "NeverContactSource")


class ConfigError(ChaosmirrorError):
    """Options or inputs that cannot make a consistent configuration (exit code 2)."""


class OutputError(ChaosmirrorError):
    """The configuration could not be written (exit code 1)."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Where HCE keeps the image-registry setting: the account unless an org/project/infra is named."""

    org: str = ""
    project: str = ""
    infra: str = ""

    def __post_init__(self) -> None:
        for option, value in (("--org", self.org), ("--project", self.project), ("--infra", self.infra)):
            if value and not _IDENTIFIER_RE.match(value):
                raise ConfigError(f"{option} {value!r} is not a Harness identifier (letters, digits, _ - .)")
        if self.project and not self.org:
            raise ConfigError("--project needs --org: a Harness project lives in an organization")
        if self.infra and not self.project:
            raise ConfigError("--infra needs --org and --project: an infrastructure lives in a project")

    @property
    def level(self) -> Level:
        if self.infra:
            return "infrastructure"
        if self.project:
            return "project"
        return "organization" if self.org else "account"


@dataclass(frozen=True, kw_only=True)
class Transport:
    """How clients reach the target: TLS checked against the system CAs (default) or `ca_pem`,
    TLS without verification (`skip_verify`), or plain HTTP (`plain_http`)."""

    ca_pem: str = ""
    skip_verify: bool = False
    plain_http: bool = False

    def __post_init__(self) -> None:
        if self.plain_http and (self.skip_verify or self.ca_pem):
            raise ConfigError("a plain-HTTP registry has no TLS settings")

    @property
    def scheme(self) -> str:
        return "http" if self.plain_http else "https"

    @property
    def insecure(self) -> bool:
        """What containers-registries.conf(5) calls `insecure`: plain HTTP or unverified TLS."""
        return self.plain_http or self.skip_verify


@dataclass(frozen=True, kw_only=True)
class ConfigRequest:
    """Everything the registry configuration of one release on one target depends on.

    `digests` maps each destination reference (tag form, as `Target.place` gives it) to the digest
    the target holds there; when set, every image reference the renderers write is pinned to it.
    `node_credentials` puts the credential into the node files that can hold one (RKE2/K3s
    registries.yaml), which are then written as secrets."""

    release: Release
    target: Target
    groups: tuple[str, ...] = ()
    secret_name: str = ""
    namespace: str = "hce"
    scope: Scope = field(default_factory=Scope)
    allow_overrides: bool = False
    default: bool = False
    transport: Transport = field(default_factory=Transport)
    credential: Credential | None = field(default=None, repr=False)
    node_credentials: bool = False
    mirror_source_policy: SourcePolicy = "AllowContactingSource"
    digests: Mapping[ImageRef, str] | None = None

    def __post_init__(self) -> None:
        if self.secret_name and (len(self.secret_name) > 253 or not _SUBDOMAIN_RE.match(self.secret_name)):
            raise ConfigError(
                f"--secret-name {self.secret_name!r} is not a Kubernetes name "
                "(lowercase letters, digits, - and ., starting and ending with a letter or digit)"
            )
        if len(self.namespace) > 63 or not _LABEL_RE.match(self.namespace):
            raise ConfigError(
                f"--namespace {self.namespace!r} is not a Kubernetes namespace "
                "(at most 63 lowercase letters, digits and -, starting and ending with a letter or digit)"
            )
        if self.mirror_source_policy not in SOURCE_POLICIES:
            raise ConfigError(
                f"--mirror-source-policy {self.mirror_source_policy!r}: use one of {', '.join(SOURCE_POLICIES)}"
            )
        if self.node_credentials and self.credential is None:
            user, password = ENV_NAMES["dest"]
            raise ConfigError(
                f"--node-credentials: no credential for {self.target.host} was found; set {user} and "
                f"{password}, or log in with `skopeo login` or `docker login`"
            )
        self.release.images(self.groups)  # an unknown group is an error here, not in a renderer
        if self.digests is not None:
            missing = [i for i in self.images() if self.target.place(i.ref) not in self.digests]
            if missing:
                names = ", ".join(dict.fromkeys(str(self.target.place(i.ref)) for i in missing))
                raise ConfigError(
                    f"no digest for {names}: pin digests with the report of a run that mirrored "
                    f"these images to {self.target} (or choose fewer with --group)"
                )

    @property
    def private(self) -> bool:
        """HCE's registry type: private exactly when a pull-secret name is given."""
        return bool(self.secret_name)

    @property
    def pinned(self) -> bool:
        return self.digests is not None

    def images(self) -> list[Image]:
        """The chosen groups' images (all groups when none are chosen), in manifest order."""
        return self.release.images(self.groups)

    def wants(self, group: str) -> bool:
        """True when `group` is chosen and the release lists images in it."""
        listed = self.release.groups.get(group)
        return (not self.groups or group in self.groups) and listed is not None and bool(listed.images)

    def component(self, group: str, component: str) -> Image | None:
        """The image a group lists for `component`; the last one when the group lists several, and a
        required one before an optional one (a second tag that only one kind of install pulls)."""
        if not self.wants(group):
            return None
        found = [i for i in self.release.groups[group].images if i.component == component]
        found = [i for i in found if not i.optional] or found
        return found[-1] if found else None

    def mirrored(self, ref: ImageRef) -> ImageRef:
        """Where `ref` is in the target: `<server>/<account>/<name>:<tag>`, plus `@digest` when pinned."""
        placed = self.target.place(ref)
        if self.digests is None:
            return placed
        return ImageRef(placed.registry, placed.repository, placed.tag, self.digests[placed])


@dataclass(frozen=True)
class Rendered:
    """One file of the configuration: a path relative to the output folder, and its text.

    A `secret` file holds a credential: it is written readable by its owner only, and never shown."""

    path: str
    text: str = field(repr=False)
    secret: bool = False

    def __repr__(self) -> str:
        shown = HIDDEN if self.secret else f"{len(self.text)} characters"
        return f"Rendered(path={self.path!r}, text={shown}, secret={self.secret})"
