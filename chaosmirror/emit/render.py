"""`render_config`: every file of the configuration, from each family's renderer."""

from __future__ import annotations

from chaosmirror.emit import dockerd, hce, helm, kubernetes, nextsteps, nodes, openshift, rancher
from chaosmirror.emit.model import ConfigRequest, Rendered


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
