"""The skopeo engine: daemonless copies by running `skopeo copy`. The only module that runs skopeo.

Every copy is `skopeo copy --all --preserve-digests`, so indexes keep every platform and the target
gets the source's exact digests. Credentials reach skopeo as an in-memory file (a memfd) it
inherits and reads as `/proc/self/fd/N`: no credential is ever written to disk, and the file
vanishes with the last process holding it, even after `kill -9`. Each skopeo runs in its own
process group (so a stop kills it and whatever it started) with a parent-death signal (so it dies
with a killed chaosmirror instead of copying on). TLS choices follow what the registry client found
(plain HTTP on loopback, --insecure-registry, --ca-cert).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from chaosmirror.auth import Role, auth_json, hint
from chaosmirror.engines.goerrors import classify_message
from chaosmirror.errors import EngineError
from chaosmirror.lifecycle import Run, private_dir
from chaosmirror.manifest import Descriptor, Manifest, Platform
from chaosmirror.ref import ArchiveRef, DirRef, ImageRef, LayoutRef, Location
from chaosmirror.registry import Registries

COPY_TIMEOUT = 4 * 3600  # one image; a stuck transfer must not hang a CI job forever
KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL of a stopped copy
INSTALL = (
    "Install it (Debian/Ubuntu: `sudo apt-get install skopeo`; Fedora/RHEL: `sudo dnf install skopeo`; "
    "macOS: `brew install skopeo`), or use --engine docker."
)


def find_skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        raise EngineError(f"skopeo is not installed. {INSTALL}")
    return path


def fatal_message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", last).replace('\\"', '"')


def classify(message: str, src: Location, dst: Location) -> EngineError:
    """skopeo's message as an EngineError with its kind and a reason that says what to do."""
    kind = classify_message(message)
    if kind == "local" and isinstance(dst, ImageRef) and "no space" in message:
        kind = "storage"  # the registry said it: its storage is full
    text = message or "skopeo failed without a message"
    registry = isinstance(dst, ImageRef) and dst.registry in message
    side: Role = "dest" if registry else "src"
    advice = {
        "not-found": f"{src} not found in the source",
        "auth": f"access denied: {text}; {hint(side)}",
        "denied": f"access denied: {text}; {hint(side)}",
        "rate-limited": f"rate limited by the registry: {text}; log in, wait, or read through --source-mirror",
        "tls": f"TLS verification failed: {text}; pass --ca-cert FILE (or --insecure-registry HOST)",
        "refused": f"registry unreachable: {text}",
        "dns": f"registry unreachable: {text}",
        "storage": f"the target registry's storage is full: {text}",
        "local": f"this machine: {text}",
    }.get(kind, text)
    return EngineError(advice, kind=kind)


def explain(stderr: str, src: Location, dst: Location) -> str:
    """A one-line reason, with what to do, from skopeo's error output."""
    return str(classify(fatal_message(stderr), src, dst))


class Skopeo:
    """Runs `skopeo copy` per image; safe to call from many threads at once."""

    name = "skopeo"
    exact = True
    platform: Platform | None = None  # every platform, or the ones asked for
    stages = True  # copies from a staged dir: folder (`staging`) when every layer is in the target

    def __init__(self, registries: Registries, *, binary: str | None = None, run: Run | None = None) -> None:
        self.binary = binary or find_skopeo()
        self.registries = registries
        self.run = run or registries.run
        self._folder: Path | None = None  # for CA copies and digest files: nothing secret
        self._lock = threading.Lock()
        self._sides_lock = threading.Lock()
        self._sides: dict[tuple[str, Role], tuple[list[str], list[int]]] = {}
        self._fds: list[int] = []
        self._secrets: list[str] = []
        self._procs: set[subprocess.Popen[str]] = set()
        self._setpriv = shutil.which("setpriv")
        self._unhook = self.run.on_stop(self.abort)

    # --- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        self._unhook()
        self.abort()
        with self._lock:
            fds, self._fds = self._fds, []
            self._sides.clear()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def abort(self) -> None:
        """Stop every running copy: SIGTERM to its process group, SIGKILL after KILL_AFTER seconds."""
        with self._lock:
            procs = [p for p in self._procs if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        if procs:
            timer = threading.Timer(KILL_AFTER, self._kill, args=(procs,))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _kill(procs: list[subprocess.Popen[str]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def _private(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = private_dir("skopeo")
            return self._folder

    # --- options ------------------------------------------------------------------------------------

    def _side(self, ref: ImageRef, role: Role) -> tuple[list[str], list[int]]:
        """The --src-*/--dest-* options for reaching `ref`'s registry, and the fds they need."""
        key = (ref.registry, role)
        with self._sides_lock:  # once per registry: two threads must not write its CA folder at once
            if key not in self._sides:
                self._sides[key] = self._options(ref.registry, role)
            return self._sides[key]

    def _options(self, host: str, role: Role) -> tuple[list[str], list[int]]:
        registry = self.registries.get(host, role)
        endpoint = registry.endpoint
        options: list[str] = []
        fds: list[int] = []
        if endpoint.insecure or registry.plain_http:
            options.append(f"--{role}-tls-verify=false")
        else:
            certs = endpoint.cert_files()
            if certs:
                folder = self._private() / f"certs-{role}-{abs(hash(host))}"
                folder.mkdir(exist_ok=True)
                for i, cert in enumerate(certs):
                    shutil.copyfile(cert, folder / f"ca-{i}.crt")
                options.append(f"--{role}-cert-dir={folder}")
        if endpoint.credential:
            data = auth_json({host: endpoint.credential})
            with self._lock:
                self._secrets.append(endpoint.credential.password)
            if hasattr(os, "memfd_create"):
                fd = secret_file(data)
                with self._lock:
                    self._fds.append(fd)
                fds.append(fd)
                options.append(f"--{role}-authfile=/proc/self/fd/{fd}")
            else:  # no memfd (macOS): a 0600 file in the private folder, removed when the run ends
                path = self._private() / f"auth-{role}-{abs(hash(host))}.json"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                options.append(f"--{role}-authfile={path}")
        return options, fds

    def _location(self, where: Location, role: Role) -> tuple[list[str], list[int], str]:
        """The options, inherited fds and transport argument for one side of a copy."""
        if isinstance(where, ImageRef):
            options, fds = self._side(where, role)
            return options, fds, f"docker://{where}"
        if isinstance(where, LayoutRef):
            options = [f"--{role}-shared-blob-dir={where.shared_blobs}"] if where.shared_blobs else []
            return options, [], f"oci:{where.path}:{where.name}"
        if isinstance(where, DirRef):
            return [], [], f"dir:{where.path}"
        return [], [], f"docker-archive:{where.path}:{where.name}"  # names the image in a multi-image archive

    def argv(self, src: Location, dst: Location, digest_file: Path) -> tuple[list[str], list[int]]:
        src_options, src_fds, src_arg = self._location(src, "src")
        dst_options, dst_fds, dst_arg = self._location(dst, "dest")
        # A docker-archive holds one platform in Docker's own format: no index, new manifest digests.
        exact = [] if isinstance(src, ArchiveRef) or isinstance(dst, ArchiveRef) else ["--all", "--preserve-digests"]
        # chaosmirror retries a failed copy itself (see mirror.py), with its own backoff and limits.
        argv = [self.binary, "copy", "--quiet", *exact, "--retry-times=0", f"--digestfile={digest_file}",
                *src_options, *dst_options, src_arg, dst_arg]  # fmt: skip
        if self._setpriv:  # the copy dies with chaosmirror, even with a kill -9
            argv = [self._setpriv, "--pdeathsig", "KILL", "--", *argv]
        return argv, [*src_fds, *dst_fds]

    # --- copying ------------------------------------------------------------------------------------

    def refuses(self, manifests: list[Manifest]) -> str:
        return ""  # skopeo copies blobs as they are, whatever their format

    def reuses(self, blob: Descriptor) -> bool:
        return True  # it asks the target for every blob first, and skips what is there

    def copy(self, src: Location, dst: Location) -> str:
        self.run.check()
        digest_file = self._private() / f"digest-{threading.get_ident()}-{os.urandom(4).hex()}"
        try:
            argv, fds = self.argv(src, dst, digest_file)
            self._run(argv, fds, src, dst)
            return digest_file.read_text().strip()
        except OSError as exc:
            raise EngineError(f"cannot read what skopeo wrote: {exc.strerror or exc}", kind="local") from None
        finally:
            digest_file.unlink(missing_ok=True)

    def _run(self, argv: list[str], fds: list[int], src: Location, dst: Location) -> None:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=fds,
                process_group=0,  # its own group: a stop kills it and whatever it started
                env={**os.environ, "LC_ALL": "C"},
            )
        except OSError as exc:
            raise EngineError(f"cannot run skopeo: {exc.strerror or exc}", kind="local") from None
        with self._lock:
            self._procs.add(proc)
        try:
            if self.run.stopped:  # the stop came while it started
                self.abort()
            _, stderr = proc.communicate(timeout=COPY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill([proc])
            proc.communicate()
            raise EngineError(f"copy {src} -> {dst} took longer than {COPY_TIMEOUT // 60} minutes",
                              kind="timeout", transient=False) from None  # fmt: skip
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode == 0:
            return
        if self.run.stopped:
            raise self.run.interrupted()
        if proc.returncode < 0:
            raise EngineError(f"skopeo was killed by signal {-proc.returncode}", kind="local")
        error = classify(fatal_message(stderr), src, dst)
        message = str(error)
        for secret in self._secrets:
            message = message.replace(secret, "<hidden>")
        raise EngineError(message, kind=error.kind)


def secret_file(data: bytes) -> int:
    """An anonymous in-memory file holding `data`, for a child to read as /proc/self/fd/N."""
    fd = os.memfd_create("chaosmirror-auth", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
    except OSError:
        os.close(fd)
        raise
    return fd
