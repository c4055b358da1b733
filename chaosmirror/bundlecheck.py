"""Verify a bundle: every byte read once, every problem named with its part and its images.

Each part is read once: sequentially when its own sha256 is listed (the part hash and the member
hashes come from the same reads), otherwise its members in parallel; parts in parallel. Then the
layout is checked: index.json against bundle.json, and every blob each image references present
with the size its manifest declares (from the tar headers, so an oversized member is never read
into memory).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.bundleset import Bundle, Part, meta_of, top_descriptors, walk_images
from chaosmirror.errors import BundleError
from chaosmirror.manifest import Descriptor
from chaosmirror.tarindex import CHUNK, Member, TarIndex, index_tar, read_member

HASHERS = min(4, os.cpu_count() or 1)


@dataclass
class Verified:
    problems: list[str]
    checked: int  # files hashed


def verify(bundle: Bundle) -> Verified:
    """Hash every file once and check it against its SHA256SUMS line (and a blob against its name),
    every part against the part list, and that each image's blobs are all there with their declared
    sizes. Problems name the part (of a split bundle) and the images concerned."""
    if bundle.folder is not None:
        return _verify_folder(bundle)
    problems = list(bundle.problems)
    problems += [f"{bundle.holds(n)} is missing: look for it beside the others, or give its path"
                 for n in bundle.missing]  # fmt: skip
    parts = [bundle.parts[n] for n in sorted(bundle.parts)]
    walked = walk_images(bundle) if bundle.info.kind == fmt.OCI else {}
    owners = _owners(bundle, walked)
    with ThreadPoolExecutor(max_workers=HASHERS) as pool:
        results = list(pool.map(lambda p: _hash_part(p, whole=bundle.split), parts))
    checked = 0
    for part, (found, whole, error) in zip(parts, results, strict=True):
        checked += len(found)
        label = f"{part.path.name}: " if bundle.split else ""
        if bundle.split and not error:
            problems += _check_listing(bundle, part, whole)
        problems += _check_files(part, found, error, label=label, owners=owners)
    if not bundle.missing and bundle.info.kind == fmt.OCI:
        problems += _check_layout(bundle, walked)
    return Verified(problems, checked)


def verify_part(path: Path) -> tuple[fmt.PartInfo, Verified]:
    """One part of a split bundle, on its own: its part.json, every file against its SHA256SUMS,
    every blob against its name. The other parts are not needed."""
    index = index_tar(path, check_name=fmt.safe_name)
    meta = meta_of(index)
    if meta is None:
        raise BundleError(f"{path} has no part.json: it is not a part of a split bundle")
    part = Part(meta.part, index, meta)
    found, _, error = _hash_part(part, whole=False)
    return meta, Verified(_check_files(part, found, error, label="", owners={}), len(found))


def _hash_part(part: Part, *, whole: bool) -> tuple[dict[str, str], str, str]:
    """(name -> sha256 hex of each file, sha256 hex of the whole tar or "", a read error or "")."""
    files = sorted(part.index.files().values(), key=lambda m: m.offset)
    try:
        if whole:
            return (*_sequential(part.index, files), "")
        with ThreadPoolExecutor(max_workers=HASHERS) as pool:
            digests = list(pool.map(lambda m: _hash_range(part.path, m.offset, m.size), files))
        return {m.name: d for m, d in zip(files, digests, strict=True)}, "", ""
    except OSError as exc:
        return {}, "", f"cannot read {part.path}: {exc.strerror or exc}"


def _hash_range(path: Path, start: int, size: int) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = hashlib.sha256()
        _feed(fd, start, start + size, hasher)
        return hasher.hexdigest()
    finally:
        os.close(fd)


def _feed(fd: int, start: int, end: int, *hashers: hashlib._Hash) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(CHUNK, end - pos), pos)
        if not chunk:
            raise OSError(f"it ends at byte {pos}, before byte {end}")
        for hasher in hashers:
            hasher.update(chunk)
        pos += len(chunk)


def _sequential(index: TarIndex, files: list[Member]) -> tuple[dict[str, str], str]:
    """One pass over a part: its own hash and every file's, from the same reads."""
    whole = hashlib.sha256()
    out: dict[str, str] = {}
    fd = os.open(index.path, os.O_RDONLY)
    try:
        pos = 0
        for member in files:
            _feed(fd, pos, member.offset, whole)
            one = hashlib.sha256()
            _feed(fd, member.offset, member.offset + member.size, whole, one)
            out[member.name] = one.hexdigest()
            pos = member.offset + member.size
        _feed(fd, pos, index.size, whole)
    finally:
        os.close(fd)
    return out, whole.hexdigest()


def _check_listing(bundle: Bundle, part: Part, whole: str) -> list[str]:
    """A part against part 001's list: the same size and sha256."""
    entry = bundle.info.parts[part.number - 1]
    if part.index.size != entry.size:
        return [f"{bundle.holds(part.number)} is {part.index.size} bytes, not the {entry.size} the part list "
                "in bundle.json says: damaged or cut short"]  # fmt: skip
    if entry.sha256 and whole != entry.sha256:
        return [f"{bundle.holds(part.number)} is damaged: its sha256 differs from the part list in bundle.json"]
    return []


def _check_files(part: Part, found: dict[str, str], error: str, *, label: str, owners: dict[str, str]) -> list[str]:
    if error:
        return [f"{label}{error}"]
    sums_member = part.index.files().get(fmt.SUMS)
    if sums_member is None:
        return [f"{label}SHA256SUMS is missing: the bundle is incomplete"]
    text = read_member(part.index, sums_member, cap=fmt.CAPS[fmt.SUMS], what=fmt.SUMS).decode(errors="replace")
    sums = fmt.parse_sums(text, str(part.path))
    problems = []
    for name, expected in sums.items():
        if name not in found:
            problems.append(f"{label}{name} is missing{owners.get(name, '')}")
        elif found[name] != expected:
            problems.append(f"{label}{name} is damaged (checksum differs from SHA256SUMS){owners.get(name, '')}")
    for name, digest in found.items():
        if name not in sums and name != fmt.SUMS:
            problems.append(f"{label}{name} is not listed in SHA256SUMS")
        match = fmt.BLOB_RE.match(name)
        if match and digest != match.group(1):
            problems.append(f"{label}blob sha256:{match.group(1)} is damaged: its content hashes to "
                            f"sha256:{digest}{owners.get(name, '')}")  # fmt: skip
    return problems


def _owners(bundle: Bundle, walked: dict[str, list[Descriptor]]) -> dict[str, str]:
    """For each file: ' (used by image, image)', as far as the intact manifests tell."""
    users: dict[str, list[str]] = {}
    for image in bundle.info.images:
        for _, name in image.archives:
            users.setdefault(name, []).append(image.source)
    for source, descriptors in walked.items():
        for desc in descriptors:
            users.setdefault(fmt.blob_name(desc.digest), []).append(source)
    return {name: f" (used by {', '.join(dict.fromkeys(who))})" for name, who in users.items()}


def _check_layout(bundle: Bundle, walked: dict[str, list[Descriptor]]) -> list[str]:
    """index.json lists every image at its digest; every blob each one references is there, with
    the size its manifest declares (checked from the tar headers, before any of it is read)."""
    files = bundle.files
    for name in (fmt.LAYOUT, fmt.INDEX):
        if name not in files:
            return [f"{name} is missing"]
    tops = top_descriptors(bundle)
    if not tops:
        return ["index.json is malformed"]
    problems: list[str] = []
    for image in (*bundle.info.images, *bundle.info.unchanged):  # a delta carries signatures of images it left out
        top = tops.get(image.source)
        if image in bundle.info.images and (top is None or top.digest != image.digest):
            problems.append(f"index.json does not list {image.source} at {image.digest}")
            continue
        for desc in walked.get(image.source, []):
            name = fmt.blob_name(desc.digest)
            if name not in files:
                problems.append(f"blob {desc.digest} is missing (used by {image.source})")
            elif files[name][1].size != desc.size:
                where = f" in {files[name][0].path.name}" if bundle.split else ""
                problems.append(f"{name} is {files[name][1].size} bytes{where}, but {image.source} declares "
                                f"{desc.size}: refused")  # fmt: skip
    return list(dict.fromkeys(problems))


def _verify_folder(bundle: Bundle) -> Verified:
    """The same checks for a docker-archive bundle folder."""
    assert bundle.folder is not None
    problems: list[str] = []
    hashes: dict[str, str] = {}
    for entry in sorted(bundle.folder.iterdir()):
        reason = fmt.safe_name(entry.name)
        if entry.is_symlink() or not entry.is_file() or reason:
            problems.append(f"unexpected entry {entry.name!r} in the bundle folder")
            continue
        hashes[entry.name] = fmt.sha256_file(entry)
    sums_path = bundle.folder / fmt.SUMS
    if not sums_path.is_file():
        return Verified([*problems, "SHA256SUMS is missing: the bundle is incomplete"], len(hashes))
    if sums_path.stat().st_size > fmt.CAPS[fmt.SUMS]:
        return Verified([*problems, f"{sums_path} is larger than a SHA256SUMS may be"], len(hashes))
    sums = fmt.parse_sums(sums_path.read_text(errors="replace"), str(bundle.folder))
    owners = _owners(bundle, {})
    for name, expected in sums.items():
        if name not in hashes:
            problems.append(f"{name} is missing{owners.get(name, '')}")
        elif hashes[name] != expected:
            problems.append(f"{name} is damaged (checksum differs from SHA256SUMS){owners.get(name, '')}")
    problems += [f"{name} is not listed in SHA256SUMS" for name in hashes if name not in sums and name != fmt.SUMS]
    return Verified(problems, len(hashes))
