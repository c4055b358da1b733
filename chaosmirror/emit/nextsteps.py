"""NEXT-STEPS.md: what to apply where, in order, for this release and target, and what a format could
not express. Written from the request and the files the other renderers produced."""

from __future__ import annotations

from chaosmirror.auth import ENV_NAMES
from chaosmirror.emit import dockerd, hce, helm, kubernetes, nodes, openshift, rancher
from chaosmirror.emit.model import ConfigRequest, Rendered

NEXT_STEPS_FILE = "NEXT-STEPS.md"


def _describe(path: str) -> str:
    fixed = {
        hce.TERRAFORM_FILE: "HCE image registry as a Terraform `harness_chaos_image_registry` resource",
        hce.GRAPHQL_FILE: "HCE image registry as the body of a GraphQL `createImageRegistry` request",
        hce.UI_FILE: "HCE image registry settings to type into the UI",
        kubernetes.SECRET_FILE: "the pull Secret (mode 0600: it holds the registry password)",
        kubernetes.SNIPPET_FILE: "the experiment step container, pointing at the mirrored k8s image",
        helm.VALUES_FILE: "Helm values for the dedicated chaos infrastructure chart",
        nodes.REGISTRIES_CONF: "CRI-O / Podman / skopeo mirror configuration (registries.conf drop-in)",
        rancher.REGISTRIES_FILE: "RKE2 / K3s registries.yaml: mirror, rewrites and TLS for the mirror",
        dockerd.DAEMON_FILE: "Docker Engine daemon.json keys for the mirror",
        openshift.TAG_MIRRORS_FILE: "OpenShift ImageTagMirrorSet: pulls by tag served from the mirror",
        openshift.DIGEST_MIRRORS_FILE: "OpenShift ImageDigestMirrorSet: pulls by digest served from the mirror",
        openshift.CA_CONFIGMAP_FILE: "OpenShift ConfigMap with the CA, for additionalTrustedCA",
    }
    if path in fixed:
        return fixed[path]
    if path.endswith("/hosts.toml"):
        return "containerd registry host configuration"
    if path.endswith(f"/{nodes.CA_FILE}"):
        return "the CA certificate of the registry"
    return ""


def _code(text: str) -> str:
    return f"```sh\n{text}\n```"


def _images(req: ConfigRequest) -> str:
    rows = ["| image | in the mirror |", "| --- | --- |"]
    for ref in dict.fromkeys(i.ref for i in req.images()):
        rows.append(f"| `{ref}` | `{req.mirrored(ref)}` |")
    return "\n".join(rows)


def _trust(req: ConfigRequest) -> str:
    host, t = req.target.host, req.transport
    if t.ca_pem:
        ca = f"{nodes.CONTAINERS_CERTS}/{host}/{nodes.CA_FILE}"
        lines = [
            f"{host} uses a certificate signed by the CA you gave with `--ca-cert`. Every node that pulls "
            "from it must trust that CA:",
            "",
            f"- CRI-O, Podman: `sudo cp -r {nodes.CONTAINERS_CERTS}/. /etc/containers/certs.d/`",
            f"- Docker: `sudo cp -r {nodes.CONTAINERS_CERTS}/. /etc/docker/certs.d/` "
            f"(`/etc/docker/certs.d/{host}/ca.crt`)",
            "- containerd: the `ca.crt` files beside the hosts.toml files of the node step (copy them even if you "
            "skip the mirror part: the mirror's own hosts.toml is what makes containerd trust it).",
            f"- RKE2, K3s: `sudo install -D -m 0644 {ca} {rancher.node_ca_path(host)}`, the path "
            f"`{rancher.REGISTRIES_FILE}` names.",
        ]
        if extra := openshift.trust_step(req):
            lines.append(extra)
        return "\n".join(lines)
    if t.plain_http:
        return (
            f"{host} speaks plain HTTP. Container runtimes refuse that unless told: the node configuration "
            f"of the node step marks {host} as insecure (CRI-O, Podman, Docker `insecure-registries`) or as an "
            "`http://` host (containerd, RKE2/K3s); install it even if you skip the mirror part."
        )
    if t.skip_verify:
        return (
            f"{host} was given with `--insecure-registry`: its TLS certificate is not verified. The node "
            "configuration of the node step tells the runtimes so; better, pass `--ca-cert` and trust the CA."
        )
    return f"{host} has a certificate the nodes already trust (no `--ca-cert`): nothing to do."


def _secret(req: ConfigRequest, paths: set[str]) -> str:
    host, ns, name = req.target.host, req.namespace, req.secret_name
    if not req.private:
        return (
            "The registry type is **public** (no `--secret-name`), so no pull secret is used. If pulling "
            f"from {host} needs credentials, run `chaosmirror config` again with `--secret-name NAME`."
        )
    if kubernetes.SECRET_FILE in paths:
        assert req.credential is not None
        return (
            f"Create the pull secret `{name}` in namespace `{ns}`:\n\n"
            + _code(
                f"kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -\n"
                f"kubectl apply -f {kubernetes.SECRET_FILE}"
            )
            + f"\n\nThe file holds the password of `{req.credential.username}` for {host} (mode 0600): keep it "
            "out of version control and delete it once applied. Chaos pods in other namespaces need the secret "
            "there too: run `chaosmirror config` again with `--namespace`, or edit `metadata.namespace`."
        )
    user, password = ENV_NAMES["dest"]
    return (
        f"No credential for {host} was found ({user}/{password}, or the auth files `skopeo login` and "
        "`docker login` write), so no Secret file was written. Create it from an auth file, so the password "
        "never goes on a command line:\n\n"
        + _code(
            f"skopeo login --authfile ./auth.json {host}     # asks for the password\n"
            f"kubectl -n {ns} create secret generic {name} --type=kubernetes.io/dockerconfigjson \\\n"
            "  --from-file=.dockerconfigjson=./auth.json\n"
            "rm ./auth.json"
        )
    )


def _hce(req: ConfigRequest) -> str:
    s = hce.settings(req)
    text = (
        f"Point HCE at the mirror: server `{s.server}`, account `{s.account}`, registry type "
        f"{'private, secret `' + s.secret_name + '`' if s.is_private else 'public'}, at {req.scope.level} "
        "scope. One of:\n\n"
        f"- **Terraform**: add `{hce.TERRAFORM_FILE}` to a configuration that uses the `harness/harness` "
        "provider (it knows your Harness account), then `terraform apply`.\n"
        f"- **API**: `{hce.GRAPHQL_FILE}` is the body of a `createImageRegistry` call; put your account ID in "
        f"place of `{hce.ACCOUNT_PLACEHOLDER}`:\n\n"
        + _code(
            f'sed "s/{hce.ACCOUNT_PLACEHOLDER}/$HARNESS_ACCOUNT_ID/" {hce.GRAPHQL_FILE} |\n'
            f"  curl -fsS {hce.GRAPHQL_URL} -H 'Content-Type: application/json' \\\n"
            '    -H "x-api-key: $HARNESS_API_KEY" -H "Harness-Account: $HARNESS_ACCOUNT_ID" --data-binary @-'
        )
        + "\n\n  If this scope has an image registry already, send the same variables to "
        "`updateImageRegistry(identifiers:, request:)`.\n"
        f"- **UI**: {hce.where_in_ui(req)}; type in the values of `{hce.UI_FILE}`. For a dedicated "
        "infrastructure, the same values go to Image Registry > Use custom values."
    )
    if s.custom_images:
        text += (
            "\n\nWith `--pin-digests`, the setting uses custom images: the DDCR images are the exact digests "
            "mirrored. HCE then keeps using them after an upgrade: mirror the new release and run "
            "`chaosmirror config` again."
        )
    elif req.pinned and req.wants("ddcr"):
        text += (
            "\n\nHCE composes image names from server and account, so it cannot pin digests; this release does "
            "not list all of chaos-ddcr, chaos-ddcr-faults and chaos-log-watcher, so no custom images are set."
        )
    return text


def _helm(req: ConfigRequest, paths: set[str]) -> str:
    if helm.VALUES_FILE not in paths:
        if req.groups and "dedicated" not in req.groups:
            return "Not written: `--group` leaves out the dedicated infrastructure."
        note = req.release.groups["dedicated"].note if "dedicated" in req.release.groups else ""
        return f"Not written: HCE {req.release.name} lists no dedicated-infrastructure images. {note}".rstrip()
    text = (
        "Install or upgrade the chaos infrastructure with the chart of "
        "https://github.com/harness/chaos-infra-helm-chart (`src/chaos-infrastructure`), adding these values "
        "to the ones HCE gives you for the infrastructure (`global.infraId`, `global.accessKey`, ...):\n\n"
        + _code(
            f"helm upgrade --install chaos-infra ./src/chaos-infrastructure -n {req.namespace} \\\n"
            f"  -f your-infra-values.yaml -f {helm.VALUES_FILE}"
        )
    )
    missing = helm.missing_components(req)
    if missing:
        text += (
            f"\n\nThe release lists no image for {', '.join(f'`{m}`' for m in missing)}: those keep the chart's "
            "default (docker.io), which an air-gapped cluster cannot pull."
        )
    return text


def _experiments(req: ConfigRequest, paths: set[str]) -> str:
    if kubernetes.SNIPPET_FILE not in paths:
        if req.groups and "experiment" not in req.groups:
            return "Not written: `--group` leaves out the experiment images."
        return f"Not written: HCE {req.release.name} lists no k8s step image for experiments."
    return (
        f"`{kubernetes.SNIPPET_FILE}` is the step container HCE writes into experiments once the image "
        "registry is set; check existing experiments against it (image and `imagePullSecrets`). Experiments "
        "that still name the original image can be served by the node configuration below."
    )


def _containerd(req: ConfigRequest, paths: set[str]) -> str:
    hosts_files = sorted(p for p in paths if p.startswith(nodes.CONTAINERD_CERTS) and p.endswith("hosts.toml"))
    if not hosts_files:
        text = "- **containerd**: nothing to install (see below)."
    else:
        text = (
            '- **containerd**: in `/etc/containerd/config.toml` set `config_path = "/etc/containerd/certs.d"` '
            'under `[plugins."io.containerd.grpc.v1.cri".registry]` (restart containerd once), then\n\n'
            + _code(
                f"sudo mkdir -p /etc/containerd/certs.d\nsudo cp -r {nodes.CONTAINERD_CERTS}/. /etc/containerd/certs.d/"
            )
            + "\n\n  containerd reads these files on every pull."
        )
        if req.target.path and any(r.keeps_name for r in nodes.redirects(req)):
            text += (
                f" The mirror keeps the images under `{req.target.path}/`: its host entry is that API root "
                f"(`/v2/{req.target.path}`, with `override_path = true`), and containerd appends the original "
                "repository."
            )
        text += (
            f" **kind** nodes run containerd too: mount `{nodes.CONTAINERD_CERTS}` at `/etc/containerd/certs.d` "
            "in each node (`extraMounts`) and set the same `config_path` with `containerdConfigPatches`."
        )
    renamed = nodes.renamed(req)
    if renamed:
        listing = "\n".join(f"  - `{g.source}` is at `{g.mirror}`" for g in renamed)
        text += (
            "\n\n**What containerd cannot do.** containerd asks a mirror for the repository name it was asked "
            "for (below the host's path); it cannot change the repository itself. `--account "
            f"{req.target.account}` renames these, so no hosts.toml serves them:\n\n"
            f"{listing}\n\n"
            "  To serve them with containerd, mirror them again with `--account` equal to their namespace (for "
            "example `--account harness` for docker.io/harness/...). CRI-O, Podman, RKE2/K3s (rewrites) and "
            "OpenShift are not affected: they map each repository."
        )
    return text


def _nodes(req: ConfigRequest, paths: set[str]) -> str:
    host = req.target.host
    text = (
        "Optional, for anything that still pulls the original names (older experiment YAML, defaults such as "
        "`LIB_IMAGE`): make the nodes' container runtime fetch them from the mirror.\n\n"
        "- **CRI-O, Podman**:\n\n"
        + _code(
            f"sudo install -D -m 0644 {nodes.REGISTRIES_CONF} \\\n"
            "  /etc/containers/registries.conf.d/50-chaosmirror.conf\n"
            "sudo systemctl reload crio     # CRI-O rereads registries.conf on reload"
        )
        + "\n\n  Drop-in files need the main `/etc/containers/registries.conf` in the v2 format (`[[registry]]` "
        "tables), which current distributions ship.\n\n"
        + _containerd(req, paths)
        + "\n\n- "
        + rancher.steps(req)
        + "\n\n- "
        + dockerd.steps(req, paths)
    )
    text += (
        f"\n\nPulls through a node-level mirror authenticate to {host} with the runtime's own credentials, not "
        "with a pod's pull secret (kubelet chooses that for the original registry). If pulling from the "
        "mirror needs credentials, give them to the runtime on each node (CRI-O, Podman: "
        "`/etc/containers/auth.json`; containerd: `registry.configs` in its config; RKE2/K3s: "
        "`--node-credentials`), or allow anonymous pulls of these repositories."
    )
    return text


def _check(req: ConfigRequest) -> str:
    image = next((i.ref for i in req.images() if i.ref.registry != req.target.host), None)
    if image is None:
        return ""
    t = req.transport
    cert_dir = f" --cert-dir {nodes.CONTAINERS_CERTS}/{req.target.host}" if t.ca_pem else ""
    direct = " --tls-verify=false" if t.insecure else cert_dir
    return (
        "From a machine that reaches the mirror (add `--authfile FILE` when it needs credentials), the "
        "original name and the mirrored one give the same digest; `--no-tags` keeps skopeo from asking "
        f"{image.registry} for its tag list:\n\n"
        + _code(
            f"skopeo --registries-conf {nodes.REGISTRIES_CONF} inspect --no-tags{cert_dir} \\\n"
            f"  --format '{{{{.Digest}}}}' docker://{image}\n"
            f"skopeo inspect --no-tags{direct} --format '{{{{.Digest}}}}' docker://{req.target.place(image)}"
        )
    )


def next_steps(req: ConfigRequest, files: list[Rendered]) -> Rendered:
    paths = {f.path for f in files}
    groups = ", ".join(req.groups) if req.groups else ", ".join(g for g in req.release.groups if req.wants(g))
    pinned = " Every image reference here is pinned to the digest the mirror holds." if req.pinned else ""
    sections = [
        ("Trust the registry", _trust(req)),
        ("Pull secret", _secret(req, paths)),
        ("HCE image registry setting", _hce(req)),
        ("Dedicated chaos infrastructure (Helm)", _helm(req, paths)),
        ("Experiments", _experiments(req, paths)),
        ("Nodes: pull the original names from the mirror", _nodes(req, paths)),
        ("OpenShift: mirror sets", openshift.steps(req, paths)),
        ("Check", _check(req)),
    ]
    out = [
        f"# Next steps: HCE {req.release.name} from {req.target}",
        "",
        f"chaosmirror put the images of HCE {req.release.name} ({groups}) at "
        f"`{req.target}/<image-name>:<tag>`, which is where HCE looks for them.{pinned} Do these steps in "
        "order; each names the file of this folder it uses.",
        "",
        _images(req),
    ]
    number = 0
    for title, body in sections:
        if body:
            number += 1
            out += ["", f"## {number}. {title}", "", body]
    out += ["", "## Files", ""]
    out += [f"- `{f.path}`: {_describe(f.path)}" for f in sorted(files, key=lambda f: f.path)]
    return Rendered(NEXT_STEPS_FILE, "\n".join(out) + "\n")
