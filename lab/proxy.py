"""A TCP proxy that makes a loopback registry look far away.

Each direction of each connection is delayed by half the round trip and capped at a fixed rate,
with a bounded queue in between so a fast sender is held back as a TCP window would hold it.
The kernel's netem is not available here, so the benchmark puts this in front of the target.

    python -m lab.proxy --listen 127.0.0.1:6000 --upstream 127.0.0.1:5000 --rtt-ms 40 --mbit 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time

from lab.registry import free_port

CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, rate: float) -> None:
    loop = asyncio.get_running_loop()
    # About one bandwidth-delay product in flight, as a TCP window would allow.
    window = max(4, int(rate * delay * 2 / CHUNK) + 2)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=window)

    async def receive() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except ConnectionError:
                data = b""
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def send() -> None:
        free_at = loop.time()
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            start = max(due, free_at)
            free_at = start + len(data) / rate
            wait = free_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            try:
                await writer.drain()
            except ConnectionError:
                return

    await asyncio.gather(receive(), send())


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], delay: float, rate: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay * 2)  # the SYN / SYN-ACK round trip
        try:
            up_r, up_w = await asyncio.open_connection(*upstream)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pump(client_r, up_w, delay, rate), _pump(up_r, client_w, delay, rate))
        finally:
            for w in (client_w, up_w):
                w.close()

    server = await asyncio.start_server(handle, *listen, limit=CHUNK * 4)
    async with server:
        await server.serve_forever()


def _hostport(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


class LatencyProxy:
    """Runs the proxy in its own process (its CPU is not the measured tool's)."""

    def __init__(self, upstream: str, *, rtt_ms: float = 40, mbit: float = 200) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.args = ["--rtt-ms", str(rtt_ms), "--mbit", str(mbit)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.proxy", "--listen", self.host, "--upstream", self.upstream, *self.args]
        )
        import socket

        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("latency proxy did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--mbit", type=float, default=200.0, help="per-connection cap, each direction")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_hostport(args.listen), _hostport(args.upstream), args.rtt_ms / 2000.0, args.mbit * 1e6 / 8))


if __name__ == "__main__":
    main()
