"""The tar index reads headers only, refuses what a bundle never holds, and never decompresses."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
from pathlib import Path

import pytest

from chaosmirror.bundle import safe_name
from chaosmirror.errors import BundleError
from chaosmirror.tarindex import MemberReader, index_tar, read_member


def write(path: Path, files: dict[str, bytes], *, fmt: int = tarfile.USTAR_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_members_are_where_tarfile_put_them(tmp_path):
    files = {"bundle.json": b"{}", "blobs/sha256/" + "a" * 64: b"x" * 5000, "empty": b""}
    path = write(tmp_path / "b.tar", files)
    index = index_tar(path)
    with tarfile.open(path) as tar:
        expected = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    assert {m.name: (m.offset, m.size) for m in index.members} == expected
    for member in index.members:
        assert read_member(index, member, cap=10_000, what="file") == files[member.name]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_of_pax_and_gnu_tars_are_read(tmp_path, fmt):
    name = "d/" * 80 + "file"
    index = index_tar(write(tmp_path / "b.tar", {name: b"hello"}, fmt=fmt))
    assert [(m.name, m.size) for m in index.members] == [(name, 5)]


def test_a_large_extended_header_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path / "b.tar", {"x" * 5000: b"1"}, fmt=tarfile.GNU_FORMAT)  # a 5000-byte GNU long name
    with pytest.raises(BundleError, match="refusing an extended tar header of 5001 bytes"):
        index_tar(path)


def test_links_devices_and_repeated_names_are_refused(tmp_path):
    special = "device or special file"
    for kind, message in [(tarfile.SYMTYPE, "a link"), (tarfile.LNKTYPE, "a link"), (tarfile.CHRTYPE, special),
                          (tarfile.FIFOTYPE, special)]:  # fmt: skip
        path = tmp_path / f"{kind!r}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("x")
            info.type = kind
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        with pytest.raises(BundleError, match=message):
            index_tar(path)
    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w", format=tarfile.USTAR_FORMAT) as tar:
        for data in (b"one", b"two"):
            info = tarfile.TarInfo("index.json")
            info.size = 3
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="appears twice"):
        index_tar(twice)


def test_names_are_checked_before_anything_else(tmp_path):
    path = write(tmp_path / "b.tar", {"../escaped": b"x"})
    with pytest.raises(BundleError, match=re.escape("refusing entry '../escaped': a path that climbs out")):
        index_tar(path, check_name=safe_name)


def test_a_cut_tar_is_truncated_and_a_bad_header_is_not_a_tar(tmp_path):
    path = write(tmp_path / "b.tar", {"a": b"x" * 4000, "b": b"y" * 4000})
    whole = path.read_bytes()
    path.write_bytes(whole[:3000])
    with pytest.raises(BundleError, match="truncated"):
        index_tar(path)
    path.write_bytes(b"not a tar at all" * 64)
    with pytest.raises(BundleError, match="not a tar file"):
        index_tar(path)


@pytest.mark.parametrize(("packer", "kind", "hint"), [
    (gzip.compress, "gzip", "gunzip it first"),
    (lzma.compress, "xz", "unxz it first"),
    (bz2.compress, "bzip2", "bunzip2 it first"),
    (lambda data: b"\x28\xb5\x2f\xfd" + data, "zstd", "unzstd it first"),  # the zstd frame magic
])  # fmt: skip
def test_compressed_files_are_named_and_never_decompressed(tmp_path, packer, kind, hint):
    plain = write(tmp_path / "b.tar", {"bundle.json": b"{}"}).read_bytes()
    packed = tmp_path / "b.tar.packed"
    packed.write_bytes(packer(plain))
    with pytest.raises(BundleError, match=f"is a {kind} file: {hint}"):
        index_tar(packed)


def test_small_files_are_read_only_under_their_cap(tmp_path):
    index = index_tar(write(tmp_path / "b.tar", {"bundle.json": b"x" * 2000}))
    with pytest.raises(BundleError, match=re.escape("2000 bytes, more than the 1000 a bundle.json may have")):
        read_member(index, index.members[0], cap=1000, what="bundle.json")


def test_a_member_reader_gives_exactly_its_bytes_and_pads_a_cut_file_so_its_hash_fails(tmp_path):
    path = write(tmp_path / "b.tar", {"a": b"0123456789" * 300_000})
    member = index_tar(path).members[0]
    with MemberReader(path, member) as reader:
        chunks = iter(lambda: reader.read(1 << 20), b"")
        assert b"".join(chunks) == b"0123456789" * 300_000
        assert not reader.error
    with open(path, "r+b") as cut:
        cut.truncate(member.offset + 100)
    with MemberReader(path, member) as reader:
        data = b"".join(iter(lambda: reader.read(1 << 20), b""))
    assert len(data) == member.size and data[100:] == b"\0" * (member.size - 100)
    assert "truncated" in reader.error
