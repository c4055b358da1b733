"""An HTTP proxy of the kind corporate networks run: CONNECT tunnels for https, absolute-form
requests for plain http. Every request is logged as a JSON line (method, target, User-Agent), so a
test can tell who went through it and where to.

    python -m lab.connect --listen 10.231.0.1:3128 --log proxy.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


class Handler:
    def __init__(self, log: Path | None) -> None:
        self.log = open(log, "a", buffering=1) if log else None  # noqa: SIM115 - process lifetime

    def record(self, **fields: object) -> None:
        if self.log:
            self.log.write(json.dumps({"t": round(time.time(), 4), **fields}) + "\n")

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            client_w.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        agent = headers.get("user-agent", "")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            parsed = urllib.parse.urlsplit(target)
            host, port = parsed.hostname or "", str(parsed.port or 80)
        try:
            up_r, up_w = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError as exc:
            self.record(method=method, target=target, agent=agent, status=502, error=str(exc))
            client_w.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client_w.close()
            return
        self.record(method=method, target=target, agent=agent, status=200)
        if method == "CONNECT":
            client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await client_w.drain()
        else:  # forward the request as it came, in origin form; the answer streams back
            parsed = urllib.parse.urlsplit(target)
            path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
            up_w.write(f"{method} {path} {lines[0].rsplit(' ', 1)[1]}\r\n".encode() + head.split(b"\r\n", 1)[1])
            await up_w.drain()
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        for writer in (client_w, up_w):
            with contextlib.suppress(Exception):
                writer.close()


async def _serve(listen: tuple[str, int], log: Path | None) -> None:
    server = await asyncio.start_server(Handler(log).handle, *listen, limit=CHUNK * 4)
    async with server:
        await server.serve_forever()


class ConnectProxy:
    """Runs the proxy in its own process (optionally inside a network namespace's reach)."""

    def __init__(self, address: str, port: int, log: Path) -> None:
        self.address, self.port, self.log = address, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.connect", "--listen", f"{self.address}:{self.port}",
                                      "--log", str(self.log)])  # fmt: skip
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("connect proxy did not start")

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
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve((host, int(port)), args.log))


if __name__ == "__main__":
    main()
