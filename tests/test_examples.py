"""The CI examples, run for real: their shell, against the loopback rig, as the CI would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.rig import PASSWORD
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "ci"
pytestmark = pytest.mark.registry


def shim(tmp_path: Path) -> Path:
    """`chaosmirror` on PATH, as `pipx install` / `pip install` would leave it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "chaosmirror"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m chaosmirror "$@"\n')
    script.chmod(0o755)
    return bin_dir


def ci_env(rig, account: str, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        **os.environ,
        "PATH": f"{shim(tmp_path)}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
        "MIRROR_REGISTRY_USERNAME": rig.target.auth[0],
        "MIRROR_REGISTRY_PASSWORD": rig.target.auth[1],
        "MIRROR_REGISTRY": rig.target.host,
        "MIRROR_ACCOUNT": account,
        "MIRROR_GROUPS": "ddcr",
        "MIRROR_EXTRA_ARGS": f"--ca-cert {rig.tls.ca_cert} --source-mirror docker.io={rig.source.host}",
        "RELEASE": "1.47",
    }


def check(done: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "chaosmirror-report.json").read_text())
    assert report["release"] == "1.47.0" and report["summary"]["copied"] == 4
    assert PASSWORD not in done.stdout + done.stderr + json.dumps(report)


def test_gitlab_job_mirrors_a_release_and_keeps_the_report(rig, account, tmp_path):
    job = yaml.safe_load((EXAMPLES / "gitlab-ci-mirror.yml").read_text())["mirror-hce"]
    assert "chaosmirror-report.json" in job["artifacts"]["paths"] and job["artifacts"]["when"] == "always"
    script = "set -e\n" + "\n".join(line.replace("/opt/chaosmirror/bin/", "") for line in job["script"])
    env = {**ci_env(rig, account, tmp_path), "DOCKERHUB_TOKEN": ""}
    check(
        subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        ),
        tmp_path,
    )


def test_github_workflow_mirrors_a_release_and_keeps_the_report(rig, account, tmp_path):
    flow = yaml.safe_load((EXAMPLES / "github-actions-mirror.yml").read_text())
    steps = flow["jobs"]["mirror"]["steps"]
    mirror = next(s for s in steps if s.get("name") == "Mirror")
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"] == "chaosmirror-report.json"
    base = ci_env(rig, account, tmp_path)
    expressions = {
        "vars.MIRROR_REGISTRY": base["MIRROR_REGISTRY"],
        "vars.MIRROR_ACCOUNT || 'harness'": account,
        "secrets.MIRROR_REGISTRY_USERNAME": base["MIRROR_REGISTRY_USERNAME"],
        "secrets.MIRROR_REGISTRY_PASSWORD": base["MIRROR_REGISTRY_PASSWORD"],
        "secrets.DOCKERHUB_USERNAME": "",
        "secrets.DOCKERHUB_TOKEN": "",
        "inputs.release": "1.47",
        "inputs.groups": "ddcr",
        "vars.MIRROR_EXTRA_ARGS": base["MIRROR_EXTRA_ARGS"],
    }

    def expand(text: str) -> str:
        return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: expressions[m.group(1)], text)

    env = {**base, **{k: expand(str(v)) for k, v in mirror["env"].items()}}
    assert all("secrets." not in line for line in mirror["run"].splitlines())  # secrets only via env
    check(
        subprocess.run(
            ["bash", "-c", expand(mirror["run"])],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        ),
        tmp_path,
    )
