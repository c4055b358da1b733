"""Pure planning: release images x target x what the registries hold -> copy / skip / fail actions.

Nothing here does I/O. `survey` fetches what a plan needs (`Observed`), `mirror` carries it out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from chaosmirror.errors import ChaosmirrorError
from chaosmirror.manifest import Descriptor, Manifest, Platform, filter_index, platform_children, select
from chaosmirror.ref import ImageRef, LayoutRef, SourceMirror, Target, pull_ref
from chaosmirror.release import Image


@dataclass(frozen=True)
class Item:
    """One source image and where it goes. `uses` says which group/component entries need it."""

    src: ImageRef
    pull: ImageRef | LayoutRef  # where it is read: a registry, or an OCI layout (a bundle being imported)
    dst: ImageRef
    uses: tuple[str, ...]


def collect_items(images: Iterable[Image], target: Target, mirrors: tuple[SourceMirror, ...] = ()) -> list[Item]:
    """One item per distinct source reference, in manifest order."""
    by_src: dict[ImageRef, list[str]] = {}
    for image in images:
        by_src.setdefault(image.ref, []).append(f"{image.group}/{image.component}")
    return [Item(src, pull_ref(src, mirrors), target.place(src), tuple(uses)) for src, uses in by_src.items()]


@dataclass(frozen=True)
class Observed:
    """What the survey saw of one item. `error` is set when the source could not be read."""

    top: Manifest | None = None
    target_digest: str | None = None
    children: dict[str, Manifest] = field(default_factory=dict)
    platform: Platform | None = None  # of a single-platform image, read from its config
    error: str = ""
    target_error: str = ""  # the target could not tell what it holds at the tag
    # Config digests of what the target holds at the tag (of each platform, for an index): how a
    # copy that cannot keep digests (the Docker engine) recognises an image already there.
    target_configs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Selection:
    """What the target gets. Each of `parts` (a manifest) is copied by digest; then `index`, when
    set, is put at the tag. Without an index there is one part, copied to the tag itself."""

    digest: str
    platforms: tuple[str, ...]
    parts: tuple[Descriptor, ...] = ()
    index: Manifest | None = None
    error: str = ""
    left_out: tuple[str, ...] = ()  # what of the source is not copied, besides other platforms


def choose(top: Manifest, wanted: tuple[Platform, ...], platform: Platform | None = None, *,
           alone: bool = False) -> Selection:  # fmt: skip
    """The part of `top` to copy for the wanted platforms (all of it when none are wanted).

    An index is copied as its platform manifests, in parallel, then the index itself, byte for byte
    (the same digest); a subset of platforms gets a filtered index, with the BuildKit attestations
    of the kept platforms; one platform, its manifest alone (the same digest as in the source, so
    a signature of it still verifies; its attestations cannot come along, and `left_out` says so).
    With `alone`, one wanted platform is always its manifest alone, even when it is the index's only
    one (an engine that pushes one platform's image, the Docker engine)."""
    if not top.is_index:
        found = (str(platform),) if platform else ()
        part = Descriptor(top.media_type, top.digest, len(top.data))
        if wanted and platform and not any(w.matches(platform) for w in wanted):
            return Selection(top.digest, found, error=f"has only {platform}, not {', '.join(map(str, wanted))}")
        return Selection(top.digest, found, (part,))
    runnable = platform_children(top)
    everything = tuple(str(d.platform) for d in runnable)
    if not wanted:
        return Selection(top.digest, everything, tuple(top.children()), top)
    chosen = select(top, wanted)
    images = [d for d in chosen if d in runnable]
    if not images:
        return Selection(
            top.digest,
            everything,
            error=f"has no {', '.join(map(str, wanted))} (it has {', '.join(everything) or 'no platforms'})",
        )
    names = tuple(str(d.platform) for d in images)
    if len(images) == len(runnable) and not alone:
        return Selection(top.digest, names, tuple(top.children()), top)
    if len(images) == 1:
        dropped = len(chosen) - 1
        note = (f"{dropped} attestation manifest{'s' if dropped > 1 else ''} of {names[0]} (build provenance, SBOM): "
                "a platform copied as its manifest alone has no index to carry it")  # fmt: skip
        return Selection(images[0].digest, names, (images[0],), left_out=(note,) if dropped else ())
    filtered = filter_index(top, chosen)
    return Selection(filtered.digest, names, tuple(chosen), filtered)


def manifests_to_read(top: Manifest, selection: Selection) -> list[Descriptor]:
    """Platform manifests the survey must read to know every blob a copy will move."""
    return list(selection.parts) if top.is_index else []


@dataclass(frozen=True)
class Part:
    """One manifest a copy moves, with the (digest, size) of every blob it references."""

    digest: str
    layers: tuple[tuple[str, int], ...]  # every blob a registry stores for it: config and layers, less foreign ones
    size: int
    config: str = ""

    @property
    def blobs(self) -> frozenset[str]:
        return frozenset(d for d, _ in self.layers)


@dataclass(frozen=True)
class Action:
    kind: Literal["copy", "skip", "fail"]
    item: Item
    digest: str = ""  # what the target holds at the tag once done
    source_digest: str = ""
    selection: Selection | None = None
    parts: tuple[Part, ...] = ()
    reason: str = ""
    twin: Item | None = None  # a skip whose outcome is that of another item's copy (same image, same place)
    manifests: tuple[Manifest, ...] = ()  # what a copy writes: each part's manifest, and the index if any

    @property
    def size(self) -> int:
        """Bytes of every distinct blob and manifest the copy moves."""
        sizes = {d: n for part in self.parts for d, n in part.layers}
        return sum(sizes.values()) + sum(part.size - sum(n for _, n in part.layers) for part in self.parts)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)


def parts_of(top: Manifest, selection: Selection, children: dict[str, Manifest]) -> tuple[Part, ...]:
    """The manifests a copy of `selection` moves, each with every blob it references."""
    manifests = [top] if not top.is_index else [children[d.digest] for d in selection.parts if d.digest in children]
    out = []
    for manifest in manifests:
        layers = tuple(sorted({b.digest: b.size for b in manifest.stored_blobs()}.items()))
        config = manifest.config().digest if not manifest.is_index else ""
        out.append(Part(manifest.digest, layers, len(manifest.data) + sum(n for _, n in layers), config))
    return tuple(out)


# Whether the target already holds an image it does not hold by digest (an engine that pushes new
# manifests recognises its own earlier copies another way): the reason to skip, or "".
Recognise = Callable[[Observed, tuple[Part, ...]], str]


def decide(item: Item, seen: Observed, wanted: tuple[Platform, ...], *, exact: bool = True,
           recognise: Recognise | None = None) -> Action:  # fmt: skip
    """Copy, skip (the target already holds the digest, or `recognise` says it holds the image) or
    fail, for one item. An engine that cannot keep digests (`exact` false) copies one platform's
    manifest alone."""
    if seen.error or seen.top is None:
        return Action("fail", item, reason=seen.error or "source not read")
    if seen.target_error:
        return Action("fail", item, source_digest=seen.top.digest, reason=seen.target_error)
    selection = choose(seen.top, wanted, seen.platform, alone=not exact)
    if selection.error:
        return Action(
            "fail", item, source_digest=seen.top.digest, selection=selection, reason=f"the image {selection.error}"
        )
    if seen.target_digest == selection.digest:
        return Action(
            "skip", item, selection.digest, seen.top.digest, selection, reason="target already holds this digest"
        )
    parts = parts_of(seen.top, selection, seen.children)
    held = recognise(seen, parts) if recognise and seen.target_digest else ""
    if held:
        return Action("skip", item, seen.target_digest or "", seen.top.digest, selection, reason=held)
    reason = "not in target" if seen.target_digest is None else f"target holds {seen.target_digest[:19]}"
    written = [seen.children[d.digest] for d in selection.parts if d.digest in seen.children] or [seen.top]
    if selection.index is not None:
        written.append(selection.index)
    return Action("copy", item, selection.digest, seen.top.digest, selection, parts, reason,
                  manifests=tuple(written))  # fmt: skip


class PlanConflict(ChaosmirrorError):
    """Two different images would land on the same destination name and tag."""


def build_plan(items: list[Item], observed: dict[Item, Observed], wanted: tuple[Platform, ...] = (), *,
               exact: bool = True, recognise: Recognise | None = None) -> Plan:  # fmt: skip
    """Decide every item; refuse, before anything is copied, two sources that collide at the target."""
    actions = [decide(item, observed[item], wanted, exact=exact, recognise=recognise) for item in items]
    by_dst: dict[ImageRef, list[Action]] = {}
    for action in actions:
        if action.kind != "fail":
            by_dst.setdefault(action.item.dst, []).append(action)
    clashes = [group for group in by_dst.values() if len({a.digest for a in group}) > 1]
    if clashes:
        lines = [f"  {g[0].item.dst} <- " + ", ".join(f"{a.item.src} ({a.digest[:19]})" for a in g) for g in clashes]
        raise PlanConflict(
            "different images would land on the same name and tag in the target; "
            "nothing was copied:\n" + "\n".join(lines)
        )
    out = []
    for action in actions:
        first = by_dst.get(action.item.dst, [action])[0]
        if action is not first and action.kind == "copy":
            out.append(
                Action(
                    "skip",
                    action.item,
                    action.digest,
                    action.source_digest,
                    action.selection,
                    reason=f"same image as {first.item.src}",
                    twin=first.item,
                )
            )
        else:
            out.append(action)
    return Plan(tuple(out))
