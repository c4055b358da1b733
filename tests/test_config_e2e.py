"""The emitted registry configuration, proven by the programs that consume it.

1.47.0's stand-ins are mirrored into the rig's TLS + password target at account `harness` (the layout
docker.io uses, so containerd can map it too), and into an anonymous-read mirror for containerd,
which takes no pod pull secret. The docker.io names are never served by the stand-in for docker.io:
every pull below can only succeed through the mirror configuration under test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from chaosmirror.cli import cli
from chaosmirror.emit import hce, helm, kubernetes, nodes
from chaosmirror.ref import ImageRef
from chaosmirror.release import Release
from lab import rig as lab_rig
from lab.registry import Client, RegistryServer
from lab.rig import PASSWORD
from tests.conftest import require, source_digests, write_manifest
from tests.test_emit import parse_hcl

pytestmark = pytest.mark.registry

RUNNER = "docker.io/harness/chaos-runner:1.47.0"
DDCR = "docker.io/harness/chaos-ddcr:1.47.0"  # a multi-arch index among the stand-ins


def run(rig: lab_rig.Rig, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**rig.env, **(env or {})}, catch_exceptions=False)


def own_home(folder: Path) -> dict[str, str | None]:
    """For module-scoped fixtures, which run before the per-test isolation of conftest: never read the
    developer's registry credentials."""
    home = folder / "home"
    home.mkdir(exist_ok=True)
    unset = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "CHAOSMIRROR_MANIFESTS", "CHAOSMIRROR_ENGINE")
    return {"HOME": str(home), **dict.fromkeys(unset)}


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    require("skopeo")
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class Mirrored:
    host: str
    report: Path


@pytest.fixture(scope="module")
def harness_on_target(rig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> Mirrored:
    """1.47.0 in the rig's TLS + password target at TARGET/harness/NAME:TAG, with the run's report.
    Other tests use random accounts, so nothing else writes there."""
    folder = tmp_path_factory.mktemp("harness-on-target")
    report = folder / "report.json"
    result = run(
        rig, "mirror", "1.47.0", *rig.args(), "--account", "harness", "--report", str(report), env=own_home(folder)
    )
    assert result.exit_code == 0, result.output
    return Mirrored(rig.target.host, report)


@pytest.fixture(scope="module")
def private_config(rig: lab_rig.Rig, harness_on_target: Mirrored, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`chaosmirror config` for the private target, pinned to the mirror run's digests."""
    out = tmp_path_factory.mktemp("private-config")
    assert rig.tls is not None
    result = run(
        rig,
        "config",
        "1.47.0",
        "--to",
        rig.target.host,
        "--account",
        "harness",
        "--secret-name",
        "hce-pull",
        "--ca-cert",
        str(rig.tls.ca_cert),
        "--pin-digests",
        "--report",
        str(harness_on_target.report),
        "-o",
        str(out),
        env=own_home(out.parent),
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    return out


def auth_file_from_secret(config: Path, folder: Path) -> Path:
    """Decode the emitted Secret's .dockerconfigjson into a containers auth file, as kubelet would read it."""
    secret = yaml.safe_load((config / kubernetes.SECRET_FILE).read_text())
    path = folder / f"auth-{uuid.uuid4().hex[:6]}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64decode(secret["data"][".dockerconfigjson"]))
    return path


def test_emitted_secret_lets_skopeo_pull_from_the_auth_protected_target(rig, private_config, tmp_path):
    assert (private_config / kubernetes.SECRET_FILE).stat().st_mode & 0o777 == 0o600
    image = f"docker://{rig.target.host}/harness/chaos-runner:1.47.0"
    cert_dir = f"--src-cert-dir={private_config / nodes.CONTAINERS_CERTS / rig.target.host}"
    refused = skopeo("copy", cert_dir, image, f"dir:{tmp_path / 'anonymous'}")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    auth = auth_file_from_secret(private_config, tmp_path)
    pulled = skopeo("copy", cert_dir, f"--src-authfile={auth}", image, f"dir:{tmp_path / 'pulled'}")
    assert pulled.returncode == 0, pulled.stderr
    manifest = json.loads((tmp_path / "pulled" / "manifest.json").read_text())
    assert manifest["layers"], "pulled a manifest without layers"


@pytest.mark.parametrize("name", [RUNNER, DDCR])
def test_skopeo_resolves_docker_io_names_to_the_mirror_through_the_emitted_registries_conf(
    rig, private_config, target_client, tmp_path, name
):
    ref = ImageRef.parse(name)
    expected = target_client.digest(f"harness/{ref.name}", ref.tag)
    assert expected == source_digests(rig)[f"{ref.name}:{ref.tag}"]
    conf = private_config / nodes.REGISTRIES_CONF
    done = skopeo(
        "--registries-conf",
        str(conf),
        "inspect",
        "--no-tags",
        f"--cert-dir={private_config / nodes.CONTAINERS_CERTS / rig.target.host}",
        f"--authfile={auth_file_from_secret(private_config, tmp_path)}",
        f"docker://{name}",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Digest"] == expected


def image_refs_in_helm_values(values: dict[str, object]) -> dict[str, ImageRef]:
    found: dict[str, ImageRef] = {}
    for path, _component, _ in helm.IMAGE_KEYS:
        node: object = values
        for part in (*path, "image"):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            found[helm.image_key(path)] = ImageRef.parse(f"{node['registry']}/{node['repository']}:{node['tag']}")
    return found


def resolves(client: Client, ref: ImageRef) -> str | None:
    """The digest the target holds at the reference's tag; for a pinned reference, only if it is that digest."""
    held = client.digest(ref.repository, ref.tag)
    if ref.digest and client.digest(ref.repository, ref.digest) != ref.digest:
        return None
    return held if not ref.digest or held == ref.digest else None


def test_every_image_reference_in_the_config_resolves_in_the_target(
    rig, harness_on_target, private_config, target_client, release_147
):
    pinned = {e["destination"]: e["digest"] for e in json.loads(harness_on_target.report.read_text())["images"]}
    refs: dict[str, ImageRef] = {}
    values = yaml.safe_load((private_config / helm.VALUES_FILE).read_text())
    helm_refs = image_refs_in_helm_values(values)
    assert set(helm_refs) == {
        "subscriber.image",
        "subscriber.upgrader.image",
        "workflow-controller.image",
        "workflow-controller.argoExec.image",
        "chaos-operator.image",
        "chaos-operator.chaosRunner.image",
        "chaos-exporter.image",
        "agent-proxy.image",  # 1.47.0 lists it, optional (its SaaS chart pins 1.45.0)
    }
    refs |= {f"helm {k}": v for k, v in helm_refs.items()}
    settings = yaml.safe_load((private_config / hce.UI_FILE).read_text())
    for image in release_147.images():  # HCE composes server/account/<image-name>:<tag>
        refs[f"hce {image.ref}"] = ImageRef.parse(
            f"{settings['server']}/{settings['account']}/{image.ref.name}:{image.ref.tag}"
        )
    for field, ref in (settings.get("customImages") or {}).items():
        refs[f"hce customImages.{field}"] = ImageRef.parse(ref)
    snippet = yaml.safe_load((private_config / kubernetes.SNIPPET_FILE).read_text())
    refs["snippet"] = ImageRef.parse(snippet["container"]["image"])
    assert snippet["container"]["imagePullSecrets"] == [{"name": "hce-pull"}]
    assert len(settings["customImages"]) == 4  # pinned: HCE gets the DDCR images by digest
    for where, ref in refs.items():
        assert ref.registry == rig.target.host, where
        held = resolves(target_client, ref)
        assert held is not None, f"{where}: {ref} does not resolve in the target"
        assert held == pinned[str(ImageRef(ref.registry, ref.repository, ref.tag))], where


def test_terraform_from_the_command_parses_and_names_the_target(rig, private_config):
    doc = parse_hcl((private_config / hce.TERRAFORM_FILE).read_text())
    body = doc["resource"][0]["harness_chaos_image_registry"]["chaosmirror"]
    assert body["registry_server"] == rig.target.host and body["registry_account"] == "harness"
    assert body["is_private"] is True and body["secret_name"] == "hce-pull"


# --- containerd -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Containerd:
    address: Path
    namespace: str = "chaosmirror-test"

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.address), "--namespace", self.namespace, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """One containerd (Debian's package) for the module: its own root, state, socket and a minimal
    config without the CRI plugin. Needs root, as containerd does."""
    require("containerd", "ctr")
    if os.geteuid() != 0:
        pytest.fail("containerd needs root: run the tests as root (CI does)", pytrace=False)
    folder = tmp_path_factory.mktemp("ctrd")
    address = folder / "c.sock"
    config = folder / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{folder / "root"}"\n'
        f'state = "{folder / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",\n'
        '  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",\n'
        '  "io.containerd.snapshotter.v1.aufs"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{folder / "opt"}"\n'
    )
    log = open(folder / "containerd.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [shutil.which("containerd") or "containerd", "--config", str(config)], stdout=log, stderr=log
    )
    daemon = Containerd(address)
    try:
        deadline = time.monotonic() + 30
        while daemon.ctr("version", timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not start: {(folder / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class LoggedRegistry(RegistryServer):
    """docker-registry with its access log on, so a test can count what a client asked it for."""

    def _config(self) -> str:
        conf = json.loads(super()._config())
        conf["log"] = {"level": "error", "accesslog": {"disabled": False}}
        return json.dumps(conf)

    def requests(self) -> list[str]:
        """`METHOD PATH` of every request served so far."""
        log = (self.folder / "registry.log").read_text(errors="replace")
        return re.findall(r'"((?:GET|HEAD) /[^ "]*) HTTP/', log)


MIRROR_PATH = "mirror"  # the targets below take the images under a path: HOST/mirror/harness/NAME:TAG


@pytest.fixture(scope="module")
def open_mirror(rig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoggedRegistry, Path]]:
    """An anonymous-read TLS registry (the rig's CA) holding 1.47.0 under HOST/mirror at account harness,
    mirrored with `mirror --config-out`: node-level pulls carry no pod pull secret, so nodes need read access."""
    folder = tmp_path_factory.mktemp("open-mirror")
    server = LoggedRegistry(folder / "registry", tls=rig.tls).start()
    out = folder / "config"
    assert rig.tls is not None
    result = run(
        rig,
        "mirror",
        "1.47.0",
        "--to",
        f"{server.host}/{MIRROR_PATH}",
        "--account",
        "harness",
        "--source-mirror",
        f"docker.io={rig.source.host}",
        "--ca-cert",
        str(rig.tls.ca_cert),
        "--config-out",
        str(out),
        env=own_home(folder),
    )
    try:
        assert result.exit_code == 0, result.output
        assert f"wrote the registry configuration of HCE 1.47.0 on {server.host}/{MIRROR_PATH}/harness" in result.output
        yield server, out
    finally:
        server.stop()


def pull_every_image_with_ctr(
    containerd: Containerd, server: LoggedRegistry, hosts_dir: Path, rig: lab_rig.Rig, release: Release
) -> None:
    """`ctr images pull --hosts-dir` of every docker.io name of the release: each must come from the
    mirror (the stand-in for docker.io is never named), under its path, with the source's digest."""
    expected = source_digests(rig)
    names = list(dict.fromkeys(str(i.ref) for i in release.images()))
    before = len(server.requests())
    failed = {}
    for name in names:
        pulled = containerd.ctr("images", "pull", "--snapshotter", "native", "--hosts-dir", str(hosts_dir), name)
        if pulled.returncode != 0:
            failed[name] = pulled.stdout[-300:] + pulled.stderr[-500:]
    assert not failed, failed
    listing = {ln.split()[0]: ln.split()[2] for ln in containerd.ctr("images", "ls").stdout.splitlines()[1:]}
    served = server.requests()[before:]
    for name in names:
        ref = ImageRef.parse(name)
        assert listing[name] == expected[f"{ref.name}:{ref.tag}"], name
        manifest = f"/v2/{MIRROR_PATH}/{ref.repository}/manifests/{ref.tag}"
        assert any(r.split(" ", 1)[1].startswith(manifest) for r in served), f"{name}: the mirror never saw {manifest}"
        containerd.ctr("images", "rm", name)
    assert all(r.split(" ", 1)[1].startswith(f"/v2/{MIRROR_PATH}/") for r in served if r != "GET /v2/"), served


def test_containerd_pulls_every_image_from_a_tls_mirror_under_a_path_with_the_emitted_hosts_dir(
    rig, containerd, open_mirror, release_147
):
    server, config = open_mirror
    hosts_dir = config / nodes.CONTAINERD_CERTS
    pull_every_image_with_ctr(containerd, server, hosts_dir, rig, release_147)
    hub = tomllib.loads((hosts_dir / "docker.io" / "hosts.toml").read_text())
    assert hub["host"] == {
        f"https://{server.host}/v2/{MIRROR_PATH}": {
            "capabilities": ["pull", "resolve"],
            "override_path": True,
            "ca": "ca.crt",
        }
    }
    assert (hosts_dir / "docker.io" / "ca.crt").read_text() == rig.tls.ca_cert.read_text()  # type: ignore[union-attr]


def test_mirror_config_out_is_pinned_to_the_digests_just_pushed(rig, open_mirror):
    server, config = open_mirror
    values = yaml.safe_load((config / helm.VALUES_FILE).read_text())
    runner = values["chaos-operator"]["chaosRunner"]["image"]
    assert runner["registry"] == server.host and runner["repository"] == f"{MIRROR_PATH}/harness/chaos-runner"
    assert runner["tag"] == f"1.47.0@{source_digests(rig)['chaos-runner:1.47.0']}"
    settings = yaml.safe_load((config / hce.UI_FILE).read_text())
    assert settings["registryType"] == "public" and "secretName" not in settings
    assert not (config / kubernetes.SECRET_FILE).exists()


@pytest.fixture(scope="module")
def plain_mirror(rig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoggedRegistry, Path]]:
    """A plain-HTTP loopback registry with 1.47.0 under HOST/mirror at account harness, and the
    configuration `chaosmirror config` writes for it (it finds out by itself that it is plain HTTP)."""
    folder = tmp_path_factory.mktemp("plain-mirror")
    server = LoggedRegistry(folder / "registry").start()
    target = f"{server.host}/{MIRROR_PATH}"
    try:
        copied = run(rig, "mirror", "1.47.0", "--to", target, "--account", "harness",
                     "--source-mirror", f"docker.io={rig.source.host}", env=own_home(folder))  # fmt: skip
        assert copied.exit_code == 0, copied.output
        out = folder / "config"
        result = run(rig, "config", "1.47.0", "--to", target, "-o", str(out), env=own_home(folder))
        assert result.exit_code == 0, result.output
        yield server, out
    finally:
        server.stop()


def test_plain_http_mirror_under_a_path_serves_containerd_and_skopeo_with_the_emitted_files(
    rig, containerd, plain_mirror, release_147
):
    server, config = plain_mirror
    hosts_dir = config / nodes.CONTAINERD_CERTS
    pull_every_image_with_ctr(containerd, server, hosts_dir, rig, release_147)
    hub = tomllib.loads((hosts_dir / "docker.io" / "hosts.toml").read_text())
    assert list(hub["host"]) == [f"http://{server.host}/v2/{MIRROR_PATH}"]
    done = skopeo(
        "--registries-conf", str(config / nodes.REGISTRIES_CONF), "inspect", "--no-tags", f"docker://{RUNNER}"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Digest"] == source_digests(rig)["chaos-runner:1.47.0"]


# --- the command's own behaviour ------------------------------------------------------------------


def test_mirror_config_out_writes_nothing_when_images_failed(rig, account, tmp_path):
    manifests = write_manifest(
        tmp_path / "m",
        "1.47.0",
        [
            ("ddcr", "ddcr", DDCR),
            ("ddcr", "ghost", "docker.io/harness/chaos-ghost:9.9.9"),
        ],
    )
    out = tmp_path / "config"
    result = run(rig, "mirror", "1.47.0", "--manifests", str(manifests), *rig.args(), "--account", account,
                 "--config-out", str(out))  # fmt: skip
    assert result.exit_code == 1
    assert "--config-out: nothing written, 1 images failed" in result.output
    assert not out.exists()


def test_mirror_config_out_with_dry_run_writes_nothing(rig, account, tmp_path):
    out = tmp_path / "config"
    result = run(rig, "mirror", "1.47.0", *rig.args(), "--account", account, "--dry-run", "--config-out", str(out))
    assert result.exit_code == 0, result.output
    assert "--config-out: nothing written, --dry-run copies nothing" in result.output
    assert not out.exists()


def test_config_without_credentials_writes_no_secret_and_says_how_to_make_one(rig, tmp_path):
    out = tmp_path / "config"
    result = run(rig, "config", "1.47.0", *rig.args()[:2], "--ca-cert", str(rig.tls.ca_cert),  # type: ignore[union-attr]
                 "--secret-name", "hce-pull", "-o", str(out),
                 env={"CHAOSMIRROR_DEST_USERNAME": "", "CHAOSMIRROR_DEST_PASSWORD": ""})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (out / kubernetes.SECRET_FILE).exists()
    assert "no Secret file was written" in (out / "NEXT-STEPS.md").read_text()
    assert yaml.safe_load((out / hce.UI_FILE).read_text())["registryType"] == "private"
