from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from chaosmirror.cli import cli
from tests.conftest import write_manifest


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env)


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += all_commands(command, (*prefix, name))
    return out


@pytest.mark.parametrize("command", all_commands(cli))
def test_every_command_has_help_and_is_in_the_readme(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and len(result.output) > 100
    from tests.conftest import REPO_ROOT

    assert f"chaosmirror {' '.join(command)}" in (REPO_ROOT / "README.md").read_text()


def test_releases_lists_bundled_releases_with_group_counts():
    result = invoke("releases")
    assert result.exit_code == 0
    line = next(ln for ln in result.output.splitlines() if ln.startswith("1.47.0 "))
    assert line.split()[:5] == ["1.47.0", "1", "4", "9+2", "6"]  # 9 required + 2 optional
    assert "1.94.4" in result.output


def test_show_by_group_and_as_refs():
    result = invoke("show", "1.47.0", "--group", "ddcr", "--format", "refs")
    assert result.output.split() == [
        "docker.io/harness/chaos-ddcr:1.47.0",
        "docker.io/harness/chaos-log-watcher:1.47.0",
        "docker.io/harness/service-discovery-collector:0.27.0",
        "docker.io/harness/chaos-ddcr-faults:1.47.0",
    ]
    doc = json.loads(invoke("show", "1.53", "--format", "json").output)
    assert doc["release"] == "1.53.1"


def test_show_explains_an_empty_group():
    result = invoke("show", "1.94.4", "--group", "dedicated")
    assert result.exit_code == 0 and "note: dedicated:" in result.output


def test_diff_shows_retagged_images():
    result = invoke("diff", "1.92", "1.93")
    assert result.exit_code == 0
    assert "retagged" in result.output and "0.72.0" in result.output and "0.73.0" in result.output


def test_unknown_release_exits_2_and_lists_known_ones():
    result = invoke("show", "3.0.0")
    assert result.exit_code == 2 and "unknown release '3.0.0'" in result.output and "1.47.0" in result.output


def test_manifests_option_and_variable_read_another_folder(tmp_path):
    write_manifest(tmp_path, "7.0.0", [("ddcr", "ddcr", "docker.io/acme/ddcr:7")])
    assert "7.0.0" in invoke("releases", "--manifests", str(tmp_path)).output
    result = invoke("show", "7.0.0", "--format", "refs", env={"CHAOSMIRROR_MANIFESTS": str(tmp_path)})
    assert result.output.strip() == "docker.io/acme/ddcr:7"


def test_a_broken_manifest_exits_2_naming_file_and_key(tmp_path):
    write_manifest(tmp_path, "7.0.0", [("ddcr", "ddcr", "docker.io/acme/ddcr")])
    result = invoke("show", "7.0.0", "--manifests", str(tmp_path))
    assert result.exit_code == 2 and "7.0.0.yaml:" in result.output and "groups.ddcr.images[0].image" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "https://x"], "without a scheme"),
        (["--to", "r.example.com", "--platform", "linux"], "use os/arch"),
        (["--to", "r.example.com", "--source-mirror", "docker.io"], "REGISTRY=HOST"),
        (["--to", "r.example.com", "--group", "nope"], "Invalid value for '--group'"),
    ],
)
def test_bad_options_exit_2(args, message):
    result = invoke("mirror", "1.47.0", *args)
    assert result.exit_code == 2 and message in result.output


def test_a_missing_skopeo_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    result = invoke("mirror", "1.47.0", "--to", "127.0.0.1:9", "--engine", "skopeo")
    assert result.exit_code == 1
    assert "skopeo is not installed" in result.output and "apt-get install skopeo" in result.output


@pytest.mark.parametrize(("args", "code", "stream", "said"), [
    (["--version"], 0, "stdout", "chaosmirror"),
    (["show", "0.0.1"], 2, "stderr", "0.0.1"),
])  # fmt: skip
def test_the_process_ends_without_teardown_and_keeps_its_exit_code_and_output(args, code, stream, said):
    """main() ends the process with os._exit once only its thread is left: no atexit handler runs,
    and the exit code and everything written (flushed first) stay."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    script = ("import atexit, sys; atexit.register(lambda: print('TEARDOWN', file=sys.stderr)); "
              f"sys.argv = ['chaosmirror', *{args!r}]; from chaosmirror.cli import main; main()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == code, done.stderr
    assert said in getattr(done, stream)
    assert "TEARDOWN" not in done.stderr
