"""The transport's own rules: backoff, Retry-After, AIMD, tokens, proxies, redirects, downgrades,
cancellation and error classification. Small HTTP servers on 127.0.0.1 play the other side where a
rule is about what goes over the wire; the end-to-end behaviour on real registries is in
test_faults.py and test_signals.py."""

from __future__ import annotations

import email.utils
import http.server
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from chaosmirror.connections import Origin, _bypassed, proxy_for
from chaosmirror.endpoint import Endpoint
from chaosmirror.engines.goerrors import classify_message
from chaosmirror.errors import AuthError, Interrupted, RegistryError
from chaosmirror.lifecycle import Run
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registries
from chaosmirror.transport import Limiter, Policy, Reply, Tokens, retry_after, storage_failure

DIGEST = "sha256:" + "a" * 64

# --- backoff and Retry-After ---------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("3") == 3.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after(when) or 0) <= 30
    assert retry_after("soon") is None and retry_after(None) is None


def test_backoff_doubles_with_jitter_and_never_comes_before_retry_after():
    policy = Policy(first=0.5, cap=4.0)
    for attempt, ceiling in ((0, 0.5), (1, 1.0), (2, 2.0), (5, 4.0)):
        waits = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered, so 32 jobs do not come back in step
    assert policy.delay(0, retry_after=7.0) >= 7.0


# --- the AIMD limiter ----------------------------------------------------------------------------


def test_a_429_halves_what_is_in_flight_and_the_window_grows_back_only_after_a_cooldown(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("chaosmirror.transport.time.monotonic", lambda: clock[0])
    run = Run()
    limiter = Limiter(16, cooldown=5.0)
    for _ in range(8):
        limiter.acquire(run)
    limiter.release(throttled=True)  # 8 were in flight when the 429 came
    assert limiter.window == 4.0 and limiter.cuts == 1
    limiter.release(throttled=True)  # a second 429 of the same burst does not cut again
    assert limiter.window == 4.0
    for _ in range(6):
        limiter.release()
    assert limiter.window == 4.0  # no growth during the cooldown
    clock[0] += 6
    for _ in range(8):
        limiter.acquire(run) if limiter.active < int(limiter.window) else None
        limiter.release()
    assert 4.0 < limiter.window < 7.0  # additive: about one more per window of successes


def test_a_full_window_makes_the_next_request_wait_and_a_stop_ends_the_wait():
    run = Run()
    limiter = Limiter(1)
    limiter.acquire(run)
    got: list[object] = []

    def second() -> None:
        try:
            limiter.acquire(run)
            got.append("slot")
        except Interrupted as exc:
            got.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # waiting for the slot
    run.stop()
    waiter.join(5)
    assert isinstance(got[0], Interrupted)


# --- tokens ----------------------------------------------------------------------------------------


def test_one_token_fetch_per_scope_however_many_threads_ask(monkeypatch):
    tokens = Tokens()
    fetched: list[int] = []

    def fetch() -> tuple[str, float]:
        time.sleep(0.2)
        fetched.append(1)
        return f"t{len(fetched)}", 300.0

    threads = [threading.Thread(target=tokens.renew, args=("repository:a:pull", None, fetch)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fetched) == 1 and tokens.get("repository:a:pull") == "t1"
    assert tokens.renew("repository:a:pull", "t1", fetch) == "t2"  # a 401 with t1: fetched again


def test_a_token_is_not_used_past_its_expiry(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("chaosmirror.transport.time.monotonic", lambda: clock[0])
    tokens = Tokens()
    tokens.renew("s", None, lambda: ("t", 60.0))
    clock[0] = 49.0
    assert tokens.get("s") == "t"
    clock[0] = 51.0  # renewed 10 s before it expires
    assert tokens.get("s") is None


def test_a_token_realm_over_plain_http_gets_no_credentials():
    registries = Registries(env={"CHAOSMIRROR_DEST_USERNAME": "u", "CHAOSMIRROR_DEST_PASSWORD": "p"})
    transport = registries.get("registry.example.com", "dest").transport
    with pytest.raises(AuthError, match="not https"):
        transport._fetch_token({"realm": "http://auth.example.com/token", "service": "s"}, "repository:a:pull")


# --- proxies ---------------------------------------------------------------------------------------


def test_no_proxy_as_go_reads_it():
    assert _bypassed("registry.example.com", 443, "*")
    assert _bypassed("registry.example.com", 443, "example.com")
    assert _bypassed("registry.example.com", 443, ".example.com")
    assert not _bypassed("registry.example.com", 443, "other.com,ample.com")
    assert _bypassed("10.1.2.3", 5000, "10.0.0.0/8")
    assert _bypassed("10.1.2.3", 5000, "10.1.2.3:5000") and not _bypassed("10.1.2.3", 5000, "10.1.2.3:6000")


def test_https_and_http_use_their_own_proxy_and_loopback_none():
    env = {"HTTPS_PROXY": "http://user:pw@proxy.corp:3128", "http_proxy": "proxy.corp:8080", "NO_PROXY": "internal"}
    secure = proxy_for(Origin("https", "registry-1.docker.io", 443), env)
    assert secure is not None and (secure.host, secure.port) == ("proxy.corp", 3128)
    assert secure.authorization.startswith("Basic ")
    plain = proxy_for(Origin("http", "mirror.example.com", 80), env)
    assert plain is not None and plain.port == 8080
    assert proxy_for(Origin("https", "127.0.0.1", 5000), env) is None
    assert proxy_for(Origin("https", "registry.internal", 443), env) is None
    with pytest.raises(RegistryError, match="only http:// proxies"):
        proxy_for(Origin("https", "r.example.com", 443), {"HTTPS_PROXY": "socks5://p:1080"})


# --- what goes over the wire ------------------------------------------------------------------------


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    """A small HTTP server on 127.0.0.1; yields its host:port and the (method, path, headers) it saw."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def handle_one(self) -> None:
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            for prefix, route in sorted(routes.items(), key=lambda r: -len(r[0])):  # the longest match
                if self.path.startswith(prefix):
                    return route(self)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_POST = handle_one

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes = b"", **headers: str) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return route


def basic_auth(then: Route) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        if not handler.headers.get("Authorization"):
            return answer(401, WWW_Authenticate='Basic realm="lab"')(handler)
        return then(handler)

    return route


def test_a_redirect_to_storage_carries_no_credentials():
    with serve({"/blob": answer(200, b"layer bytes")}) as (storage, storage_seen):
        location = f"http://{storage}/blob?signature=x"
        routes = {"/v2/": basic_auth(answer(200)), "/v2/a/blobs/": basic_auth(answer(307, Location=location))}
        with serve(routes) as (registry, registry_seen):
            env = {"CHAOSMIRROR_DEST_USERNAME": "bot", "CHAOSMIRROR_DEST_PASSWORD": "pw"}
            registries = Registries(env=env)
            try:
                data = registries.get(registry, "dest").blob(ImageRef.parse(f"{registry}/a:1"), DIGEST)
            finally:
                registries.close()
    assert data == b"layer bytes"
    assert any("authorization" in h for _, p, h in registry_seen if p.startswith("/v2/a/blobs/"))
    assert storage_seen and all("authorization" not in h for _, _, h in storage_seen)


def test_retries_honour_retry_after_and_give_up_with_the_reason():
    hits: list[float] = []

    def flaky(handler: http.server.BaseHTTPRequestHandler) -> None:
        hits.append(time.monotonic())
        if len(hits) < 3:
            return answer(503, Retry_After="1")(handler)
        return answer(200, b"{}")(handler)

    with serve({"/v2/": flaky}) as (registry, _):
        registries = Registries(policy=Policy(retries=3, first=0.05))
        try:
            registries.get(registry, "src").ping()
        finally:
            registries.close()
    # the first 503 answered the scheme probe (any answer says "plain HTTP"); the ping then waited
    assert len(hits) == 3 and hits[2] - hits[1] >= 1.0
    with serve({"/v2/": answer(503)}) as (registry, seen):
        registries = Registries(policy=Policy(retries=2, first=0.01))
        with pytest.raises(RegistryError, match=r"HTTP 503 .*gave up after 3 attempts") as failed:
            registries.get(registry, "src").ping()
        registries.close()
    assert failed.value.transient and len(seen) == 1 + 3  # the scheme probe, then three attempts


def test_an_upload_whose_post_spent_its_retries_is_not_started_again():
    """Retries do not multiply: a request inside an upload that gave up ends the upload."""
    with serve({"/v2/": answer(200, b"{}"), "/v2/x/blobs/uploads/": answer(503)}) as (registry, seen):
        registries = Registries(policy=Policy(retries=2, first=0.01))
        dest = registries.get(registry, "dest")
        with pytest.raises(RegistryError, match=r"gave up after 3 attempts"):
            dest.upload_blob(ImageRef.parse(f"{registry}/x:1"), "sha256:" + "0" * 64, 1, lambda: io.BytesIO(b"x"))
        registries.close()
    assert sum(1 for method, _, _ in seen if method == "POST") == 3


def test_a_plain_http_insecure_registry_is_used_over_http_and_said_so():
    notes: list[str] = []
    with serve({"/v2/": answer(200)}) as (registry, _):
        host = registry.replace("127.0.0.1", "localhost")  # loopback, but named: the note is for --insecure-registry
        registries = Registries(insecure=frozenset({host}), note=notes.append)
        try:
            assert registries.get(host, "src").plain_http
        finally:
            registries.close()
    assert notes == [f"note: {host} speaks plain HTTP, not TLS; using http:// (--insecure-registry)"]


@contextmanager
def tcp_server(on_accept: Callable[[socket.socket], None]) -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            on_accept(conn)

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_an_insecure_registry_whose_tls_breaks_is_not_downgraded_to_http():
    def reset(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    with tcp_server(reset) as host:
        registries = Registries(insecure=frozenset({host}), policy=Policy(retries=0))
        with pytest.raises(RegistryError, match="TLS handshake"):
            registries.get(host, "src").ping()
        registries.close()


def test_closing_the_registries_wakes_a_request_waiting_on_a_silent_server():
    with tcp_server(lambda conn: None) as host:  # accepts, never answers
        run = Run()
        registries = Registries(insecure=frozenset({host}), run=run, policy=Policy(timeout=60))
        transport = registries.get(host, "src").transport
        transport._scheme = "http"
        failure: list[BaseException] = []

        def ask() -> None:
            try:
                registries.get(host, "src").ping()
            except BaseException as exc:  # noqa: BLE001
                failure.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        asker.join(0.5)
        assert asker.is_alive()
        run.stop()
        registries.close()
        asker.join(5)
        assert not asker.is_alive() and isinstance(failure[0], Interrupted)


def test_a_body_that_stops_short_is_a_truncated_transient_error():
    def short(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        handler.close_connection = True

    with serve({"/v2/a/blobs/": short, "/v2/": answer(200)}) as (registry, _):
        registries = Registries(policy=Policy(retries=0))
        stream = registries.get(registry, "src").open_blob(ImageRef.parse(f"{registry}/a:1"), DIGEST)
        with pytest.raises(RegistryError) as cut:
            while stream.read(100):
                pass
        registries.close()
    assert cut.value.kind == "truncated" and cut.value.transient


# --- errors as data -------------------------------------------------------------------------------

SKOPEO_SAID = {  # what skopeo 1.9.3 printed through lab/faults.py, verbatim
    "pinging container registry 127.0.0.1:40163: invalid status code from registry 503 (Service Unavailable)": "server",
    "writing blob: initiating layer upload to /v2/r/blobs/uploads/ in 127.0.0.1:40163: received unexpected HTTP "
    "status: 503 Service Unavailable": "server",
    "writing blob: uploading layer chunked: unavailable: injected fault": "server",
    'writing blob: Patch "https://127.0.0.1:40163/v2/r/blobs/uploads/x": read tcp 127.0.0.1:1->127.0.0.1:2: read: '
    "connection reset by peer": "reset",
    'writing blob: Patch "https://h/v2/r/blobs/uploads/x": write tcp 1->2: use of closed network connection': "reset",
    'Manifest list must be converted to type "application/vnd.docker.distribution.manifest.list.v2+json" to be '
    'written to destination, but we cannot modify it: "Instructed to preserve digests"': "server",
    "reading manifest 1.47.0 in docker.io/harness/x: toomanyrequests: You have reached your pull rate limit.": (
        "rate-limited"
    ),
    'pinging container registry h: Get "https://h/v2/": x509: certificate signed by unknown authority': "tls",
}


def test_skopeo_messages_are_classified_by_their_fixed_forms_only():
    for message, kind in SKOPEO_SAID.items():
        assert classify_message(message) == kind, message
    # a 429 in a temporary name is no rate limit; a full disk here is this machine's
    assert classify_message("writing blob: write /tmp/chaosmirror-429-7/x: no space left on device") == "local"
    assert classify_message("open /var/tmp/x-503-y: permission denied") == "local"


def test_a_full_registry_storage_is_recognised_from_its_json_error():
    body = (b'{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"write /var/lib/registry/docker/'
            b'registry/v2/repositories/x/_uploads/b/data: no space left on device"}]}\n')  # fmt: skip
    assert storage_failure(Reply(500, {}, body)) == "no space left on device"
    assert storage_failure(Reply(500, {}, b'{"errors":[{"code":"UNKNOWN","message":"tmp-429 failed"}]}')) == ""
    assert storage_failure(Reply(503, {}, body)) == ""


def test_the_endpoint_for_docker_hub_is_its_api_host():
    assert Endpoint("docker.io", "src").api_host == "registry-1.docker.io"


def test_a_tag_list_follows_only_next_pages_of_the_same_listing():
    from chaosmirror.registry import _next_page

    link = '</v2/harness/x/tags/list?n=1000&last=v9>; rel="next"'
    assert _next_page(link, "harness/x") == "/v2/harness/x/tags/list?n=1000&last=v9"
    assert _next_page('<https://r.example/v2/harness/x/tags/list?last=a>; rel="next"', "harness/x") == (
        "/v2/harness/x/tags/list?last=a"
    )
    assert _next_page('</v2/other/tags/list?last=a>; rel="next"', "harness/x") is None  # not ours: not followed
    assert _next_page('</v2/harness/x/tags/list?last=a>; rel="prev"', "harness/x") is None
    assert _next_page("", "harness/x") is None


def test_a_loopback_registry_is_asked_in_plain_first_and_a_tls_one_still_gets_tls(rig):
    """A plain loopback registry never sees a TLS ClientHello (nor do we load the system's CAs for
    it); the rig's TLS target (docker-registry, which answers plain HTTP on its TLS port with 400)
    is still used over TLS."""
    first_bytes: list[bytes] = []

    def plain(conn: socket.socket) -> None:
        data = conn.recv(4096)
        first_bytes.append(data[:1])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n{}")

    with tcp_server(plain) as host:
        registries = Registries()
        try:
            registries.get(host, "src").ping()
            assert registries.get(host, "src").plain_http
            assert registries._contexts == {}
        finally:
            registries.close()
    assert first_bytes and b"\x16" not in first_bytes  # 0x16: the first byte of a TLS handshake record
    from pathlib import Path

    registries = Registries(ca_file=Path(rig.tls.ca_cert), env=rig.env)
    try:
        target = registries.get(rig.target.host, "dest")
        target.ping()
        assert not target.plain_http
    finally:
        registries.close()


def test_a_tag_list_that_fails_is_asked_once_and_the_signature_tags_are_looked_up_one_by_one():
    from chaosmirror.cache import ManifestCache
    from chaosmirror.ref import ImageRef
    from chaosmirror.signatures import Finder

    subject = "sha256:" + "ab" * 32

    def ping_only(handler: http.server.BaseHTTPRequestHandler) -> None:  # every other path: 404
        answer(200 if handler.path == "/v2/" else 404)(handler)

    routes = {"/v2/": ping_only, "/v2/harness/x/tags/list": answer(503)}
    with serve(routes) as (registry, seen):
        registries = Registries(policy=Policy(retries=3, first=0.01))
        try:
            found = Finder(registries, ManifestCache(None)).find(ImageRef(registry, "harness/x", "1.0"), [subject],
                                                                 read=False)  # fmt: skip
        finally:
            registries.close()
    assert found == []
    paths = [path for _, path, _ in seen]
    assert sum("/tags/list" in p for p in paths) == 1  # one attempt: the list only saves lookups
    hex_ = subject.removeprefix("sha256:")
    for kind in ("sig", "att", "sbom"):
        assert f"/v2/harness/x/manifests/sha256-{hex_}.{kind}" in paths
    assert f"/v2/harness/x/manifests/sha256-{hex_}" in paths  # the fallback tag (no referrers API: 404)
