"""The click application: the `chaosmirror` group, the options commands share, and how a run ends.

The `cli` package is the only importer of click and tqdm: each command parses, calls one library
function, and renders.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from chaosmirror import __version__
from chaosmirror.errors import ChaosmirrorError, Interrupted
from chaosmirror.release import GROUPS, Catalog, manifests_dir

F = Callable[..., Any]


class BadInput(click.ClickException):
    exit_code = 2


class RunFailed(click.ClickException):
    exit_code = 1


class _Cli(click.Group):
    """Turns a ChaosmirrorError into a one-line message and its exit code (2 input, 1 failed run);
    anything else becomes one line too, never a traceback (CHAOSMIRROR_DEBUG=1 shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ChaosmirrorError as exc:
            raise (BadInput if exc.exit_code == 2 else RunFailed)(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise RunFailed(f"{exc.strerror or exc}:{where}".rstrip(":")) from None
        except Exception as exc:
            if os.environ.get("CHAOSMIRROR_DEBUG"):
                raise
            raise RunFailed(f"internal error: {type(exc).__name__}: {exc} (set CHAOSMIRROR_DEBUG=1 for the "
                            "traceback, and please report it)") from None  # fmt: skip


def manifests_option(f: F) -> F:
    return click.option(
        "--manifests",
        "manifests",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CHAOSMIRROR_MANIFESTS",
        show_envvar=True,
        help="Read release manifests from DIR instead of the bundled ones.",
    )(f)


def releases_argument(f: F) -> F:
    """RELEASE...: one release or several (their images together, each image once)."""
    return click.argument("releases", nargs=-1, required=True, metavar="RELEASE...")(f)


def catalog(manifests: Path | None) -> Catalog:
    return Catalog(manifests_dir(manifests))


def group_option(f: F) -> F:
    return click.option(
        "--group",
        "groups",
        multiple=True,
        type=click.Choice(GROUPS),
        help="Only this group of images (repeatable; default: all).",
    )(f)


def optional_option(f: F) -> F:
    return click.option(
        "--optional/--no-optional",
        "optional",
        default=True,
        show_default=True,
        help="Also the images the release marks optional (a subchart that is off by default, a second tag "
        "one kind of install pulls): an air-gapped cluster cannot fetch a missing one later.",
    )(f)


def output_option(*choices: str, default: str | None = "table") -> Callable[[F], F]:
    """`--output FORMAT`: `json` is a versioned document (`"format": 1`), see docs/json-output.md."""
    return click.option(
        "--output",
        "output",
        type=click.Choice(choices),
        default=default,
        help="json: one versioned JSON document on stdout (see docs/json-output.md)"
        + (f"; default {default}." if default else "."),
    )


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chaosmirror")
def cli() -> None:
    """Copy the container images of a Harness Chaos Engineering (HCE) release into your own registry,
    laid out the way HCE's Image Registry settings expect: <server>/<account>/<image>:<tag>."""


TARGET_OPTIONS: list[Callable[[F], F]] = [
    click.option("--to", "target", required=True, metavar="HOST[:PORT][/PATH]",
                 help="The target registry (HCE's registry server)."),
    click.option("--account", default="harness", show_default=True,
                 help="HCE's registry account: images go to TARGET/ACCOUNT/NAME:TAG."),
]  # fmt: skip
PLATFORM_OPTION = click.option(
    "--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
    help="Only this platform (repeatable; default: every platform, indexes intact).",
)  # fmt: skip
SOURCE_OPTIONS: list[Callable[[F], F]] = [
    group_option,
    optional_option,
    PLATFORM_OPTION,
    click.option("--source-mirror", "source_mirrors", multiple=True, metavar="REGISTRY=HOST[/PATH]",
                 help="Read REGISTRY's images from HOST/PATH (a pull-through cache or Harness's GAR mirror)."),
]  # fmt: skip
RUN_OPTIONS: list[Callable[[F], F]] = [
    click.option("--jobs", "-j", type=click.IntRange(1, 64),
                 help="Copies at the same time (default: 16, or 32 for a far target, one whose round trip "
                      "takes over 15 ms: there each copy mostly waits)."),
    click.option("--report", "report_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                 help="Write a JSON report (one entry per image) to FILE; `-`: to stdout, and the summary to "
                      "stderr."),
    click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                 help="Skip TLS verification (or use plain HTTP) for HOST. Loopback registries may be plain "
                      "HTTP without it."),
    click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Trust this CA certificate (PEM) for the registries, besides the system ones."),
    click.option("--engine", type=click.Choice(["auto", "skopeo", "docker"]), default="auto", show_default=True,
                 envvar="CHAOSMIRROR_ENGINE", help="What copies the images."),
    click.option("--signatures/--no-signatures", default=True, show_default=True,
                 help="Also copy what is stored next to each image and platform: cosign signatures, attestations "
                      "and SBOMs (tags sha256-<hex>.sig/.att/.sbom) and OCI 1.1 referrers, byte for byte."),
    click.option("--retries", type=click.IntRange(0, 50), default=5, show_default=True, envvar="CHAOSMIRROR_RETRIES",
                 help="Retry each request, and each image copy, up to N times on errors that can pass (dropped "
                      "connections, timeouts, HTTP 408, 429, 5xx), with exponential backoff and Retry-After."),
    click.option("--timeout", type=click.FloatRange(1, 3600), default=60, show_default=True, metavar="SECONDS",
                 envvar="CHAOSMIRROR_TIMEOUT", help="Give up on a connection that is silent this long."),
    manifests_option,
]  # fmt: skip


def with_options(*groups: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed([d for group in groups for d in group]):
            f = decorator(f)
        return f

    return apply


copy_options = with_options(TARGET_OPTIONS, SOURCE_OPTIONS, RUN_OPTIONS)


def settings_from(
    *,
    target: str | None = None,
    account: str = "harness",
    groups: tuple[str, ...] = (),
    optional: bool = True,
    platforms: tuple[str, ...] = (),
    source_mirrors: tuple[str, ...] = (),
    jobs: int | None = None,
    insecure: tuple[str, ...] = (),
    ca_cert: Path | None = None,
    engine: str = "auto",
    signatures: bool = True,
    retries: int = 5,
    timeout: float = 60.0,
) -> Any:
    from chaosmirror.manifest import Platform
    from chaosmirror.ref import SourceMirror, Target
    from chaosmirror.settings import Settings

    return Settings(
        target=Target.parse(target, account=account) if target else None,
        groups=groups,
        optional=optional,
        platforms=tuple(Platform.parse(p) for p in platforms),
        source_mirrors=tuple(SourceMirror.parse(m) for m in source_mirrors),
        jobs=jobs,
        insecure=frozenset(insecure),
        ca_file=ca_cert,
        engine=engine,
        signatures=signatures,
        retries=retries,
        timeout=timeout,
    )


def to_stdout(report_path: Path | None) -> bool:
    """`--report -`: the JSON report goes to stdout, so everything meant for a person goes to stderr."""
    return report_path is not None and str(report_path) == "-"


def echo_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2))


def check_report_path(path: Path | None) -> None:
    """Refuse, before anything is copied, a --report FILE that could not be written at the end."""
    if path is None or to_stdout(path):
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise BadInput(f"--report {path}: that is a folder; give a file name")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.check-"):
            pass
    except OSError as exc:
        raise BadInput(f"--report {path}: cannot write there ({exc.strerror or exc})") from None


def write_report(report: Any, report_path: Path | None) -> None:
    if to_stdout(report_path):
        echo_json(report.to_json())
    elif report_path:
        try:
            report.write(report_path)
        except OSError as exc:
            click.echo(f"error: cannot write the report {report_path}: {exc.strerror or exc}", err=True)


def _finish_run(report: Any, report_path: Path | None = None, *, after: Callable[[], None] | None = None,
                summary_text: str | None = None, err: bool = False) -> None:  # fmt: skip
    """Print the summary (on stderr with `err`: the JSON report went to stdout), run `after` (e.g.
    --config-out), exit with the run's code; write the report first if `report_path` is given
    (commands that wrote it already pass None)."""
    from chaosmirror.report import summary

    write_report(report, report_path)
    click.echo(summary(report) if summary_text is None else summary_text, err=err or to_stdout(report_path))
    if report.interrupted:
        click.echo(f"Error: {report.interrupted}", err=True)
        sys.exit(report.exit_code)  # 128 + the signal
    if report.error:
        raise RunFailed(report.error)
    if after is not None:
        after()
    sys.exit(report.exit_code)
