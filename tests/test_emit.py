"""The renderers of registry configuration: golden files, and the formats checked by their parsers.

Golden files live in tests/golden/<case>/, laid out as `chaosmirror config` writes them. After an
intended change, regenerate them with `CHAOSMIRROR_UPDATE_GOLDEN=1 pytest tests/test_emit.py` and
read the diff.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import importlib
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosmirror.auth import Credential
from chaosmirror.emit import (
    ConfigError,
    ConfigRequest,
    Rendered,
    Scope,
    Transport,
    dockerd,
    hce,
    helm,
    kubernetes,
    nextsteps,
    nodes,
    openshift,
    rancher,
    render_config,
)
from chaosmirror.emit.folder import write_config
from chaosmirror.emit.inputs import load_report_digests
from chaosmirror.ref import ImageRef, Target
from chaosmirror.release import Catalog, Release, bundled_dir
from tests.conftest import REPO_ROOT

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CHAOSMIRROR_UPDATE_GOLDEN") == "1"
FAKE_CA = "-----BEGIN CERTIFICATE-----\nMIIBfakeCAforGoldenFilesOnly\n-----END CERTIFICATE-----\n"
FAKE_CREDENTIAL = Credential("robot", "golden-not-a-real-password")

# Every attribute of harness_chaos_image_registry (terraform-provider-harness), and of its block.
TF_ATTRIBUTES = {
    "org_id",
    "project_id",
    "infra_id",
    "registry_server",
    "registry_account",
    "is_private",
    "secret_name",
    "is_default",
    "is_override_allowed",
    "use_custom_images",
    "custom_images",
}
TF_CUSTOM_IMAGES = {"log_watcher", "ddcr", "ddcr_lib", "ddcr_fault"}
# Every image key of the chaos-infra chart, and the dedicated component that fills it.
CHART_IMAGE_KEYS = {
    "subscriber.image": "chaos-subscriber",
    "subscriber.upgrader.image": "k8s-chaos-infrastructure-upgrader",
    "workflow-controller.image": "chaos-workflow-controller",
    "workflow-controller.argoExec.image": "chaos-argoexec",
    "chaos-operator.image": "chaos-operator",
    "chaos-operator.chaosRunner.image": "chaos-runner",
    "chaos-exporter.image": "chaos-exporter",
}


def need_module(name: str) -> Any:
    """A test-only Python package (the `dev` extra); missing, the test fails naming `make setup`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"the Python package {name} is not installed: run `make setup` (pip extra [dev])", pytrace=False)


def release(name: str) -> Release:
    return Catalog(bundled_dir()).load(name)


def fake_digests(rel: Release, target: Target, groups: tuple[str, ...] = ()) -> dict[ImageRef, str]:
    """A stable, made-up digest for every destination: golden files never change by chance."""
    out = {}
    for image in rel.images(groups):
        placed = target.place(image.ref)
        out[placed] = "sha256:" + hashlib.sha256(str(placed).encode()).hexdigest()
    return out


def private_pinned_ca() -> ConfigRequest:
    """Private registry with its own CA, project scope, digests pinned from a report."""
    rel, target = release("1.47.0"), Target.parse("registry.example.com:5000", account="harness")
    return ConfigRequest(
        release=rel,
        target=target,
        secret_name="hce-pull",
        namespace="chaos",
        scope=Scope(org="default", project="chaos_lab"),
        allow_overrides=True,
        transport=Transport(ca_pem=FAKE_CA),
        credential=FAKE_CREDENTIAL,
        digests=fake_digests(rel, target),
    )


def public_plain_http() -> ConfigRequest:
    """A public loopback registry over plain HTTP, account scope, the default registry."""
    return ConfigRequest(
        release=release("1.47.0"),
        target=Target.parse("127.0.0.1:5000", account="harness"),
        default=True,
        transport=Transport(plain_http=True),
    )


def path_account_skip_verify() -> ConfigRequest:
    """An old release (chaosnative/* names) under a path and another account: containerd cannot map
    it; no credential was found, so no Secret; infrastructure scope."""
    return ConfigRequest(
        release=release("1.30.0"),
        target=Target.parse("mirror.example.com/hce", account="acme"),
        secret_name="pull",
        scope=Scope(org="o", project="p", infra="infra-1"),
        transport=Transport(skip_verify=True),
    )


def ddcr_only_pinned() -> ConfigRequest:
    """A Delegate/DDCR release, pinned: HCE gets custom images with digests; no Helm, no snippet."""
    rel, target = release("1.94.4"), Target.parse("harbor.example.com/proxy", account="harness")
    return ConfigRequest(
        release=rel,
        target=target,
        groups=("ddcr",),
        secret_name="regcred",
        credential=FAKE_CREDENTIAL,
        digests=fake_digests(rel, target, ("ddcr",)),
    )


CASES: dict[str, Callable[[], ConfigRequest]] = {
    "private-pinned-ca": private_pinned_ca,
    "public-plain-http": public_plain_http,
    "path-account-skip-verify": path_account_skip_verify,
    "ddcr-only-pinned": ddcr_only_pinned,
}


def one(r: Rendered | None) -> list[Rendered]:
    return [r] if r is not None else []


RENDERERS: dict[str, Callable[[ConfigRequest], list[Rendered]]] = {
    "hce.terraform": lambda req: [hce.terraform(req)],
    "hce.graphql": lambda req: [hce.graphql(req)],
    "hce.ui_yaml": lambda req: [hce.ui_yaml(req)],
    "kubernetes.pull_secret": lambda req: one(kubernetes.pull_secret(req)),
    "kubernetes.step_snippet": lambda req: one(kubernetes.step_snippet(req)),
    "helm.chaos_infra_values": lambda req: one(helm.chaos_infra_values(req)),
    "nodes.registries_conf": lambda req: [nodes.registries_conf(req)],
    "nodes.containers_ca": nodes.containers_ca,
    "nodes.containerd_hosts": nodes.containerd_hosts,
    "rancher.registries_yaml": lambda req: [rancher.registries_yaml(req)],
    "dockerd.daemon_json": lambda req: one(dockerd.daemon_json(req)),
    "openshift.tag_mirror_set": lambda req: one(openshift.tag_mirror_set(req)),
    "openshift.digest_mirror_set": lambda req: one(openshift.digest_mirror_set(req)),
    "openshift.ca_configmap": lambda req: one(openshift.ca_configmap(req)),
    "nextsteps.next_steps": lambda req: [render_config(req)[0]],
}


def golden_files(case: str) -> dict[str, str]:
    folder = GOLDEN / case
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def _update_golden() -> None:
    if not UPDATE:
        return
    import shutil

    for case, make in CASES.items():
        shutil.rmtree(GOLDEN / case, ignore_errors=True)
        for rendered in render_config(make()):
            path = GOLDEN / case / rendered.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered.text)


@pytest.mark.parametrize("case", CASES)
def test_each_case_writes_exactly_the_golden_files(case):
    assert sorted(f.path for f in render_config(CASES[case]())) == sorted(golden_files(case))


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("case", CASES)
def test_renderer_output_matches_its_golden_file(case, renderer):
    expected = golden_files(case)
    for rendered in RENDERERS[renderer](CASES[case]()):
        assert rendered.path in expected, f"{renderer} wrote {rendered.path}, which has no golden file"
        assert rendered.text == expected[rendered.path], f"{case}/{rendered.path} differs from its golden file"


@pytest.mark.parametrize("case", CASES)
def test_renderers_are_pure_functions_of_release_target_and_digests(case):
    first, second = render_config(CASES[case]()), render_config(CASES[case]())
    assert [(f.path, f.text) for f in first] == [(f.path, f.text) for f in second]


def test_renderer_modules_do_no_io():
    pure = ("__init__.py", "model.py", "syntax.py", "hce.py", "kubernetes.py", "helm.py", "nodes.py", "nextsteps.py",
            "rancher.py", "dockerd.py", "openshift.py")  # fmt: skip
    for name in pure:
        tree = ast.parse((REPO_ROOT / "chaosmirror" / "emit" / name).read_text())
        used = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        used |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        roots = {u.split(".")[0] for u in used}
        assert not {"os", "subprocess", "socket", "http", "urllib", "pathlib", "shutil", "click"} & roots, name
        assert not {"chaosmirror.registry", "chaosmirror.emit.inputs", "chaosmirror.emit.folder"} & used, name
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "open" not in calls, name


def test_pinning_only_adds_the_digests_to_image_references():
    pinned = private_pinned_ca()
    unpinned = dataclasses.replace(pinned, digests=None)

    def body(r: Rendered | None) -> str:
        assert r is not None
        return "".join(ln for ln in r.text.splitlines(keepends=True) if not ln.startswith("#"))

    # the chart's image keys, and agent-proxy: 1.47.0 lists it as an optional image of its SaaS chart
    for render, references in ((helm.chaos_infra_values, len(CHART_IMAGE_KEYS) + 1), (kubernetes.step_snippet, 1)):
        with_digests = body(render(pinned))
        assert re.sub(r"@sha256:[0-9a-f]{64}", "", with_digests) == body(render(unpinned))
        assert len(re.findall(r"@sha256:[0-9a-f]{64}", with_digests)) == references
    values = yaml.safe_load(body(helm.chaos_infra_values(pinned)))
    assert values["chaos-operator"]["image"]["tag"].startswith("1.47.0@sha256:")


# --- each format, read by its parser ------------------------------------------------------------


def parse_hcl(text: str) -> dict[str, Any]:
    """Terraform text as python-hcl2 reads it, strings without their quotes."""
    hcl2 = need_module("hcl2")
    options = need_module("hcl2.api").SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    return hcl2.loads(text, serialization_options=options)


def terraform_resource(text: str) -> dict[str, object]:
    doc = parse_hcl(text)
    (resource,) = doc["resource"]
    assert list(resource) == ["harness_chaos_image_registry"]
    (body,) = resource["harness_chaos_image_registry"].values()
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", CASES)
def test_terraform_parses_as_hcl_with_exactly_the_resource_attribute_names(case):
    req = CASES[case]()
    body = terraform_resource(hce.terraform(req).text)
    assert set(body) <= TF_ATTRIBUTES
    required = {"registry_server", "registry_account", "is_private", "is_default", "is_override_allowed"}
    assert required | {"use_custom_images"} <= set(body)
    assert body["registry_server"] == req.target.server and body["registry_account"] == req.target.account
    assert body["is_private"] is req.private and ("secret_name" in body) is req.private
    scope = {"org_id": req.scope.org, "project_id": req.scope.project, "infra_id": req.scope.infra}
    assert {k: v for k, v in scope.items() if v} == {k: body[k] for k in scope if k in body}
    if "custom_images" in body:
        (custom,) = body["custom_images"]  # type: ignore[misc]
        assert set(custom) == TF_CUSTOM_IMAGES and body["use_custom_images"] is True
        assert custom["ddcr_lib"] == custom["ddcr_fault"] and "chaos-ddcr-faults:" in custom["ddcr_fault"]
    else:
        assert body["use_custom_images"] is False


# HCE's four custom-image slots and the image each runs, per ../shared/reference/hce-images-and-registry-facts.md:
# the DDCR runner Deployment runs chaos-ddcr, LOG_WATCHER_IMAGE and the sidecar are chaos-log-watcher, and the
# fault image and LIB_IMAGE are chaos-ddcr-faults (Harness's provider tests set ddcr_lib and ddcr_fault to it).
CUSTOM_IMAGE_SLOTS = {
    "logWatcher": ("log_watcher", "chaos-log-watcher"),
    "ddcr": ("ddcr", "chaos-ddcr"),
    "ddcrLib": ("ddcr_lib", "chaos-ddcr-faults"),
    "ddcrFault": ("ddcr_fault", "chaos-ddcr-faults"),
}


@pytest.mark.parametrize("name", ["1.47.0", "1.53.1", "1.94.4"])
def test_custom_images_fill_all_four_slots_with_the_image_each_runs(name):
    rel, target = release(name), Target.parse("r.example.com", account="harness")
    req = ConfigRequest(release=rel, target=target, groups=("ddcr",), digests=fake_digests(rel, target, ("ddcr",)))
    api = hce.graphql_body(req)["variables"]["request"]["customImages"]  # type: ignore[index]
    (tf,) = terraform_resource(hce.terraform(req).text)["custom_images"]  # type: ignore[misc]
    ui = yaml.safe_load(hce.ui_yaml(req).text)["customImages"]
    assert set(api) == set(ui) == set(CUSTOM_IMAGE_SLOTS) and set(tf) == {t for t, _ in CUSTOM_IMAGE_SLOTS.values()}
    for field, (tf_field, image) in CUSTOM_IMAGE_SLOTS.items():
        ref = ImageRef.parse(api[field])
        assert ref.repository == f"harness/{image}" and ref.digest, field
        assert ui[field] == tf[tf_field] == api[field]


def test_pinned_ddcr_release_sets_custom_images_everywhere():
    req = ddcr_only_pinned()
    body = hce.graphql_body(req)["variables"]["request"]  # type: ignore[index]
    assert body["useCustomImages"] is True
    assert set(body["customImages"]) == {"logWatcher", "ddcr", "ddcrLib", "ddcrFault"}
    assert body["customImages"]["ddcr"].startswith("harbor.example.com/proxy/harness/chaos-ddcr:1.94.0@sha256:")
    ui = yaml.safe_load(hce.ui_yaml(req).text)
    assert ui["useCustomImages"] is True and ui["customImages"] == body["customImages"]


@pytest.mark.parametrize("case", CASES)
def test_graphql_body_carries_the_request_fields_and_scope(case):
    req = CASES[case]()
    body = json.loads(hce.graphql(req).text)
    assert "createImageRegistry(identifiers: $identifiers, request: $request)" in body["query"]
    identifiers, request = body["variables"]["identifiers"], body["variables"]["request"]
    assert identifiers["accountIdentifier"] == hce.ACCOUNT_PLACEHOLDER
    assert identifiers.get("orgIdentifier", "") == req.scope.org
    assert identifiers.get("projectIdentifier", "") == req.scope.project
    assert request.get("infraID", "") == req.scope.infra
    assert set(request) <= {
        "registryServer",
        "registryAccount",
        "infraID",
        "isPrivate",
        "secretName",
        "isDefault",
        "isOverrideAllowed",
        "useCustomImages",
        "customImages",
    }
    assert request["isPrivate"] is req.private and request.get("secretName", "") == req.secret_name
    assert request["isDefault"] is req.default and request["isOverrideAllowed"] is req.allow_overrides


@pytest.mark.parametrize("case", CASES)
def test_ui_yaml_says_the_same_as_the_api_body(case):
    req = CASES[case]()
    ui = yaml.safe_load(hce.ui_yaml(req).text)
    request = hce.graphql_body(req)["variables"]["request"]  # type: ignore[index]
    assert ui["server"] == request["registryServer"] and ui["account"] == request["registryAccount"]
    assert ui["registryType"] == ("private" if request["isPrivate"] else "public")
    assert ui.get("secretName") == request.get("secretName")
    assert ui["allowOverrides"] == request["isOverrideAllowed"] and ui["isDefault"] == request["isDefault"]
    assert ui["scope"] == req.scope.level


def k8s_validate(doc: dict[str, object]) -> None:
    """Validate against the Kubernetes OpenAPI schemas kubernetes-validate ships (offline), strictly:
    an unknown field fails too."""
    kubernetes_validate = need_module("kubernetes_validate")
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_pull_secret_passes_kubernetes_schema_validation_and_decodes_to_an_auth_file():
    req = private_pinned_ca()
    secret = kubernetes.pull_secret(req)
    assert secret is not None and secret.secret
    doc = yaml.safe_load(secret.text)
    k8s_validate(doc)
    assert doc["type"] == "kubernetes.io/dockerconfigjson"
    assert doc["metadata"] == {
        "name": "hce-pull",
        "namespace": "chaos",
        "labels": {"app.kubernetes.io/managed-by": "chaosmirror"},
    }
    auth = json.loads(base64.b64decode(doc["data"][".dockerconfigjson"]))
    entry = auth["auths"]["registry.example.com:5000"]
    assert base64.b64decode(entry["auth"]).decode() == "robot:golden-not-a-real-password"


def test_a_broken_secret_fails_schema_validation():
    """The validator is not a rubber stamp: a misspelt field fails."""
    doc = yaml.safe_load(kubernetes.pull_secret(private_pinned_ca()).text)  # type: ignore[union-attr]
    doc["metadata"]["nmae"] = doc["metadata"].pop("name")
    with pytest.raises(need_module("kubernetes_validate").ValidationError):
        k8s_validate(doc)


@pytest.mark.parametrize("case", ["private-pinned-ca", "public-plain-http", "path-account-skip-verify"])
def test_step_container_passes_schema_validation_in_a_pod(case):
    """The snippet is a container fragment; put in a Pod (its pull secrets at pod level), it validates."""
    req = CASES[case]()
    snippet = kubernetes.step_snippet(req)
    assert snippet is not None
    container = dict(yaml.safe_load(snippet.text)["container"])
    pull_secrets = container.pop("imagePullSecrets", [])
    assert pull_secrets == ([{"name": req.secret_name}] if req.private else [])
    k8s_component = req.component("experiment", "k8s")
    assert k8s_component is not None and container["image"] == str(req.mirrored(k8s_component.ref))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "install-chaos-faults"},
        "spec": {"containers": [{**container, "name": "step"}], "imagePullSecrets": pull_secrets},
    }
    k8s_validate(pod)


def test_no_secret_without_a_credential_or_for_a_public_registry():
    assert kubernetes.pull_secret(path_account_skip_verify()) is None  # private, no credential found
    assert kubernetes.pull_secret(public_plain_http()) is None
    steps = render_config(path_account_skip_verify())[0].text
    assert "No credential for mirror.example.com was found" in steps and "--from-file=.dockerconfigjson" in steps


def lookup(doc: dict[str, object], dotted: str) -> dict[str, object]:
    node: object = doc
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, dotted
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_helm_values_set_every_chart_image_key_with_pull_secrets():
    req = private_pinned_ca()
    values = yaml.safe_load(helm.chaos_infra_values(req).text)  # type: ignore[union-attr]
    for key, name in CHART_IMAGE_KEYS.items():
        image = lookup(values, key)
        assert image["registry"] == "registry.example.com:5000"
        assert image["repository"] == f"harness/{name}"
        assert str(image["tag"]).split("@")[1].startswith("sha256:")
        takes = not key.endswith(("argoExec.image", "chaosRunner.image"))
        assert image.get("imagePullSecrets") == ([{"name": "hce-pull"}] if takes else None), key
    assert values["agent-proxy"]["image"]["repository"] == "harness/chaos-agent-proxy"  # 1.47.0 lists it, optional
    required = dataclasses.replace(req, release=req.release.without_optional(), digests=None)
    assert "agent-proxy" not in yaml.safe_load(helm.chaos_infra_values(required).text)  # type: ignore[union-attr]


def test_helm_values_add_agent_proxy_only_when_the_release_lists_it(tmp_path):
    from tests.conftest import write_manifest

    write_manifest(
        tmp_path,
        "1.45.0",
        [
            ("dedicated", "subscriber", "docker.io/harness/chaos-subscriber:1.45.0"),
            ("dedicated", "agent-proxy", "docker.io/harness/chaos-agent-proxy:1.45.0"),
        ],
    )
    rel = Catalog(tmp_path).load("1.45.0")
    req = ConfigRequest(release=rel, target=Target.parse("r.example.com"), secret_name="s")
    values = yaml.safe_load(helm.chaos_infra_values(req).text)  # type: ignore[union-attr]
    assert values["agent-proxy"]["image"] == {
        "registry": "r.example.com",
        "repository": "harness/chaos-agent-proxy",
        "tag": "1.45.0",
        "imagePullSecrets": [{"name": "s"}],
    }
    text = helm.chaos_infra_values(req).text  # type: ignore[union-attr]
    assert "left at the chart default: subscriber.upgrader.image, workflow-controller.image" in text


def test_registries_conf_parses_as_toml_and_maps_each_source_repository():
    req = path_account_skip_verify()
    conf = tomllib.loads(nodes.registries_conf(req).text)
    by_prefix = {r["prefix"]: r for r in conf["registry"] if "prefix" in r}
    sources = {f"{i.ref.registry}/{i.ref.repository}" for i in req.images()}
    assert set(by_prefix) == sources
    entry = by_prefix["docker.io/chaosnative/harness-smp-chaos-subscriber"]
    assert entry["mirror"] == [
        {"location": "mirror.example.com/hce/acme/harness-smp-chaos-subscriber", "insecure": True}
    ]
    assert {"location": "mirror.example.com", "insecure": True} in conf["registry"]


def test_containerd_hosts_parse_as_toml_and_name_the_mirror_with_its_ca():
    files = {f.path: f.text for f in nodes.containerd_hosts(private_pinned_ca())}
    hub = tomllib.loads(files["nodes/containerd/certs.d/docker.io/hosts.toml"])
    assert hub == {
        "server": "https://registry-1.docker.io",
        "host": {"https://registry.example.com:5000": {"capabilities": ["pull", "resolve"], "ca": "ca.crt"}},
    }
    assert files["nodes/containerd/certs.d/docker.io/ca.crt"] == FAKE_CA
    own = tomllib.loads(files["nodes/containerd/certs.d/registry.example.com:5000/hosts.toml"])
    assert own == {"server": "https://registry.example.com:5000", "ca": "ca.crt"}


def test_containerd_gets_no_redirect_it_cannot_express_and_next_steps_says_why():
    req = path_account_skip_verify()
    paths = [f.path for f in nodes.containerd_hosts(req)]
    assert paths == ["nodes/containerd/certs.d/mirror.example.com/hosts.toml"]  # only the mirror's own TLS setting
    assert len(nodes.renamed(req)) == len({i.ref.repository for i in req.images()})  # acme is not chaosnative
    steps = render_config(req)[0].text
    assert "What containerd cannot do" in steps and "`--account acme` renames these" in steps
    assert "`docker.io/chaosnative/chaos-runner` is at `mirror.example.com/hce/acme/chaos-runner`" in steps


def test_plain_http_mirror_is_an_http_host_for_containerd_and_insecure_for_crio():
    req = public_plain_http()
    files = {f.path: f.text for f in nodes.render(req)}
    hub = tomllib.loads(files["nodes/containerd/certs.d/docker.io/hosts.toml"])
    assert hub["host"] == {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"]}}
    assert tomllib.loads(files["nodes/containerd/certs.d/127.0.0.1:5000/hosts.toml"]) == {
        "server": "http://127.0.0.1:5000"
    }
    conf = tomllib.loads(files[nodes.REGISTRIES_CONF])
    assert all(m["insecure"] for r in conf["registry"] for m in r.get("mirror", []))


def test_next_steps_lists_every_file_and_numbers_its_steps():
    files = render_config(private_pinned_ca())
    steps = files[0]
    assert steps.path == nextsteps.NEXT_STEPS_FILE
    for f in files[1:]:
        assert f"`{f.path}`" in steps.text
    titles = [ln for ln in steps.text.splitlines() if ln.startswith("## ")]
    assert titles[:3] == ["## 1. Trust the registry", "## 2. Pull secret", "## 3. HCE image registry setting"]
    assert "golden-not-a-real-password" not in steps.text


# --- inputs and options ---------------------------------------------------------------------------


def test_pinning_needs_a_digest_for_every_chosen_image():
    rel, target = release("1.47.0"), Target.parse("r.example.com")
    digests = fake_digests(rel, target, ("ddcr",))
    with pytest.raises(ConfigError, match=r"no digest for r\.example\.com/harness/chaos-workflow-controller:v3\.4\.16"):
        ConfigRequest(release=rel, target=target, digests=digests)
    ConfigRequest(release=rel, target=target, groups=("ddcr",), digests=digests)  # enough for ddcr alone


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"project": "p"}, "--project needs --org"),
        ({"org": "o", "infra": "i"}, "--infra needs --org and --project"),
        ({"org": "has space"}, "not a Harness identifier"),
    ],
)
def test_scope_options_must_nest(scope, message):
    with pytest.raises(ConfigError, match=message):
        Scope(**scope)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("secret_name", "Bad_Name", "not a Kubernetes name"), ("namespace", "a.b", "not a Kubernetes namespace")],
)
def test_kubernetes_names_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ConfigRequest(release=release("1.47.0"), target=Target.parse("r.example.com"), **{field: value})


def test_report_digests_are_read_for_copied_and_skipped_images(tmp_path):
    report = tmp_path / "r.json"
    images = [
        {"destination": "r.example.com/harness/a:1", "status": "copied", "digest": "sha256:" + "a" * 64},
        {"destination": "r.example.com/harness/b:1", "status": "skipped", "digest": "sha256:" + "b" * 64},
        {"destination": "r.example.com/harness/c:1", "status": "failed", "digest": None},
    ]
    report.write_text(json.dumps({"format": 1, "release": "1.47.0", "images": images}))
    digests = load_report_digests(report, release("1.47.0"))
    assert digests == {
        ImageRef.parse("r.example.com/harness/a:1"): "sha256:" + "a" * 64,
        ImageRef.parse("r.example.com/harness/b:1"): "sha256:" + "b" * 64,
    }
    with pytest.raises(ConfigError, match=r"report of release '1\.47\.0', not 1\.94\.4"):
        load_report_digests(report, release("1.94.4"))
    report.write_text("{}")
    with pytest.raises(ConfigError, match="not a chaosmirror report"):
        load_report_digests(report, release("1.47.0"))


def test_secret_file_is_created_0600_and_its_text_never_shows_in_repr(tmp_path):
    files = render_config(private_pinned_ca())
    written = write_config(files, tmp_path / "out")
    modes = {p.relative_to(tmp_path / "out").as_posix(): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes[kubernetes.SECRET_FILE] == 0o600
    secret = next(f for f in files if f.secret)
    assert "golden-not-a-real-password" not in repr(secret) + repr(files)
    # a second run replaces every file and keeps the secret private
    write_config(files, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / kubernetes.SECRET_FILE).stat().st_mode) == 0o600


def test_files_are_never_written_outside_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="outside"):
        write_config([Rendered("../escape.txt", "x")], tmp_path / "out")
