"""One error base for everything chaosmirror reports to a person, each with its exit code."""

from __future__ import annotations


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


class AuthError(RegistryError):
    """A registry that wants credentials we do not have, or rejects the ones we gave."""


class NotFoundError(RegistryError):
    """An image (or tag) the registry does not hold."""


class EngineError(ChaosmirrorError):
    """The copy engine (skopeo, Docker) is missing or failed."""

    exit_code = 1


class BundleError(ChaosmirrorError):
    """An air-gap bundle that cannot be written, or one that is damaged or incomplete."""

    exit_code = 1
