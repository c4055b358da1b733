"""End to end: chaosmirror against real registries on loopback (plain source, TLS + auth target)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.images import MT_INDEX, make_image, random_layer, single
from lab.images import index as make_index
from lab.registry import push
from lab.rig import PASSWORD
from tests.conftest import source_digests, write_manifest

pytestmark = pytest.mark.registry


def test_mirror_147_copies_every_image_with_its_source_digest(rig, chaosmirror, account, target_client):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account)
    assert run.code == 0, run.output
    expected = source_digests(rig)
    assert run.report["status"] == "success"
    assert {e["status"] for e in run.report["images"]} == {"copied"}
    assert len(run.report["images"]) == len(expected) == 19
    for name_tag, digest in expected.items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest, name_tag
    by_dest = {e["destination"]: e for e in run.report["images"]}
    runner = by_dest[f"{rig.target.host}/{account}/chaos-runner:1.47.0"]
    assert runner["source"] == "docker.io/harness/chaos-runner:1.47.0"
    assert runner["pulled_from"] == f"{rig.source.host}/harness/chaos-runner:1.47.0"
    assert runner["digest"] == expected["chaos-runner:1.47.0"]
    watcher = by_dest[f"{rig.target.host}/{account}/chaos-log-watcher:1.47.0"]
    assert watcher["uses"] == ["ddcr/log-watcher", "dedicated/log-watcher"]


def test_rerun_copies_nothing_when_target_has_every_digest(rig, chaosmirror, account):
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account).code == 0
    again = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account)
    assert again.code == 0, again.output
    assert {e["status"] for e in again.report["images"]} == {"skipped"}
    assert "0 copied" in again.output and "19 already there" in again.output


def test_multi_arch_image_keeps_every_platform(rig, chaosmirror, account, target_client):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 0, run.output
    index = target_client.get_manifest(f"{account}/chaos-ddcr", "1.47.0")  # every 3rd stand-in is multi-arch
    assert index["mediaType"] == MT_INDEX
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for child in index["manifests"]:
        assert target_client.digest(f"{account}/chaos-ddcr", child["digest"]) == child["digest"]
    entry = next(e for e in run.report["images"] if e["source"].endswith("chaos-ddcr:1.47.0"))
    assert entry["platforms"] == ["linux/amd64", "linux/arm64"]


def test_one_platform_copies_that_platforms_manifest(rig, chaosmirror, account, target_client):
    run = chaosmirror(
        "mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr", "--platform", "linux/arm64"
    )
    art = rig.artifacts[("harness/chaos-ddcr", "1.47.0")]
    arm = next(i for i in art.images if i.platform["architecture"] == "arm64")
    assert target_client.digest(f"{account}/chaos-ddcr", "1.47.0") == arm.manifest.digest
    entry = next(e for e in run.report["images"] if e["source"].endswith("chaos-ddcr:1.47.0"))
    assert entry["digest"] == arm.manifest.digest and entry["platforms"] == ["linux/arm64"]
    # The amd64-only stand-ins cannot serve an arm64 cluster: they fail, alone, and say why.
    failed = [e for e in run.report["images"] if e["status"] == "failed"]
    assert run.code == 1 and len(failed) == 2
    assert all(e["error"] == "the image has only linux/amd64, not linux/arm64" for e in failed)


def test_a_subset_of_platforms_gets_a_filtered_index(tmp_path, rig, chaosmirror, account, target_client):
    repo, tag = "harness/three-arch", "2.0.0"
    images = [make_image([random_layer(f"3a-{arch}", 2048)], arch=arch) for arch in ("amd64", "arm64", "s390x")]
    push(rig.source.host, repo, tag, make_index(images))
    manifests = write_manifest(tmp_path / "m", "9.0.0", [("experiment", "x", f"docker.io/{repo}:{tag}")])
    run = chaosmirror(
        "mirror",
        "9.0.0",
        "--manifests",
        str(manifests),
        *rig.args(),
        "--account",
        account,
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/s390x",
    )
    assert run.code == 0, run.output
    index = target_client.get_manifest(f"{account}/three-arch", tag)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "s390x"]
    assert target_client.digest(f"{account}/three-arch", tag) == run.report["images"][0]["digest"]


def test_dry_run_and_plan_copy_nothing(rig, chaosmirror, account, target_client):
    for argv in (["plan", "1.47.0"], ["mirror", "1.47.0", "--dry-run"]):
        run = chaosmirror(*argv, *rig.args(), "--account", account)
        assert run.code == 0, run.output
        assert "19 to copy" in run.output
        assert {e["status"] for e in run.report["images"]} == {"planned"}
    assert target_client.digest(f"{account}/chaos-runner", "1.47.0") is None
    assert chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr").code == 0
    run = chaosmirror("plan", "1.47.0", *rig.args(), "--account", account)
    assert "15 to copy" in run.output and "4 already there" in run.output


def test_wrong_password_fails_clearly_and_never_shows_the_password(rig, chaosmirror, account, tmp_path):
    wrong = "Wr0ng-" + PASSWORD[::-1]
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, env={"CHAOSMIRROR_DEST_PASSWORD": wrong})
    assert run.code == 1
    assert "rejected the credentials" in run.output and "CHAOSMIRROR_DEST_PASSWORD" in run.output
    assert run.report["status"] == "error"
    assert {e["status"] for e in run.report["images"]} == {"failed"}
    text = run.output + json.dumps(run.report)
    for secret in (wrong, PASSWORD):
        assert secret not in text


def test_password_never_reaches_skopeo_argv_or_output(rig, chaosmirror, account, monkeypatch):
    import subprocess

    seen: list[list[str]] = []

    class Spy(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, argv, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(list(argv))
            super().__init__(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 0, run.output
    assert any("copy" in argv for argv in seen), "skopeo was not run"
    assert all(PASSWORD not in " ".join(argv) for argv in seen)
    assert PASSWORD not in run.output + json.dumps(run.report)


def test_no_credentials_for_an_auth_target_names_the_variables(rig, chaosmirror, account):
    run = chaosmirror(
        "mirror",
        "1.47.0",
        *rig.args(),
        "--account",
        account,
        env={"CHAOSMIRROR_DEST_USERNAME": "", "CHAOSMIRROR_DEST_PASSWORD": ""},
    )
    assert run.code == 1
    assert "requires credentials" in run.output and "CHAOSMIRROR_DEST_USERNAME" in run.output


def test_a_missing_source_image_fails_alone(tmp_path, rig, chaosmirror, account, target_client):
    manifests = write_manifest(
        tmp_path / "m",
        "1.47.0",
        [
            ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:1.47.0"),
            ("ddcr", "ghost", "docker.io/harness/chaos-ghost:9.9.9"),
            ("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
        ],
    )
    run = chaosmirror("mirror", "1.47.0", "--manifests", str(manifests), *rig.args(), "--account", account)
    assert run.code == 1
    status = {e["source"]: e["status"] for e in run.report["images"]}
    assert status == {
        "docker.io/harness/chaos-ddcr:1.47.0": "copied",
        "docker.io/harness/chaos-ghost:9.9.9": "failed",
        "docker.io/harness/chaos-runner:1.47.0": "copied",
    }
    ghost = next(e for e in run.report["images"] if e["status"] == "failed")
    assert "not found" in ghost["error"]
    assert run.report["status"] == "partial"
    assert target_client.digest(f"{account}/chaos-runner", "1.47.0") is not None


def test_two_sources_landing_on_one_name_are_refused_before_copying(tmp_path, rig, chaosmirror, account, target_client):
    push(rig.source.host, "other/chaos-runner", "1.47.0", single(make_image([random_layer("other-runner", 1024)])))
    manifests = write_manifest(
        tmp_path / "m",
        "1.47.0",
        [
            ("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
            ("experiment", "runner", "docker.io/other/chaos-runner:1.47.0"),
            ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:1.47.0"),
        ],
    )
    run = chaosmirror("mirror", "1.47.0", "--manifests", str(manifests), *rig.args(), "--account", account)
    assert run.code == 2
    assert "same name and tag" in run.output and "other/chaos-runner" in run.output
    assert target_client.digest(f"{account}/chaos-ddcr", "1.47.0") is None


def test_source_mirror_with_a_path(rig, chaosmirror, account, target_client):
    art = single(make_image([random_layer("gar-runner", 1024)]))
    push(rig.source.host, "gar-prod-setup/harness-public/harness/chaos-runner", "1.47.0", art)
    run = chaosmirror(
        "mirror",
        "1.47.0",
        "--group",
        "dedicated",
        "--to",
        rig.target.host,
        "--account",
        account,
        "--ca-cert",
        str(rig.tls.ca_cert),
        "--source-mirror",
        f"docker.io={rig.source.host}/gar-prod-setup/harness-public",
    )
    # only chaos-runner exists under that path: it copies, the other dedicated images fail alone
    runner = next(e for e in run.report["images"] if e["source"].endswith("chaos-runner:1.47.0"))
    assert runner["status"] == "copied"
    assert runner["pulled_from"] == f"{rig.source.host}/gar-prod-setup/harness-public/harness/chaos-runner:1.47.0"
    assert target_client.digest(f"{account}/chaos-runner", "1.47.0") == art.digest


def test_a_tls_target_without_its_ca_is_refused_with_advice(rig, chaosmirror, account):
    run = chaosmirror(
        "mirror",
        "1.47.0",
        "--to",
        rig.target.host,
        "--account",
        account,
        "--source-mirror",
        f"docker.io={rig.source.host}",
    )
    assert run.code == 1
    assert "--ca-cert" in run.output


def test_insecure_registry_skips_verification(rig, chaosmirror, account):
    run = chaosmirror(
        "mirror",
        "1.47.0",
        "--to",
        rig.target.host,
        "--account",
        account,
        "--group",
        "ddcr",
        "--source-mirror",
        f"docker.io={rig.source.host}",
        "--insecure-registry",
        rig.target.host,
    )
    assert run.code == 0, run.output


def test_an_unreachable_target_is_one_clear_error(rig, chaosmirror, account):
    run = chaosmirror(
        "mirror",
        "1.47.0",
        "--to",
        "127.0.0.1:9",
        "--account",
        account,
        "--source-mirror",
        f"docker.io={rig.source.host}",
    )
    assert run.code == 1
    assert "cannot reach registry 127.0.0.1:9" in run.output


def test_target_with_a_path_lays_images_out_as_hce_expects(rig, chaosmirror, target_client):
    run = chaosmirror(
        "mirror",
        "1.47.0",
        "--group",
        "ddcr",
        "--to",
        f"{rig.target.host}/mirror/hce",
        "--account",
        "acme",
        "--ca-cert",
        str(rig.tls.ca_cert),
        "--source-mirror",
        f"docker.io={rig.source.host}",
    )
    assert run.code == 0, run.output
    assert target_client.digest("mirror/hce/acme/chaos-ddcr", "1.47.0") == source_digests(rig)["chaos-ddcr:1.47.0"]


def test_the_console_script_runs_as_a_real_process(rig, account, tmp_path):
    import os
    import subprocess
    import sys

    report = tmp_path / "r.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosmirror",
            "mirror",
            "1.47.0",
            *rig.args(),
            "--account",
            account,
            "--group",
            "ddcr",
            "--report",
            str(report),
        ],
        env={**os.environ, **rig.env},
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "copied" in done.stderr  # one plain line per image when not on a terminal
    assert "4 copied" in done.stdout
    assert json.loads(report.read_text())["summary"]["copied"] == 4
    assert PASSWORD not in done.stdout + done.stderr


def test_copies_of_shared_layers_and_split_indexes_give_the_same_digests(rig, account, target_client):
    """The parallel-platform path (used for far targets) lands the same digests as one copy per image."""
    from chaosmirror.engines.skopeo import Skopeo
    from chaosmirror.mirror import run
    from chaosmirror.plan import build_plan, collect_items
    from chaosmirror.ref import SourceMirror, Target
    from chaosmirror.registry import Registries
    from chaosmirror.release import Catalog, bundled_dir
    from chaosmirror.survey import survey

    rel = Catalog(bundled_dir()).load("1.47.0")
    items = collect_items(
        rel.images(), Target(rig.target.host, "", account), (SourceMirror.parse(f"docker.io={rig.source.host}"),)
    )
    registries = Registries(ca_file=Path(rig.tls.ca_cert), env=rig.env)
    plan = build_plan(items, survey(items, registries))
    engine = Skopeo(registries)
    try:
        entries = run(plan, engine, registries, jobs=4, split=True)
    finally:
        engine.close()
        registries.close()
    assert {e.status for e in entries} == {"copied"}
    for name_tag, digest in source_digests(rig).items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest


def test_plan_needs_no_copy_engine(rig, chaosmirror, account, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no skopeo, no docker
    run = chaosmirror("plan", "1.47.0", *rig.args(), "--account", account)
    assert run.code == 0, run.output
    assert "19 to copy" in run.output
