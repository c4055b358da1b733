"""The `verify` command: is every image of the releases whole in the target?"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import (
    RUN_OPTIONS,
    SOURCE_OPTIONS,
    TARGET_OPTIONS,
    BadInput,
    _finish_run,
    catalog,
    check_report_path,
    cli,
    echo_json,
    output_option,
    settings_from,
    to_stdout,
    with_options,
)
from chaosmirror.cli.progress import Progress

LEARNT_FROM = {"report": "the mirror report", "bundle": "the bundle", "source": "the source"}


@cli.command()
@click.argument("releases", nargs=-1, metavar="RELEASE...")
@with_options(TARGET_OPTIONS, SOURCE_OPTIONS, RUN_OPTIONS)
@click.option(
    "--mirror-report",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The JSON report of the `mirror` or `bundle import` run that filled the target: each tag must "
    "hold the digest it recorded (for a Docker-engine mirror, the digest the daemon pushed).",
)
@click.option(
    "--bundle",
    "bundle_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The bundle that was imported (a .tar, the base name of its parts, or any part): each tag must "
    "hold the digest bundle.json records. RELEASE... may then be left out: the bundle's images.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Do not contact the source registries (inside an air gap): without --mirror-report or --bundle, "
    "only check that everything is there.",
)
@output_option("table", "json")
def verify(releases: tuple[str, ...], *, report_path: Path | None, manifests: Path | None, mirror_report: Path | None,
           bundle_files: tuple[Path, ...], offline: bool, output: str, **options: Any) -> None:  # fmt: skip
    """Check that the target holds every image of RELEASE... whole, changing nothing.

    Always, with nothing but the target (inside an air gap too): every tag exists, and every
    manifest, platform manifest and blob (config and layers) it references is there, each blob
    HEADed, none read. Where the expected digests can be learnt (--mirror-report, --bundle, else
    the source unless --offline), each tag must also hold its digest. Exit code 0: all there; 1:
    something is missing or wrong (each image and what, a tag, a manifest, a blob and its size); 2:
    bad input."""
    from chaosmirror.lifecycle import Run
    from chaosmirror.report import read_report
    from chaosmirror.verify import from_bundle, from_report, verify_release

    check_report_path(report_path)
    if output == "json" and to_stdout(report_path):
        raise BadInput("--output json and --report - both print the JSON report on stdout: give one of them")
    if mirror_report and bundle_files:
        raise BadInput("give the expected digests once: --mirror-report FILE or --bundle FILE")
    settings = settings_from(**options)
    info = _bundle_info(bundle_files) if bundle_files else None
    if releases:
        rel = catalog(manifests).load_many(releases)
    elif info is not None:
        from chaosmirror.importer import bundle_release

        rel = bundle_release(info)
    else:
        raise BadInput("name the release(s) to verify, or the imported bundle with --bundle FILE")
    expected = None
    if mirror_report:
        expected = from_report(read_report(mirror_report), mirror_report)
    elif info is not None:
        expected = from_bundle(info, settings.target)
    progress = Progress(sys.stderr)
    with Run() as run:  # a signal stops the check: what was not looked at is not judged
        result = verify_release(rel, settings, expected=expected, offline=offline, run=run, on_phase=progress.phase)
    if output == "json":
        echo_json(result.to_json())
    _finish_run(result, report_path, summary_text=verify_table(result), err=output == "json")


def _bundle_info(files: tuple[Path, ...]) -> Any:
    from chaosmirror.bundleset import read_info
    from chaosmirror.errors import BundleError

    try:
        return read_info(list(files))
    except BundleError as exc:
        raise BadInput(f"--bundle: {exc}") from None


def verify_table(result: Any) -> str:
    """One row per image, then each problem on its own line, then one line of totals."""
    from chaosmirror.report import table

    if result.error and not result.verdicts:
        return f"HCE {' + '.join(result.releases)} in {result.target}: not checked"
    several = len(result.releases) > 1
    rows = []
    for v in result.verdicts:
        kinds: dict[str, int] = {}
        for problem in v.problems:
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
        what = ", ".join(f"{n} {kind.replace('-', ' ')}" if n > 1 else kind.replace("-", " ")
                         for kind, n in kinds.items())  # fmt: skip
        rows.append([v.status if v.status == "ok" else v.status.upper(), str(v.check.dst), v.digest[7:19] or "-",
                     *([", ".join(v.check.releases)] if several else []), what or "complete"])  # fmt: skip
    headers = ["STATUS", "IMAGE", "DIGEST", *(["RELEASES"] if several else []), "FOUND"]
    out = [table(rows, headers)] if rows else []
    details = [f"{v.status}: {v.check.dst}: {p}" for v in result.verdicts for p in v.problems]
    out += ["", *details] if details else []
    out += ["", *(f"note: {n}" for n in result.notes)] if result.notes else []
    looked = result.looked_up
    learnt = LEARNT_FROM.get(result.expected_from)
    why = next((v.check.unknown for v in result.verdicts if v.check.unknown), "")
    out += [
        "",
        f"HCE {' + '.join(result.releases)} in {result.target}: {result.count('ok')} of {len(result.verdicts)} images "
        f"complete, {result.count('missing')} missing something, {result.count('wrong')} wrong, "
        f"{result.count('error')} could not be read; "
        + (f"digests checked against {learnt}" if learnt else f"digests not compared (presence only: {why})")
        + f" ({looked['tags']} tags, {looked['manifests']} manifests and {looked['blobs']} blobs looked up, "
        "no blob read)",
    ]
    return "\n".join(out)
