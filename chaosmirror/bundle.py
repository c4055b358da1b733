"""The air-gap bundle format: write it so it never looks complete before it is, read it safely, verify it.

An OCI bundle is one uncompressed tar: `bundle.json` (what is inside), `SHA256SUMS` (every other
file), then an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) in which a layer
shared by several images is stored once. A docker-archive bundle is a folder of `docker load`-able
tarballs with the same `bundle.json` and `SHA256SUMS`. Reading never trusts a name: tar entries
must be plain files with expected names, digests are validated before they become paths, and every
byte is hashed before anything is pushed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from chaosmirror import __version__
from chaosmirror.errors import BundleError, RefError
from chaosmirror.manifest import references
from chaosmirror.ref import check_digest

FORMAT = 1
OCI, DOCKER_ARCHIVE = "oci", "docker-archive"
INFO, SUMS, LAYOUT, INDEX = "bundle.json", "SHA256SUMS", "oci-layout", "index.json"
REF_NAME = "org.opencontainers.image.ref.name"
HCE_NAME = "io.chaosmirror.hce-name"
_BLOB_RE = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
_ARCHIVE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar$")
SMALL = 1024 * 1024  # files this small are kept while scanning: manifests, configs, bundle.json
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BundleImage:
    source: str  # the full source reference, as the release manifest writes it
    name: str  # HCE's image name and tag: chaos-ddcr:1.47.0
    digest: str  # the digest the bundle holds (the source's, unless platforms were narrowed)
    platforms: tuple[str, ...]
    size: int
    uses: tuple[str, ...] = ()
    source_digest: str = ""
    archives: tuple[tuple[str, str], ...] = ()  # docker-archive bundles: (platform, file name)


@dataclass(frozen=True)
class BundleInfo:
    kind: str
    release: str
    images: tuple[BundleImage, ...]
    revision: int = 1
    created: str = ""
    tool: str = f"chaosmirror {__version__}"
    groups: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()  # what was asked for; () means every platform
    since: str = ""  # a delta bundle: the release it leaves unchanged images to
    unchanged: tuple[BundleImage, ...] = ()  # what a delta left out (the base bundle has them)
    format: int = FORMAT

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["delta"] = {"since": doc.pop("since"), "unchanged": doc.pop("unchanged")} if self.since else None
        if not self.since:
            doc.pop("since", None)
            doc.pop("unchanged", None)
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> BundleInfo:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise BundleError(
                    f"{where}: bundle format {doc.get('format')!r} is not supported (this "
                    f"chaosmirror reads format {FORMAT}); use the chaosmirror that wrote it"
                )
            delta = doc.pop("delta", None) or {}
            images = tuple(_image(i) for i in doc.pop("images"))
            unchanged = tuple(_image(i) for i in delta.get("unchanged", ()))
            for key in ("groups", "platforms"):
                doc[key] = tuple(doc.get(key, ()))
            info = cls(images=images, since=delta.get("since", ""), unchanged=unchanged, **doc)
        except (ValueError, TypeError, KeyError, AttributeError, RefError) as exc:
            raise BundleError(f"{where}: bundle.json is malformed ({exc})") from None
        if info.kind not in (OCI, DOCKER_ARCHIVE):
            raise BundleError(f"{where}: unknown bundle kind {info.kind!r}")
        return info


def _image(doc: dict[str, Any]) -> BundleImage:
    doc = dict(doc)
    doc["platforms"] = tuple(doc.get("platforms", ()))
    doc["uses"] = tuple(doc.get("uses", ()))
    doc["archives"] = tuple(tuple(a) for a in doc.get("archives", ()))
    check_digest(doc["digest"])
    return BundleImage(**doc)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sums_text(folder: Path, names: list[str]) -> str:
    """`sha256sum`-style lines for `names` (relative to `folder`); `sha256sum -c SHA256SUMS` checks them."""
    return "".join(f"{sha256_file(folder / name)}  {name}\n" for name in names)


def parse_sums(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^([a-f0-9]{64})  (\S+)$", line)
        if not match:
            raise BundleError(f"{where}: SHA256SUMS line {number} is malformed")
        out[match.group(2)] = match.group(1)
    return out


# --- writing -------------------------------------------------------------------------------------


def partial_name(final: Path) -> Path:
    """Where a bundle is written until it is complete; never mistaken for a bundle (no .tar ending)."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def write_tar(final: Path, folder: Path, names: list[str]) -> int:
    """Tar `names` (relative to `folder`) into `final`, atomically: written under a temporary name,
    synced, then renamed. Out of disk space leaves nothing under `final`. Returns the size."""
    partial = partial_name(final)
    try:
        with open(partial, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in names:
                info = tar.gettarinfo(str(folder / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644 if info.isfile() else 0o755
                if info.isfile():
                    with open(folder / name, "rb") as stream:
                        tar.addfile(info, stream)
                else:
                    tar.addfile(info)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise BundleError(
                f"out of disk space writing {final}; nothing was left under that name. Free space "
                f"(the bundle needs about {sum_sizes(folder, names) / 1e6:.0f} MB) and run the "
                "same command again: what was already downloaded is reused"
            ) from None
        raise BundleError(f"cannot write {final}: {exc.strerror or exc}") from None
    return final.stat().st_size


def sum_sizes(folder: Path, names: list[str]) -> int:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())


# --- reading -------------------------------------------------------------------------------------


@dataclass
class Scan:
    """What one pass over a bundle found: each file's SHA-256, the small files' bytes, the problems."""

    where: str
    hashes: dict[str, str] = field(default_factory=dict)
    small: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    info: BundleInfo | None = None


def _safe_name(name: str) -> str | None:
    """The reason `name` may not come out of a bundle, or None if it may."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return "an absolute or malformed path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a path that climbs out of the bundle"
    if name in (INFO, SUMS, LAYOUT, INDEX) or _BLOB_RE.match(name) or name in ("blobs", "blobs/sha256"):
        return None
    if _ARCHIVE_RE.match(name):
        return None
    return "not a file a bundle holds"


def _members(tar: tarfile.TarFile, where: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    try:
        for member in tar:
            name = member.name.rstrip("/") if member.isdir() else member.name
            reason = _safe_name(name)
            if reason:
                raise BundleError(f"{where}: refusing entry {member.name!r}: {reason}")
            if not (member.isfile() or member.isdir()):
                kind = "link" if member.issym() or member.islnk() else "device or special file"
                raise BundleError(f"{where}: refusing entry {member.name!r}: a {kind}; bundles hold plain files only")
            yield member, tar.extractfile(member) if member.isfile() else None
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{where} is truncated or not a tar file ({exc}); export it again") from None


def scan_tar(path: Path, *, extract_to: Path | None = None) -> Scan:
    """Read a bundle tar once: check every entry, hash every file, optionally extract it."""
    scan = Scan(str(path))
    try:
        tar = tarfile.open(path, mode="r|")  # noqa: SIM115 - entered below, once it has opened
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    with tar:
        for member, stream in _members(tar, str(path)):
            name = member.name.rstrip("/")
            if stream is None:
                continue
            digest = hashlib.sha256()
            kept = bytearray()
            try:
                with contextlib.ExitStack() as stack:
                    out = stack.enter_context(_create(extract_to / name)) if extract_to is not None else None
                    while chunk := stream.read(CHUNK):
                        digest.update(chunk)
                        if len(kept) + len(chunk) <= SMALL:
                            kept += chunk
                        if out:
                            out.write(chunk)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BundleError(f"{path} is truncated or unreadable at {name} ({exc}); export it again") from None
            if member.size != len(kept) and member.size <= SMALL:
                raise BundleError(f"{path} is truncated at {name}; export it again")
            scan.hashes[name] = digest.hexdigest()
            if member.size <= SMALL:
                scan.small[name] = bytes(kept)
    check(scan)
    return scan


def _create(target: Path) -> IO[bytes]:
    """A new file at a path built only from a checked name; never follows or replaces anything."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def scan_folder(path: Path) -> Scan:
    """The same checks for a docker-archive bundle folder."""
    scan = Scan(str(path))
    for entry in sorted(path.iterdir()):
        reason = _safe_name(entry.name)
        if entry.is_symlink() or not entry.is_file() or reason:
            scan.problems.append(f"unexpected entry {entry.name!r} in the bundle folder")
            continue
        scan.hashes[entry.name] = sha256_file(entry)
        if entry.name in (INFO, SUMS):
            scan.small[entry.name] = entry.read_bytes()
    check(scan)
    return scan


def check(scan: Scan) -> None:
    """Turn a scan into problems: checksums, blob digests, and every manifest's blobs present."""
    if INFO not in scan.small:
        scan.problems.append("bundle.json is missing: this is not a chaosmirror bundle, or it is incomplete")
        return
    scan.info = BundleInfo.from_json(scan.small[INFO], scan.where)
    if SUMS not in scan.small:
        scan.problems.append("SHA256SUMS is missing: the bundle is incomplete")
        return
    sums = parse_sums(scan.small[SUMS].decode(errors="replace"), scan.where)
    owners = _owners(scan)
    for name, expected in sums.items():
        if name not in scan.hashes:
            scan.problems.append(f"{name} is missing{owners.get(name, '')}")
        elif scan.hashes[name] != expected:
            scan.problems.append(f"{name} is damaged (checksum differs from SHA256SUMS){owners.get(name, '')}")
    for name in scan.hashes:
        if name not in sums and name != SUMS:
            scan.problems.append(f"{name} is not listed in SHA256SUMS")
        match = _BLOB_RE.match(name)
        if match and scan.hashes[name] != match.group(1):
            scan.problems.append(
                f"blob sha256:{match.group(1)} is damaged: its content hashes to "
                f"sha256:{scan.hashes[name]}{owners.get(name, '')}"
            )
    if scan.info.kind == OCI:
        _check_layout(scan, owners)


def _owners(scan: Scan) -> dict[str, str]:
    """For each file: ' (used by image, image)', from the manifests the scan kept."""
    users: dict[str, list[str]] = {}
    assert scan.info is not None
    for image in scan.info.images:
        for archive in image.archives:
            users.setdefault(archive[1], []).append(image.source)
        for digest in _reachable(scan, image.digest):
            users.setdefault(blob_name(digest), []).append(image.source)
    return {name: f" (used by {', '.join(dict.fromkeys(who))})" for name, who in users.items()}


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + check_digest(digest).split(":", 1)[1]


def _reachable(scan: Scan, top: str) -> list[str]:
    """Every blob digest `top` references, itself included, as far as the kept manifests tell."""
    return references(top, lambda digest: scan.small.get(blob_name(digest)))


def _check_layout(scan: Scan, owners: dict[str, str]) -> None:
    assert scan.info is not None
    for name in (LAYOUT, INDEX):
        if name not in scan.small:
            scan.problems.append(f"{name} is missing")
            return
    try:
        entries = {e["annotations"][REF_NAME]: e["digest"] for e in json.loads(scan.small[INDEX])["manifests"]}
    except (ValueError, KeyError, TypeError):
        scan.problems.append("index.json is malformed")
        return
    for image in scan.info.images:
        if entries.get(image.source) != image.digest:
            scan.problems.append(f"index.json does not list {image.source} at {image.digest}")
        for digest in _reachable(scan, image.digest):
            if blob_name(digest) not in scan.hashes:
                scan.problems.append(f"blob {digest} is missing (used by {image.source})")


def read_info(path: Path) -> BundleInfo:
    """bundle.json of a bundle tar or folder, without reading the rest."""
    if path.is_dir():
        info_path = path / INFO
        if not info_path.is_file():
            raise BundleError(f"{path} has no bundle.json: not a chaosmirror bundle, or an incomplete one")
        return BundleInfo.from_json(info_path.read_bytes(), str(path))
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member, stream in _members(tar, str(path)):
                if member.name == INFO and stream is not None:
                    return BundleInfo.from_json(stream.read(), str(path))
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise BundleError(f"{path} has no bundle.json: not a chaosmirror bundle, or an incomplete one")
