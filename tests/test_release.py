from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaosmirror.errors import ManifestError, UnknownReleaseError
from chaosmirror.release import Catalog, bundled_dir, diff_releases, load_release

GOOD = """\
schema: chaosmirror.release/v1
release: 2.0.0
sources:
  notes: {title: "Release notes"}
groups:
  ddcr:
    source: notes
    images:
      - {component: ddcr, image: docker.io/harness/chaos-ddcr:2.0.0}
      - {component: log-watcher, image: harness/chaos-log-watcher:2.0.1}
"""


def write(tmp_path: Path, text: str, name: str = "2.0.0") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_every_bundled_manifest_loads():
    releases = Catalog(bundled_dir()).load_all()
    assert len(releases) >= 40
    assert all(r.images() or any(g.note for g in r.groups.values()) for r in releases)


def test_147_is_exactly_the_hce_page():
    """Its required images are the HCE Image Registry page's two tabs (seed-hce-image-registry.md),
    in the page's order; the optional extras come from the SaaS chaos-infra chart of that release."""
    rel = Catalog(bundled_dir()).load("1.47.0")
    ddcr = [str(i.ref) for i in rel.images(["ddcr"], optional=False)]
    assert ddcr == [
        "docker.io/harness/chaos-ddcr:1.47.0",
        "docker.io/harness/chaos-log-watcher:1.47.0",
        "docker.io/harness/service-discovery-collector:0.27.0",
        "docker.io/harness/chaos-ddcr-faults:1.47.0",
    ]
    dedicated = [i.ref.short() for i in rel.images(["dedicated"], optional=False)]
    assert dedicated == [
        "harness/chaos-log-watcher:1.47.0",
        "harness/chaos-workflow-controller:v3.4.16",
        "harness/chaos-argoexec:v3.4.16",
        "harness/chaos-exporter:1.47.0",
        "harness/chaos-operator:1.47.0",
        "harness/chaos-runner:1.47.0",
        "harness/chaos-subscriber:1.47.0",
        "harness/chaos-go-runner:1.47.0",
        "harness/k8s-chaos-infrastructure-upgrader:1.47.0",
    ]
    assert rel.sources["hce-docs"].url.startswith("https://developer.harness.io/")
    assert {i.group for i in rel.images() if i.source == "hce-docs"} == {"ddcr", "dedicated"}
    extras = {(i.component, i.ref.short(), i.source) for i in rel.images() if i.optional}
    assert extras == {
        ("agent-proxy", "harness/chaos-agent-proxy:1.45.0", "saas-chart"),
        ("emissary", "harness/chaos-emissary:1.61.0", "saas-chart"),
    }
    assert "0.0.17" in rel.sources["saas-chart"].title


def test_agent_proxy_is_optional_in_141_and_147_as_the_saas_chart_pins_it():
    cat = Catalog(bundled_dir())
    for name in ("1.41.0", "1.47.0"):
        (proxy,) = [i for i in cat.load(name).images() if i.component == "agent-proxy"]
        assert (proxy.group, str(proxy.ref), proxy.optional, proxy.source) == (
            "dedicated", "docker.io/harness/chaos-agent-proxy:1.45.0", True, "saas-chart"), name  # fmt: skip


# The chaos minors whose self-managed (SMP) image list ships chaos-event-watcher beside the DDCR
# images (harness/helm-charts: src/harness/images.txt, images.json from harness-0.42.0), and its tag.
EVENT_WATCHER = {
    "1.61.11": "1.61.0", "1.63.7": "1.63.0", "1.64.14": "1.64.0", "1.65.12": "1.65.0", "1.66.8": "1.66.0",
    "1.69.6": "1.69.0", "1.71.3": "1.71.0", "1.72.7": "1.72.1", "1.74.1": "1.74.0", "1.76.0": "1.76.0",
    "1.77.3": "1.77.0", "1.80.3": "1.80.0", "1.83.4": "1.83.0", "1.88.0": "1.88.0", "1.90.0": "1.90.0",
    "1.94.4": "1.94.0",
}  # fmt: skip


def test_event_watcher_is_an_optional_ddcr_image_where_the_smp_list_pairs_it_with_ddcr():
    cat = Catalog(bundled_dir())
    for rel in cat.load_all():
        found = [i for i in rel.images() if i.component == "event-watcher"]
        if rel.name not in EVENT_WATCHER:
            assert not found, rel.name
            continue
        (image,) = found
        assert (image.group, image.optional, image.source) == ("ddcr", True, "smp-images"), rel.name
        assert str(image.ref) == f"docker.io/harness/chaos-event-watcher:{EVENT_WATCHER[rel.name]}"
        assert "images" in rel.sources["smp-images"].path
    # without the optional images, 1.61.11's ddcr group is exactly its release notes' list
    ddcr = {i.component: i.ref.tag for i in cat.load("1.61.11").images(["ddcr"], optional=False)}
    assert ddcr == {"ddcr": "1.61.1", "ddcr-faults": "1.61.2", "log-watcher": "1.61.1", "discovery-collector": "0.41.0"}


def test_go_runner_variants_ship_with_go_runner_from_119_on():
    """harness/helm-charts images.txt lists chaos-go-runner-base/-io/-time from harness-0.9.0 (1.19) on,
    in the repository and with the tag of chaos-go-runner; harness-0.8.0 (1.15) lists no go-runner."""
    cat = Catalog(bundled_dir())
    checked = []
    for rel in cat.load_all():
        runners = [i.ref for i in rel.images(["experiment"]) if i.component == "go-runner"]
        if not runners:
            continue
        (runner,) = runners
        variants = {i.component: i.ref for i in rel.images(["experiment"]) if i.component.startswith("go-runner-")}
        assert {c: (r.repository, r.tag) for c, r in variants.items()} == {
            f"go-runner-{v}": (f"{runner.repository}-{v}", runner.tag) for v in ("base", "io", "time")
        }, rel.name
        checked.append(rel.name)
    assert checked[0] == "1.19.0" and "1.38.0" in checked and "1.49.0" in checked


def test_ddcr_groups_of_the_smp_era_carry_the_log_watcher():
    cat = Catalog(bundled_dir())
    for name in ("1.32.0", "1.34.0", "1.36.0", "1.38.0", "1.40.0", "1.41.0", "1.45.0", "1.47.0", "1.49.0"):
        ddcr = cat.load(name).images(["ddcr"], optional=False)
        components = {i.component for i in ddcr}
        assert {"ddcr", "log-watcher"} <= components, name
        assert {i.ref.tag for i in ddcr if i.component == "log-watcher"} >= {name}, name


def test_162_is_one_release_with_two_revisions():
    cat = Catalog(bundled_dir())
    assert "1.62.0" not in cat.names() and cat.resolve("1.62") == "1.62.11"
    rel = cat.load("1.62.11")
    assert rel.revision == 2 and "1.62.0" in rel.notes  # the superseded list stays on record


def test_no_bundled_manifest_lists_a_floating_tag_and_each_says_why_source_probe_is_left_out():
    floating = {"latest", "main-latest", "ci", "main", "master"}
    for rel in Catalog(bundled_dir()).load_all():
        assert not [i for i in rel.images() if i.ref.tag in floating], rel.name
        assert all(i.source in rel.sources for i in rel.images()), rel.name
        smp = rel.sources.get("smp-images")
        if smp is not None:  # every self-managed list ships source-probe on a floating tag
            assert "source-probe" in rel.notes and "floats" in rel.notes, rel.name


def test_optional_images_load_and_are_left_out_on_request(tmp_path):
    text = GOOD.replace("harness/chaos-log-watcher:2.0.1}", "harness/chaos-log-watcher:2.0.1, optional: true}")
    rel = load_release(write(tmp_path, text))
    assert [i.optional for i in rel.images()] == [False, True]
    assert [i.component for i in rel.images(optional=False)] == ["ddcr"]
    assert [i.component for i in rel.without_optional().images()] == ["ddcr"]
    bad = write(tmp_path, GOOD.replace("chaos-log-watcher:2.0.1}", "chaos-log-watcher:2.0.1, optional: maybe}"))
    with pytest.raises(ManifestError, match=r":10: groups\.ddcr\.images\[1\]\.optional: expected true or false"):
        load_release(bad)


def test_release_notes_tags_are_written_not_derived():
    cat = Catalog(bundled_dir())
    tags = {i.component: i.ref.tag for i in cat.load("1.61.11").images(["ddcr"], optional=False)}
    assert tags == {"ddcr": "1.61.1", "ddcr-faults": "1.61.2", "log-watcher": "1.61.1", "discovery-collector": "0.41.0"}


def test_minor_version_means_newest_patch(tmp_path):
    for name in ("1.53.1", "1.53.10", "1.53.2"):
        write(tmp_path, GOOD.replace("2.0.0", name), name)
    cat = Catalog(tmp_path)
    assert cat.resolve("1.53") == "1.53.10"
    assert cat.resolve("v1.53.2") == "1.53.2"
    assert cat.names() == ["1.53.1", "1.53.2", "1.53.10"]


def test_unknown_release_lists_the_known_ones(tmp_path):
    write(tmp_path, GOOD)
    with pytest.raises(UnknownReleaseError, match=r"unknown release '9.9.9'.*2\.0\.0"):
        Catalog(tmp_path).resolve("9.9.9")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("component: ddcr, image", "component: ddcr, imgae"),
            r"2\.0\.0\.yaml:9: groups\.ddcr\.images\[0\]\.imgae: unknown key",
        ),
        (("chaos-ddcr:2.0.0}", "chaos-ddcr}"), r":9: groups\.ddcr\.images\[0\]\.image: .* has no tag"),
        (("chaos-ddcr:2.0.0}", "Chaos-DDCR:2.0.0}"), r":9: groups\.ddcr\.images\[0\]\.image: .*not a valid repository"),
        (
            ("harness/chaos-log-watcher:2.0.1", "docker.io/harness/chaos-ddcr:2.0.0"),
            r":10: .*images\[1\]\.image: .*already listed as groups\.ddcr\.images\[0\]",
        ),
        (("    source: notes", "    source: nope"), r":7: groups\.ddcr\.source: 'nope' is not one of the sources"),
        (("release: 2.0.0", "release: 2.0.1"), r":2: release: '2\.0\.1' does not match the file name"),
        (("schema: chaosmirror.release/v1", "schema: v0"), r":1: schema: 'v0' is not supported"),
        (("  ddcr:", "  ddrc:"), r":6: groups\.ddrc: unknown key \(allowed here: ddcr, dedicated, experiment\)"),
        (("sources:", "extra: 1\nsources:"), r":3: extra: unknown key"),
    ],
)
def test_manifest_errors_name_the_file_line_and_key(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ManifestError, match=message) as info:
        load_release(path)
    assert str(path) in str(info.value)


def test_a_key_written_twice_is_an_error(tmp_path):
    path = write(tmp_path, GOOD.replace("    source: notes\n", "    source: notes\n    source: notes\n"))
    with pytest.raises(ManifestError, match=r"groups\.ddcr\.source: appears twice"):
        load_release(path)


def test_an_empty_group_needs_a_note(tmp_path):
    path = write(tmp_path, GOOD + "  dedicated:\n    images: []\n")
    with pytest.raises(ManifestError, match="needs a note"):
        load_release(path)
    path = write(tmp_path, GOOD + "  dedicated:\n    note: not published\n    images: []\n")
    assert load_release(path).groups["dedicated"].note == "not published"


def test_files_not_named_after_a_release_are_refused(tmp_path):
    (tmp_path / "latest.yaml").write_text(GOOD)
    with pytest.raises(ManifestError, match="named after its release"):
        Catalog(tmp_path)


def test_diff_finds_added_removed_and_retagged():
    cat = Catalog(bundled_dir())
    changes = {(c.kind, c.component) for c in diff_releases(cat.load("1.47.0"), cat.load("1.53.1"))}
    assert ("retagged", "ddcr") in changes and ("retagged", "discovery-collector") in changes
    assert ("retagged", "go-runner-base") in changes and ("removed", "k8s") in changes
    assert ("removed", "agent-proxy") in changes  # an optional image of 1.47.0's SaaS chart
    assert not any(c[1] in ("workflow-controller", "argoexec") for c in changes)  # v3.4.16 in both


def test_images_of_unknown_group_is_an_error():
    rel = Catalog(bundled_dir()).load("1.47.0")
    with pytest.raises(ManifestError, match="unknown group"):
        rel.images(["bogus"])
