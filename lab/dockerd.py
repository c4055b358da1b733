"""A private Docker daemon for tests and the benchmark: its own socket, data root and exec root.

Runs as root with `--storage-driver=vfs --iptables=false --ip6tables=false --bridge=none`, which is
what works in this sandbox; it starts its own containerd. It never touches the system's daemon.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from lab.registry import need


class DockerDaemon:
    def __init__(self, folder: Path, *, insecure: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.insecure = insecure
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def host(self) -> str:
        """The DOCKER_HOST value for this daemon."""
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 60.0) -> DockerDaemon:
        dockerd = need("dockerd", "docker.io")
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [
            dockerd, "--host", self.host, "--data-root", str(self.folder / "data"),
            "--exec-root", str(self.folder / "exec"), "--pidfile", str(self.folder / "docker.pid"),
            "--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--config-file", str(self._config()),
            *(f"--insecure-registry={host}" for host in self.insecure),
        ]  # fmt: skip
        log = open(self.folder / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {(self.folder / 'dockerd.log').read_text()[-3000:]}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f}s: see {self.folder / 'dockerd.log'}")

    def _config(self) -> Path:
        path = self.folder / "daemon.json"
        path.write_text("{}\n")
        return path

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket_path))
                sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"200 OK" in sock.recv(256)
        except OSError:
            return False

    def docker(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI against this daemon."""
        return subprocess.run([need("docker", "docker.io"), "--host", self.host, *args], input=input,
                              capture_output=True, timeout=300, check=False)  # fmt: skip

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # vfs layers can be large; containerd state lives under exec
        shutil.rmtree(self.folder / "data", ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
