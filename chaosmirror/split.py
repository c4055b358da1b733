"""`bundle export --split-size`: blobs packed into parts of at most SIZE bytes, written so that an
interrupted export resumes at the part it was writing (docs/bundles.md has the format).

Sizes of the tars are computed, not guessed: a USTAR member is a 512-byte header plus its data
padded to 512, an archive ends with two zero blocks and is padded to 10240 bytes (tarfile's record
size), so every part's size is known before it is written and checked after.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.errors import BundleError, ChaosmirrorError
from chaosmirror.report import human_size
from chaosmirror.tarindex import index_tar, read_member
from chaosmirror.workfiles import remove_stale

BLOCK, RECORD = 512, 10240
MIN_SIZE = 64 * 1024
MAX_PARTS = 999
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """`700MB` (10^6), `4GiB` (2^30), `734003200` (bytes). `700M` is ambiguous, so refused."""
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS:
        hint = f"; write {match.group(1)}{unit.upper()}B (powers of 1000) or {match.group(1)}{unit.upper()}iB " \
               "(powers of 1024)" if match and unit in ("k", "m", "g", "t") else ""  # fmt: skip
        raise ChaosmirrorError(f"--split-size {text!r} is not a size such as 700MB, 4GiB or 734003200{hint}")
    try:
        size = int(Decimal(match.group(1)) * UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        raise ChaosmirrorError(f"--split-size {text!r} is not a number") from None
    if size < MIN_SIZE:
        raise ChaosmirrorError(
            f"--split-size {text!r} is below the smallest part chaosmirror writes ({MIN_SIZE} bytes)"
        )
    return size


def _cost(size: int) -> int:
    return BLOCK + size + (-size % BLOCK)


def _sum_line(name: str) -> int:
    return 64 + 2 + len(name) + 1  # "hex  name\n"


def tar_size(sizes: list[int], dirs: int = 2) -> int:
    """The bytes tarfile writes for files of `sizes` and `dirs` directories."""
    body = sum(_cost(s) for s in sizes) + dirs * BLOCK + 2 * BLOCK
    return body + (-body % RECORD)


@dataclass
class _Part:
    """A part being planned: running totals, so a fit is checked in constant time."""

    number: int
    fixed: dict[str, int]  # metadata files besides SHA256SUMS: name -> size
    blobs: list[str] = field(default_factory=list)
    used: int = 0  # costs of the blobs
    sums: int = 0  # length of SHA256SUMS
    oversize: bool = False

    def __post_init__(self) -> None:
        self.sums = sum(_sum_line(n) for n in self.fixed)

    def size(self, extra: tuple[str, int] | None = None) -> int:
        used, sums = self.used, self.sums
        if extra:
            used, sums = used + _cost(extra[1]), sums + _sum_line(extra[0])
        body = used + sum(_cost(s) for s in self.fixed.values()) + _cost(sums) + 2 * BLOCK + 2 * BLOCK
        return body + (-body % RECORD)

    def add(self, name: str, size: int) -> None:
        self.blobs.append(name)
        self.used += _cost(size)
        self.sums += _sum_line(name)


@dataclass(frozen=True)
class Layout:
    """What goes into the parts: the metadata of part 001 and every blob with its size and users."""

    release: str
    blobs: dict[str, int]  # blob name -> size
    users: dict[str, tuple[str, ...]]  # blob name -> sources of the images that use it
    first: dict[str, int]  # part 001's metadata besides bundle.json and part.json: oci-layout, index.json

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(sorted({u for users in self.users.values() for u in users}))


def _part_json(layout: Layout, bundle_id: str, number: int, count: int, images: tuple[str, ...]) -> bytes:
    return fmt.PartInfo(bundle_id, layout.release, number, count, images).to_json()


def _images_of(layout: Layout, blobs: list[str]) -> tuple[str, ...]:
    return tuple(sorted({u for name in blobs for u in layout.users.get(name, ())}))


def pack(layout: Layout, split_size: int, *, info_size: int, allow_oversize: bool) -> list[_Part]:
    """First fit, largest blob first; part 001 starts with the metadata (`info_size`: bundle.json)."""
    widest = len(_part_json(layout, "0" * 64, MAX_PARTS, MAX_PARTS, layout.images))  # an upper bound
    first = _Part(1, {fmt.INFO: info_size, fmt.PART: widest, **layout.first})
    parts = [first]
    if first.size() > split_size:
        need = smallest(layout, info_size)
        raise ChaosmirrorError(f"--split-size {split_size} is too small for part 001's metadata (bundle.json, "
                               f"index.json): the smallest --split-size that works is {need}")  # fmt: skip
    for name, size in sorted(layout.blobs.items(), key=lambda kv: (-kv[1], kv[0])):
        home = next((p for p in parts if not p.oversize and p.size((name, size)) <= split_size), None)
        if home is None:
            home = _Part(len(parts) + 1, {fmt.PART: widest})
            if home.size((name, size)) > split_size:
                if not allow_oversize:
                    raise ChaosmirrorError(_too_large(layout, name, size, split_size, info_size))
                home.oversize = True
            parts.append(home)
        home.add(name, size)
    if len(parts) > MAX_PARTS:
        raise ChaosmirrorError(f"--split-size {split_size} would make {len(parts)} parts, more than {MAX_PARTS}: "
                               "choose a larger size")  # fmt: skip
    return parts


def smallest(layout: Layout, info_size: int) -> str:
    """The smallest --split-size every blob and part 001's metadata fit in, in bytes and readable."""
    widest = len(_part_json(layout, "0" * 64, MAX_PARTS, MAX_PARTS, layout.images))
    need = _Part(1, {fmt.INFO: info_size, fmt.PART: widest, **layout.first}).size()
    for name, size in layout.blobs.items():
        need = max(need, _Part(2, {fmt.PART: widest}).size((name, size)))
    return f"{need} ({human_size(need)})"


def _too_large(layout: Layout, name: str, size: int, split_size: int, info_size: int) -> str:
    users = layout.users.get(name, ())
    used_by = f", used by {', '.join(users[:3])}{' and more' if len(users) > 3 else ''}" if users else ""
    return (f"blob sha256:{name.rsplit('/', 1)[-1]} ({human_size(size)}{used_by}) does not fit in a part of "
            f"--split-size {split_size} ({human_size(split_size)}): the smallest --split-size that works is "
            f"{smallest(layout, info_size)}; or pass --allow-oversize-blob to give it a part of its own")  # fmt: skip


def check_fits(layout: Layout, split_size: int, *, allow_oversize: bool) -> None:
    """Before anything is downloaded: refuse a --split-size that some blob cannot fit in."""
    pack(layout, split_size, info_size=0, allow_oversize=allow_oversize)


def plan(layout: Layout, info: fmt.BundleInfo, split_size: int, *, allow_oversize: bool) -> list[_Part]:
    """Pack, re-planning with more room for bundle.json until its part list fits in part 001."""
    reserve = len(info.to_json())
    for _ in range(10):
        parts = pack(layout, split_size, info_size=reserve, allow_oversize=allow_oversize)
        placeholder = fmt.PartEntry("x" * 200 + ".000", 10**15, "0" * 64, layout.images)
        need = len(replace(info, format=fmt.SPLIT_FORMAT, id="0" * 64, parts=(placeholder,) * len(parts)).to_json())
        if need <= reserve:
            return parts
        reserve = need
    raise BundleError("cannot plan the parts: bundle.json keeps growing")  # pragma: no cover


def bundle_id(hashes: dict[str, str], split_size: int) -> str:
    """The id of a split bundle: its payload files' `hash  name` lines, sorted, and the size it was
    split at, hashed. The same images split the same way give the same parts, byte for byte."""
    lines = "".join(sorted(f"{h}  {n}\n" for n, h in hashes.items() if n not in (fmt.INFO, fmt.SUMS, fmt.PART)))
    return hashlib.sha256(f"{lines}split {split_size}\n".encode()).hexdigest()


def write_parts(root: Path, output: Path, info: fmt.BundleInfo, layout: Layout, hashes: dict[str, str], *,
                split_size: int, allow_oversize: bool, on_phase: Callable[[str], None]) -> fmt.BundleInfo:  # fmt: skip
    """Write parts 002..N into `root/../split` (keeping those an interrupted run finished), then part
    001 with bundle.json listing them all, then move them beside `output`, 001 last."""
    parts = plan(layout, info, split_size, allow_oversize=allow_oversize)
    staging = root.parent / "split"
    staging.mkdir(exist_ok=True)
    remove_stale(staging)
    ident, count = bundle_id(hashes, split_size), len(parts)
    entries: list[fmt.PartEntry] = []
    for part in parts[1:]:
        name = fmt.part_name(output.name, part.number)
        images = _images_of(layout, part.blobs)
        meta = _part_json(layout, ident, part.number, count, images)
        sums = _sums(hashes, part.blobs, {fmt.PART: meta})
        digest = _kept(staging / name, output.with_name(name), meta, sums)
        if digest:
            on_phase(f"kept {name} from the interrupted export")
        else:
            on_phase(f"writing {name} ({human_size(part.size())})" + (" (larger than --split-size: one blob)"
                                                                       if part.oversize else ""))  # fmt: skip
            digest = fmt.write_tar(staging / name, root, [fmt.PART, fmt.SUMS, "blobs", "blobs/sha256", *part.blobs],
                                   fixed=True, extra={fmt.PART: meta, fmt.SUMS: sums})  # fmt: skip
            _sidecar(staging / name).write_text(f"{digest}  {name}\n")
        entries.append(fmt.PartEntry(name, _size_of(staging / name, output.with_name(name)), digest, images))
    first = parts[0]
    name = fmt.part_name(output.name, 1)
    images = _images_of(layout, first.blobs)
    meta = _part_json(layout, ident, 1, count, images)
    size, data = 0, b""
    for _ in range(10):  # part 001 lists its own size, which depends on how long that list is
        full = replace(info, format=fmt.SPLIT_FORMAT, id=ident,
                       parts=(fmt.PartEntry(name, size, "", images), *entries))  # fmt: skip
        data = full.to_json()
        sums = _sums(hashes, [fmt.LAYOUT, fmt.INDEX, *first.blobs], {fmt.INFO: data, fmt.PART: meta})
        files = [len(data), len(sums), len(meta), *(layout.first[n] for n in (fmt.LAYOUT, fmt.INDEX)),
                 *(layout.blobs[b] for b in first.blobs)]  # fmt: skip
        if tar_size(files) == size:
            break
        size = tar_size(files)
    on_phase(f"writing {name} ({human_size(size)}) with bundle.json")
    names = [fmt.INFO, fmt.SUMS, fmt.PART, fmt.LAYOUT, fmt.INDEX, "blobs", "blobs/sha256", *first.blobs]
    fmt.write_tar(staging / name, root, names, fixed=True, extra={fmt.INFO: data, fmt.SUMS: sums, fmt.PART: meta})
    for entry in (*entries, full.parts[0]):
        where = staging / entry.name if (staging / entry.name).exists() else output.with_name(entry.name)
        if where.stat().st_size != entry.size:
            raise BundleError(f"{where} is {where.stat().st_size} bytes, not the planned {entry.size}; run the same "
                              "command again")  # fmt: skip
    for entry in (*entries, full.parts[0]):  # part 001, which holds bundle.json, appears last
        if (staging / entry.name).exists():
            (staging / entry.name).replace(output.with_name(entry.name))
    return full


def _sums(hashes: dict[str, str], names: list[str], extra: dict[str, bytes]) -> bytes:
    lines = [f"{hashlib.sha256(data).hexdigest()}  {n}\n" for n, data in extra.items()]
    return "".join(lines + [f"{hashes[n]}  {n}\n" for n in names]).encode()


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _size_of(*places: Path) -> int:
    return next(p for p in places if p.exists()).stat().st_size


def _kept(staged: Path, placed: Path, meta: bytes, sums: bytes) -> str:
    """The sha256 of a part an interrupted export finished (in the staging folder, or already moved
    beside the output), when its part.json and SHA256SUMS are the planned ones; else ""."""
    side = _sidecar(staged)
    if not side.is_file():
        return ""
    for path in (staged, placed):
        if not path.is_file():
            continue
        try:
            index = index_tar(path)
            files = index.files()
            same = all(n in files and read_member(index, files[n], cap=fmt.CAPS[n], what=n) == want
                       for n, want in ((fmt.PART, meta), (fmt.SUMS, sums)))  # fmt: skip
        except BundleError:
            same = False
        if same:
            return side.read_text().split(" ", 1)[0]
    return ""
