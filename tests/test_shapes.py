"""Image shapes in pure code: attestations, foreign layers, what the Docker engine keeps, the manifest
cache, attachment records. Images come from lab.images, in memory; the zstd stand-in is checked with
the zstd tool itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chaosmirror.cache import ManifestCache, cache_folder
from chaosmirror.engines.repush import docker_left_out, same_config
from chaosmirror.manifest import Manifest, Platform, attestations, platform_children
from chaosmirror.mirror import tasks_for
from chaosmirror.plan import Observed, build_plan, choose, parts_of
from chaosmirror.ref import ImageRef
from chaosmirror.signatures import Attachment, cosign_tag, fallback_tag, subjects_for
from lab.images import (
    DOCKER_FOREIGN,
    attestation,
    index,
    make_image,
    random_layer,
    referrer,
    referrers_index,
    zstd_frame,
)
from tests.conftest import require
from tests.test_plan import as_manifest, item

AMD, ARM, S390 = (Platform.parse(f"linux/{a}") for a in ("amd64", "arm64", "s390x"))
MCR = ("https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:" + "0" * 64,)


def buildx(*arches: str):  # type: ignore[no-untyped-def]
    images = [make_image([random_layer(f"bx-{a}", 100)], arch=a) for a in arches]
    return index(images, attestations=[attestation(i) for i in images])


def observed(art, target_digest=None, configs=frozenset()) -> Observed:  # type: ignore[no-untyped-def]
    children = {i.manifest.digest: as_manifest(i.manifest) for i in (*art.images, *art.extras)}
    return Observed(as_manifest(art.top), target_digest, children, target_configs=configs)


def test_attestation_manifests_are_not_platforms_but_travel_with_the_whole_index():
    art = buildx("amd64", "arm64")
    top = as_manifest(art.top)
    assert [str(d.platform) for d in platform_children(top)] == ["linux/amd64", "linux/arm64"]
    assert [d.attestation_of for d in attestations(top)] == [i.manifest.digest for i in art.images]
    whole = choose(top, ())
    assert whole.digest == art.digest and len(whole.parts) == 4 and whole.platforms == ("linux/amd64", "linux/arm64")


def test_one_platform_is_its_manifest_alone_and_says_its_attestation_is_left_out():
    art = buildx("amd64", "arm64")
    sel = choose(as_manifest(art.top), (ARM,))
    assert sel.index is None and sel.digest == art.images[1].manifest.digest
    assert sel.left_out and "attestation manifest of linux/arm64" in sel.left_out[0]
    assert subjects_for(sel, art.digest) == [art.images[1].manifest.digest]  # its own signature, not the index's


def test_several_platforms_keep_the_attestations_of_the_kept_ones_only():
    art = buildx("amd64", "arm64", "s390x")
    sel = choose(as_manifest(art.top), (AMD, S390))
    assert sel.index is not None
    kept = json.loads(sel.index.data)["manifests"]
    described = {m["annotations"]["vnd.docker.reference.digest"] for m in kept if "annotations" in m}
    assert described == {art.images[0].manifest.digest, art.images[2].manifest.digest}
    assert len(kept) == 4 and not sel.left_out
    assert art.digest not in subjects_for(sel, art.digest)  # a filtered index is new: nobody signed it


def test_a_single_platform_buildx_index_is_whole_for_skopeo_and_one_manifest_for_the_docker_engine():
    art = buildx("amd64")
    top = as_manifest(art.top)
    assert choose(top, (AMD,)).digest == art.digest  # every platform asked for: the index, byte for byte
    alone = choose(top, (AMD,), alone=True)
    assert alone.index is None and alone.digest == art.images[0].manifest.digest


def test_the_docker_engine_plans_one_copy_to_the_tag_even_for_a_far_target():
    art = buildx("amd64")
    (it,) = [item("workflow-controller")]
    plan = build_plan([it], {it: observed(art)}, (AMD,), exact=False, recognise=same_config)
    (action,) = plan.actions
    assert action.kind == "copy" and action.selection is not None and action.selection.index is None
    (task,) = tasks_for(action, split=True)  # far: an index would be split into copies by digest
    assert task.dst == it.dst and task.dst.tag and not task.dst.digest
    left = docker_left_out(observed(art), action)
    assert any("1 attestation manifest" in line and "Docker daemon" in line for line in left)


def test_a_docker_rerun_recognises_its_copy_by_the_platform_config_not_the_attestation_config():
    art = buildx("amd64")
    it = item("workflow-controller")
    config = json.loads(art.images[0].manifest.data)["config"]["digest"]
    pushed = "sha256:" + "e" * 64
    (action,) = build_plan([it], {it: observed(art, pushed, frozenset({config}))}, (AMD,), exact=False,
                           recognise=same_config).actions  # fmt: skip
    assert action.kind == "skip" and action.digest == pushed and "same config" in action.reason


def test_foreign_layers_are_kept_as_references_and_never_moved():
    foreign = random_layer("win-base", 300, urls=MCR)
    assert foreign.blob.media_type == DOCKER_FOREIGN
    win = make_image([foreign, random_layer("win-app", 100, docker=True)], os="windows", os_version="10.0.17763.1",
                     docker=True)  # fmt: skip
    manifest = as_manifest(win.manifest)
    assert [d.digest for d in manifest.foreign_layers()] == [foreign.blob.digest]
    assert foreign.blob.digest not in {d.digest for d in manifest.stored_blobs()}
    (part,) = parts_of(manifest, choose(manifest, ()), {})
    assert foreign.blob.digest not in part.blobs and part.config == manifest.config().digest


def test_the_zstd_stand_in_is_real_zstd(tmp_path: Path):
    require("zstd")
    data = random_layer("z", 300_000).blob.data  # larger than one 128 KiB block
    (tmp_path / "layer.zst").write_bytes(zstd_frame(data))
    out = subprocess.run(["zstd", "-d", "-c", str(tmp_path / "layer.zst")], capture_output=True, check=True).stdout
    assert out == data


def test_the_cache_returns_only_bytes_that_hash_to_their_name(tmp_path: Path):
    cache = ManifestCache(tmp_path)
    art = buildx("amd64")
    cache.put(art.digest, art.top.data)
    cache.put(art.digest, b"not these bytes")  # refused: they do not hash to the name
    assert cache.get(art.digest) == art.top.data
    path = tmp_path / "blobs" / "sha256" / art.digest.split(":", 1)[1]
    path.write_bytes(art.top.data[:-1] + b" ")  # damaged on disk
    assert cache.get(art.digest) is None and not path.exists()


def test_the_cache_lives_where_xdg_says():
    assert cache_folder({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/chaosmirror")
    assert cache_folder({"HOME": "/h"}) == Path("/h/.cache/chaosmirror")
    assert cache_folder({"CHAOSMIRROR_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")


def test_attachment_records_are_checked_when_read():
    subject = "sha256:" + "a" * 64
    sig = Attachment("sig", subject, "sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json", 300,
                     cosign_tag(subject, "sig"))  # fmt: skip
    assert sig.tag == "sha256-" + "a" * 64 + ".sig" and Attachment.from_json(sig.to_json()) == sig
    with pytest.raises(ValueError, match="not where"):
        Attachment.from_json({**sig.to_json(), "tag": "latest"})
    with pytest.raises(ValueError, match="unknown kind"):
        Attachment.from_json({**sig.to_json(), "kind": "malware"})
    listing = Attachment("referrers", subject, sig.digest, tag=fallback_tag(subject))
    assert listing.at(ImageRef.parse("registry.example.com/harness/x:1")).tag == "sha256-" + "a" * 64


def test_the_fallback_tag_index_lists_each_referrer_with_its_artifact_type():
    art = buildx("amd64")
    ref = referrer(art.top)
    listing = Manifest.from_bytes(referrers_index([ref]).data)
    (desc,) = listing.children()
    assert desc.digest == ref.digest and desc.artifact_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert Manifest.from_bytes(ref.artifact.top.data).subject == art.digest
