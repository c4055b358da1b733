"""Every image shape through an air-gap bundle: export from the rig's source, import into its TLS +
password target; what is attached to the images goes into the bundle and comes back out; deltas are
decided from what bundle.json records."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from lab.images import cosign, foreign_layer, index, make_image, random_layer
from lab.registry import Client, RegistryServer, push
from lab.rig import HUB_FOREIGN_URLS
from lab.standin import push_attached
from tests.conftest import source_digests, write_manifest
from tests.test_e2e_shapes import check_attached, expected_reads, manifest_gets

pytestmark = pytest.mark.registry


def bundle_json(path: Path) -> dict:  # type: ignore[type-arg]
    if path.is_dir():
        return json.loads((path / "bundle.json").read_text())  # type: ignore[no-any-return]
    return json.loads(subprocess.run(["tar", "-xOf", str(path), "bundle.json"], capture_output=True, check=True).stdout)


def test_a_bundle_carries_every_shape_and_what_is_attached_and_brings_them_back(rig, chaosmirror, account,
                                                                                target_client, tmp_path):  # fmt: skip
    out = tmp_path / "hce.tar"
    since = len(rig.source.requests())
    run = chaosmirror("bundle", "export", "1.47.0", "-o", str(out), "--source-mirror", f"docker.io={rig.source.host}")
    assert run.code == 0, run.output
    assert Counter(manifest_gets(rig.source, since)) == expected_reads(rig)  # each manifest read once
    info = bundle_json(out)
    records = {i["name"]: i for i in info["images"]}
    exporter = records["chaos-exporter:1.47.0"]
    art = rig.artifacts[("harness/chaos-exporter", "1.47.0")]
    assert exporter["digest"] == art.digest and exporter["platforms"] == ["linux/amd64", "linux/arm64"]
    assert set(exporter["blobs"]) == {m.digest for m in art.manifests()} | {b.digest for b in art.all_blobs()}
    assert sorted(a["kind"] for a in exporter["attached"]) == ["att", "referrer", "referrers", "sig", "sig", "sig"]
    assert [a["kind"] for a in records["chaos-log-watcher:1.47.0"]["attached"]] == ["sbom"]
    assert chaosmirror("bundle", "verify", str(out), report=False).code == 0

    imported = chaosmirror("bundle", "import", str(out), "--to", rig.target.host, "--account", account,
                           "--ca-cert", str(rig.tls.ca_cert))  # fmt: skip
    assert imported.code == 0, imported.output
    for name_tag, digest in source_digests(rig, "1.47.0").items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest, name_tag
    assert check_attached(rig, target_client, account) == 8
    writes = len(rig.target.requests())
    again = chaosmirror("bundle", "import", str(out), "--to", rig.target.host, "--account", account,
                        "--ca-cert", str(rig.tls.ca_cert))  # fmt: skip
    assert again.code == 0 and sum(e.get("signatures_copied", 0) for e in again.report["images"]) == 0
    assert [r for r in rig.target.requests(writes) if r.method in ("PUT", "POST", "PATCH")] == []

    since = len(rig.source.requests())
    second = chaosmirror("bundle", "export", "1.47.0", "-o", str(tmp_path / "again.tar"), "--source-mirror",
                         f"docker.io={rig.source.host}")  # fmt: skip
    assert second.code == 0 and manifest_gets(rig.source, since) == []  # from the local cache


def test_no_signatures_bundles_none(rig, chaosmirror, account, target_client, tmp_path):
    out = tmp_path / "bare.tar"
    run = chaosmirror("bundle", "export", "1.47.0", "-o", str(out), "--group", "dedicated", "--no-signatures",
                      "--source-mirror", f"docker.io={rig.source.host}")  # fmt: skip
    assert run.code == 0, run.output
    assert all(not i["attached"] for i in bundle_json(out)["images"])
    assert chaosmirror("bundle", "import", str(out), "--to", rig.target.host, "--account", account, "--ca-cert",
                       str(rig.tls.ca_cert)).code == 0  # fmt: skip
    sig = rig.attached[("harness/chaos-exporter", "1.47.0")][0]
    assert target_client.digest(f"{account}/chaos-exporter", sig.tag) is None


def _release(folder: Path, version: str, prefix: str, names: str) -> Path:
    """A release manifest of harness/PREFIX-N:1.0.0 for each letter N of `names`."""
    return write_manifest(folder, version, [("experiment", n, f"docker.io/harness/{prefix}-{n}:1.0.0") for n in names])


def _delta_images(rig, prefix: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    arts = {}
    for name in ("x", "y", "z"):
        images = [make_image([random_layer(f"{prefix}-{name}-{a}", 4096)], arch=a) for a in ("amd64", "arm64")]
        arts[name] = index(images)
        push(rig.source.host, f"harness/{prefix}-{name}", "1.0.0", arts[name])
    return arts


def test_a_delta_on_a_platform_bundle_decides_from_its_records_and_carries_new_signatures(
    rig, chaosmirror, account, target_client, tmp_path
):
    arts = _delta_images(rig, "dp")
    old, new = _release(tmp_path / "old", "9.5.0", "dp", "xy"), _release(tmp_path / "new", "9.6.0", "dp", "xz")
    src = ["--source-mirror", f"docker.io={rig.source.host}", "--platform", "linux/amd64"]
    base, delta = tmp_path / "base.tar", tmp_path / "delta.tar"
    assert chaosmirror("bundle", "export", "9.5.0", "--manifests", str(old), "-o", str(base), *src).code == 0
    amd = arts["x"].images[0].manifest.digest  # type: ignore[attr-defined]
    sig = cosign(amd, "sig", reference="index.docker.io/harness/dp-x", seed="after the base")
    push_attached(rig.source.host, "harness/dp-x", [sig])  # signed after the base bundle was written
    run = chaosmirror("bundle", "export", "9.6.0", "--manifests", str(new), "-o", str(delta), "--since", str(base),
                      *src)  # fmt: skip
    assert run.code == 0, run.output
    info = bundle_json(delta)
    assert [i["name"] for i in info["images"]] == ["dp-z:1.0.0"]
    (left,) = info["delta"]["unchanged"]
    assert left["name"] == "dp-x:1.0.0" and left["digest"] == amd and left["platforms"] == ["linux/amd64"]
    assert [a["digest"] for a in left["attached"]] == [sig.digest] and "base.tar (oci" in info["delta"]["base"]

    target = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert)]
    missing = chaosmirror("bundle", "import", str(delta), *target, "--account", f"{account}a")
    entry = next(e for e in missing.report["images"] if e["source"].endswith("dp-x:1.0.0"))
    assert missing.code == 1 and "import the 9.5.0 bundle first" in entry["error"]
    assert chaosmirror("bundle", "import", str(base), *target, "--account", account).code == 0
    imported = chaosmirror("bundle", "import", str(delta), *target, "--account", account)
    assert imported.code == 0, imported.output
    entry = next(e for e in imported.report["images"] if e["source"].endswith("dp-x:1.0.0"))
    assert entry["status"] == "skipped" and "the digest the base bundle recorded" in entry["reason"]
    assert target_client.digest(f"{account}/dp-x", "1.0.0") == amd
    assert target_client.digest(f"{account}/dp-x", sig.tag) == sig.digest  # the new signature travelled


def test_a_delta_on_a_docker_archive_bundle_finds_the_base_images_by_their_config(
    rig, chaosmirror, account, target_client, tmp_path
):
    _delta_images(rig, "da")
    old, new = _release(tmp_path / "old", "9.7.0", "da", "xy"), _release(tmp_path / "new", "9.8.0", "da", "xz")
    src = ["--source-mirror", f"docker.io={rig.source.host}"]
    base, delta = tmp_path / "base", tmp_path / "delta.tar"
    made = chaosmirror("bundle", "export", "9.7.0", "--manifests", str(old), "-o", str(base), "--format",
                       "docker-archive", *src)  # fmt: skip
    assert made.code == 0, made.output
    assert "holds no signatures" in made.output
    run = chaosmirror("bundle", "export", "9.8.0", "--manifests", str(new), "-o", str(delta), "--since", str(base),
                      *src)  # fmt: skip
    assert run.code == 0 and [i["name"] for i in bundle_json(delta)["images"]] == ["da-z:1.0.0"]
    target = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert), "--account", account]
    assert chaosmirror("bundle", "import", str(base), *target).code == 0  # pushes new digests, one platform
    imported = chaosmirror("bundle", "import", str(delta), *target)
    assert imported.code == 0, imported.output
    entry = next(e for e in imported.report["images"] if e["source"].endswith("da-x:1.0.0"))
    assert entry["status"] == "skipped" and "the same image (its config)" in entry["reason"]
    assert entry["digest"] == target_client.digest(f"{account}/da-x", "1.0.0")


def test_a_bundle_keeps_foreign_layers_as_references(rig, chaosmirror, account, tmp_path):
    windows = make_image([foreign_layer("bwin-base", 4096), random_layer("bwin-app", 1024, docker=True)], os="windows",
                         os_version="10.0.17763.5122", docker=True)  # fmt: skip
    linux = make_image([random_layer("bwin-linux", 1024, docker=True)], docker=True)
    art = index([linux, windows], docker=True)
    push(rig.source.host, "harness/bundled-windows", "1.0.0", art)
    manifests = write_manifest(
        tmp_path / "m", "9.9.0", [("experiment", "w", "docker.io/harness/bundled-windows:1.0.0")]
    )
    out = tmp_path / "win.tar"
    run = chaosmirror("bundle", "export", "9.9.0", "--manifests", str(manifests), "-o", str(out), "--source-mirror",
                      f"docker.io={rig.source.host}")  # fmt: skip
    assert run.code == 0, run.output
    assert chaosmirror("bundle", "verify", str(out), report=False).code == 0  # its foreign layer is not missing
    refused = chaosmirror("bundle", "import", str(out), "--to", rig.target.host, "--account", account, "--ca-cert",
                          str(rig.tls.ca_cert))  # fmt: skip
    assert refused.code == 1 and "validation.manifests.urls.allow" in refused.report["images"][0]["error"]
    with RegistryServer(tmp_path / "allowing", foreign_urls=HUB_FOREIGN_URLS) as allowing:
        imported = chaosmirror("bundle", "import", str(out), "--to", allowing.host, "--account", account)
        assert imported.code == 0, imported.output
        client = Client(allowing.host)
        assert client.digest(f"{account}/bundled-windows", "1.0.0") == art.digest
        client.close()
