"""The command line: parse, call one library function, render. The only importer of click and tqdm."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

from chaosmirror import __version__
from chaosmirror.errors import ChaosmirrorError
from chaosmirror.release import GROUPS, Catalog, Release, diff_releases, manifests_dir

F = Callable[..., Any]


class _BadInput(click.ClickException):
    exit_code = 2


class _RunFailed(click.ClickException):
    exit_code = 1


class _Cli(click.Group):
    """Turns a ChaosmirrorError into a one-line message and its exit code (2 input, 1 failed run)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChaosmirrorError as exc:
            raise (_BadInput if exc.exit_code == 2 else _RunFailed)(str(exc)) from None


def manifests_option(f: F) -> F:
    return click.option(
        "--manifests",
        "manifests",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CHAOSMIRROR_MANIFESTS",
        show_envvar=True,
        help="Read release manifests from DIR instead of the bundled ones.",
    )(f)


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


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chaosmirror")
def cli() -> None:
    """Copy the container images of a Harness Chaos Engineering (HCE) release into your own registry,
    laid out the way HCE's Image Registry settings expect: <server>/<account>/<image>:<tag>."""


@cli.command()
@manifests_option
def releases(manifests: Path | None) -> None:
    """List the known releases and how many images each group has."""
    rows = []
    for release in catalog(manifests).load_all():
        counts = [str(len(release.groups[g].images)) if g in release.groups else "-" for g in GROUPS]
        rows.append([release.name, str(release.revision), *counts, ", ".join(sorted(release.sources))])
    from chaosmirror.report import table

    click.echo(table(rows, ["RELEASE", "REV", *(g.upper() for g in GROUPS), "SOURCES"]))


@cli.command()
@click.argument("release")
@group_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "refs", "json"]),
    default="table",
    show_default=True,
    help="refs: one source reference per line (each image once), for scripts.",
)
@manifests_option
def show(release: str, groups: tuple[str, ...], fmt: str, manifests: Path | None) -> None:
    """List the images of RELEASE (e.g. 1.47.0, or 1.53 for the newest 1.53.x)."""
    rel = catalog(manifests).load(release)
    images = rel.images(groups)
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

    click.echo(f"HCE {rel.name} (revision {rel.revision}): {len(images)} images")
    click.echo(table([[i.group, i.component, str(i.ref)] for i in images], ["GROUP", "COMPONENT", "IMAGE"]))
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
@manifests_option
def diff(old: str, new: str, groups: tuple[str, ...], manifests: Path | None) -> None:
    """Show images added, removed and retagged from release OLD to NEW."""
    cat = catalog(manifests)
    a, b = cat.load(old), cat.load(new)
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


# --- copying ---------------------------------------------------------------------------------------


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
    PLATFORM_OPTION,
    click.option("--source-mirror", "source_mirrors", multiple=True, metavar="REGISTRY=HOST[/PATH]",
                 help="Read REGISTRY's images from HOST/PATH (a pull-through cache or Harness's GAR mirror)."),
]  # fmt: skip
RUN_OPTIONS: list[Callable[[F], F]] = [
    click.option("--jobs", "-j", default=16, show_default=True, type=click.IntRange(1, 64),
                 help="Images copied at the same time."),
    click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write a JSON report (one entry per image) to FILE."),
    click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                 help="Skip TLS verification (or use plain HTTP) for HOST. Loopback registries may be plain "
                      "HTTP without it."),
    click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Trust this CA certificate (PEM) for the registries, besides the system ones."),
    click.option("--engine", type=click.Choice(["auto", "skopeo", "docker"]), default="auto", show_default=True,
                 envvar="CHAOSMIRROR_ENGINE", help="What copies the images."),
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
    platforms: tuple[str, ...] = (),
    source_mirrors: tuple[str, ...] = (),
    jobs: int = 16,
    insecure: tuple[str, ...] = (),
    ca_cert: Path | None = None,
    engine: str = "auto",
) -> Any:
    from chaosmirror.manifest import Platform
    from chaosmirror.ref import SourceMirror, Target
    from chaosmirror.settings import Settings

    return Settings(
        target=Target.parse(target, account=account) if target else None,
        groups=groups,
        platforms=tuple(Platform.parse(p) for p in platforms),
        source_mirrors=tuple(SourceMirror.parse(m) for m in source_mirrors),
        jobs=jobs,
        insecure=frozenset(insecure),
        ca_file=ca_cert,
        engine=engine,
    )


class Progress:
    """A tqdm bar on a terminal; one plain line per image otherwise (CI logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        self.bar: Any = None
        self.bytes = 0

    def phase(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            click.echo(message, file=self.stream)

    def start(self, total: int) -> None:
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="image",
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} images [{elapsed}<{remaining}]",
            )

    def event(self, event: Any) -> None:
        from chaosmirror.report import human_size

        entry = event.entry
        if event.kind == "start":
            if self.bar is not None:
                self.bar.set_postfix_str(event.action.item.dst.name, refresh=True)
            return
        if entry is None or entry.status == "skipped":
            if self.bar is not None:
                self.bar.update(1)
            return
        size = f" {human_size(entry.size)}" if entry.size else ""
        line = f"{entry.status:7} {entry.destination}{size} {entry.seconds:.1f}s"
        if entry.status == "failed":
            line = f"failed  {entry.source}: {entry.error}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            click.echo(line, file=self.stream)

    def moved(self, count: int) -> None:
        """Bytes an engine reports as transferred (the Docker engine's per-layer progress)."""
        self.bytes += count
        if self.bar is not None:
            from chaosmirror.report import human_size

            self.bar.set_postfix_str(f"{human_size(self.bytes)} moved", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _copy_command(
    release: str, dry_run: bool, report_path: Path | None, manifests: Path | None, **options: Any
) -> None:
    from chaosmirror.mirror import mirror_release
    from chaosmirror.report import summary

    config = pop_config_out(options)  # mirror --config-out DIR
    rel = catalog(manifests).load(release)
    settings = settings_from(**options)
    progress = Progress(sys.stderr)
    total = len(dict.fromkeys(i.ref for i in rel.images(settings.groups)))
    if not dry_run:
        progress.start(total)
    try:
        report = mirror_release(rel, settings, dry_run=dry_run, on_event=progress.event, on_phase=progress.phase,
                                on_bytes=progress.moved)  # fmt: skip
    finally:
        progress.close()
    if report_path:
        report.write(report_path)
    if dry_run:
        click.echo(plan_table(rel, report))
    else:
        click.echo(summary(report))
    if report.error:
        raise _RunFailed(report.error)
    if config is not None:
        config_after_run(config, rel, settings, report, dry_run=dry_run)
    sys.exit(report.exit_code)


def plan_table(rel: Release, report: Any) -> str:
    from chaosmirror.report import human_size, table

    rows = [
        [
            {"planned": "copy", "skipped": "skip", "failed": "FAIL"}[e.status],
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


@cli.group()
def bundle() -> None:
    """Air-gap bundles: export a release to one verified file, import it with no route to the source."""


def _finish_run(report: Any, report_path: Path | None, *, after: Callable[[], None] | None = None) -> None:
    """Write the report, print the summary, run `after` (e.g. --config-out), exit with the run's code."""
    from chaosmirror.report import summary

    if report_path:
        report.write(report_path)
    click.echo(summary(report))
    if report.error:
        raise _RunFailed(report.error)
    if after is not None:
        after()
    sys.exit(report.exit_code)


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

    cat = catalog(manifests)
    rel = cat.load(release)
    base = cat.load(since) if since else None
    progress = Progress(sys.stderr)
    report = export_release(rel, settings_from(**options), output, kind=kind, since=base,
                            on_phase=progress.phase, on_event=progress.event)  # fmt: skip
    _finish_run(report, report_path)


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
        raise _RunFailed(f"{file} is damaged or incomplete ({len(scan.problems)} problems)")
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

    config = pop_config_out(options)  # bundle import --config-out DIR
    settings = settings_from(**options)
    progress = Progress(sys.stderr)
    report = import_bundle(file, settings, work_dir=work_dir, on_event=progress.event, on_phase=progress.phase)
    progress.close()

    def write_config() -> None:
        if config is not None:
            config_after_run(config, bundle_release(read_info(file)), settings, report, dry_run=False)

    _finish_run(report, report_path, after=write_config)


# --- registry configuration ------------------------------------------------------------------------

# The options of `config` that `--config-out` takes too: (declarations, click attributes).
CONFIG_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--secret-name",),
        {
            "default": "",
            "metavar": "NAME",
            "help": "Name of the Kubernetes pull secret for the target. Given: HCE's registry type is private, "
            "and a Secret file is written when credentials for the target are found.",
        },
    ),
    (
        ("--namespace",),
        {
            "default": "hce",
            "show_default": True,
            "help": "Namespace of the pull secret and of the chaos infrastructure.",
        },
    ),
    (
        ("--org",),
        {
            "default": "",
            "metavar": "ID",
            "help": "Set HCE's image registry for this organization (default: the account).",
        },
    ),
    (("--project",), {"default": "", "metavar": "ID", "help": "... for this project of --org."}),
    (("--infra",), {"default": "", "metavar": "ID", "help": "... for this chaos infrastructure of --project."}),
    (("--allow-overrides",), {"is_flag": True, "help": "Let lower scopes override this image registry."}),
    (("--default",), {"is_flag": True, "help": "Make it the default image registry of its scope."}),
]
CONFIG_OUT: tuple[tuple[str, ...], dict[str, Any]] = (
    ("--config-out",),
    {
        "type": click.Path(file_okay=False, path_type=Path),
        "metavar": "DIR",
        "help": "After a successful run, write the registry configuration (see `chaosmirror config`) into DIR, "
        "pinned to the digests the target now holds.",
    },
)


def config_options(f: F) -> F:
    """The options of `config` that say what to configure (secret, namespace, HCE scope and flags)."""
    for decls, attrs in reversed(CONFIG_OPTIONS):
        f = click.option(*decls, **attrs)(f)
    return f


def config_out_params() -> list[click.Parameter]:
    """`--config-out DIR` and the config options, for a command that puts images in a registry."""
    return [click.Option(list(decls), **attrs) for decls, attrs in (CONFIG_OUT, *CONFIG_OPTIONS)]


def write_registry_config(rel: Release, target: Any, output: Path, **options: Any) -> None:
    """Gather, render and write the configuration; list the files written (never what is in them)."""
    from chaosmirror.emit import render_config
    from chaosmirror.emit.folder import write_config
    from chaosmirror.emit.inputs import gather

    files = render_config(gather(rel, target, **options))
    paths = write_config(files, output)
    click.echo(f"wrote the registry configuration of HCE {rel.name} on {target} to {output}:")
    for rendered, path in zip(files, paths, strict=True):
        click.echo(f"  {path}" + ("  (mode 0600: it holds the registry password)" if rendered.secret else ""))
    click.echo(f"next: {output / 'NEXT-STEPS.md'}")


def pop_config_out(options: dict[str, Any]) -> dict[str, Any] | None:
    """Take `--config-out` and the config options out of a copy command's options; None when no
    --config-out was given (then no config option may be either)."""
    defaults = {
        "config_out": None,
        "secret_name": "",
        "namespace": "hce",
        "org": "",
        "project": "",
        "infra": "",
        "allow_overrides": False,
        "default": False,
    }
    taken = {name: options.pop(name) for name in defaults if name in options}
    if taken.get("config_out") is None:
        given = [name for name, value in taken.items() if value != defaults[name]]
        if given:
            raise _BadInput(f"--{given[0].replace('_', '-')} is used with --config-out DIR")
        return None
    return taken


def config_after_run(config: dict[str, Any], rel: Release, settings: Any, report: Any, *, dry_run: bool) -> None:
    """--config-out: once every image is in the target, write the configuration pinned to the digests
    the run saw there (copied or already present). For `mirror`, and `bundle import`."""
    from chaosmirror.emit.inputs import digests_from_entries

    options = dict(config)
    output = options.pop("config_out")
    if dry_run:
        click.echo("--config-out: nothing written, --dry-run copies nothing", err=True)
        return
    if report.exit_code != 0:
        click.echo(f"--config-out: nothing written, {report.count('failed')} images failed", err=True)
        return
    digests = digests_from_entries(report.entries)
    write_registry_config(
        rel,
        settings.target,
        output,
        groups=settings.groups,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        digests=digests,
        env=settings.env,
        **options,
    )


# `mirror --config-out DIR`: its options are added here, next to the code that handles them.
mirror.params += config_out_params()
bundle_import.params += config_out_params()


@cli.command()
@click.argument("release")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="HOST[:PORT][/PATH]",
    help="The registry RELEASE was mirrored to (HCE's registry server).",
)
@click.option(
    "--account",
    default="harness",
    show_default=True,
    help="HCE's registry account: the images are at TARGET/ACCOUNT/NAME:TAG.",
)
@config_options
@click.option(
    "--pin-digests", is_flag=True, help="Pin every image reference to its digest (tag@sha256:...), taken from --report."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The JSON report of the `mirror --report FILE` run, for --pin-digests.",
)
@group_option
@click.option(
    "--ca-cert",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CA (PEM) that signed the target's certificate: the nodes are told to trust it.",
)
@click.option(
    "--insecure-registry",
    "insecure",
    multiple=True,
    metavar="HOST[:PORT]",
    help="The target is reached without TLS verification, or over plain HTTP (loopback targets are "
    "checked for plain HTTP without it).",
)
@manifests_option
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the files into DIR (created if needed).",
)
def config(
    release: str,
    *,
    target: str,
    account: str,
    pin_digests: bool,
    report_path: Path | None,
    insecure: tuple[str, ...],
    manifests: Path | None,
    output: Path,
    **options: Any,
) -> None:
    """Write the registry configuration that goes with RELEASE mirrored to the target.

    HCE's image-registry setting (Terraform, GraphQL request body, plain YAML), the pull Secret
    (with --secret-name, when credentials are found; mode 0600), Helm values for the dedicated
    chaos infrastructure, the experiment step container, CRI-O/Podman registries.conf and
    containerd hosts.toml that serve the original docker.io names from the mirror, and
    NEXT-STEPS.md: what to apply where, in order."""
    from chaosmirror.emit.inputs import load_report_digests
    from chaosmirror.ref import Target

    if pin_digests != (report_path is not None):
        raise _BadInput("--pin-digests and --report FILE (the JSON report of the mirror run) go together")
    rel = catalog(manifests).load(release)
    digests = load_report_digests(report_path, rel) if report_path else None
    write_registry_config(
        rel, Target.parse(target, account=account), output, insecure=frozenset(insecure), digests=digests, **options
    )


def main() -> None:
    cli(prog_name="chaosmirror")
