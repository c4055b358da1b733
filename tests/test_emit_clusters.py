"""The cluster-specific files (RKE2/K3s, OpenShift, Docker, containerd under a path), read the way each
cluster reads them: the strict k3s reader, the OpenShift CRD schemas and source -> mirror rule, and
kubernetes-validate. Pure: no registry; tests/test_cluster_config_e2e.py resolves the same files against
real ones."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib

import pytest
import yaml

from chaosmirror.emit import ConfigError, ConfigRequest, Transport, dockerd, nodes, openshift, rancher, render_config
from chaosmirror.ref import ImageRef, Target
from tests import k3s_registries, openshift_mirrors
from tests.conftest import REPO_ROOT
from tests.test_emit import CASES, FAKE_CA, FAKE_CREDENTIAL, fake_digests, k8s_validate, release


def request(target: str, account: str, **options: object) -> ConfigRequest:
    rel, place = release("1.47.0"), Target.parse(target, account=account)
    return ConfigRequest(release=rel, target=place, **options)  # type: ignore[arg-type]


# The three layouts the issue names: HCE's own, another account, a target with a path.
LAYOUTS = {
    "account-harness": ("registry.example.com:5000", "harness"),
    "account-chaos": ("registry.example.com:5000", "chaos"),
    "path-harness": ("registry.example.com:5000/mirror", "harness"),
}


# --- RKE2 / K3s -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_golden_registries_yaml_passes_the_strict_reader(case):
    k3s_registries.load(rancher.registries_yaml(CASES[case]()).text)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["mirrors"]["docker.io"].update(endpoints=["x"]), r"unknown keys \['endpoints'\]"),
        (lambda d: d["configs"]["registry.example.com:5000"]["tls"].update(ca=["x"]), r"unknown keys \['ca'\]"),
        (lambda d: d.update(auths={}), r"unknown keys \['auths'\]"),
        (lambda d: d["mirrors"]["docker.io"].update(rewrite={"^(": "x"}), "not a regular expression"),
        (lambda d: d["mirrors"]["docker.io"].update(endpoint="https://x"), "a list of URLs"),
    ],
)
def test_the_k3s_reader_refuses_what_k3s_does_not_know(edit, message):
    doc = yaml.safe_load(rancher.registries_yaml(CASES["private-pinned-ca"]()).text)
    edit(doc)
    with pytest.raises(k3s_registries.RegistriesError, match=message):
        k3s_registries.load(yaml.safe_dump(doc))


def test_the_k3s_reader_applies_the_documented_semantics():
    text = """
mirrors:
  docker.io:
    endpoint: ["mirror.example.com:5000/v2/base", "http://127.0.0.1:5001", "https://registry-1.docker.io"]
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
configs:
  "mirror.example.com:5000": {tls: {insecure_skip_verify: true}}
"""
    pulls = k3s_registries.load(text).pulls(ImageRef.parse("rancher/mirrored-pause:3.6"))
    assert [p.url for p in pulls] == [
        # a path other than /v2 is the API root itself; no scheme means https
        "https://mirror.example.com:5000/v2/base/mirrorproject/rancher-images/mirrored-pause/manifests/3.6",
        "http://127.0.0.1:5001/v2/mirrorproject/rancher-images/mirrored-pause/manifests/3.6",
        # the default endpoint is last, and never rewritten, even when listed
        "https://registry-1.docker.io/v2/rancher/mirrored-pause/manifests/3.6",
    ]
    assert pulls[0].endpoint.config == {"tls": {"insecure_skip_verify": True}}  # matched by the endpoint's host
    assert pulls[1].endpoint.config == {}
    ambiguous = text.replace('"^rancher/(.*)"', '"^rancher/(.*)": "a/$1"\n      "pause"')
    with pytest.raises(k3s_registries.RegistriesError, match="no fixed order"):
        k3s_registries.load(ambiguous).pulls(ImageRef.parse("rancher/mirrored-pause:3.6"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_registries_yaml_sends_every_image_to_where_the_target_holds_it(layout):
    req = request(*LAYOUTS[layout], transport=Transport(ca_pem=FAKE_CA))
    reader = k3s_registries.load(rancher.registries_yaml(req).text)
    for image in req.images():
        first, *rest = reader.pulls(image.ref)
        placed = req.target.place(image.ref)
        endpoint = first.endpoint
        assert (endpoint.scheme, endpoint.host, endpoint.api_root) == ("https", placed.registry, "/v2")
        assert first.repository == placed.repository, image.ref
        assert first.endpoint.config == {"tls": {"ca_file": rancher.node_ca_path(req.target.host)}}
        assert [(p.endpoint.default, p.repository) for p in rest] == [(True, image.ref.repository)]
        # HCE pulls the mirrored name itself: the same CA applies
        (direct,) = reader.pulls(placed)
        assert direct.endpoint.config == first.endpoint.config and direct.repository == placed.repository
    rules = yaml.safe_load(rancher.registries_yaml(req).text)["mirrors"]["docker.io"].get("rewrite", {})
    assert len(rules) == (0 if layout == "account-harness" else 1)  # one anchored rule per namespace


def test_plain_http_mirror_is_an_http_endpoint_for_the_mirrored_names_too():
    reader = k3s_registries.load(rancher.registries_yaml(CASES["public-plain-http"]()).text)
    (direct,) = reader.pulls(ImageRef.parse("127.0.0.1:5000/harness/chaos-runner:1.47.0"))
    assert direct.url == "http://127.0.0.1:5000/v2/harness/chaos-runner/manifests/1.47.0"
    insecure = dataclasses.replace(request("mirror.example.com", "harness"), transport=Transport(plain_http=True))
    reader = k3s_registries.load(rancher.registries_yaml(insecure).text)
    first = reader.pulls(ImageRef.parse("mirror.example.com/harness/x:1"))[0]
    assert first.url == "http://mirror.example.com/v2/harness/x/manifests/1"


def test_node_credentials_go_into_registries_yaml_only_when_asked_and_make_it_a_secret():
    plain = request(*LAYOUTS["path-harness"], secret_name="pull", credential=FAKE_CREDENTIAL)
    assert not rancher.registries_yaml(plain).secret
    assert "golden-not-a-real-password" not in rancher.registries_yaml(plain).text
    assert "--node-credentials" in render_config(plain)[0].text
    asked = dataclasses.replace(plain, node_credentials=True)
    rendered = rancher.registries_yaml(asked)
    assert rendered.secret and "golden-not-a-real-password" not in repr(rendered)
    reader = k3s_registries.load(rendered.text)
    (first, _default) = reader.pulls(ImageRef.parse("docker.io/harness/chaos-ddcr:1.47.0"))
    assert first.endpoint.config["auth"] == {"username": "robot", "password": "golden-not-a-real-password"}
    steps = render_config(asked)[0].text
    assert f"sudo install -D -m 0600 {rancher.REGISTRIES_FILE} /etc/rancher/k3s/registries.yaml" in steps
    with pytest.raises(ConfigError, match=r"--node-credentials: no credential for registry\.example\.com:5000"):
        dataclasses.replace(plain, credential=None, node_credentials=True)


def test_next_steps_installs_the_ca_where_registries_yaml_looks_for_it():
    req = CASES["private-pinned-ca"]()
    ca_file = yaml.safe_load(rancher.registries_yaml(req).text)["configs"]["registry.example.com:5000"]["tls"]
    source = f"{nodes.CONTAINERS_CERTS}/registry.example.com:5000/{nodes.CA_FILE}"
    assert f"sudo install -D -m 0644 {source} {ca_file['ca_file']}" in render_config(req)[0].text
    assert source in {f.path for f in render_config(req)}


def test_rewrite_patterns_are_go_literals():
    assert rancher.quote_meta("a.b+c") == r"a\.b\+c"
    rule = rancher.rewrite_rule(nodes.Redirect("docker.io", "my.org/x", "h", "p/acme/x", "p"))
    assert rule == (r"^my\.org/([^/]+)$", "p/acme/$1")


# --- OpenShift ------------------------------------------------------------------------------------


def mirror_sets(req: ConfigRequest) -> list[dict[str, object]]:
    return [yaml.safe_load(r.text) for r in (openshift.tag_mirror_set(req), openshift.digest_mirror_set(req)) if r]


@pytest.mark.parametrize("case", CASES)
def test_mirror_sets_pass_the_crd_schemas_of_openshift_api(case):
    req = CASES[case]()
    found = mirror_sets(req)
    assert [d["kind"] for d in found] == ["ImageTagMirrorSet"] + (["ImageDigestMirrorSet"] if req.pinned else [])
    for doc in found:
        openshift_mirrors.validate(doc, k8s_validate)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(mirror=e.pop("mirrors")), "Additional properties are not allowed"),
        (lambda e: e.update(mirrorSourcePolicy="Never"), "is not one of"),
        (lambda e: e.update(mirrors=[*e["mirrors"], *e["mirrors"]]), "duplicate items in a list of type set"),
        (lambda e: e.update(source="docker.io/Harness/X"), "does not match"),
        (lambda e: e.pop("source"), "'source' is a required property"),
    ],
)
def test_a_broken_mirror_set_fails_the_schema(edit, message):
    doc = mirror_sets(CASES["private-pinned-ca"]())[0]
    edit(doc["spec"]["imageTagMirrors"][0])  # type: ignore[index]
    with pytest.raises(openshift_mirrors.MirrorSetError, match=message):
        openshift_mirrors.validate(doc, k8s_validate)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("policy", ["AllowContactingSource", "NeverContactSource"])
def test_every_image_resolves_through_the_source_prefix_rule_to_the_target(layout, policy):
    rel, target = release("1.47.0"), Target.parse(LAYOUTS[layout][0], account=LAYOUTS[layout][1])
    req = request(*LAYOUTS[layout], mirror_source_policy=policy, digests=fake_digests(rel, target))
    tags, digests = mirror_sets(req)
    for image in req.images():
        placed = req.target.place(image.ref)
        by_tag = openshift_mirrors.resolve(tags, image.ref)
        assert by_tag[0] == placed
        assert by_tag[1:] == ([] if policy == "NeverContactSource" else [image.ref])
        pinned = image.ref.with_digest(req.digests[placed])  # type: ignore[index]
        assert openshift_mirrors.resolve(digests, pinned)[0] == placed.with_digest(pinned.digest)
        assert openshift_mirrors.resolve(tags, pinned) == [pinned]  # a tag set never serves a digest pull
    # chaos-go-runner is a prefix of a repository name the release does not hold, but the rule needs a
    # separator after the source, so that repository is not served from the mirror
    assert openshift_mirrors.resolve(tags, ImageRef.parse("harness/chaos-go-runner-nightly:1.47.0")) == [
        ImageRef.parse("harness/chaos-go-runner-nightly:1.47.0")
    ]


def test_ca_configmap_is_keyed_by_host_and_port_and_passes_kubernetes_validation():
    rendered = openshift.ca_configmap(CASES["private-pinned-ca"]())
    assert rendered is not None
    doc = yaml.safe_load(rendered.text)
    k8s_validate(doc)
    assert doc["metadata"]["namespace"] == "openshift-config"
    assert doc["data"] == {"registry.example.com..5000": FAKE_CA}
    assert re.fullmatch(r"[-._a-zA-Z0-9]+", next(iter(doc["data"])))  # a valid ConfigMap key
    assert openshift.ca_configmap(CASES["public-plain-http"]()) is None


def test_next_steps_for_openshift_say_nodes_roll_and_how_to_merge_the_pull_secret():
    steps = render_config(CASES["private-pinned-ca"]())[0].text
    assert "**Applying them rolls every node**" in steps
    apply = f"oc apply -f {openshift.TAG_MIRRORS_FILE}\noc apply -f {openshift.DIGEST_MIRRORS_FILE}\n"
    assert apply in steps
    assert "oc extract secret/hce-pull -n chaos --keys=.dockerconfigjson --to=-" in steps
    assert "oc set data secret/pull-secret -n openshift-config" in steps
    assert '"additionalTrustedCA":{"name":"chaosmirror-registry-ca"}' in steps
    air_gap = dataclasses.replace(CASES["private-pinned-ca"](), mirror_source_policy="NeverContactSource")
    assert "never contacted, as an air gap needs" in render_config(air_gap)[0].text
    public = render_config(CASES["public-plain-http"]())[0].text
    assert "pull-secret" not in public and "insecureRegistries" in public


# --- Docker and containerd --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "account", "transport", "expected"),
    [
        ("r.example.com", "harness", Transport(), {"registry-mirrors": ["https://r.example.com"]}),
        ("r.example.com/mirror", "harness", Transport(), None),  # dockerd refuses a mirror with a path
        ("r.example.com", "chaos", Transport(), None),  # the repositories are renamed
        (
            "r.example.com",
            "chaos",
            Transport(plain_http=True),
            {"insecure-registries": ["r.example.com"]},
        ),
        (
            "127.0.0.1:5000",
            "harness",
            Transport(plain_http=True),
            {"registry-mirrors": ["http://127.0.0.1:5000"], "insecure-registries": ["127.0.0.1:5000"]},
        ),
    ],
)
def test_daemon_json_has_registry_mirrors_only_for_hub_names_at_the_mirror_root(target, account, transport, expected):
    rendered = dockerd.daemon_json(request(target, account, transport=transport))
    assert (json.loads(rendered.text) if rendered else None) == expected


def test_containerd_serves_a_target_path_through_the_host_api_root():
    req = request(*LAYOUTS["path-harness"], transport=Transport(ca_pem=FAKE_CA))
    files = {f.path: f.text for f in nodes.containerd_hosts(req)}
    hub = tomllib.loads(files["nodes/containerd/certs.d/docker.io/hosts.toml"])
    assert hub["host"] == {
        "https://registry.example.com:5000/v2/mirror": {
            "capabilities": ["pull", "resolve"],
            "override_path": True,
            "ca": "ca.crt",
        }
    }
    assert nodes.renamed(req) == []
    assert "What containerd cannot do" not in render_config(req)[0].text


def test_containerd_says_it_cannot_rename_only_when_the_account_renames():
    req = request(*LAYOUTS["account-chaos"])
    assert "nodes/containerd/certs.d/docker.io/hosts.toml" not in {f.path for f in nodes.containerd_hosts(req)}
    steps = render_config(req)[0].text
    assert "**What containerd cannot do.**" in steps and "`--account chaos` renames these" in steps
    assert "`docker.io/harness/chaos-runner` is at `registry.example.com:5000/chaos/chaos-runner`" in steps


# --- README ---------------------------------------------------------------------------------------


def test_readme_configuration_table_lists_every_kind_of_file_written():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("| file | what it is |") :].split("\n\n", 1)[0]
    for path in (
        rancher.REGISTRIES_FILE,
        dockerd.DAEMON_FILE,
        openshift.TAG_MIRRORS_FILE,
        openshift.DIGEST_MIRRORS_FILE,
        openshift.CA_CONFIGMAP_FILE,
        nodes.REGISTRIES_CONF,
    ):
        assert f"`{path}`" in table, path
