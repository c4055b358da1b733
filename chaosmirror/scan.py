"""`chaosmirror scan`: the images found in HCE's files, written as a validated release manifest.

`finder` finds the references (with file:line); this module names each one's group and component
from the bundled manifests (an unknown image becomes a component named after its repository),
renders the manifest with a `sources` entry per file (path and sha256), and writes it only after it
loads through the same validation as every manifest. Pure but for `read_inputs` and
`write_manifest`, the edges that read the files and write the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chaosmirror.finder import Found, ScanError, Skipped, find_images
from chaosmirror.ref import ImageRef
from chaosmirror.release import GROUPS, Catalog, Release, load_release

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
FLOATING_TAGS = frozenset({"latest", "main-latest", "main", "master", "ci", "nightly", "dev"})

# --- the manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What the bundled manifests call an image (by its name, the last part of the repository)."""

    component: str
    groups: tuple[str, ...]


def known_components(releases: Iterable[Release]) -> dict[str, Known]:
    components: dict[str, str] = {}
    groups: dict[str, set[str]] = {}
    for release in releases:
        for image in release.images():
            components.setdefault(image.ref.name, image.component)
            groups.setdefault(image.ref.name, set()).add(image.group)
    return {name: Known(c, tuple(g for g in GROUPS if g in groups[name])) for name, c in components.items()}


@dataclass(frozen=True)
class Entry:
    group: str
    component: str
    ref: ImageRef
    found: tuple[Found, ...]
    known: bool


def assign(found: Iterable[Found], known: dict[str, Known], *, group: str | None = None) -> list[Entry]:
    """Group and component of each image found once. --group puts all in one group. Otherwise an image
    the bundled manifests put in one group goes there; one they put in several (the log watcher, the
    go-runner) goes to those of them this scan found other images for; an unknown one goes to the
    group most known images of its file went to (of all files, when its file has none), as a
    component named after its repository."""
    places: dict[ImageRef, list[Found]] = {}
    for item in found:
        places.setdefault(item.ref, []).append(item)
    votes: dict[str, dict[str, int]] = {}  # file -> group -> images of one known group
    for ref, where in places.items():
        k = known.get(ref.name)
        if k is not None and len(k.groups) == 1:
            for file in dict.fromkeys(f.file for f in where):
                counts = votes.setdefault(file, dict.fromkeys(GROUPS, 0))
                counts[k.groups[0]] += 1
    overall = {g: sum(v[g] for v in votes.values()) for g in GROUPS}
    entries: list[Entry] = []
    for ref, where in places.items():
        k = known.get(ref.name)
        if group:
            groups: tuple[str, ...] = (group,)
        elif k is not None:
            groups = tuple(g for g in k.groups if overall[g]) if len(k.groups) > 1 else k.groups
            groups = groups or k.groups[:1]
        else:
            counts = votes.get(where[0].file) or overall
            if not any(counts.values()):
                raise ScanError(f"{ref} (at {where[0].where}) and the other images found are no HCE component "
                                "chaosmirror knows: say which group they belong to with --group")  # fmt: skip
            groups = (max(GROUPS, key=lambda g: (counts[g], -GROUPS.index(g))),)
        component = k.component if k is not None else _component_name(ref)
        entries += [Entry(g, component, ref, tuple(where), k is not None) for g in groups]
    return sorted(entries, key=lambda e: GROUPS.index(e.group))  # stable: found order within a group


def _component_name(ref: ImageRef) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", ref.name.lower()).strip("-")
    return name or "image"


@dataclass(frozen=True)
class Input:
    """One scanned file: its name as given, its text and the sha256 of its bytes."""

    name: str
    text: str
    sha256: str


def render_manifest(release: str, entries: list[Entry], inputs: list[Input]) -> str:
    """The release manifest text, each image with a comment saying where it was found."""
    keys = {i.name: f"scanned-{n}" for n, i in enumerate(inputs, 1)}
    files = ", ".join(i.name for i in inputs)
    lines = [
        f"# HCE {release}: written by `chaosmirror scan` from {_comment(files)}.",
        f"# Check the groups and components, then: chaosmirror mirror {release} --manifests DIR --to TARGET",
        "schema: chaosmirror.release/v1",
        f"release: {release}",
        "notes: >-",
        *textwrap.wrap(
            f"Found by chaosmirror scan in {_comment(files)}: the image references of pod specs, container args,"
            " env values, ConfigMap data, helm.sh/images annotations, image maps of values files and plain lists."
            " Groups and components are guessed from the images of the bundled release manifests; an image of no"
            " known component is named after its repository.",
            100,
            initial_indent="  ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        ),
        "sources:",
    ]
    for item in inputs:
        lines += [
            f"  {keys[item.name]}:",
            f"    title: {json.dumps(f'Scanned file {item.name}')}",
            f"    path: {json.dumps(item.name)}",
            f"    sha256: {item.sha256}",
        ]
    lines.append("groups:")
    for group in GROUPS:
        chosen = [e for e in entries if e.group == group]
        if not chosen:
            continue
        source = _group_source(chosen, inputs)
        lines += [f"  {group}:", f"    source: {keys[source]}", "    images:"]
        for e in chosen:
            fields = [f"component: {e.component}", f"image: {_scalar(str(e.ref))}"]
            if source not in {f.file for f in e.found}:
                fields.append(f"source: {keys[e.found[0].file]}")
            more = f" and {len(e.found) - 1} more" if len(e.found) > 1 else ""
            lines.append(f"      - {{{', '.join(fields)}}}  # {_comment(e.found[0].where)}{more}")
    return "\n".join(lines) + "\n"


def _group_source(entries: list[Entry], inputs: list[Input]) -> str:
    """The file most of a group's images were found in (the first of those on a tie)."""
    counts = {i.name: sum(any(f.file == i.name for f in e.found) for e in entries) for i in inputs}
    return max(counts, key=lambda name: counts[name])


def _scalar(text: str) -> str:
    return json.dumps(text) if re.search(r"[\[\]{},#&*!|>'\"%@`]", text.replace("@sha256:", "")) else text


def _comment(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


# --- the edges: files in, a manifest out ---------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    release: Release
    path: Path
    entries: list[Entry]
    skipped: list[Skipped]


def read_inputs(paths: Iterable[Path]) -> list[Input]:
    inputs = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ScanError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScanError(f"{path}: not a text file (YAML or a list of image references)") from None
        inputs.append(Input(str(path), text, hashlib.sha256(data).hexdigest()))
    return inputs


def scan_files(
    paths: Iterable[Path], *, release: str, folder: Path, known: dict[str, Known], group: str | None = None
) -> Scan:
    """Read the files, find their images, write `folder/RELEASE.yaml` and load it back through the
    same validation as every manifest. Nothing is written when the scan finds no image."""
    if not _VERSION_RE.match(release):
        raise ScanError(f"--release {release!r}: name the release like HCE does, e.g. 1.95.0")
    inputs = read_inputs(paths)
    found: list[Found] = []
    skipped: list[Skipped] = []
    for item in inputs:
        findings = find_images(item.text, item.name)
        found += findings.found
        skipped += findings.skipped
    if not found:
        names = ", ".join(i.name for i in inputs)
        raise ScanError(f"no image references found in {names}" + _skipped_hint(skipped))
    entries = assign(found, known, group=group)
    text = render_manifest(release, entries, inputs)
    path = write_manifest(text, folder, release)
    return Scan(Catalog(folder).load(release), path, entries, skipped)


def _skipped_hint(skipped: list[Skipped]) -> str:
    if not skipped:
        return ""
    first = skipped[0]
    return f" ({len(skipped)} values in image positions were no usable reference, first {first.text!r}: {first.reason})"


def write_manifest(text: str, folder: Path, release: str) -> Path:
    """Validate `text` as RELEASE.yaml, then write it into `folder` (never over an existing file).
    The folder must stay usable as `--manifests DIR`, so one holding other files is refused first."""
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / f"{release}.yaml"
        trial.write_text(text)
        load_release(trial)  # a manifest scan writes must load like any other
    if folder.is_dir():
        Catalog(folder)  # raises for a file that is not named after its release
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{release}.yaml"
    if path.exists():
        raise ScanError(f"{path} already exists: remove it or write into another folder")
    partial = folder / f".{release}.yaml.partial"
    partial.write_text(text)
    os.replace(partial, path)
    return path


@dataclass(frozen=True)
class Listed:
    """One place an image was found, with the groups and component the manifest gives it."""

    found: Found
    groups: tuple[str, ...]
    component: str
    known: bool


def listing(entries: list[Entry]) -> list[Listed]:
    """Every place each image was found, in the order of the files and their lines."""
    groups: dict[ImageRef, list[str]] = {}
    for e in entries:
        groups.setdefault(e.ref, []).append(e.group)
    first = {e.ref: e for e in reversed(entries)}
    rows = [Listed(where, tuple(groups[ref]), e.component, e.known) for ref, e in first.items() for where in e.found]
    order = list(dict.fromkeys(row.found.file for row in rows))
    return sorted(rows, key=lambda row: (order.index(row.found.file), row.found.line))
