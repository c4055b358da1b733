"""The bundle format's pure parts: names that may come out of a tar, bundle.json, SHA256SUMS; the fan-out."""

from __future__ import annotations

import io
import threading

import pytest

from chaosmirror.bundle import (
    DOCKER_ARCHIVE,
    OCI,
    SPLIT_FORMAT,
    BundleImage,
    BundleInfo,
    PartEntry,
    parse_sums,
    safe_name,
)
from chaosmirror.errors import BundleError
from chaosmirror.fanout import Fanout

D = "sha256:" + "b" * 64


@pytest.mark.parametrize("name", ["bundle.json", "SHA256SUMS", "oci-layout", "index.json", "blobs", "blobs/sha256",
                                  "blobs/sha256/" + "a" * 64, "chaos-ddcr_1.47.0_linux-amd64.tar"])  # fmt: skip
def test_names_a_bundle_holds(name):
    assert safe_name(name) is None


BAD = ["/etc/passwd", "../x", "blobs/../../x", "blobs/sha256/" + "A" * 64, "blobs/sha256/abc", "a\\b", "",
       "blobs//sha256", "./index.json", "x.tar/../y"]  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_names_that_are_refused(name):
    assert safe_name(name) is not None


def test_bundle_info_round_trips_including_a_delta():
    image = BundleImage("docker.io/harness/chaos-ddcr:1.47.0", "chaos-ddcr:1.47.0", D, ("linux/amd64",), 10,
                        ("ddcr/ddcr",), D)  # fmt: skip
    info = BundleInfo(OCI, "1.47.0", (image,), 1, "2026-01-01T00:00:00Z", since="1.46.0", unchanged=(image,))
    assert BundleInfo.from_json(info.to_json(), "x") == info
    plain = BundleInfo(OCI, "1.47.0", (image,))
    assert b'"delta": null' in plain.to_json()
    assert BundleInfo.from_json(plain.to_json(), "x") == plain


def test_newer_formats_and_bad_digests_are_refused():
    with pytest.raises(BundleError, match="format 3 is not supported"):
        BundleInfo.from_json(b'{"format": 3}', "x.tar")
    bad = BundleInfo(OCI, "1.47.0", (BundleImage("a", "a:1", D, (), 1),)).to_json().replace(D.encode(), b"sha256:../x")
    with pytest.raises(BundleError, match="malformed"):
        BundleInfo.from_json(bad, "x.tar")


def test_sha256sums_lines_must_be_well_formed():
    assert parse_sums("b" * 64 + "  index.json\n", "x") == {"index.json": "b" * 64}
    with pytest.raises(BundleError, match="line 1"):
        parse_sums("nonsense\n", "x")


def test_a_split_bundle_info_round_trips_and_its_names_are_checked():
    image = BundleImage("docker.io/harness/chaos-ddcr:1.47.0", "chaos-ddcr:1.47.0", D, (), 10)
    parts = (
        PartEntry("hce.tar.001", 10240, "", ("docker.io/harness/chaos-ddcr:1.47.0",)),
        PartEntry("hce.tar.002", 20480, "c" * 64),
    )
    info = BundleInfo(OCI, "1.47.0", (image,), format=SPLIT_FORMAT, id="d" * 64, parts=parts)
    assert BundleInfo.from_json(info.to_json(), "x") == info
    for bad, message in [
        (b'"hce.tar.002"', "part name '../hce.tar.002'"),
        (b'"' + b"c" * 64 + b'"', "malformed sha256"),
    ]:
        doc = info.to_json().replace(bad, b'"../hce.tar.002"' if b"hce" in bad else b'"cafe"')
        with pytest.raises(BundleError, match=message):
            BundleInfo.from_json(doc, "x")


def test_a_docker_archive_name_that_climbs_out_is_refused_before_it_becomes_a_path():
    image = BundleImage("docker.io/harness/chaos-ddcr:1.47.0", "chaos-ddcr:1.47.0", D, (), 10,
                        archives=(("linux/amd64", "../../etc/evil.tar"),))  # fmt: skip
    with pytest.raises(BundleError, match=r"archive name '../../etc/evil.tar' .* is not a plain NAME.tar"):
        BundleInfo.from_json(BundleInfo(DOCKER_ARCHIVE, "1.47.0", (image,)).to_json(), "bundle")


def test_a_fanout_hands_every_reader_the_same_bytes_and_a_dropped_one_holds_nobody_up():
    data = bytes(range(256)) * 40_000
    fan = Fanout(io.BytesIO(data), 3, chunk=64 * 1024, depth=2)
    got: dict[int, bytes] = {}

    def read_all(i: int) -> None:
        reader = fan.reader(i)
        got[i] = b"".join(iter(lambda: reader.read(10_000), b""))

    def give_up(i: int) -> None:
        fan.reader(i).read(100)
        fan.drop(i)

    threads = [threading.Thread(target=read_all, args=(0,)), threading.Thread(target=read_all, args=(1,)),
               threading.Thread(target=give_up, args=(2,))]  # fmt: skip
    for thread in threads:
        thread.start()
    fan.pump()
    for thread in threads:
        thread.join(timeout=30)
    assert got == {0: data, 1: data}
