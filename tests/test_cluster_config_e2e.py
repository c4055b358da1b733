"""RKE2/K3s, OpenShift and Docker configuration, resolved against real registries.

For each layout the issue names (`--account harness`, `--account chaos`, a target with a path), 1.47.0's
stand-ins are mirrored into a fresh TLS + password registry of its own (so no other layout's copy can
answer for it), and `chaosmirror config` writes the files for it. Then:

- RKE2/K3s: the strict reader (tests/k3s_registries.py) turns every original name into the requests
  containerd would make; the first one, made for real with the CA and credential registries.yaml
  names, must return the image's digest.
- OpenShift: both mirror sets pass the CRD schemas, and every original name, by tag and by digest,
  goes through the source -> mirror rule (tests/openshift_mirrors.py) to a reference the registry holds.
- Docker: a private dockerd started with the emitted daemon.json pulls docker.io names through
  `registry-mirrors`; dockerd itself refuses a mirror URL with a path, which is why none is written then.

The stand-in for docker.io is never named in a pull: every pull can only succeed through the mirror.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from chaosmirror.emit import dockerd, nodes, openshift, rancher
from chaosmirror.ref import ImageRef, Target
from chaosmirror.release import Release
from lab import rig as lab_rig
from lab.dockerd import DockerDaemon
from lab.registry import ACCEPT, Client, RegistryServer, Tls
from tests import k3s_registries, openshift_mirrors
from tests.conftest import source_digests
from tests.test_config_e2e import LoggedRegistry, own_home, run
from tests.test_emit import k8s_validate
from tests.test_emit_clusters import request as config_request

pytestmark = pytest.mark.registry

# (path on --to, --account)
LAYOUTS = {
    "account-harness": ("", "harness"),
    "account-chaos": ("", "chaos"),
    "path-harness": ("hce/mirror", "harness"),
}


@dataclass(frozen=True)
class Layout:
    server: RegistryServer
    target: Target
    config: Path

    def client(self, rig: lab_rig.Rig) -> Client:
        return Client(self.server.host, tls=rig.tls, auth=rig.target.auth)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(
    request: pytest.FixtureRequest, rig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Layout]:
    path, account = LAYOUTS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    assert rig.tls is not None and rig.target.auth is not None
    server = RegistryServer(folder / "registry", auth=rig.target.auth, tls=rig.tls).start()
    to = f"{server.host}/{path}" if path else server.host
    report, out, ca = folder / "report.json", folder / "config", str(rig.tls.ca_cert)
    try:
        copied = run(rig, "mirror", "1.47.0", "--to", to, "--account", account, "--source-mirror",
                     f"docker.io={rig.source.host}", "--ca-cert", ca, "--report", str(report),
                     env=own_home(folder))  # fmt: skip
        assert copied.exit_code == 0, copied.output
        written = run(rig, "config", "1.47.0", "--to", to, "--account", account, "--secret-name", "hce-pull",
                      "--node-credentials", "--ca-cert", ca, "--pin-digests", "--report", str(report), "-o", str(out),
                      env=own_home(folder))  # fmt: skip
        assert written.exit_code == 0, written.output
        assert lab_rig.PASSWORD not in written.output
        yield Layout(server, Target.parse(to, account=account), out)
    finally:
        server.stop()


def images(release: Release) -> list[ImageRef]:
    return list(dict.fromkeys(i.ref for i in release.images()))


def expected_digest(rig: lab_rig.Rig, ref: ImageRef) -> str:
    return source_digests(rig)[f"{ref.name}:{ref.tag}"]


# --- RKE2 / K3s -----------------------------------------------------------------------------------


def install_node_files(layout: Layout, node_root: Path) -> None:
    """Do on a fake node root what NEXT-STEPS.md says about the CA for RKE2/K3s."""
    host = layout.target.host
    source = f"{nodes.CONTAINERS_CERTS}/{host}/{nodes.CA_FILE}"
    destination = rancher.node_ca_path(host)
    assert f"sudo install -D -m 0644 {source} {destination}" in (layout.config / "NEXT-STEPS.md").read_text()
    installed = node_root / destination.lstrip("/")
    installed.parent.mkdir(parents=True)
    shutil.copyfile(layout.config / source, installed)


def fetch(pull: k3s_registries.Pull, node_root: Path) -> str | None:
    """Make the request containerd would make for `pull`, with the endpoint's configs entry: its CA (from
    the node root), its credential. The digest the registry answers, or None."""
    endpoint, config = pull.endpoint, pull.endpoint.config
    tls = None
    if endpoint.scheme == "https":
        ca_file = config.get("tls", {}).get("ca_file")
        assert ca_file, f"{endpoint.host}: no CA in registries.yaml, and the test registry's CA is private"
        ca = node_root / ca_file.lstrip("/")
        tls = Tls(ca, ca, ca)
    auth = config.get("auth", {})
    client = Client(endpoint.host, tls=tls, auth=(auth["username"], auth["password"]) if auth else None)
    try:
        status, headers, _ = client.request("HEAD", pull.path, headers={"Accept": ACCEPT})
    finally:
        client.close()
    return headers.get("docker-content-digest") if status == 200 else None


def test_k3s_reader_resolves_every_image_to_the_target_with_the_emitted_registries_yaml(
    rig, layout, release_147, tmp_path
):
    path = layout.config / rancher.REGISTRIES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # --node-credentials: it holds the password
    reader = k3s_registries.load(path.read_text())
    install_node_files(layout, tmp_path)
    for ref in images(release_147):
        first, default = reader.pulls(ref)
        assert default.endpoint.default and default.repository == ref.repository  # last, not rewritten
        assert first.endpoint.host == layout.target.host, ref
        assert fetch(first, tmp_path) == expected_digest(rig, ref), f"{ref}: {first.url} does not resolve"
        # HCE itself names the mirrored image: the same registries.yaml must let the node pull it
        direct, _ = reader.pulls(layout.target.place(ref))  # its own endpoint, then the same as default
        assert not direct.endpoint.default and direct.endpoint.scheme == "https"
        assert fetch(direct, tmp_path) == expected_digest(rig, ref), direct.url


def test_k3s_pull_without_the_credential_is_refused(rig, layout, release_147, tmp_path):
    """The registry really needs the `auth` of registries.yaml: the same request without it fails."""
    reader = k3s_registries.load((layout.config / rancher.REGISTRIES_FILE).read_text())
    install_node_files(layout, tmp_path)
    first, _ = reader.pulls(images(release_147)[0])
    config = {k: v for k, v in first.endpoint.config.items() if k != "auth"}
    anonymous = k3s_registries.Pull(
        k3s_registries.Endpoint(first.endpoint.scheme, first.endpoint.host, first.endpoint.api_root, config=config),
        first.repository,
        first.reference,
    )
    assert fetch(anonymous, tmp_path) is None and fetch(first, tmp_path) is not None


# --- OpenShift ------------------------------------------------------------------------------------


def test_openshift_mirror_sets_validate_and_resolve_every_image_to_the_target(rig, layout, release_147):
    tags = yaml.safe_load((layout.config / openshift.TAG_MIRRORS_FILE).read_text())
    digests = yaml.safe_load((layout.config / openshift.DIGEST_MIRRORS_FILE).read_text())
    for doc in (tags, digests):
        openshift_mirrors.validate(doc, k8s_validate)
    configmap = yaml.safe_load((layout.config / openshift.CA_CONFIGMAP_FILE).read_text())
    k8s_validate(configmap)
    assert configmap["data"] == {layout.target.host.replace(":", ".."): rig.tls.ca_cert.read_text()}  # type: ignore[union-attr]
    client = layout.client(rig)
    try:
        for ref in images(release_147):
            digest = expected_digest(rig, ref)
            mirror, source = openshift_mirrors.resolve(tags, ref)  # AllowContactingSource: the source is last
            assert source == ref and mirror.registry == layout.target.host, ref
            assert client.digest(mirror.repository, mirror.tag) == digest, f"{ref} -> {mirror}"
            by_digest = openshift_mirrors.resolve(digests, ref.with_digest(digest))[0]
            assert client.digest(by_digest.repository, by_digest.digest) == digest, f"{ref} -> {by_digest}"
    finally:
        client.close()


# --- Docker ---------------------------------------------------------------------------------------


class ConfiguredDaemon(DockerDaemon):
    """A private dockerd that starts with a given daemon.json."""

    def __init__(self, folder: Path, settings: dict[str, object]) -> None:
        super().__init__(folder)
        self.settings = settings

    def _config(self) -> Path:
        path = self.folder / "daemon.json"
        path.write_text(json.dumps(self.settings))
        return path


@pytest.fixture(scope="module")
def hub_mirror(rig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoggedRegistry, Path]]:
    """A plain-HTTP registry holding 1.47.0's DDCR images at its root, account harness: the one layout
    Docker's `registry-mirrors` can serve."""
    folder = tmp_path_factory.mktemp("hub-mirror")
    server = LoggedRegistry(folder / "registry").start()
    try:
        copied = run(rig, "mirror", "1.47.0", "--group", "ddcr", "--to", server.host, "--account", "harness",
                     "--source-mirror", f"docker.io={rig.source.host}", env=own_home(folder))  # fmt: skip
        assert copied.exit_code == 0, copied.output
        out = folder / "config"
        written = run(rig, "config", "1.47.0", "--group", "ddcr", "--to", server.host, "-o", str(out),
                      env=own_home(folder))  # fmt: skip
        assert written.exit_code == 0, written.output
        yield server, out
    finally:
        server.stop()


@pytest.mark.dockerd
def test_dockerd_pulls_docker_io_names_through_the_emitted_registry_mirrors(rig, hub_mirror, tmp_path_factory):
    server, config = hub_mirror
    settings = json.loads((config / dockerd.DAEMON_FILE).read_text())
    names = ["docker.io/harness/chaos-log-watcher:1.47.0", "docker.io/harness/chaos-ddcr:1.47.0"]
    with ConfiguredDaemon(tmp_path_factory.mktemp("dk"), settings) as daemon:  # a short path: unix sockets
        for name in names:
            pulled = daemon.docker("pull", name)
            assert pulled.returncode == 0, pulled.stdout.decode() + pulled.stderr.decode()
            inspected = daemon.docker("image", "inspect", "--format", "{{json .RepoDigests}}", name)
            ref = ImageRef.parse(name)
            assert json.loads(inspected.stdout) == [f"harness/{ref.name}@{expected_digest(rig, ref)}"]
    served = server.requests()
    for name in names:
        ref = ImageRef.parse(name)
        assert any(r.endswith(f" /v2/harness/{ref.name}/manifests/{ref.tag}") for r in served), served
    assert settings == {"registry-mirrors": [f"http://{server.host}"], "insecure-registries": [server.host]}


def mount_points() -> list[str]:
    """Every mount point (a bind mount of a folder onto itself is one too, which os.path.ismount misses)."""
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


@pytest.mark.dockerd
def test_dockerd_refuses_a_registry_mirror_with_a_path_so_none_is_written_for_one(tmp_path_factory):
    target = "127.0.0.1:5999/hce"
    assert "registry-mirrors" not in dockerd.daemon_settings(config_request(target, "harness"))
    folder = tmp_path_factory.mktemp("dk")
    daemon = ConfiguredDaemon(folder, {"registry-mirrors": [f"http://{target}"]})
    try:
        with pytest.raises(RuntimeError, match="invalid mirror: path, query, or fragment at end of the URI"):
            daemon.start(timeout=30)
    finally:  # dockerd bind-mounts its data root onto itself before it gives up, and leaves it mounted
        data = str(folder / "data")
        while data in mount_points():
            subprocess.run(["umount", data], check=True, timeout=30)
