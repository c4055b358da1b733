"""Split bundles and the import that reads tars in place, end to end: real registries, real skopeo,
the CLI as a real process where it matters (read-only media, a tiny TMPDIR, kill -9)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import rig as lab_rig
from lab import standin
from lab.proxy import LatencyProxy
from lab.registry import Client, Logged, RegistryServer
from lab.rig import PASSWORD
from tests.conftest import REPO_ROOT, require, tmpfs

pytestmark = pytest.mark.registry
SHAPE = standin.Shape(base=2 * standin.MiB, middle=512 * standin.KiB, own=256 * standin.KiB)
SIZE = 3_000_000  # bytes per part: the largest blob (2 MiB and a bit) fits, two of them do not
PROBE = """import sys
from chaosmirror.cli import cli  # main() would end the process itself (os._exit) before the probe reads
sys.argv = ["chaosmirror", *sys.argv[1:]]
try:
    cli(prog_name="chaosmirror")
    code = 0
except SystemExit as exc:
    code = exc.code
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # of this image only
print(f"probe: rchar={io['rchar']} peak_kb={peak}", file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def srig(tmp_path_factory: pytest.TempPathFactory, release_147: object) -> Iterator[lab_rig.Rig]:
    require("docker-registry", "skopeo", "htpasswd", "openssl")
    the_rig = lab_rig.start(tmp_path_factory.mktemp("srig"))
    the_rig.seed(lab_rig.release_repos(release_147.images()), SHAPE)  # type: ignore[attr-defined]
    yield the_rig
    the_rig.stop()


def cli(rig: lab_rig.Rig, *args: str, env: dict[str, str] | None = None, probe: bool = False,
        **popen: object) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`python -m chaosmirror ARGS` as a real process (with `probe`, it reports its bytes read and peak memory:
    VmHWM, since getrusage's maxrss carries over the forking parent's through exec)."""
    argv = [sys.executable, "-c", PROBE, *args] if probe else [sys.executable, "-m", "chaosmirror", *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **rig.env, **(env or {})}
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, check=False, timeout=600, **popen)  # type: ignore[call-overload,no-any-return]


def probed(done: subprocess.CompletedProcess[str], key: str) -> int:
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("probe: "))
    return int(dict(p.split("=") for p in line.removeprefix("probe: ").split())[key])


def export_args(rig: lab_rig.Rig, out: Path, *extra: str, source: str = "") -> list[str]:
    return ["bundle", "export", "1.47.0", "-o", str(out), "--source-mirror", f"docker.io={source or rig.source.host}",
            *extra]  # fmt: skip


def import_args(rig: lab_rig.Rig, files: list[Path], account: str, *extra: str, to: str = "") -> list[str]:
    return ["bundle", "import", *map(str, files), "--to", to or rig.target.host, "--account", account, "--ca-cert",
            str(rig.tls.ca_cert), *extra]  # type: ignore[union-attr]  # fmt: skip


@pytest.fixture(scope="module")
def parts(srig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("split") / "hce.tar"
    done = cli(srig, *export_args(srig, out, "--split-size", str(SIZE)))
    assert done.returncode == 0, done.stderr
    return sorted(out.parent.glob("hce.tar.*"))


@pytest.fixture(scope="module")
def single(srig: lab_rig.Rig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "hce.tar"
    done = cli(srig, *export_args(srig, out))
    assert done.returncode == 0, done.stderr
    return out


def expected(rig: lab_rig.Rig) -> dict[tuple[str, str], str]:
    return {(repo.split("/")[-1], tag): art.digest for (repo, tag), art in rig.artifacts.items()}


def assert_exact(rig: lab_rig.Rig, account: str, server: RegistryServer | None = None) -> None:
    server = server or rig.target
    client = Client(server.host, tls=server.tls, auth=server.auth)
    try:
        for (name, tag), digest in expected(rig).items():
            assert client.digest(f"{account}/{name}", tag) == digest, name
    finally:
        client.close()


def blob_puts(log: list[Logged]) -> list[str]:
    """The digests of the blob uploads a registry committed (the PUT that ends an upload)."""
    out = []
    for entry in log:
        if entry.method == "PUT" and "/blobs/uploads/" in entry.path and entry.status == 201:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(entry.path).query)
            out += query["digest"]
    return out


def writes(log: list[Logged]) -> list[Logged]:
    return [e for e in log if e.method in ("PUT", "PATCH")]


def test_every_part_is_at_most_the_size_and_verifies_alone_and_together(srig, parts):
    assert len(parts) >= 4 and all(p.stat().st_size <= SIZE for p in parts)
    for number, part in enumerate(parts, 1):
        alone = cli(srig, "bundle", "verify", str(part))
        assert alone.returncode == 0, alone.stderr
        assert f"part {number} of {len(parts)} of the HCE 1.47.0 bundle" in alone.stdout
    whole = cli(srig, "bundle", "verify", str(parts[0].with_name("hce.tar")))
    assert whole.returncode == 0 and re.search(rf"intact, \d+ files checked in {len(parts)} parts", whole.stdout)
    listing = cli(srig, "bundle", "ls", str(parts[2]))  # any part finds part 001 and its bundle.json
    assert listing.returncode == 0 and "chaos-ddcr:1.47.0" in listing.stdout and "hce.tar.004" in listing.stdout


@pytest.fixture
def read_only_copy(parts: list[Path], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The parts on a read-only bind mount, and a TMPDIR on a 2 MB tmpfs (the bundle is far larger)."""
    media, tmp = tmp_path / "media", tmp_path / "tmp"
    media.mkdir()
    tmp.mkdir()
    mounted: list[Path] = []
    try:
        for argv, where in ((["mount", "--bind", str(parts[0].parent), str(media)], media),
                            (["mount", "-o", "remount,ro,bind", str(media)], None),
                            (["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(tmp)], tmp)):  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.fail(f"this test mounts (read-only bind, tmpfs) and must run as root: {done.stderr.strip()}")
            if where:
                mounted.append(where)
        yield media, tmp
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=False)


def test_import_from_read_only_media_with_a_tiny_tmpdir_lands_every_digest(srig, parts, read_only_copy, account):
    media, tmp = read_only_copy
    with pytest.raises(OSError):
        (media / "probe").write_text("x")  # it is read-only
    assert sum(p.stat().st_size for p in parts) > 5 * 2 * 1024 * 1024  # over five times the TMPDIR
    shuffled = [media / p.name for p in parts]
    random.Random(7).shuffle(shuffled)
    since = len(srig.target.requests())
    done = cli(srig, *import_args(srig, shuffled, account), env={"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert_exact(srig, account)
    stat = os.statvfs(tmp)
    assert (stat.f_blocks - stat.f_bfree) * stat.f_frsize <= 64 * 1024  # nothing written to scratch
    assert sorted(p.name for p in media.iterdir()) == [p.name for p in parts]
    puts = blob_puts(srig.target.requests(since))
    assert puts and len(puts) == len(set(puts))  # each blob uploaded once, shared ones mounted elsewhere
    assert PASSWORD not in done.stdout + done.stderr


def _flip(part: Path) -> str:
    from chaosmirror.tarindex import index_tar

    member = max(index_tar(part).members, key=lambda m: m.size)
    with open(part, "r+b") as stream:
        stream.seek(member.offset + member.size // 2)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 0xFF]))
    return member.name


def test_a_flipped_byte_in_one_part_is_refused_naming_it_and_nothing_is_pushed(srig, parts, account, tmp_path):
    copies = [Path(shutil.copy(p, tmp_path)) for p in parts]
    blob = _flip(copies[2])
    since = len(srig.target.requests())
    done = cli(srig, *import_args(srig, [copies[0].with_name("hce.tar")], account))
    assert done.returncode == 1 and "nothing was pushed" in done.stderr
    assert f"part 3 of {len(parts)} (hce.tar.003)" in done.stderr and "is damaged" in done.stderr
    assert f"hce.tar.003: blob sha256:{blob.rsplit('/', 1)[1]} is damaged" in done.stderr
    assert "used by docker.io/harness/" in done.stderr
    assert writes(srig.target.requests(since)) == []
    alone = cli(srig, "bundle", "verify", str(copies[2]))
    assert alone.returncode == 1 and f"blob sha256:{blob.rsplit('/', 1)[1]} is damaged" in alone.stderr
    assert cli(srig, "bundle", "verify", str(copies[1])).returncode == 0  # the others are fine alone


def test_a_missing_part_is_named_with_its_images_and_nothing_is_pushed(srig, parts, account, tmp_path):
    for part in parts:
        if not part.name.endswith(".004"):
            shutil.copy(part, tmp_path)
    held = json.loads(cli(srig, "bundle", "ls", "--json", str(parts[0])).stdout)["parts"][3]["images"]
    since = len(srig.target.requests())
    done = cli(srig, *import_args(srig, [tmp_path / "hce.tar.002"], account))
    assert done.returncode == 1 and "nothing was pushed" in done.stderr
    assert f"part 4 of {len(parts)} (hce.tar.004), holding blobs of {', '.join(held)} is missing" in done.stderr
    assert done.stderr.count("is missing") == 1  # the others were found beside hce.tar.002
    assert writes(srig.target.requests(since)) == []
    first = tmp_path / "hce.tar.001"
    first.rename(tmp_path / "elsewhere.001")  # part 001, renamed in transit, given by path: found by its content
    named = cli(srig, "bundle", "verify", str(tmp_path / "elsewhere.001"), str(tmp_path / "hce.tar.003"),
                str(parts[3]), str(tmp_path / "hce.tar.002"))  # fmt: skip
    assert named.returncode == 0, named.stderr


def _wait_for(what: str, ready: callable, proc: subprocess.Popen[str], timeout: float = 120) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout:.0f}s")
        time.sleep(0.05)


def test_kill_9_of_an_import_resumes_sending_nothing_that_landed(srig, parts, account):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **srig.env}
    since = len(srig.target.requests())
    with LatencyProxy(srig.target.host, rtt_ms=40, mbit=8) as proxy:
        argv = import_args(srig, [parts[0]], account, "--jobs", "2", to=proxy.host)
        proc = subprocess.Popen([sys.executable, "-m", "chaosmirror", *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_for("a blob landed", lambda: blob_puts(srig.target.requests(since)), proc)
        assert proc.poll() is None  # surely mid-run
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = srig.target.requests(since)
    landed = set(blob_puts(first))
    second_since = len(srig.target.requests())
    done = cli(srig, *import_args(srig, [parts[0]], account))
    assert done.returncode == 0, done.stderr
    assert_exact(srig, account)
    second = srig.target.requests(second_since)
    again = blob_puts(second)
    assert landed and not landed & set(again)  # nothing that landed was sent again
    assert len([e for e in second if e.method == "PATCH"]) == len(again)  # and no upload was begun twice
    everything = blob_puts(first) + again
    assert len(everything) == len(set(everything))  # each blob uploaded once across both runs


def test_kill_9_of_a_split_export_resumes_and_a_second_export_to_the_same_output_is_refused(srig, tmp_path):
    out = tmp_path / "out" / "hce.tar"
    out.parent.mkdir()
    blobs = out.parent / "hce.tar.parts" / "bundle" / "blobs" / "sha256"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **srig.env}
    since = len(srig.source.requests())
    with LatencyProxy(srig.source.host, rtt_ms=40, mbit=8) as proxy:
        argv = export_args(srig, out, "--split-size", str(SIZE), "--jobs", "2", source=proxy.host)
        proc = subprocess.Popen([sys.executable, "-m", "chaosmirror", *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

        def some_blobs() -> bool:
            return blobs.is_dir() and len([p for p in blobs.iterdir() if len(p.name) == 64]) >= 2

        _wait_for("blobs were downloaded", some_blobs, proc)
        second = cli(srig, *export_args(srig, out, "--split-size", str(SIZE)))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"another bundle export (pid {proc.pid}) is writing {out}" in second.stderr
        assert proc.poll() is None  # surely mid-run
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = {p.name for p in blobs.iterdir() if len(p.name) == 64}
    rerun_since = len(srig.source.requests())
    done = cli(srig, *export_args(srig, out, "--split-size", str(SIZE)))
    assert done.returncode == 0, done.stderr
    fetched = {e.path.rsplit("/", 1)[1].removeprefix("sha256:") for e in srig.source.requests(rerun_since)
               if e.method == "GET" and "/blobs/sha256:" in e.path}  # fmt: skip
    assert kept and not kept & fetched  # what the killed run downloaded was not downloaded again
    assert sorted(p.name for p in out.parent.iterdir())[0] == "hce.tar.001"
    assert not [p for p in out.parent.iterdir() if not p.name.startswith("hce.tar.0")]  # no lock, no .parts left
    assert cli(srig, "bundle", "verify", str(out)).returncode == 0
    assert since < rerun_since


@pytest.mark.parametrize(("kind", "pack"), [("gzip", ["gzip", "-1", "-c"]), ("xz", ["xz", "-0", "-c", "-T1"])])
def test_a_compressed_bundle_is_named_and_never_decompressed(srig, single, account, tmp_path, kind, pack):
    packed = tmp_path / f"hce.tar.{kind}"
    with open(packed, "wb") as out:
        subprocess.run([*pack, str(single)], stdout=out, check=True)
    since = len(srig.target.requests())
    for argv in (["bundle", "verify", str(packed)], ["bundle", "ls", str(packed)],
                 import_args(srig, [packed], account)):  # fmt: skip
        done = cli(srig, *argv)
        assert done.returncode == 1 and f"is a {kind} file" in done.stderr and "first" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert srig.target.requests(since) == []


def test_a_100_mb_bundle_json_is_refused_unread(srig, account, tmp_path):
    from chaosmirror.split import tar_size

    crafted = tmp_path / "big.tar"
    size = 100 * 1024 * 1024
    import tarfile

    info = tarfile.TarInfo("bundle.json")
    info.size = size
    with open(crafted, "wb") as out:
        out.write(info.tobuf(tarfile.USTAR_FORMAT))
        out.truncate(tar_size([size], dirs=0))  # sparse: the zeros take no disk
    for argv in (["bundle", "verify", str(crafted)], import_args(srig, [crafted], account)):
        done = cli(srig, *argv, probe=True)
        assert done.returncode == 1, done.stderr
        assert f"bundle.json is {size} bytes, more than the 16777216 a bundle.json may have" in done.stderr
        assert probed(done, "peak_kb") < 64 * 1024  # it was never read into memory
        assert probed(done, "rchar") < 30 * 1024 * 1024  # nor read at all (python's own files are a few MB)


def _rewrite(bundle: Path, out: Path, change: callable) -> None:  # type: ignore[valid-type]
    """A copy of a one-file bundle with `change(files)` applied, SHA256SUMS made to match."""
    import hashlib
    import io
    import tarfile

    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    change(files)
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()
                                  if n != "SHA256SUMS").encode()  # fmt: skip
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ["bundle.json", "SHA256SUMS", *(n for n in files if n not in ("bundle.json", "SHA256SUMS"))]:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))


def test_a_member_larger_than_its_manifest_declares_is_refused(srig, single, account, tmp_path):
    import hashlib

    def shrink(files: dict[str, bytes]) -> None:
        """One image's manifest declares its largest layer one byte shorter; digests all consistent."""
        info = json.loads(files["bundle.json"])
        image = next(i for i in info["images"] if len(i["platforms"]) == 1)
        old = image["digest"]
        manifest = json.loads(files[f"blobs/sha256/{old[7:]}"])
        manifest["layers"][0]["size"] -= 1
        data = json.dumps(manifest).encode()
        new = "sha256:" + hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{new[7:]}"] = data
        files["index.json"] = (
            files["index.json"]
            .replace(old.encode(), new.encode())
            .replace(f'"size": {len(files[f"blobs/sha256/{old[7:]}"])}'.encode(), f'"size": {len(data)}'.encode())
        )
        image["digest"] = new
        files["bundle.json"] = json.dumps(info).encode()
        shrink.layer = manifest["layers"][0]  # type: ignore[attr-defined]
        shrink.source = image["source"]  # type: ignore[attr-defined]

    crafted = tmp_path / "crafted.tar"
    _rewrite(single, crafted, shrink)
    layer = shrink.layer  # type: ignore[attr-defined]
    since = len(srig.target.requests())
    for argv in (["bundle", "verify", str(crafted)], import_args(srig, [crafted], account)):
        done = cli(srig, *argv)
        assert done.returncode == 1, done.stderr
        assert (
            f"blobs/sha256/{layer['digest'][7:]} is {layer['size'] + 1} bytes, but {shrink.source} "  # type: ignore[attr-defined]
            f"declares {layer['size']}: refused"
        ) in done.stderr
    assert writes(srig.target.requests(since)) == []


def test_a_docker_archive_name_that_climbs_out_is_refused(srig, account, tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (tmp_path / "evil.tar").write_bytes(b"outside the bundle")
    image = {"source": "docker.io/harness/chaos-ddcr:1.47.0", "name": "chaos-ddcr:1.47.0", "size": 1,
             "digest": "sha256:" + "a" * 64, "platforms": ["linux/amd64"],
             "archives": [["linux/amd64", "../evil.tar"]]}  # fmt: skip
    (folder / "bundle.json").write_text(json.dumps({"format": 1, "kind": "docker-archive", "release": "1.47.0",
                                                    "images": [image]}))  # fmt: skip
    since = len(srig.target.requests())
    for argv in (["bundle", "verify", str(folder)], import_args(srig, [folder], account)):
        done = cli(srig, *argv)
        assert done.returncode == 1 and "bundle.json is malformed" in done.stderr
        assert "archive name '../evil.tar'" in done.stderr and "Traceback" not in done.stderr
    assert srig.target.requests(since) == []


def test_one_import_to_two_registries_reads_each_blob_once(srig, single, tmp_path, account):
    other = RegistryServer(tmp_path / "other", auth=("second-bot", "an-other-Pa55"), tls=srig.tls).start()
    try:
        auth = tmp_path / "auth.json"
        import base64

        entries = {s.host: {"auth": base64.b64encode(":".join(s.auth).encode()).decode()}  # type: ignore[arg-type]
                   for s in (srig.target, other)}  # fmt: skip
        auth.write_text(json.dumps({"auths": entries}))
        env = {"REGISTRY_AUTH_FILE": str(auth), "CHAOSMIRROR_DEST_USERNAME": "", "CHAOSMIRROR_DEST_PASSWORD": ""}
        old = single.parent / ".chaosmirror-import-k1ll3d"  # what an import of 0.1 extracted into, killed
        (old / "blobs" / "sha256").mkdir(parents=True)
        one = cli(srig, *import_args(srig, [single], account + "one"), env=env, probe=True)
        assert one.returncode == 0, one.stderr
        assert not old.exists()
        since = len(srig.target.requests())
        both = cli(srig, *import_args(srig, [single], account, "--to", other.host), env=env, probe=True)
        assert both.returncode == 0, both.stderr
        assert_exact(srig, account)
        assert_exact(srig, account, other)
        for log in (srig.target.requests(since), other.requests()):
            puts = blob_puts(log)
            assert puts and len(puts) == len(set(puts))
        assert probed(both, "rchar") - probed(one, "rchar") < single.stat().st_size // 4  # read once for both
        report = both.stdout
        assert (
            f"{srig.target.host}/{account}/chaos-ddcr:1.47.0" in report
            and f"{other.host}/{account}/chaos-ddcr" in report
        )
    finally:
        other.stop()


def test_bytes_that_changed_after_verification_are_never_committed(srig, account, tmp_path):
    import hashlib
    import io

    from chaosmirror.errors import RegistryError
    from chaosmirror.ref import ImageRef
    from chaosmirror.registry import Registries
    from chaosmirror.tarindex import MemberReader, index_tar
    from tests.test_tarindex import write

    good = random.Random(3).randbytes(300_000)
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    path = write(tmp_path / "b.tar", {"blobs/sha256/" + digest[7:]: good})
    _flip(path)  # the disc went bad after `bundle verify`
    ref = ImageRef(srig.target.host, f"{account}/chaos-ddcr", "1.47.0")
    registries = Registries(ca_file=srig.tls.ca_cert, env=srig.env)  # type: ignore[union-attr]
    registry = registries.get(srig.target.host, "dest")
    since = len(srig.target.requests())
    reader = MemberReader(path, index_tar(path).members[0])
    with reader, pytest.raises(RegistryError, match=f"now hashes to .*, not {digest}.*was cancelled"):
        registry.upload_blob_checked(ref, digest, len(good), lambda: (reader, lambda: reader.problem(digest)))  # type: ignore[arg-type,return-value]
    sent = [(e.method, e.status) for e in srig.target.requests(since) if e.status != 401]
    assert sent == [("POST", 202), ("PATCH", 202), ("DELETE", 204)]  # the registry was never told the digest
    assert not registry.has_blob(ref, digest)
    registry.upload_blob_checked(ref, digest, len(good), lambda: (io.BytesIO(good), lambda: ""))  # type: ignore[arg-type,return-value]
    assert registry.has_blob(ref, digest)
    registries.close()


def test_a_blob_larger_than_the_split_size_stops_the_export_before_any_download(srig, tmp_path):
    out = tmp_path / "hce.tar"
    since = len(srig.source.requests())
    done = cli(srig, *export_args(srig, out, "--split-size", "1MB"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(
        r"blob sha256:[0-9a-f]{64} \(2\.\d MB, used by docker\.io/harness/.*\) does not fit in a part "
        r"of --split-size 1000000 .* the smallest --split-size that works is \d+ \(2\.\d MB\)",
        done.stderr,
    )
    layers = {b.digest for art in srig.artifacts.values() for i in art.images for b in i.blobs[1:]}
    fetched = {e.path.rsplit("/", 1)[1] for e in srig.source.requests(since) if "/blobs/" in e.path}
    assert fetched and not fetched & layers  # the survey read configs; not one layer was downloaded
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_target_disk_is_named_as_the_target_s(srig, single, account, tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        full = RegistryServer(disk / "registry")
        try:
            full.start()
            done = cli(srig, *import_args(srig, [single], account, to=full.host))
            assert done.returncode == 1
            assert f"the registry {full.host} is out of disk space" in done.stdout and "free space there" in done.stdout
        finally:
            full.stop()


def test_manifests_the_target_holds_are_not_put_again_and_the_index_goes_last(srig, parts, account):
    first = cli(srig, *import_args(srig, [parts[0]], account))
    assert first.returncode == 0, first.stderr
    index = srig.artifacts[("harness/chaos-ddcr", "1.47.0")]
    client = Client(srig.target.host, tls=srig.tls, auth=srig.target.auth)
    try:
        status, _, _ = client.request("DELETE", f"/v2/{account}/chaos-ddcr/manifests/{index.digest}")
        assert status == 202 and client.digest(f"{account}/chaos-ddcr", "1.47.0") is None
    finally:
        client.close()
    since = len(srig.target.requests())
    again = cli(srig, *import_args(srig, [parts[0]], account))
    assert again.returncode == 0, again.stderr
    assert_exact(srig, account)
    log = srig.target.requests(since)
    puts = [e.path for e in log if e.method == "PUT"]
    assert puts == [f"/v2/{account}/chaos-ddcr/manifests/1.47.0"]  # the index alone: no blob, no platform manifest
    children = [f"/v2/{account}/chaos-ddcr/manifests/{i.manifest.digest}" for i in index.images]
    assert all(any(e.method == "HEAD" and e.path == c for e in log) for c in children)
