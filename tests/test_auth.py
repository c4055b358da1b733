from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import pytest

from chaosmirror.auth import Credential, auth_json, find_credential
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


def test_credentials_never_print_and_become_a_containers_auth_document():
    cred = Credential("bot", "hunter2", "test")
    assert "hunter2" not in repr(cred) and "<hidden>" in repr(cred)
    assert json.loads(auth_json({"r.example.com": cred}))["auths"]["r.example.com"]["auth"] == b64("bot:hunter2")


def test_the_skopeo_engine_hands_credentials_over_in_memory_only(tmp_path, monkeypatch):
    from chaosmirror.engines.skopeo import Skopeo
    from chaosmirror.ref import ImageRef
    from chaosmirror.registry import Registries

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    registries = Registries(env={"CHAOSMIRROR_DEST_USERNAME": "bot", "CHAOSMIRROR_DEST_PASSWORD": "hunter2"},
                            insecure=frozenset({"r.example.com", "src.example.com"}))  # fmt: skip
    engine = Skopeo(registries, binary="/bin/true")
    dst = ImageRef.parse("r.example.com/harness/x:1")
    argv, fds = engine.argv(ImageRef.parse("src.example.com/harness/x:1"), dst, tmp_path / "digest")
    (authfile,) = [a.split("=", 1)[1] for a in argv if a.startswith("--dest-authfile=")]
    assert authfile == f"/proc/self/fd/{fds[0]}"
    assert "hunter2" not in " ".join(argv)
    doc = json.loads(os.pread(fds[0], 4096, 0))
    assert doc["auths"]["r.example.com"]["auth"] == b64("bot:hunter2")
    secrets = (b"hunter2", b64("bot:hunter2").encode())
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and any(x in p.read_bytes() for x in secrets)]
    engine.close()
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed with the engine: the memory is gone once no child holds it


def test_source_credentials_stay_with_the_registry_they_belong_to():
    env = {"CHAOSMIRROR_SRC_USERNAME": "hub-user", "CHAOSMIRROR_SRC_PASSWORD": "hub-token"}
    mirrors = frozenset({"mirror.gcr.io"})
    assert find_credential("docker.io", "src", env=env, mirror_hosts=mirrors) is not None
    assert find_credential("mirror.gcr.io", "src", env=env, mirror_hosts=mirrors) is None  # not Docker Hub's token
    named = {**env, "CHAOSMIRROR_SRC_REGISTRY": "mirror.gcr.io"}
    assert find_credential("mirror.gcr.io", "src", env=named, mirror_hosts=mirrors) is not None
    assert find_credential("docker.io", "src", env=named, mirror_hosts=mirrors) is None
    dest = {"CHAOSMIRROR_DEST_USERNAME": "u", "CHAOSMIRROR_DEST_PASSWORD": "p"}
    assert find_credential("registry.internal", "dest", env=dest, mirror_hosts=mirrors) is not None
