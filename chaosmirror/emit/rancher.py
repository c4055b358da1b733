"""RKE2 and K3s: `/etc/rancher/{rke2,k3s}/registries.yaml`, from which they generate their containerd's
registry configuration (https://docs.k3s.io/installation/private-registry; RKE2 reads the same file).

- `mirrors.<registry>.endpoint`: the mirror, tried before the registry's own default endpoint, which
  is always tried last and without rewrites (unless the node runs with
  `--disable-default-registry-endpoint`).
- `mirrors.<registry>.rewrite`: regular expressions on the repository name. One per source namespace,
  anchored and matching one path part, so `harness/x` -> `<path>/<account>/x` expresses any `--account`
  and any target path. Patterns never overlap: RKE2/K3s keep no order among them (rancher/rke2#3227).
- `configs.<mirror host>`: TLS (the CA at the path NEXT-STEPS.md installs it to, or
  `insecure_skip_verify`) and, with `--node-credentials` only, the registry password; the file is then
  a secret (written 0600).

The mirror itself gets an entry too (its endpoint with the scheme it speaks, and the same `configs`), so
pods that name it directly, as HCE does, are pulled with the same settings.
"""

from __future__ import annotations

from typing import Any

from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.nodes import CA_FILE, Redirect, redirects
from chaosmirror.emit.syntax import comment, yaml_doc

REGISTRIES_FILE = "nodes/rancher/registries.yaml"
NODE_CA_DIR = "/etc/rancher/chaosmirror"  # where NEXT-STEPS.md tells the user to put the CA, on every node
INSTALL_PATHS = {"RKE2": "/etc/rancher/rke2/registries.yaml", "K3s": "/etc/rancher/k3s/registries.yaml"}

_GO_REGEXP_SPECIAL = set("\\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """`text` as a literal in a Go (RE2) regular expression, as Go's regexp.QuoteMeta writes it."""
    return "".join(f"\\{c}" if c in _GO_REGEXP_SPECIAL else c for c in text)


def node_ca_path(host: str) -> str:
    """The CA file on each node that registries.yaml names for `host`."""
    return f"{NODE_CA_DIR}/{host}/{CA_FILE}"


def rewrite_rule(r: Redirect) -> tuple[str, str] | None:
    """The rewrite that sends a source repository to its mirror repository; None when it keeps its name.
    Target.place keeps the image name and puts every image of a namespace under one prefix, so one
    rule per namespace covers all of its repositories."""
    if r.repository == r.mirror_repository:
        return None
    namespace, _, _ = r.repository.rpartition("/")
    prefix, _, _ = r.mirror_repository.rpartition("/")
    pattern = f"^{quote_meta(namespace)}/([^/]+)$" if namespace else "^([^/]+)$"
    return pattern, f"{prefix}/$1" if prefix else "$1"


def registries(req: ConfigRequest) -> dict[str, Any]:
    """The registries.yaml document."""
    host, transport = req.target.host, req.transport
    endpoint = f"{transport.scheme}://{host}"
    mirrors: dict[str, Any] = {}
    for r in redirects(req):
        entry = mirrors.setdefault(r.registry, {"endpoint": [endpoint]})
        rule = rewrite_rule(r)
        if rule:
            entry.setdefault("rewrite", {})[rule[0]] = rule[1]
    # The mirror's own names, which HCE uses: its endpoint, written out. k3s would guess the scheme
    # (https, but http for a loopback host on a port), and an explicit one is what the docs show.
    mirrors.setdefault(host, {"endpoint": [endpoint]})
    config: dict[str, Any] = {}
    if req.node_credentials and req.credential is not None:
        config["auth"] = {"username": req.credential.username, "password": req.credential.password}
    tls: dict[str, Any] = {}
    if transport.ca_pem:
        tls["ca_file"] = node_ca_path(host)
    if transport.skip_verify:
        tls["insecure_skip_verify"] = True
    if tls:
        config["tls"] = tls
    doc: dict[str, Any] = {"mirrors": mirrors}
    if config:
        doc["configs"] = {host: config}
    return doc


def registries_yaml(req: ConfigRequest) -> Rendered:
    secret = req.node_credentials and req.credential is not None
    notes = [
        f"RKE2 / K3s registries.yaml: pull HCE {req.release.name}'s images under their original names from "
        f"the mirror {req.target.host}.",
        f"Install as {INSTALL_PATHS['RKE2']} (RKE2) or {INSTALL_PATHS['K3s']} (K3s) on every node, then "
        "restart the service.",
        "Each rewrite turns an original repository into the one the mirror holds; the registry's own "
        "endpoint is still tried last.",
    ]
    if secret:
        assert req.credential is not None
        notes.append(f"It holds the password of {req.credential.username}: keep it readable by root only.")
    return Rendered(REGISTRIES_FILE, comment("\n".join(notes)) + yaml_doc(registries(req)), secret=secret)


def steps(req: ConfigRequest) -> str:
    """The RKE2 / K3s part of NEXT-STEPS.md."""
    secret = req.node_credentials and req.credential is not None
    text = (
        f"**RKE2, K3s**: their containerd is generated from `registries.yaml` (it covers the mirror "
        f"{req.target.host} itself too){', with the CA of step 1' if req.transport.ca_pem else ''}:\n\n" + "```sh\n"
        f"sudo install -D -m {'0600' if secret else '0644'} {REGISTRIES_FILE} {INSTALL_PATHS['RKE2']}   "
        "# RKE2; then restart rke2-server or rke2-agent\n"
        f"sudo install -D -m {'0600' if secret else '0644'} {REGISTRIES_FILE} {INSTALL_PATHS['K3s']}    "
        "# K3s; then restart k3s or k3s-agent\n"
        "```\n\n"
        "  Rewrites send each original repository to where the mirror holds it, so every `--account` and "
        "target path works; the original registry is still tried last, unless the nodes run with "
        "`--disable-default-registry-endpoint` (an air gap)."
    )
    if secret:
        assert req.credential is not None
        text += (
            f" The file holds the password of `{req.credential.username}` for {req.target.host} "
            "(`--node-credentials`; mode 0600): keep it out of version control and delete it once installed."
        )
    elif req.private:
        text += (
            f" The node pulls from {req.target.host} without credentials: add `auth: {{username: ..., "
            f'password: ...}}` under `configs."{req.target.host}"` on each node, or run `chaosmirror config` '
            "again with `--node-credentials` to have it written (mode 0600)."
        )
    return text


def render(req: ConfigRequest) -> list[Rendered]:
    return [registries_yaml(req)]
