"""Air-gap bundles end to end: real registries, real skopeo, a real dockerd for docker-archive output."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import rig as lab_rig
from lab import standin
from lab.images import MT_INDEX
from lab.registry import Client
from lab.rig import PASSWORD
from tests.conftest import require, tmpfs, write_manifest

pytestmark = pytest.mark.registry
SHAPE = standin.Shape(base=2 * standin.MiB, middle=512 * standin.KiB, own=256 * standin.KiB)
OLD_ONLY = [("harness/chaos-runner", "1.46.0"), ("harness/chaos-operator", "1.46.0")]


@pytest.fixture(scope="module")
def brig(tmp_path_factory: pytest.TempPathFactory, release_147: object) -> Iterator[lab_rig.Rig]:
    """A rig of its own (its source gets stopped): 1.47.0 stand-ins plus two 1.46.0 images."""
    require("docker-registry", "skopeo", "htpasswd", "openssl")
    the_rig = lab_rig.start(tmp_path_factory.mktemp("brig"))
    the_rig.seed([*lab_rig.release_repos(release_147.images()), *OLD_ONLY], SHAPE)  # type: ignore[attr-defined]
    yield the_rig
    the_rig.stop()


@pytest.fixture
def run(brig, chaosmirror):  # type: ignore[no-untyped-def]
    """chaosmirror with the bundle rig's credentials (the `chaosmirror` fixture is bound to the shared rig)."""

    def invoke(*args: str, **kwargs):  # type: ignore[no-untyped-def]
        return chaosmirror(*args, env={**brig.env, **kwargs.pop("env", {})}, **kwargs)

    return invoke


def export(run, brig, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run("bundle", "export", "1.47.0", "-o", str(out), "--source-mirror", f"docker.io={brig.source.host}", *extra)


def import_(run, brig, bundle: Path, account: str, *extra: str):  # type: ignore[no-untyped-def]
    return run("bundle", "import", str(bundle), "--to", brig.target.host, "--account", account,
               "--ca-cert", str(brig.tls.ca_cert), *extra)  # fmt: skip


@pytest.fixture(scope="module")
def bundle_147(brig, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from chaosmirror.cli import cli

    out = tmp_path_factory.mktemp("b") / "hce-1.47.0.tar"
    result = CliRunner().invoke(cli, ["bundle", "export", "1.47.0", "-o", str(out), "--source-mirror",
                                      f"docker.io={brig.source.host}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def digests(brig) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    return {(repo.split("/")[-1], tag): art.digest for (repo, tag), art in brig.artifacts.items()
            if (repo, tag) not in OLD_ONLY}  # fmt: skip


def test_import_with_the_source_stopped_lands_every_digest_and_platform(brig, run, bundle_147, account):
    brig.source.stop()
    try:
        result = import_(run, brig, bundle_147, account)
    finally:
        brig.source.start()
    assert result.code == 0, result.output
    assert result.report["summary"]["copied"] == 19
    client = Client(brig.target.host, tls=brig.tls, auth=brig.target.auth)
    try:
        for (name, tag), digest in digests(brig).items():
            assert client.digest(f"{account}/{name}", tag) == digest, name
        index = client.get_manifest(f"{account}/chaos-ddcr", "1.47.0")
        assert index["mediaType"] == MT_INDEX and len(index["manifests"]) == 2
    finally:
        client.close()
    again = import_(run, brig, bundle_147, account)
    assert again.code == 0 and again.report["summary"]["skipped"] == 19
    assert PASSWORD not in again.output + json.dumps(again.report)


def test_shared_layers_are_stored_once(brig, bundle_147):
    unique = {b.digest: len(b.data) for (repo, tag), a in brig.artifacts.items() if (repo, tag) not in OLD_ONLY
              for b in [*a.all_blobs(), *a.manifests()]}  # fmt: skip
    total = sum(unique.values())
    size = bundle_147.stat().st_size
    assert total <= size <= total * 1.01, (size, total)
    with tarfile.open(bundle_147) as tar:
        names = tar.getnames()
    assert names[:4] == ["bundle.json", "SHA256SUMS", "oci-layout", "index.json"]
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == len(unique)


def test_verify_and_ls_describe_an_intact_bundle(run, bundle_147):
    result = run("bundle", "verify", str(bundle_147), report=False)
    assert result.code == 0 and "intact" in result.output
    listing = run("bundle", "ls", str(bundle_147), report=False)
    assert listing.code == 0
    assert "HCE 1.47.0" in listing.output and "chaos-ddcr:1.47.0" in listing.output
    assert "linux/amd64, linux/arm64" in listing.output
    info = json.loads(run("bundle", "ls", str(bundle_147), "--json", report=False).output)
    assert info["format"] == 1 and info["kind"] == "oci" and len(info["images"]) == 19
    assert {"source", "name", "digest", "platforms", "size"} <= set(info["images"][0])
    sums = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=_unpack(bundle_147), check=False)
    assert sums.returncode == 0  # the standard tool agrees


def _unpack(bundle: Path) -> Path:
    folder = bundle.with_name(bundle.name + ".unpacked")
    if not folder.exists():
        folder.mkdir()
        with tarfile.open(bundle) as tar:
            tar.extractall(folder, filter="data")
    return folder


def _flip_a_layer_byte(bundle: Path, copy: Path) -> str:
    shutil.copyfile(bundle, copy)
    with tarfile.open(copy) as tar:
        member = max((m for m in tar.getmembers() if m.name.startswith("blobs/")), key=lambda m: m.size)
    with open(copy, "r+b") as stream:
        stream.seek(member.offset_data + member.size // 2)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 0xFF]))
    return member.name.rsplit("/", 1)[1]


def test_a_flipped_byte_is_caught_before_anything_is_pushed(brig, run, bundle_147, account, tmp_path):
    damaged = tmp_path / "damaged.tar"
    blob = _flip_a_layer_byte(bundle_147, damaged)
    verify = run("bundle", "verify", str(damaged), report=False)
    assert verify.code == 1
    assert f"blob sha256:{blob} is damaged" in verify.output and "used by docker.io/harness/" in verify.output
    result = import_(run, brig, damaged, account)
    assert result.code == 1 and f"sha256:{blob} is damaged" in result.output and "nothing was pushed" in result.output
    client = Client(brig.target.host, tls=brig.tls, auth=brig.target.auth)
    try:
        assert all(client.digest(f"{account}/{name}", tag) is None for name, tag in digests(brig))
    finally:
        client.close()


def _evil_tar(path: Path, bundle: Path, name: str, *, kind: bytes = tarfile.REGTYPE) -> None:
    with tarfile.open(bundle) as src, tarfile.open(path, "w") as out:
        for member in src.getmembers()[:4]:
            out.addfile(member, src.extractfile(member))
        evil = tarfile.TarInfo(name)
        evil.type = kind
        if kind == tarfile.SYMTYPE:
            evil.linkname = "/etc/passwd"
            out.addfile(evil)
        else:
            evil.size = 4
            import io

            out.addfile(evil, io.BytesIO(b"evil"))


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("../escaped.txt", tarfile.REGTYPE, "climbs out of the bundle"),
    ("/tmp/absolute.txt", tarfile.REGTYPE, "absolute"),
    ("blobs/sha256/link", tarfile.SYMTYPE, "not a file a bundle holds"),
    ("index.json", tarfile.SYMTYPE, "a link"),
    ("blobs/sha256/../../x", tarfile.REGTYPE, "climbs out"),
    ("dev", tarfile.CHRTYPE, "not a file a bundle holds"),
    ("blobs/sha256/" + "a" * 64, tarfile.CHRTYPE, "device or special file"),
])  # fmt: skip
def test_entries_that_could_escape_are_refused(brig, run, bundle_147, account, tmp_path, name, kind, message):
    evil = tmp_path / "evil" / "bundle.tar"
    evil.parent.mkdir()
    _evil_tar(evil, bundle_147, name, kind=kind)
    for argv in (
        ["bundle", "verify", str(evil)],
        [
            "bundle",
            "import",
            str(evil),
            "--to",
            brig.target.host,
            "--account",
            account,
            "--ca-cert",
            str(brig.tls.ca_cert),
        ],
    ):
        result = run(*argv, report=False)
        assert result.code == 1, result.output
        assert "refusing entry" in result.output and message in result.output
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()


def test_a_truncated_bundle_is_refused(brig, run, bundle_147, account, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle_147.read_bytes()[: bundle_147.stat().st_size // 2 + 100])
    verify = run("bundle", "verify", str(cut), report=False)
    assert verify.code == 1 and "truncated" in verify.output
    assert import_(run, brig, cut, account).code == 1


def test_a_bundle_cut_at_a_file_boundary_is_incomplete(run, bundle_147, tmp_path):
    with tarfile.open(bundle_147) as tar:
        last = tar.getmembers()[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle_147.read_bytes()[: last.offset])
    verify = run("bundle", "verify", str(cut), report=False)
    assert verify.code == 1 and f"{last.name} is missing" in verify.output


def test_delta_bundle_leaves_out_unchanged_images_and_needs_its_base(brig, run, account, tmp_path):
    manifests = write_manifest(tmp_path / "m", "1.46.0", [
        ("dedicated", "runner", "docker.io/harness/chaos-runner:1.46.0"),
        ("dedicated", "operator", "docker.io/harness/chaos-operator:1.46.0"),
        ("dedicated", "workflow-controller", "docker.io/harness/chaos-workflow-controller:v3.4.16"),
        ("dedicated", "argoexec", "docker.io/harness/chaos-argoexec:v3.4.16"),
    ])  # fmt: skip
    write_manifest(manifests, "1.47.0", [
        ("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
        ("dedicated", "operator", "docker.io/harness/chaos-operator:1.47.0"),
        ("dedicated", "workflow-controller", "docker.io/harness/chaos-workflow-controller:v3.4.16"),
        ("dedicated", "argoexec", "docker.io/harness/chaos-argoexec:v3.4.16"),
    ])  # fmt: skip
    m = ["--manifests", str(manifests), "--source-mirror", f"docker.io={brig.source.host}"]
    base, delta = tmp_path / "1.46.0.tar", tmp_path / "1.47.0-delta.tar"
    assert run("bundle", "export", "1.46.0", "-o", str(base), *m).code == 0
    assert run("bundle", "export", "1.47.0", "-o", str(delta), "--since", "1.46.0", *m).code == 0
    info = json.loads(run("bundle", "ls", str(delta), "--json", report=False).output)
    assert info["delta"]["since"] == "1.46.0"
    assert sorted(i["name"] for i in info["delta"]["unchanged"]) == [
        "chaos-argoexec:v3.4.16",
        "chaos-workflow-controller:v3.4.16",
    ]
    assert sorted(i["name"] for i in info["images"]) == ["chaos-operator:1.47.0", "chaos-runner:1.47.0"]
    assert delta.stat().st_size < base.stat().st_size

    early = import_(run, brig, delta, account)
    assert early.code == 1
    missing = [e for e in early.report["images"] if e["status"] == "failed"]
    assert len(missing) == 2 and all("import the 1.46.0 bundle first" in e["error"] for e in missing)
    assert import_(run, brig, base, account).code == 0
    done = import_(run, brig, delta, account)
    assert done.code == 0, done.output
    client = Client(brig.target.host, tls=brig.tls, auth=brig.target.auth)
    try:
        for name, tag in [("chaos-runner", "1.47.0"), ("chaos-workflow-controller", "v3.4.16"),
                          ("chaos-runner", "1.46.0"), ("chaos-argoexec", "v3.4.16")]:  # fmt: skip
            assert client.digest(f"{account}/{name}", tag) == brig.artifacts[(f"harness/{name}", tag)].digest
    finally:
        client.close()


def test_an_interrupted_export_never_looks_complete_and_resumes(brig, run, tmp_path):
    manifests = write_manifest(tmp_path / "m", "1.47.0", [
        ("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
        ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:1.47.0"),
        ("ddcr", "gone", "docker.io/harness/not-published-yet:1.47.0"),
    ])  # fmt: skip
    out = tmp_path / "out" / "b.tar"
    out.parent.mkdir()
    first = export(run, brig, out, "--manifests", str(manifests))
    assert first.code == 1 and "no bundle was written" in first.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.tar.parts"]  # nothing that looks like a bundle
    kept = len(list((out.parent / "b.tar.parts" / "bundle" / "blobs" / "sha256").iterdir()))
    assert kept > 0
    write_manifest(manifests, "1.47.0", [("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
                                         ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:1.47.0")])  # fmt: skip
    second = export(run, brig, out, "--manifests", str(manifests))
    assert second.code == 0, second.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.tar"]
    assert run("bundle", "verify", str(out), report=False).code == 0
    again = export(run, brig, out, "--manifests", str(manifests))
    assert again.code == 2 and "already exists" in again.output


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    with tmpfs(tmp_path / "small", "1400k") as folder:
        yield folder


def test_running_out_of_disk_leaves_no_bundle_and_says_so(brig, run, small_disk):
    out = small_disk / "b.tar"
    result = export(run, brig, out)
    assert result.code == 1
    assert "out of disk space" in result.output or "no space left" in result.output.lower()
    assert not out.exists()
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".b.tar.partial")]


def test_docker_archive_bundle_loads_into_docker_and_skopeo(brig, run, dockerd, account, tmp_path):
    out = tmp_path / "hce-1.47.0-docker"
    result = export(run, brig, out, "--format", "docker-archive", "--group", "ddcr")
    assert result.code == 0, result.output
    assert run("bundle", "verify", str(out), report=False).code == 0
    info = json.loads((out / "bundle.json").read_text())
    files = [name for image in info["images"] for _, name in image["archives"]]
    assert len(files) == 6  # 4 images, 2 of them with two platforms
    for name in files:
        loaded = dockerd.docker("load", "-i", str(out / name))
        assert loaded.returncode == 0 and b"Loaded image" in loaded.stdout, loaded.stderr
        inspected = subprocess.run(["skopeo", "inspect", f"docker-archive:{out / name}"], capture_output=True,
                                   text=True, check=False)  # fmt: skip
        assert inspected.returncode == 0, inspected.stderr
    listed = dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    assert "harness/chaos-ddcr:1.47.0" in listed
    imported = import_(run, brig, out, account)
    assert imported.code == 0, imported.output
    assert imported.report["summary"]["copied"] == 4


def test_import_writes_the_registry_configuration_pinned_to_what_it_pushed(brig, run, bundle_147, account, tmp_path):
    out = tmp_path / "hce-config"
    result = import_(run, brig, bundle_147, account, "--config-out", str(out), "--secret-name", "hce-pull")
    assert result.code == 0, result.output
    pushed = {e["destination"]: e["digest"] for e in result.report["images"]}
    values = (out / "helm" / "chaos-infra-values.yaml").read_text()
    subscriber = pushed[f"{brig.target.host}/{account}/chaos-subscriber:1.47.0"]
    assert f"tag: 1.47.0@{subscriber}" in values
    assert (out / "kubernetes" / "image-pull-secret.yaml").stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in result.output
    assert "NEXT-STEPS.md" in result.output
