"""Kubernetes objects: the `kubernetes.io/dockerconfigjson` pull Secret for the target registry, and the
experiment step container of HCE's Image Registry page, pointing at the mirrored k8s image.

The Secret holds the registry password: it is rendered as a `secret` file (written 0600, never shown).
"""

from __future__ import annotations

import base64
import json

from chaosmirror.auth import Credential
from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.syntax import comment, yaml_doc

SECRET_FILE = "kubernetes/image-pull-secret.yaml"
SNIPPET_FILE = "kubernetes/experiment-step-container.yaml"

# The step container HCE writes into dedicated-infrastructure experiments (HCE docs, Image Registry).
STEP_COMMAND = ["sh", "-c"]
STEP_ARGS = ["kubectl apply -f /tmp/ -n {{workflow.parameters.adminModeNamespace}} && sleep 30"]


def dockerconfigjson(host: str, cred: Credential) -> str:
    """The `.dockerconfigjson` kubelet reads: one entry for `host`, as `kubectl create secret
    docker-registry` writes it."""
    entry = {"username": cred.username, "password": cred.password, "auth": cred.basic()}
    return json.dumps({"auths": {host: entry}}, separators=(",", ":"))


def pull_secret(req: ConfigRequest) -> Rendered | None:
    """The pull Secret named `--secret-name`, when the registry is private and a credential is known."""
    cred = req.credential
    if not req.private or cred is None:
        return None
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": req.secret_name,
            "namespace": req.namespace,
            "labels": {"app.kubernetes.io/managed-by": "chaosmirror"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(dockerconfigjson(req.target.host, cred).encode()).decode()},
    }
    head = comment(
        f"Pull secret for {req.target.host} (user {cred.username}). It holds a password: "
        "keep this file out of version control."
    )
    return Rendered(SECRET_FILE, head + yaml_doc(doc), secret=True)


def step_snippet(req: ConfigRequest) -> Rendered | None:
    """The experiment step container (image and imagePullSecrets), when the release lists a k8s step image."""
    k8s = req.component("experiment", "k8s")
    if k8s is None:
        return None
    container: dict[str, object] = {"name": "", "image": str(req.mirrored(k8s.ref))}
    if req.private:
        container["imagePullSecrets"] = [{"name": req.secret_name}]
    container |= {"command": STEP_COMMAND, "args": STEP_ARGS}
    head = comment(
        f"The step container of HCE {req.release.name} dedicated-infrastructure experiments, as HCE writes it\n"
        "with this image registry (HCE docs, Image Registry). Compare it with your experiment YAML;\n"
        "in a plain Argo Workflow the pull secrets go to spec.imagePullSecrets."
    )
    return Rendered(SNIPPET_FILE, head + yaml_doc({"container": container}))


def render(req: ConfigRequest) -> list[Rendered]:
    return [r for r in (pull_secret(req), step_snippet(req)) if r is not None]
