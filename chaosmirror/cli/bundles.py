"""Commands for air-gap bundles: bundle export, verify, ls, import."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import (
    PLATFORM_OPTION,
    RUN_OPTIONS,
    SOURCE_OPTIONS,
    BadInput,
    F,
    RunFailed,
    _finish_run,
    catalog,
    check_report_path,
    cli,
    output_option,
    releases_argument,
    settings_from,
    to_stdout,
    with_options,
    write_report,
)
from chaosmirror.cli.config import config_after_run, pop_config_out
from chaosmirror.cli.progress import Progress

FILES = click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
IMPORT_TARGETS: list[Callable[[F], F]] = [
    click.option("--to", "targets", required=True, multiple=True, metavar="HOST[:PORT][/PATH]",
                 help="A target registry (HCE's registry server). Repeat it to push to several in one run, "
                      "reading the bundle once."),
    click.option("--account", default="harness", show_default=True,
                 help="HCE's registry account: images go to TARGET/ACCOUNT/NAME:TAG."),
]  # fmt: skip


@cli.group()
def bundle() -> None:
    """Air-gap bundles: export a release to one verified file (or parts of a set size), import it
    with no route to the source."""


@bundle.command("export")
@releases_argument
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The bundle to write: a .tar file (with --split-size, its parts FILE.001, FILE.002, ...; with "
    "--format docker-archive, a folder).",
)
@click.option(
    "--format",
    "kind",
    type=click.Choice(["oci", "docker-archive"]),
    default="oci",
    show_default=True,
    help="oci: one tar holding an OCI image layout (every platform, layers stored once). "
    "docker-archive: a folder of `docker load`-able tarballs, one per image and platform.",
)
@click.option(
    "--since",
    metavar="OLD",
    help="A delta bundle: leave out images the bundle OLD holds exactly as this one would (OLD a bundle file, "
    "or part 001 of a split one, whose bundle.json records what it holds), or, OLD a release name, images "
    "unchanged since OLD in the source (same name, tag and digest).",
)
@click.option(
    "--split-size",
    metavar="SIZE",
    help="Write parts FILE.001, FILE.002, ... of at most SIZE each (700MB, 4GiB, or bytes), for media and "
    "transfer portals that cap file sizes. Each part is a tar of whole files with its own SHA256SUMS.",
)
@click.option(
    "--allow-oversize-blob",
    is_flag=True,
    help="With --split-size: give a blob larger than SIZE a part of its own instead of stopping.",
)
@with_options(SOURCE_OPTIONS, RUN_OPTIONS)
def bundle_export(*, releases: tuple[str, ...], output: Path, kind: str, since: str | None, split_size: str | None,
                  allow_oversize_blob: bool, report_path: Path | None, manifests: Path | None,
                  **options: Any) -> None:  # fmt: skip
    """Write every image of RELEASE... into one bundle file (or parts), with bundle.json and SHA256SUMS.

    Several releases make one bundle holding each of their images once; bundle.json names every
    release and which of them need each image. The bundle is written under a temporary name and
    renamed only when complete; an interrupted export resumes when you run the same command again.
    Two exports to the same -o at once are refused."""
    from chaosmirror.exporter import export_release
    from chaosmirror.lifecycle import Run
    from chaosmirror.split import parse_size

    check_report_path(report_path)
    if allow_oversize_blob and not split_size:
        raise BadInput("--allow-oversize-blob is used with --split-size SIZE")
    size = parse_size(split_size) if split_size else None
    cat = catalog(manifests)
    rel = cat.load_many(releases)
    base = _base(cat, since) if since else None
    progress = Progress(sys.stderr)
    with Run():
        report = export_release(rel, settings_from(**options), output, kind=kind, since=base, split_size=size,
                                allow_oversize=allow_oversize_blob, on_phase=progress.phase,
                                on_event=progress.event)  # fmt: skip
        write_report(report, report_path)
    _finish_run(report, None, err=to_stdout(report_path))


def _base(cat: Any, since: str) -> Any:
    """--since: a bundle file (or part 001 of one) when such a file exists, else a release name."""
    from chaosmirror import delta

    path = Path(since)
    if path.exists() or Path(f"{since}.001").exists():
        return delta.from_bundle([path])
    return delta.from_release(cat.load(since))


@bundle.command("verify")
@FILES
def bundle_verify(files: tuple[Path, ...]) -> None:
    """Check every checksum and blob digest, and that every manifest's blobs are present.

    FILE is the bundle (a .tar, the base name of its parts, or a docker-archive folder), or parts of
    it in any order: the other parts are found beside them. One part named alone (hce.tar.003) is
    checked on its own. Exit code 0 only when intact; otherwise each problem is printed."""
    from chaosmirror.importer import check

    checked = check(list(files))
    named = " ".join(map(str, files))
    if checked.verified.problems:
        for problem in checked.verified.problems:
            click.echo(f"problem: {problem}", err=True)
        raise RunFailed(f"{named} is damaged or incomplete ({len(checked.verified.problems)} problems)")
    if checked.part is not None:
        part = checked.part
        held = f"; it holds blobs of {', '.join(part.images)}" if part.images else ""
        click.echo(f"{named}: intact, {checked.verified.checked} files checked: part {part.part} of {part.parts} of "
                   f"the HCE {part.release} bundle{held}. This checks this part alone: name the bundle (or part "
                   "001) to check them all")  # fmt: skip
        return
    info = checked.info
    assert info is not None
    parts = f" in {len(info.parts)} parts" if info.parts else ""
    click.echo(
        f"{named}: intact, {checked.verified.checked} files checked{parts}; HCE {' + '.join(info.names)}, "
        f"{len(info.images)} "
        "images" + (f" (a delta on {info.since})" if info.since else "")
    )


@bundle.command("ls")
@FILES
@output_option("table", "json")
@click.option("--json", "as_json", is_flag=True, help="The same as --output json (kept for older scripts).")
def bundle_ls(files: tuple[Path, ...], output: str, as_json: bool) -> None:
    """List what a bundle holds: releases, images, platforms, sizes (and its parts).

    --output json prints bundle.json itself: its `format` is the bundle's (docs/bundles.md)."""
    from chaosmirror.bundleset import read_info
    from chaosmirror.report import human_size, table

    info = read_info(list(files))
    if as_json or output == "json":
        click.echo(info.to_json().decode(), nl=False)
        return
    click.echo(
        f"HCE {' + '.join(info.names)} (revision {info.revision}), {info.kind} bundle written {info.created} by "
        f"{info.tool}" + (f"; a delta on {info.since}" if info.since else "")
    )
    several = bool(info.releases)

    def row(i: Any, platforms: str, size: str) -> list[str]:
        return [i.name, platforms, size, i.digest[7:19], *([", ".join(i.releases) or "-"] if several else []),
                i.source]  # fmt: skip

    rows = [row(i, ", ".join(i.platforms) or "-", human_size(i.size)) for i in info.images]
    rows += [row(i, "(in the base)", "-") for i in info.unchanged]
    click.echo(table(rows, ["IMAGE", "PLATFORMS", "SIZE", "DIGEST", *(["RELEASES"] if several else []), "SOURCE"]))
    if info.parts:
        click.echo("")
        click.echo(table([[p.name, human_size(p.size), p.sha256[:12] or "-", str(len(p.images))] for p in info.parts],
                         ["PART", "SIZE", "SHA256", "IMAGES"]))  # fmt: skip
    click.echo(
        f"{len(info.images)} images, {human_size(sum(i.size for i in info.images))}"
        + (f" in {len(info.parts)} parts" if info.parts else "")
        + (f"; {len(info.unchanged)} unchanged since {info.since} left out" if info.since else "")
    )


@bundle.command("import")
@FILES
@with_options(IMPORT_TARGETS, [PLATFORM_OPTION], RUN_OPTIONS)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True,
              help="No longer used: the bundle is read in place. Old scratch folders in it are removed.")  # fmt: skip
def bundle_import(files: tuple[Path, ...], *, targets: tuple[str, ...], account: str, report_path: Path | None,
                  manifests: Path | None, work_dir: Path | None, **options: Any) -> None:  # fmt: skip
    """Verify FILE, then push every image to TARGET/ACCOUNT/NAME:TAG exactly as `mirror` would.

    FILE is the bundle (a .tar, the base name of its parts, or a docker-archive folder), or its
    parts in any order; the bundle is read in place (read-only media are fine), nothing is
    extracted. Needs no access to the source registry. Images the target already holds are
    skipped, and blobs it holds are not sent again, so an interrupted import resumes when run
    again. A delta bundle says which images are missing when its base was never imported.
    --platform picks the platform of a docker-archive bundle (default linux/amd64)."""
    from chaosmirror.bundleset import read_info
    from chaosmirror.importer import bundle_release, import_bundle
    from chaosmirror.lifecycle import Run
    from chaosmirror.ref import Target

    config = pop_config_out(options)  # bundle import --config-out DIR
    check_report_path(report_path)
    if config is not None and len(targets) > 1:
        raise BadInput("--config-out writes the configuration of one target: give one --to, or run "
                       "`chaosmirror config` for each target")  # fmt: skip
    settings = settings_from(target=targets[0], account=account, **options)
    places = [Target.parse(t, account=account) for t in dict.fromkeys(targets)]
    progress = Progress(sys.stderr)
    with Run():
        try:
            report = import_bundle(list(files), settings, targets=places, work_dir=work_dir,
                                   on_event=progress.event, on_phase=progress.phase)  # fmt: skip
        finally:
            progress.close()
        write_report(report, report_path)

    def write_config() -> None:
        if config is not None:
            config_after_run(config, bundle_release(read_info(list(files))), settings, report, dry_run=False,
                             err=to_stdout(report_path))  # fmt: skip

    _finish_run(report, None, after=write_config, err=to_stdout(report_path))
