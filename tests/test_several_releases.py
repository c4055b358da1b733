"""Several releases in one run: `mirror 9.1.0 9.2.0` copies the union of their images, each once, and
the report, the bundle and `verify` say which releases need each image. Real registries on loopback.

The two releases (manifests written here) share chaos-log-watcher and chaos-operator; each has an
image of its own (chaos-ddcr 1.47.0 and 9.2.0, chaos-runner), pushed to the rig's source.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from chaosmirror.cli import cli
from lab import standin
from lab.rig import Rig
from tests.conftest import write_manifest
from tests.test_release_json import validator

pytestmark = pytest.mark.registry

OLD, NEW = "9.1.0", "9.2.0"
H = "docker.io/harness"
NEEDED = {  # name:tag -> the releases that need it
    "chaos-ddcr:1.47.0": [OLD],
    "chaos-log-watcher:1.47.0": [OLD, NEW],
    "chaos-operator:1.47.0": [OLD, NEW],
    "chaos-ddcr:9.2.0": [NEW],
    "chaos-runner:1.47.0": [NEW],
}


@pytest.fixture(scope="module")
def two_releases(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The manifests folder of both releases, and name:tag -> source digest of each image."""
    arts = standin.build([("harness/chaos-ddcr", "9.2.0")], salt="several-")
    pushed = standin.push_all(rig.source.host, arts)
    folder = tmp_path_factory.mktemp("two-releases")
    write_manifest(folder, OLD, [("ddcr", "ddcr", f"{H}/chaos-ddcr:1.47.0"),
                                 ("ddcr", "log-watcher", f"{H}/chaos-log-watcher:1.47.0"),
                                 ("dedicated", "log-watcher", f"{H}/chaos-log-watcher:1.47.0"),
                                 ("dedicated", "operator", f"{H}/chaos-operator:1.47.0")])  # fmt: skip
    write_manifest(folder, NEW, [("ddcr", "ddcr", f"{H}/chaos-ddcr:9.2.0"),
                                 ("ddcr", "log-watcher", f"{H}/chaos-log-watcher:1.47.0"),
                                 ("dedicated", "operator", f"{H}/chaos-operator:1.47.0"),
                                 ("dedicated", "runner", f"{H}/chaos-runner:1.47.0")])  # fmt: skip
    digests = {f"{repo.split('/')[-1]}:{tag}": art.digest for (repo, tag), art in rig.artifacts.items()}
    digests["chaos-ddcr:9.2.0"] = pushed[("harness/chaos-ddcr", "9.2.0")]
    return folder, {name: digests[name] for name in NEEDED}


def name_of(destination: str) -> str:
    return destination.rsplit("/", 1)[1]


def test_two_releases_in_one_mirror_copy_each_shared_image_once(rig, chaosmirror, account, target_client,
                                                                 two_releases, tmp_path):  # fmt: skip
    folder, digests = two_releases
    both = [OLD, NEW, "--manifests", str(folder), *rig.args(), "--account", account]
    plan = CliRunner().invoke(cli, ["plan", *both, "--output", "json"], env=rig.env)
    assert plan.exit_code == 0, plan.output
    planned = json.loads(plan.stdout)  # stdout holds the JSON alone; the table went to stderr
    validator("report").validate(planned)
    assert planned["summary"]["planned"] == 5 and "RELEASES" in plan.stderr

    before = len(rig.target.requests())
    run = chaosmirror("mirror", NEW, OLD, "--manifests", str(folder), *rig.args(), "--account", account)
    assert run.code == 0, run.output
    validator("report").validate(run.report)
    assert run.report["release"] == f"{OLD}+{NEW}" and run.report["releases"] == [OLD, NEW]
    assert {name_of(e["destination"]): e["releases"] for e in run.report["images"]} == NEEDED
    assert run.report["summary"]["copied"] == 5 and len(run.report["images"]) == 5
    watcher = next(e for e in run.report["images"] if name_of(e["destination"]) == "chaos-log-watcher:1.47.0")
    assert watcher["uses"] == ["ddcr/log-watcher", "dedicated/log-watcher"]  # once per group, not per release
    tag_puts = Counter(q.path for q in rig.target.requests(before) if q.method == "PUT" and "/manifests/" in q.path
                       and "/manifests/sha256:" not in q.path
                       and "/manifests/sha256-" not in q.path)  # not the signatures' tags  # fmt: skip
    assert tag_puts == Counter({f"/v2/{account}/{n.replace(':', '/manifests/')}": 1 for n in NEEDED})
    for name_tag, digest in digests.items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest, name_tag

    verified = chaosmirror("verify", OLD, NEW, "--manifests", str(folder), *rig.args(), "--account", account)
    assert verified.code == 0, verified.output
    validator("verify").validate(verified.report)
    assert {name_of(i["destination"]): i["releases"] for i in verified.report["images"]} == NEEDED
    again = chaosmirror("mirror", NEW, "--manifests", str(folder), *rig.args(), "--account", account)
    assert again.code == 0 and again.report["summary"]["skipped"] == 4 and again.report["releases"] == [NEW]

    report = tmp_path / "both.json"
    report.write_text(json.dumps(run.report))
    target = ["--to", rig.target.host, "--account", account, "--ca-cert", str(rig.tls.ca_cert)]
    for releases in ([OLD, NEW], [NEW]):  # the report of both pins either
        out = tmp_path / "-".join(releases)
        config = CliRunner().invoke(cli, ["config", *releases, "--manifests", str(folder), *target, "--pin-digests",
                                          "--report", str(report), "-o", str(out)])  # fmt: skip
        assert config.exit_code == 0, config.output
        conf = (out / "nodes/containers/registries.conf.d/50-chaosmirror.conf").read_text()
        assert f"{H}/chaos-runner" in conf and f"{H}/chaos-ddcr" in conf
        assert f"HCE {'+'.join(releases)}" in (out / "NEXT-STEPS.md").read_text()
    helm = (tmp_path / f"{OLD}-{NEW}" / "helm/chaos-infra-values.yaml").read_text()
    assert digests["chaos-runner:1.47.0"] in helm  # the newest release's runner, pinned to what the target holds


def test_a_bundle_of_two_releases_records_both_and_imports_verified(rig, chaosmirror, account, two_releases,
                                                                    tmp_path):  # fmt: skip
    folder, digests = two_releases
    out = tmp_path / "hce.tar"
    source = ["--manifests", str(folder), "--source-mirror", f"docker.io={rig.source.host}"]
    export = chaosmirror("bundle", "export", OLD, NEW, "-o", str(out), "--split-size", "300kB", *source)
    assert export.code == 0, export.output
    validator("report").validate(export.report)
    assert {e["destination"]: e["releases"] for e in export.report["images"]} == NEEDED

    listed = CliRunner().invoke(cli, ["bundle", "ls", str(out), "--output", "json"])
    info = json.loads(listed.stdout)
    validator("bundle").validate(info)
    assert info["format"] == 2 and len(info["parts"]) > 1
    assert info["release"] == f"{OLD}+{NEW}" and info["releases"] == [OLD, NEW]
    assert {i["name"]: i["releases"] for i in info["images"]} == NEEDED
    assert CliRunner().invoke(cli, ["bundle", "ls", str(out), "--json"]).stdout == listed.stdout  # the alias
    table = CliRunner().invoke(cli, ["bundle", "ls", f"{out}.002"]).stdout
    assert f"HCE {OLD} + {NEW}" in table and "RELEASES" in table

    config = tmp_path / "cfg"
    target = ["--to", rig.target.host, "--account", account, "--ca-cert", str(rig.tls.ca_cert)]
    imported = CliRunner().invoke(cli, ["bundle", "import", f"{out}.001", *target, "--report", "-", "--config-out",
                                        str(config)], env=rig.env)  # fmt: skip
    assert imported.exit_code == 0, imported.output
    doc = json.loads(imported.stdout)  # the summary and the config listing went to stderr
    validator("report").validate(doc)
    assert doc["releases"] == [OLD, NEW] and {name_of(e["destination"]): e["releases"] for e in doc["images"]} == NEEDED
    assert f"HCE {OLD} + {NEW}" in imported.stderr and (config / "NEXT-STEPS.md").is_file()
    conf = (config / "nodes/containers/registries.conf.d/50-chaosmirror.conf").read_text()
    assert f"{H}/chaos-runner" in conf and f"{H}/chaos-ddcr" in conf  # the repositories of both releases

    verified = chaosmirror("verify", *target, "--bundle", f"{out}.002")  # any part; the bundle's images
    assert verified.code == 0, verified.output
    assert verified.report["expected_from"] == "bundle" and verified.report["releases"] == [OLD, NEW]
    assert {name_of(i["destination"]): i["expected_digest"] for i in verified.report["images"]} == digests


def test_report_dash_is_json_on_stdout_and_the_summary_on_stderr(rig, account, two_releases, tmp_path):
    folder, _ = two_releases
    options = ["--manifests", str(folder), *rig.args(), "--account", account, "--group", "ddcr"]

    def json_out(*args: str, schema: str = "report", code: int = 0) -> dict[str, object]:
        run = CliRunner().invoke(cli, list(args), env=rig.env)
        assert run.exit_code == code, run.output
        doc: dict[str, object] = json.loads(run.stdout)  # nothing but the document on stdout
        validator(schema).validate(doc)
        assert run.stderr.strip()  # the person's summary went to stderr
        return doc

    planned = json_out("plan", OLD, *options, "--report", "-")
    assert planned["summary"] == json_out("plan", OLD, *options, "--output", "json")["summary"]
    mirrored = json_out("mirror", OLD, *options, "--report", "-")
    assert mirrored["summary"]["copied"] == 2
    assert json_out("verify", OLD, *options, "--report", "-", schema="verify")["status"] == "complete"
    assert json_out("verify", OLD, *options, "--output", "json", schema="verify")["status"] == "complete"
    one = tmp_path / "one.tar"
    source = ["--manifests", str(folder), "--group", "ddcr", "--source-mirror", f"docker.io={rig.source.host}"]
    exported = json_out("bundle", "export", OLD, "-o", str(one), *source, "--report", "-")
    assert exported["command"] == "bundle export" and exported["summary"]["copied"] == 2
    info = json.loads(CliRunner().invoke(cli, ["bundle", "ls", str(one), "--output", "json"]).stdout)
    validator("bundle").validate(info)
    assert info["format"] == 1 and "releases" not in info and "releases" not in info["images"][0]
    both = CliRunner().invoke(cli, ["verify", OLD, *options, "--output", "json", "--report", "-"], env=rig.env)
    assert both.exit_code == 2 and "give one of them" in both.output
