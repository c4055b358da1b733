"""A small client of the OCI distribution API: enough to plan a copy without copying.

It reads manifests (to learn digests, platforms and layers), asks whether the target holds a
manifest, mounts blobs between repositories and puts an index. Copying blobs is the engines' job.
Connections are kept alive, one per thread; Basic and Bearer-token auth are both handled.
Plain HTTP is used only for loopback registries and those named with --insecure-registry, as
Docker does.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from chaosmirror.auth import Role, find_credential, hint
from chaosmirror.endpoint import Endpoint, challenge, ssl_context
from chaosmirror.errors import AuthError, NotFoundError, RegistryError
from chaosmirror.manifest import ACCEPT, Manifest
from chaosmirror.ref import ImageRef, is_loopback

TIMEOUT = 60.0
BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Registry:
    """One registry, one role. Thread-safe: each thread keeps its own connection."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._scheme: str | None = None
        self._ctx: ssl.SSLContext | None = None
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    # --- connection -----------------------------------------------------------------------------

    @property
    def plain_http(self) -> bool:
        return self.scheme == "http"

    @property
    def scheme(self) -> str:
        with self._lock:
            if self._scheme is None:
                self._scheme = self._detect_scheme()
            return self._scheme

    def _new_conn(self, scheme: str) -> http.client.HTTPConnection:
        host, port = self._split_host()
        if scheme == "https":
            if self._ctx is None:
                self._ctx = ssl_context(self.endpoint)
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ctx, blocksize=BLOCK)
        return http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=BLOCK)

    def _split_host(self) -> tuple[str, int | None]:
        api = self.endpoint.api_host
        if api.startswith("["):
            host, _, port = api[1:].partition("]")
            return host, int(port[1:]) if port else None
        if api.count(":") == 1:
            host, port = api.split(":")
            return host, int(port)
        return api, None

    def _detect_scheme(self) -> str:
        host = self.endpoint.host
        conn = self._new_conn("https")
        try:
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            return "https"
        except ssl.SSLCertVerificationError as exc:
            raise RegistryError(
                f"cannot verify the TLS certificate of {host}: {exc.verify_message}; "
                f"pass --ca-cert FILE with the CA that signed it (or --insecure-registry {host} to skip the check)"
            ) from None
        except (ssl.SSLError, http.client.BadStatusLine, ConnectionResetError) as exc:
            if self.endpoint.insecure or is_loopback(host):
                return "http"
            raise RegistryError(
                f"{host} does not speak TLS ({exc.__class__.__name__}); if it is a plain-HTTP "
                f"registry, pass --insecure-registry {host}"
            ) from None
        except OSError as exc:
            raise RegistryError(self._unreachable(exc)) from None
        finally:
            conn.close()

    def _unreachable(self, exc: OSError) -> str:
        host = self.endpoint.host
        if isinstance(exc, socket.gaierror):
            return f"cannot reach registry {host}: the name does not resolve"
        if isinstance(exc, ConnectionRefusedError):
            return f"cannot reach registry {host}: connection refused (is it running, is the port right?)"
        if isinstance(exc, TimeoutError | socket.timeout):
            return f"cannot reach registry {host}: no answer in {self.timeout:.0f}s"
        return f"cannot reach registry {host}: {exc.strerror or exc}"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_conn(self.scheme)
            self._local.conn = conn
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        self._drop_conn()

    # --- requests -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: bytes | BinaryIO | None = None,
    ) -> Response:
        """Send one request, authenticating on a 401 and retrying transient failures.
        A streamed body can be sent only once, so it gets no retry."""
        once = body is not None and not isinstance(body, bytes)
        for attempt in range(1 if once else 4):
            try:
                resp = self._send(method, path, scope, headers, body)
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                http.client.CannotSendRequest,
                http.client.ResponseNotReady,
            ):
                self._drop_conn()  # a kept-alive connection the server closed: open a new one
                if attempt < 3:
                    continue
                raise RegistryError(f"{self.endpoint.host} keeps closing the connection") from None
            except OSError as exc:
                self._drop_conn()
                raise RegistryError(self._unreachable(exc)) from None
            if resp.status == 401 and attempt == 0:
                self._authenticate(resp.headers.get("www-authenticate", ""), scope)
                continue
            if resp.status == 401:
                raise AuthError(self._denied(resp))
            if resp.status in (429, 502, 503, 504) and attempt < 3 and method in ("GET", "HEAD"):
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status == 429:
                raise RegistryError(
                    f"{self.endpoint.host} is rate limiting us (HTTP 429); wait, log in "
                    f"({hint(self.endpoint.role)}), or read through --source-mirror"
                )
            return resp
        raise RegistryError(f"{self.endpoint.host}: {method} {path} failed after retries")  # pragma: no cover

    def _send(
        self, method: str, path: str, scope: str, headers: dict[str, str] | None, body: bytes | BinaryIO | None
    ) -> Response:
        all_headers = {"User-Agent": "chaosmirror", **(headers or {})}
        auth = self._auth.get(scope) or self._auth.get("*")
        if auth:
            all_headers["Authorization"] = auth
        conn = self._conn()
        conn.request(method, path, body=body, headers=all_headers)
        raw = conn.getresponse()
        data = raw.read()
        return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, data)

    def _denied(self, resp: Response) -> str:
        host, role = self.endpoint.host, self.endpoint.role
        cred = self.endpoint.credential
        if cred is None:
            return f"{host} requires credentials (HTTP 401); {hint(role)}"
        return (
            f"{host} rejected the credentials for user {cred.username!r} from {cred.origin} (HTTP 401); "
            f"check them, or {hint(role)}"
        )

    def _authenticate(self, header: str, scope: str) -> None:
        scheme, params = challenge(header)
        cred = self.endpoint.credential
        if scheme == "basic":
            if cred is None:
                raise AuthError(f"{self.endpoint.host} requires credentials (HTTP 401); {hint(self.endpoint.role)}")
            self._auth["*"] = f"Basic {cred.basic()}"
        elif scheme == "bearer" and params.get("realm"):
            self._auth[scope] = f"Bearer {self._token(params, scope)}"
        else:
            raise AuthError(f"{self.endpoint.host} asked for an authentication scheme we do not know: {header!r}")

    def _token(self, params: dict[str, str], scope: str) -> str:
        query = [("service", params.get("service", ""))]
        if scope != "*":
            query += [("scope", part) for part in scope.split()]
        url = f"{params['realm']}?{urllib.parse.urlencode([(k, v) for k, v in query if v])}"
        request = urllib.request.Request(url, headers={"User-Agent": "chaosmirror"})
        cred = self.endpoint.credential
        if cred:
            request.add_header("Authorization", f"Basic {cred.basic()}")
        if self._ctx is None:
            self._ctx = ssl_context(self.endpoint)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ctx) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AuthError(self._denied(Response(exc.code, {}, b""))) from None
            raise RegistryError(f"token service of {self.endpoint.host} answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"token service of {self.endpoint.host} failed: {exc}") from None
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise RegistryError(f"token service of {self.endpoint.host} returned no token")
        return str(token)

    # --- the API ----------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and accepts our credentials."""
        resp = self.request("GET", "/v2/", scope="*")
        if resp.status != 200:
            raise RegistryError(f"{self.endpoint.host} answered HTTP {resp.status} to /v2/")

    @staticmethod
    def _scope(ref: ImageRef, push: bool = False) -> str:
        return f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"

    def manifest(self, ref: ImageRef) -> Manifest:
        """GET the manifest `ref` names; NotFoundError when the registry has no such tag or digest."""
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        resp = self.request("GET", path, scope=self._scope(ref), headers={"Accept": ACCEPT})
        if resp.status == 404:
            raise NotFoundError(f"{ref} not found in {self.endpoint.host}")
        self._expect(resp, 200, f"read {ref}")
        manifest = Manifest.from_bytes(resp.body, resp.headers.get("content-type", ""), where=str(ref))
        if ref.digest and manifest.digest != ref.digest:
            raise RegistryError(f"{self.endpoint.host} served {ref} with digest {manifest.digest}")
        return manifest

    def digest(self, ref: ImageRef, *, push: bool = False) -> str | None:
        """The digest `ref` has here, or None if the registry does not hold it (HEAD only)."""
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        resp = self.request("HEAD", path, scope=self._scope(ref, push), headers={"Accept": ACCEPT})
        if resp.status == 404:
            return None
        self._expect(resp, 200, f"look up {ref}")
        digest = resp.headers.get("docker-content-digest")
        if digest:
            return digest
        return self.manifest(ref).digest  # registries that omit the header on HEAD

    def blob(self, ref: ImageRef, digest: str) -> bytes:
        """A small blob (an image config), read whole."""
        resp = self.request("GET", f"/v2/{ref.repository}/blobs/{digest}", scope=self._scope(ref))
        for _ in range(3):  # registries redirect blob reads to storage
            if resp.status not in (301, 302, 307, 308):
                break
            with urllib.request.urlopen(resp.headers["location"], timeout=self.timeout) as redirected:
                return bytes(redirected.read())
        self._expect(resp, 200, f"read {digest} of {ref}")
        return resp.body

    def has_blob(self, ref: ImageRef, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}", scope=self._scope(ref, True))
        return resp.status == 200

    def open_blob(self, ref: ImageRef, digest: str) -> BinaryIO:
        """A stream of the blob's bytes, on a connection of its own (close it when done)."""
        path = f"/v2/{ref.repository}/blobs/{digest}"
        self.request("HEAD", path, scope=self._scope(ref))  # authenticates, so the GET below carries it
        conn = self._new_conn(self.scheme)
        auth = self._auth.get(self._scope(ref)) or self._auth.get("*")
        try:
            headers = {"User-Agent": "chaosmirror", **({"Authorization": auth} if auth else {})}
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):  # to object storage, which takes no auth header
                location = resp.getheader("location") or ""
                resp.close()
                conn.close()
                return urllib.request.urlopen(location, timeout=self.timeout)  # type: ignore[no-any-return]
            if resp.status != 200:
                resp.read()
                raise RegistryError(f"cannot read {digest} of {ref}: HTTP {resp.status}")
            return resp
        except OSError as exc:
            conn.close()
            raise RegistryError(self._unreachable(exc)) from None

    def upload_blob(self, ref: ImageRef, digest: str, size: int, source: Callable[[], BinaryIO]) -> None:
        """Upload in one PUT (the registry checks the digest); raises RegistryError if refused.
        `source` opens a fresh stream of the blob's bytes each time it is called (a retry reopens it)."""
        resp = self.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scope=self._scope(ref, True))
        self._expect(resp, 202, f"start an upload to {ref.repository}")
        location = urllib.parse.urlsplit(resp.headers.get("location", ""))
        if location.netloc and location.netloc != self.endpoint.api_host:
            raise RegistryError(f"{self.endpoint.host} sends uploads to another host ({location.netloc})")
        query = f"{location.query}&" if location.query else ""
        path = f"{location.path}?{query}digest={urllib.parse.quote(digest)}"
        stream = source()
        try:
            resp = self.request(
                "PUT",
                path,
                scope=self._scope(ref, True),
                body=stream,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        finally:
            stream.close()
        self._expect(resp, 201, f"upload {digest} to {ref.repository}")

    def mount_blob(self, ref: ImageRef, digest: str, from_repository: str) -> bool:
        """Link a blob the registry holds in `from_repository` into `ref`'s repository, moving no data."""
        query = urllib.parse.urlencode({"mount": digest, "from": from_repository})
        scope = f"{self._scope(ref, True)} repository:{from_repository}:pull"
        resp = self.request("POST", f"/v2/{ref.repository}/blobs/uploads/?{query}", scope=scope)
        if resp.status == 201:
            return True
        if resp.status == 202 and resp.headers.get("location"):  # not mounted: drop the upload it opened
            location = urllib.parse.urlsplit(resp.headers["location"])
            self.request("DELETE", f"{location.path}?{location.query}", scope=self._scope(ref, True))
        return False

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> str:
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        resp = self.request(
            "PUT", path, scope=self._scope(ref, True), body=manifest.data, headers={"Content-Type": manifest.media_type}
        )
        self._expect(resp, 201, f"write {ref}")
        return resp.headers.get("docker-content-digest") or manifest.digest

    def _expect(self, resp: Response, status: int, what: str) -> None:
        if resp.status == status:
            return
        detail = ""
        try:
            errors = json.loads(resp.body).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = resp.body[:200].decode(errors="replace")
        detail = f": {detail}" if detail else ""
        if resp.status == 403:
            raise AuthError(f"cannot {what}: {self.endpoint.host} denied it (HTTP 403{detail})")
        raise RegistryError(f"cannot {what}: {self.endpoint.host} answered HTTP {resp.status}{detail}")

    def upload_blob_checked(
        self, ref: ImageRef, digest: str, size: int, stream: BinaryIO, check: Callable[[], str]
    ) -> None:
        """Upload `size` bytes of `stream` as `digest`, committing only what was checked: POST, one
        streamed PATCH, then `check()` (the reason the bytes sent are not `digest`, or "" when they
        are; the caller hashes them as they are read). Only then the PUT with `?digest=`; otherwise
        the upload is deleted, so the registry never holds a blob that does not match its digest."""
        scope = self._scope(ref, True)

        def path_of(resp: Response, status: int) -> str:
            # distribution reports a full disk only as text in a 500; others answer 507
            if resp.status == 507 or (resp.status == 500 and b"no space left on device" in resp.body):
                raise RegistryError(f"the registry {self.endpoint.host} is out of disk space (HTTP {resp.status} "
                                    f"storing {digest}); free space there and run the same command again")  # fmt: skip
            self._expect(resp, status, f"upload {digest} to {ref.repository}")
            location = urllib.parse.urlsplit(resp.headers.get("location", ""))
            if location.netloc and location.netloc != self.endpoint.api_host:
                raise RegistryError(f"{self.endpoint.host} sends uploads to another host ({location.netloc})")
            return f"{location.path}?{location.query}" if location.query else location.path

        path = path_of(self.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scope=scope), 202)
        if size:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                       "Content-Range": f"0-{size - 1}"}  # fmt: skip
            path = path_of(self.request("PATCH", path, scope=scope, body=stream, headers=headers), 202)
        problem = check()
        if problem:
            self.request("DELETE", path, scope=scope)
            raise RegistryError(f"{problem}; the upload of {digest} to {ref.repository} was cancelled")
        separator = "&" if "?" in path else "?"
        path_of(
            self.request("PUT", f"{path}{separator}digest={urllib.parse.quote(digest)}", scope=scope, body=b""), 201
        )


@dataclass
class Registries:
    """The Registry for each (host, role) of a run, built once from the run's TLS and auth options."""

    insecure: frozenset[str] = frozenset()
    ca_file: Path | None = None
    env: dict[str, str] | None = None
    _pool: dict[tuple[str, Role], Registry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, host: str, role: Role) -> Registry:
        with self._lock:
            key = (host, role)
            if key not in self._pool:
                cred = find_credential(host, role, env=self.env)
                endpoint = Endpoint(host, role, cred, host in self.insecure, self.ca_file)
                self._pool[key] = Registry(endpoint)
            return self._pool[key]

    def for_ref(self, ref: ImageRef, role: Role) -> Registry:
        return self.get(ref.registry, role)

    def all(self) -> list[Registry]:
        with self._lock:
            return list(self._pool.values())

    def close(self) -> None:
        for registry in self.all():
            registry.close()
