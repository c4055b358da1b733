"""End to end on real registries through real faults: lab/faults.py between chaosmirror and the
target breaks connections and answers 503 / 429, a target is stopped and restarted mid-run, a
target's storage fills up. Each test counts what happened (the proxy's log, the registry's access
log), so it fails when the fault never struck as well as when chaosmirror did not survive it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.faults import FaultProxy
from lab.proxy import LatencyProxy
from lab.registry import Client, RegistryServer
from lab.rig import PASSWORD, USER
from tests.conftest import source_digests, tmpfs, write_manifest

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def plain_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A password-protected registry on plain HTTP; the fault proxy in front of it speaks TLS."""
    server = RegistryServer(tmp_path_factory.mktemp("plain-target"), auth=(USER, PASSWORD)).start()
    yield server
    server.stop()


def faulty(rig, upstream: RegistryServer, log: Path, **options: object) -> FaultProxy:  # type: ignore[no-untyped-def]
    return FaultProxy(upstream.host, log, tls=(rig.tls.cert, rig.tls.key), **options)  # type: ignore[arg-type]


def via(rig, proxy_host: str, account: str) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--to", proxy_host, "--account", account, "--ca-cert", str(rig.tls.ca_cert), "--source-mirror",
            f"docker.io={rig.source.host}"]  # fmt: skip


def exact(rig, target: RegistryServer, account: str, *, tls: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    """The images of the release that are missing or wrong in the target."""
    client = Client(target.host, auth=(USER, PASSWORD), tls=rig.tls if tls else None)
    try:
        wrong = []
        for name_tag, digest in source_digests(rig, "1.47.0").items():
            name, tag = name_tag.split(":")
            if client.digest(f"{account}/{name}", tag) != digest:
                wrong.append(name_tag)
        return wrong
    finally:
        client.close()


@pytest.mark.parametrize("share", [0.15, 0.30])
def test_one_run_lands_every_digest_through_faulty_connections(rig, chaosmirror, plain_target, account, tmp_path,
                                                               share):  # fmt: skip
    with faulty(rig, plain_target, tmp_path / "faults.jsonl", faulty=share, kinds=("503", "429", "cut", "cut"),
                seed=int(share * 100)) as proxy:  # fmt: skip
        run = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, account))
        seen = proxy.requests()
    assert run.code == 0, run.output
    assert exact(rig, plain_target, account) == []
    struck = [r for r in seen if r["fault"]]
    assert len(struck) >= 10, "the faults never struck"
    assert {r["fault"] for r in struck} == {"503", "429", "cut"}
    assert {e["status"] for e in run.report["images"]} == {"copied"}


def test_retry_after_is_honoured(rig, chaosmirror, plain_target, account, tmp_path):
    rule = r"HEAD ^/v2/.+/manifests/1\.47\.0$ 429 1"  # the first look at a tag in the target: 429, wait 2 s
    with faulty(rig, plain_target, tmp_path / "faults.jsonl", rules=(rule,), retry_after="2") as proxy:
        run = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, account), "--group", "ddcr")
        seen = proxy.requests()
    assert run.code == 0, run.output
    (limited,) = [r for r in seen if r["fault"] == "429"]
    again = [r for r in seen if r["path"] == limited["path"] and r["t"] > limited["t"]]
    assert again, "the rate-limited request was never retried"
    assert again[0]["t"] - limited["end"] >= 1.95  # not before Retry-After


def test_a_rate_limited_target_gets_fewer_requests_at_once(rig, chaosmirror, plain_target, tmp_path):
    def peak(seen: list[dict[str, object]], start: float, end: float) -> int:
        return max((int(r["inflight"]) for r in seen if start <= float(r["t"]) <= end), default=0)  # type: ignore[arg-type]

    with faulty(rig, plain_target, tmp_path / "calm.jsonl") as proxy:
        calm = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, "calm" + tmp_path.name[-6:].lower()))
        calm_seen = proxy.requests()
    assert calm.code == 0, calm.output
    rule = r"HEAD ^/v2/.+/manifests/ 429 4"
    with faulty(rig, plain_target, tmp_path / "limited.jsonl", rules=(rule,), retry_after="0") as proxy:
        limited = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, "lim" + tmp_path.name[-6:].lower()))
        limited_seen = proxy.requests()
    assert limited.code == 0, limited.output
    last_429 = max(float(r["end"]) for r in limited_seen if r["fault"] == "429")  # type: ignore[arg-type]
    before = peak(calm_seen, 0, float("inf"))
    after = peak(limited_seen, last_429, last_429 + 4.0)  # the window stays cut for 5 s
    assert after < before, (after, before)
    assert any("rate-limited us" in note for note in limited.report["notes"])


def _restart_when_uploading(server: RegistryServer, *, down_for: float | None, done: threading.Event) -> None:
    """Stop `server` once it has taken a few blob uploads; start it again after `down_for` seconds."""
    since = len(server.requests())  # the access log holds earlier tests' requests too
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(1 for r in server.requests(since) if r.method == "PUT" and "/blobs/uploads/" in r.path) >= 3:
            break
        time.sleep(0.02)
    server.stop()
    done.set()
    if down_for is not None:
        time.sleep(down_for)
        server.start()


def test_a_target_restarted_during_the_run_is_waited_for(rig, chaosmirror, account, tmp_path):
    stopped = threading.Event()
    with LatencyProxy(rig.target.host, rtt_ms=40, mbit=20) as far:
        outage = threading.Thread(target=_restart_when_uploading, args=(rig.target,),
                                  kwargs={"down_for": 2.0, "done": stopped})  # fmt: skip
        outage.start()
        try:
            run = chaosmirror("mirror", "1.47.0", *via(rig, far.host, account))
        finally:
            outage.join()
    assert stopped.is_set()
    assert run.code == 0, run.output
    assert exact(rig, rig.target, account, tls=True) == []
    assert any("were retried" in note for note in run.report["notes"])


def test_an_outage_longer_than_the_retries_fails_those_images_and_says_why(rig, chaosmirror, account, tmp_path):
    stopped = threading.Event()
    with LatencyProxy(rig.target.host, rtt_ms=40, mbit=20) as far:
        outage = threading.Thread(target=_restart_when_uploading, args=(rig.target,),
                                  kwargs={"down_for": None, "done": stopped})  # fmt: skip
        outage.start()
        try:
            run = chaosmirror("mirror", "1.47.0", *via(rig, far.host, account), "--retries", "1")
        finally:
            outage.join()
            rig.target.start()
    assert stopped.is_set()
    assert run.code == 1, run.output
    failed = [e for e in run.report["images"] if e["status"] == "failed"]
    assert failed and run.report["status"] == "partial", run.report["error"]
    assert all("gave up after 2 attempts" in e["error"] for e in failed), [e["error"] for e in failed]


@pytest.mark.parametrize("heads", [0, 10_000], ids=["as-it-answers", "blob-lookups-fail"])
def test_a_full_target_storage_is_named_in_the_error(rig, chaosmirror, account, tmp_path, heads):
    # A docker-registry whose disk was full answered a blob HEAD with a bare 500 (seen in CI): the
    # lookup must not hide the reason the upload gives.
    rules = (f"HEAD /blobs/sha256: 500 {heads}",) if heads else ()
    with tmpfs(tmp_path / "small" / "data", "256k"):
        server = RegistryServer(tmp_path / "small", auth=(USER, PASSWORD))
        try:
            server.start()
            with faulty(rig, server, tmp_path / "faults.jsonl", rules=rules) as proxy:
                run = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, account), "--retries", "1")
        finally:
            server.stop()
    assert run.code == 1, run.output
    failed = [e for e in run.report["images"] if e["status"] == "failed"]
    assert failed
    assert all("storage" in e["error"] for e in failed), [e["error"] for e in failed if "storage" not in e["error"]]


def test_a_progress_display_that_breaks_does_not_stop_the_run(rig, chaosmirror, account, monkeypatch):
    from chaosmirror.cli.progress import Progress

    def broken(self: Progress, event: object) -> None:
        raise ValueError("a display bug")

    monkeypatch.setattr(Progress, "event", broken)
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--group", "ddcr")
    assert run.code == 0, run.output
    assert {e["status"] for e in run.report["images"]} == {"copied"}


def test_a_report_that_cannot_be_written_is_refused_before_anything_is_copied(rig, chaosmirror, account, tmp_path):
    before = len(rig.target.requests())
    run = chaosmirror("mirror", "1.47.0", *rig.args(), "--account", account, "--report",
                      str(tmp_path / "no" / "such" / "r.json"), report=False)  # fmt: skip
    assert run.code == 2
    assert "--report" in run.output and "cannot write there" in run.output
    time.sleep(0.2)
    assert not [r for r in rig.target.requests(before) if account in r.path]


def test_a_plan_conflict_still_writes_the_report(tmp_path, rig, chaosmirror, account):
    from lab.images import make_image, random_layer, single
    from lab.registry import push

    push(rig.source.host, "other/chaos-runner", "1.47.0", single(make_image([random_layer("other-runner", 1024)])))
    manifests = write_manifest(tmp_path / "m", "1.47.0", [
        ("dedicated", "runner", "docker.io/harness/chaos-runner:1.47.0"),
        ("experiment", "runner", "docker.io/other/chaos-runner:1.47.0"),
    ])  # fmt: skip
    run = chaosmirror("mirror", "1.47.0", "--manifests", str(manifests), *rig.args(), "--account", account)
    assert run.code == 2
    assert run.report is not None and run.report["status"] == "error"
    assert "same name and tag" in json.dumps(run.report)


def test_a_bundle_exports_from_a_faulty_source_and_imports_into_a_faulty_target(rig, chaosmirror, plain_target,
                                                                                 account, tmp_path):  # fmt: skip
    out = tmp_path / "hce.tar"
    # per request: chaosmirror's client keeps its connections, so few new ones would break
    with FaultProxy(rig.source.host, tmp_path / "source.jsonl", faulty=0.15, per="request",
                    kinds=("503", "429", "cut"), seed=7) as source:  # fmt: skip
        export = chaosmirror(
            "bundle", "export", "1.47.0", "-o", str(out), "--source-mirror", f"docker.io={source.host}"
        )
        source_struck = [r for r in source.requests() if r["fault"]]
    assert export.code == 0, export.output
    assert len(source_struck) >= 5, "the faults never struck"
    assert chaosmirror("bundle", "verify", str(out), report=False).code == 0
    with faulty(rig, plain_target, tmp_path / "target.jsonl", faulty=0.15, per="request",
                kinds=("503", "429", "cut"), seed=8) as target:  # fmt: skip
        imported = chaosmirror("bundle", "import", str(out), "--to", target.host, "--account", account,
                               "--ca-cert", str(rig.tls.ca_cert))  # fmt: skip
        target_struck = [r for r in target.requests() if r["fault"]]
    assert imported.code == 0, imported.output
    assert len(target_struck) >= 5, "the faults never struck"
    assert exact(rig, plain_target, account) == []


def test_a_refused_commit_is_asked_again_without_sending_the_bytes_again(rig, chaosmirror, plain_target, account,
                                                                         tmp_path):  # fmt: skip
    """An upload's POST and its committing PUT carry no bytes: each is retried alone. Only a broken
    PATCH starts the upload again, so a blob's bytes go once however often a commit is refused."""
    out = tmp_path / "hce.tar"
    assert chaosmirror("bundle", "export", "1.47.0", "-o", str(out), "--source-mirror",
                       f"docker.io={rig.source.host}").code == 0  # fmt: skip
    rules = (r"PUT /blobs/uploads/.+digest= 503 4", r"POST /blobs/uploads/$ 503 4")
    with faulty(rig, plain_target, tmp_path / "target.jsonl", rules=rules, retry_after="0") as target:
        imported = chaosmirror("bundle", "import", str(out), "--to", target.host, "--account", account,
                               "--ca-cert", str(rig.tls.ca_cert))  # fmt: skip
        seen = target.requests()
    assert imported.code == 0, imported.output
    assert exact(rig, plain_target, account) == []
    assert sum(1 for r in seen if r["fault"]) == 8
    patches = [r for r in seen if r["method"] == "PATCH"]
    commits = {r["path"].rsplit("digest=", 1)[1] for r in seen if r["method"] == "PUT" and r["status"] == 201
               and "digest=" in r["path"]}  # fmt: skip
    assert patches and len(patches) == len(commits), (len(patches), len(commits))


def test_tokens_are_fetched_once_per_scope_and_again_after_a_later_401(rig, chaosmirror, account, tmp_path):
    """The proxy plays a token service whose tokens say "60 s" but are honoured for half a second."""
    open_target = RegistryServer(tmp_path / "open").start()
    try:
        with faulty(rig, open_target, tmp_path / "faults.jsonl", bearer=0.5) as proxy:
            run = chaosmirror("mirror", "1.47.0", *via(rig, proxy.host, account), "--group", "ddcr")
            seen = proxy.requests()
    finally:
        open_target.stop()
    assert run.code == 0, run.output
    ours = [r for r in seen if str(r["agent"]).startswith("chaosmirror")]
    fetches = [r for r in ours if r["path"] == "/token"]
    expired = [r for r in ours if r["fault"] == "expired"]
    scopes = {r["scope"] for r in fetches}
    assert scopes and len(fetches) <= len(scopes) + len(expired)  # one fetch per scope, and one per expiry
    assert expired, "no token outlived its honoured time: the re-authentication was not exercised"
    assert {e["status"] for e in run.report["images"]} == {"copied"}
