"""Credentials: where they come from, and how they reach skopeo without ever touching argv or logs.

Lookup order for a registry, per role (`src` for where images are read, `dest` for the target):
1. `CHAOSMIRROR_SRC_USERNAME`/`_PASSWORD` or `CHAOSMIRROR_DEST_USERNAME`/`_PASSWORD` (for CI). The
   source pair goes to the registries the images name (docker.io), not to a `--source-mirror` host,
   unless `CHAOSMIRROR_SRC_REGISTRY` (comma-separated hosts) names where it belongs: a Docker Hub
   token must never reach mirror.gcr.io;
2. the standard auth files, in the order skopeo and podman read them: `$REGISTRY_AUTH_FILE`,
   `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
   `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `~/.dockercfg`;
   `credHelpers` and `credsStore` entries run the `docker-credential-*` helper they name.
A secret found anywhere reaches skopeo in an in-memory file (see engines/skopeo.py), never on disk.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chaosmirror.errors import AuthError, ChaosmirrorError

Role = Literal["src", "dest"]
ENV_NAMES: dict[Role, tuple[str, str]] = {
    "src": ("CHAOSMIRROR_SRC_USERNAME", "CHAOSMIRROR_SRC_PASSWORD"),
    "dest": ("CHAOSMIRROR_DEST_USERNAME", "CHAOSMIRROR_DEST_PASSWORD"),
}
SRC_REGISTRY = "CHAOSMIRROR_SRC_REGISTRY"
HIDDEN = "<hidden>"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)
    origin: str = ""

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password={HIDDEN}, origin={self.origin!r})"

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def hint(role: Role) -> str:
    """How a person gives credentials for `role`: the sentence error messages end with."""
    user, password = ENV_NAMES[role]
    return f"set {user} and {password}, or log in with `skopeo login` / `docker login`"


def _auth_files(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or Path.home())
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(home / ".config" / "containers" / "auth.json")
    files.append(
        Path(env["DOCKER_CONFIG"]) / "config.json" if env.get("DOCKER_CONFIG") else home / ".docker" / "config.json"
    )
    files.append(home / ".dockercfg")
    return files


def _normalise_key(key: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `https://host:5000` -> `host:5000`."""
    key = key.removeprefix("https://").removeprefix("http://")
    if key.startswith(("index.docker.io", "registry-1.docker.io")):
        return "docker.io"
    return key.rstrip("/").removesuffix("/v1").removesuffix("/v2")


def _candidates(host: str, repository: str) -> list[str]:
    """Most specific first: host/ns/repo, host/ns, host."""
    parts = repository.split("/") if repository else []
    return [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)] + [host]


def _from_helper(helper: str, host: str, origin: Path) -> Credential | None:
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        raise AuthError(
            f"{origin} names the credential helper {helper!r} for {host}, but docker-credential-{helper} is not on PATH"
        )
    server = "https://index.docker.io/v1/" if host == "docker.io" else host
    try:
        done = subprocess.run([binary, "get"], input=server.encode(), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"credential helper docker-credential-{helper} failed for {host}: {exc}") from None
    if done.returncode != 0:
        return None  # "credentials not found" is a non-zero exit
    try:
        data = json.loads(done.stdout)
        return Credential(data["Username"], data["Secret"], f"docker-credential-{helper}")
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper docker-credential-{helper} gave an answer that is not JSON") from None


def _from_file(path: Path, host: str, repository: str) -> Credential | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ChaosmirrorError(f"cannot read the auth file {path}: {exc}") from None
    if not isinstance(data, dict):
        return None
    helpers = data.get("credHelpers") or {}
    auths = {_normalise_key(k): v for k, v in (data.get("auths") or {}).items()}
    if path.name == ".dockercfg" and "auths" not in data:
        auths = {_normalise_key(k): v for k, v in data.items() if isinstance(v, dict)}
    for key in _candidates(host, repository):
        if key == host and host in {_normalise_key(h) for h in helpers}:
            helper = next(v for k, v in helpers.items() if _normalise_key(k) == host)
            return _from_helper(str(helper), host, path)
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ChaosmirrorError(f"{path}: the entry for {key} is not base64 user:password") from None
            return Credential(user, password, str(path))
    if data.get("credsStore"):
        return _from_helper(str(data["credsStore"]), host, path)
    return None


def env_applies(host: str, role: Role, env: Mapping[str, str], mirror_hosts: frozenset[str]) -> bool:
    """Whether the role's CHAOSMIRROR_* credentials are meant for `host`."""
    if role == "dest":
        return True
    named = {h.strip() for h in env.get(SRC_REGISTRY, "").split(",") if h.strip()}
    if named:
        return host in named
    return host not in mirror_hosts


def find_credential(
    host: str,
    role: Role,
    *,
    repository: str = "",
    env: Mapping[str, str] | None = None,
    mirror_hosts: frozenset[str] = frozenset(),
) -> Credential | None:
    """The credential for `host` in `role`, or None for anonymous access."""
    env = os.environ if env is None else env
    user_var, pass_var = ENV_NAMES[role]
    user, password = env.get(user_var, ""), env.get(pass_var, "")
    if (user or password) and env_applies(host, role, env, mirror_hosts):
        if not (user and password):
            missing = pass_var if user else user_var
            raise ChaosmirrorError(f"{missing} is not set; set both {user_var} and {pass_var}, or neither")
        return Credential(user, password, f"{user_var}/{pass_var}")
    for path in _auth_files(env):
        found = _from_file(path, host, repository)
        if found:
            return found
    return None


def auth_json(entries: Mapping[str, Credential]) -> bytes:
    """A containers-auth.json(5) document for `entries` (host -> credential)."""
    return json.dumps({"auths": {host: {"auth": cred.basic()} for host, cred in entries.items()}}).encode()
