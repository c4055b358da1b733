"""Docker Engine nodes (cri-dockerd), Docker Desktop: `/etc/docker/daemon.json` keys.

- `registry-mirrors` applies to Docker Hub pulls only, and dockerd asks the mirror for the same
  repository at the mirror's root: it is written only when the target has no path and some docker.io
  repositories keep their name there (`--account` is their namespace).
- `insecure-registries` names the mirror itself when it speaks plain HTTP or its certificate is not
  verified. Its CA goes to `/etc/docker/certs.d/HOST/ca.crt` (the same file CRI-O reads, NEXT-STEPS.md).
"""

from __future__ import annotations

import json

from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.nodes import CONTAINERS_CERTS, Redirect, redirects
from chaosmirror.ref import DOCKER_HUB

DAEMON_FILE = "nodes/docker/daemon.json"


def hub_redirects(req: ConfigRequest) -> list[Redirect]:
    return [r for r in redirects(req) if r.registry == DOCKER_HUB]


def hub_served(req: ConfigRequest) -> bool:
    """True when `registry-mirrors` can serve Docker Hub names: at the mirror's root, same repository."""
    return not req.target.path and any(r.keeps_name for r in hub_redirects(req))


def daemon_settings(req: ConfigRequest) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    if hub_served(req):
        settings["registry-mirrors"] = [f"{req.transport.scheme}://{req.target.host}"]
    if req.transport.insecure:
        settings["insecure-registries"] = [req.target.host]
    return settings


def daemon_json(req: ConfigRequest) -> Rendered | None:
    """The daemon.json keys for the mirror; None when Docker needs none."""
    settings = daemon_settings(req)
    if not settings:
        return None
    return Rendered(DAEMON_FILE, json.dumps(settings, indent=2) + "\n")


def steps(req: ConfigRequest, paths: set[str]) -> str:
    """The Docker part of NEXT-STEPS.md."""
    host = req.target.host
    text = "**Docker Engine** (nodes running cri-dockerd, Docker Desktop's Kubernetes): "
    if DAEMON_FILE in paths:
        keys = " and ".join(f"`{k}`" for k in daemon_settings(req))
        text += (
            f"merge the {keys} of `{DAEMON_FILE}` into `/etc/docker/daemon.json` (Docker Desktop: Settings > "
            "Docker Engine), then restart Docker (`sudo systemctl restart docker`)."
        )
    else:
        text += "nothing to add to `daemon.json`."
    if req.transport.ca_pem:
        text += (
            f" Docker trusts the CA of step 1 from `/etc/docker/certs.d/{host}/ca.crt` "
            f"(`sudo cp -r {CONTAINERS_CERTS}/. /etc/docker/certs.d/`)."
        )
    hub = hub_redirects(req)
    if hub and not hub_served(req):
        why = (
            f"the mirror holds them under `{req.target.path}/`, and Docker asks a mirror for them at its root"
            if req.target.path
            else f"`--account {req.target.account}` renames them, and Docker asks a mirror for the same names"
        )
        namespaces = sorted({r.repository.rpartition("/")[0] for r in hub})
        account = f"--account {namespaces[0]}" if len(namespaces) == 1 else "--account NAMESPACE"
        text += (
            f" `registry-mirrors` cannot serve the Docker Hub names: {why}. Pods pull the mirrored names HCE "
            f"uses ({req.target}/...) directly; for the original names, mirror them again with "
            f"`--to {host} {account}` (no path)."
        )
    elif hub_served(req):
        text += (
            " `registry-mirrors` serves Docker Hub names only; when the mirror lacks an image, Docker pulls "
            "it from Docker Hub."
        )
    return text


def render(req: ConfigRequest) -> list[Rendered]:
    found = daemon_json(req)
    return [found] if found else []
