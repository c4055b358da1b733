"""The air-gap bundle format: what `bundle.json` and `part.json` say, the names a bundle may hold,
`SHA256SUMS`, and writing a tar so it never looks complete before it is.

An OCI bundle is one uncompressed tar (format 1): `bundle.json` (what is inside), `SHA256SUMS`
(every other file), then an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) in
which a layer shared by several images is stored once. Split with `--split-size`, it is parts
`NAME.001`, `NAME.002`, ... (format 2), each a tar of whole files with its own `part.json` and
`SHA256SUMS`; part 001 holds `bundle.json`, which lists every part. A docker-archive bundle is a
folder of `docker load`-able tarballs with the same `bundle.json` and `SHA256SUMS`. docs/bundles.md
is the full description; `bundleset` reads bundles, `split` writes parts.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

from chaosmirror import __version__
from chaosmirror.errors import BundleError, Interrupted, RefError
from chaosmirror.lifecycle import Run
from chaosmirror.ref import ImageRef, check_digest
from chaosmirror.signatures import Attachment

FORMAT, SPLIT_FORMAT = 1, 2
OCI, DOCKER_ARCHIVE = "oci", "docker-archive"
INFO, SUMS, LAYOUT, INDEX, PART = "bundle.json", "SHA256SUMS", "oci-layout", "index.json", "part.json"
REF_NAME = "org.opencontainers.image.ref.name"
HCE_NAME = "io.chaosmirror.hce-name"
BLOB_RE = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
ARCHIVE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar$")
PART_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,200})\.([0-9]{3})$")
SMALL = 1024 * 1024
CHUNK = 1024 * 1024
MiB = 1024 * 1024
CAPS = {INFO: 16 * MiB, SUMS: 16 * MiB, INDEX: 16 * MiB, PART: MiB, LAYOUT: 4096}  # read only below these
MAX_MANIFEST = 4 * MiB  # distribution's own limit


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
    # What the bundle holds of it, exactly: every manifest and blob by digest (an OCI bundle), or the
    # config and layers of the platform archived (a docker-archive one), so a delta on this bundle,
    # and its import, can tell from the records alone whether a target holds the image.
    blobs: tuple[str, ...] = ()
    attached: tuple[Attachment, ...] = ()  # signatures, attestations, SBOMs, referrers it carries
    releases: tuple[str, ...] = ()  # a bundle of several releases: those that need this image


@dataclass(frozen=True)
class PartEntry:
    """One part of a split bundle, as part 001's bundle.json lists it."""

    name: str  # NAME.NNN
    size: int
    sha256: str  # hex; "" for part 001, which holds this list and so cannot hold its own hash
    images: tuple[str, ...] = ()  # sources of the images that have a blob in this part


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
    unchanged: tuple[BundleImage, ...] = ()  # what a delta left out (the base bundle has them), as the base recorded
    base: str = ""  # a delta on a bundle: which (file name, kind, id), when --since named one
    format: int = FORMAT
    id: str = ""  # split bundles: the id every part.json carries
    parts: tuple[PartEntry, ...] = ()  # split bundles: every part, 001 first
    releases: tuple[str, ...] = ()  # a bundle of several releases: each of them (`release` joins them with +)

    @property
    def names(self) -> tuple[str, ...]:
        """Every release the bundle holds."""
        return self.releases or (self.release,)

    def to_json(self) -> bytes:
        doc = asdict(self)
        if not self.releases:  # written only for several releases, so a one-release bundle.json stays as it was
            doc.pop("releases")
            for image in [*doc["images"], *doc["unchanged"]]:
                image.pop("releases")
        delta = {"since": doc.pop("since"), "unchanged": doc.pop("unchanged"), "base": doc.pop("base")}
        doc["delta"] = delta if self.since else None
        if not self.parts:
            doc.pop("parts")
            doc.pop("id")
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> BundleInfo:
        try:
            doc = json.loads(data)
            if doc.get("format") not in (FORMAT, SPLIT_FORMAT):
                raise BundleError(
                    f"{where}: bundle format {doc.get('format')!r} is not supported (this chaosmirror "
                    f"reads formats {FORMAT} and {SPLIT_FORMAT}); use the chaosmirror that wrote it"
                )
            delta = doc.pop("delta", None) or {}
            images = tuple(_image(i) for i in doc.pop("images"))
            unchanged = tuple(_image(i) for i in delta.get("unchanged", ()))
            parts = tuple(_part(p) for p in doc.pop("parts", ()))
            for key in ("groups", "platforms", "releases"):
                doc[key] = tuple(doc.get(key, ()))
            info = cls(images=images, since=delta.get("since", ""), unchanged=unchanged, parts=parts,
                       base=str(delta.get("base", "")), **doc)  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError, RefError) as exc:
            raise BundleError(f"{where}: bundle.json is malformed ({exc})") from None
        if info.kind not in (OCI, DOCKER_ARCHIVE):
            raise BundleError(f"{where}: unknown bundle kind {info.kind!r}")
        if (info.format == SPLIT_FORMAT) != bool(info.parts) or (
            info.parts and not re.fullmatch("[a-f0-9]{64}", info.id)
        ):
            raise BundleError(f"{where}: bundle.json is malformed (format {info.format} with {len(info.parts)} parts)")
        return info


def _image(doc: dict[str, Any]) -> BundleImage:
    doc = dict(doc)
    doc["platforms"] = tuple(doc.get("platforms", ()))
    doc["uses"] = tuple(doc.get("uses", ()))
    doc["archives"] = tuple(tuple(a) for a in doc.get("archives", ()))
    doc["blobs"] = tuple(check_digest(str(d)) for d in doc.get("blobs", ()))
    doc["attached"] = tuple(Attachment.from_json(a) for a in doc.get("attached", ()))
    doc["releases"] = tuple(map(str, doc.get("releases", ())))
    check_digest(doc["digest"])
    ImageRef.parse(doc["source"])
    for archive in doc["archives"]:
        if len(archive) != 2 or not ARCHIVE_RE.match(str(archive[1])):
            raise ValueError(f"archive name {archive[-1]!r} of {doc['source']} is not a plain NAME.tar file name")
    return BundleImage(**doc)


def _part(doc: dict[str, Any]) -> PartEntry:
    entry = PartEntry(str(doc["name"]), int(doc["size"]), str(doc["sha256"]), tuple(map(str, doc.get("images", ()))))
    if not PART_RE.match(entry.name):
        raise ValueError(f"part name {entry.name!r} is not a plain NAME.NNN file name")
    if entry.sha256 and not re.fullmatch("[a-f0-9]{64}", entry.sha256):
        raise ValueError(f"part {entry.name} has a malformed sha256")
    return entry


@dataclass(frozen=True)
class PartInfo:
    """`part.json`: which part of which bundle a file is, and whose blobs it holds."""

    bundle: str  # BundleInfo.id
    release: str
    part: int
    parts: int
    images: tuple[str, ...] = ()
    format: int = SPLIT_FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> PartInfo:
        try:
            doc = json.loads(data)
            info = cls(str(doc["bundle"]), str(doc["release"]), int(doc["part"]), int(doc["parts"]),
                       tuple(map(str, doc.get("images", ()))), int(doc["format"]))  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BundleError(f"{where}: part.json is malformed ({exc})") from None
        if info.format != SPLIT_FORMAT or not 1 <= info.part <= info.parts <= 999:
            raise BundleError(f"{where}: part.json is malformed (part {info.part} of {info.parts})")
        return info


def part_name(base: str, number: int) -> str:
    return f"{base}.{number:03d}"


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


def safe_name(name: str) -> str | None:
    """The reason `name` may not come out of a bundle, or None if it may."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return "an absolute or malformed path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a path that climbs out of the bundle"
    if name in (INFO, SUMS, LAYOUT, INDEX, PART) or BLOB_RE.match(name) or name in ("blobs", "blobs/sha256"):
        return None
    if ARCHIVE_RE.match(name):
        return None
    return "not a file a bundle holds"


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + check_digest(digest).split(":", 1)[1]


# --- writing -------------------------------------------------------------------------------------


def partial_name(final: Path) -> Path:
    """Where a file is written until it is complete; never mistaken for a bundle (no .tar ending)."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


class _Hashing:
    """A file being written, hashed on the way (tarfile writes through it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


def write_tar(final: Path, folder: Path, names: list[str], *, fixed: bool = False,
              extra: dict[str, bytes] | None = None) -> str:  # fmt: skip
    """Tar `names` (relative to `folder`; `extra` holds files given as bytes) into `final`,
    atomically: written under a temporary name, synced, then renamed. Out of disk space leaves
    nothing under `final`. With `fixed`, headers carry no dates or owners, so the same files give
    the same bytes. Returns the SHA-256 (hex) of what was written."""
    partial = partial_name(final)
    extra = extra or {}
    run = Run.current()
    try:
        with open(partial, "wb") as raw:
            hashing = _Hashing(raw)
            with tarfile.open(fileobj=cast(IO[bytes], hashing), mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for name in names:
                    if run is not None:
                        run.check()  # a stop ends the write here; the partial file goes below
                    _add(tar, folder, name, extra, fixed=fixed)
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(final)
    except Interrupted:
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise BundleError(
                f"out of disk space writing {final}; nothing was left under that name. Free space "
                f"(the bundle needs about {sum_sizes(folder, names) / 1e6:.0f} MB) and run the "
                "same command again: what was already downloaded is reused"
            ) from None
        raise BundleError(f"cannot write {final}: {exc.strerror or exc}") from None
    return hashing.hasher.hexdigest()


def _add(tar: tarfile.TarFile, folder: Path, name: str, extra: dict[str, bytes], *, fixed: bool) -> None:
    if name in extra:
        info = tarfile.TarInfo(name)
        info.size = len(extra[name])
        info.mode = 0o644
        info.mtime = 0 if fixed else int(time.time())
        tar.addfile(info, io.BytesIO(extra[name]))
        return
    info = tar.gettarinfo(str(folder / name), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644 if info.isfile() else 0o755
    if fixed:
        info.mtime = 0
    if info.isfile():
        with open(folder / name, "rb") as stream:
            tar.addfile(info, stream)
    else:
        tar.addfile(info)


def sum_sizes(folder: Path, names: list[str]) -> int:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())
