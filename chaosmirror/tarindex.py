"""A bounded reader of uncompressed tar files: where each member's bytes are, and a stream of them.

`index_tar` reads only the 512-byte headers, seeking over the data, so indexing a 40 GB bundle
reads a few hundred kB. Nothing here decompresses: a compressed file is recognised by its first
bytes and refused with the command that unpacks it. Extended headers (GNU long names, pax) are read
within small caps, and every member's data must lie inside the file. A member is then read with
`os.pread` from its offset, `CHUNK` bytes at a time, by `MemberReader`, which also hashes it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chaosmirror.errors import BundleError

BLOCK = 512
CHUNK = 1024 * 1024
MAX_MEMBERS = 200_000
MAX_LONG_NAME = 4096
MAX_PAX = 64 * 1024
COMPRESSED = [  # (magic, what it is, how to unpack it)
    (b"\x1f\x8b", "gzip", "gunzip it"),
    (b"\xfd7zXZ\x00", "xz", "unxz it"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd it"),
    (b"BZh", "bzip2", "bunzip2 it"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4 it"),
    (b"PK\x03\x04", "zip", "unzip it and give chaosmirror the .tar inside"),
]
_FILE_TYPES = (b"0", b"\0", b"7")
_LINK_TYPES = (b"1", b"2")
_SPECIAL_TYPES = (b"3", b"4", b"6")


@dataclass(frozen=True)
class Member:
    """One file or directory of a tar: its name and where its bytes are."""

    name: str
    offset: int  # of the data, from the start of the file
    size: int
    is_dir: bool = False


@dataclass(frozen=True)
class TarIndex:
    path: Path
    size: int  # of the whole file
    members: tuple[Member, ...]

    def files(self) -> dict[str, Member]:
        return {m.name: m for m in self.members if not m.is_dir}


def sniff(path: Path, head: bytes) -> None:
    """Refuse a compressed file by its first bytes, saying how to unpack it."""
    for magic, kind, how in COMPRESSED:
        if head.startswith(magic):
            raise BundleError(
                f"{path} is a {kind} file: {how} first (a bundle is a plain tar; its layers are already "
                "compressed, and chaosmirror never decompresses a bundle)"
            )


def _number(field: bytes, path: Path, where: int) -> int:
    """An octal tar number, or GNU base-256 (high bit set) for large sizes."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] & 0x40:
            raise BundleError(f"{path}: a tar header at byte {where} has a negative number")
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BundleError(f"{path} is not a tar file (a bad header at byte {where}); export it again") from None


def _checksum_ok(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip(b" \0")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    blanked = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)
    return want in (unsigned, signed)


def _pax(data: bytes, path: Path) -> dict[str, str]:
    """The records of a pax extended header: `LENGTH KEY=VALUE\\n` each."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BundleError(f"{path}: a malformed pax header") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise BundleError(f"{path}: a malformed pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode(errors="replace")] = value.decode(errors="replace")
        pos += length
    return out


def _pad(size: int) -> int:
    return -size % BLOCK


NameCheck = Callable[[str], "str | None"]


def index_tar(path: Path, *, check_name: NameCheck = lambda name: None, links: bool = False) -> TarIndex:
    """The members of the tar at `path`, from their headers alone. Raises BundleError for anything
    that is not a plain tar of files and directories (links are left out with `links`, refused
    otherwise), is cut short, or has a name `check_name` gives a reason to refuse."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        total = os.fstat(fd).st_size
        sniff(path, os.pread(fd, 8, 0))
        return TarIndex(path, total, tuple(_walk(fd, path, total, check_name, links)))
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _walk(fd: int, path: Path, total: int, check_name: NameCheck, links: bool) -> list[Member]:
    members: list[Member] = []
    seen: set[str] = set()
    pos = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = os.pread(fd, BLOCK, pos)
        if not header:
            return members  # no end-of-archive blocks: a cut at a member boundary; SHA256SUMS tells
        if len(header) < BLOCK:
            if pos == 0:
                raise BundleError(f"{path} is not a tar file (it is only {total} bytes)")
            raise BundleError(f"{path} is truncated (in a tar header at byte {pos}); export it again")
        if header == b"\0" * BLOCK:
            return members
        if not _checksum_ok(header):
            raise BundleError(f"{path} is not a tar file, or is damaged (a bad header at byte {pos}); export it again")
        kind = header[156:157]
        size = _number(header[124:136], path, pos)
        data = pos + BLOCK
        if data + size > total:
            raise BundleError(f"{path} is truncated (a member at byte {pos} runs past the end); export it again")
        if kind in (b"L", b"x", b"g", b"K"):
            cap = MAX_LONG_NAME if kind in (b"L", b"K") else MAX_PAX
            if size > cap:
                raise BundleError(f"{path}: refusing an extended tar header of {size} bytes (at most {cap})")
            body = os.pread(fd, size, data)
            if kind == b"L":
                long_name = body.split(b"\0", 1)[0].decode(errors="replace")
            elif kind == b"x":
                pax = _pax(body, path)
            pos = data + size + _pad(size)
            continue
        name = pax.get("path") or long_name or _ustar_name(header)
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise BundleError(f"{path}: a malformed pax size for {name!r}") from None
            if data + size > total:
                raise BundleError(f"{path} is truncated (in {name}); export it again")
        long_name, pax = None, {}
        reason = check_name(name.rstrip("/") if kind == b"5" else name)
        if reason:
            raise BundleError(f"{path}: refusing entry {name!r}: {reason}")
        if kind in _LINK_TYPES and links:
            pos = data + size + _pad(size)
            continue
        if kind in _LINK_TYPES:
            raise BundleError(f"{path}: refusing entry {name!r}: a link; bundles hold plain files only")
        if kind in _SPECIAL_TYPES:
            raise BundleError(
                f"{path}: refusing entry {name!r}: a device or special file; bundles hold plain files only"
            )
        if kind not in (*_FILE_TYPES, b"5"):
            raise BundleError(f"{path}: refusing entry {name!r}: an unknown tar entry type {kind!r}")
        is_dir = kind == b"5" or (kind in _FILE_TYPES and name.endswith("/") and size == 0)
        clean = name.rstrip("/") if is_dir else name
        if clean in seen:
            raise BundleError(f"{path}: refusing entry {name!r}: it appears twice")
        seen.add(clean)
        members.append(Member(clean, data, 0 if is_dir else size, is_dir))
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"{path}: more than {MAX_MEMBERS} entries; not a chaosmirror bundle")
        pos = data + size + _pad(size)


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix field; GNU ("ustar  ") uses it otherwise
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode(errors="replace")


def read_member(index: TarIndex, member: Member, *, cap: int, what: str) -> bytes:
    """The bytes of a small member, refused without reading when it is larger than `cap`."""
    if member.size > cap:
        raise BundleError(
            f"{index.path}: {member.name} is {member.size} bytes, more than the {cap} a {what} may have; "
            "this is not a bundle chaosmirror wrote"
        )
    with MemberReader(index.path, member) as reader:
        data = reader.read()
        if reader.error:
            raise BundleError(reader.error)
    return data


class MemberReader(io.RawIOBase):
    """Exactly the `size` bytes of one member, read from its offset and hashed on the way.

    A read error of the file (a scratched disc) or a file cut short does not raise into whoever
    is reading (an HTTP upload in progress): the rest is filled with zeros, `error` says what
    happened, and the hash then cannot match, so the upload is never committed."""

    def __init__(self, path: Path, member: Member) -> None:
        super().__init__()
        self.path = path
        self.member = member
        self.hasher = hashlib.sha256()
        self.error = ""
        self._done = 0
        self._fd: int | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read(self, size: int = -1) -> bytes:
        left = self.member.size - self._done
        want = left if size is None or size < 0 else min(size, left, CHUNK)
        if want <= 0:
            return b""
        chunk = b""
        if not self.error:
            try:
                chunk = os.pread(self._open(), want, self.member.offset + self._done)
            except OSError as exc:
                self.error = f"cannot read {self.member.name} from {self.path}: {exc.strerror or exc}"
            if not chunk and not self.error:
                self.error = f"{self.path} is truncated (in {self.member.name})"
        if not chunk:
            chunk = b"\0" * want
        self._done += len(chunk)
        self.hasher.update(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def problem(self, digest: str) -> str:
        """Once read to the end: why the bytes are not `digest` ("" when they are)."""
        if self.error:
            return self.error
        if self.digest() != digest:
            return (f"{self.member.name} of {self.path} now hashes to {self.digest()}, not {digest}: it changed "
                    "after it was verified (failing media?)")  # fmt: skip
        return ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()
