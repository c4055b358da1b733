"""Real signals to a real chaosmirror process, mid-copy (the target is slowed by lab/proxy.py):
Ctrl-C and SIGTERM stop it within seconds with 130 / 143 and a report saying `interrupted`; kill -9
kills it outright. Either way no skopeo is left copying, no file under TMPDIR holds the password,
and running the same command again lands every digest."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.proxy import LatencyProxy
from lab.rig import PASSWORD, USER
from tests.conftest import REPO_ROOT, source_digests, write_manifest

pytestmark = pytest.mark.registry
SECRETS = (PASSWORD.encode(), base64.b64encode(f"{USER}:{PASSWORD}".encode()), base64.b64encode(PASSWORD.encode()))


def processes_with(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def skopeos(host: str) -> list[tuple[int, str]]:
    """skopeo processes copying from or to `host` (matched as docker://HOST/, so no other port matches)."""
    return [p for p in processes_with(f"docker://{host}/") if p[1].split()[0].endswith("skopeo")]


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def secrets_under(folder: Path) -> list[Path]:
    out = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and any(s in path.read_bytes() for s in SECRETS):
                out.append(path)
        except OSError:
            continue
    return out


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    report: Path
    tmp: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


BIG = 3 * 1024 * 1024  # one layer of each big image: about 12 s through the slow link below
BIG_DIGESTS: list[str] = []


@pytest.fixture(scope="module")
def big(rig, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A release of four images with one big layer each, in the rig's source; its manifest folder."""
    from lab.images import make_image, random_layer, single
    from lab.registry import push

    images = []
    BIG_DIGESTS.clear()
    for n in range(4):
        repo = f"harness/big-{n}"
        BIG_DIGESTS.append(
            push(rig.source.host, repo, "1.0", single(make_image([random_layer(f"signals-big-{n}", BIG)])))
        )
        images.append(("dedicated", f"big-{n}", f"docker.io/{repo}:1.0"))
    return write_manifest(tmp_path_factory.mktemp("big"), "9.1.0", images)


@pytest.fixture
def far(rig) -> Iterator[LatencyProxy]:  # type: ignore[no-untyped-def]
    """The target, far away and on a slow link: a copy in flight takes seconds, not milliseconds."""
    with LatencyProxy(rig.target.host, rtt_ms=100, mbit=2) as proxy:
        yield proxy


def launch(rig, args: list[str], tmp_path: Path, name: str) -> Started:  # type: ignore[no-untyped-def]
    """`chaosmirror ARGS --report NAME.json` as a process of its own, with the rig's credentials."""
    tmp = tmp_path / "tmp"  # the run's TMPDIR: where a careless tool would leave auth files
    tmp.mkdir(exist_ok=True)
    report, log = tmp_path / f"{name}.json", tmp_path / f"{name}.log"
    argv = [sys.executable, "-m", "chaosmirror", *args, "--report", str(report)]
    # PYTHONFAULTHANDLER: a SIGABRT makes the process print every thread's stack (see stopped_within_5_seconds)
    env = {**os.environ, **rig.env, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT), "PYTHONFAULTHANDLER": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return Started(proc, report, tmp, log)


def start(rig, far: LatencyProxy | None, account: str, tmp_path: Path, name: str = "run", *,  # type: ignore[no-untyped-def]
          release: tuple[str, ...] = ("1.47.0",)) -> Started:  # fmt: skip
    """A mirror run to the target through `far` (or straight to it, for the quick reruns)."""
    to = far.host if far else rig.target.host
    return launch(rig, ["mirror", *release, "--to", to, "--account", account, "--ca-cert", str(rig.tls.ca_cert),
                        "--source-mirror", f"docker.io={rig.source.host}"], tmp_path, name)  # fmt: skip


def wait_for_skopeo(started: Started, marker: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            pytest.fail(f"the run ended before any copy started:\n{started.output()}")
        if any(parent_of(pid) == started.proc.pid for pid, _ in skopeos(marker)):
            return
        time.sleep(0.02)
    pytest.fail("no skopeo copy started within 60 s")


def wait_for_uploads(server, since: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(r.method == "POST" and "/blobs/uploads/" in r.path for r in server.requests(since)):
            time.sleep(0.3)  # the uploads are under way
            return
        time.sleep(0.02)
    pytest.fail("no upload started within 60 s")


def gone_soon(marker: str, seconds: float = 1.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while (left := skopeos(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def rerun_is_exact(rig, far, account, tmp_path, target_client, **options) -> None:  # type: ignore[no-untyped-def]
    again = start(rig, None, account, tmp_path, "rerun", **options)  # the same registry, without the slow link
    assert again.proc.wait(timeout=300) == 0, again.output()
    expected = source_digests(rig, "1.47.0") if "release" not in options else {}
    if "release" in options:  # the big release: its images only
        expected = {f"big-{n}:1.0": digest for n, digest in enumerate(BIG_DIGESTS)}
    for name_tag, digest in expected.items():
        name, tag = name_tag.split(":")
        assert target_client.digest(f"{account}/{name}", tag) == digest, name_tag
    assert not secrets_under(again.tmp)


def stopped_within_5_seconds(started: Started, signum: int, code: int, *, to: int | None = None) -> None:
    """Send `signum` (to the process, or by the id of its thread `to`) and check how it ended."""
    sent = time.monotonic()
    if to is None:
        started.proc.send_signal(signum)
    else:
        os.kill(to, signum)
    try:
        assert started.proc.wait(timeout=5) == code, started.output()
    except subprocess.TimeoutExpired:
        started.proc.send_signal(signal.SIGABRT)  # its threads' stacks, into the log, to show where it waits
        try:
            started.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            started.proc.kill()
        pytest.fail(f"still running 5 s after the signal:\n{started.output()}")
    assert time.monotonic() - sent < 5
    assert "Traceback" not in started.output()
    doc = json.loads(started.report.read_text())
    assert doc["status"] == "interrupted" and doc["summary"]["interrupted"] >= 1


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cuts_the_uploads_in_flight(rig, far, big, account, tmp_path, target_client, signum, code):
    """Each big layer needs about 12 s through the slow link: stopping within 5 s means the uploads
    in flight were cut, not waited for."""
    since = len(rig.target.requests())
    started = start(rig, far, account, tmp_path, release=("9.1.0", "--manifests", str(big)))
    wait_for_uploads(rig.target, since)
    stopped_within_5_seconds(started, signum, code)
    assert gone_soon(far.host) == []
    assert not secrets_under(started.tmp)
    rerun_is_exact(rig, far, account, tmp_path, target_client, release=("9.1.0", "--manifests", str(big)))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_copies_and_a_rerun_finishes_them(rig, far, account, tmp_path, target_client, signum,
                                                             code):  # fmt: skip
    started = start(rig, far, account, tmp_path)
    wait_for_skopeo(started, far.host)
    assert not secrets_under(started.tmp)  # not even while copies run
    sent = time.monotonic()
    started.proc.send_signal(signum)
    try:
        assert started.proc.wait(timeout=5) == code, started.output()
    except subprocess.TimeoutExpired:
        started.proc.send_signal(signal.SIGABRT)  # its threads' stacks, into the log, to show where it waits
        try:
            started.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            started.proc.kill()
        pytest.fail(f"still running 5 s after the signal:\n{started.output()}")
    assert time.monotonic() - sent < 5
    assert gone_soon(far.host) == [], "skopeo copies outlived chaosmirror"
    assert not secrets_under(started.tmp)
    doc = json.loads(started.report.read_text())
    assert doc["status"] == "interrupted"
    assert doc["summary"]["interrupted"] >= 1
    assert "Traceback" not in started.output()
    rerun_is_exact(rig, far, account, tmp_path, target_client)


def test_kill_9_leaves_no_copy_running_and_no_secret_behind(rig, far, account, tmp_path, target_client):
    started = start(rig, far, account, tmp_path)
    wait_for_skopeo(started, far.host)
    started.proc.kill()
    started.proc.wait(timeout=10)
    assert gone_soon(far.host) == [], "skopeo copies outlived a killed chaosmirror"
    assert not secrets_under(started.tmp)
    leftovers = list(started.tmp.glob(f"chaosmirror-*-{started.proc.pid}-*"))
    assert leftovers, "the killed run left no temporary folder: this test would not see the cleanup"
    rerun_is_exact(rig, far, account, tmp_path, target_client)
    assert not [p for p in leftovers if p.exists()], "the next run did not remove what the killed one left"


# --- bundles --------------------------------------------------------------------------------------


@pytest.fixture
def slow_source(rig) -> Iterator[LatencyProxy]:  # type: ignore[no-untyped-def]
    with LatencyProxy(rig.source.host, rtt_ms=100, mbit=2) as proxy:
        yield proxy


def export_args(big: Path, source: LatencyProxy, out: Path, *extra: str) -> list[str]:
    return ["bundle", "export", "9.1.0", "--manifests", str(big), "-o", str(out), "--source-mirror",
            f"docker.io={source.host}", *extra]  # fmt: skip


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_an_export_writes_no_bundle_and_the_rerun_completes_it(rig, big, slow_source, tmp_path,
                                                                                signum, code):  # fmt: skip
    out = tmp_path / "hce.tar"
    since = len(rig.source.requests())
    started = launch(rig, export_args(big, slow_source, out), tmp_path, "export")
    deadline = time.monotonic() + 60
    while not any("/blobs/" in r.path and r.method == "GET" for r in rig.source.requests(since)):
        assert time.monotonic() < deadline and started.proc.poll() is None, started.output()
        time.sleep(0.02)
    time.sleep(0.3)  # downloads under way: each needs about 12 s through the slow link
    stopped_within_5_seconds(started, signum, code)
    assert not out.exists() and not list(tmp_path.glob(".hce.tar.partial-*")), "a half-written bundle is there"
    assert (tmp_path / "hce.tar.parts").is_dir()  # what was downloaded stays for the rerun
    again = launch(
        rig, [*export_args(big, slow_source, out)[:-1], f"docker.io={rig.source.host}"], tmp_path, "export-again"
    )  # the same source, without the slow link
    assert again.proc.wait(timeout=300) == 0, again.output()
    verified = subprocess.run([sys.executable, "-m", "chaosmirror", "bundle", "verify", str(out)], cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                              check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_signal_kills_the_skopeo_writing_a_docker_archive(rig, big, slow_source, tmp_path):
    """A docker-archive export is skopeo's own download: the stop must kill it, not wait for it."""
    out = tmp_path / "archives"
    started = launch(rig, export_args(big, slow_source, out, "--format", "docker-archive"), tmp_path, "archive")
    wait_for_skopeo(started, slow_source.host)
    stopped_within_5_seconds(started, signal.SIGTERM, 143)
    assert gone_soon(slow_source.host) == []
    assert not out.exists()


def test_a_sigterm_the_kernel_hands_to_a_worker_thread_stops_the_run_as_fast(rig, big, slow_source, tmp_path):
    """kill(2) with a thread's id sends the process its signal, handed to that thread first (Linux,
    kernel/signal.c: complete_signal), as the kernel does with any thread when the main one already
    has a signal pending. The Python-level handler runs only in the main thread, which sleeps on a
    lock until an image is done (about 12 s here): the stop must not wait for it."""
    out = tmp_path / "archives"
    started = launch(rig, export_args(big, slow_source, out, "--format", "docker-archive"), tmp_path, "archive")
    wait_for_skopeo(started, slow_source.host)
    pid = started.proc.pid
    workers = sorted(int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid)
    assert workers, "no thread but the main one: this test would prove nothing"
    stopped_within_5_seconds(started, signal.SIGTERM, 143, to=workers[-1])
    assert gone_soon(slow_source.host) == []
    assert not out.exists()


def test_kill_9_of_an_export_takes_its_skopeo_copies_with_it(rig, big, slow_source, tmp_path):
    out = tmp_path / "archives"
    started = launch(rig, export_args(big, slow_source, out, "--format", "docker-archive"), tmp_path, "archive")
    wait_for_skopeo(started, slow_source.host)
    time.sleep(0.5)
    assert skopeos(slow_source.host), "skopeo finished before the kill: this test would prove nothing"
    started.proc.kill()
    started.proc.wait(timeout=10)
    assert gone_soon(slow_source.host) == [], "skopeo went on copying after chaosmirror was killed"


@pytest.fixture(scope="module")
def big_bundle(rig, big, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("big-bundle") / "big.tar"
    done = subprocess.run([sys.executable, "-m", "chaosmirror", "bundle", "export", "9.1.0", "--manifests", str(big),
                           "-o", str(out), "--source-mirror", f"docker.io={rig.source.host}"], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                          check=False, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_an_import_and_the_rerun_lands_every_digest(rig, far, big_bundle, account, tmp_path,
                                                                   target_client, signum, code):  # fmt: skip
    args = ["bundle", "import", str(big_bundle), "--to", far.host, "--account", account, "--ca-cert",
            str(rig.tls.ca_cert)]  # fmt: skip
    since = len(rig.target.requests())
    started = launch(rig, args, tmp_path, "import")
    wait_for_uploads(rig.target, since)
    stopped_within_5_seconds(started, signum, code)
    assert not secrets_under(started.tmp)
    args[args.index(far.host)] = rig.target.host  # the same registry, without the slow link
    again = launch(rig, args, tmp_path, "import-again")
    assert again.proc.wait(timeout=300) == 0, again.output()
    for n, digest in enumerate(BIG_DIGESTS):
        assert target_client.digest(f"{account}/big-{n}", "1.0") == digest
    assert not secrets_under(again.tmp)
