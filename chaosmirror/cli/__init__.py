"""The command line: parse, call one library function, render. The only importer of click and tqdm."""

from __future__ import annotations

# Each command module registers its commands on `cli` when imported.
from chaosmirror.cli import bundles, config, copying, releases, verifying
from chaosmirror.cli.app import cli

# `--config-out DIR` and its options, on the commands that put images in a registry.
copying.mirror.params += config.config_out_params()
bundles.bundle_import.params += config.config_out_params()

__all__ = ["bundles", "cli", "config", "copying", "main", "releases", "verifying"]


def main() -> None:
    cli(prog_name="chaosmirror")
