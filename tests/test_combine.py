"""`release.combine`: several releases as one, pure (the bundled manifests and small ones written here)."""

from __future__ import annotations

import json

from chaosmirror.release import Catalog, bundled_dir, combine, load_release
from tests.conftest import write_manifest


def test_two_bundled_releases_give_the_union_each_image_once_and_who_needs_it():
    catalog = Catalog(bundled_dir())
    old, new = catalog.load("1.93"), catalog.load("1.94")
    both = catalog.load_many(["1.94", "1.93.0", "1.94.4"])  # order and repeats do not matter
    assert both.name == f"{old.name}+{new.name}" and both.names == (old.name, new.name)
    union = {i.ref for i in old.images()} | {i.ref for i in new.images()}
    assert {i.ref for i in both.images()} == union
    needed = both.needed_by()
    assert set(needed) == union
    for ref, names in needed.items():
        assert names == tuple(r.name for r in (old, new) if ref in {i.ref for i in r.images()})
    assert len(both.images()) == len({(i.group, i.component, i.ref) for i in both.images()})
    assert catalog.load_many(["1.47.0"]) == catalog.load("1.47.0") and catalog.load("1.47.0").names == ("1.47.0",)


def test_required_in_either_release_is_required_and_the_newest_component_comes_last(tmp_path):
    folder = write_manifest(tmp_path, "9.1.0", [("dedicated", "runner", "docker.io/harness/chaos-runner:1"),
                                                ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:2")])  # fmt: skip
    write_manifest(folder, "9.2.0", [("dedicated", "runner", "docker.io/harness/chaos-runner:2"),
                                     ("ddcr", "ddcr", "docker.io/harness/chaos-ddcr:2")])  # fmt: skip
    doc = json.loads((folder / "9.1.0.yaml").read_text())
    for group in doc["groups"].values():
        for image in group["images"]:
            image["optional"] = True
    (folder / "9.1.0.yaml").write_text(json.dumps(doc))
    old, new = load_release(folder / "9.1.0.yaml"), load_release(folder / "9.2.0.yaml")
    both = combine([new, old])
    assert [i.ref.tag for i in both.groups["dedicated"].images] == ["1", "2"]  # `config` takes the last: the newest
    ddcr = both.groups["ddcr"].images
    assert len(ddcr) == 1 and not ddcr[0].optional  # optional in 9.1.0, required in 9.2.0
    assert both.needed_by(optional=False) == {i.ref: ("9.2.0",) for i in new.images()}
    assert list(both.groups) == ["ddcr", "dedicated"]
