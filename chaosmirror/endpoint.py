"""How to reach one registry: its TLS trust and credential, and the parsing of its auth challenges.

Kept apart from `registry` (the API client) because it is configuration, not conversation.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from chaosmirror.auth import Credential, Role
from chaosmirror.errors import RegistryError
from chaosmirror.ref import DOCKER_HUB

CERT_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


@dataclass(frozen=True)
class Endpoint:
    """How to reach one registry in one role: TLS choices and the credential, if any."""

    host: str
    role: Role
    credential: Credential | None = None
    insecure: bool = False
    ca_file: Path | None = None

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.host == DOCKER_HUB else self.host

    def cert_files(self) -> list[Path]:
        """--ca-cert plus the per-registry CA folders skopeo and Docker also read."""
        files = [self.ca_file] if self.ca_file else []
        for base in CERT_DIRS:
            folder = base / self.host
            if folder.is_dir():
                files += sorted(folder.glob("*.crt"))
        return files


def trust_for(host: str, *, insecure: bool = False, ca_file: Path | None = None) -> ssl.SSLContext:
    """The TLS context for `host`: no verification if insecure, else the system CAs, --ca-cert and
    the host's folder in the certs.d folders that skopeo and Docker read."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    for path in Endpoint(host, "src", None, False, ca_file).cert_files():
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"cannot load the CA certificate {path}: {exc}") from None
    return ctx


def challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse `Bearer realm="...",service="..."` into ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return scheme.lower(), params


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]
