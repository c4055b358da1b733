"""The base of a delta bundle, which images a delta leaves out, and whether a target holds them.

`bundle export --since OLD` names the base: an older bundle (its file, or part 001 of a split one),
whose bundle.json records exactly what it holds, or a release name, when only the source can tell.
An image is left out when the base holds it exactly as this export would write it: the same name
and tag, the same digest written (so the same platforms), from the same source digest. The delta's
bundle.json keeps, for each image left out, the base's own record (digest written, platforms,
blobs), so its import decides from the records alone: the target holds the image when it holds
the recorded digest, or, after a docker-archive base (whose import pushed new digests), the
recorded image config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.manifest import Manifest
from chaosmirror.plan import Item, Observed, Selection, collect_items, parts_of
from chaosmirror.ref import ImageRef, Target
from chaosmirror.registry import Registries
from chaosmirror.release import Release

UNPLACED = Target("bundle.invalid")  # exports have no target; items still carry a destination value


def hce_name(ref: ImageRef) -> str:
    return f"{ref.name}:{ref.tag}"


@dataclass(frozen=True)
class Base:
    """What a delta is taken against: the records of a bundle, or (a release name) the source."""

    name: str  # the base's release
    records: tuple[fmt.BundleImage, ...] = ()
    release: Release | None = None
    label: str = ""  # the base bundle, for bundle.json and messages: "hce-1.46.0.tar (oci, id 3f2a...)"

    @property
    def from_bundle(self) -> bool:
        return self.release is None


def from_bundle(paths: Sequence[Path]) -> Base:
    """The base recorded in a bundle's bundle.json (what it holds, and what it left to its own base)."""
    from chaosmirror.bundleset import read_info

    info = read_info(paths)
    ident = f", id {info.id[:12]}" if info.id else ""
    label = f"{paths[0].name} ({info.kind}{ident}, written {info.created})"
    return Base(info.release, (*info.images, *info.unchanged), label=label)


def from_release(release: Release) -> Base:
    return Base(release.name, release=release)


def record(item: Item, seen: Observed, selection: Selection) -> fmt.BundleImage:
    """What an export of `item` holds, as bundle.json records it (without its size and archives)."""
    assert seen.top is not None
    written: list[Manifest] = [seen.top] if selection.digest == seen.top.digest else []
    written += [seen.children[d.digest] for d in selection.parts if d.digest in seen.children]
    written += [selection.index] if selection.index is not None and selection.index.digest != seen.top.digest else []
    blobs = [m.digest for m in written] + [d for part in parts_of(seen.top, selection, seen.children)
                                           for d, _ in part.layers]  # fmt: skip
    return fmt.BundleImage(str(item.src), hce_name(item.src), selection.digest, selection.platforms, 0, item.uses,
                           seen.top.digest, blobs=tuple(dict.fromkeys(blobs)))  # fmt: skip


def left_out(base: Base, items: list[Item], observed: dict[Item, Observed], selections: dict[Item, Selection],
             registries: Registries, *, groups: tuple[str, ...] = (), optional: bool = True,
             mirrors: tuple[object, ...] = ()) -> dict[Item, fmt.BundleImage]:  # fmt: skip
    """The items the base holds exactly as this export would write them, each with the record of
    it that the delta keeps (the base bundle's own, or one made from the source)."""
    out: dict[Item, fmt.BundleImage] = {}
    if base.release is None:
        held = {r.name: r for r in base.records}
        for item in items:
            seen, selection, before = observed[item], selections.get(item), held.get(hce_name(item.src))
            if before is None or seen.top is None or selection is None:
                continue
            if before.source_digest == seen.top.digest and before.digest == selection.digest:
                out[item] = replace(before, uses=item.uses)
        return out
    old = collect_items(base.release.images(groups, optional=optional), UNPLACED, mirrors)  # type: ignore[arg-type]
    by_name = {hce_name(i.src): i for i in old}
    for item in items:
        seen, selection, listed = observed[item], selections.get(item), by_name.get(hce_name(item.src))
        if listed is None or seen.top is None or selection is None:
            continue
        assert isinstance(listed.pull, ImageRef)
        if registries.for_ref(listed.pull, "src").digest(listed.pull) == seen.top.digest:
            out[item] = record(item, seen, selection)
    return out


def held_by(record: fmt.BundleImage, digest: str | None, configs: frozenset[str]) -> str:
    """Why a target that holds `digest` at the image's tag (and images with `configs`) holds the
    image `record` describes, or "" when it does not."""
    if digest is not None and digest == record.digest:
        return "the digest the base bundle recorded"
    if digest is not None and configs & set(record.blobs):
        return f"the same image (its config), pushed as {digest[:19]}"
    return ""
