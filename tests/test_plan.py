"""Pure planning: selections, platforms, conflicts. Manifests come from lab.images, in memory."""

from __future__ import annotations

import json

import pytest

from chaosmirror.manifest import Manifest, Platform
from chaosmirror.plan import Item, Observed, PlanConflict, build_plan, choose, collect_items
from chaosmirror.ref import ImageRef, SourceMirror, Target
from chaosmirror.release import Image
from lab.images import Artifact, index, make_image, random_layer, single

TARGET = Target.parse("registry.example.com", account="harness")


def art3() -> Artifact:
    return index([make_image([random_layer(f"p-{a}", 100)], arch=a) for a in ("amd64", "arm64", "s390x")])


def as_manifest(blob) -> Manifest:  # type: ignore[no-untyped-def]
    return Manifest.from_bytes(blob.data, blob.media_type)


def observed(art: Artifact, target_digest: str | None = None) -> Observed:
    children = {i.manifest.digest: as_manifest(i.manifest) for i in art.images}
    return Observed(as_manifest(art.top), target_digest, children)


def item(name: str = "chaos-runner", src_ns: str = "harness") -> Item:
    src = ImageRef.parse(f"docker.io/{src_ns}/{name}:1.0.0")
    return Item(src, src, TARGET.place(src), ("dedicated/runner",))


def test_whole_index_keeps_its_digest_and_every_platform():
    art = art3()
    sel = choose(as_manifest(art.top), ())
    assert sel.digest == art.digest
    assert sel.platforms == ("linux/amd64", "linux/arm64", "linux/s390x")
    assert sel.index is not None and sel.index.data == art.top.data  # put back byte for byte


def test_one_platform_is_that_platforms_manifest():
    art = art3()
    sel = choose(as_manifest(art.top), (Platform.parse("linux/arm64"),))
    assert sel.index is None and sel.digest == art.images[1].manifest.digest


def test_several_platforms_get_a_filtered_index_with_only_them():
    art = art3()
    sel = choose(as_manifest(art.top), (Platform.parse("linux/amd64"), Platform.parse("linux/s390x")))
    assert sel.index is not None and sel.digest == sel.index.digest != art.digest
    kept = [m["platform"]["architecture"] for m in json.loads(sel.index.data)["manifests"]]
    assert kept == ["amd64", "s390x"]


def test_asking_for_every_platform_keeps_the_original_index():
    art = art3()
    wanted = tuple(Platform.parse(f"linux/{a}") for a in ("amd64", "arm64", "s390x"))
    assert choose(as_manifest(art.top), wanted).digest == art.digest


def test_a_missing_platform_is_an_error_that_lists_what_exists():
    sel = choose(as_manifest(art3().top), (Platform.parse("windows/amd64"),))
    assert "has no windows/amd64" in sel.error and "linux/s390x" in sel.error


def test_arm64_variant_v8_matches_a_plain_arm64():
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64"))
    assert not Platform.parse("linux/arm/v7").matches(Platform("linux", "arm", "v6"))


def test_plan_skips_what_the_target_holds_and_copies_the_rest():
    a, b = art3(), single(make_image([random_layer("solo", 100)]))
    items = [item("chaos-runner"), item("chaos-operator")]
    plan = build_plan(items, {items[0]: observed(a, a.digest), items[1]: observed(b)})
    assert [x.kind for x in plan.actions] == ["skip", "copy"]
    copy = plan.actions[1]
    assert copy.digest == b.digest and len(copy.parts) == 1
    assert copy.size == sum(len(x.data) for x in b.all_blobs()) + len(b.top.data)


def test_a_source_that_could_not_be_read_fails_alone():
    items = [item("chaos-runner"), item("chaos-operator")]
    plan = build_plan(items, {items[0]: Observed(error="not found in the source"), items[1]: observed(art3())})
    assert [x.kind for x in plan.actions] == ["fail", "copy"]


def test_two_sources_with_different_content_at_one_destination_are_refused():
    items = [item("chaos-runner", "harness"), item("chaos-runner", "chaosnative")]
    assert items[0].dst == items[1].dst
    one, two = single(make_image([random_layer("x1", 10)])), single(make_image([random_layer("x2", 10)]))
    with pytest.raises(PlanConflict, match="chaosnative/chaos-runner"):
        build_plan(items, {items[0]: observed(one), items[1]: observed(two)})


def test_two_sources_with_the_same_content_copy_once():
    items = [item("chaos-runner", "harness"), item("chaos-runner", "chaosnative")]
    same = single(make_image([random_layer("same", 10)]))
    plan = build_plan(items, {items[0]: observed(same), items[1]: observed(same)})
    assert [x.kind for x in plan.actions] == ["copy", "skip"]
    assert "same image as" in plan.actions[1].reason


def test_collect_items_dedupes_images_listed_in_two_groups():
    ref = ImageRef.parse("harness/chaos-log-watcher:1.47.0")
    images = [Image("ddcr", "log-watcher", ref, "s"), Image("dedicated", "log-watcher", ref, "s")]
    mirrors = (SourceMirror.parse("docker.io=127.0.0.1:5000"),)
    (one,) = collect_items(images, TARGET, mirrors)
    assert one.uses == ("ddcr/log-watcher", "dedicated/log-watcher")
    assert str(one.pull) == "127.0.0.1:5000/harness/chaos-log-watcher:1.47.0"
    assert str(one.dst) == "registry.example.com/harness/chaos-log-watcher:1.47.0"
