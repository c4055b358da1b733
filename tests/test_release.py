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
    rel = Catalog(bundled_dir()).load("1.47.0")
    ddcr = [str(i.ref) for i in rel.groups["ddcr"].images]
    assert ddcr == [
        "docker.io/harness/chaos-ddcr:1.47.0",
        "docker.io/harness/chaos-log-watcher:1.47.0",
        "docker.io/harness/service-discovery-collector:0.27.0",
        "docker.io/harness/chaos-ddcr-faults:1.47.0",
    ]
    dedicated = [i.ref.short() for i in rel.groups["dedicated"].images]
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


def test_release_notes_tags_are_written_not_derived():
    cat = Catalog(bundled_dir())
    tags = {i.component: i.ref.tag for i in cat.load("1.61.11").groups["ddcr"].images}
    assert tags == {"ddcr": "1.61.1", "ddcr-faults": "1.61.2", "log-watcher": "1.61.1", "discovery-collector": "0.41.0"}
    assert cat.load("1.62.11").revision == 2


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
    assert ("added", "go-runner-base") in changes and ("removed", "k8s") in changes
    assert not any(c[1] in ("workflow-controller", "argoexec") for c in changes)  # v3.4.16 in both


def test_images_of_unknown_group_is_an_error():
    rel = Catalog(bundled_dir()).load("1.47.0")
    with pytest.raises(ManifestError, match="unknown group"):
        rel.images(["bogus"])
