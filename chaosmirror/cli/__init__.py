"""The command line: parse, call one library function, render. The only importer of click and tqdm."""

from __future__ import annotations

import os
import sys
import threading

# Each command module registers its commands on `cli` when imported.
from chaosmirror.cli import bundles, config, copying, releases, verifying
from chaosmirror.cli.app import cli

# `--config-out DIR` and its options, on the commands that put images in a registry.
copying.mirror.params += config.config_out_params()
bundles.bundle_import.params += config.config_out_params()

__all__ = ["bundles", "cli", "config", "copying", "main", "releases", "verifying"]


def main() -> None:
    """Run the command line; exit without tearing the interpreter down once everything is closed."""
    try:
        cli(prog_name="chaosmirror")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    _exit(code)


def _exit(code: object) -> None:
    """Exit with `code`. Every file and connection of a run is closed by now and every child waited
    for (the commands close what they open in `finally` blocks); tearing down the interpreter's
    modules and objects would only add tens of milliseconds to every run, so once only this
    thread is left, the process ends at once (`os._exit`, after flushing stdout and stderr)."""
    if threading.active_count() > 1:
        raise SystemExit(code)
    status = code if isinstance(code, int) else 0 if code is None else 1
    if not isinstance(code, int) and code is not None:
        print(code, file=sys.stderr)  # what SystemExit does with a message
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: let the interpreter say so, as always
        raise SystemExit(code) from None
    os._exit(status)
