"""The Docker engine end to end: a real dockerd (started here), real registries on loopback.

The target is the rig's TLS + htpasswd registry; the daemon trusts its CA through
/etc/docker/certs.d, as a real daemon would be configured (see `daemon_trusts_target`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from chaosmirror.engines.docker import explain_daemon, explain_stream
from lab.dockerd import DockerDaemon
from lab.images import MT_INDEX
from lab.rig import PASSWORD
from tests.conftest import source_digests

pytestmark = pytest.mark.dockerd


@pytest.fixture
def docker_env(dockerd, daemon_trusts_target, monkeypatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    return {"DOCKER_HOST": dockerd.host}


def amd64_config(rig, name: str, tag: str) -> str:  # type: ignore[no-untyped-def]
    art = rig.artifacts[(f"harness/{name}", tag)]
    image = next(i for i in art.images if i.platform["architecture"] == "amd64")
    return json.loads(image.manifest.data)["config"]["digest"]


def test_mirror_with_the_docker_engine_records_what_it_pushed(rig, chaosmirror, account, target_client, docker_env):
    since = len(rig.source.requests())
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--engine", "docker", env=docker_env)
    assert run.report["engine"] == "docker"
    assert "warning: the Docker engine keeps one platform per image" in run.output and "7 multi-arch" in run.output
    failed = [e for e in run.report["images"] if e["status"] == "failed"]
    assert [e["source"] for e in failed] == ["docker.io/harness/chaos-k8s:1.47.0"] and run.code == 1  # zstd
    assert "zstd-compressed layer, which Docker 20.10" in failed[0]["error"] and "--engine skopeo" in failed[0]["error"]
    assert target_client.digest(f"{account}/chaos-k8s", "1.47.0") is None
    sources = source_digests(rig)
    for entry in run.report["images"]:
        if entry["status"] == "failed":
            continue
        name, tag = entry["destination"].rsplit("/", 1)[1].split(":")
        held = target_client.get_manifest(f"{account}/{name}", tag)
        assert held["mediaType"] != MT_INDEX  # one platform per image
        assert held["config"]["digest"] == amd64_config(rig, name, tag)  # the same image, re-pushed
        assert entry["digest"] == target_client.digest(f"{account}/{name}", tag)  # the digest actually pushed
        assert entry["source_digest"] == sources[f"{name}:{tag}"]
    exporter = next(e for e in run.report["images"] if e["source"].endswith("chaos-exporter:1.47.0"))
    left = " | ".join(exporter["left_out"])
    assert "platforms linux/arm64" in left and "2 attestation manifests" in left and "Docker daemon" in left
    assert "what is attached to the source digests (4: " in left  # index .sig and .att, amd64 .sig, referrers
    assert PASSWORD not in run.output + json.dumps(run.report)
    cold = sum(1 for r in rig.source.requests(since) if r.method == "GET" and "/manifests/" in r.path)
    assert cold <= 19 + 2 * 18  # each index once; each platform manifest by the survey and by the daemon

    since, writes = len(rig.source.requests()), len(rig.target.requests())
    again = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--engine", "docker", env=docker_env)
    statuses = {e["source"].rsplit("/", 1)[1]: e["status"] for e in again.report["images"]}
    assert statuses.pop("chaos-k8s:1.47.0") == "failed" and set(statuses.values()) == {"skipped"}  # buildx ones too
    assert [r for r in rig.source.requests(since) if r.method == "GET" and "/manifests/" in r.path] == []
    assert [r for r in rig.target.requests(writes) if r.method in ("PUT", "POST", "PATCH")] == []  # nothing copied


def test_docker_engine_leaves_a_skopeo_mirror_alone(rig, chaosmirror, account, target_client, docker_env):
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr").code == 0
    before = target_client.digest(f"{account}/chaos-ddcr", "1.47.0")
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--engine", "docker",
                      env=docker_env)  # fmt: skip
    assert run.code == 0 and {e["status"] for e in run.report["images"]} == {"skipped"}
    assert target_client.digest(f"{account}/chaos-ddcr", "1.47.0") == before  # the multi-arch index stays whole


def test_docker_engine_copies_one_platform_and_refuses_several(rig, chaosmirror, account, target_client, docker_env):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--engine", "docker",
                      "--platform", "linux/amd64", "--platform", "linux/arm64", env=docker_env)  # fmt: skip
    assert run.code == 2 and "one --platform" in run.output
    arm = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--engine", "docker",
                      "--platform", "linux/arm64", env=docker_env)  # fmt: skip
    copied = {e["source"].rsplit("/", 1)[1] for e in arm.report["images"] if e["status"] == "copied"}
    assert copied == {"chaos-ddcr:1.47.0", "chaos-ddcr-faults:1.47.0"}  # the amd64-only ones fail, alone
    art = rig.artifacts[("harness/chaos-ddcr", "1.47.0")]
    config = json.loads(next(i for i in art.images if i.platform["architecture"] == "arm64").manifest.data)["config"]
    assert target_client.get_manifest(f"{account}/chaos-ddcr", "1.47.0")["config"]["digest"] == config["digest"]


def test_docker_engine_bundle_is_one_docker_save_that_loads_back(rig, chaosmirror, account, dockerd, docker_env,
                                                                  tmp_path):  # fmt: skip
    out = tmp_path / "hce-docker"
    base = ["--source-mirror", f"docker.io={rig.source.host}", "--group", "ddcr", "--engine", "docker"]
    refused = chaosmirror("bundle", "export", "1.47.0", "-o", str(tmp_path / "x.tar"), *base, env=docker_env)
    assert refused.code == 2 and "cannot write OCI layouts" in refused.output
    run = chaosmirror("bundle", "export", "1.47.0", "-o", str(out), "--format", "docker-archive", *base, env=docker_env)
    assert run.code == 0, run.output
    info = json.loads((out / "bundle.json").read_text())
    assert {name for image in info["images"] for _, name in image["archives"]} == {"images_linux-amd64.tar"}
    assert chaosmirror("bundle", "verify", str(out), report=False).code == 0
    import subprocess

    for image in info["images"]:
        inspected = subprocess.run(["skopeo", "inspect", f"docker-archive:{out}/images_linux-amd64.tar:"
                                    f"{image['source']}"], capture_output=True, text=True, check=False)  # fmt: skip
        assert inspected.returncode == 0, inspected.stderr
    loaded = dockerd.docker("load", "-i", str(out / "images_linux-amd64.tar"))
    assert loaded.returncode == 0 and loaded.stdout.count(b"Loaded image") == 4, loaded.stdout + loaded.stderr
    for engine in ("docker", "skopeo"):
        imported = chaosmirror("bundle", "import", str(out), "--to", rig.target.host, "--account", f"{account}{engine}",
                               "--ca-cert", str(rig.tls.ca_cert), "--engine", engine, env=docker_env)  # fmt: skip
        assert imported.code == 0, imported.output
        assert imported.report["summary"]["copied"] == 4


def test_a_missing_daemon_is_one_clear_message(rig, chaosmirror, account, tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nothing-here.sock"}
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--engine", "docker", env=env)
    assert run.code == 1 and "cannot reach the Docker daemon" in run.output and "DOCKER_HOST" in run.output


def test_auto_uses_docker_without_skopeo_and_names_both_fixes_without_either(rig, chaosmirror, account, docker_env,
                                                                              tmp_path, monkeypatch):  # fmt: skip
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no skopeo on PATH
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", env=docker_env)
    assert run.code == 0, run.output
    assert run.report["engine"] == "docker"
    neither = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account,
                          env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})  # fmt: skip
    assert neither.code == 1
    assert "apt-get install skopeo" in neither.output and "cannot reach the Docker daemon" in neither.output
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))


def test_daemon_and_stream_errors_read_well():
    assert "add your user to the docker group" in explain_daemon(PermissionError(13, "Permission denied"), "unix:///x")
    limited = explain_stream("toomanyrequests: You have reached your pull rate limit.", "docker.io/a/b:1", "src")
    assert "rate limit" in limited and "CHAOSMIRROR_SRC_USERNAME" in limited and "--source-mirror" in limited
    assert "/etc/docker/certs.d" in explain_stream("x509: certificate signed by unknown authority", "r/a:1", "dest")


def test_docker_engine_cannot_touch_oci_layouts(docker_env, rig):
    from chaosmirror.engines.docker import DockerEngine
    from chaosmirror.errors import EngineError
    from chaosmirror.ref import ImageRef, LayoutRef
    from chaosmirror.registry import Registries

    engine = DockerEngine(Registries())
    try:
        with pytest.raises(EngineError, match="cannot read or write OCI layouts"):
            engine.copy(ImageRef.parse("a/b:1"), LayoutRef(Path("/tmp/x"), "n"))
    finally:
        engine.close()


def test_the_daemon_pushes_no_layer_that_chaosmirror_put_there_first(rig, chaosmirror, account, target_client,
                                                                   daemon_trusts_target):  # fmt: skip
    """chaosmirror's client uploads every config and gzip layer once, before the daemon pushes; the
    daemon's push finds each by the digest it pulled, so it compresses and uploads none of them, and
    the layers in the target keep the source's digests (the manifests are the daemon's own). A fresh
    daemon: one that remembers pushes of other tests to this registry may mount their layers instead."""
    since = len(rig.target.requests())
    folder = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))  # containerd's socket path must be short
    with DockerDaemon(folder) as daemon:
        run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--engine", "docker", "--group",
                          "ddcr", env={"DOCKER_HOST": daemon.host})  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    assert run.code == 0, run.output
    logged = rig.target.requests(since)
    uploads = [r for r in logged if r.method in ("POST", "PATCH", "PUT") and "/blobs/uploads/" in r.path]
    assert uploads and {r.agent for r in uploads} == {"chaosmirror"}, Counter(r.agent for r in uploads)
    committed = Counter(urllib.parse.parse_qs(urllib.parse.urlsplit(r.path).query)["digest"][0] for r in uploads
                        if r.method == "PUT" and r.status == 201)  # fmt: skip
    assert committed and max(committed.values()) == 1, committed  # each blob once, shared ones too
    for entry in run.report["images"]:
        name, tag = entry["destination"].rsplit("/", 1)[1].split(":")
        held = target_client.get_manifest(f"{account}/{name}", tag)
        art = rig.artifacts[(f"harness/{name}", tag)]
        image = next(i for i in art.images if i.platform.get("architecture", "amd64") == "amd64")
        source = json.loads(image.manifest.data)
        assert [x["digest"] for x in held["layers"]] == [x["digest"] for x in source["layers"]]
        assert held["config"]["digest"] == source["config"]["digest"]
        assert set(committed) >= {x["digest"] for x in source["layers"]}


def test_config_out_after_a_docker_run_pins_the_digests_it_pushed(rig, chaosmirror, account, docker_env, tmp_path):
    out = tmp_path / "cfg"
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "dedicated", "--engine",
                      "docker", "--secret-name", "hce-pull", "--config-out", str(out), env=docker_env)  # fmt: skip
    assert run.code == 0, run.output
    entry = next(e for e in run.report["images"] if e["source"].endswith("chaos-operator:1.47.0"))
    assert entry["digest"] != entry["source_digest"] or entry["status"] == "skipped"
    assert f"tag: 1.47.0@{entry['digest']}" in (out / "helm" / "chaos-infra-values.yaml").read_text()


def test_docker_engine_on_a_far_target_pushes_one_platform_to_each_tag(rig, account, target_client, docker_env):
    """Far targets split an index into copies by digest, which a daemon cannot push: the Docker engine
    copies one platform's manifest to the tag, and never puts an index of manifests it did not push."""
    from chaosmirror.engines.docker import DockerEngine
    from chaosmirror.engines.repush import same_config
    from chaosmirror.manifest import Platform
    from chaosmirror.mirror import run
    from chaosmirror.plan import build_plan, collect_items
    from chaosmirror.ref import SourceMirror, Target
    from chaosmirror.registry import Registries
    from chaosmirror.release import Catalog, bundled_dir
    from chaosmirror.survey import survey

    rel = Catalog(bundled_dir()).load("1.47.0")
    items = collect_items(rel.images(("dedicated",)), Target(rig.target.host, "", account),
                          (SourceMirror.parse(f"docker.io={rig.source.host}"),))  # fmt: skip
    registries = Registries(ca_file=Path(rig.tls.ca_cert), env=rig.env)
    wanted = (Platform.parse("linux/amd64"),)
    plan = build_plan(items, survey(items, registries, wanted, configs=True, alone=True), wanted, exact=False,
                      recognise=same_config)  # fmt: skip
    engine = DockerEngine(registries)
    try:
        entries = run(plan, engine, registries, jobs=4, split=True)
    finally:
        engine.close()
        registries.close()
    assert {e.status for e in entries} == {"copied"}, [e.error for e in entries if e.error]
    held = target_client.get_manifest(f"{account}/chaos-workflow-controller", "v3.4.16")  # a one-platform buildx
    assert held["mediaType"] != MT_INDEX
    assert held["config"]["digest"] == amd64_config(rig, "chaos-workflow-controller", "v3.4.16")
