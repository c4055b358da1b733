"""Connections to registries: kept-alive pools per origin, proxies, and one exchange of HTTP.

The only module that touches `http.client` and sockets. Every low-level failure leaves it as a
`RegistryError` whose `kind` says what happened (see `errors.Kind`); nothing above catches
`http.client` or socket exceptions. `Connections.close()` shuts down every socket it handed out,
idle or in use, so a thread blocked in a transfer wakes up at once when a run stops.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import ipaddress
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from chaosmirror.errors import Interrupted, RegistryError
from chaosmirror.ref import is_loopback

BLOCK = 1024 * 1024


@dataclass(frozen=True, order=True)
class Origin:
    scheme: str
    host: str  # a name or an IP, without brackets
    port: int

    @classmethod
    def of(cls, scheme: str, netloc: str) -> Origin:
        parsed = urllib.parse.urlsplit(f"{scheme}://{netloc}")
        return cls(scheme, parsed.hostname or "", parsed.port or (443 if scheme == "https" else 80))

    @classmethod
    def from_url(cls, url: str) -> tuple[Origin, str]:
        """(origin, path?query) of an absolute URL."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise RegistryError(f"not an http(s) URL: {url[:200]}")
        target = parsed.path or "/"
        if parsed.query:
            target += f"?{parsed.query}"
        return cls.of(parsed.scheme, parsed.netloc), target

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str = ""  # Proxy-Authorization value, from user:password in the URL
    variable: str = ""  # where it came from, for messages

    @classmethod
    def parse(cls, url: str, variable: str) -> Proxy:
        if "://" not in url:
            url = f"http://{url}"  # as Go reads a proxy without a scheme
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http":
            raise RegistryError(f"{variable}={parsed.scheme}://...: only http:// proxies are supported", kind="proxy")
        if not parsed.hostname:
            raise RegistryError(f"{variable} is not a proxy URL", kind="proxy")
        auth = ""
        if parsed.username:
            user = urllib.parse.unquote(parsed.username)
            secret = urllib.parse.unquote(parsed.password or "")
            auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        return cls(parsed.hostname, parsed.port or 80, auth, variable)

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.variable})"


def _env(env: Mapping[str, str], name: str) -> tuple[str, str]:
    for key in (name.lower(), name.upper()):
        if env.get(key):
            return env[key], key
    return "", ""


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as Go reads it: `*`, host names (a leading dot or not: the domain and below),
    IP addresses and CIDR ranges, each optionally with a port."""
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port = ""
        if entry.count(":") == 1 or entry.startswith("["):
            entry, _, entry_port = entry.rpartition(":")
            entry = entry.strip("[]")
        if entry_port and entry_port != str(port):
            continue
        try:
            address = ipaddress.ip_address(host)
            if "/" in entry and address in ipaddress.ip_network(entry, strict=False):
                return True
            if address == ipaddress.ip_address(entry):
                return True
            continue
        except ValueError:
            pass
        name = host.lower()
        domain = entry.lstrip(".")
        if name == domain or name.endswith(f".{domain}"):
            return True
    return False


def proxy_for(origin: Origin, env: Mapping[str, str]) -> Proxy | None:
    """The proxy a request to `origin` goes through: HTTPS_PROXY for https, HTTP_PROXY for http,
    none for NO_PROXY hosts and never for loopback (as Go, and so skopeo and Docker, decide)."""
    if is_loopback(origin.host):
        return None
    url, variable = _env(env, "https_proxy" if origin.scheme == "https" else "http_proxy")
    if not url:
        return None
    no_proxy, _ = _env(env, "no_proxy")
    if no_proxy and _bypassed(origin.host, origin.port, no_proxy):
        return None
    return Proxy.parse(url, variable)


class HandshakeError(RegistryError):
    """The TLS handshake failed (not the certificate check): the server may speak plain HTTP. One
    that timed out is transient (a slow network), one the server broke off is not."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message, kind="timeout" if timed_out else "tls", transient=timed_out)


def classify(exc: BaseException, origin: Origin, *, answered: bool, timeout: float,
             proxy: Proxy | None = None, handshake: bool = False) -> RegistryError:  # fmt: skip
    """A socket / TLS / HTTP exception as a RegistryError of the right kind, with advice.
    `handshake`: the exception came while the TLS handshake was under way."""
    where = origin.netloc
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, socket.gaierror):
        return RegistryError(f"cannot reach registry {where}: the name does not resolve", kind="dns")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RegistryError(
            f"cannot verify the TLS certificate of {where}: {exc.verify_message}; pass --ca-cert FILE with the "
            f"CA that signed it (or --insecure-registry {where} to skip the check)",
            kind="tls",
        )
    tunnel = isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed")
    if handshake and not tunnel:
        if isinstance(exc, TimeoutError | socket.timeout):
            return HandshakeError(f"{where} did not answer the TLS handshake within {timeout:.0f}s", timed_out=True)
        return HandshakeError(f"the TLS handshake with {where} failed ({getattr(exc, 'reason', None) or exc})")
    if isinstance(exc, TimeoutError | socket.timeout):
        return RegistryError(f"{where} did not answer within {timeout:.0f}s (--timeout)", kind="timeout")
    if isinstance(exc, ConnectionRefusedError):
        return RegistryError(
            f"cannot reach registry {where}: connection refused (is it running, is the port right?)",
            kind="refused",
            transient=answered,  # a registry that answered before is restarting; a wrong port is not
        )
    if isinstance(exc, http.client.IncompleteRead):
        return RegistryError(f"{where} closed the connection before the end of its answer", kind="truncated")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError | http.client.HTTPException):
        return RegistryError(f"{where} dropped the connection ({type(exc).__name__})", kind="reset")
    if isinstance(exc, ssl.SSLError):
        return RegistryError(f"TLS connection to {where} broke: {exc.reason or exc}", kind="reset")
    if tunnel:
        status = str(exc).split(":", 1)[1].strip()
        return RegistryError(
            f"the proxy {proxy} refused to connect to {where}: {status}; check the proxy variables "
            "(and NO_PROXY for hosts that must not go through it)",
            kind="proxy",
            transient=status[:3] in ("502", "503", "504"),
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return RegistryError(f"cannot reach registry {where}: {exc.strerror}", kind="refused", transient=answered)
    if isinstance(exc, OSError):
        return RegistryError(f"cannot reach registry {where}: {exc.strerror or exc}", kind="reset")
    raise exc


class Pool:
    """Kept-alive connections to one origin, shared by every thread."""

    def __init__(self, factory: Callable[[], http.client.HTTPConnection]) -> None:
        self.factory = factory
        self._idle: list[http.client.HTTPConnection] = []
        self._live: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self.closed = False

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was used before (a kept-alive one the server may have closed)."""
        with self._lock:
            if self.closed:
                raise Interrupted("the run is stopping")
            if self._idle:
                return self._idle.pop(), True
            conn = self.factory()
            self._live.add(conn)
            return conn, False

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self.closed and conn.sock is not None:
                self._idle.append(conn)
                return
        self.discard(conn)

    def discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._live.discard(conn)
        conn.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            live, self._live, self._idle = list(self._live), set(), []
        for conn in live:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on this socket
            conn.close()


class Stream:
    """The body of an answer, read as it arrives; truncation and resets surface as RegistryError.
    Closing it returns the connection to its pool when the body was read to its end."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, pool: Pool,
                 origin: Origin, timeout: float) -> None:  # fmt: skip
        self._resp, self._conn, self._pool, self._origin, self._timeout = resp, conn, pool, origin, timeout
        self._expected = resp.length  # None when chunked or read to the end
        self._seen = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        try:
            data = self._resp.read(None if size is None or size < 0 else size)
        except BaseException as exc:  # noqa: BLE001 - classified below, or re-raised as it was
            self._fail()
            raise classify(exc, self._origin, answered=True, timeout=self._timeout) from None
        self._seen += len(data)
        if not data or (size is not None and size < 0):
            if self._expected is not None and self._seen < self._expected:
                self._fail()
                raise RegistryError(
                    f"{self._origin.netloc} closed the connection after {self._seen} of {self._expected} bytes",
                    kind="truncated",
                )
            self._done = True
        return data

    def _fail(self) -> None:
        self._done = True
        self._pool.discard(self._conn)
        self._conn = None  # type: ignore[assignment]

    def close(self) -> None:
        if self._conn is None:
            return
        complete = self._done or (self._expected is not None and self._seen >= self._expected)
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if complete and not self._resp.will_close:
            self._resp.close()
            self._pool.put(conn)
        else:
            self._resp.close()
            self._pool.discard(conn)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Connections:
    """Every connection of a run: a pool per origin, TLS trust per host, proxies from `env`."""

    def __init__(self, *, trust: Callable[[str], ssl.SSLContext], env: Mapping[str, str], timeout: float) -> None:
        self.trust = trust  # host[:port] -> the TLS context to reach it with
        self.env = env
        self.timeout = timeout
        self._pools: dict[Origin, Pool] = {}
        self._proxies: dict[Origin, Proxy | None] = {}
        self._lock = threading.Lock()
        self.closed = False

    def proxy(self, origin: Origin) -> Proxy | None:
        with self._lock:
            if origin not in self._proxies:
                self._proxies[origin] = proxy_for(origin, self.env)
            return self._proxies[origin]

    def pool(self, origin: Origin) -> Pool:
        proxy = self.proxy(origin)
        with self._lock:
            if self.closed:
                raise Interrupted("the run is stopping")
            if origin not in self._pools:
                self._pools[origin] = Pool(lambda: self._connect(origin, proxy))
            return self._pools[origin]

    def _connect(self, origin: Origin, proxy: Proxy | None) -> http.client.HTTPConnection:
        timeout = self.timeout
        if origin.scheme == "https":
            context = self.trust(origin.netloc)
            if proxy is None:
                return http.client.HTTPSConnection(origin.host, origin.port, timeout=timeout, context=context,
                                                   blocksize=BLOCK)  # fmt: skip
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout, context=context,
                                               blocksize=BLOCK)  # fmt: skip
            headers = {"User-Agent": "chaosmirror"}
            if proxy.authorization:
                headers["Proxy-Authorization"] = proxy.authorization
            conn.set_tunnel(origin.host, origin.port, headers=headers)
            return conn
        if proxy is None:
            return http.client.HTTPConnection(origin.host, origin.port, timeout=timeout, blocksize=BLOCK)
        return http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout, blocksize=BLOCK)

    def exchange(self, origin: Origin, method: str, target: str, headers: dict[str, str],
                 body: bytes | BinaryIO | None, *, answered: bool, stream: bool = False,
                 timeout: float | None = None) -> Reply | Stream:  # fmt: skip
        """Send one request and read its answer (or, with `stream`, return the body as a Stream).
        A kept-alive connection that turns out closed is replaced once, when the body allows it.
        `timeout` replaces the run's for this exchange (the scheme probe's shorter handshake)."""
        pool = self.pool(origin)
        proxy = self.proxy(origin)
        if origin.scheme == "http" and proxy is not None:
            target = f"http://{origin.netloc}{target}"  # absolute form, for the proxy
            if proxy.authorization:
                headers = {**headers, "Proxy-Authorization": proxy.authorization}
        for fresh_retry in (True, False):
            conn, reused = pool.get()
            if timeout is not None:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
            except BaseException as exc:  # noqa: BLE001 - classified below, or re-raised as it was
                sock = conn.sock
                handshake = origin.scheme == "https" and sock is not None and not isinstance(sock, ssl.SSLSocket)
                pool.discard(conn)
                if self.closed or pool.closed:
                    raise Interrupted("the run is stopping") from None
                stale = isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if fresh_retry and reused and stale and not hasattr(body, "read"):
                    continue  # the server closed an idle connection: that is no failure
                raise classify(exc, origin, answered=answered, timeout=self.timeout, proxy=proxy,
                               handshake=handshake) from None  # fmt: skip
            if stream and resp.status == 200:
                return Stream(resp, conn, pool, origin, self.timeout)
            try:
                data = resp.read()
            except BaseException as exc:  # noqa: BLE001 - classified below, or re-raised as it was
                pool.discard(conn)
                if self.closed or pool.closed:
                    raise Interrupted("the run is stopping") from None
                raise classify(exc, origin, answered=True, timeout=self.timeout) from None
            if timeout is not None:
                conn.timeout = self.timeout
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
            if resp.will_close:
                pool.discard(conn)
            else:
                pool.put(conn)
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self.closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
