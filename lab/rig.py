"""The loopback rig shared by tests, the demo and the benchmark.

A plain-HTTP `docker-registry` stands in for docker.io and serves stand-in images of a release;
a second one is the target, behind htpasswd auth and TLS with a CA made for the occasion.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lab import standin
from lab.images import Artifact, Attached
from lab.registry import RegistryServer, Tls, make_tls

# Docker Hub stores images whose Windows base layers stay on Microsoft's registry (foreign layers);
# distribution accepts such manifests only for the URLs its configuration allows.
HUB_FOREIGN_URLS = (r"^https://mcr\.microsoft\.com/",)
USER = "mirror-bot"
PASSWORD = "lab-Pa55word-not-for-real-use"


@dataclass
class Rig:
    folder: Path
    source: RegistryServer
    target: RegistryServer
    tls: Tls | None
    artifacts: dict[tuple[str, str], Artifact] = field(default_factory=dict)
    attached: dict[tuple[str, str], list[Attached]] = field(default_factory=dict)  # signatures, referrers

    @property
    def env(self) -> dict[str, str]:
        """What a CI job would set from its secret store."""
        if not self.target.auth:
            return {}
        return {"CHAOSMIRROR_DEST_USERNAME": self.target.auth[0], "CHAOSMIRROR_DEST_PASSWORD": self.target.auth[1]}

    def args(self) -> list[str]:
        """The chaosmirror options that point a copy at this rig."""
        out = ["--to", self.target.host, "--source-mirror", f"docker.io={self.source.host}"]
        if self.tls:
            out += ["--ca-cert", str(self.tls.ca_cert)]
        return out

    def seed(self, repos: list[tuple[str, str]], shape: standin.Shape = standin.SMALL) -> dict[tuple[str, str], str]:
        """Build stand-ins for `(repository, tag)` pairs (and, for a varied shape, what is attached
        to them) and push them to the source."""
        artifacts = standin.build(repos, shape)
        extras = standin.attached(repos, artifacts, shape)
        self.artifacts.update(artifacts)
        self.attached.update(extras)
        return standin.push_all(self.source.host, artifacts, extras)

    def stop(self) -> None:
        self.source.stop()
        self.target.stop()


def start(folder: Path, *, auth: bool = True, tls: bool = True) -> Rig:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    certs = make_tls(folder / "tls") if tls else None
    source = RegistryServer(folder / "source", foreign_urls=HUB_FOREIGN_URLS).start()
    target = RegistryServer(folder / "target", auth=(USER, PASSWORD) if auth else None, tls=certs).start()
    return Rig(folder, source, target, certs)


def release_repos(release_images: list[object]) -> list[tuple[str, str]]:
    """(repository, tag) of each distinct docker.io image in a release's image list."""
    seen: dict[tuple[str, str], None] = {}
    for image in release_images:
        ref = image.ref  # type: ignore[attr-defined]
        seen[(ref.repository, ref.tag)] = None
    return list(seen)
