"""`chaosmirror scan`: image references found in HCE's files, with file:line, written as a manifest
that loads like the bundled ones and that `mirror --manifests` copies."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from chaosmirror.cli import cli
from chaosmirror.finder import find_images
from chaosmirror.release import Catalog, bundled_dir
from chaosmirror.scan import assign, known_components
from lab import rig as lab_rig
from tests.conftest import source_digests

# A dedicated chaos infrastructure manifest as HCE's download gives it (rendered from the chaos-infra
# chart's templates: harness/chaos-infra-helm-chart src/*/templates), for a release chaosmirror does
# not know. The images sit in every place HCE puts them: container images of Deployments, a CronJob
# job template, an init container and an ephemeral container; the workflow controller's executor
# image in its args; the operator's runner image in its env; the log watcher's in ConfigMap data;
# an Argo workflow default (YAML inside a ConfigMap value); and a helm.sh/images annotation.
INFRA = """\
apiVersion: v1
kind: Namespace
metadata:
  name: hce
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: subscriber-config
  namespace: hce
data:
  SERVER_ADDR: https://app.harness.io/gratis/chaos/kserver/api
  INFRA_SCOPE: cluster
  VERSION: "1.95.0"
  COMPONENTS: |
    DEPLOYMENTS: ["app=chaos-exporter", "name=chaos-operator", "app=workflow-controller"]
  LOG_WATCHER_IMAGE: harness/chaos-log-watcher:1.95.0
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: workflow-controller-configmap
  namespace: hce
data:
  executor: |
    imagePullPolicy: IfNotPresent
  instanceID: 3f1c2b7a
  workflowDefaults: |
    spec:
      imagePullSecrets:
        - name: hce-pull
      templates:
        - name: install-chaos-faults
          container:
            image: docker.io/harness/chaos-k8s:1.95.0
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: subscriber
  namespace: hce
spec:
  selector:
    matchLabels: {app: subscriber}
  template:
    metadata:
      labels: {app: subscriber}
    spec:
      serviceAccountName: hce
      initContainers:
        - name: wait-for-api
          image: docker.io/library/busybox:1.36
          command: ["sh", "-c", "until nslookup kubernetes.default; do sleep 2; done"]
      containers:
        - name: subscriber
          image: docker.io/harness/chaos-subscriber:1.95.0
          imagePullPolicy: Always
          envFrom:
            - configMapRef: {name: subscriber-config}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: chaos-operator-ce
  namespace: hce
  annotations:
    helm.sh/images: |
      - name: chaos-go-runner
        image: docker.io/harness/chaos-go-runner:1.95.0
      - name: chaos-go-runner-io
        image: docker.io/harness/chaos-go-runner-io:1.95.0
spec:
  replicas: 1
  selector:
    matchLabels: {name: chaos-operator}
  template:
    metadata:
      labels: {name: chaos-operator}
    spec:
      serviceAccountName: hce
      containers:
        - name: chaos-operator
          image: "docker.io/harness/chaos-operator:1.95.0"
          command: ["./chaos-operator"]
          args: ["-leader-elect=true"]
          env:
            - name: CHAOS_RUNNER_IMAGE
              value: "harness/chaos-runner:1.95.0"
            - name: WATCH_NAMESPACE
              valueFrom:
                fieldRef: {fieldPath: metadata.namespace}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: chaos-exporter
  namespace: hce
spec:
  selector:
    matchLabels: {app: chaos-exporter}
  template:
    metadata:
      labels: {app: chaos-exporter}
    spec:
      containers:
        - name: chaos-exporter
          image: docker.io/harness/chaos-exporter:1.95.0
          ports:
            - containerPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: workflow-controller
  namespace: hce
spec:
  selector:
    matchLabels: {app: workflow-controller}
  template:
    metadata:
      labels: {app: workflow-controller}
    spec:
      containers:
        - args:
            - --configmap
            - workflow-controller-configmap
            - --executor-image
            - harness/chaos-argoexec:v3.4.16
          command:
            - workflow-controller
          image: docker.io/harness/chaos-workflow-controller:v3.4.16
          name: workflow-controller
          env:
            - name: LEADER_ELECTION_DISABLE
              value: "true"
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: k8s-chaos-infrastructure-upgrader
  namespace: hce
spec:
  schedule: "0 0 * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          serviceAccountName: chaos-upgrade-agent-sa
          restartPolicy: Never
          containers:
            - image: docker.io/harness/k8s-chaos-infrastructure-upgrader:1.95.0
              name: upgrader
---
apiVersion: v1
kind: Pod
metadata:
  name: chaos-debug
  namespace: hce
spec:
  containers:
    - name: idle
      image: docker.io/harness/chaos-subscriber:1.95.0
  ephemeralContainers:
    - name: debugger
      image: docker.io/harness/chaos-go-runner-base:1.95.0
"""

INFRA_IMAGES = {
    "docker.io/harness/chaos-log-watcher:1.95.0",
    "docker.io/harness/chaos-k8s:1.95.0",
    "docker.io/library/busybox:1.36",
    "docker.io/harness/chaos-subscriber:1.95.0",
    "docker.io/harness/chaos-go-runner:1.95.0",
    "docker.io/harness/chaos-go-runner-io:1.95.0",
    "docker.io/harness/chaos-operator:1.95.0",
    "docker.io/harness/chaos-runner:1.95.0",
    "docker.io/harness/chaos-exporter:1.95.0",
    "docker.io/harness/chaos-argoexec:v3.4.16",
    "docker.io/harness/chaos-workflow-controller:v3.4.16",
    "docker.io/harness/k8s-chaos-infrastructure-upgrader:1.95.0",
    "docker.io/harness/chaos-go-runner-base:1.95.0",
}

# Harness's self-managed image list, harness/helm-charts src/harness/images.txt: the chaos lines in the
# layout of charts harness-0.35.0 to 0.41.0 (docker.io/harness), a control-plane image among them.
SMP_IMAGES_TXT = """\
docker.io/harness/service-discovery-collector:0.75.0
docker.io/harness/smp-chaos-manager-signed:1.95.2
docker.io/harness/source-probe:main-latest
docker.io/harness/chaos-log-watcher:1.95.0
docker.io/harness/chaos-ddcr:1.95.0
docker.io/harness/chaos-ddcr-faults:1.95.0
docker.io/harness/chaos-event-watcher:1.95.0
"""
# ... and from harness-0.41.1 on: `##` section comments and the harnesssecure namespace.
SMP_SECTIONS_TXT = """\
docker.io/harnesssecure/service-discovery-collector:0.75.0
## Chaos Engineering
docker.io/harnesssecure/smp-chaos-manager-signed:1.95.2
docker.io/harnesssecure/source-probe:main-latest
### Chaos Engineering Plugins
docker.io/harnesssecure/chaos-log-watcher:1.95.0  # the log watcher
docker.io/harnesssecure/chaos-ddcr:1.95.0
docker.io/harnesssecure/chaos-ddcr-faults:1.95.0
docker.io/harnesssecure/chaos-event-watcher:1.95.0
"""


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def known():  # type: ignore[no-untyped-def]
    return known_components(Catalog(bundled_dir()).load_all())


def test_every_image_of_the_infrastructure_manifest_is_found_at_its_line():
    findings = find_images(INFRA, "infra.yaml")
    assert {str(f.ref) for f in findings.found} == INFRA_IMAGES
    assert findings.skipped == []
    for found in findings.found:  # the line the YAML marks give holds the reference
        assert (
            str(found.ref).removeprefix("docker.io/library/").removeprefix("docker.io/")
            in INFRA.splitlines()[found.line - 1]
        ), found
    how = {str(f.ref): f.how for f in findings.found}
    assert how["docker.io/harness/chaos-argoexec:v3.4.16"].endswith("args --executor-image")
    assert how["docker.io/harness/chaos-runner:1.95.0"].endswith("containers[0].env[0] CHAOS_RUNNER_IMAGE")
    assert how["docker.io/harness/chaos-log-watcher:1.95.0"] == "ConfigMap/subscriber-config: data.LOG_WATCHER_IMAGE"
    assert "helm.sh/images" in how["docker.io/harness/chaos-go-runner:1.95.0"]
    assert "jobTemplate" in how["docker.io/harness/k8s-chaos-infrastructure-upgrader:1.95.0"]
    assert "ephemeralContainers" in how["docker.io/harness/chaos-go-runner-base:1.95.0"]
    assert "workflowDefaults" in how["docker.io/harness/chaos-k8s:1.95.0"]  # YAML inside a ConfigMap value


def test_groups_and_components_are_guessed_from_the_known_images():
    entries = {(e.group, e.component, str(e.ref)) for e in assign(find_images(INFRA, "f").found, known())}
    by_group: dict[str, set[str]] = {}
    for group, component, _ in entries:
        by_group.setdefault(group, set()).add(component)
    assert by_group == {
        "dedicated": {"log-watcher", "busybox", "subscriber", "go-runner", "operator", "runner", "exporter",
                      "argoexec", "workflow-controller", "upgrader"},
        "experiment": {"k8s", "go-runner", "go-runner-io", "go-runner-base"},
    }  # fmt: skip
    assert ("dedicated", "busybox", "docker.io/library/busybox:1.36") in entries  # unknown: named after its repository


def test_smp_images_txt_is_read_as_a_list_line_by_line():
    findings = find_images(SMP_SECTIONS_TXT, "images.txt")
    assert [(str(f.ref), f.line) for f in findings.found] == [
        ("docker.io/harnesssecure/service-discovery-collector:0.75.0", 1),
        ("docker.io/harnesssecure/smp-chaos-manager-signed:1.95.2", 3),
        ("docker.io/harnesssecure/source-probe:main-latest", 4),
        ("docker.io/harnesssecure/chaos-log-watcher:1.95.0", 6),
        ("docker.io/harnesssecure/chaos-ddcr:1.95.0", 7),
        ("docker.io/harnesssecure/chaos-ddcr-faults:1.95.0", 8),
        ("docker.io/harnesssecure/chaos-event-watcher:1.95.0", 9),
    ]
    entries = {(e.group, e.component) for e in assign(findings.found, known())}
    assert entries == {
        ("ddcr", "discovery-collector"), ("ddcr", "smp-chaos-manager-signed"), ("ddcr", "source-probe"),
        ("ddcr", "log-watcher"), ("ddcr", "ddcr"), ("ddcr", "ddcr-faults"), ("ddcr", "event-watcher"),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # --flag=value, and an image map of a values file (chaos-infra chart values.yaml)
        ("args: [--executor-image=docker.io/harness/chaos-argoexec:v3.4.16]\n",
         ["docker.io/harness/chaos-argoexec:v3.4.16"]),
        ("subscriber:\n  image:\n    registry: docker.io\n    repository: harness/chaos-subscriber\n"
         "    tag: '1.47.0'\n", ["docker.io/harness/chaos-subscriber:1.47.0"]),
        # the Harness Delegate chart's values, and Litmus' workflow-controller appSettings
        ("delegateDockerImage: us-docker.pkg.dev/gar-prod-setup/harness-public/harness/delegate:26.02.88404\n",
         ["us-docker.pkg.dev/gar-prod-setup/harness-public/harness/delegate:26.02.88404"]),
        ("appSettings:\n  executorImage: litmuschaos/argoexec:v3.3.1\n", ["docker.io/litmuschaos/argoexec:v3.3.1"]),
        # images.json of the self-managed chart
        ('{"modules": [{"name": "ce-plugins", "images": ["docker.io/harness/chaos-ddcr:1.94.0"]}]}',
         ["docker.io/harness/chaos-ddcr:1.94.0"]),
        # a Chart.yaml with the HIP-0015 annotation (quoted style: the string's own line)
        ('annotations:\n  helm.sh/images: "- name: a\\n  image: quay.io/acme/a:1.0\\n"\n', ["quay.io/acme/a:1.0"]),
        # not images: pull policies, a pull-secret list, a URL, a plain word
        ("imagePullPolicy: IfNotPresent\nimagePullSecrets: [{name: x}]\nurl: https://app.harness.io/x:1\n"
         "mode: k8sapi\n", []),
    ],
)  # fmt: skip
def test_references_in_values_args_and_annotations(text, expected):
    assert [str(f.ref) for f in find_images(text, "f").found] == expected


def test_values_in_image_positions_that_are_no_reference_are_reported_not_kept():
    text = "containers:\n  - image: harness/chaos-runner\n  - image: '#{LITMUS_CHAOS_RUNNER}'\n"
    findings = find_images(text, "x.yaml")
    assert findings.found == []
    assert (findings.skipped[0].line, findings.skipped[0].reason) == (2, "no tag")
    assert findings.skipped[1].line == 3 and "not a valid" in findings.skipped[1].reason


def test_scan_writes_a_manifest_that_loads_and_names_each_file_and_its_sha256(tmp_path):
    infra, smp = tmp_path / "infra.yaml", tmp_path / "images.txt"
    infra.write_text(INFRA)
    smp.write_text(SMP_IMAGES_TXT)
    out = tmp_path / "manifests"
    result = run("scan", str(infra), str(smp), "--release", "1.95.0", "-o", str(out))
    assert result.exit_code == 0, result.output
    rel = Catalog(out).load("1.95.0")  # the same validation as every manifest
    smp_refs = {line for line in SMP_IMAGES_TXT.splitlines() if not line.startswith("#")}
    assert {str(i.ref) for i in rel.images()} == INFRA_IMAGES | smp_refs
    assert {s.path: s.sha256 for s in rel.sources.values()} == {
        str(infra): hashlib.sha256(INFRA.encode()).hexdigest(),
        str(smp): hashlib.sha256(SMP_IMAGES_TXT.encode()).hexdigest(),
    }
    # each group's source is the file most of its images came from; the log watcher is in both files
    assert (rel.groups["ddcr"].source, rel.groups["dedicated"].source) == ("scanned-2", "scanned-1")
    assert {i.source for i in rel.images()} == {"scanned-1", "scanned-2"}
    # every image is printed with its file:line
    assert f"{infra}:{line_of(INFRA, 'chaos-argoexec:v3.4.16')}" in result.output
    assert f"{smp}:5" in result.output and "chaos-ddcr:1.95.0" in result.output
    shown = run("show", "1.95.0", "--manifests", str(out), "--output", "json")
    assert len(json.loads(shown.output)["images"]) == len(rel.images())


def test_scan_with_group_puts_every_image_there(tmp_path):
    listing = tmp_path / "addons.txt"
    listing.write_text("# our own add-ons\nregistry.example.com/tools/kubectl:1.30.2\nquay.io/acme/probe:2.1\n")
    result = run("scan", str(listing), "--release", "2.0.0", "--group", "experiment", "-o", str(tmp_path / "m"))
    assert result.exit_code == 0, result.output
    rel = Catalog(tmp_path / "m").load("2.0.0")
    assert [(i.group, i.component) for i in rel.images()] == [("experiment", "kubectl"), ("experiment", "probe")]


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("kind: [unclosed\n", (), "neither YAML nor a list of image references"),
        ("apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n", (), "no image references found in"),
        ("containers:\n  - image: harness/chaos-runner\n", (), "first 'harness/chaos-runner': no tag"),
        ("quay.io/acme/a:1\n", ("--release", "latest"), "name the release like HCE does"),
        ("quay.io/acme/a:1\n", (), "no HCE component chaosmirror knows: say which group"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path, content, args, message):
    path = tmp_path / "input.yaml"
    path.write_text(content)
    out = tmp_path / "out"
    result = run("scan", str(path), "-o", str(out), *(args or ("--release", "1.95.0")))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (out / "1.95.0.yaml").exists()


def test_a_missing_file_or_an_existing_manifest_exits_2(tmp_path):
    result = run("scan", str(tmp_path / "nope.yaml"), "--release", "1.95.0", "-o", str(tmp_path))
    assert result.exit_code == 2 and "does not exist" in result.output
    listing = tmp_path / "a.txt"
    listing.write_text("docker.io/harness/chaos-ddcr:1.95.0\n")
    assert run("scan", str(listing), "--release", "1.95.0", "-o", str(tmp_path / "m")).exit_code == 0
    again = run("scan", str(listing), "--release", "1.95.0", "-o", str(tmp_path / "m"))
    assert again.exit_code == 2 and "already exists" in again.output
    (tmp_path / "m" / "values.yaml").write_text("a: b\n")  # not a manifest: the folder would not load
    other = run("scan", str(listing), "--release", "1.96.0", "-o", str(tmp_path / "m"))
    assert other.exit_code == 2 and "named after its release" in other.output
    assert not (tmp_path / "m" / "1.96.0.yaml").exists()


@pytest.mark.registry
def test_mirror_copies_the_scanned_release(rig: lab_rig.Rig, chaosmirror, account, tmp_path):
    infra, smp = tmp_path / "infra.yaml", tmp_path / "images.txt"
    infra.write_text(INFRA)
    smp.write_text(SMP_IMAGES_TXT)
    out = tmp_path / "manifests"
    assert run("scan", str(infra), str(smp), "--release", "1.95.0", "-o", str(out)).exit_code == 0
    wanted = {i.ref for i in Catalog(out).load("1.95.0").images()}
    rig.seed([(ref.repository, ref.tag) for ref in sorted(wanted)])
    result = chaosmirror("mirror", "1.95.0", "--manifests", str(out), *rig.args(), "--account", account)
    assert result.code == 0, result.output
    entries = result.report["images"]  # type: ignore[index]
    assert len(entries) == len(wanted) == 19 and {e["status"] for e in entries} == {"copied"}
    digests = source_digests(rig)
    for entry in entries:
        name = entry["destination"].rsplit("/", 1)[-1]
        assert entry["destination"] == f"{rig.target.host}/{account}/{name}"
        assert entry["digest"] == digests[name], name  # the bytes of the stand-in in the source
