"""Commands that read release manifests: releases, show, diff."""

from __future__ import annotations

import json
from pathlib import Path

import click

from chaosmirror.cli.app import catalog, cli, group_option, manifests_option, optional_option
from chaosmirror.release import GROUPS, Image, diff_releases


def _count(images: tuple[Image, ...]) -> str:
    """`9` or, with optional images, `9+2` (required + optional)."""
    extra = sum(i.optional for i in images)
    return f"{len(images) - extra}+{extra}" if extra else str(len(images))


@cli.command()
@manifests_option
def releases(manifests: Path | None) -> None:
    """List the known releases and how many images each group has (9+2: 9 required, 2 optional)."""
    rows = []
    for release in catalog(manifests).load_all():
        counts = [_count(release.groups[g].images) if g in release.groups else "-" for g in GROUPS]
        rows.append([release.name, str(release.revision), *counts, ", ".join(sorted(release.sources))])
    from chaosmirror.report import table

    click.echo(table(rows, ["RELEASE", "REV", *(g.upper() for g in GROUPS), "SOURCES"]))
    click.echo("9+2: 9 images required, 2 optional (--no-optional leaves those out); -: group not listed")


@cli.command()
@click.argument("release")
@group_option
@optional_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "refs", "json"]),
    default="table",
    show_default=True,
    help="refs: one source reference per line (each image once), for scripts.",
)
@manifests_option
def show(release: str, *, groups: tuple[str, ...], optional: bool, fmt: str, manifests: Path | None) -> None:
    """List the images of RELEASE (e.g. 1.47.0, or 1.53 for the newest 1.53.x)."""
    rel = catalog(manifests).load(release)
    images = rel.images(groups, optional=optional)
    if fmt == "refs":
        for ref in dict.fromkeys(str(i.ref) for i in images):
            click.echo(ref)
        return
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "release": rel.name,
                    "revision": rel.revision,
                    "images": [
                        {
                            "group": i.group,
                            "component": i.component,
                            "image": str(i.ref),
                            "optional": i.optional,
                            "source": rel.sources[i.source].title,
                        }
                        for i in images
                    ],
                },
                indent=2,
            )
        )
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


@cli.command()
@click.argument("old")
@click.argument("new")
@group_option
@optional_option
@manifests_option
def diff(old: str, new: str, *, groups: tuple[str, ...], optional: bool, manifests: Path | None) -> None:
    """Show images added, removed and retagged from release OLD to NEW."""
    cat = catalog(manifests)
    a, b = cat.load(old), cat.load(new)
    if not optional:
        a, b = a.without_optional(), b.without_optional()
    changes = diff_releases(a, b, groups)
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
