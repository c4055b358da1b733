"""One error base for everything chaosmirror reports to a person, each with its exit code.

Failures that cross the network carry data, not just a message: what kind of failure it was, the
HTTP status, whether trying again can help, and how long the other side asked us to wait. Retries
and advice are decided from these fields, never by searching a message for text.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal[
    "dns",  # the name does not resolve
    "refused",  # nothing listens (a registry restarting, or a wrong port)
    "timeout",  # no answer within --timeout
    "reset",  # the connection broke before or while the answer came
    "truncated",  # the answer stopped before its end
    "tls",  # certificate or handshake problem
    "proxy",  # the proxy refused us
    "rate-limited",  # HTTP 429
    "server",  # 408 or a 5xx answer
    "storage",  # the registry cannot write its storage (disk full, quota, driver error)
    "auth",  # credentials missing or rejected
    "denied",  # authenticated but not allowed
    "not-found",
    "protocol",  # an answer we did not expect
    "local",  # this machine: disk full, permission denied
]
TRANSIENT: frozenset[Kind] = frozenset({"refused", "timeout", "reset", "truncated", "rate-limited", "server"})


class ChaosmirrorError(Exception):
    """A failure worth a clear message. Exit code 2 means bad usage or input, 1 a failed run."""

    exit_code = 2


class ManifestError(ChaosmirrorError):
    """A release manifest that does not load: the message names the file, line and key."""


class RefError(ChaosmirrorError):
    """An image reference or digest that does not parse."""


class UnknownReleaseError(ChaosmirrorError):
    """A release name that matches no manifest; the message lists the known ones."""


class RegistryError(ChaosmirrorError):
    """A registry that cannot be reached, refuses us, or answers something unexpected."""

    exit_code = 1

    def __init__(self, message: str, *, kind: Kind = "protocol", status: int | None = None,
                 retry_after: float | None = None, transient: bool | None = None,
                 exhausted: bool = False) -> None:  # fmt: skip
        super().__init__(message)
        self.kind: Kind = kind
        self.status = status
        self.retry_after = retry_after
        self.transient = kind in TRANSIENT if transient is None else transient
        self.exhausted = exhausted  # its retries were spent: an operation made of it does not start again


class AuthError(RegistryError):
    """A registry that wants credentials we do not have, or rejects the ones we gave."""

    def __init__(self, message: str, *, kind: Kind = "auth", status: int | None = 401) -> None:
        super().__init__(message, kind=kind, status=status)


class NotFoundError(RegistryError):
    """An image (or tag) the registry does not hold."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="not-found", status=404)


class EngineError(ChaosmirrorError):
    """The copy engine (skopeo, Docker) is missing or failed. `kind` and `transient` as for
    RegistryError, read from the engine's exit status and error output."""

    exit_code = 1

    def __init__(self, message: str, *, kind: Kind = "protocol", transient: bool | None = None,
                 retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.kind: Kind = kind
        self.retry_after = retry_after
        self.transient = kind in TRANSIENT if transient is None else transient


class BundleError(ChaosmirrorError):
    """An air-gap bundle that cannot be written, or one that is damaged or incomplete."""

    exit_code = 1


class Interrupted(ChaosmirrorError):
    """The run was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP) before this work finished; the exit
    code is 128 + the signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    exit_code = 130

    def __init__(self, message: str = "interrupted", *, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
