"""An HTTP-aware proxy that breaks requests on purpose, in front of a real loopback registry.

It reads each HTTP/1.1 request (Content-Length or chunked bodies), forwards it on a kept-alive
upstream connection and relays the answer, unless the request is chosen for a fault:

- `503`, `500`, `429`: answered by the proxy with that status (429 and 503 carry `Retry-After`);
- `reset`: the connection is reset (RST) before any answer;
- `cut`: the upload body, or else the answer's body, is cut off after a few KB;
- `slow`: the answer is held back for `--slow-seconds` before it is relayed.

With `--bearer SECONDS` the proxy also plays a registry's token service: requests without a valid
Bearer token get a 401 challenge naming its `/token` endpoint, which hands out tokens announced as
valid for a minute but honoured for SECONDS only, so a client must re-authenticate on a later 401.

Faults hit a random share of new connections (`--faulty 0.15`, the first request of a chosen
connection takes the fault) or of requests (`--per request`); `--rule` adds exact, counted faults
("the first 3 HEADs of manifests answer 429"). Every request is logged as a JSON line (times,
method, path, status, fault, requests in flight), so a test can count what a client did. With
`--cert/--key` the proxy speaks TLS to its clients; upstream is plain HTTP on loopback.

    python -m lab.faults --listen 127.0.0.1:6000 --upstream 127.0.0.1:5000 --faulty 0.15 --log f.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from lab.registry import free_port

STATUS_FAULTS = {"503": "Service Unavailable", "500": "Internal Server Error", "429": "Too Many Requests"}
KINDS = (*STATUS_FAULTS, "reset", "cut", "slow")
CUT_BYTES = (1024, 6 * 1024)  # a cut connection carries this many body bytes before it breaks
CHUNK = 64 * 1024


@dataclass
class Rule:
    """The first `count` requests matching METHOD and a path regex take the fault `kind`."""

    method: str
    path: re.Pattern[str]
    kind: str
    count: int

    @classmethod
    def parse(cls, text: str) -> Rule:
        method, path, kind, count = text.split()
        if kind not in KINDS:
            raise SystemExit(f"unknown fault {kind!r}; choose from {', '.join(KINDS)}")
        return cls(method.upper(), re.compile(path), kind, int(count))

    def take(self, method: str, path: str) -> bool:
        if self.count > 0 and self.method in ("*", method) and self.path.search(path):
            self.count -= 1
            return True
        return False


@dataclass
class Config:
    upstream: tuple[str, int]
    faulty: float = 0.0
    per: str = "connection"
    kinds: tuple[str, ...] = ("503", "429", "cut")
    retry_after: str = "1"
    slow_seconds: float = 5.0
    rules: list[Rule] = field(default_factory=list)
    seed: int = 0
    log: Path | None = None
    tls: bool = False  # clients speak TLS to the proxy: tell the registry, so its Location URLs say https
    bearer: float = 0.0  # > 0: demand Bearer tokens, each honoured this many seconds
    listen: str = ""  # host:port, for the token realm


class Proxy:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.inflight = 0
        self.connections = 0
        self.log = open(config.log, "a", buffering=1) if config.log else None  # noqa: SIM115 - process lifetime
        self.tokens: dict[str, float] = {}  # token -> when it stops being honoured

    def _choose(self) -> str:
        return self.rng.choice(self.config.kinds)

    def _decide(self, method: str, path: str, *, first: bool, faulty_conn: str | None) -> str | None:
        for rule in self.config.rules:
            if rule.take(method, path):
                return rule.kind
        if self.config.per == "request":
            return self._choose() if self.rng.random() < self.config.faulty else None
        return faulty_conn if first else None

    def _record(self, **fields: object) -> None:
        if self.log:
            self.log.write(json.dumps(fields) + "\n")

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_id = self.connections
        faulty_conn = (
            self._choose() if self.config.per == "connection" and self.rng.random() < self.config.faulty else None
        )
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        first = True
        try:
            lead = b"" if self.config.tls else await client_r.read(1)
            if lead == b"\x16":  # a TLS hello to a plain server: refused at once, as Go's server does
                client_w.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                await client_w.drain()
                return
            while True:
                head = await _read_head(client_r)
                if head is not None and lead:
                    head, lead = lead + head, b""
                if head is None:
                    return
                method, path, headers = _parse_request(head)
                if self.config.bearer and not await self._authorized(method, path, headers, client_r, client_w):
                    continue
                fault = self._decide(method, path, first=first, faulty_conn=faulty_conn)
                first = False
                started = time.time()
                self.inflight += 1
                status = 0
                try:
                    if fault in STATUS_FAULTS:
                        await _relay_body(client_r, None, headers)
                        status = int(fault)
                        extra = f"Retry-After: {self.config.retry_after}\r\n" if fault in ("429", "503") else ""
                        body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]}).encode()
                        client_w.write(
                            f"HTTP/1.1 {fault} {STATUS_FAULTS[fault]}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
                            + body
                        )
                        await client_w.drain()
                        return
                    if fault == "reset":
                        _reset(client_w)
                        return
                    if up is None:
                        up = await asyncio.open_connection(*self.config.upstream, limit=CHUNK * 4)
                    cut = self.rng.randint(*CUT_BYTES) if fault == "cut" else None
                    up[1].write(_forwarded(head) if self.config.tls else head)
                    has_body = _body_length(headers) != 0
                    if not await _relay_body(client_r, up[1], headers, limit=cut if has_body else None):
                        _reset(client_w)
                        return
                    await up[1].drain()
                    resp_head = await _read_head(up[0])
                    if resp_head is None:
                        return
                    status, resp_headers = _parse_response(resp_head)
                    if fault == "slow":
                        await asyncio.sleep(self.config.slow_seconds)
                    client_w.write(resp_head)
                    no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                    limit = cut if not has_body else None
                    complete = no_body or await _relay_body(up[0], client_w, resp_headers, limit=limit, response=True)
                    await client_w.drain()
                    if not complete:
                        _reset(client_w)
                        return
                    if "close" in resp_headers.get("connection", "").lower():
                        return
                finally:
                    self.inflight -= 1
                    self._record(t=round(started, 4), end=round(time.time(), 4), conn=conn_id, method=method,
                                 path=path, status=status, fault=fault, inflight=self.inflight + 1,
                                 agent=headers.get("user-agent", "")[:40])  # fmt: skip
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, ValueError):
            return
        finally:
            for writer in (client_w, up[1] if up else None):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    async def _authorized(self, method: str, path: str, headers: dict[str, str], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> bool:  # fmt: skip
        """The token gate: answer /token and 401s here; True when the request may go on upstream."""
        agent = headers.get("user-agent", "")[:40]
        if path.startswith("/token"):
            asked = urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query)
            query = {"scope": " ".join(v for k, v in asked if k == "scope")}
            token = secrets.token_hex(8)
            self.tokens[token] = time.time() + self.config.bearer
            body = json.dumps({"token": token, "expires_in": 60, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")})
            self._record(t=round(time.time(), 4), end=round(time.time(), 4), method=method, path="/token",
                         scope=query.get("scope", ""), status=200, fault=None, inflight=0, agent=agent)  # fmt: skip
            _answer(writer, 200, body.encode())
            await writer.drain()
            return False
        given = headers.get("authorization", "")
        token = given.removeprefix("Bearer ") if given.startswith("Bearer ") else ""
        if token and self.tokens.get(token, 0) > time.time():
            return True
        await _relay_body(reader, None, headers)
        parts = path.split("?", maxsplit=1)[0].split("/")
        scope = ""
        for marker in ("manifests", "blobs", "tags"):
            if marker in parts:
                name = "/".join(parts[2 : parts.index(marker)])
                scope = f',scope="repository:{name}:{"pull" if method in ("GET", "HEAD") else "pull,push"}"'
        scheme = "https" if self.config.tls else "http"
        challenge = f'Bearer realm="{scheme}://{self.config.listen}/token",service="lab"{scope}'
        self._record(t=round(time.time(), 4), end=round(time.time(), 4), method=method, path=path, status=401,
                     fault="expired" if token else None, inflight=0, agent=agent)  # fmt: skip
        _answer(writer, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                **{"WWW-Authenticate": challenge})  # fmt: skip
        await writer.drain()
        return False


def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, **headers: str) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reason = {200: "OK", 401: "Unauthorized"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 f"{extra}\r\n".encode() + body)  # fmt: skip


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a dropped VPN or a crashing middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None


def _forwarded(head: bytes) -> bytes:
    return head[:-2] + b"X-Forwarded-Proto: https\r\n\r\n"


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if b":" in line:
            key, _, value = line.decode("latin-1").partition(":")
            out[key.strip().lower()] = value.strip()
    return out


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].decode("latin-1").split(" ", 2)
    return method, path, _headers(lines[1:])


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.split(b"\r\n")
    return int(lines[0].split(b" ", 2)[1]), _headers(lines[1:])


def _body_length(headers: dict[str, str]) -> int | None:
    """Content-Length, None for a chunked body (or one read to the end), 0 for none."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    return int(headers.get("content-length", "0") or 0)


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, headers: dict[str, str],
                      *, limit: int | None = None, response: bool = False) -> bool:  # fmt: skip
    """Copy one message body (or drop it when `writer` is None); False if cut off at `limit` bytes."""
    sent = 0

    async def pass_on(data: bytes) -> bool:
        nonlocal sent
        if limit is not None and sent + len(data) > limit:
            if writer is not None:
                writer.write(data[: max(0, limit - sent)])
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            return False
        sent += len(data)
        if writer is not None:
            writer.write(data)
            await writer.drain()
        return True

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if not await pass_on(size_line):
                return False
            if size == 0:
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    await pass_on(line)
                return await pass_on(b"\r\n")
            remaining = size + 2  # the data and its CRLF
            while remaining:
                data = await reader.readexactly(min(CHUNK, remaining))
                remaining -= len(data)
                if not await pass_on(data):
                    return False
    length = _body_length(headers)
    if length is None or (response and "content-length" not in headers):
        while data := await reader.read(CHUNK):  # an answer delimited by the end of the connection
            if not await pass_on(data):
                return False
        return True
    remaining = length
    while remaining:
        data = await reader.readexactly(min(CHUNK, remaining))
        remaining -= len(data)
        if not await pass_on(data):
            return False
    return True


async def _serve(listen: tuple[str, int], config: Config, tls: ssl.SSLContext | None) -> None:
    proxy = Proxy(config)
    server = await asyncio.start_server(proxy.handle, *listen, ssl=tls, limit=CHUNK * 4)
    async with server:
        await server.serve_forever()


def _hostport(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


class FaultProxy:
    """Runs the proxy in its own process; `requests()` reads its log."""

    def __init__(self, upstream: str, log: Path, *, faulty: float = 0.0, per: str = "connection",
                 kinds: tuple[str, ...] = ("503", "429", "cut"), rules: tuple[str, ...] = (),
                 retry_after: str = "1", slow_seconds: float = 5.0, seed: int = 0,
                 tls: tuple[Path, Path] | None = None, bearer: float = 0.0) -> None:  # fmt: skip
        self.port = free_port()
        self.log = log
        self.args = ["--upstream", upstream, "--faulty", str(faulty), "--per", per, "--kinds", ",".join(kinds),
                     "--retry-after", retry_after, "--slow-seconds", str(slow_seconds), "--seed", str(seed),
                     "--log", str(log), "--bearer", str(bearer),
                     *(a for r in rules for a in ("--rule", r))]  # fmt: skip
        if tls:
            self.args += ["--cert", str(tls[0]), "--key", str(tls[1])]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.faults", "--listen", self.host, *self.args])
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("fault proxy did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def requests(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--faulty", type=float, default=0.0, help="share of connections (or requests) broken")
    parser.add_argument("--per", choices=("connection", "request"), default="connection")
    parser.add_argument("--kinds", default="503,429,cut", help=f"faults to pick from: {','.join(KINDS)}")
    parser.add_argument("--rule", action="append", default=[], help="'METHOD PATH_REGEX FAULT COUNT'")
    parser.add_argument("--retry-after", default="1", help="Retry-After of 429 and 503 answers")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--bearer", type=float, default=0.0, help="demand Bearer tokens honoured SECONDS")
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; choose from {', '.join(KINDS)}")
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(str(args.cert), str(args.key))
    config = Config(_hostport(args.upstream), args.faulty, args.per, kinds, args.retry_after, args.slow_seconds,
                    [Rule.parse(r) for r in args.rule], args.seed, args.log, tls is not None, args.bearer,
                    args.listen)  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_hostport(args.listen), config, tls))


if __name__ == "__main__":
    main()
