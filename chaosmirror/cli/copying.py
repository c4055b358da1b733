"""Commands that copy releases to a registry: mirror, plan."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import (
    BadInput,
    _finish_run,
    catalog,
    check_report_path,
    cli,
    copy_options,
    echo_json,
    output_option,
    releases_argument,
    settings_from,
    to_stdout,
    write_report,
)
from chaosmirror.cli.config import config_after_run, pop_config_out
from chaosmirror.cli.progress import Progress
from chaosmirror.release import Release


def _copy_command(releases: tuple[str, ...], dry_run: bool, report_path: Path | None, manifests: Path | None, *,
                  output: str = "table", exit_code: bool = False, **options: Any) -> None:  # fmt: skip
    from chaosmirror.lifecycle import Run
    from chaosmirror.mirror import mirror_release
    from chaosmirror.report import Report

    config = pop_config_out(options)  # mirror --config-out DIR
    check_report_path(report_path)
    if output == "json" and to_stdout(report_path):
        raise BadInput("--output json and --report - both print the JSON report on stdout: give one of them")
    rel = catalog(manifests).load_many(releases)
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
            if output == "json":
                echo_json(report.to_json())
    quiet = output == "json" or to_stdout(report_path)  # stdout holds the JSON: the table goes to stderr

    def after() -> None:
        if config is not None:
            config_after_run(config, rel, settings, report, dry_run=dry_run, err=quiet)
        if exit_code and report.count("planned"):
            sys.exit(1)  # plan --exit-code: something would be copied

    _finish_run(report, None, after=after, summary_text=plan_table(rel, report) if dry_run else None, err=quiet)


def plan_table(rel: Release, report: Any) -> str:
    from chaosmirror.report import human_size, table

    several = len(rel.names) > 1
    rows = [
        [
            {"planned": "copy", "skipped": "skip", "failed": "FAIL", "interrupted": "STOP"}.get(e.status, e.status),
            e.source,
            e.destination,
            human_size(e.size) if e.size else "-",
            *([", ".join(report.needed(e))] if several else []),
            e.error or e.reason,
        ]
        for e in report.entries
    ]
    todo = [e for e in report.entries if e.status == "planned"]
    total = sum(e.size for e in todo)
    headers = ["ACTION", "SOURCE", "DESTINATION", "SIZE", *(["RELEASES"] if several else []), "WHY"]
    return (
        table(rows, headers)
        + f"\n\nHCE {' + '.join(rel.names)} -> {report.target}: {len(todo)} to copy ({human_size(total)}), "
        f"{report.count('skipped')} already there, {report.count('failed')} failing"
    )


@cli.command()
@releases_argument
@copy_options
@click.option("--dry-run", is_flag=True, help="Print what would be copied and what is already there; copy nothing.")
def mirror(
    releases: tuple[str, ...], dry_run: bool, report_path: Path | None, manifests: Path | None, **options: Any
) -> None:
    """Copy the images of RELEASE... to the target registry, keeping digests and every platform.

    Several releases (`mirror 1.93 1.94`) copy the images of all of them, each image once; the
    report says which releases need each image. Images the target already holds with the same
    digest are skipped, so a rerun is nearly free and an interrupted run resumes by running it
    again. Exit code 0: all done; 1: some images failed (the others completed); 2: bad usage or input."""
    _copy_command(releases, dry_run, report_path, manifests, **options)


@cli.command()
@releases_argument
@copy_options
@output_option("table", "json")
@click.option("--exit-code", "exit_code", is_flag=True,
              help="Exit 1 when anything would be copied (a CI gate: is the mirror up to date?).")  # fmt: skip
def plan(releases: tuple[str, ...], report_path: Path | None, manifests: Path | None, **options: Any) -> None:
    """Print what `mirror` would copy and what the target already holds; copy nothing.

    Exit code 0 (with --exit-code: only when nothing would be copied), 1 when an image cannot be
    copied (or, with --exit-code, when any would be), 2 for bad input."""
    _copy_command(releases, True, report_path, manifests, **options)
