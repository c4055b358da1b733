"""Behind a corporate proxy: the target is reachable only through an HTTP CONNECT proxy.

skopeo and Go never proxy loopback (nor does chaosmirror), so the test builds a small network of
its own: chaosmirror (and the skopeo it starts) runs in a network namespace whose only link is a
veth pair to this host. The proxy and the plain source registry listen on the host's end of that
link; the TLS + password target listens on an empty bridge of the host, which the namespace has
no route to. So every byte to the target must go through the proxy, and a run without
HTTPS_PROXY cannot reach it at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab.connect import ConnectProxy
from lab.registry import Client, RegistryServer, free_port, make_tls, need
from lab.rig import PASSWORD, USER
from tests.conftest import REPO_ROOT, require, source_digests

pytestmark = pytest.mark.registry


def ip(*args: str) -> None:
    subprocess.run([need("ip", "iproute2"), *args], check=True, capture_output=True, timeout=30)


@dataclass
class Net:
    ns: str
    host_side: str  # the host's address on the veth link (reachable from the namespace)
    hidden: str  # an address of the host the namespace has no route to


@pytest.fixture
def net() -> Iterator[Net]:
    require("ip")
    tag = uuid.uuid4().hex[:6]
    ns, veth, peer, dummy = f"cm-{tag}", f"cmh{tag}", f"cmn{tag}", f"cmd{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_side, inner, hidden = f"10.231.{octet}.1", f"10.231.{octet}.2", f"10.232.{octet}.1"
    ip("netns", "add", ns)
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("addr", "add", f"{host_side}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", ns, "addr", "add", f"{inner}/24", "dev", peer)
        ip("-n", ns, "link", "set", peer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", dummy, "type", "bridge")  # a bridge with no ports: a local address, nothing more
        ip("addr", "add", f"{hidden}/32", "dev", dummy)
        ip("link", "set", dummy, "up")
        yield Net(ns, host_side, hidden)
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", dummy], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def run_in(net: Net, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", net.ns, sys.executable, "-m", "chaosmirror", *argv],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_mirror_through_an_https_proxy_with_no_proxy_for_the_source(net, rig, tmp_path):
    tls = make_tls(tmp_path / "tls", hosts=(net.hidden,))
    source = RegistryServer(tmp_path / "source", address=net.host_side).start()
    target = RegistryServer(tmp_path / "target", auth=(USER, PASSWORD), tls=tls, address=net.hidden).start()
    try:
        from lab import standin

        standin.push_all(source.host, rig.artifacts)  # the 1.47.0 stand-ins, served from the veth side
        args = ["mirror", "1.47.0", "--to", target.host, "--ca-cert", str(tls.ca_cert), "--source-mirror",
                f"docker.io={source.host}", "--insecure-registry", source.host]  # fmt: skip
        env = {**os.environ, "CHAOSMIRROR_DEST_USERNAME": USER, "CHAOSMIRROR_DEST_PASSWORD": PASSWORD,
               "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}  # fmt: skip
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            env.pop(var, None)

        direct = run_in(net, [*args, "--retries", "0"], env)
        assert direct.returncode == 1, direct.stdout + direct.stderr
        assert f"cannot reach registry {target.host}" in direct.stdout + direct.stderr  # no route but the proxy

        with ConnectProxy(net.host_side, free_port(), tmp_path / "proxy.jsonl") as proxy:
            env |= {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url, "NO_PROXY": f"localhost,{net.host_side}"}
            report = tmp_path / "report.json"
            done = run_in(net, [*args, "--report", str(report)], env)
            assert done.returncode == 0, done.stdout + done.stderr
            seen = proxy.requests()
        doc = json.loads(report.read_text())
        assert {e["status"] for e in doc["images"]} == {"copied"}
        client = Client(target.host, tls=tls, auth=(USER, PASSWORD))
        for name_tag, digest in source_digests(rig, "1.47.0").items():
            name, tag = name_tag.split(":")
            assert client.digest(f"harness/{name}", tag) == digest, name_tag
        client.close()
        tunnels = [r for r in seen if r["method"] == "CONNECT"]
        assert {r["target"] for r in tunnels} == {target.host}  # the source (NO_PROXY) never went through it
        agents = {str(r["agent"]).split("/")[0] for r in tunnels}
        assert {"chaosmirror", "Go-http-client"} <= agents  # our client and skopeo both went through the proxy
    finally:
        source.stop()
        target.stop()
