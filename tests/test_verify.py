"""`verify` end to end: a real target registry, changed behind its back on disk, checked with HEADs.

The destructive tests change the shared rig target's storage folder and put back what they took, so
other tests never see the damage. distribution answers a blob HEAD from its in-memory blob-descriptor
cache until it restarts (distribution/distribution#3802, #4569): a blob deleted from storage is
restarted out of the cache, as an operator's restart after `registry garbage-collect` would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chaosmirror.ref import ImageRef
from lab.images import MT_INDEX
from lab.registry import ACCEPT
from tests.conftest import source_digests
from tests.test_release_json import validator

pytestmark = pytest.mark.registry


def storage(rig) -> Path:  # type: ignore[no-untyped-def]
    return rig.target.folder / "data" / "docker/registry/v2"


def blob_file(rig, digest: str) -> Path:  # type: ignore[no-untyped-def]
    hexa = digest.split(":", 1)[1]
    return storage(rig) / "blobs/sha256" / hexa[:2] / hexa / "data"


def blobs_of(target_client, repo: str, tag: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """digest -> size of every config and layer the target's manifest at repo:tag references."""
    top = target_client.get_manifest(repo, tag)
    manifests = [target_client.get_manifest(repo, d["digest"]) for d in top["manifests"]] if (
        "manifests" in top) else [top]  # an OCI index or a Docker manifest list  # fmt: skip
    return {b["digest"]: b["size"] for m in manifests for b in [m["config"], *m["layers"]]}


@pytest.fixture
def ddcr_mirror(rig, chaosmirror, account) -> str:  # type: ignore[no-untyped-def]
    """The ddcr group of 1.47.0 (4 images, 2 of them multi-arch) mirrored into a fresh account."""
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 0, run.output
    return account


@pytest.fixture
def restart_target(rig) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    rig.target.stop()
    rig.target.start()


def test_verify_a_complete_mirror_heads_every_blob_once_and_reads_none(rig, chaosmirror, ddcr_mirror,
                                                                         target_client):  # fmt: skip
    account = ddcr_mirror
    before = len(rig.target.requests())
    run = chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 0, run.output
    validator("verify").validate(run.report)
    assert run.report["status"] == "complete" and run.report["expected_from"] == "source"
    sources = source_digests(rig, "1.47.0")
    wanted: set[tuple[str, str]] = set()
    for image in run.report["images"]:
        name, tag = image["destination"].rsplit("/", 1)[1].split(":")
        assert image["status"] == "ok" and image["expected_digest"] == image["digest"] == sources[f"{name}:{tag}"]
        wanted |= {(f"{account}/{name}", d) for d in blobs_of(target_client, f"{account}/{name}", tag)}
        for extra in image["extra_tags"]:  # the signatures beside it are checked whole too
            wanted |= {(f"{account}/{name}", d) for d in blobs_of(target_client, f"{account}/{name}", extra["tag"])}
    asked = rig.target.requests(before)
    heads = {(q.path.split("/blobs/")[0].removeprefix("/v2/"), q.path.split("/blobs/")[1])
             for q in asked if q.method == "HEAD" and "/blobs/" in q.path}  # fmt: skip
    assert heads == wanted and run.report["looked_up"]["blobs"] == len(wanted)
    assert not [q for q in asked if q.method == "GET" and "/blobs/" in q.path]  # no blob read
    assert "4 of 4 images complete" in run.output and "digests checked against the source" in run.output


def test_verify_names_the_image_and_the_blob_deleted_from_storage(rig, chaosmirror, ddcr_mirror, target_client,
                                                                  tmp_path, restart_target):  # fmt: skip
    account = ddcr_mirror
    layers = blobs_of(target_client, f"{account}/chaos-log-watcher", "1.47.0")
    own = next(d for d in layers if d not in blobs_of(target_client, f"{account}/chaos-ddcr", "1.47.0")
               and d not in blobs_of(target_client, f"{account}/chaos-ddcr-faults", "1.47.0")
               and d not in blobs_of(target_client, f"{account}/service-discovery-collector", "0.27.0"))  # fmt: skip
    kept = tmp_path / "kept"
    shutil.move(blob_file(rig, own), kept)
    try:
        rig.target.stop()
        rig.target.start()
        run = chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--offline")
    finally:
        shutil.move(kept, blob_file(rig, own))
    assert run.code == 1, run.output
    validator("verify").validate(run.report)
    bad = [i for i in run.report["images"] if i["status"] != "ok"]
    assert [i["destination"] for i in bad] == [f"{rig.target.host}/{account}/chaos-log-watcher:1.47.0"]
    assert bad[0]["status"] == "missing" and run.report["status"] == "incomplete"
    assert [(p["kind"], p["digest"], p["size"]) for p in bad[0]["problems"]] == [("missing-blob", own, layers[own])]
    line = f"missing: {rig.target.host}/{account}/chaos-log-watcher:1.47.0: blob {own}"
    assert line in run.output and f"{layers[own]} bytes, is missing" in run.output


def test_verify_names_a_deleted_tag_and_a_missing_platform(rig, chaosmirror, ddcr_mirror, target_client, tmp_path):
    account = ddcr_mirror
    tags = storage(rig) / "repositories" / account
    shutil.rmtree(tags / "service-discovery-collector/_manifests/tags/0.27.0")
    index = target_client.get_manifest(f"{account}/chaos-ddcr", "1.47.0")
    assert index["mediaType"] == MT_INDEX
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    revision = tags / "chaos-ddcr/_manifests/revisions/sha256" / arm["digest"].split(":")[1]
    shutil.rmtree(revision)  # the index stays, its arm64 manifest is gone from the repository
    run = chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 1, run.output
    validator("verify").validate(run.report)
    by_name = {i["destination"].rsplit("/", 1)[1]: i for i in run.report["images"]}
    gone = by_name["service-discovery-collector:0.27.0"]
    assert gone["status"] == "missing" and gone["digest"] is None
    assert [p["kind"] for p in gone["problems"]] == ["missing-tag"]
    assert gone["problems"][0]["digest"] == gone["expected_digest"]  # the source says what it should hold
    child = by_name["chaos-ddcr:1.47.0"]["problems"]
    assert [(p["kind"], p["digest"], p["size"], p["what"]) for p in child] == [
        ("missing-manifest", arm["digest"], arm["size"], "linux/arm64")
    ]
    assert {i["status"] for n, i in by_name.items() if n not in ("service-discovery-collector:0.27.0",
                                                                  "chaos-ddcr:1.47.0")} == {"ok"}  # fmt: skip
    assert f"tag {rig.target.host}/{account}/service-discovery-collector:0.27.0 is missing" in run.output


def test_verify_with_a_mirror_report_needs_no_source_and_checks_its_digests(rig, chaosmirror, account, tmp_path):
    report = tmp_path / "mirror.json"
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--report",
                       str(report), report=False).code == 0  # fmt: skip
    # nothing listens on port 9: the source is unreachable
    no_source = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert), "--source-mirror", "docker.io=127.0.0.1:9"]
    before = len(rig.target.requests())
    run = chaosmirror("verify", "1.47.0", *no_source, "--account", account, "--group", "ddcr", "--mirror-report",
                      str(report))  # fmt: skip
    assert run.code == 0, run.output
    assert run.report["expected_from"] == "report"
    recorded = {e["destination"]: e["digest"] for e in json.loads(report.read_text())["images"]}
    assert {i["destination"]: i["expected_digest"] for i in run.report["images"]} == recorded
    assert not [q for q in rig.target.requests(before) if q.method == "PUT"]  # verify changes nothing
    tampered = json.loads(report.read_text())
    tampered["images"][0]["digest"] = "sha256:" + "0" * 64
    report.write_text(json.dumps(tampered))
    wrong = chaosmirror("verify", "1.47.0", *no_source, "--account", account, "--group", "ddcr", "--mirror-report",
                        str(report))  # fmt: skip
    assert wrong.code == 1 and wrong.report["summary"]["wrong"] == 1
    assert f"not sha256:{'0' * 64}" in wrong.output


def test_verify_without_the_source_checks_presence_and_says_so(rig, chaosmirror, ddcr_mirror):
    unreachable = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert), "--source-mirror",
                   "docker.io=127.0.0.1:9", "--retries", "0"]  # fmt: skip
    run = chaosmirror("verify", "1.47.0", *unreachable, "--account", ddcr_mirror, "--group", "ddcr")
    assert run.code == 0, run.output
    assert run.report["expected_from"] is None and "cannot be read" in run.report["notes"][0]
    assert "digests not compared" in run.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mirror-report", "{plan}"], "is the report of `plan`"),
        (["--mirror-report", "{other}"], "records no image of HCE 1.47.0"),
        (["--bundle", "{missing}"], "--bundle:"),
        (["--mirror-report", "{plan}", "--bundle", "x.tar"], "give the expected digests once"),
    ],
)
def test_verify_bad_input_exits_2(rig, chaosmirror, account, tmp_path, args, message):
    plan = tmp_path / "plan.json"
    chaosmirror("plan", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--report", str(plan),
                report=False)  # fmt: skip
    other = tmp_path / "other.json"
    doc = json.loads(plan.read_text())
    doc["command"] = "mirror"
    elsewhere = {"status": "copied", "digest": "sha256:" + "1" * 64}
    doc["images"] = [
        {**e, **elsewhere, "destination": e["destination"].replace(account, "other")} for e in doc["images"]
    ]
    other.write_text(json.dumps(doc))
    names = {"plan": plan, "other": other, "missing": tmp_path / "nothing.tar"}
    filled = [a.format(**names) for a in args]
    run = chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", *filled)
    assert run.code == 2, run.output
    assert message in run.output and "Traceback" not in run.output


def test_plan_exit_code_gates_ci_on_anything_left_to_copy(rig, chaosmirror, account):
    base = ["plan", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr"]
    assert chaosmirror(*base).code == 0  # without --exit-code, pending copies are no failure
    pending = chaosmirror(*base, "--exit-code")
    assert pending.code == 1 and "4 to copy" in pending.output
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr").code == 0
    done = chaosmirror(*base, "--exit-code")
    assert done.code == 0 and "0 to copy" in done.output


@pytest.mark.dockerd
def test_verify_a_docker_engine_mirror_against_its_report(rig, chaosmirror, account, dockerd, daemon_trusts_target,
                                                          monkeypatch, tmp_path):  # fmt: skip
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    env = {"DOCKER_HOST": dockerd.host}
    report = tmp_path / "docker-mirror.json"
    base = ["1.47.0", *rig.args(), "--account", account, "--group", "ddcr"]
    mirrored = chaosmirror("mirror", *base, "--engine", "docker", "--report", str(report), env=env, report=False)
    assert mirrored.code == 0, mirrored.output
    pushed = {e["destination"]: e["digest"] for e in json.loads(report.read_text())["images"]}
    sources = {e["destination"]: e["source_digest"] for e in json.loads(report.read_text())["images"]}
    assert all(pushed[d] != sources[d] for d in pushed)  # the daemon pushed manifests of its own
    run = chaosmirror("verify", *base, "--mirror-report", str(report))
    assert run.code == 0, run.output
    assert {i["destination"]: i["expected_digest"] for i in run.report["images"]} == pushed
    against_source = chaosmirror("verify", *base)  # the source's digests are not what Docker pushed
    # every image is off against the source: a new digest, or (Docker Hub signatures cannot pass through
    # a daemon) a signature missing beside it
    assert against_source.code == 1 and sum(v["status"] != "ok" for v in against_source.report["images"]) == 4
    assert "--mirror-report" in against_source.output
    presence = chaosmirror("verify", *base, "--engine", "docker")  # knows digests differ: checks presence only
    assert presence.code == 0 and presence.report["expected_from"] is None
    assert "--mirror-report" in presence.report["images"][0]["unknown"]
    shutil.rmtree(storage(rig) / "repositories" / account / "chaos-ddcr/_manifests/tags/1.47.0")
    gone = chaosmirror("verify", *base, "--mirror-report", str(report))
    assert gone.code == 1 and [i["status"] for i in gone.report["images"]].count("missing") == 1


def test_an_extra_tag_beside_an_image_is_looked_up_and_judged(rig, ddcr_mirror, target_client):
    """What signature copying (issue 9) will hand verify: tags expected beside an image, looked up whole."""
    from chaosmirror.cli.app import settings_from
    from chaosmirror.release import Catalog, bundled_dir
    from chaosmirror.verdict import ExtraTag
    from chaosmirror.verify import Expected, verify_release

    account = ddcr_mirror
    repo = f"{account}/chaos-log-watcher"
    held = target_client.digest(repo, "1.47.0")
    tag = "sha256-" + held.split(":")[1] + ".sig"
    _, headers, raw = target_client.request("GET", f"/v2/{repo}/manifests/1.47.0", headers={"Accept": ACCEPT})
    target_client.put_manifest(repo, tag, raw, headers["content-type"])  # a stand-in signature: any manifest will do
    chosen = settings_from(target=rig.target.host, account=account, groups=("ddcr",), ca_cert=rig.tls.ca_cert)
    settings = replace(chosen, env=rig.env)  # the target's credentials, as the CLI reads them
    dst = settings.target.place(ImageRef.parse("harness/chaos-log-watcher:1.47.0"))
    release = Catalog(bundled_dir()).load("1.47.0")

    def verify(signature: ExtraTag) -> dict[str, object]:
        expected = Expected({}, "", "not asked", extra_tags={dst: (signature,)})
        result = verify_release(release, settings, expected=expected)
        return next(v.to_json() for v in result.verdicts if v.check.dst == dst)

    assert verify(ExtraTag(tag, "signature", held))["status"] == "ok"
    wrong = "sha256:" + "3" * 64
    assert [p["kind"] for p in verify(ExtraTag(tag, "signature", wrong))["problems"]] == ["wrong-digest"]
    gone = verify(ExtraTag(tag + "x", "signature"))
    assert gone["status"] == "missing" and gone["problems"][0]["what"] == "signature"


def test_verify_finds_a_signature_missing_next_to_a_mirrored_image(rig, chaosmirror, account, tmp_path):
    """The signatures the source keeps next to an image (and a mirror put beside it) are checked too:
    from the source, and from the mirror's report."""
    report = tmp_path / "mirror.json"
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", report=False)
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--report",
                       str(report), report=False).code == 0, run.output  # fmt: skip
    doc = json.loads(report.read_text())
    signed = next(e for e in doc["images"] if any(s.get("tag", "").endswith(".sbom") for s in e.get("signatures", [])))
    name = signed["destination"].rsplit("/", 1)[1].split(":")[0]
    tag = next(s["tag"] for s in signed["signatures"] if s.get("tag", "").endswith(".sbom"))
    assert chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr").code == 0
    link = storage(rig) / "repositories" / account / name / "_manifests" / "tags" / tag
    assert link.is_dir()
    shutil.rmtree(link)
    for how in ([], ["--mirror-report", str(report)]):
        run = chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", *how)
        assert run.code == 1, run.output
        (bad,) = [v for v in run.report["images"] if v["status"] != "ok"]
        assert bad["destination"].endswith(f"/{name}:1.47.0")
        assert any(p["what"] == "SBOM" and tag in json.dumps(p) for p in bad["problems"]), bad["problems"]
    assert chaosmirror("verify", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr",
                       "--no-signatures").code == 0  # fmt: skip
