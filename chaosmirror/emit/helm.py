"""Helm values for Harness's dedicated chaos infrastructure chart (harness/chaos-infra-helm-chart,
src/chaos-infrastructure). The chart has no global registry: each image's registry, repository and tag
is set on its own key, and `imagePullSecrets` on each key that takes them (the workflow controller's
also reach every Argo workflow pod through `workflowDefaults`).
"""

from __future__ import annotations

from typing import Any

from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.syntax import comment, yaml_doc

VALUES_FILE = "helm/chaos-infra-values.yaml"

# (path of the `image` key in the values, the release's `dedicated` component, takes imagePullSecrets)
IMAGE_KEYS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("subscriber",), "subscriber", True),
    (("subscriber", "upgrader"), "upgrader", True),
    (("workflow-controller",), "workflow-controller", True),
    (("workflow-controller", "argoExec"), "argoexec", False),
    (("chaos-operator",), "operator", True),
    (("chaos-operator", "chaosRunner"), "runner", False),
    (("chaos-exporter",), "exporter", True),
    (("agent-proxy",), "agent-proxy", True),
)
OPTIONAL_COMPONENTS = {"agent-proxy"}  # set only when the release lists it (charts from 1.41 on)


def image_key(path: tuple[str, ...]) -> str:
    return ".".join((*path, "image"))


def missing_components(req: ConfigRequest) -> list[str]:
    """Chart images the release does not list: the chart keeps docker.io for them."""
    return [
        image_key(path)
        for path, component, _ in IMAGE_KEYS
        if component not in OPTIONAL_COMPONENTS and req.component("dedicated", component) is None
    ]


def values(req: ConfigRequest) -> dict[str, Any]:
    """The values document: every chart image key the release has a component for."""
    doc: dict[str, Any] = {}
    for path, component, takes_secrets in IMAGE_KEYS:
        image = req.component("dedicated", component)
        if image is None:
            continue
        ref = req.mirrored(image.ref)
        entry: dict[str, object] = {
            "registry": ref.registry,
            "repository": ref.repository,
            "tag": f"{ref.tag}@{ref.digest}" if ref.digest else ref.tag,
        }
        if takes_secrets and req.private:
            entry["imagePullSecrets"] = [{"name": req.secret_name}]
        node = doc
        for part in path:
            node = node.setdefault(part, {})
        node["image"] = entry
    return doc


def chaos_infra_values(req: ConfigRequest) -> Rendered | None:
    """The values file, when the chosen groups include the release's dedicated images."""
    if not req.wants("dedicated"):
        return None
    notes = [
        f"Helm values for the chaos-infra chart: HCE {req.release.name}'s dedicated infrastructure "
        f"images from {req.target}.",
        "The chart has no global registry setting, so every image is set here.",
    ]
    if req.pinned:
        notes.append("Each tag carries the digest the mirror holds (tag@sha256:...), so nodes pull exactly it.")
    missing = missing_components(req)
    if missing:
        notes.append(f"Not in this release's image list, left at the chart default: {', '.join(missing)}.")
    return Rendered(VALUES_FILE, comment("\n".join(notes)) + yaml_doc(values(req)))


def render(req: ConfigRequest) -> list[Rendered]:
    found = chaos_infra_values(req)
    return [found] if found else []
