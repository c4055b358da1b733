"""The edge of `emit`: gather what a `ConfigRequest` needs from the outside world.

It reads the CA file, the digests of a mirror report, the target's credential (from the same sources
as `mirror`), and asks the target once whether it speaks TLS when that is not known from the options.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from chaosmirror.auth import find_credential
from chaosmirror.emit.model import ConfigError, ConfigRequest, Scope, SourcePolicy, Transport
from chaosmirror.errors import ChaosmirrorError, RegistryError
from chaosmirror.ref import ImageRef, Target, is_loopback
from chaosmirror.registry import Registries
from chaosmirror.release import Release
from chaosmirror.report import HELD, Entry, held_digests, read_report


def digests_from_entries(entries: Iterable[Entry]) -> dict[ImageRef, str]:
    """Destination -> digest of every image a run copied or found already there."""
    return {ImageRef.parse(e.destination): e.digest for e in entries if e.status in HELD and e.digest}


def load_report_digests(path: Path, release: Release) -> dict[ImageRef, str]:
    """Destination -> digest from a JSON report that `mirror --report` wrote for `release` (or for
    several releases, `release` among them)."""
    try:
        doc = read_report(path)
        ran = doc.get("releases") or [doc.get("release")]  # format 1 reports before several releases per run
        if not isinstance(ran, list) or any(name not in ran for name in release.names):
            raise ConfigError(f"{path} is the report of release {doc.get('release')!r}, not {release.name}")
        return held_digests(doc, path)
    except ConfigError:
        raise
    except ChaosmirrorError as exc:
        raise ConfigError(str(exc)) from None


def read_ca(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the CA certificate {path}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{path} is not a PEM certificate (no BEGIN CERTIFICATE line)")
    return text if text.endswith("\n") else text + "\n"


def probe_transport(host: str, *, insecure: bool, ca_file: Path | None) -> Transport:
    """How clients reach `host`. A loopback host, or one named with --insecure-registry, is asked once
    (GET /v2/) whether it speaks TLS; any other host is TLS, checked against --ca-cert when given."""
    ca_pem = read_ca(ca_file) if ca_file else ""
    if not (insecure or is_loopback(host)):
        return Transport(ca_pem=ca_pem)
    registries = Registries(insecure=frozenset({host}) if insecure else frozenset(), ca_file=ca_file)
    try:
        plain = registries.get(host, "dest").plain_http
    except RegistryError as exc:
        raise RegistryError(
            f"cannot tell how to reach {host}: {exc}. A loopback or --insecure-registry target is asked "
            "whether it speaks TLS: start it first"
        ) from None
    finally:
        registries.close()
    if plain:
        return Transport(plain_http=True)
    return Transport(ca_pem=ca_pem, skip_verify=insecure)


def gather(
    release: Release,
    target: Target,
    *,
    groups: tuple[str, ...] = (),
    secret_name: str = "",
    namespace: str = "hce",
    org: str = "",
    project: str = "",
    infra: str = "",
    allow_overrides: bool = False,
    default: bool = False,
    insecure: frozenset[str] = frozenset(),
    ca_file: Path | None = None,
    digests: Mapping[ImageRef, str] | None = None,
    env: Mapping[str, str] | None = None,
    node_credentials: bool = False,
    mirror_source_policy: SourcePolicy = "AllowContactingSource",
) -> ConfigRequest:
    """A ConfigRequest from command-line values: probes the target, reads the CA and the credential."""
    scope = Scope(org=org, project=project, infra=infra)  # checks the options before any I/O
    transport = probe_transport(target.host, insecure=target.host in insecure, ca_file=ca_file)
    credential = None
    if secret_name or node_credentials:
        repository = "/".join(p for p in (target.path, target.account) if p)
        credential = find_credential(target.host, "dest", repository=repository, env=env)
    return ConfigRequest(
        release=release,
        target=target,
        groups=groups,
        secret_name=secret_name,
        namespace=namespace,
        scope=scope,
        allow_overrides=allow_overrides,
        default=default,
        transport=transport,
        credential=credential,
        node_credentials=node_credentials,
        mirror_source_policy=mirror_source_policy,
        digests=digests,
    )
