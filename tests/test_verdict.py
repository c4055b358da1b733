"""`verdict.judge`, pure: from what a target showed (in memory here) to what is missing or wrong."""

from __future__ import annotations

import ast

from chaosmirror.manifest import Manifest
from chaosmirror.ref import ImageRef
from chaosmirror.verdict import UNSAID, BlobSeen, Check, ExtraTag, Seen, judge, needed
from lab.images import Artifact, index, make_image, random_layer, single
from tests.conftest import REPO_ROOT

DST = ImageRef.parse("reg.example/harness/chaos-ddcr:1.47.0")


def two_arch() -> Artifact:
    return index([make_image([random_layer(f"v-{a}", 100)], arch=a) for a in ("amd64", "arm64")])


def seen_of(art: Artifact, *, without: str = "") -> Seen:
    manifests = {b.digest: (None if b.digest == without else Manifest.from_bytes(b.data)) for b in art.manifests()}
    return Seen(art.digest, manifests)


def held(art: Artifact, *, repo: str = DST.repository, drop: str = "", size: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    return {(repo, b.digest): BlobSeen(None if b.digest == drop else (size or {}).get(b.digest, len(b.data)))
            for b in art.all_blobs()}  # fmt: skip


def test_a_whole_index_is_ok_and_counts_every_manifest_and_blob():
    art = two_arch()
    verdict = judge(Check("src", DST, expected=art.digest), seen_of(art), held(art))
    assert verdict.status == "ok" and verdict.problems == ()
    assert (verdict.manifests, verdict.blobs) == (3, 4)  # the index, 2 platforms; 2 configs, 2 layers


def test_a_missing_blob_is_named_with_its_kind_platform_and_size():
    art = two_arch()
    arm = art.images[1]
    layer = arm.blobs[1]
    verdict = judge(Check("src", DST), seen_of(art), held(art, drop=layer.digest))
    assert verdict.status == "missing"
    (problem,) = verdict.problems
    assert (problem.kind, problem.digest, problem.size, problem.what) == (
        "missing-blob", layer.digest, len(layer.data), "layer of linux/arm64")  # fmt: skip
    assert str(problem) == f"blob {layer.digest} (layer of linux/arm64), {len(layer.data)} bytes, is missing"


def test_a_platform_manifest_the_index_lists_but_the_target_lacks():
    art = two_arch()
    child = art.images[0].manifest
    verdict = judge(Check("src", DST), seen_of(art, without=child.digest), held(art))
    assert [(p.kind, p.digest, p.size, p.what) for p in verdict.problems] == [
        ("missing-manifest", child.digest, len(child.data), "linux/amd64")
    ]
    assert verdict.blobs == 2  # the blobs of the manifest it could not read are not asked for


def test_no_tag_wrong_digest_and_wrong_size():
    art = single(make_image([random_layer("v-one", 100)]))
    gone = judge(Check("src", DST, expected=art.digest), Seen(), {})
    assert gone.status == "missing" and [p.kind for p in gone.problems] == ["missing-tag"]
    assert gone.problems[0].digest == art.digest
    other = "sha256:" + "e" * 64
    wrong = judge(Check("src", DST, expected=other), seen_of(art), held(art))
    assert wrong.status == "wrong" and str(wrong.problems[0]) == f"{DST} holds {art.digest}, not {other}"
    layer = art.images[0].blobs[1]
    short = judge(Check("src", DST), seen_of(art), held(art, size={layer.digest: 7}))
    assert short.status == "wrong" and short.problems[0].kind == "wrong-size"
    unsaid = judge(Check("src", DST), seen_of(art), held(art, size={layer.digest: UNSAID}))
    assert unsaid.status == "ok"  # a registry that does not say a size is not accused of a wrong one


def test_missing_wins_over_wrong_and_an_unreadable_target_is_an_error():
    art = single(make_image([random_layer("v-two", 100)]))
    both = judge(
        Check("src", DST, expected="sha256:" + "f" * 64), seen_of(art), held(art, drop=art.images[0].blobs[1].digest)
    )
    assert both.status == "missing" and {p.kind for p in both.problems} == {"wrong-digest", "missing-blob"}
    broken = judge(Check("src", DST), Seen(error="HTTP 500"), {})
    assert broken.status == "error" and "HTTP 500" in str(broken.problems[0])


def test_an_extra_tag_such_as_a_signature_is_checked_like_the_image():
    art = single(make_image([random_layer("v-three", 100)]))
    signature = single(make_image([random_layer("v-sig", 50)]))
    tag = "sha256-" + art.digest.split(":")[1] + ".sig"
    check = Check("src", DST, expected=art.digest, extra_tags=(ExtraTag(tag, "signature", signature.digest),))
    blobs = {**held(art), **held(signature)}
    assert judge(check, seen_of(art), blobs, {tag: seen_of(signature)}).status == "ok"
    absent = judge(check, seen_of(art), blobs, {tag: Seen()})
    assert absent.status == "missing"
    assert (
        str(absent.problems[0])
        == f"tag {DST.registry}/{DST.repository}:{tag} is missing (signature); it should hold {signature.digest}"
    )
    layer = signature.images[0].blobs[1]
    torn = judge(check, seen_of(art), {**held(art), **held(signature, drop=layer.digest)}, {tag: seen_of(signature)})
    assert [(p.kind, p.what) for p in torn.problems] == [("missing-blob", "signature layer")]


def test_needed_lists_each_blob_once_across_platforms():
    shared = random_layer("v-shared", 100)
    art = index([make_image([shared], arch=a) for a in ("amd64", "arm64")])
    absent, blobs = needed(seen_of(art))
    assert absent == [] and sorted(b.digest for b in blobs) == sorted(b.digest for b in art.all_blobs())


def test_verdict_is_pure():
    tree = ast.parse((REPO_ROOT / "chaosmirror" / "verdict.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {"subprocess", "socket", "http", "urllib", "click", "chaosmirror.registry", "os"} & names


def test_extra_tags_a_source_of_digests_knows_reach_the_checks():
    from chaosmirror.plan import Item
    from chaosmirror.verify import Expected, checks_for

    src = ImageRef.parse("harness/chaos-ddcr:1.47.0")
    signature = ExtraTag("sha256-" + "a" * 64 + ".sig", "signature")
    expected = Expected({DST: "sha256:" + "a" * 64}, "report", extra_tags={DST: (signature,)})
    (check,) = checks_for([Item(src, src, DST, ("ddcr/ddcr",))], {src: ("1.47.0",)}, expected)
    assert check.extra_tags == (signature,) and check.expected_from == "report" and check.releases == ("1.47.0",)
