"""The transport under the registry client: authentication, redirects, retries and rate adaptation.

`Transport.send(Request(...), scope=...)` is the only way a request leaves chaosmirror. It picks
the scheme on first contact (https; plain http only for loopback and --insecure-registry hosts that
really speak it, said in a note), answers 401 challenges (Basic, or a Bearer token from the cache),
follows redirects without carrying credentials to another host, and retries what can succeed on a
second try (see `Policy`). Each host has an AIMD `Limiter` over what is in flight there. See
docs/runs.md for the design.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from chaosmirror.auth import hint
from chaosmirror.connections import Connections, HandshakeError, Origin, Reply, Stream
from chaosmirror.endpoint import Endpoint, challenge
from chaosmirror.errors import AuthError, Kind, RegistryError
from chaosmirror.lifecycle import Run
from chaosmirror.ref import is_loopback

T = TypeVar("T")
USER_AGENT = "chaosmirror"
RETRY_STATUSES: dict[int, Kind] = {
    408: "server", 429: "rate-limited", 500: "server", 502: "server", 503: "server", 504: "server",
}  # fmt: skip
REDIRECTS = (301, 302, 303, 307, 308)
HANDSHAKE_TIMEOUT = 10.0  # the first contact: a TLS handshake with a server that stays silent is no TLS (Go's default)
PLAIN_FIRST_TIMEOUT = 2.0  # loopback asked in plain HTTP first: a plain registry there answers in milliseconds; a
# TLS server that waits for the rest of a "record" instead of refusing it costs no more than this


class _NoTLS(Exception):
    """The scheme probe's handshake failed: the host may speak plain HTTP."""

    def __init__(self, error: HandshakeError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Policy:
    """How hard to try: `retries` more attempts after the first, with exponential backoff from
    `first` seconds doubling to `cap`, jittered, never sooner than a Retry-After; `timeout` for each
    socket operation. A Retry-After longer than `longest_wait` fails at once and says so."""

    retries: int = 5
    timeout: float = 60.0
    first: float = 0.5
    cap: float = 30.0
    longest_wait: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.first * (2**attempt))
        return max(random.uniform(ceiling / 2, ceiling), retry_after or 0.0)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path?query on the registry, or an absolute URL (an upload location, a redirect)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Callable[[], BinaryIO] | None = None  # a function opens a fresh stream per attempt


class Limiter:
    """An AIMD window over the requests (and engine copies) in flight at one host: a 429 halves
    it (at most once a second); after `cooldown` seconds without one, each success grows it by
    1/window (about one more per window's worth of successes), up to `ceiling`."""

    def __init__(self, ceiling: int, *, cooldown: float = 5.0) -> None:
        self.ceiling = max(1, ceiling)
        self.window = float(self.ceiling)
        self.cooldown = cooldown
        self.active = 0
        self.cuts = 0
        self.lowest = self.ceiling
        self._cut_at = -cooldown
        self._cond = threading.Condition()

    def acquire(self, run: Run) -> None:
        with self._cond:
            while self.active >= max(1, int(self.window)):
                if run.stopped:
                    raise run.interrupted()
                self._cond.wait(0.25)
            self.active += 1

    def release(self, *, throttled: bool = False) -> None:
        with self._cond:
            self.active -= 1
            now = time.monotonic()
            if throttled:
                if now - self._cut_at >= 1.0:
                    self.window = max(1.0, min(self.window, self.active + 1.0) / 2)
                    self._cut_at = now
                    self.cuts += 1
                    self.lowest = min(self.lowest, int(self.window))
            elif now - self._cut_at >= self.cooldown:
                self.window = min(float(self.ceiling), self.window + 1.0 / self.window)
            self._cond.notify_all()


class Tokens:
    """Bearer tokens by scope, each with its expiry; one fetch per scope at a time."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, scope: str) -> str | None:
        with self._lock:
            token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and time.monotonic() < expires else None

    def renew(self, scope: str, stale: str | None, fetch: Callable[[], tuple[str, float]]) -> str:
        """A token for `scope` other than `stale`: the one another thread just fetched, or a new one."""
        with self._lock:
            lock = self._locks.setdefault(scope, threading.Lock())
        with lock:
            current = self.get(scope)
            if current and current != stale:
                return current
            token, lifetime = fetch()
            with self._lock:
                self.fetches += 1
                self._tokens[scope] = (token, time.monotonic() + max(1.0, lifetime - 10.0))
            return token

    def drop(self, scope: str, token: str) -> None:
        with self._lock:
            if self._tokens.get(scope, ("",))[0] == token:
                del self._tokens[scope]


@dataclass
class Shared:
    """What every transport of a run shares: connections, the policy, per-host limiters, the stop flag."""

    connections: Connections
    policy: Policy
    run: Run
    ceiling: int = 32
    note: Callable[[str], None] = lambda message: None
    limiters: dict[str, Limiter] = field(default_factory=dict)
    answered: set[Origin] = field(default_factory=set)
    retried: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def limiter(self, host: str) -> Limiter:
        with self.lock:
            if host not in self.limiters:
                self.limiters[host] = Limiter(self.ceiling)
            return self.limiters[host]


class Transport:
    """Requests to one registry in one role (its credential, its TLS trust); thread-safe."""

    def __init__(self, endpoint: Endpoint, shared: Shared) -> None:
        self.endpoint = endpoint
        self.shared = shared
        self.tokens = Tokens()
        self._basic = False
        self._scheme: str | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def scheme(self) -> str:
        with self._lock:
            if self._scheme is None:
                self._scheme = self._detect()
            return self._scheme

    @property
    def origin(self) -> Origin:
        return Origin.of(self.scheme, self.endpoint.api_host)

    # --- sending ----------------------------------------------------------------------------------

    def send(self, request: Request, *, scope: str, retry: bool = True) -> Reply:
        """One request, authenticated and (with `retry`) retried; any final status is returned,
        except a retryable one that stayed so, which raises."""
        reply = self.retrying(lambda: self._once(request, scope), attempts=None if retry else 1)
        assert isinstance(reply, Reply)
        return reply

    def open(self, request: Request, *, scope: str) -> Stream | Reply:
        """A GET whose 200 body is returned as a Stream, read as it comes; other answers as a Reply."""
        return self.retrying(lambda: self._once(request, scope, stream=True))

    def retrying(self, attempt: Callable[[], T], *, attempts: int | None = None) -> T:
        """Run `attempt` until it succeeds or fails for good: transient RegistryErrors are retried
        under the policy. Used for single requests and for operations made of several (an upload)."""
        policy, run = self.shared.policy, self.shared.run
        total = policy.retries + 1 if attempts is None else attempts
        for number in range(total):
            run.check()
            try:
                return attempt()
            except RegistryError as exc:
                if exc.exhausted:  # a request inside `attempt` spent the retries already
                    raise
                if not exc.transient or number == total - 1:
                    if exc.transient and total > 1:
                        raise _gave_up(exc, total) from None
                    raise
                wait = policy.delay(number, exc.retry_after)
                if wait > policy.longest_wait:
                    raise RegistryError(f"{exc}; it asks us to wait {wait:.0f}s: try again later", kind=exc.kind,
                                        status=exc.status, transient=False) from None  # fmt: skip
                with self.shared.lock:
                    self.shared.retried[self.host] += 1
                if run.wait(wait):
                    raise run.interrupted() from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, request: Request, scope: str, *, stream: bool = False) -> Reply | Stream:
        """One attempt: at most one answer to a 401 challenge, redirects followed."""
        used = ""
        _ = self.scheme  # first contact, before the credentials are chosen: the probe may name them
        for challenge_answered in (False, True):
            used = self._authorization(scope)
            reply = self._hops(request, used, stream=stream)
            if isinstance(reply, Stream) or reply.status != 401:
                break
            if challenge_answered:
                raise AuthError(self._denied())
            self._answer(reply.headers.get("www-authenticate", ""), scope, used)
        if isinstance(reply, Reply) and reply.status in RETRY_STATUSES:
            raise status_error(reply, self.host, request)
        return reply

    def _hops(self, request: Request, authorization: str, *, stream: bool) -> Reply | Stream:
        """Send `request`, following up to 5 redirects of a GET or HEAD; credentials stay home."""
        home = self.origin
        origin, target = Origin.from_url(request.target) if "://" in request.target else (home, request.target)
        method = request.method
        for _ in range(6):
            headers = {"User-Agent": USER_AGENT, **request.headers}
            if authorization and origin == home:
                headers["Authorization"] = authorization
            reply = self._exchange(origin, method, target, headers, request.body, stream=stream)
            location = reply.headers.get("location", "") if isinstance(reply, Reply) else ""
            if not (isinstance(reply, Reply) and reply.status in REDIRECTS and location and method in ("GET", "HEAD")):
                return reply
            url = urllib.parse.urljoin(f"{origin}{target}", location)
            next_origin, target = Origin.from_url(url)
            if origin.scheme == "https" and next_origin.scheme == "http" and not is_loopback(next_origin.host):
                raise RegistryError(f"{self.host} redirected {method} to plain http ({next_origin}): refused",
                                    kind="protocol")  # fmt: skip
            origin = next_origin
        raise RegistryError(f"{self.host}: too many redirects for {request.target[:120]}")

    def _exchange(self, origin: Origin, method: str, target: str, headers: dict[str, str],
                  body: bytes | Callable[[], BinaryIO] | None, *, stream: bool,
                  timeout: float | None = None) -> Reply | Stream:  # fmt: skip
        shared = self.shared
        limiter = shared.limiter(origin.netloc)
        opened = body() if callable(body) else body
        limiter.acquire(shared.run)
        throttled = False
        try:
            reply = shared.connections.exchange(origin, method, target, headers, opened,
                                                answered=origin in shared.answered, stream=stream,
                                                timeout=timeout)  # fmt: skip
            throttled = isinstance(reply, Reply) and reply.status == 429
        finally:
            limiter.release(throttled=throttled)
            if opened is not None and not isinstance(opened, bytes):
                opened.close()
        if origin not in shared.answered:
            with shared.lock:
                shared.answered.add(origin)
        return reply

    # --- scheme -------------------------------------------------------------------------------

    def _detect(self) -> str:
        """https, unless the host speaks plain HTTP and may (loopback, --insecure-registry)."""
        host = self.endpoint.api_host
        https = Origin.of("https", host)
        headers = {"User-Agent": USER_AGENT}

        def tls_probe() -> Reply | Stream:  # a failed handshake is an answer here: it is not retried
            try:
                return self._exchange(https, "GET", "/v2/", headers, None, stream=False, timeout=HANDSHAKE_TIMEOUT)
            except HandshakeError as exc:
                raise _NoTLS(exc) from None

        plain = Origin.of("http", host)
        if is_loopback(self.endpoint.host):
            # Loopback may speak plain HTTP (as Docker and skopeo allow): ask in plain first, which
            # sends nothing secret and spares a plain registry a TLS handshake (and us loading the
            # system's CAs). A TLS port answers it 400 ("HTTP request to an HTTPS server"), or not at all.
            with contextlib.suppress(RegistryError):
                answer = self._exchange(plain, "GET", "/v2/", headers, None, stream=False, timeout=PLAIN_FIRST_TIMEOUT)
                if isinstance(answer, Reply) and answer.status != 400:  # an HTTP server answered
                    return self._plain(answer)
        try:
            self._learn(self.retrying(tls_probe))
            return "https"
        except _NoTLS as exc:
            tls_error = exc.error
        try:
            answer = self._exchange(plain, "GET", "/v2/", headers, None, stream=False, timeout=HANDSHAKE_TIMEOUT)
        except RegistryError:
            raise tls_error from None
        name = self.endpoint.host
        if self.endpoint.insecure or is_loopback(name):  # as Docker and skopeo do for loopback registries
            return self._plain(answer)
        raise RegistryError(f"{name} does not speak TLS ({tls_error}); if it is a plain-HTTP registry, pass "
                            f"--insecure-registry {name}", kind="tls")  # fmt: skip

    def _plain(self, probe: Reply | Stream) -> str:
        """Plain HTTP for a host that answered in it (a loopback or --insecure-registry host)."""
        self._learn(probe)
        if self.endpoint.insecure:
            self.shared.note(f"note: {self.endpoint.host} speaks plain HTTP, not TLS; using http:// "
                             "(--insecure-registry)")  # fmt: skip
        return "http"

    # --- authentication -----------------------------------------------------------------------------

    def _learn(self, probe: Reply | Stream) -> None:
        """A registry that asks for Basic credentials in its answer to the scheme probe gets them
        with the first request, which saves that request's 401 round trip."""
        if isinstance(probe, Reply) and probe.status == 401 and self.endpoint.credential is not None:
            scheme, _ = challenge(probe.headers.get("www-authenticate", ""))
            if scheme == "basic":
                self._basic = True

    def _authorization(self, scope: str) -> str:
        cred = self.endpoint.credential
        if self._basic and cred:
            return f"Basic {cred.basic()}"
        token = self.tokens.get(scope)
        return f"Bearer {token}" if token else ""

    def _answer(self, header: str, scope: str, used: str) -> None:
        scheme, params = challenge(header)
        cred = self.endpoint.credential
        if scheme == "basic":
            if cred is None:
                raise AuthError(self._denied())
            if self._basic and used.startswith("Basic"):
                raise AuthError(self._denied())
            self._basic = True
        elif scheme == "bearer" and params.get("realm"):
            stale = used.removeprefix("Bearer ") if used.startswith("Bearer ") else None
            if stale:
                self.tokens.drop(scope, stale)
            self.tokens.renew(scope, stale, lambda: self._fetch_token(params, scope))
        else:
            raise AuthError(f"{self.host} asked for an authentication scheme we do not know: {header[:200]!r}")

    def _fetch_token(self, params: dict[str, str], scope: str) -> tuple[str, float]:
        realm = params["realm"]
        origin, path = Origin.from_url(realm)
        if origin.scheme != "https" and not is_loopback(origin.host):
            raise AuthError(f"{self.host} sends us for a token to {realm}, which is not https: refusing to send "
                            "credentials there", kind="protocol", status=None)  # fmt: skip
        query = [("service", params.get("service", ""))]
        if scope != "*":
            query += [("scope", part) for part in scope.split()]
        sep = "&" if "?" in path else "?"
        target = f"{path}{sep}{urllib.parse.urlencode([(k, v) for k, v in query if v])}"
        headers = {"User-Agent": USER_AGENT}
        cred = self.endpoint.credential
        if cred:
            headers["Authorization"] = f"Basic {cred.basic()}"

        def fetch() -> Reply:
            reply = self._exchange(origin, "GET", target, headers, None, stream=False)
            assert isinstance(reply, Reply)
            if reply.status in RETRY_STATUSES:
                raise status_error(reply, origin.netloc, Request("GET", target))
            return reply

        reply = self.retrying(fetch)
        if reply.status in (401, 403):
            raise AuthError(self._denied())
        if reply.status != 200:
            raise RegistryError(f"the token service of {self.host} ({origin.netloc}) answered HTTP {reply.status}",
                                status=reply.status)  # fmt: skip
        try:
            doc = json.loads(reply.body)
            token = str(doc.get("token") or doc.get("access_token") or "")
            lifetime = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"the token service of {self.host} answered something that is not JSON") from None
        if not token:
            raise RegistryError(f"the token service of {self.host} returned no token")
        return token, lifetime

    def _denied(self) -> str:
        host, role = self.host, self.endpoint.role
        cred = self.endpoint.credential
        if cred is None:
            return f"{host} requires credentials (HTTP 401); {hint(role)}"
        return (f"{host} rejected the credentials for user {cred.username!r} from {cred.origin} (HTTP 401); "
                f"check them, or {hint(role)}")  # fmt: skip


def status_error(reply: Reply, host: str, request: Request) -> RegistryError:
    """A retryable status as an error with its advice; a storage failure is not retryable."""
    status = reply.status
    what = f"{request.method} {urllib.parse.urlsplit(request.target).path[:120]}"
    detail = storage_failure(reply)
    if detail:
        return RegistryError(storage_message(host, detail), kind="storage", status=status)
    kind = RETRY_STATUSES[status]
    wait = retry_after(reply.headers.get("retry-after"))
    if status == 429:
        return RegistryError(f"{host} is rate limiting us (HTTP 429 on {what}); wait, log in, or read through "
                             "--source-mirror", kind=kind, status=status, retry_after=wait)  # fmt: skip
    return RegistryError(f"{host} answered HTTP {status} to {what}", kind=kind, status=status, retry_after=wait)


def storage_message(host: str, detail: str) -> str:
    if detail in ("no space left on device", "insufficient storage"):
        return (f"the registry {host} is out of disk space (its storage answered: {detail}); free space there "
                "and run the same command again")  # fmt: skip
    return f"the registry {host} cannot write to its storage ({detail}); fix its storage and run again"


def storage_failure(reply: Reply) -> str:
    """The registry's own account of a storage write failure: HTTP 507, or the distribution
    server's 500 UNKNOWN with the driver's error (e.g. ENOSPC) as `detail` in its JSON body."""
    if reply.status == 507:
        return "insufficient storage"
    if reply.status != 500:
        return ""
    try:
        errors = json.loads(reply.body).get("errors") or []
    except (ValueError, AttributeError):
        return ""
    for error in errors:
        detail = error.get("detail") if isinstance(error, dict) else None
        text = detail if isinstance(detail, str) else json.dumps(detail) if detail else ""
        for marker in ("no space left on device", "disk quota exceeded", "read-only file system"):
            if marker in text.lower():
                return marker
        if isinstance(detail, dict) and detail.get("DriverName"):
            return f"{detail['DriverName']} storage driver error"
    return ""


def _gave_up(exc: RegistryError, attempts: int) -> RegistryError:
    return RegistryError(f"{exc} (gave up after {attempts} attempts)", kind=exc.kind, status=exc.status,
                         transient=True, exhausted=True)  # fmt: skip
