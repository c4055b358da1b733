"""A bundle as found on disk: one tar, the parts of a split one, or a docker-archive folder.

`locate` takes what the user named (the base name, any part, several parts in any order, from one
folder or several) and finds the rest beside them; every tar is indexed from its headers only
(`tarindex`). The layout is then read through the index: `index.json`, and manifests only with the
size their descriptor declares, checked against their digest. `bundlecheck` verifies every byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.errors import BundleError, ChaosmirrorError
from chaosmirror.manifest import IMAGE_TYPES, INDEX_TYPES, Descriptor, Manifest
from chaosmirror.tarindex import Member, TarIndex, index_tar, read_member


@dataclass(frozen=True)
class Part:
    """One tar of a bundle: the only one (number 1, no part.json), or part `number` of a split one."""

    number: int
    index: TarIndex
    meta: fmt.PartInfo | None = None

    @property
    def path(self) -> Path:
        return self.index.path


@dataclass
class Bundle:
    info: fmt.BundleInfo
    parts: dict[int, Part] = field(default_factory=dict)  # the tars found, by part number
    folder: Path | None = None  # a docker-archive bundle
    missing: list[int] = field(default_factory=list)  # parts bundle.json lists that were not found
    problems: list[str] = field(default_factory=list)  # found while locating
    named: str = ""  # what the user gave, for messages

    @property
    def split(self) -> bool:
        return bool(self.info.parts)

    def label(self, part: Part) -> str:
        return part.path.name if self.split else str(part.path)

    @cached_property
    def files(self) -> dict[str, tuple[Part, Member]]:
        """Every file of every part found (the first part wins a name found twice); read once located."""
        out: dict[str, tuple[Part, Member]] = {}
        for number in sorted(self.parts):
            part = self.parts[number]
            for name, member in part.index.files().items():
                out.setdefault(name, (part, member))
        return out

    def read(self, name: str, *, cap: int, what: str) -> bytes | None:
        found = self.files.get(name)
        return read_member(found[0].index, found[1], cap=cap, what=what) if found else None

    def holds(self, number: int) -> str:
        """'part 3 of 5 (hce.tar.003), holding blobs of a, b'."""
        entry = self.info.parts[number - 1]
        held = f", holding blobs of {', '.join(entry.images)}" if entry.images else ""
        return f"part {number} of {len(self.info.parts)} ({entry.name}){held}"


def _index(path: Path) -> tuple[TarIndex | None, str]:
    try:
        return index_tar(path, check_name=fmt.safe_name), ""
    except BundleError as exc:
        return None, str(exc)


def meta_of(index: TarIndex) -> fmt.PartInfo | None:
    member = index.files().get(fmt.PART)
    if member is None:
        return None
    return fmt.PartInfo.from_json(read_member(index, member, cap=fmt.CAPS[fmt.PART], what=fmt.PART), str(index.path))


def _read_info(index: TarIndex) -> fmt.BundleInfo:
    member = index.files().get(fmt.INFO)
    if member is None:
        raise BundleError(f"{index.path} has no bundle.json: not a chaosmirror bundle, or an incomplete one")
    return fmt.BundleInfo.from_json(read_member(index, member, cap=fmt.CAPS[fmt.INFO], what=fmt.INFO), str(index.path))


def locate(paths: Sequence[Path]) -> Bundle:
    """The bundle `paths` name, with its other parts found beside them. Raises BundleError when
    there is nothing to read (no such file, not a tar, no part 001); other problems are recorded."""
    if not paths:
        raise BundleError("name a bundle: FILE (a .tar, a part NAME.NNN, or a docker-archive folder)")
    named = " ".join(map(str, paths))
    if len(paths) == 1 and paths[0].is_dir():
        return _folder(paths[0])
    given: list[Path] = []
    for path in paths:
        if path.is_dir():
            raise BundleError(f"{path} is a folder: a docker-archive bundle is named alone")
        if path.is_file():
            given.append(path)
            continue
        siblings = sorted(path.parent.glob(f"{path.name}.[0-9][0-9][0-9]")) if path.parent.is_dir() else []
        if not siblings:
            raise BundleError(f"{path} does not exist (nor do its parts {path.name}.001, ...)")
        given += siblings
    indexed: list[tuple[Path, TarIndex | None, str]] = [(p, *_index(p)) for p in dict.fromkeys(given)]
    singles = [ix for _, ix, _ in indexed if ix and fmt.PART not in ix.files()]
    if singles:
        if len(indexed) > 1:
            raise BundleError(f"{singles[0].path} is a whole bundle, not a part: name it alone")
        bundle = Bundle(_read_info(singles[0]), {1: Part(1, singles[0])}, named=named)
        if bundle.split:
            raise BundleError(f"{singles[0].path}: bundle.json lists parts, but the file has no part.json")
        return bundle
    if len(indexed) == 1 and indexed[0][1] is None:
        raise BundleError(indexed[0][2])
    return _parts(indexed, named)


def _parts(indexed: list[tuple[Path, TarIndex | None, str]], named: str) -> Bundle:
    found: dict[int, Part] = {}
    broken: list[tuple[Path, str]] = []
    for path, ix, error in indexed:
        if ix is None:
            broken.append((path, error))
            continue
        meta = meta_of(ix)
        assert meta is not None
        found.setdefault(meta.part, Part(meta.part, ix, meta))
    first = found.get(1) or _sibling_first(indexed)
    if first is None:
        numbers = ", ".join(str(n) for n in sorted(found)) or "none readable"
        raise BundleError(f"part 001 of {named} is missing (it holds bundle.json); found part(s) {numbers}: "
                          "look for it beside the others, or give its path")  # fmt: skip
    info = _read_info(first.index)
    base = first.path.with_name(_base(first.path.name))
    bundle = Bundle(info, {}, named=f"{base} ({len(info.parts)} parts)" if info.parts else named)
    if not info.parts or first.meta is None:
        raise BundleError(f"{first.path}: its bundle.json lists no parts")
    folders = list(dict.fromkeys(p.parent for p, _, _ in indexed))
    bases = list(dict.fromkeys(_base(p.name) for p, _, _ in indexed))
    for number, entry in enumerate(info.parts, 1):
        part = found.get(number) if number > 1 else first
        if part is not None and part.meta and part.meta.bundle != info.id:
            bundle.problems.append(f"{part.path} is part {number} of another bundle (HCE {part.meta.release}, id "
                                   f"{part.meta.bundle[:12]}), not of the one in {first.path}")  # fmt: skip
            part = None
        if part is None:
            part = _find(number, entry.name, folders, bases, info.id)
        if part is None:
            bundle.missing.append(number)
            continue
        bundle.parts[number] = part
    for path, error in broken:
        number = _number(path.name)
        if number in bundle.missing:
            bundle.missing.remove(number)
        where = bundle.holds(number) if number and number <= len(info.parts) else str(path)
        bundle.problems.append(f"{path.name}: {error}; it is {where}")
    return bundle


def _sibling_first(indexed: list[tuple[Path, TarIndex | None, str]]) -> Part | None:
    for path, _, _ in indexed:
        candidate = path.with_name(fmt.part_name(_base(path.name), 1))
        if candidate.is_file():
            ix, _ = _index(candidate)
            meta = meta_of(ix) if ix else None
            if ix and meta and meta.part == 1:
                return Part(1, ix, meta)
    return None


def _find(number: int, listed: str, folders: list[Path], bases: list[str], bundle_id: str) -> Part | None:
    names = dict.fromkeys([listed, *(fmt.part_name(b, number) for b in bases)])
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                ix, _ = _index(folder / name)
                meta = meta_of(ix) if ix else None
                if ix and meta and meta.part == number and meta.bundle == bundle_id:
                    return Part(number, ix, meta)
    return None


def _base(name: str) -> str:
    match = fmt.PART_RE.match(name)
    return match.group(1) if match else name


def _number(name: str) -> int:
    match = fmt.PART_RE.match(name)
    return int(match.group(2)) if match else 0


def _folder(path: Path) -> Bundle:
    info_path = path / fmt.INFO
    if not info_path.is_file():
        raise BundleError(f"{path} has no bundle.json: not a chaosmirror bundle, or an incomplete one")
    if info_path.stat().st_size > fmt.CAPS[fmt.INFO]:
        raise BundleError(f"{info_path} is {info_path.stat().st_size} bytes: more than a bundle.json may have")
    return Bundle(fmt.BundleInfo.from_json(info_path.read_bytes(), str(path)), folder=path, named=str(path))


def read_info(paths: Sequence[Path]) -> fmt.BundleInfo:
    """bundle.json of a bundle, without reading the rest."""
    return locate(paths).info


# --- reading the layout --------------------------------------------------------------------------


def top_descriptors(bundle: Bundle) -> dict[str, Descriptor]:
    """index.json's entry for each image source, read under its cap; {} when absent or malformed."""
    try:
        data = bundle.read(fmt.INDEX, cap=fmt.CAPS[fmt.INDEX], what=fmt.INDEX)
        if data is None:
            return {}
        doc = json.loads(data)
        return {e["annotations"][fmt.REF_NAME]: Descriptor.from_json(e, fmt.INDEX) for e in doc["manifests"]}
    except (ValueError, KeyError, TypeError, ChaosmirrorError):
        return {}


def read_manifest(bundle: Bundle, desc: Descriptor) -> Manifest | None:
    """The manifest `desc` names, if the bundle holds it with the declared size and digest."""
    found = bundle.files.get(fmt.blob_name(desc.digest))
    if found is None or found[1].size != desc.size or desc.size > fmt.MAX_MANIFEST:
        return None
    data = read_member(found[0].index, found[1], cap=fmt.MAX_MANIFEST, what="manifest")
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
        return None
    try:
        return Manifest.from_bytes(data, desc.media_type, where=desc.digest)
    except ChaosmirrorError:
        return None


def walk_images(bundle: Bundle) -> dict[str, list[Descriptor]]:
    """For each image source: every descriptor its manifests reference, its top one first, then
    what is attached to it (signatures, referrers; all an image a delta left out has here). Foreign
    layers, which a bundle never holds, are not listed. A manifest that is absent or damaged is not
    followed (verify reports it)."""
    tops = top_descriptors(bundle)
    out: dict[str, list[Descriptor]] = {}
    for image in (*bundle.info.images, *bundle.info.unchanged):
        top = tops.get(image.source) if image in bundle.info.images else None
        roots = [top] if top is not None else []
        roots += [a.descriptor for a in image.attached]
        if not roots:
            continue
        seen: dict[str, Descriptor] = {}
        todo = list(roots)
        while todo:
            desc = todo.pop(0)
            if desc.digest in seen:
                continue
            seen[desc.digest] = desc
            if desc in roots or desc.media_type in (*INDEX_TYPES, *IMAGE_TYPES):
                manifest = read_manifest(bundle, desc)
                if manifest is not None:
                    todo += manifest.children() if manifest.is_index else manifest.stored_blobs()
        out[image.source] = list(seen.values())
    return out
