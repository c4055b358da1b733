"""OpenShift: the cluster-wide mirror sets and the registry CA.

- `ImageTagMirrorSet` (config.openshift.io/v1): pulls by tag, which is how HCE pulls, of each original
  repository go to the repository chaosmirror put it in. `ImageDigestMirrorSet` does the same for pulls
  by digest; it is written with `--pin-digests`. One entry per source repository: a `source` matches a
  reference equal to it or continuing it after a `/`, and the mirror takes the part it matched
  (openshift/api config/v1 types_image_tag_mirror_set.go; containers-registries.conf(5) `prefix`).
  `mirrorSourcePolicy` says whether the original registry may still be tried (`--mirror-source-policy`).
- A ConfigMap in `openshift-config` holding the `--ca-cert` CA under the key `host[..port]`, for
  `image.config.openshift.io/cluster` `spec.additionalTrustedCA`.

The Machine Config Operator writes the mirror sets into every node's registries.conf, pool by pool:
creating an ImageTagMirrorSet, or changing or deleting either kind, drains and reboots each node, creating
an ImageDigestMirrorSet does not (openshift/openshift-docs modules/images-configuration-registry-mirror.adoc).
NEXT-STEPS.md says so, and how the cluster's global pull secret gets our credential.
"""

from __future__ import annotations

from typing import Any

from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.nodes import redirects
from chaosmirror.emit.syntax import comment, yaml_doc

TAG_MIRRORS_FILE = "openshift/image-tag-mirror-set.yaml"
DIGEST_MIRRORS_FILE = "openshift/image-digest-mirror-set.yaml"
CA_CONFIGMAP_FILE = "openshift/registry-ca-configmap.yaml"

API_VERSION = "config.openshift.io/v1"
MIRROR_SET_NAME = "chaosmirror-hce"  # one name across releases: applying a new release updates it in place
CA_CONFIGMAP = "chaosmirror-registry-ca"
CONFIG_NAMESPACE = "openshift-config"
LABELS = {"app.kubernetes.io/managed-by": "chaosmirror"}


def ca_key(host: str) -> str:
    """The ConfigMap key OpenShift reads a registry's CA from: `hostname[..port]`."""
    return host.replace(":", "..")


def mirror_entries(req: ConfigRequest) -> list[dict[str, Any]]:
    """One `{source, mirrors, mirrorSourcePolicy}` per source repository of the chosen images."""
    return [
        {"source": r.source, "mirrors": [r.mirror], "mirrorSourcePolicy": req.mirror_source_policy}
        for r in redirects(req)
    ]


def _mirror_set(req: ConfigRequest, kind: str, field: str, path: str, pulls: str) -> Rendered | None:
    entries = mirror_entries(req)
    if not entries:
        return None
    doc = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": MIRROR_SET_NAME, "labels": dict(LABELS)},
        "spec": {field: entries},
    }
    policy = (
        "never tried: an image the mirror lacks fails to pull"
        if req.mirror_source_policy == "NeverContactSource"
        else "tried when no mirror has the image"
    )
    head = comment(
        f"OpenShift {kind}: pulls by {pulls} of HCE {req.release.name}'s original image names come from the "
        f"mirror {req.target.host}.\n"
        f"mirrorSourcePolicy {req.mirror_source_policy}: the original registry is {policy}.\n"
        "Applying it updates every node (NEXT-STEPS.md)."
    )
    return Rendered(path, head + yaml_doc(doc))


def tag_mirror_set(req: ConfigRequest) -> Rendered | None:
    return _mirror_set(req, "ImageTagMirrorSet", "imageTagMirrors", TAG_MIRRORS_FILE, "tag")


def digest_mirror_set(req: ConfigRequest) -> Rendered | None:
    """Only with pinned digests: then references carry a digest, and a digest pull is what this serves."""
    if not req.pinned:
        return None
    return _mirror_set(req, "ImageDigestMirrorSet", "imageDigestMirrors", DIGEST_MIRRORS_FILE, "digest")


def ca_configmap(req: ConfigRequest) -> Rendered | None:
    """The CA ConfigMap for `additionalTrustedCA`, when `--ca-cert` is given."""
    if not req.transport.ca_pem:
        return None
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": CONFIG_NAMESPACE, "labels": dict(LABELS)},
        "data": {ca_key(req.target.host): req.transport.ca_pem},
    }
    head = comment(
        f"The CA of {req.target.host} for OpenShift: image.config.openshift.io/cluster spec.additionalTrustedCA "
        f"names this ConfigMap (NEXT-STEPS.md)."
    )
    return Rendered(CA_CONFIGMAP_FILE, head + yaml_doc(doc))


def trust_step(req: ConfigRequest) -> str:
    """The OpenShift line of NEXT-STEPS.md's trust step (empty without a CA)."""
    if not req.transport.ca_pem:
        return ""
    patch = f'{{"spec":{{"additionalTrustedCA":{{"name":"{CA_CONFIGMAP}"}}}}}}'
    return (
        f"- OpenShift: `oc apply -f {CA_CONFIGMAP_FILE}`, then `oc patch image.config.openshift.io/cluster "
        f"--type=merge -p '{patch}'`. The cluster takes one such ConfigMap: if `oc get "
        "image.config.openshift.io/cluster -o jsonpath='{.spec.additionalTrustedCA.name}'` already names one, "
        f"add the key `{ca_key(req.target.host)}` of our file to it instead."
    )


def steps(req: ConfigRequest, paths: set[str]) -> str:
    """The OpenShift section of NEXT-STEPS.md."""
    if TAG_MIRRORS_FILE not in paths:
        return ""
    host = req.target.host
    files = [TAG_MIRRORS_FILE] + ([DIGEST_MIRRORS_FILE] if DIGEST_MIRRORS_FILE in paths else [])
    text = (
        "OpenShift 4.13 and later serve the original names from the mirror through cluster-wide mirror sets "
        "(instead of the node files above):\n\n"
        "```sh\n" + "".join(f"oc apply -f {f}\n" for f in files) + "```\n\n"
        "**Applying them rolls every node**: the Machine Config Operator writes the new registries.conf to "
        "each node, pool by pool (`oc get mcp` shows the progress). Creating the ImageTagMirrorSet, and later "
        "changing or deleting either set, drains and reboots each node in turn; creating an "
        "ImageDigestMirrorSet does not. Apply them in a maintenance window.\n\n"
        f"`mirrorSourcePolicy: {req.mirror_source_policy}`: "
    )
    if req.mirror_source_policy == "NeverContactSource":
        text += "the original registries are never contacted, as an air gap needs; an image the mirror lacks fails."
    else:
        text += (
            "when the mirror lacks an image, the original registry is tried. In an air gap, run "
            "`chaosmirror config` again with `--mirror-source-policy NeverContactSource`."
        )
    if not req.pinned:
        text += (
            "\n\nThe ImageTagMirrorSet serves pulls by tag, which is how HCE pulls. With `--pin-digests`, "
            "an ImageDigestMirrorSet for pulls by digest is written too."
        )
    if req.transport.insecure:
        text += (
            f"\n\n{host} is reached without TLS verification or over plain HTTP: add it to "
            "`spec.registrySources.insecureRegistries` of `image.config.openshift.io/cluster` (`oc edit "
            "image.config.openshift.io/cluster`; keep the entries already there)."
        )
    if req.private:
        text += (
            f"\n\nNodes pull through mirrors with the cluster's global pull secret (`{CONFIG_NAMESPACE}/pull-"
            f"secret`), not with a pod's. Merge the credential for {host} into it, from the Secret of step 2, "
            "so no password goes on a command line:\n\n"
            "```sh\n"
            f'oc get secret/pull-secret -n {CONFIG_NAMESPACE} --template=\'{{{{index .data ".dockerconfigjson" '
            "| base64decode}}' > cluster-pull-secret.json\n"
            f"oc extract secret/{req.secret_name} -n {req.namespace} --keys=.dockerconfigjson --to=- "
            "> mirror-pull-secret.json\n"
            "jq -s '.[0] * .[1]' cluster-pull-secret.json mirror-pull-secret.json > merged-pull-secret.json\n"
            f"oc set data secret/pull-secret -n {CONFIG_NAMESPACE} "
            "--from-file=.dockerconfigjson=merged-pull-secret.json\n"
            "rm cluster-pull-secret.json mirror-pull-secret.json merged-pull-secret.json\n"
            "```"
        )
    return text


def render(req: ConfigRequest) -> list[Rendered]:
    found = (tag_mirror_set(req), digest_mirror_set(req), ca_configmap(req))
    return [r for r in found if r is not None]
