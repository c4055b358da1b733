"""`--optional/--no-optional` on the commands that pick images: 1.47.0 marks the agent-proxy and
emissary images of its SaaS chart optional; they are copied by default and left out on request."""

from __future__ import annotations

import json

import pytest
import yaml

from chaosmirror.release import Catalog, bundled_dir

pytestmark = pytest.mark.registry

OPTIONAL_147 = {"chaos-agent-proxy:1.45.0", "chaos-emissary:1.61.0"}


def names(run) -> set[str]:  # type: ignore[no-untyped-def]
    return {e["destination"].rsplit("/", 1)[-1] for e in run.report["images"]}


def test_plan_includes_optional_images_unless_told_not_to(rig, chaosmirror, account):
    every = {i.ref for i in Catalog(bundled_dir()).load("1.47.0").images()}
    default = chaosmirror("plan", "1.47.0", *rig.args(), "--account", account)
    assert default.code == 0, default.output
    assert names(default) >= OPTIONAL_147 and len(names(default)) == len(every) == 19
    required = chaosmirror("plan", "1.47.0", *rig.args(), "--account", account, "--no-optional")
    assert required.code == 0, required.output
    assert names(required) == names(default) - OPTIONAL_147 and "17 to copy" in required.output


def test_mirror_no_optional_leaves_the_optional_images_out_of_the_target(rig, chaosmirror, account, target_client):
    run = chaosmirror("mirror", "1.47.0", "--group", "dedicated", "--no-optional", *rig.args(), "--account", account)
    assert run.code == 0, run.output
    assert len(names(run)) == 9 and not OPTIONAL_147 & names(run)  # the HCE page's dedicated tab
    assert target_client.digest(f"{account}/chaos-agent-proxy", "1.45.0") is None
    assert target_client.digest(f"{account}/chaos-subscriber", "1.47.0") is not None
    more = chaosmirror("mirror", "1.47.0", "--group", "dedicated", *rig.args(), "--account", account)
    assert more.code == 0, more.output
    copied = {e["destination"].rsplit("/", 1)[-1] for e in more.report["images"] if e["status"] == "copied"}
    assert copied == OPTIONAL_147 and more.report["summary"]["skipped"] == 9  # only what was left out
    assert target_client.digest(f"{account}/chaos-agent-proxy", "1.45.0") is not None


def test_bundle_export_no_optional_writes_only_the_required_images(rig, chaosmirror, tmp_path):
    out = tmp_path / "dedicated.tar"
    source = ["--source-mirror", f"docker.io={rig.source.host}"]
    run = chaosmirror("bundle", "export", "1.47.0", "--group", "dedicated", "--no-optional", "-o", str(out), *source)
    assert run.code == 0, run.output
    listing = chaosmirror("bundle", "ls", str(out), "--json", report=False)
    bundled = {i["name"] for i in json.loads(listing.output)["images"]}
    assert len(bundled) == 9 and not OPTIONAL_147 & bundled


def test_config_no_optional_leaves_agent_proxy_out_of_the_helm_values(rig, chaosmirror, tmp_path):
    target = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert)]  # type: ignore[union-attr]
    for flag, expected in (("--optional", True), ("--no-optional", False)):
        out = tmp_path / flag
        run = chaosmirror("config", "1.47.0", *target, flag, "-o", str(out), report=False)
        assert run.code == 0, run.output
        values = yaml.safe_load((out / "helm" / "chaos-infra-values.yaml").read_text())
        assert ("agent-proxy" in values) is expected, flag
        assert ("chaos-emissary" in (out / "NEXT-STEPS.md").read_text()) is expected, flag
