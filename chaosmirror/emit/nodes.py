"""Node-level mirror configuration: clusters keep pulling the original names (docker.io/harness/...)
and the container runtime fetches them from the mirror.

- CRI-O, Podman, Buildah, skopeo: a containers-registries.conf(5) drop-in. It can rename: each source
  repository gets its own entry whose mirror is the repository chaosmirror put it in.
- containerd: `certs.d/<registry>/hosts.toml`. containerd asks a mirror host for the *same* repository
  name, appended to the host's API root. A target path is expressed that way: with `override_path`,
  `[host."https://HOST/v2/PATH"]` serves docker.io/harness/x from HOST/PATH/harness/x. What containerd
  cannot do is change the repository itself (`harness/x` -> `chaos/x` for `--account chaos`): a
  hosts.toml is written for a source registry only when some of its repositories keep their name, and
  `renamed` lists the others, for NEXT-STEPS.md.

Both carry what the target needs to be reached: its CA, unverified TLS, or plain HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaosmirror.emit.model import ConfigRequest, Rendered, Transport
from chaosmirror.emit.syntax import comment, toml_str
from chaosmirror.ref import DOCKER_HUB

REGISTRIES_CONF = "nodes/containers/registries.conf.d/50-chaosmirror.conf"
CONTAINERS_CERTS = "nodes/containers/certs.d"
CONTAINERD_CERTS = "nodes/containerd/certs.d"
CA_FILE = "ca.crt"


@dataclass(frozen=True)
class Redirect:
    """One source repository and the mirror repository that holds its images."""

    registry: str
    repository: str
    mirror_host: str
    mirror_repository: str
    mirror_path: str = ""  # the target's path: what comes before the account in every mirror repository

    @property
    def source(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def mirror(self) -> str:
        return f"{self.mirror_host}/{self.mirror_repository}"

    @property
    def keeps_name(self) -> bool:
        """True when the mirror holds it under its own repository name below the target's path, the
        only layout a runtime that cannot rename (containerd, Docker) can be pointed at."""
        return self.mirror_repository == "/".join(p for p in (self.mirror_path, self.repository) if p)


def redirects(req: ConfigRequest) -> list[Redirect]:
    """One redirect per distinct source repository of the chosen images, in manifest order."""
    out: dict[tuple[str, str], Redirect] = {}
    for image in req.images():
        ref = image.ref
        if ref.registry == req.target.host:
            continue  # already in the target registry: nothing to redirect
        placed = req.target.place(ref)
        out.setdefault(
            (ref.registry, ref.repository),
            Redirect(ref.registry, ref.repository, placed.registry, placed.repository, req.target.path),
        )
    return list(out.values())


def renamed(req: ConfigRequest) -> list[Redirect]:
    """Source repositories whose name the mirror changes (`--account` is not their namespace):
    containerd and Docker cannot be pointed at them."""
    return [r for r in redirects(req) if not r.keeps_name]


def upstream_server(registry: str) -> str:
    """Where containerd falls back to when the mirror does not have an image."""
    return "https://registry-1.docker.io" if registry == DOCKER_HUB else f"https://{registry}"


def registries_conf(req: ConfigRequest) -> Rendered:
    transport = req.transport
    head = comment(
        f"containers-registries.conf(5) drop-in for CRI-O, Podman, Buildah and skopeo: pull the images of\n"
        f"HCE {req.release.name} under their original names from the mirror {req.target.host}.\n"
        "Install as /etc/containers/registries.conf.d/50-chaosmirror.conf. An image the mirror does not\n"
        "have is pulled from its original registry, as before."
    )
    blocks: list[str] = []
    for r in redirects(req):
        lines = [
            "[[registry]]",
            f"prefix = {toml_str(r.source)}",
            f"location = {toml_str(r.source)}",
            "",
            "[[registry.mirror]]",
            f"location = {toml_str(r.mirror)}",
        ]
        if transport.insecure:
            lines.append("insecure = true")
        blocks.append("\n".join(lines))
    if transport.insecure:
        why = "plain HTTP" if transport.plain_http else "TLS without certificate verification"
        blocks.append(
            comment(f"The mirror itself, for the names HCE uses ({req.target}/...): {why}.")
            + f"[[registry]]\nlocation = {toml_str(req.target.host)}\ninsecure = true"
        )
    return Rendered(REGISTRIES_CONF, head + "\n" + "\n\n".join(blocks) + "\n")


def _tls_settings(transport: Transport) -> list[str]:
    """The hosts.toml keys that make containerd trust the mirror: its CA, or no verification."""
    lines = [f"ca = {toml_str(CA_FILE)}"] if transport.ca_pem else []
    if transport.skip_verify:
        lines.append("skip_verify = true")
    return lines


def _mirror_host_table(req: ConfigRequest) -> str:
    """The `[host."scheme://mirror"]` table of a source registry's hosts.toml. Under a target path, the
    URL is the API root itself (`/v2/PATH`) and `override_path` keeps containerd from adding `/v2`."""
    url = f"{req.transport.scheme}://{req.target.host}"
    lines = ['capabilities = ["pull", "resolve"]']
    if req.target.path:
        url += f"/v2/{req.target.path}"
        lines.append("override_path = true")
    lines = [f"[host.{toml_str(url)}]", *lines, *_tls_settings(req.transport)]
    return lines[0] + "\n" + "".join(f"  {line}\n" for line in lines[1:])


def containerd_hosts(req: ConfigRequest) -> list[Rendered]:
    """hosts.toml for each source registry containerd can redirect, and for the mirror when it needs
    a CA, unverified TLS or plain HTTP; each hosts.toml that names the CA gets a copy beside it."""
    transport = req.transport
    files: list[Rendered] = []
    by_registry: dict[str, list[Redirect]] = {}
    for r in redirects(req):
        by_registry.setdefault(r.registry, []).append(r)
    for registry, items in by_registry.items():
        served = [r for r in items if r.keeps_name]
        if not served:
            continue
        where = f"{req.target.host}/{req.target.path}" if req.target.path else req.target.host
        text = comment(
            f"containerd hosts.toml for {registry}: pull HCE {req.release.name}'s images from the mirror "
            f"{where} first.\n"
            f"containerd keeps the repository name, so the mirror serves {len(served)} of the {len(items)} "
            f"repositories of {registry}\nthis release uses (NEXT-STEPS.md); anything else falls back to "
            f"{upstream_server(registry)}."
        )
        text += f"server = {toml_str(upstream_server(registry))}\n\n" + _mirror_host_table(req)
        files.append(Rendered(f"{CONTAINERD_CERTS}/{registry}/hosts.toml", text))
        if transport.ca_pem:
            files.append(Rendered(f"{CONTAINERD_CERTS}/{registry}/{CA_FILE}", transport.ca_pem))
    if transport.ca_pem or transport.insecure:
        host = req.target.host
        text = comment(
            f"containerd hosts.toml for the mirror {host} itself, for the names HCE uses ({req.target}/...)."
        )
        text += f"server = {toml_str(f'{transport.scheme}://{host}')}\n" + "".join(
            f"{line}\n" for line in _tls_settings(transport)
        )
        files.append(Rendered(f"{CONTAINERD_CERTS}/{host}/hosts.toml", text))
        if transport.ca_pem:
            files.append(Rendered(f"{CONTAINERD_CERTS}/{host}/{CA_FILE}", transport.ca_pem))
    return files


def containers_ca(req: ConfigRequest) -> list[Rendered]:
    """The CA where CRI-O, Podman and skopeo look for it (and Docker, under /etc/docker/certs.d)."""
    if not req.transport.ca_pem:
        return []
    return [Rendered(f"{CONTAINERS_CERTS}/{req.target.host}/{CA_FILE}", req.transport.ca_pem)]


def render(req: ConfigRequest) -> list[Rendered]:
    return [registries_conf(req), *containers_ca(req), *containerd_hosts(req)]
