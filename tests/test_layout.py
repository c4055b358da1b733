"""The architecture, checked: imports point one way, and the shipped package finds its manifests."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "chaosmirror"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): imports(p) for p in PACKAGE.rglob("*.py")}


def test_only_cli_imports_click_and_tqdm():
    for name, used in modules().items():
        if not name.startswith("cli/"):
            assert not {"click", "tqdm"} & {u.split(".")[0] for u in used}, name


def test_only_the_docker_engine_imports_the_docker_sdk():
    for name, used in modules().items():
        if name != "engines/docker.py":
            assert "docker" not in {u.split(".")[0] for u in used}, name


def test_pure_modules_do_no_io():
    for name in ("ref.py", "release.py", "plan.py", "manifest.py", "finder.py"):
        used = {u.split(".")[0] for u in modules()[name]}
        assert not {"subprocess", "socket", "http", "urllib", "click"} & used, name


def test_a_built_wheel_carries_the_release_manifests(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("chaosmirror-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "chaosmirror/release-manifests/1.47.0.yaml" in names
    assert "chaosmirror/engines/skopeo.py" in names
    # A plain (not editable) install finds them: into a venv that borrows only the dependencies.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    probe = "import chaosmirror.release as r; print(r.bundled_dir())"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                           check=True, timeout=60).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv))
    listing = subprocess.run([str(venv / "bin" / "chaosmirror"), "releases"], cwd=tmp_path, capture_output=True,
                             text=True, check=True, timeout=60).stdout  # fmt: skip
    assert "1.47.0" in listing and "1.94.4" in listing
