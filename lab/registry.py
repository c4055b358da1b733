"""Real registries on loopback for tests, the demo and the benchmark.

`RegistryServer` runs Debian's `docker-registry` (the CNCF distribution server) on a free
127.0.0.1 port, optionally behind htpasswd auth and TLS with a CA made here by `openssl`.
`push` uploads stand-in images to a plain-HTTP registry with the distribution API directly.
Each server keeps an access log, so a test can count the requests a run made (`requests()`).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.images import Artifact

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed; install the Debian package {package} (make setup does)")
    return path


@dataclass(frozen=True)
class Logged:
    """One request in a registry's access log."""

    method: str
    path: str
    status: int
    agent: str = ""  # the client's User-Agent: "chaosmirror", "skopeo/1.9.3", "docker/20.10.24+dfsg1 go/..."


_ACCESS_RE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3}) \S+ "[^"]*" "([^"]*)"')


@dataclass(frozen=True)
class Tls:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls(folder: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Tls:
    """A throwaway CA and a server certificate for `hosts`, signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = need("openssl", "openssl")
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=chaosmirror test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    sans = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
    ext = folder / "san.ext"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return Tls(ca_cert, cert, key)


class RegistryServer:
    """One `docker-registry` process with its own storage folder."""

    def __init__(
        self,
        folder: Path,
        *,
        auth: tuple[str, str] | None = None,
        tls: Tls | None = None,
        port: int | None = None,
        address: str = "127.0.0.1",
        foreign_urls: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        # URL patterns of foreign layers (Windows base layers) the registry accepts in a manifest; by
        # default distribution accepts none (registry/handlers/app.go: "If Allow and Deny are empty,
        # allow nothing"), where Docker Hub accepts Microsoft's.
        self.foreign_urls = foreign_urls
        self.auth = auth
        self.tls = tls
        self.address = address  # another address than loopback only inside a test's network namespace
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def _config(self) -> str:
        http_conf: dict[str, object] = {"addr": self.host, "secret": "lab-only-secret"}
        if self.tls:
            http_conf["tls"] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
        conf: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.folder / "data")},
                "cache": {"blobdescriptor": "inmemory"},
                "delete": {"enabled": True},
            },
            "http": http_conf,
        }
        if self.foreign_urls:
            conf["validation"] = {"manifests": {"urls": {"allow": list(self.foreign_urls)}}}
        if self.auth:
            conf["auth"] = {"htpasswd": {"realm": "chaosmirror-lab", "path": str(self._htpasswd())}}
        return json.dumps(conf)  # YAML is a superset of JSON

    def _htpasswd(self) -> Path:
        assert self.auth
        user, password = self.auth
        # -i reads the password from stdin, so it never shows in a process listing.
        out = subprocess.run(
            [need("htpasswd", "apache2-utils"), "-niB", user],
            input=password.encode(),
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
        path = self.folder / "htpasswd"
        path.write_bytes(out)
        return path

    def start(self) -> RegistryServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(self._config())
        log = open(self.folder / "registry.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [need("docker-registry", "docker-registry"), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.folder / 'registry.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry on {self.host} did not start in {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def requests(self, since: int = 0) -> list[Logged]:
        """Requests the server has logged (all of them, or those after the first `since`)."""
        text = (self.folder / "registry.log").read_text(errors="replace")
        found = [Logged(m[1], m[2], int(m[3]), m[4]) for m in _ACCESS_RE.finditer(text)]
        return found[since:]

    def wipe(self) -> None:
        """Stop, delete every stored image, start again on the same port."""
        self.stop()
        shutil.rmtree(self.folder / "data", ignore_errors=True)
        self.start()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """The few distribution-API calls the lab needs, on one kept-alive connection."""

    def __init__(self, host: str, *, tls: Tls | None = None, auth: tuple[str, str] | None = None) -> None:
        hostname, port = host.rsplit(":", 1)
        if tls:
            ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                hostname, int(port), context=ctx, timeout=60
            )
        else:
            self.conn = http.client.HTTPConnection(hostname, int(port), timeout=60)
        self.headers: dict[str, str] = {}
        if auth:
            import base64

            self.headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200

    def push_blob(self, repo: str, data: bytes, digest: str) -> None:
        if self.has_blob(repo, digest):
            return
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"start upload to {repo}: HTTP {status} {body[:200]!r}")
        location = headers["location"]
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        sep = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise RuntimeError(f"upload {digest} to {repo}: HTTP {status} {body[:200]!r}")

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> None:
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/{ref}", data, {"Content-Type": media_type})
        if status != 201:
            raise RuntimeError(f"put manifest {repo}:{ref}: HTTP {status} {body[:300]!r}")

    def digest(self, repo: str, ref: str) -> str | None:
        status, headers, _ = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        return headers.get("docker-content-digest") if status == 200 else None

    def get_manifest(self, repo: str, ref: str) -> dict[str, object]:
        status, _, body = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if status != 200:
            raise RuntimeError(f"get manifest {repo}:{ref}: HTTP {status}")
        return json.loads(body)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()


def push(host: str, repo: str, tag: str, artifact: Artifact, **client_args: object) -> str:
    """Upload `artifact` as `host/repo:tag`; return its digest."""
    client = Client(host, **client_args)  # type: ignore[arg-type]
    try:
        for blob in artifact.all_blobs():
            client.push_blob(repo, blob.data, blob.digest)
        for manifest in artifact.manifests():
            ref = tag if manifest is artifact.top else manifest.digest
            client.put_manifest(repo, ref, manifest.data, manifest.media_type)
    finally:
        client.close()
    return artifact.digest
