"""Commands that read release manifests: releases, show, diff; and scan, which writes one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import BadInput, catalog, cli, group_option, manifests_option, optional_option, output_option
from chaosmirror.release import GROUPS, Change, Image, Release, Source, diff_releases

JSON_FORMAT = 1  # bump when a field of the JSON documents is removed or changes meaning


def _echo_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps({"format": JSON_FORMAT, **doc}, indent=2))


def _source_json(source: Source) -> dict[str, str | None]:
    return {
        "title": source.title,
        "url": source.url or None,
        "path": source.path or None,
        "sha256": source.sha256 or None,
    }


def _count(images: tuple[Image, ...]) -> str:
    """`9` or, with optional images, `9+2` (required + optional)."""
    extra = sum(i.optional for i in images)
    return f"{len(images) - extra}+{extra}" if extra else str(len(images))


@cli.command()
@output_option("table", "json")
@manifests_option
def releases(output: str, manifests: Path | None) -> None:
    """List the known releases and how many images each group has (9+2: 9 required, 2 optional)."""
    known = catalog(manifests).load_all()
    if output == "json":
        _echo_json({"releases": [_release_summary(r) for r in known]})
        return
    rows = []
    for release in known:
        counts = [_count(release.groups[g].images) if g in release.groups else "-" for g in GROUPS]
        rows.append([release.name, str(release.revision), *counts, ", ".join(sorted(release.sources))])
    from chaosmirror.report import table

    click.echo(table(rows, ["RELEASE", "REV", *(g.upper() for g in GROUPS), "SOURCES"]))
    click.echo("9+2: 9 images required, 2 optional (--no-optional leaves those out); -: group not listed")


def _release_summary(rel: Release) -> dict[str, Any]:
    return {
        "release": rel.name,
        "revision": rel.revision,
        "groups": {
            name: {
                "images": len(group.images),
                "optional": sum(i.optional for i in group.images),
                "note": group.note or None,
            }
            for name, group in rel.groups.items()
        },
        "sources": sorted(rel.sources),
    }


@cli.command()
@click.argument("release")
@group_option
@optional_option
@output_option("table", "refs", "json", default=None)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "refs", "json"]),
    help="The same as --output (kept for scripts written before it). "
    "refs: one source reference per line (each image once), for scripts.",
)
@manifests_option
def show(
    release: str,
    *,
    groups: tuple[str, ...],
    optional: bool,
    output: str | None,
    fmt: str | None,
    manifests: Path | None,
) -> None:
    """List the images of RELEASE (e.g. 1.47.0, or 1.53 for the newest 1.53.x)."""
    if output and fmt and output != fmt:
        raise BadInput(f"--output {output} and --format {fmt} disagree; --format is another name for --output")
    chosen = output or fmt or "table"
    rel = catalog(manifests).load(release)
    images = rel.images(groups, optional=optional)
    if chosen == "refs":
        for ref in dict.fromkeys(str(i.ref) for i in images):
            click.echo(ref)
        return
    if chosen == "json":
        _echo_json(_show_json(rel, images, groups, optional))
        return
    from chaosmirror.report import table

    extra = sum(i.optional for i in images)
    click.echo(
        f"HCE {rel.name} (revision {rel.revision}): {len(images)} images" + (f", {extra} optional" if extra else "")
    )
    rows = [[i.group, i.component, str(i.ref), "optional" if i.optional else ""] for i in images]
    click.echo(table(rows, ["GROUP", "COMPONENT", "IMAGE", "NEEDED"]))
    for name in groups or rel.groups:
        group = rel.groups.get(name)
        if group is None or group.note:
            click.echo(f"note: {name}: {group.note if group else 'not listed for this release'}")
    click.echo("sources:")
    for source in {rel.sources[i.source] for i in images}:
        click.echo(f"  {source.title}" + (f" <{source.url}>" if source.url else ""))


def _show_json(rel: Release, images: list[Image], groups: tuple[str, ...], optional: bool) -> dict[str, Any]:
    return {
        "release": rel.name,
        "revision": rel.revision,
        "groups": list(groups or rel.groups),
        "optional": optional,
        "notes": rel.notes or None,
        "group_notes": {name: group.note for name, group in rel.groups.items() if group.note},
        "sources": {key: _source_json(source) for key, source in rel.sources.items()},
        "images": [
            {
                "group": i.group,
                "component": i.component,
                "image": str(i.ref),
                "optional": i.optional,
                "source": rel.sources[i.source].title,
                "source_key": i.source,
            }
            for i in images
        ],
    }


@cli.command()
@click.argument("old")
@click.argument("new")
@group_option
@optional_option
@output_option("table", "json")
@manifests_option
def diff(old: str, new: str, *, groups: tuple[str, ...], optional: bool, output: str, manifests: Path | None) -> None:
    """Show images added, removed and retagged from release OLD to NEW."""
    cat = catalog(manifests)
    a, b = cat.load(old), cat.load(new)
    if not optional:
        a, b = a.without_optional(), b.without_optional()
    changes = diff_releases(a, b, groups)
    if output == "json":
        _echo_json({"old": a.name, "new": b.name, "groups": list(groups or GROUPS), "optional": optional,
                    "changes": [_change_json(c) for c in changes]})  # fmt: skip
        return
    if not changes:
        click.echo(f"{a.name} and {b.name} list the same images")
        return
    rows = []
    for c in changes:
        repo = c.new or c.old
        assert repo is not None
        before = c.old.tag if c.old else ""
        after = c.new.tag if c.new else ""
        rows.append([c.kind, c.group, c.component, f"{repo.registry}/{repo.repository}", before, after])
    from chaosmirror.report import table

    click.echo(table(rows, ["CHANGE", "GROUP", "COMPONENT", "REPOSITORY", a.name, b.name]))


def _change_json(c: Change) -> dict[str, Any]:
    repo = c.new or c.old
    assert repo is not None
    return {
        "change": c.kind,
        "group": c.group,
        "component": c.component,
        "repository": f"{repo.registry}/{repo.repository}",
        "old": str(c.old) if c.old else None,
        "new": str(c.new) if c.new else None,
    }


@cli.command()
@click.argument(
    "files", nargs=-1, required=True, metavar="FILE...", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--release",
    "name",
    required=True,
    metavar="NAME",
    help="The HCE release the files belong to, e.g. 1.95.0: the manifest is written as DIR/NAME.yaml.",
)
@click.option(
    "--group",
    type=click.Choice(GROUPS),
    help="Put every image in this group (default: guessed from the images HCE releases are known to use).",
)
@click.option(
    "--output",
    "-o",
    "folder",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the manifest into DIR (created if needed), the folder to give `--manifests`.",
)
def scan(files: tuple[Path, ...], name: str, group: str | None, folder: Path) -> None:
    """Find every image reference in FILE... and write them as the release manifest DIR/NAME.yaml.

    FILE is what HCE hands you for a release chaosmirror does not know yet: the dedicated chaos
    infrastructure manifest, Helm values or a rendered chart, a self-managed images.txt, or a plain
    list of references. Each image found is printed with its file:line; the manifest is written only
    when it loads through the same validation as the bundled ones. Then:
    `chaosmirror mirror NAME --manifests DIR --to TARGET`."""
    from chaosmirror.release import Catalog, bundled_dir
    from chaosmirror.report import table
    from chaosmirror.scan import FLOATING_TAGS, known_components, listing, scan_files

    known = known_components(Catalog(bundled_dir()).load_all())
    result = scan_files(files, release=name, folder=folder, known=known, group=group)
    rows = [
        [row.found.where, str(row.found.ref), ", ".join(row.groups),
         row.component if row.known else f"{row.component} (new)", row.found.how]
        for row in listing(result.entries)
    ]  # fmt: skip
    click.echo(table(rows, ["FOUND AT", "IMAGE", "GROUP", "COMPONENT", "WHERE IN THE FILE"]))
    for skipped in result.skipped:
        click.echo(f"skipped {skipped.file}:{skipped.line}: {skipped.text!r} ({skipped.reason})", err=True)
    for ref in dict.fromkeys(e.ref for e in result.entries if e.ref.tag in FLOATING_TAGS):
        click.echo(f"note: {ref} has a floating tag: what it points at changes without a new release", err=True)
    counts = ", ".join(f"{g} {len(result.release.groups[g].images)}" for g in GROUPS if g in result.release.groups)
    unique = len({i.ref for i in result.release.images()})
    click.echo(f"wrote {result.path}: HCE {result.release.name}, {unique} images ({counts})")
    click.echo(f"next: chaosmirror show {result.release.name} --manifests {folder}")
