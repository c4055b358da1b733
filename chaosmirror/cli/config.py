"""The `config` command, and `--config-out` for the commands that put images in a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from chaosmirror.cli.app import (
    BadInput,
    F,
    catalog,
    cli,
    group_option,
    manifests_option,
    optional_option,
    releases_argument,
)
from chaosmirror.emit.model import SOURCE_POLICIES
from chaosmirror.release import Release

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
    (
        ("--node-credentials",),
        {
            "is_flag": True,
            "help": "Write the target's credential into the RKE2/K3s registries.yaml, so nodes can pull the "
            "original names through the mirror; that file is then mode 0600.",
        },
    ),
    (
        ("--mirror-source-policy",),
        {
            "type": click.Choice(SOURCE_POLICIES),
            "default": "AllowContactingSource",
            "show_default": True,
            "help": "OpenShift mirror sets: NeverContactSource for an air gap (never try the original "
            "registry), AllowContactingSource to fall back to it when the mirror lacks an image.",
        },
    ),
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


def write_registry_config(rel: Release, target: Any, output: Path, *, err: bool = False, **options: Any) -> None:
    """Gather, render and write the configuration; list the files written (never what is in them),
    on stderr with `err` (stdout holds a JSON report)."""
    from chaosmirror.emit import render_config
    from chaosmirror.emit.folder import write_config
    from chaosmirror.emit.inputs import gather

    files = render_config(gather(rel, target, **options))
    paths = write_config(files, output)
    click.echo(f"wrote the registry configuration of HCE {' + '.join(rel.names)} on {target} to {output}:", err=err)
    for rendered, path in zip(files, paths, strict=True):
        click.echo(f"  {path}" + ("  (mode 0600: it holds the registry password)" if rendered.secret else ""), err=err)
    if len(rel.names) > 1:
        click.echo(f"the node and registry files cover every image of {', '.join(rel.names)}; the Helm values and "
                   f"the experiment step container are those of the newest, {rel.names[-1]} (for another, run "
                   "`chaosmirror config` with that release alone)", err=err)  # fmt: skip
    click.echo(f"next: {output / 'NEXT-STEPS.md'}", err=err)


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
        "node_credentials": False,
        "mirror_source_policy": "AllowContactingSource",
    }
    taken = {name: options.pop(name) for name in defaults if name in options}
    if taken.get("config_out") is None:
        given = [name for name, value in taken.items() if value != defaults[name]]
        if given:
            raise BadInput(f"--{given[0].replace('_', '-')} is used with --config-out DIR")
        return None
    return taken


def config_after_run(config: dict[str, Any], rel: Release, settings: Any, report: Any, *, dry_run: bool,
                     err: bool = False) -> None:  # fmt: skip
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
        rel if settings.optional else rel.without_optional(),
        settings.target,
        output,
        err=err,
        groups=settings.groups,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        digests=digests,
        env=settings.env,
        **options,
    )


@cli.command()
@releases_argument
@click.option(
    "--to",
    "target",
    required=True,
    metavar="HOST[:PORT][/PATH]",
    help="The registry RELEASE... was mirrored to (HCE's registry server).",
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
@optional_option
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
    releases: tuple[str, ...],
    *,
    target: str,
    account: str,
    pin_digests: bool,
    report_path: Path | None,
    optional: bool,
    insecure: tuple[str, ...],
    manifests: Path | None,
    output: Path,
    **options: Any,
) -> None:
    """Write the registry configuration that goes with RELEASE... mirrored to the target.

    HCE's image-registry setting (Terraform, GraphQL request body, plain YAML), the pull Secret
    (with --secret-name, when credentials are found; mode 0600), Helm values for the dedicated
    chaos infrastructure, the experiment step container; the node files that serve the original
    docker.io names from the mirror (CRI-O/Podman registries.conf, containerd hosts.toml, RKE2/K3s
    registries.yaml, Docker daemon.json), OpenShift's ImageTagMirrorSet / ImageDigestMirrorSet and CA
    ConfigMap; and NEXT-STEPS.md: what to apply where, in order. With several releases the node
    and registry files cover the images of all of them; the Helm values are the newest one's."""
    from chaosmirror.emit.inputs import load_report_digests
    from chaosmirror.ref import Target

    if pin_digests != (report_path is not None):
        raise BadInput("--pin-digests and --report FILE (the JSON report of the mirror run) go together")
    rel = catalog(manifests).load_many(releases)
    rel = rel if optional else rel.without_optional()
    digests = load_report_digests(report_path, rel) if report_path else None
    write_registry_config(
        rel, Target.parse(target, account=account), output, insecure=frozenset(insecure), digests=digests, **options
    )
