"""Fixtures: real loopback registries with stand-in images, and a way to run the CLI against them.

Every tool a test needs must be installed (`make setup` installs them): a missing one fails the
test with the command that fixes it, it never skips silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chaosmirror.cli import cli
from chaosmirror.release import Catalog, bundled_dir
from lab import rig as lab_rig
from lab.dockerd import DockerDaemon
from lab.registry import Client

REPO_ROOT = Path(__file__).resolve().parent.parent


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: run `make setup` (apt packages skopeo, docker-registry, "
            "apache2-utils, openssl)",
            pytrace=False,
        )


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (`256k`, `4m`) mounted on `folder` (made if missing) for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs and must run as root: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="session")
def release_147() -> object:
    return Catalog(bundled_dir()).load("1.47.0")


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory, release_147: object) -> Iterator[lab_rig.Rig]:
    """Source (stand-in for docker.io, plain HTTP) with 1.47.0's images; target with TLS + htpasswd."""
    require("docker-registry", "skopeo", "htpasswd", "openssl")
    the_rig = lab_rig.start(tmp_path_factory.mktemp("rig"))
    the_rig.seed(lab_rig.release_repos(release_147.images()))  # type: ignore[attr-defined]
    yield the_rig
    the_rig.stop()


@dataclass
class Run:
    """One CLI invocation and everything it printed."""

    result: Result
    report: dict[str, object] | None

    @property
    def code(self) -> int:
        return self.result.exit_code

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@pytest.fixture
def account() -> str:
    """A fresh account (path) in the target per test, so tests share one target without clashing."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def chaosmirror(rig: lab_rig.Rig, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run `chaosmirror ARGS` in-process with the rig's credentials; returns a Run with the report."""

    def run(*args: str, env: dict[str, str] | None = None, report: bool = True) -> Run:
        path = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
        argv = [*args, *(["--report", str(path)] if report else [])]
        result = CliRunner().invoke(cli, argv, env={**rig.env, **(env or {})}, catch_exceptions=False)
        doc = json.loads(path.read_text()) if report and path.exists() else None
        return Run(result, doc)

    return run


@pytest.fixture
def target_client(rig: lab_rig.Rig) -> Iterator[Client]:
    client = Client(rig.target.host, tls=rig.tls, auth=rig.target.auth)
    yield client
    client.close()


def source_digests(rig: lab_rig.Rig, release: str | None = None) -> dict[str, str]:
    """name:tag -> digest of every stand-in image in the source (of `release`'s images only, when
    given: other tests add stand-ins of their own to the shared rig)."""
    wanted = None
    if release:
        wanted = set(lab_rig.release_repos(Catalog(bundled_dir()).load(release).images()))
    return {f"{repo.split('/')[-1]}:{tag}": art.digest for (repo, tag), art in rig.artifacts.items()
            if wanted is None or (repo, tag) in wanted}  # fmt: skip


def write_manifest(folder: Path, release: str, images: list[tuple[str, str, str]]) -> Path:
    """A small release manifest: (group, component, image) triples."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict[str, str]]] = {}
    for group, component, image in images:
        groups.setdefault(group, []).append({"component": component, "image": image})
    doc = {
        "schema": "chaosmirror.release/v1",
        "release": release,
        "sources": {"test": {"title": "a test"}},
        "groups": {g: {"source": "test", "images": imgs} for g, imgs in groups.items()},
    }
    (folder / f"{release}.yaml").write_text(json.dumps(doc))
    return folder


@pytest.fixture(autouse=True)
def _no_user_auth_files(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's own registry credentials."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "XDG_RUNTIME_DIR",
        "CHAOSMIRROR_MANIFESTS",
        "CHAOSMIRROR_SRC_USERNAME",
        "CHAOSMIRROR_SRC_PASSWORD",
        "CHAOSMIRROR_DEST_USERNAME",
        "CHAOSMIRROR_DEST_PASSWORD",
        "CHAOSMIRROR_ENGINE",
    ):
        monkeypatch.delenv(var, raising=False)
    os.environ.pop("CHAOSMIRROR_MANIFESTS", None)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A private Docker daemon (its own socket, data root and containerd), stopped after the session."""
    require("dockerd", "docker", "containerd")
    with DockerDaemon(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


@pytest.fixture
def daemon_trusts_target(rig: lab_rig.Rig, dockerd: DockerDaemon) -> Iterator[None]:
    """The daemon trusts the rig target's CA the way Docker is configured to: /etc/docker/certs.d/HOST/ca.crt.
    (dockerd has no flag to move that folder; the port is random, so nothing else uses this entry. It is
    removed after each test: chaosmirror reads that folder too, and other tests need the CA untrusted.)"""
    assert rig.tls is not None
    folder = Path("/etc/docker/certs.d") / rig.target.host
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rig.tls.ca_cert, folder / "ca.crt")
    yield
    shutil.rmtree(folder, ignore_errors=True)
