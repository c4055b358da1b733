"""A small client of the OCI distribution API: enough to plan a copy, seed layers and check results.

It reads manifests (to learn digests, platforms and layers), asks whether the target holds a
manifest or blob, streams blobs, uploads and mounts blobs, and puts manifests. Everything about
HTTP (connections, proxies, auth, redirects, retries) is the transport's (`transport.py`).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from chaosmirror.auth import Role, find_credential
from chaosmirror.connections import Connections, Reply, Stream
from chaosmirror.endpoint import Endpoint, trust_for
from chaosmirror.errors import AuthError, NotFoundError, RegistryError
from chaosmirror.lifecycle import Run
from chaosmirror.manifest import ACCEPT, Manifest
from chaosmirror.ref import DOCKER_HUB, ImageRef
from chaosmirror.transport import Limiter, Policy, Request, Shared, Transport, storage_failure, storage_message

Response = Reply


@dataclass(frozen=True)
class Head:
    """What a HEAD of a manifest tells: its digest and media type, and, from registries that count
    pulls (Docker Hub: `ratelimit-remaining: 76;w=21600`), how many manifest GETs remain."""

    digest: str
    media_type: str = ""
    remaining: int | None = None
    limit: int | None = None


TAG_PAGE = 1000  # tags asked for per page of a tag list
TAG_PAGES = 20  # a repository with more tags than this many pages is looked up tag by tag


def _next_page(link: str, repository: str) -> str | None:
    """The next page of a tag list from its `Link: </v2/<name>/tags/list?n=..&last=..>; rel="next"`
    header (distribution-spec, "Listing Tags"), or None; only a path of the same listing is followed."""
    for part in link.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' not in params.replace(" ", ""):
            continue
        url = target.strip().removeprefix("<").removesuffix(">")
        path = "/" + url.split("://", 1)[1].split("/", 1)[1] if "://" in url else url
        if path.startswith(f"/v2/{repository}/tags/list?"):
            return path
    return None


def _count(value: str | None) -> int | None:
    """The number of a `ratelimit-*` header ("76;w=21600" is 76), or None."""
    try:
        return int((value or "").split(";", 1)[0].strip())
    except ValueError:
        return None


class Registry:
    """One registry, one role. Thread-safe."""

    def __init__(self, endpoint: Endpoint, transport: Transport) -> None:
        self.endpoint = endpoint
        self.transport = transport

    @property
    def plain_http(self) -> bool:
        return self.transport.scheme == "http"

    @property
    def limiter(self) -> Limiter:
        return self.transport.shared.limiter(self.endpoint.api_host)

    def request(self, method: str, path: str, *, scope: str, headers: Mapping[str, str] | None = None,
                body: bytes | Callable[[], BinaryIO] | None = None, retry: bool = True) -> Reply:  # fmt: skip
        """One request, authenticated, retried when it can succeed on a second try."""
        return self.transport.send(Request(method, path, headers or {}, body), scope=scope, retry=retry)

    # --- the API ----------------------------------------------------------------------------------

    def connect(self) -> None:
        """First contact: the TLS handshake, the scheme, and the authentication scheme the registry asks for."""
        _ = self.transport.scheme

    def ping(self) -> None:
        """Check that the registry answers and accepts our credentials."""
        resp = self.request("GET", "/v2/", scope="*")
        if resp.status != 200:
            raise RegistryError(f"{self.endpoint.host} answered HTTP {resp.status} to /v2/", status=resp.status)

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
        head = self.head(ref, push=push)
        return head.digest if head else None

    def head(self, ref: ImageRef, *, push: bool = False) -> Head | None:
        """HEAD of the manifest `ref` names (free on Docker Hub, where a GET counts as a pull), or
        None if the registry does not hold it."""
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        resp = self.request("HEAD", path, scope=self._scope(ref, push), headers={"Accept": ACCEPT})
        if resp.status == 404:
            return None
        self._expect(resp, 200, f"look up {ref}")
        kind = resp.headers.get("content-type", "").split(";", 1)[0].strip()
        remaining, limit = _count(resp.headers.get("ratelimit-remaining")), _count(resp.headers.get("ratelimit-limit"))
        digest = resp.headers.get("docker-content-digest")
        if not digest:  # registries that omit the header on HEAD
            manifest = self.manifest(ref)
            digest, kind = manifest.digest, manifest.media_type
        return Head(digest, kind, remaining, limit)

    def referrers(self, ref: ImageRef, digest: str) -> Manifest | None:
        """The OCI 1.1 referrers API's index of the manifests whose `subject` is `digest`, or None
        when the registry has no referrers API (it answers 404: distribution 2.8, Docker Hub)."""
        resp = self.request("GET", f"/v2/{ref.repository}/referrers/{digest}", scope=self._scope(ref),
                            headers={"Accept": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
        if resp.status == 404:
            return None
        self._expect(resp, 200, f"list the referrers of {digest} in {ref.repository}")
        return Manifest.from_bytes(resp.body, resp.headers.get("content-type", ""), where=f"referrers of {digest}")

    def tags(self, ref: ImageRef, *, limit: int = TAG_PAGES, retry: bool = True) -> set[str] | None:
        """Every tag of `ref`'s repository (`GET /v2/<name>/tags/list`, following `Link` pages), or
        None when the registry will not list them (it refuses, or has more than `limit` pages):
        then a caller looks tags up one by one."""
        path: str | None = f"/v2/{ref.repository}/tags/list?n={TAG_PAGE}"
        out: set[str] = set()
        for _ in range(limit):
            assert path is not None
            try:
                resp = self.request("GET", path, scope=self._scope(ref), retry=retry)
            except AuthError:  # some registries allow pulls but not listing
                return None
            if resp.status != 200:
                return None
            try:
                listed = json.loads(resp.body).get("tags") or []
            except (ValueError, AttributeError):
                return None
            if not isinstance(listed, list):
                return None
            out.update(t for t in listed if isinstance(t, str))
            path = _next_page(resp.headers.get("link", ""), ref.repository)
            if path is None:
                return out
        return None

    def blob(self, ref: ImageRef, digest: str) -> bytes:
        """A small blob (an image config), read whole; redirects to storage are followed."""
        resp = self.request("GET", f"/v2/{ref.repository}/blobs/{digest}", scope=self._scope(ref))
        self._expect(resp, 200, f"read {digest} of {ref}")
        return resp.body

    def has_blob(self, ref: ImageRef, digest: str) -> bool:
        """Whether `ref`'s repository holds `digest`, asked before an upload. A lookup that still
        answers a server error after its retries counts as "no": the upload is tried, and its error
        says why (a HEAD has no body: a docker-registry whose disk was full answered blob HEADs with
        a bare 500, where the upload said "no space left on device")."""
        try:
            resp = self.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}", scope=self._scope(ref, True))
        except RegistryError as exc:
            if exc.status is None or exc.status < 500 or exc.kind == "storage":
                raise
            return False
        if resp.status not in (200, 404):
            self._expect(resp, 200, f"look up {digest} in {ref.repository}")
        return resp.status == 200

    def blob_size(self, ref: ImageRef, digest: str) -> int | None:
        """The size of a blob `ref`'s repository holds (one HEAD, read access only); None when it
        lacks it, -1 when the registry holds it without saying its size."""
        resp = self.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}", scope=self._scope(ref))
        if resp.status == 404:
            return None
        self._expect(resp, 200, f"look up {digest} in {ref.repository}")
        length = resp.headers.get("content-length", "")
        return int(length) if length.isdigit() else -1

    def open_blob(self, ref: ImageRef, digest: str) -> BinaryIO:
        """A stream of the blob's bytes (close it when done); a break while reading is a transient
        RegistryError, so whoever reads it retries by opening it again."""
        path = f"/v2/{ref.repository}/blobs/{digest}"
        opened = self.transport.open(Request("GET", path), scope=self._scope(ref))
        if isinstance(opened, Stream):
            return opened  # type: ignore[return-value]
        if opened.status == 404:
            raise NotFoundError(f"{digest} of {ref} not found in {self.endpoint.host}")
        self._expect(opened, 200, f"read {digest} of {ref}")
        raise AssertionError("unreachable")  # pragma: no cover

    def upload_blob(self, ref: ImageRef, digest: str, size: int, source: Callable[[], BinaryIO]) -> None:
        """Upload in one PUT (the registry checks the digest); raises RegistryError if refused.
        `source` opens a fresh stream of the blob's bytes each time it is called: a PUT that fails
        is retried with the whole upload (a new upload session, the source reopened); the POST that
        opens a session carries no bytes and is retried alone."""
        scope = self._scope(ref, True)

        def attempt() -> None:
            resp = self.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scope=scope)
            self._expect(resp, 202, f"start an upload to {ref.repository}")
            location = self._upload_location(resp)
            sep = "&" if "?" in location else "?"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            target = f"{location}{sep}digest={urllib.parse.quote(digest)}"
            resp = self.request("PUT", target, scope=scope, body=source, retry=False, headers=headers)
            self._expect(resp, 201, f"upload {digest} to {ref.repository}")

        self.transport.retrying(attempt)

    def _upload_location(self, resp: Reply) -> str:
        """Where the registry wants the upload: a path on this host (absolute URLs to it are made relative)."""
        location = urllib.parse.urlsplit(resp.headers.get("location", ""))
        if location.netloc and location.netloc != self.endpoint.api_host:
            raise RegistryError(f"{self.endpoint.host} sends uploads to another host ({location.netloc})")
        return f"{location.path}?{location.query}" if location.query else location.path

    def mount_blob(self, ref: ImageRef, digest: str, from_repository: str) -> bool:
        """Link a blob the registry holds in `from_repository` into `ref`'s repository, moving no data."""
        query = urllib.parse.urlencode({"mount": digest, "from": from_repository})
        scope = f"{self._scope(ref, True)} repository:{from_repository}:pull"
        resp = self.request("POST", f"/v2/{ref.repository}/blobs/uploads/?{query}", scope=scope)
        if resp.status == 201:
            return True
        if resp.status == 202 and resp.headers.get("location"):  # not mounted: drop the upload it opened
            self.request("DELETE", self._upload_location(resp), scope=self._scope(ref, True))
        return False

    def put_manifest(self, ref: ImageRef, manifest: Manifest, *, retry: bool = True) -> str:
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        resp = self.request("PUT", path, scope=self._scope(ref, True), body=manifest.data,
                            headers={"Content-Type": manifest.media_type}, retry=retry)  # fmt: skip
        self._expect(resp, 201, f"write {ref}")
        return resp.headers.get("docker-content-digest") or manifest.digest

    def _expect(self, resp: Reply, status: int, what: str) -> None:
        if resp.status == status:
            return
        host = self.endpoint.host
        storage = storage_failure(resp)
        if storage:
            raise RegistryError(f"cannot {what}: {storage_message(host, storage)}", kind="storage", status=resp.status)
        detail = ""
        try:
            errors = json.loads(resp.body).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = resp.body[:200].decode(errors="replace")
        detail = f": {detail}" if detail else ""
        if resp.status == 403:
            raise AuthError(f"cannot {what}: {host} denied it (HTTP 403{detail})", kind="denied", status=403)
        if resp.status == 404:
            raise NotFoundError(f"cannot {what}: {host} answered HTTP 404{detail}")
        raise RegistryError(f"cannot {what}: {host} answered HTTP {resp.status}{detail}", status=resp.status)

    def upload_blob_checked(self, ref: ImageRef, digest: str, size: int,
                            source: Callable[[], tuple[BinaryIO, Callable[[], str]]]) -> None:  # fmt: skip
        """Upload `size` bytes as `digest`, committing only what was checked: POST, one streamed
        PATCH, then the check (the reason the bytes sent are not `digest`, or "" when they are; the
        stream hashes them as they are read), and only then the PUT with `?digest=`; otherwise the
        upload is deleted, so the registry never holds a blob that does not match its digest.
        `source()` gives a fresh (stream, check) for each attempt: a broken PATCH is retried with
        the whole upload. The POST and the PUT carry no bytes and are retried alone; a PUT whose
        answer was lost is found out by the 404 of the next try and a HEAD of the blob."""
        scope = self._scope(ref, True)

        def attempt() -> None:
            stream, check = source()
            try:
                resp = self.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scope=scope)
                self._expect(resp, 202, f"start an upload to {ref.repository}")
                path = self._upload_location(resp)
                if size:
                    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                               "Content-Range": f"0-{size - 1}"}  # fmt: skip
                    resp = self.request("PATCH", path, scope=scope, body=lambda: stream, headers=headers, retry=False)
                    self._expect(resp, 202, f"upload {digest} to {ref.repository}")
                    path = self._upload_location(resp)
                problem = check()
            finally:
                stream.close()
            if problem:
                self.request("DELETE", path, scope=scope)
                raise RegistryError(f"{problem}; the upload of {digest} to {ref.repository} was cancelled")
            sep = "&" if "?" in path else "?"
            resp = self.request("PUT", f"{path}{sep}digest={urllib.parse.quote(digest)}", scope=scope, body=b"")
            if resp.status == 404 and self.has_blob(ref, digest):
                return  # an earlier try of this PUT committed the upload, and its answer was lost
            self._expect(resp, 201, f"upload {digest} to {ref.repository}")

        self.transport.retrying(attempt)


@dataclass
class Registries:
    """The Registry for each (host, role) of a run, built once from the run's TLS, auth, proxy and
    retry options; `close()` closes every connection, including those in use (a stopping run)."""

    insecure: frozenset[str] = frozenset()
    ca_file: Path | None = None
    env: Mapping[str, str] | None = None
    policy: Policy = field(default_factory=Policy)
    run: Run = field(default_factory=Run)
    mirror_hosts: frozenset[str] = frozenset()  # --source-mirror hosts: see auth.find_credential
    jobs: int = 32
    note: Callable[[str], None] = lambda message: None
    _pool: dict[tuple[str, Role], Registry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _shared: Shared | None = None
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)  # by the certificates trusted
    _by_host: dict[str, ssl.SSLContext] = field(default_factory=dict)
    _context_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def shared(self) -> Shared:
        with self._lock:
            if self._shared is None:
                connections = Connections(trust=self._trust, env=self.env if self.env is not None else os.environ,
                                          timeout=self.policy.timeout)  # fmt: skip
                self._shared = Shared(connections, self.policy, self.run, self.jobs, self.note)
            return self._shared

    def _trust(self, netloc: str) -> ssl.SSLContext:
        """The TLS context for a host; hosts that trust the same certificates share one (loading
        the system's CAs takes tens of milliseconds)."""
        host = DOCKER_HUB if netloc == "registry-1.docker.io" else netloc
        with self._context_lock:
            if host not in self._by_host:  # once per host: each new connection asks
                insecure = host in self.insecure
                files = Endpoint(host, "src", None, False, self.ca_file).cert_files()
                key = "insecure" if insecure else "\n".join(map(str, files))
                if key not in self._contexts:
                    self._contexts[key] = trust_for(host, insecure=insecure, ca_file=self.ca_file)
                self._by_host[host] = self._contexts[key]
            return self._by_host[host]

    def get(self, host: str, role: Role) -> Registry:
        shared = self.shared
        with self._lock:
            key = (host, role)
            if key not in self._pool:
                cred = find_credential(host, role, env=self.env, mirror_hosts=self.mirror_hosts)
                endpoint = Endpoint(host, role, cred, host in self.insecure, self.ca_file)
                if endpoint.cert_files() and not endpoint.insecure:
                    self._trust(host)  # a CA file that does not load fails here, with its name
                self._pool[key] = Registry(endpoint, Transport(endpoint, shared))
            return self._pool[key]

    def for_ref(self, ref: ImageRef, role: Role) -> Registry:
        return self.get(ref.registry, role)

    def limiter(self, host: str) -> Limiter:
        return self.shared.limiter("registry-1.docker.io" if host == DOCKER_HUB else host)

    def retried(self) -> dict[str, int]:
        """Requests retried per host so far."""
        with self._lock:
            return dict(self._shared.retried) if self._shared else {}

    def all(self) -> list[Registry]:
        with self._lock:
            return list(self._pool.values())

    def close(self) -> None:
        with self._lock:
            shared = self._shared
        if shared is not None:
            shared.connections.close()
