"""What some registries add in front of what docker-registry 2.8 serves, as a loopback proxy.

`RegistryFront` forwards every request to a real `docker-registry` and adds, as asked:

- Docker Hub's pull-limit headers (docs.docker.com/docker-hub/usage/pulls/, "View pull rate and
  limit"): `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: N;w=21600` on manifest HEAD and
  GET answers; each manifest GET counts one pull, a HEAD none. At 0 remaining a GET gets HTTP 429
  `toomanyrequests`, as Docker Hub answers.
- The OCI 1.1 referrers API (opencontainers/distribution-spec v1.1.0, spec.md, "Listing
  Referrers" and "Pushing Manifests with Subject"), which distribution 2.8 lacks: a manifest put
  with a `subject` is remembered and answered with the header `OCI-Subject: <digest>`, and
  `GET /v2/<name>/referrers/<digest>` returns an image index of the descriptors (media type, digest,
  size, artifactType, annotations) of the manifests whose subject is that digest, an empty one for
  none. Without it the front answers 404 there, as distribution 2.8 does.

Requests and their bodies are buffered (the lab's images are small). Nothing here is a registry of
its own: storage, digests and every other answer are docker-registry's.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_MANIFEST = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_REFERRERS = re.compile(r"^/v2/(?P<repo>.+)/referrers/(?P<digest>sha256:[a-f0-9]{64})$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class RegistryFront:
    def __init__(self, backend: str, *, remaining: int | None = None, limit: int = 100,
                 referrers: bool = False) -> None:  # fmt: skip
        self.backend = backend  # host:port of a plain-HTTP docker-registry
        self.remaining = remaining  # None: no pull-limit headers
        self.limit = limit
        self.referrers = referrers
        self.listed: dict[tuple[str, str], dict[str, dict[str, object]]] = {}  # (repo, subject) -> digest -> descriptor
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> RegistryFront:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RegistryFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pull(self) -> bool:
        """Count one manifest GET; False when none remain."""
        with self.lock:
            if self.remaining is None:
                return True
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def limit_headers(self) -> dict[str, str]:
        if self.remaining is None:
            return {}
        with self.lock:
            left = self.remaining
        return {"ratelimit-limit": f"{self.limit};w=21600", "ratelimit-remaining": f"{left};w=21600"}

    def remember(self, repo: str, data: bytes, media_type: str, digest: str) -> str:
        """Record a manifest put with a `subject`; return the subject's digest ("" for none)."""
        try:
            doc = json.loads(data)
        except ValueError:
            return ""
        subject = doc.get("subject") if isinstance(doc, dict) else None
        if not isinstance(subject, dict) or not subject.get("digest"):
            return ""
        desc: dict[str, object] = {"mediaType": doc.get("mediaType") or media_type, "digest": digest, "size": len(data)}
        kind = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
        if kind:
            desc["artifactType"] = kind
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        with self.lock:
            self.listed.setdefault((repo, str(subject["digest"])), {})[digest] = desc
        return str(subject["digest"])

    def listing(self, repo: str, digest: str) -> bytes:
        with self.lock:
            found = list(self.listed.get((repo, digest), {}).values())
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": found}
        return json.dumps(index).encode()


def _handler(front: RegistryFront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            length = str(len(body))
            for name, value in headers.items():
                if name.lower() == "content-length" and self.command == "HEAD":
                    length = value  # the size of what a GET would send
                elif name.lower() not in _HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            manifest, referrers = _MANIFEST.match(path), _REFERRERS.match(path)
            if referrers:
                if not front.referrers:
                    self._answer(404, {"Content-Type": "text/plain"}, b"404 page not found\n")
                    return
                listing = front.listing(referrers["repo"], referrers["digest"])
                self._answer(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, listing)
                return
            if manifest and self.command == "GET" and not front.pull():
                error = {"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit."}]}
                self._answer(429, {"Content-Type": "application/json", **front.limit_headers()},
                             json.dumps(error).encode())  # fmt: skip
                return
            conn = http.client.HTTPConnection(front.backend, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders()}
            finally:
                conn.close()
            if manifest:
                out.update(front.limit_headers())
                if self.command == "PUT" and resp.status == 201 and front.referrers:
                    digest = out.get("Docker-Content-Digest", "")
                    subject = front.remember(manifest["repo"], body, self.headers.get("Content-Type", ""), digest)
                    if subject:
                        out["OCI-Subject"] = subject
            self._answer(resp.status, out, data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    return Handler
