"""Commands that copy a release to a registry: mirror, plan."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import _finish_run, catalog, check_report_path, cli, copy_options, settings_from, write_report
from chaosmirror.cli.config import config_after_run, pop_config_out
from chaosmirror.cli.progress import Progress
from chaosmirror.release import Release


def _copy_command(
    release: str, dry_run: bool, report_path: Path | None, manifests: Path | None, **options: Any
) -> None:
    from chaosmirror.lifecycle import Run
    from chaosmirror.mirror import mirror_release
    from chaosmirror.report import Report

    config = pop_config_out(options)  # mirror --config-out DIR
    check_report_path(report_path)
    rel = catalog(manifests).load(release)
    settings = settings_from(**options)
    progress = Progress(sys.stderr)
    total = len(dict.fromkeys(i.ref for i in rel.images(settings.groups, optional=settings.optional)))
    report = Report("plan" if dry_run else "mirror", rel.name, str(settings.target))
    with Run() as run:
        if not dry_run:
            progress.start(total)
        try:
            mirror_release(rel, settings, dry_run=dry_run, run=run, report=report, on_event=progress.event,
                           on_phase=progress.phase, on_bytes=progress.moved)  # fmt: skip
        finally:
            progress.close()
            write_report(report, report_path)

    def write_config() -> None:
        if config is not None:
            config_after_run(config, rel, settings, report, dry_run=dry_run)

    _finish_run(report, None, after=write_config, summary_text=plan_table(rel, report) if dry_run else None)


def plan_table(rel: Release, report: Any) -> str:
    from chaosmirror.report import human_size, table

    rows = [
        [
            {"planned": "copy", "skipped": "skip", "failed": "FAIL", "interrupted": "STOP"}.get(e.status, e.status),
            e.source,
            e.destination,
            human_size(e.size) if e.size else "-",
            e.error or e.reason,
        ]
        for e in report.entries
    ]
    todo = [e for e in report.entries if e.status == "planned"]
    total = sum(e.size for e in todo)
    return (
        table(rows, ["ACTION", "SOURCE", "DESTINATION", "SIZE", "WHY"])
        + f"\n\nHCE {rel.name} -> {report.target}: {len(todo)} to copy ({human_size(total)}), "
        f"{report.count('skipped')} already there, {report.count('failed')} failing"
    )


@cli.command()
@click.argument("release")
@copy_options
@click.option("--dry-run", is_flag=True, help="Print what would be copied and what is already there; copy nothing.")
def mirror(release: str, dry_run: bool, report_path: Path | None, manifests: Path | None, **options: Any) -> None:
    """Copy RELEASE's images to the target registry, keeping digests and every platform.

    Images the target already holds with the same digest are skipped, so a rerun is nearly free
    and an interrupted run resumes by running it again. Exit code 0: all done; 1: some images
    failed (the others completed); 2: bad usage or input."""
    _copy_command(release, dry_run, report_path, manifests, **options)


@cli.command()
@click.argument("release")
@copy_options
def plan(release: str, report_path: Path | None, manifests: Path | None, **options: Any) -> None:
    """Print what `mirror` would copy and what the target already holds; copy nothing."""
    _copy_command(release, True, report_path, manifests, **options)


# --- air-gap bundles -------------------------------------------------------------------------------
