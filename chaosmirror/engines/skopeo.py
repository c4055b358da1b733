"""The skopeo engine: daemonless copies by running `skopeo copy`. The only module that runs skopeo.

Every copy is `skopeo copy --all --preserve-digests`, so indexes keep every platform and the target
gets the source's exact digests. Credentials reach skopeo only as 0600 auth files in a private
temporary folder (`--src-authfile`/`--dest-authfile`), never on argv; TLS choices follow what the
registry client found (plain HTTP on loopback, --insecure-registry, --ca-cert).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from chaosmirror.auth import Role, hint, write_auth_file
from chaosmirror.errors import EngineError
from chaosmirror.manifest import Platform
from chaosmirror.ref import ArchiveRef, ImageRef, LayoutRef, Location
from chaosmirror.registry import Registries

COPY_TIMEOUT = 4 * 3600  # one image; a stuck transfer must not hang a CI job forever
INSTALL = (
    "Install it (Debian/Ubuntu: `sudo apt-get install skopeo`; Fedora/RHEL: `sudo dnf install skopeo`; "
    "macOS: `brew install skopeo`), or use --engine docker."
)


def find_skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        raise EngineError(f"skopeo is not installed. {INSTALL}")
    return path


def explain(stderr: str, src: Location, dst: Location) -> str:
    """A one-line reason, with what to do, from skopeo's error output."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "skopeo failed without a message"
    last = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", last).replace('\\"', '"')
    low = last.lower()
    if "manifest unknown" in low or "name unknown" in low:
        return f"{src} not found in the source"
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        side = "dest" if isinstance(dst, ImageRef) and dst.registry in last else "src"
        return f"access denied: {last}; {hint(side)}"  # type: ignore[arg-type]
    if "toomanyrequests" in low or "429" in low:
        return f"rate limited by the registry: {last}; log in, wait, or read through --source-mirror"
    if "x509" in low or "certificate" in low:
        return f"TLS verification failed: {last}; pass --ca-cert FILE (or --insecure-registry HOST)"
    if "connection refused" in low or "no such host" in low or "i/o timeout" in low:
        return f"registry unreachable: {last}"
    if "no space left" in low:
        where = "the registry" if isinstance(dst, ImageRef) and "blob upload" in low else "this machine"
        return f"out of disk space on {where}: {last}"
    return last


class Skopeo:
    """Runs `skopeo copy` per image; safe to call from many threads at once."""

    name = "skopeo"
    exact = True
    platform: Platform | None = None  # every platform, or the ones asked for

    def __init__(self, registries: Registries, *, binary: str | None = None) -> None:
        self.binary = binary or find_skopeo()
        self.registries = registries
        self._folder = Path(tempfile.mkdtemp(prefix="chaosmirror-skopeo-"))  # 0700
        self._lock = threading.Lock()
        self._files: dict[tuple[str, Role], list[str]] = {}
        self._secrets: list[str] = []

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    def _side(self, ref: ImageRef, role: Role) -> list[str]:
        """The --src-*/--dest-* options for reaching `ref`'s registry."""
        key = (ref.registry, role)
        with self._lock:
            if key not in self._files:
                self._files[key] = self._options(ref.registry, role)
            return self._files[key]

    def _options(self, host: str, role: Role) -> list[str]:
        registry = self.registries.get(host, role)
        endpoint = registry.endpoint
        options: list[str] = []
        if endpoint.insecure or registry.plain_http:
            options.append(f"--{role}-tls-verify=false")
        else:
            certs = endpoint.cert_files()
            if certs:
                folder = self._folder / f"certs-{role}-{len(self._files)}"
                folder.mkdir()
                for i, cert in enumerate(certs):
                    shutil.copyfile(cert, folder / f"ca-{i}.crt")
                options.append(f"--{role}-cert-dir={folder}")
        if endpoint.credential:
            name = f"auth-{role}-{len(self._files)}.json"
            path = write_auth_file(self._folder, name, {host: endpoint.credential})
            options.append(f"--{role}-authfile={path}")
            self._secrets.append(endpoint.credential.password)
        return options

    def _location(self, where: Location, role: Role) -> tuple[list[str], str]:
        """The options and the transport argument for one side of a copy."""
        if isinstance(where, ImageRef):
            return self._side(where, role), f"docker://{where}"
        if isinstance(where, LayoutRef):
            options = [f"--{role}-shared-blob-dir={where.shared_blobs}"] if where.shared_blobs else []
            return options, f"oci:{where.path}:{where.name}"
        return [], f"docker-archive:{where.path}:{where.name}"  # names the image in a multi-image archive

    def argv(self, src: Location, dst: Location, digest_file: Path) -> list[str]:
        src_options, src_arg = self._location(src, "src")
        dst_options, dst_arg = self._location(dst, "dest")
        # A docker-archive holds one platform in Docker's own format: no index, new manifest digests.
        exact = [] if isinstance(src, ArchiveRef) or isinstance(dst, ArchiveRef) else ["--all", "--preserve-digests"]
        return [self.binary, "copy", "--quiet", *exact, "--retry-times=2", f"--digestfile={digest_file}",
                *src_options, *dst_options, src_arg, dst_arg]  # fmt: skip

    def copy(self, src: Location, dst: Location) -> str:
        with tempfile.NamedTemporaryFile(dir=self._folder, prefix="digest-") as digest_file:
            self._run(self.argv(src, dst, Path(digest_file.name)), src, dst)
            return Path(digest_file.name).read_text().strip()

    def _run(self, argv: list[str], src: Location, dst: Location) -> None:
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=COPY_TIMEOUT,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired:
            raise EngineError(f"copy {src} -> {dst} took longer than {COPY_TIMEOUT // 60} minutes") from None
        except OSError as exc:
            raise EngineError(f"cannot run skopeo: {exc}") from None
        if done.returncode != 0:
            message = explain(done.stderr, src, dst)
            for secret in self._secrets:
                message = message.replace(secret, "<hidden>")
            raise EngineError(message)
