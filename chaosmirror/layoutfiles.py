"""The files of a bundle being written: blobs in the shared folder, then index.json, bundle.json,
SHA256SUMS and the tar (or the parts of a split one, `split`), or a docker-archive folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror import split
from chaosmirror.errors import BundleError, ChaosmirrorError
from chaosmirror.manifest import Manifest, references
from chaosmirror.ref import LayoutRef


def write_blob(blobs: Path, data: bytes) -> None:
    LayoutRef(blobs.parent, "", blobs).blob_path("sha256:" + hashlib.sha256(data).hexdigest()).write_bytes(data)


def read_small(layout: LayoutRef) -> Callable[[str], bytes | None]:
    """Reads a blob of `layout` if it is small enough to be a manifest; None if absent or large."""

    def read(digest: str) -> bytes | None:
        path = layout.blob_path(digest)
        return path.read_bytes() if path.exists() and path.stat().st_size <= fmt.SMALL else None

    return read


def tree_size(blobs: Path, top: str) -> int:
    """Bytes of `top` and every blob it references, counting each once."""
    layout = LayoutRef(blobs.parent, "", blobs)
    total = 0
    for digest in references(top, read_small(layout)):
        path = layout.blob_path(digest)
        if not path.exists():
            raise ChaosmirrorError(f"the export lacks blob {digest}")
        total += path.stat().st_size
    return total


def finish_oci(work: Path, output: Path, info: fmt.BundleInfo, *, split_size: int | None, allow_oversize: bool,
                on_phase: Callable[[str], None]) -> None:  # fmt: skip
    root = work / "bundle"
    read = read_small(LayoutRef(root, ""))
    held = {image.source: held_by(image, read) for image in info.images}
    held |= {image.source: held_by(image, read, whole=False) for image in info.unchanged if image.attached}
    keep = sorted({fmt.blob_name(d) for digests in held.values() for d in digests})
    for path in (root / "blobs" / "sha256").iterdir():
        if f"blobs/sha256/{path.name}" not in keep:
            path.unlink()  # left over from an earlier, different export into the same work folder
    entries = [{"mediaType": Manifest.from_bytes((root / fmt.blob_name(i.digest)).read_bytes()).media_type,
                "digest": i.digest, "size": (root / fmt.blob_name(i.digest)).stat().st_size,
                "annotations": {fmt.REF_NAME: i.source, fmt.HCE_NAME: i.name}} for i in info.images]  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    (root / fmt.INDEX).write_text(json.dumps(index, indent=2) + "\n")
    (root / fmt.LAYOUT).write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    (root / fmt.INFO).write_bytes(info.to_json())
    hashes = {name: fmt.sha256_file(root / name) for name in [fmt.INFO, fmt.LAYOUT, fmt.INDEX, *keep]}
    for name in keep:
        if hashes[name] != name.rsplit("/", 1)[1]:
            (root / name).unlink()
            raise BundleError(f"{root / name} was damaged on disk and is removed; run the same command again")
    if split_size:
        users: dict[str, list[str]] = {}
        for source, digests in held.items():
            for digest in digests:
                users.setdefault(fmt.blob_name(digest), []).append(source)
        layout = split.Layout(info.release, {n: (root / n).stat().st_size for n in keep},
                              {n: tuple(dict.fromkeys(u)) for n, u in users.items()},
                              {n: (root / n).stat().st_size for n in (fmt.LAYOUT, fmt.INDEX)})  # fmt: skip
        del hashes[fmt.INFO]
        split.write_parts(root, output, info, layout, hashes, split_size=split_size, allow_oversize=allow_oversize,
                          on_phase=on_phase)  # fmt: skip
    else:
        (root / fmt.SUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in hashes.items()))
        fmt.write_tar(output, root, [fmt.INFO, fmt.SUMS, fmt.LAYOUT, fmt.INDEX, "blobs", "blobs/sha256", *keep])
    shutil.rmtree(work, ignore_errors=True)


def finish_archives(work: Path, output: Path, info: fmt.BundleInfo) -> None:
    files = sorted(name for image in info.images for _, name in image.archives)
    for path in work.iterdir():
        if path.name not in files:
            path.unlink()
    (work / fmt.INFO).write_bytes(info.to_json())
    (work / fmt.SUMS).write_text(fmt.sums_text(work, [fmt.INFO, *files]))
    try:
        work.rename(output)  # the folder appears under its final name only when complete
    except OSError as exc:
        raise BundleError(f"cannot move {work} to {output}: {exc.strerror or exc}") from None


def held_by(image: fmt.BundleImage, read: Callable[[str], bytes | None], *, whole: bool = True) -> list[str]:
    """Every digest the bundle holds for `image`: its manifests and blobs (`whole`; an image a delta
    left out has none here) and what is attached to it."""
    tops = ([image.digest] if whole else []) + [a.digest for a in image.attached]
    return list(dict.fromkeys(d for top in tops for d in references(top, read)))
