"""Registry configuration for a mirrored release: pure renderers, one module per family.

`render_config(request)` returns every file as a `Rendered` value (path and text); nothing here reads
or writes anything but `inputs` (gathers a request at the edge) and `folder` (writes the files).

- `hce`: HCE's image-registry setting as Terraform, a GraphQL request body and plain YAML
- `kubernetes`: the pull Secret and the experiment step container
- `helm`: values for the dedicated chaos infrastructure chart
- `nodes`: CRI-O/Podman registries.conf and containerd hosts.toml, with the CA
- `rancher`: RKE2/K3s registries.yaml
- `dockerd`: Docker Engine daemon.json
- `openshift`: ImageTagMirrorSet, ImageDigestMirrorSet and the CA ConfigMap
- `nextsteps`: NEXT-STEPS.md
"""

from __future__ import annotations

from chaosmirror.emit import dockerd, hce, helm, kubernetes, nextsteps, nodes, openshift, rancher
from chaosmirror.emit.model import ConfigError, ConfigRequest, Rendered, Scope, Transport

__all__ = ["ConfigError", "ConfigRequest", "Rendered", "Scope", "Transport", "render_config"]


def render_config(req: ConfigRequest) -> list[Rendered]:
    """Every file of the configuration, NEXT-STEPS.md first."""
    files = [
        *hce.render(req),
        *kubernetes.render(req),
        *helm.render(req),
        *nodes.render(req),
        *rancher.render(req),
        *dockerd.render(req),
        *openshift.render(req),
    ]
    return [nextsteps.next_steps(req, files), *files]
