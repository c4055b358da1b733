"""Every image shape, mirrored with skopeo between real registries on loopback.

The rig's 1.47.0 stand-ins hold a buildx index with attestations, a single-platform buildx index, a
Docker manifest list, a Docker v2 manifest, zstd and uncompressed layers, cosign .sig/.att/.sbom
tags and an OCI 1.1 referrer behind its fallback tag (lab/standin.py). Digests are checked in the
target; requests are counted in the source registry's access log.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.hub import RegistryFront
from lab.images import (
    MT_INDEX,
    attestation,
    cosign,
    fallback_tag,
    foreign_layer,
    index,
    make_image,
    random_layer,
    referrer,
    referrers_index,
    single,
)
from lab.registry import Client, RegistryServer, push
from lab.rig import HUB_FOREIGN_URLS
from lab.standin import push_attached
from tests.conftest import source_digests, write_manifest

pytestmark = pytest.mark.registry


def manifest_gets(server: RegistryServer, since: int) -> list[str]:
    return [r.path for r in server.requests(since) if r.method == "GET" and "/manifests/" in r.path]


def expected_reads(rig, release: str = "1.47.0") -> Counter[str]:  # type: ignore[no-untyped-def]
    """One GET by digest of every manifest a copy of `release` moves: each image's manifests, and
    each signature, referrer and fallback index next to them."""
    wanted = set(source_digests(rig, release))
    out: Counter[str] = Counter()
    for (repo, tag), art in rig.artifacts.items():
        if f"{repo.split('/')[-1]}:{tag}" not in wanted:
            continue
        for manifest in art.manifests():
            out[f"/v2/{repo}/manifests/{manifest.digest}"] += 1
        found = rig.attached.get((repo, tag), [])
        for extra in found:
            out[f"/v2/{repo}/manifests/{extra.digest}"] += 1
        for subject in {a.subject for a in found if a.kind == "referrer"}:
            listing = referrers_index([a for a in found if a.kind == "referrer" and a.subject == subject])
            out[f"/v2/{repo}/manifests/{listing.digest}"] += 1
    return out


def check_attached(rig, client: Client, account: str) -> int:  # type: ignore[no-untyped-def]
    """Every signature, SBOM, referrer and fallback tag of the stand-ins is in the target, same digest."""
    count = 0
    for (repo, _), found in rig.attached.items():
        name = f"{account}/{repo.split('/')[-1]}"
        for extra in found:
            where = extra.tag or extra.digest
            assert client.digest(name, where) == extra.digest, (name, extra.kind, where)
            count += 1
        for subject in {a.subject for a in found if a.kind == "referrer"}:
            listing = referrers_index([a for a in found if a.kind == "referrer" and a.subject == subject])
            assert client.digest(name, fallback_tag(subject)) == listing.digest
            count += 1
    return count


def test_every_shape_lands_digest_exact_with_its_signatures_and_each_manifest_is_read_once(
    rig, chaosmirror, account, target_client
):
    since = len(rig.source.requests())
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account)
    assert run.code == 0, run.output
    for name_tag, digest in source_digests(rig, "1.47.0").items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest, name_tag
    assert check_attached(rig, target_client, account) == 8
    cold = manifest_gets(rig.source, since)
    assert Counter(cold) == expected_reads(rig)  # cold: every manifest copied, each GET once, by digest
    exporter = next(e for e in run.report["images"] if e["source"].endswith("chaos-exporter:1.47.0"))
    kinds = sorted(s["kind"] for s in exporter["signatures"])
    assert kinds == ["att", "referrer", "referrers", "sig", "sig", "sig"] and exporter["signatures_copied"] == 6
    assert "8 next to 3 images (8 written by this run)" in run.output

    since = len(rig.source.requests())
    again = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account)
    assert again.code == 0 and {e["status"] for e in again.report["images"]} == {"skipped"}
    assert manifest_gets(rig.source, since) == []  # a rerun: HEADs and the local cache, no pull at all
    assert sum(e.get("signatures_copied", 0) for e in again.report["images"]) == 0
    assert "8 next to 3 images (0 written by this run)" in again.output
    # Signatures are found from one tag list per repository, then a HEAD of each tag that is there,
    # not four HEADs per manifest (index, platforms, attestations and what is attached to them).
    sent = rig.source.requests(since)
    lists = Counter(r.path.split("/tags/list")[0] for r in sent if "/tags/list" in r.path)
    assert lists and set(lists.values()) == {1}, lists
    assert len(lists) == len(source_digests(rig, "1.47.0"))
    looked_up = [r.path.rsplit("/", 1)[1] for r in sent if r.method == "HEAD" and "/manifests/sha256-" in r.path]
    there = [a.tag for found in rig.attached.values() for a in found if a.tag]
    there += [fallback_tag(subject) for found in rig.attached.values()
              for subject in {a.subject for a in found if a.kind == "referrer"}]  # fmt: skip
    assert sorted(looked_up) == sorted(there)


def test_no_signatures_leaves_them_out(rig, chaosmirror, account, target_client):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "dedicated", "--no-signatures")
    assert run.code == 0, run.output
    art = rig.artifacts[("harness/chaos-exporter", "1.47.0")]
    assert target_client.digest(f"{account}/chaos-exporter", "1.47.0") == art.digest
    for extra in rig.attached[("harness/chaos-exporter", "1.47.0")]:
        assert target_client.digest(f"{account}/chaos-exporter", extra.tag or extra.digest) is None
    assert all("signatures" not in e for e in run.report["images"])


def test_one_platform_keeps_that_platforms_signature_and_names_the_attestation_it_leaves(
    rig, chaosmirror, account, target_client
):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "dedicated",
                      "--platform", "linux/arm64")  # fmt: skip
    art = rig.artifacts[("harness/chaos-exporter", "1.47.0")]
    arm = art.images[1].manifest.digest
    assert target_client.digest(f"{account}/chaos-exporter", "1.47.0") == arm
    sig = cosign(arm, "sig", reference="index.docker.io/harness/chaos-exporter")
    assert target_client.digest(f"{account}/chaos-exporter", sig.tag) == sig.digest  # a verifier finds it
    assert target_client.digest(f"{account}/chaos-exporter", f"sha256-{art.digest[7:]}.sig") is None
    entry = next(e for e in run.report["images"] if e["source"].endswith("chaos-exporter:1.47.0"))
    assert entry["digest"] == arm and any("attestation manifest of linux/arm64" in x for x in entry["left_out"])
    assert f"left out of {rig.target.host}/{account}/chaos-exporter:1.47.0: 1 attestation manifest" in run.output


def test_several_platforms_keep_the_attestations_of_the_platforms_kept(tmp_path, rig, chaosmirror, account,
                                                                        target_client):  # fmt: skip
    images = [make_image([random_layer(f"bx3-{a}", 2048)], arch=a) for a in ("amd64", "arm64", "s390x")]
    art = index(images, attestations=[attestation(i) for i in images])
    push(rig.source.host, "harness/buildx-three", "1.0.0", art)
    manifests = write_manifest(tmp_path / "m", "9.1.0", [("experiment", "x", "docker.io/harness/buildx-three:1.0.0")])
    run = chaosmirror("mirror", "9.1.0", "--manifests", str(manifests), *rig.args(), "--account", account,
                      "--platform", "linux/amd64", "--platform", "linux/s390x")  # fmt: skip
    assert run.code == 0, run.output
    held = target_client.get_manifest(f"{account}/buildx-three", "1.0.0")
    entries = held["manifests"]
    assert [m["platform"]["architecture"] for m in entries] == ["amd64", "s390x", "unknown", "unknown"]
    described = [m["annotations"]["vnd.docker.reference.digest"] for m in entries[2:]]
    assert described == [images[0].manifest.digest, images[2].manifest.digest]
    for m in entries:
        assert target_client.digest(f"{account}/buildx-three", m["digest"]) == m["digest"]


def test_foreign_layers_copy_exact_where_the_target_allows_them_and_fail_with_the_reason_elsewhere(
    tmp_path, rig, chaosmirror, account, target_client
):
    linux = make_image([random_layer("mixed-linux", 2048, docker=True)], docker=True)
    windows = make_image([foreign_layer("win-base", 4096), random_layer("win-app", 1024, docker=True)], os="windows",
                         os_version="10.0.17763.5122", docker=True)  # fmt: skip
    art = index([linux, windows], docker=True)
    push(rig.source.host, "harness/windows-probe", "1.0.0", art)  # the source accepts Microsoft's URLs, as Docker Hub
    manifests = write_manifest(tmp_path / "m", "9.2.0", [("experiment", "w", "docker.io/harness/windows-probe:1.0.0")])
    base = ["mirror", "9.2.0", "--manifests", str(manifests)]
    refused = chaosmirror(*base, *rig.args(), "--account", account)
    assert refused.code == 1
    (entry,) = refused.report["images"]
    assert "1 foreign layer" in entry["error"] and "validation.manifests.urls.allow" in entry["error"]
    assert "--platform" in entry["error"]
    assert target_client.digest(f"{account}/windows-probe", "1.0.0") is None  # never an image without its layer
    only_linux = chaosmirror(*base, *rig.args(), "--account", account, "--platform", "linux/amd64")
    assert only_linux.code == 0 and target_client.digest(f"{account}/windows-probe", "1.0.0") == linux.manifest.digest
    with RegistryServer(tmp_path / "allowing", foreign_urls=HUB_FOREIGN_URLS) as allowing:
        run = chaosmirror(*base, "--to", allowing.host, "--account", account,
                          "--source-mirror", f"docker.io={rig.source.host}")  # fmt: skip
        assert run.code == 0, run.output
        client = Client(allowing.host)
        try:
            assert client.digest(f"{account}/windows-probe", "1.0.0") == art.digest
            assert client.digest(f"{account}/windows-probe", windows.manifest.digest) == windows.manifest.digest
            base_layer = json.loads(windows.manifest.data)["layers"][0]["digest"]
            assert not client.has_blob(f"{account}/windows-probe", base_layer)  # referenced by URL, never stored
        finally:
            client.close()


def test_a_pull_limited_source_is_counted_and_a_rerun_uses_no_pulls(rig, chaosmirror, account):
    with RegistryFront(rig.source.host, remaining=100) as hub:
        args = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert), "--source-mirror", f"docker.io={hub.host}"]
        run = chaosmirror("mirror", "1.47.0", *args, "--account", account)
        assert run.code == 0, run.output
        assert hub.remaining == 100 - sum(expected_reads(rig).values())  # one pull per manifest copied
        assert "more pulls" not in run.output
        again = chaosmirror("mirror", "1.47.0", *args, "--account", account)
        assert again.code == 0 and hub.remaining == 100 - sum(expected_reads(rig).values())


def test_a_run_that_needs_more_pulls_than_remain_says_so_before_reading(rig, chaosmirror, account):
    with RegistryFront(rig.source.host, remaining=7) as hub:
        args = ["--to", rig.target.host, "--ca-cert", str(rig.tls.ca_cert), "--source-mirror", f"docker.io={hub.host}"]
        run = chaosmirror("plan", "1.47.0", *args, "--account", account, "--retries", "0")
        assert f"warning: {hub.host} allows 7 more pulls of 100" in run.output
        assert "needs at least 19 manifest reads" in run.output and "CHAOSMIRROR_SRC_USERNAME" in run.output
        assert any("allows 7 more pulls" in note for note in run.report["notes"])
        failed = [e for e in run.report["images"] if e["status"] == "failed"]
        assert failed and all("rate limiting" in e["error"] for e in failed)  # past the limit: HTTP 429, alone


def test_referrers_travel_through_the_referrers_api_and_a_target_without_it_gets_the_fallback_tag(
    tmp_path, rig, chaosmirror, account
):
    art = single(make_image([random_layer("with-referrer", 2048)]))
    signed = referrer(art.top, seed="api")
    with RegistryServer(tmp_path / "src") as backend, RegistryFront(backend.host, referrers=True) as source, \
            RegistryServer(tmp_path / "dst") as plain, RegistryServer(tmp_path / "dst2") as inner, \
            RegistryFront(inner.host, referrers=True) as modern:  # fmt: skip
        push(source.host, "harness/signed", "1.0.0", art)
        push(source.host, "harness/signed", signed.digest, signed.artifact)  # by digest; the front lists it
        assert Client(backend.host).digest("harness/signed", fallback_tag(art.digest)) is None  # no fallback tag
        manifests = write_manifest(tmp_path / "m", "9.3.0", [("experiment", "s", "docker.io/harness/signed:1.0.0")])
        for target in (plain, modern):
            run = chaosmirror("mirror", "9.3.0", "--manifests", str(manifests), "--to", target.host, "--account",
                              account, "--source-mirror", f"docker.io={source.host}")  # fmt: skip
            assert run.code == 0, run.output
            (entry,) = run.report["images"]
            assert [s["digest"] for s in entry["signatures"] if s["kind"] == "referrer"] == [signed.digest]
        old = Client(plain.host)
        assert old.digest(f"{account}/signed", signed.digest) == signed.digest
        listing = old.get_manifest(f"{account}/signed", fallback_tag(art.digest))  # written for a verifier to find
        assert [m["digest"] for m in listing["manifests"]] == [signed.digest]
        new = Client(modern.host)
        assert new.digest(f"{account}/signed", signed.digest) == signed.digest
        assert new.digest(f"{account}/signed", fallback_tag(art.digest)) is None  # the API lists it there
        assert [d["digest"] for d in modern.listed[(f"{account}/signed", art.digest)].values()] == [signed.digest]
        old.close()
        new.close()


def test_a_signature_added_after_a_mirror_is_carried_by_the_next_run(tmp_path, rig, chaosmirror, account,
                                                                      target_client):  # fmt: skip
    art = single(make_image([random_layer("signed-later", 2048)]))
    push(rig.source.host, "harness/signed-later", "1.0.0", art)
    manifests = write_manifest(tmp_path / "m", "9.4.0", [("experiment", "s", "docker.io/harness/signed-later:1.0.0")])
    base = ["mirror", "9.4.0", "--manifests", str(manifests), *rig.args(), "--account", account]
    assert chaosmirror(*base).code == 0
    sig = cosign(art.digest, "sig", reference="index.docker.io/harness/signed-later", seed="later")
    push_attached(rig.source.host, "harness/signed-later", [sig])
    run = chaosmirror(*base)
    assert run.code == 0 and run.report["images"][0]["status"] == "skipped"
    assert target_client.digest(f"{account}/signed-later", sig.tag) == sig.digest
    assert run.report["images"][0]["signatures_copied"] == 1


def test_the_index_of_a_buildx_image_holds_its_attestations_in_the_target(rig, chaosmirror, account, target_client):
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "dedicated")
    assert run.code == 0, run.output
    held = target_client.get_manifest(f"{account}/chaos-workflow-controller", "v3.4.16")  # a one-platform buildx
    assert held["mediaType"] == MT_INDEX and [m["platform"]["os"] for m in held["manifests"]] == ["linux", "unknown"]
    for child in held["manifests"]:
        assert target_client.digest(f"{account}/chaos-workflow-controller", child["digest"]) == child["digest"]


def test_a_tag_list_is_read_whole_from_a_real_registry(rig, monkeypatch):
    """distribution 2.8 answers every tag at once whatever `n` asks (it paginates from 3.0 on);
    following `Link` pages is checked in test_transport."""
    from pathlib import Path

    from chaosmirror import registry as registry_module
    from chaosmirror.ref import ImageRef
    from chaosmirror.registry import Registries

    art = single(make_image([random_layer("many-tags", 512)]))
    tags = [f"v{i}" for i in range(7)]
    for tag in tags:
        push(rig.source.host, "harness/many-tags", tag, art)
    monkeypatch.setattr(registry_module, "TAG_PAGE", 2)
    registries = Registries(ca_file=Path(rig.tls.ca_cert), env=rig.env)
    try:
        since = len(rig.source.requests())
        ref = ImageRef(rig.source.host, "harness/many-tags", "v0")
        assert registries.for_ref(ref, "src").tags(ref) == set(tags)
        assert [r.path for r in rig.source.requests(since) if "/tags/list" in r.path] == [
            "/v2/harness/many-tags/tags/list?n=2"
        ]
        missing = ImageRef(rig.source.host, "harness/no-such-repository", "v0")
        assert registries.for_ref(missing, "src").tags(missing) is None
    finally:
        registries.close()


def test_signatures_travel_as_each_image_lands_not_after_the_last_copy(rig, chaosmirror, account):
    """One copy at a time (--jobs 1): the first signature (here log-watcher's SBOM) is in the target
    before the last image's manifest, in the order of the target's access log."""
    since = len(rig.target.requests())
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--jobs", "1")
    assert run.code == 0, run.output
    puts = [r.path for r in rig.target.requests(since) if r.method == "PUT" and "/manifests/" in r.path]
    signature = next(i for i, p in enumerate(puts) if "/manifests/sha256-" in p)  # a .sig, .att or .sbom
    tags = [f"/manifests/{e['destination'].rsplit(':', 1)[1]}" for e in run.report["images"]]
    last_image = max(i for i, p in enumerate(puts) if any(p.endswith(t) for t in tags))
    assert signature < last_image, "\n".join(puts)
