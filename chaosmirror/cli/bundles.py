"""Commands for air-gap bundles: bundle export, verify, ls, import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import (
    PLATFORM_OPTION,
    RUN_OPTIONS,
    SOURCE_OPTIONS,
    TARGET_OPTIONS,
    RunFailed,
    _finish_run,
    catalog,
    check_report_path,
    cli,
    settings_from,
    with_options,
    write_report,
)
from chaosmirror.cli.config import config_after_run, pop_config_out
from chaosmirror.cli.progress import Progress


@cli.group()
def bundle() -> None:
    """Air-gap bundles: export a release to one verified file, import it with no route to the source."""


@bundle.command("export")
@click.argument("release")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The bundle to write: a .tar file (or, with --format docker-archive, a folder).",
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
    metavar="OLD_RELEASE",
    help="A delta bundle: leave out images unchanged since OLD_RELEASE (same name, tag and digest).",
)
@with_options(SOURCE_OPTIONS, RUN_OPTIONS)
def bundle_export(*, release: str, output: Path, kind: str, since: str | None, report_path: Path | None,
                  manifests: Path | None, **options: Any) -> None:  # fmt: skip
    """Write every image of RELEASE into one bundle file, with bundle.json and SHA256SUMS.

    The bundle is written under a temporary name and renamed only when complete; an interrupted
    export resumes when you run the same command again."""
    from chaosmirror.exporter import export_release
    from chaosmirror.lifecycle import Run

    check_report_path(report_path)
    cat = catalog(manifests)
    rel = cat.load(release)
    base = cat.load(since) if since else None
    progress = Progress(sys.stderr)
    with Run():
        report = export_release(rel, settings_from(**options), output, kind=kind, since=base,
                                on_phase=progress.phase, on_event=progress.event)  # fmt: skip
        write_report(report, report_path)
    _finish_run(report, None)


@bundle.command("verify")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
def bundle_verify(file: Path) -> None:
    """Check every checksum and blob digest, and that every manifest's blobs are present.

    Exit code 0 only when the bundle is complete and intact; otherwise each problem is printed."""
    from chaosmirror.importer import verify

    scan = verify(file)
    if scan.problems:
        for problem in scan.problems:
            click.echo(f"problem: {problem}", err=True)
        raise RunFailed(f"{file} is damaged or incomplete ({len(scan.problems)} problems)")
    info = scan.info
    assert info is not None
    click.echo(
        f"{file}: intact, {len(scan.hashes)} files checked; HCE {info.release}, {len(info.images)} images"
        + (f" (a delta on {info.since})" if info.since else "")
    )


@bundle.command("ls")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print bundle.json as it is.")
def bundle_ls(file: Path, as_json: bool) -> None:
    """List what a bundle holds: release, images, platforms, sizes."""
    from chaosmirror.bundle import read_info
    from chaosmirror.report import human_size, table

    info = read_info(file)
    if as_json:
        click.echo(info.to_json().decode(), nl=False)
        return
    click.echo(
        f"HCE {info.release} (revision {info.revision}), {info.kind} bundle written {info.created} by "
        f"{info.tool}" + (f"; a delta on {info.since}" if info.since else "")
    )
    rows = [[i.name, ", ".join(i.platforms) or "-", human_size(i.size), i.digest[7:19], i.source] for i in info.images]
    rows += [[i.name, "(in the base)", "-", i.digest[7:19], i.source] for i in info.unchanged]
    click.echo(table(rows, ["IMAGE", "PLATFORMS", "SIZE", "DIGEST", "SOURCE"]))
    click.echo(
        f"{len(info.images)} images, {human_size(sum(i.size for i in info.images))}"
        + (f"; {len(info.unchanged)} unchanged since {info.since} left out" if info.since else "")
    )


@bundle.command("import")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@with_options(TARGET_OPTIONS, [PLATFORM_OPTION], RUN_OPTIONS)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to unpack the bundle while importing (default: next to it).",
)
def bundle_import(file: Path, report_path: Path | None, manifests: Path | None, work_dir: Path | None,
                  **options: Any) -> None:  # fmt: skip
    """Verify FILE, then push every image to TARGET/ACCOUNT/NAME:TAG exactly as `mirror` would.

    Needs no access to the source registry. Images the target already holds are skipped; a delta
    bundle says which images are missing when its base was never imported. --platform picks the
    platform of a docker-archive bundle (default linux/amd64)."""
    from chaosmirror.bundle import read_info
    from chaosmirror.importer import bundle_release, import_bundle
    from chaosmirror.lifecycle import Run

    config = pop_config_out(options)  # bundle import --config-out DIR
    check_report_path(report_path)
    settings = settings_from(**options)
    progress = Progress(sys.stderr)
    with Run():
        try:
            report = import_bundle(file, settings, work_dir=work_dir, on_event=progress.event,
                                   on_phase=progress.phase)  # fmt: skip
        finally:
            progress.close()
        write_report(report, report_path)

    def write_config() -> None:
        if config is not None:
            config_after_run(config, bundle_release(read_info(file)), settings, report, dry_run=False)

    _finish_run(report, None, after=write_config)
