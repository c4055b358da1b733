"""Release manifests: load and validate them into frozen values, find releases by name, diff two.

A manifest error names the file, the line and the key (`1.47.0.yaml:14: groups.ddcr.images[2].image:
"harness/chaos-ddcr" has no tag`), so a typo never silently drops an image. See docs/release-manifests.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chaosmirror.errors import ManifestError, RefError, UnknownReleaseError
from chaosmirror.ref import ImageRef

SCHEMA = "chaosmirror.release/v1"
GROUPS = ("ddcr", "dedicated", "experiment")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_MINOR_RE = re.compile(r"^(\d+)\.(\d+)$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

try:  # the C loader is several times faster; both give the same nodes
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class Source:
    key: str
    title: str
    url: str = ""
    path: str = ""
    sha256: str = ""  # of the file the list was read from (`chaosmirror scan` records it)


@dataclass(frozen=True)
class Image:
    group: str
    component: str
    ref: ImageRef
    source: str
    optional: bool = False  # pulled only when a feature is on, or by one kind of install (see the notes)


@dataclass(frozen=True)
class Group:
    name: str
    source: str
    images: tuple[Image, ...]
    note: str = ""


@dataclass(frozen=True)
class Release:
    name: str
    revision: int
    sources: dict[str, Source]
    groups: dict[str, Group]
    notes: str = ""
    path: Path | None = field(default=None, compare=False)
    parts: tuple[Release, ...] = field(default=(), compare=False, repr=False)  # what `combine` joined

    @property
    def names(self) -> tuple[str, ...]:
        """The releases this one stands for: itself, or each release `combine` joined, oldest first."""
        return tuple(p.name for p in self.parts) or (self.name,)

    def needed_by(self, groups: Iterable[str] = (), *, optional: bool = True) -> dict[ImageRef, tuple[str, ...]]:
        """Which of `names` need each image of the chosen groups."""
        out: dict[ImageRef, dict[str, None]] = {}
        for part in self.parts or (self,):
            for image in part.images(groups, optional=optional):
                out.setdefault(image.ref, {})[part.name] = None
        return {ref: tuple(names) for ref, names in out.items()}

    def images(self, groups: Iterable[str] = (), *, optional: bool = True) -> list[Image]:
        """Images of the chosen groups (all when none are chosen), in manifest order; without the
        images marked optional when `optional` is False."""
        chosen = list(groups) or list(self.groups)
        for name in chosen:
            if name not in GROUPS:
                raise ManifestError(f"unknown group {name!r}; groups are {', '.join(GROUPS)}")
        return [
            image
            for name in chosen
            if name in self.groups
            for image in self.groups[name].images
            if optional or not image.optional
        ]

    def without_optional(self) -> Release:
        """The same release with the images marked optional left out (for `--no-optional`)."""
        groups = {
            name: dataclasses.replace(group, images=tuple(i for i in group.images if not i.optional))
            for name, group in self.groups.items()
        }
        return dataclasses.replace(self, groups=groups)


def version_key(name: str) -> tuple[int, ...]:
    match = _VERSION_RE.match(name)
    return tuple(int(x) for x in match.groups()) if match else (-1,)


def combine(releases: Iterable[Release]) -> Release:
    """Several releases as one, named like `1.93.0+1.94.4`: per group, every image of each release
    once, oldest release first (so where several list a component, the newest one's image comes
    last, the one `config` writes); required when any release requires it. One release is itself."""
    chosen = sorted({r.name: r for r in releases}.values(), key=lambda r: version_key(r.name))
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise ManifestError("name at least one release")
    sources: dict[str, Source] = {}
    images: dict[str, dict[tuple[ImageRef, str], Image]] = {}
    notes: dict[str, list[str]] = {}
    for rel in chosen:
        keys: dict[str, str] = {}
        for key, source in rel.sources.items():
            keys[key] = key if sources.get(key, source) == source else f"{key}@{rel.name}"
            sources[keys[key]] = dataclasses.replace(source, key=keys[key])
        for name, group in rel.groups.items():
            if group.note:
                notes.setdefault(name, []).append(f"{rel.name}: {group.note}")
            listed = images.setdefault(name, {})
            for image in group.images:
                seen = listed.get((image.ref, image.component))
                if seen is None or (seen.optional and not image.optional):
                    listed[(image.ref, image.component)] = dataclasses.replace(image, source=keys[image.source])
    groups = {
        name: Group(name, next(iter(listed.values())).source if listed else "", tuple(listed.values()),
                    "; ".join(notes.get(name, [])))
        for name, listed in sorted(images.items(), key=lambda kv: GROUPS.index(kv[0]))
    }  # fmt: skip
    return Release("+".join(r.name for r in chosen), max(r.revision for r in chosen), sources, groups,
                   "\n\n".join(f"{r.name}: {r.notes}" for r in chosen if r.notes), parts=tuple(chosen))  # fmt: skip


# --- loading -------------------------------------------------------------------------------------


class _Doc:
    """Walks YAML nodes so that every error can point at a line and a dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, node: yaml.Node | None, key: str, message: str) -> ManifestError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        where = f"{key}: " if key else ""
        return ManifestError(f"{self.path}{line}: {where}{message}")

    def entries(self, node: yaml.Node, key: str) -> dict[str, yaml.Node]:
        """A mapping's values by key; a key written twice is an error (plain YAML keeps the last)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "expected a mapping")
        out: dict[str, yaml.Node] = {}
        for k_node, v_node in node.value:
            name = str(k_node.value)
            if name in out:
                raise self.error(k_node, f"{key}.{name}" if key else name, "appears twice")
            out[name] = v_node
        return out

    def mapping(
        self, node: yaml.Node, key: str, *, required: set[str], optional: Iterable[str] = ()
    ) -> dict[str, yaml.Node]:
        out = self.entries(node, key)
        allowed = required | set(optional)
        for name in out:
            if name not in allowed:
                sub = f"{key}.{name}" if key else name
                k_node = next(k for k, _ in node.value if k.value == name)
                raise self.error(k_node, sub, f"unknown key (allowed here: {', '.join(sorted(allowed))})")
        for name in sorted(required - out.keys()):
            raise self.error(node, key or "(top level)", f"missing required key {name!r}")
        return out

    def string(
        self, node: yaml.Node, key: str, *, pattern: re.Pattern[str] | None = None, allow_empty: bool = False
    ) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
        ):
            raise self.error(node, key, "expected a string")
        text = str(node.value).strip()
        if not text and not allow_empty:
            raise self.error(node, key, "must not be empty")
        if pattern is not None and not pattern.match(text):
            raise self.error(node, key, f"{text!r} does not match {pattern.pattern}")
        return text

    def boolean(self, node: yaml.Node, key: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            raise self.error(node, key, "expected true or false")
        return str(node.value).lower() in ("true", "yes", "on")

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "expected a list")
        return list(node.value)


def load_release(path: Path) -> Release:
    """Load and validate one manifest file."""
    doc = _Doc(path)
    try:
        with open(path, encoding="utf-8") as stream:
            root = yaml.compose(stream, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc
    if root is None:
        raise ManifestError(f"{path}: the file is empty")
    top = doc.mapping(root, "", required={"schema", "release", "sources", "groups"}, optional={"revision", "notes"})
    schema = doc.string(top["schema"], "schema")
    if schema != SCHEMA:
        raise doc.error(top["schema"], "schema", f"{schema!r} is not supported; use {SCHEMA!r}")
    name = doc.string(top["release"], "release", pattern=_VERSION_RE)
    if path.stem != name:
        raise doc.error(top["release"], "release", f"{name!r} does not match the file name {path.name!r}")
    revision = 1
    if "revision" in top:
        text = doc.string(top["revision"], "revision", pattern=re.compile(r"^[1-9][0-9]*$"))
        revision = int(text)
    notes = doc.string(top["notes"], "notes", allow_empty=True) if "notes" in top else ""

    sources: dict[str, Source] = {}
    src_map = doc.entries(top["sources"], "sources")
    if not src_map:
        raise doc.error(top["sources"], "sources", "name at least one source")
    for key, node in src_map.items():
        where = f"sources.{key}"
        if not _KEY_RE.match(key):
            raise doc.error(node, where, "source keys are lowercase letters, digits and -")
        fields = doc.mapping(node, where, required={"title"}, optional={"url", "path", "sha256"})
        given = {
            f: doc.string(fields[f], f"{where}.{f}", pattern=_SHA256_RE if f == "sha256" else None)
            for f in ("title", "url", "path", "sha256")
            if f in fields
        }
        sources[key] = Source(key, **given)

    groups: dict[str, Group] = {}
    group_map = doc.mapping(top["groups"], "groups", required=set(), optional=set(GROUPS))
    if not group_map:
        raise doc.error(top["groups"], "groups", f"list at least one group ({', '.join(GROUPS)})")
    for gname, gnode in group_map.items():
        groups[gname] = _load_group(doc, gname, gnode, sources)
    return Release(name, revision, sources, groups, notes, path)


def _load_group(doc: _Doc, gname: str, gnode: yaml.Node, sources: dict[str, Source]) -> Group:
    where = f"groups.{gname}"
    fields = doc.mapping(gnode, where, required={"images"}, optional={"source", "note"})
    note = doc.string(fields["note"], f"{where}.note") if "note" in fields else ""
    group_source = ""
    if "source" in fields:
        group_source = _source_key(doc, fields["source"], f"{where}.source", sources)
    image_nodes = doc.sequence(fields["images"], f"{where}.images")
    if not image_nodes and not note:
        raise doc.error(fields["images"], f"{where}.images", "an empty group needs a note saying why")
    if image_nodes and not group_source:
        raise doc.error(gnode, where, "missing required key 'source'")
    images: list[Image] = []
    seen: dict[ImageRef, int] = {}
    for i, inode in enumerate(image_nodes):
        iwhere = f"{where}.images[{i}]"
        ifields = doc.mapping(inode, iwhere, required={"component", "image"}, optional={"source", "optional"})
        component = doc.string(ifields["component"], f"{iwhere}.component", pattern=_KEY_RE)
        text = doc.string(ifields["image"], f"{iwhere}.image")
        try:
            ref = ImageRef.parse(text)
        except RefError as exc:
            raise doc.error(ifields["image"], f"{iwhere}.image", str(exc)) from None
        if not ref.tag:
            raise doc.error(
                ifields["image"],
                f"{iwhere}.image",
                f"{text!r} has no tag; write the exact tag (tags never derive from the release)",
            )
        if ref in seen:
            raise doc.error(
                ifields["image"], f"{iwhere}.image", f"{ref} is already listed as {where}.images[{seen[ref]}]"
            )
        seen[ref] = i
        source = group_source
        if "source" in ifields:
            source = _source_key(doc, ifields["source"], f"{iwhere}.source", sources)
        optional = doc.boolean(ifields["optional"], f"{iwhere}.optional") if "optional" in ifields else False
        images.append(Image(gname, component, ref, source, optional))
    return Group(gname, group_source, tuple(images), note)


def _source_key(doc: _Doc, node: yaml.Node, where: str, sources: dict[str, Source]) -> str:
    key = doc.string(node, where)
    if key not in sources:
        raise doc.error(node, where, f"{key!r} is not one of the sources ({', '.join(sources)})")
    return key


# --- finding releases ----------------------------------------------------------------------------


def bundled_dir() -> Path:
    """The manifests shipped with chaosmirror: in the wheel, or beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "release-manifests", here.parent / "release-manifests"):
        if candidate.is_dir():
            return candidate
    raise ManifestError(f"no bundled release manifests next to {here}; reinstall chaosmirror")


def manifests_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """--manifests DIR, else $CHAOSMIRROR_MANIFESTS, else the bundled folder."""
    chosen = option or os.environ.get("CHAOSMIRROR_MANIFESTS")
    if not chosen:
        return bundled_dir()
    path = Path(chosen)
    if not path.is_dir():
        raise ManifestError(f"manifest folder {path} does not exist")
    return path


class Catalog:
    """The releases in one manifest folder, found by file name and loaded on demand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        files = [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()]
        self._files = {p.stem: p for p in files}
        for stem, p in self._files.items():
            if not _VERSION_RE.match(stem):
                raise ManifestError(f"{p}: a manifest file is named after its release, like 1.47.0.yaml")

    def names(self) -> list[str]:
        """Every known release, oldest first."""
        return sorted(self._files, key=version_key)

    def resolve(self, name: str) -> str:
        """`1.47.0` exactly, or `1.53` as the newest known 1.53.x."""
        name = name.strip().removeprefix("v")
        if name in self._files:
            return name
        if _MINOR_RE.match(name):
            matches = [n for n in self.names() if n.startswith(name + ".")]
            if matches:
                return matches[-1]
        known = self.names()
        listing = ", ".join(known) if known else "(none)"
        raise UnknownReleaseError(f"unknown release {name!r}; known releases in {self.folder}: {listing}")

    def load(self, name: str) -> Release:
        return load_release(self._files[self.resolve(name)])

    def load_many(self, names: Iterable[str]) -> Release:
        """Several releases as one (`combine`); a single name gives that release itself."""
        return combine(self.load(name) for name in names)

    def load_all(self) -> list[Release]:
        return [load_release(self._files[n]) for n in self.names()]


# --- diff ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: str  # "added", "removed", "retagged"
    group: str
    component: str
    old: ImageRef | None
    new: ImageRef | None


def diff_releases(old: Release, new: Release, groups: Iterable[str] = ()) -> list[Change]:
    """Images added, removed and retagged from `old` to `new`, matched by group and repository."""
    chosen = list(groups)

    def index(release: Release) -> dict[tuple[str, str, str], list[Image]]:
        out: dict[tuple[str, str, str], list[Image]] = {}
        for image in release.images(chosen):
            out.setdefault((image.group, image.ref.registry, image.ref.repository), []).append(image)
        return out

    before, after = index(old), index(new)
    changes: list[Change] = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (GROUPS.index(k[0]), k[2])):
        olds = {i.ref: i for i in before.get(key, [])}
        news = {i.ref: i for i in after.get(key, [])}
        gone = [olds[r] for r in olds if r not in news]
        came = [news[r] for r in news if r not in olds]
        while gone and came:
            o, n = gone.pop(0), came.pop(0)
            changes.append(Change("retagged", key[0], n.component, o.ref, n.ref))
        changes += [Change("removed", key[0], i.component, i.ref, None) for i in gone]
        changes += [Change("added", key[0], i.component, None, i.ref) for i in came]
    return changes
