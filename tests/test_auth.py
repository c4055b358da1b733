from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from chaosmirror.auth import Credential, find_credential, write_auth_file
from chaosmirror.errors import ChaosmirrorError


def config(path: Path, doc: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_ci_variables_win_and_are_per_role(tmp_path):
    env = {"HOME": str(tmp_path), "CHAOSMIRROR_DEST_USERNAME": "bot", "CHAOSMIRROR_DEST_PASSWORD": "pw"}
    cred = find_credential("r.example.com", "dest", env=env)
    assert cred is not None and (cred.username, cred.password) == ("bot", "pw")
    assert find_credential("r.example.com", "src", env=env) is None


def test_half_set_variables_are_an_error(tmp_path):
    with pytest.raises(ChaosmirrorError, match="CHAOSMIRROR_SRC_PASSWORD is not set"):
        find_credential("r", "src", env={"HOME": str(tmp_path), "CHAOSMIRROR_SRC_USERNAME": "u"})


def test_docker_config_keys_are_normalised(tmp_path):
    config(
        tmp_path / ".docker" / "config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:pw1")},
                "https://r.example.com:5000": {"auth": b64("me:p:w2")},
            }
        },
    )
    env = {"HOME": str(tmp_path)}
    assert find_credential("docker.io", "src", env=env).username == "hub"  # type: ignore[union-attr]
    cred = find_credential("r.example.com:5000", "dest", env=env)
    assert cred is not None and cred.password == "p:w2"


def test_registry_auth_file_comes_first_and_namespaces_are_most_specific(tmp_path):
    config(tmp_path / ".docker" / "config.json", {"auths": {"r.example.com": {"auth": b64("docker:1")}}})
    auth = config(
        tmp_path / "auth.json",
        {"auths": {"r.example.com": {"auth": b64("host:2")}, "r.example.com/team": {"auth": b64("team:3")}}},
    )
    env = {"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(auth)}
    assert find_credential("r.example.com", "dest", env=env).username == "host"  # type: ignore[union-attr]
    team = find_credential("r.example.com", "dest", repository="team/app", env=env)
    assert team is not None and team.username == "team"


def test_credential_helpers_are_run(tmp_path):
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\necho "{\\"Username\\": \\"helper\\", \\"Secret\\": \\"s-$server\\"}"\n')
    helper.chmod(0o755)
    config(tmp_path / ".docker" / "config.json", {"credHelpers": {"r.example.com": "fake"}})
    env = {"HOME": str(tmp_path), "PATH": f"{helper.parent}:{os.environ['PATH']}"}
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        cred = find_credential("r.example.com", "dest", env=env)
    finally:
        os.environ["PATH"] = old
    assert cred is not None and (cred.username, cred.password) == ("helper", "s-r.example.com")


def test_auth_files_are_created_0600_and_passwords_never_print(tmp_path):
    cred = Credential("bot", "hunter2", "test")
    assert "hunter2" not in repr(cred) and "<hidden>" in repr(cred)
    path = write_auth_file(tmp_path, "a.json", {"r.example.com": cred})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["auths"]["r.example.com"]["auth"] == b64("bot:hunter2")
    with pytest.raises(FileExistsError):  # never written over, so never widened
        write_auth_file(tmp_path, "a.json", {"r.example.com": cred})


def test_the_skopeo_engine_keeps_auth_files_in_a_private_folder_it_removes():
    from chaosmirror.engines.skopeo import Skopeo
    from chaosmirror.registry import Registries

    engine = Skopeo(Registries(env={"CHAOSMIRROR_DEST_USERNAME": "bot", "CHAOSMIRROR_DEST_PASSWORD": "hunter2"}))
    folder = engine._folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    engine.close()
    assert not folder.exists()
