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

from typing import Any

from chaosmirror.emit.model import ConfigError, ConfigRequest, Rendered, Scope, Transport

__all__ = ["ConfigError", "ConfigRequest", "Rendered", "Scope", "Transport", "render_config"]


def __getattr__(name: str) -> Any:
    """`render_config` loads the renderers when first asked for (PEP 562): a `mirror` run, whose
    options name emit's constants, loads none of them."""
    if name == "render_config":
        from chaosmirror.emit.render import render_config

        return render_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
