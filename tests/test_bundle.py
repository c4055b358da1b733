"""The bundle format's pure parts: names that may come out of a tar, bundle.json, SHA256SUMS."""

from __future__ import annotations

import pytest

from chaosmirror.bundle import OCI, BundleImage, BundleInfo, _safe_name, parse_sums
from chaosmirror.errors import BundleError

D = "sha256:" + "b" * 64


@pytest.mark.parametrize("name", ["bundle.json", "SHA256SUMS", "oci-layout", "index.json", "blobs", "blobs/sha256",
                                  "blobs/sha256/" + "a" * 64, "chaos-ddcr_1.47.0_linux-amd64.tar"])  # fmt: skip
def test_names_a_bundle_holds(name):
    assert _safe_name(name) is None


BAD = ["/etc/passwd", "../x", "blobs/../../x", "blobs/sha256/" + "A" * 64, "blobs/sha256/abc", "a\\b", "",
       "blobs//sha256", "./index.json", "x.tar/../y"]  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_names_that_are_refused(name):
    assert _safe_name(name) is not None


def test_bundle_info_round_trips_including_a_delta():
    image = BundleImage("docker.io/harness/chaos-ddcr:1.47.0", "chaos-ddcr:1.47.0", D, ("linux/amd64",), 10,
                        ("ddcr/ddcr",), D)  # fmt: skip
    info = BundleInfo(OCI, "1.47.0", (image,), 1, "2026-01-01T00:00:00Z", since="1.46.0", unchanged=(image,))
    assert BundleInfo.from_json(info.to_json(), "x") == info
    plain = BundleInfo(OCI, "1.47.0", (image,))
    assert b'"delta": null' in plain.to_json()
    assert BundleInfo.from_json(plain.to_json(), "x") == plain


def test_newer_formats_and_bad_digests_are_refused():
    with pytest.raises(BundleError, match="format 2 is not supported"):
        BundleInfo.from_json(b'{"format": 2}', "x.tar")
    bad = BundleInfo(OCI, "1.47.0", (BundleImage("a", "a:1", D, (), 1),)).to_json().replace(D.encode(), b"sha256:../x")
    with pytest.raises(BundleError, match="malformed"):
        BundleInfo.from_json(bad, "x.tar")


def test_sha256sums_lines_must_be_well_formed():
    assert parse_sums("b" * 64 + "  index.json\n", "x") == {"index.json": "b" * 64}
    with pytest.raises(BundleError, match="line 1"):
        parse_sums("nonsense\n", "x")
