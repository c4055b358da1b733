"""`chaosmirror config` and `mirror --config-out` options, without registries: what they write, what they refuse."""

from __future__ import annotations

import json
import stat

import pytest
import yaml
from click.testing import CliRunner

from chaosmirror.cli import cli
from chaosmirror.emit import hce, kubernetes, openshift, rancher

SECRET = "cli-test-Pa55word-not-real"
CREDENTIALS = {"CHAOSMIRROR_DEST_USERNAME": "robot", "CHAOSMIRROR_DEST_PASSWORD": SECRET}


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env)


def test_config_writes_every_file_and_lists_them_without_their_content(tmp_path):
    out = tmp_path / "cfg"
    result = invoke(
        "config", "1.47.0", "--to", "registry.example.com:5000", "--secret-name", "hce-pull", "-o", str(out),
        env=CREDENTIALS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert f"{out / kubernetes.SECRET_FILE}  (mode 0600: it holds the registry password)" in result.output
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {
        "NEXT-STEPS.md",
        hce.TERRAFORM_FILE,
        hce.GRAPHQL_FILE,
        hce.UI_FILE,
        kubernetes.SECRET_FILE,
        kubernetes.SNIPPET_FILE,
        "helm/chaos-infra-values.yaml",
        "nodes/containers/registries.conf.d/50-chaosmirror.conf",
        "nodes/containerd/certs.d/docker.io/hosts.toml",
        "nodes/rancher/registries.yaml",
        "nodes/docker/daemon.json",
        "openshift/image-tag-mirror-set.yaml",
    }
    assert all(f"  {out / path}" in result.output for path in written)
    assert stat.S_IMODE((out / kubernetes.SECRET_FILE).stat().st_mode) == 0o600
    for path in written - {kubernetes.SECRET_FILE}:
        assert SECRET not in (out / path).read_text(), path


def test_scope_options_reach_every_hce_file(tmp_path):
    out = tmp_path / "cfg"
    result = invoke("config", "1.47.0", "--to", "r.example.com", "--org", "default", "--project", "chaos",
                    "--allow-overrides", "--default", "--group", "ddcr", "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads((out / hce.GRAPHQL_FILE).read_text())["variables"]
    assert body["identifiers"] == {"accountIdentifier": "<HARNESS_ACCOUNT_ID>", "orgIdentifier": "default",
                                   "projectIdentifier": "chaos"}  # fmt: skip
    assert body["request"]["isPrivate"] is False and "secretName" not in body["request"]
    assert body["request"]["isOverrideAllowed"] is True and body["request"]["isDefault"] is True
    assert not (out / "helm").exists()  # --group ddcr: no dedicated infrastructure values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pin-digests"], "--pin-digests and --report FILE"),
        (["--project", "p"], "--project needs --org"),
        (["--org", "o", "--infra", "i"], "--infra needs --org and --project"),
        (["--secret-name", "Not_A_Name"], "not a Kubernetes name"),
        (["--namespace", "x" * 64], "not a Kubernetes namespace"),
        (["--to", "https://x"], "without a scheme"),
        (["--node-credentials"], "--node-credentials: no credential for r.example.com was found"),
        (["--mirror-source-policy", "Never"], "'Never' is not one of 'AllowContactingSource', 'NeverContactSource'"),
    ],
)
def test_bad_config_options_exit_2_with_the_reason(tmp_path, args, message):
    base = ["config", "1.47.0", "--to", "r.example.com", "-o", str(tmp_path / "cfg")]
    result = invoke(*base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "cfg").exists()


def test_a_report_of_another_release_is_refused(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"format": 1, "release": "1.94.4", "images": []}))
    result = invoke("config", "1.47.0", "--to", "r.example.com", "--pin-digests", "--report", str(report),
                    "-o", str(tmp_path / "cfg"))  # fmt: skip
    assert result.exit_code == 2 and "report of release '1.94.4', not 1.47.0" in result.output


def test_a_report_missing_images_names_them(tmp_path):
    report = tmp_path / "r.json"
    images = [{"destination": "r.example.com/harness/chaos-ddcr:1.47.0", "status": "copied",
               "digest": "sha256:" + "1" * 64}]  # fmt: skip
    report.write_text(json.dumps({"format": 1, "release": "1.47.0", "images": images}))
    result = invoke("config", "1.47.0", "--to", "r.example.com", "--pin-digests", "--report", str(report),
                    "-o", str(tmp_path / "cfg"))  # fmt: skip
    assert result.exit_code == 2
    assert "no digest for r.example.com/harness/chaos-log-watcher:1.47.0" in result.output


def test_an_unreachable_loopback_target_cannot_be_described(tmp_path):
    result = invoke("config", "1.47.0", "--to", "127.0.0.1:9", "-o", str(tmp_path / "cfg"))
    assert result.exit_code == 1
    assert "cannot tell how to reach 127.0.0.1:9" in result.output


def test_config_options_on_mirror_need_config_out():
    result = invoke("mirror", "1.47.0", "--to", "r.example.com", "--secret-name", "s")
    assert result.exit_code == 2 and "--secret-name is used with --config-out DIR" in result.output


def test_node_credentials_write_registries_yaml_as_a_secret_and_say_so(tmp_path):
    out = tmp_path / "cfg"
    result = invoke("config", "1.47.0", "--to", "r.example.com/mirror", "--account", "chaos", "--node-credentials",
                    "-o", str(out), env=CREDENTIALS)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert f"{out / rancher.REGISTRIES_FILE}  (mode 0600: it holds the registry password)" in result.output
    assert stat.S_IMODE((out / rancher.REGISTRIES_FILE).stat().st_mode) == 0o600
    doc = yaml.safe_load((out / rancher.REGISTRIES_FILE).read_text())
    assert doc["configs"]["r.example.com"]["auth"] == {"username": "robot", "password": SECRET}
    assert doc["mirrors"]["docker.io"]["rewrite"] == {"^harness/([^/]+)$": "mirror/chaos/$1"}
    for path in {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {rancher.REGISTRIES_FILE}:
        assert SECRET not in (out / path).read_text(), path


def test_mirror_source_policy_reaches_every_mirror_set_entry(tmp_path):
    out = tmp_path / "cfg"
    result = invoke("config", "1.47.0", "--to", "r.example.com", "--mirror-source-policy", "NeverContactSource",
                    "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = yaml.safe_load((out / openshift.TAG_MIRRORS_FILE).read_text())["spec"]["imageTagMirrors"]
    assert len(entries) == 19 and {e["mirrorSourcePolicy"] for e in entries} == {"NeverContactSource"}


def test_node_credentials_on_mirror_need_config_out():
    result = invoke("mirror", "1.47.0", "--to", "r.example.com", "--node-credentials")
    assert result.exit_code == 2 and "--node-credentials is used with --config-out DIR" in result.output
