"""`make bench`: chaosmirror side by side with the plain tools, in one run, on the same release.

The release is 13 generated images of about 300 MB (shared base layers, pairs sharing a middle
layer, every third image a linux/amd64 + linux/arm64 index), served by a loopback stand-in for
docker.io. The target is a TLS + htpasswd `docker-registry`. Each tool copies the release to
TARGET/harness/NAME:TAG:

- chaosmirror mirror (skopeo engine, default options);
- skopeo sync --src yaml (one process, one image at a time);
- a sequential `skopeo copy` loop, and the hand-written `xargs -P 8 skopeo copy` loop.

Cold runs start from an empty target and an empty containers blob-info cache; warm runs copy onto a
target that already holds everything. The same comparison runs again with the target behind
lab.proxy (40 ms round trip, per-connection bandwidth cap). Times are medians of --reps runs;
ratios are chaosmirror's time over the other tool's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from lab import rig as lab_rig
from lab import standin
from lab.dockerd import DockerDaemon
from lab.proxy import LatencyProxy
from lab.registry import Client, RegistryServer

RELEASE = "1.47.0"
BASELINE = "55768d0"  # the last commit whose bundle import extracted the bundle first
IMAGES = [  # 13 names of HCE 1.47.0, as stand-ins
    "chaos-ddcr",
    "chaos-log-watcher",
    "service-discovery-collector",
    "chaos-ddcr-faults",
    "chaos-workflow-controller",
    "chaos-argoexec",
    "chaos-exporter",
    "chaos-operator",
    "chaos-runner",
    "chaos-subscriber",
    "chaos-go-runner",
    "k8s-chaos-infrastructure-upgrader",
    "chaos-k8s",
]
VARIED = (standin.DOCKER_SINGLE, standin.DOCKER_LIST, standin.ONE_PLATFORM, standin.BUILDX, standin.PLAIN_TAR,
          standin.ZSTD)  # fmt: skip
BLOB_CACHES = [
    Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    Path.home() / ".local/share/containers/cache/blob-info-cache-v1.boltdb",
]


def write_manifest(folder: Path, leave_out: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Write the bench release into `folder` (without the images named in `leave_out`)."""
    repos = [
        (
            f"harness/{name}",
            "1.47.0" if not name.startswith("chaos-workflow") and name != "chaos-argoexec" else "v3.4.16",
        )
        for name in IMAGES
    ]
    kept = [(name, repo) for name, repo in zip(IMAGES, repos, strict=True) if name not in leave_out]
    doc = {
        "schema": "chaosmirror.release/v1",
        "release": RELEASE,
        "notes": "benchmark release: generated stand-ins",
        "sources": {"bench": {"title": "lab.bench"}},
        "groups": {
            "dedicated": {
                "source": "bench",
                "images": [
                    {"component": name.removeprefix("chaos-"), "image": f"docker.io/{repo}:{tag}"}
                    for name, (repo, tag) in kept
                ],
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{RELEASE}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return [repo for _, repo in kept]


class Bench:
    def __init__(self, folder: Path, reps: int) -> None:
        self.folder = folder
        self.reps = reps
        self.rig = lab_rig.start(folder / "rig")
        self.manifests = folder / "manifests"
        self.repos = write_manifest(self.manifests)
        started = time.monotonic()
        self.digests = self.rig.seed(self.repos, standin.BENCH)
        blobs = {b.digest: len(b.data) for a in self.rig.artifacts.values() for b in a.all_blobs()}
        self.unique_bytes = sum(blobs.values())
        print(
            f"release: {len(self.repos)} images, {self.unique_bytes / 1e6:.0f} MB of unique blobs, "
            f"{sum(1 for a in self.rig.artifacts.values() if len(a.images) > 1)} multi-arch "
            f"(built and pushed in {time.monotonic() - started:.0f}s)",
            flush=True,
        )
        self.auth = self._auth_file()
        self.certs = folder / "certs"
        self.certs.mkdir()
        assert self.rig.tls
        shutil.copyfile(self.rig.tls.ca_cert, self.certs / "ca.crt")
        self.env = {**os.environ, **self.rig.env}
        self.into = self.rig.target  # the target the runs being timed copy to
        self.plain = RegistryServer(folder / "plain").start()  # plain HTTP, no auth

    def _auth_file(self) -> Path:
        import base64

        path = self.folder / "auth.json"
        user, password = self.rig.target.auth or ("", "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"auths": {self.rig.target.host: {"auth": token}}}, out)
        return path

    # --- the tools, as argv ---------------------------------------------------------------------

    def tools(self, target: str, *, plain: bool = False) -> dict[str, list[str]]:
        """Each tool's argv, copying to `target` (with TLS and auth, or `plain` HTTP without auth)."""
        src = self.rig.source.host
        sync_yaml = self.folder / "sync.yaml"
        sync_yaml.write_text(
            yaml.safe_dump({src: {"tls-verify": False, "images": {repo: [tag] for repo, tag in self.repos}}})
        )
        pairs = self.folder / f"pairs-{target.replace(':', '_')}.txt"
        pairs.write_text(
            "".join(
                f"docker://{src}/{repo}:{tag} docker://{target}/harness/{repo.split('/')[-1]}:{tag}\n"
                for repo, tag in self.repos
            )
        )
        # An auth file keyed by the proxy's address too, for the latency runs.
        auth = json.loads(self.auth.read_text())
        auth["auths"][target] = auth["auths"][self.rig.target.host]
        auth_file = self.folder / f"auth-{target.replace(':', '_')}.json"
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(auth, out)
        tls = [f"--dest-cert-dir={self.certs}", f"--dest-authfile={auth_file}"]
        dest = ["--dest-tls-verify=false"] if plain else tls
        copy = ["skopeo", "copy", "-q", "--all", "--preserve-digests", "--src-tls-verify=false", *dest]
        assert self.rig.tls
        ca = [] if plain else ["--ca-cert", str(self.rig.tls.ca_cert)]
        return {
            "chaosmirror": [
                sys.executable,
                "-m",
                "chaosmirror",
                "mirror",
                RELEASE,
                "--manifests",
                str(self.manifests),
                "--to",
                target,
                "--source-mirror",
                f"docker.io={src}",
                *ca,
            ],
            "skopeo sync": [
                "skopeo",
                "sync",
                "--all",
                "--preserve-digests",
                "--src",
                "yaml",
                "--dest",
                "docker",
                *dest,
                str(sync_yaml),
                f"{target}/harness",
            ],
            "skopeo copy loop": ["sh", "-c", f"while read s d; do {' '.join(copy)} $s $d || exit 1; done < {pairs}"],
            "xargs -P 8 skopeo copy": ["sh", "-c", f"xargs -P 8 -n 2 {' '.join(copy)} < {pairs}"],
        }

    # --- measuring ------------------------------------------------------------------------------

    def empty_target(self) -> None:
        self.into.wipe()
        for cache in BLOB_CACHES:
            cache.unlink(missing_ok=True)

    def verify(self, *, by_config: bool = False, only: list[tuple[str, str]] | None = None) -> None:
        """Every image (of `only`, if given) is in the target: with its source digest, or (a docker
        push) its amd64 config."""
        assert self.rig.tls
        tls = self.rig.tls if self.into is self.rig.target else None
        client = Client(self.into.host, tls=tls, auth=self.into.auth)
        try:
            for (repo, tag), digest in self.digests.items():
                if only is not None and (repo, tag) not in only:
                    continue
                where = f"harness/{repo.split('/')[-1]}"
                if by_config:
                    art = self.rig.artifacts[(repo, tag)]
                    image = next(i for i in art.images if i.platform["architecture"] == "amd64")
                    want = json.loads(image.manifest.data)["config"]["digest"]
                    held = client.get_manifest(where, tag).get("config", {}).get("digest")  # type: ignore[union-attr]
                else:
                    want, held = digest, client.digest(where, tag)
                if held != want:
                    raise SystemExit(f"bench: {repo}:{tag} has {held} in the target, expected {want}")
        finally:
            client.close()

    def time_once(self, argv: list[str], prepare: Callable[[], None] | None, *, verify: bool = True) -> float:
        if prepare:
            prepare()
        started = time.monotonic()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv[:4])} failed:\n{done.stderr[-3000:]}")
        if verify:
            self.verify()
        return seconds

    def compare(self, title: str, target: str, names: list[str], *, plain: bool = False) -> dict[str, dict[str, float]]:
        """Each tool cold and warm, `reps` times, in alternating order: the medians ("cold", "warm")
        and, with more than one round, the lowest and highest of chaosmirror's time over each other
        tool's within a round ("cold min", "cold max", "warm min", "warm max")."""
        tools = self.tools(target, plain=plain)
        results: dict[str, dict[str, list[float]]] = {"cold": {n: [] for n in names}, "warm": {n: [] for n in names}}
        for rep in range(self.reps):
            order = names if rep % 2 == 0 else list(reversed(names))  # alternate, so no tool always goes first
            for name in order:
                results["cold"][name].append(self.time_once(tools[name], self.empty_target))
                print(f"  {title} cold {name}: {results['cold'][name][-1]:.2f}s", flush=True)
            if "chaosmirror" in tools:  # the skopeo tools leave the signatures out: put them in, untimed,
                self.time_once(tools["chaosmirror"], None)  # so that every warm run below is a no-op
            for name in order:  # the target is full now
                results["warm"][name].append(self.time_once(tools[name], None))
                print(f"  {title} warm {name}: {results['warm'][name][-1]:.2f}s", flush=True)
        out: dict[str, dict[str, float]] = {kind: {n: statistics.median(v) for n, v in by.items()}
                                            for kind, by in results.items()}  # fmt: skip
        if "chaosmirror" in names and self.reps > 1:
            for kind, by in results.items():
                others = {n: [ours / theirs for ours, theirs in zip(by["chaosmirror"], times, strict=True)]
                          for n, times in by.items() if n != "chaosmirror"}  # fmt: skip
                out[f"{kind} min"] = {n: min(r) for n, r in others.items()}
                out[f"{kind} max"] = {n: max(r) for n, r in others.items()}
        return out

    def compare_plain(self, names: list[str]) -> dict[str, dict[str, float]]:
        """As `compare`, into the plain-HTTP target without auth (where no bcrypt per request
        slows the tools that send more requests)."""
        self.into = self.plain
        try:
            return self.compare("plain", self.plain.host, names, plain=True)
        finally:
            self.into = self.rig.target

    # --- the Docker engine ---------------------------------------------------------------------------

    def docker(self, daemon: DockerDaemon) -> dict[str, dict[str, float]]:
        """chaosmirror --engine docker against a hand-written docker pull/tag/push loop, through one
        private daemon, with skopeo's chaosmirror beside them. Cold runs also start from a new daemon
        with an empty data root. Digests change on a docker push, so these runs are checked by config."""
        target = self.rig.target.host
        config_dir = self.folder / "docker-config"
        config_dir.mkdir(exist_ok=True)
        shutil.copyfile(self.auth, config_dir / "config.json")  # credentials in a file, never on argv
        pairs = self.folder / "docker-pairs.txt"
        pairs.write_text("".join(f"{self.rig.source.host}/{r}:{t} {target}/harness/{r.split('/')[-1]}:{t}\n"
                                 for r, t in self.repos))  # fmt: skip
        docker = f"docker --config {config_dir}"
        step = f"{docker} pull -q $s >/dev/null && {docker} tag $s $d && {docker} push -q $d >/dev/null || exit 1"
        loop = f"while read s d; do {step}; done < {pairs}"
        tools = {
            "chaosmirror (skopeo engine)": self.tools(target)["chaosmirror"],
            "chaosmirror --engine docker": [*self.tools(target)["chaosmirror"], "--engine", "docker"],
            "docker pull/tag/push loop": ["sh", "-c", loop],
        }
        self.env["DOCKER_HOST"] = daemon.host
        certs = Path("/etc/docker/certs.d") / target  # how a daemon trusts a registry's CA
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.certs / "ca.crt", certs / "ca.crt")

        def empty() -> None:
            # A new daemon with an empty data root: no images, and no memory of earlier pushes, which
            # would send one tool's push after the layer digests another tool's push had written.
            self.empty_target()
            daemon.stop()
            daemon.start()

        results: dict[str, dict[str, list[float]]] = {"cold": {n: [] for n in tools}, "warm": {n: [] for n in tools}}
        try:
            for rep in range(self.reps):
                for name in tools if rep % 2 == 0 else list(reversed(tools)):
                    exact = "docker" not in name
                    results["cold"][name].append(self.time_once(tools[name], empty, verify=exact))
                    self.verify(by_config=not exact)
                    results["warm"][name].append(self.time_once(tools[name], None, verify=exact))
                    print(
                        f"  docker {name}: cold {results['cold'][name][-1]:.2f}s, "
                        f"warm {results['warm'][name][-1]:.2f}s",
                        flush=True,
                    )
        finally:
            shutil.rmtree(certs, ignore_errors=True)
        return {kind: {n: statistics.median(v) for n, v in by.items()} for kind, by in results.items()}

    # --- air-gap bundles ----------------------------------------------------------------------------

    def bundles(self) -> dict[str, dict[str, float]]:
        """Export to disk and import into an empty target: chaosmirror bundles against skopeo sync's
        dir format (the plain tool's way to carry images across an air gap)."""
        src, target = self.rig.source.host, self.rig.target.host
        assert self.rig.tls
        tar, dirs = self.folder / "bundle.tar", self.folder / "sync-dir"
        sync_yaml = self.folder / "sync.yaml"
        auth = self.folder / f"auth-{target.replace(':', '_')}.json"
        runs = {
            "chaosmirror": (
                [sys.executable, "-m", "chaosmirror", "bundle", "export", RELEASE, "-o", str(tar), "--manifests",
                 str(self.manifests), "--source-mirror", f"docker.io={src}"],
                [sys.executable, "-m", "chaosmirror", "bundle", "import", str(tar), "--to", target,
                 "--ca-cert", str(self.rig.tls.ca_cert)],
                lambda: tar.stat().st_size,
            ),
            "skopeo sync (dir)": (
                ["skopeo", "sync", "--all", "--preserve-digests", "--src", "yaml", "--dest", "dir", str(sync_yaml),
                 str(dirs)],
                ["skopeo", "sync", "--all", "--preserve-digests", "--src", "dir", "--dest", "docker",
                 f"--dest-cert-dir={self.certs}", f"--dest-authfile={auth}", str(dirs), f"{target}/harness"],
                lambda: sum(p.stat().st_size for p in dirs.rglob("*") if p.is_file()),
            ),
        }  # fmt: skip
        self.tools(target)  # writes sync.yaml and the auth file
        times: dict[str, dict[str, list[float]]] = {n: {"export": [], "import": [], "size": []} for n in runs}
        for rep in range(self.reps):
            for name in runs if rep % 2 == 0 else reversed(list(runs)):
                export, load, size = runs[name]
                tar.unlink(missing_ok=True)
                shutil.rmtree(dirs, ignore_errors=True)
                times[name]["export"].append(self.time_once(export, None, verify=False))
                times[name]["size"].append(size() / 1e6)
                times[name]["import"].append(self.time_once(load, self.empty_target))
                print(
                    f"  bundle {name}: export {times[name]['export'][-1]:.2f}s, "
                    f"import {times[name]['import'][-1]:.2f}s, {times[name]['size'][-1]:.0f} MB",
                    flush=True,
                )
        tar.unlink(missing_ok=True)
        shutil.rmtree(dirs, ignore_errors=True)
        return {n: {k: statistics.median(v) for k, v in by.items()} for n, by in times.items()}

    # --- scale: every release in one run --------------------------------------------------------

    def scale(self, sizes: tuple[int, ...] = (14, 100, 0)) -> list[dict[str, float]]:
        """The distinct images of every bundled release (small stand-ins), copied in one run, at a few
        sizes (0: all of them): survey + plan time per image (`plan`), cold and no-op mirror times and
        chaosmirror's peak memory, beside `skopeo sync` of the same image list, into a plain target."""
        from chaosmirror.release import Catalog, bundled_dir
        from lab.registry import RegistryServer

        refs = sorted({im.ref for rel in Catalog(bundled_dir()).load_all() for im in rel.images()}, key=str)
        repos = [(r.repository, r.tag) for r in refs]
        source = RegistryServer(self.folder / "scale-source").start()
        target = RegistryServer(self.folder / "scale-target").start()
        started = time.monotonic()
        standin.push_all(source.host, standin.build(repos, standin.SMALL))
        print(f"scale: {len(repos)} distinct images of every release, pushed in {time.monotonic() - started:.0f}s")
        rows = []
        try:
            for size in sizes:
                chosen = repos[:size] if size else repos
                folder = self.folder / f"scale-{len(chosen)}"
                folder.mkdir()
                doc = {"schema": "chaosmirror.release/v1", "release": "9.9.9", "notes": "bench: every release",
                       "sources": {"bench": {"title": "lab.bench"}},
                       "groups": {"experiment": {"source": "bench", "images": [
                           {"component": f"c{n}", "image": f"docker.io/{repo}:{tag}"}
                           for n, (repo, tag) in enumerate(chosen)]}}}  # fmt: skip
                (folder / "9.9.9.yaml").write_text(yaml.safe_dump(doc))
                sync_yaml = self.folder / f"scale-sync-{len(chosen)}.yaml"  # not in the manifests folder
                by_repo: dict[str, list[str]] = {}
                for repo, tag in chosen:
                    by_repo.setdefault(repo, []).append(tag)
                sync_yaml.write_text(yaml.safe_dump({source.host: {"tls-verify": False, "images": by_repo}}))
                args = ["9.9.9", "--manifests", str(folder), "--to", target.host, "--source-mirror",
                        f"docker.io={source.host}"]  # fmt: skip
                plan = [sys.executable, "-m", "chaosmirror", "plan", *args]
                mirror = [sys.executable, "-m", "chaosmirror", "mirror", *args]
                sync = ["skopeo", "sync", "--all", "--preserve-digests", "--src", "yaml", "--dest", "docker",
                        "--dest-tls-verify=false", str(sync_yaml), f"{target.host}/harness"]  # fmt: skip
                row: dict[str, float] = {"images": len(chosen)}
                target.wipe()
                row["plan"], _ = _measured(plan, self.env)
                row["cold"], row["peak_mb"] = _measured(mirror, self.env)
                row["warm"], _ = _measured(mirror, self.env)
                target.wipe()
                row["sync_cold"], _ = _measured(sync, self.env)
                row["sync_warm"], _ = _measured(sync, self.env)
                print(f"  scale {len(chosen)}: plan {row['plan']:.2f}s, cold {row['cold']:.2f}s (sync "
                      f"{row['sync_cold']:.2f}s), no-op {row['warm']:.2f}s (sync {row['sync_warm']:.2f}s), peak "
                      f"{row['peak_mb']:.0f} MB", flush=True)  # fmt: skip
                rows.append(row)
        finally:
            source.stop()
            target.stop()
        return rows

    # --- faulty connections ----------------------------------------------------------------------

    def faults(self, shares: tuple[float, ...] = (0.15, 0.30)) -> dict[str, dict[str, dict[str, float]]]:
        """One run of each tool into an empty target behind lab.faults, at each share of faulty new
        connections (half answered 503 or 429 with Retry-After: 1, half cut after a few KB): how
        many images are exact after that one run, and how long it took. The target behind the proxy
        is a plain-HTTP registry with the same password; the proxy speaks TLS to the tools."""
        from lab.faults import FaultProxy
        from lab.registry import RegistryServer

        assert self.rig.tls and self.rig.target.auth
        upstream = RegistryServer(self.folder / "faulty-target", auth=self.rig.target.auth).start()
        names = ["chaosmirror", "skopeo sync", "xargs -P 8 skopeo copy"]
        out: dict[str, dict[str, dict[str, float]]] = {}
        try:
            for share in shares:
                got: dict[str, dict[str, list[float]]] = {n: {"seconds": [], "exact": [], "code": []} for n in names}
                for rep in range(self.reps):
                    for name in names if rep % 2 == 0 else list(reversed(names)):
                        upstream.wipe()
                        log = self.folder / f"faults-{share}-{rep}-{name.split()[0]}.jsonl"
                        with FaultProxy(upstream.host, log, faulty=share, kinds=("503", "429", "cut", "cut"),
                                        seed=rep, tls=(self.rig.tls.cert, self.rig.tls.key)) as proxy:  # fmt: skip
                            argv = self.tools(proxy.host)[name]
                            started = time.monotonic()
                            done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
                            seconds = time.monotonic() - started
                        exact = self._exact_in(upstream)
                        got[name]["seconds"].append(seconds)
                        got[name]["exact"].append(exact)
                        got[name]["code"].append(done.returncode)
                        print(f"  {share:.0%} faulty: {name}: exit {done.returncode}, {exact}/{len(self.digests)} "
                              f"exact, {seconds:.2f}s", flush=True)  # fmt: skip
                out[f"{share:.2f}"] = {
                    n: {"seconds": statistics.median(v["seconds"]), "exact": min(v["exact"]),
                        "code": max(v["code"]), "runs": len(v["seconds"])} for n, v in got.items()
                }  # fmt: skip
        finally:
            upstream.stop()
        return out

    def _exact_in(self, server: object) -> int:
        """How many images of the release `server` holds with their source digest."""
        client = Client(server.host, auth=self.rig.target.auth)  # type: ignore[attr-defined]
        try:
            return sum(
                1 for (repo, tag), digest in self.digests.items()
                if client.digest(f"harness/{repo.split('/')[-1]}", tag) == digest
            )  # fmt: skip
        finally:
            client.close()

    # --- bundle import: time and scratch disk -----------------------------------------------------

    def bundle_imports(self, baseline: str = BASELINE) -> dict[str, dict[str, float]]:
        """Import time and peak scratch disk of one bundle, as one file and as parts, with this
        chaosmirror, with the one at `baseline` (which extracts the bundle, then pushes), and with
        `tar -xf` + `skopeo copy` from the extracted layout. Scratch is sampled every 20 ms: files
        written beside the bundle (the media folder) or under TMPDIR, which is a folder of its own."""
        assert self.rig.tls
        media, scratch, old = self.folder / "media", self.folder / "scratch", self.folder / "baseline"
        media.mkdir()
        tar, parts = media / "hce.tar", media / "parts" / "hce.tar"
        parts.parent.mkdir()
        cm = [sys.executable, "-m", "chaosmirror"]
        # Every row imports the images the baseline can export: it predates the shapes of a varied
        # release (Docker media types, buildx indexes, uncompressed layers: lab/standin.py).
        manifests = self.folder / "import-manifests"
        repos = write_manifest(manifests, leave_out=tuple(IMAGES[i] for i in VARIED if i < len(IMAGES)))
        export = [*cm, "bundle", "export", RELEASE, "--manifests", str(manifests), "--source-mirror",
                  f"docker.io={self.rig.source.host}"]  # fmt: skip
        self.time_once([*export, "-o", str(tar)], None, verify=False)
        self.time_once([*export, "-o", str(parts), "--split-size", "64MB"], None, verify=False)
        size = tar.stat().st_size
        ca = ["--ca-cert", str(self.rig.tls.ca_cert)]
        target = self.rig.target.host
        archive = subprocess.run(["git", "archive", baseline, "chaosmirror"], cwd=Path(__file__).parent.parent,
                                 capture_output=True, check=True).stdout  # fmt: skip
        old.mkdir()
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        old_tar = media / "old.tar"  # the baseline reads only the bundle.json of its own time: its own export
        exported = subprocess.run([*export, "-o", str(old_tar)], cwd=old, env=self.env, capture_output=True, text=True,
                                  check=False)  # fmt: skip
        if exported.returncode != 0:
            raise SystemExit(f"bench: the {baseline} export failed:\n{exported.stderr[-3000:]}")
        layout = scratch / "layout"
        auth = self.folder / f"auth-{target.replace(':', '_')}.json"
        copy = f"skopeo copy -q --all --preserve-digests --dest-cert-dir={self.certs} --dest-authfile={auth}"
        pairs = self.folder / "layout-pairs.txt"
        pairs.write_text("".join(f"oci:{layout}:docker.io/{r}:{t} docker://{target}/harness/{r.split('/')[-1]}:{t}\n"
                                 for r, t in repos))  # fmt: skip
        count = len(list(parts.parent.iterdir()))
        importing = [*cm, "bundle", "import", "--to", target, *ca]
        untar = f"mkdir -p {layout} && tar -xf {tar} -C {layout} && xargs -P 8 -n 2 {copy} < {pairs}"
        runs: dict[str, tuple[list[str], Path | None]] = {  # argv, and the folder to run it in
            "chaosmirror, one file": ([*importing, str(tar)], None),
            f"chaosmirror, {count} parts of 64 MB": ([*importing, str(parts)], None),
            f"chaosmirror {baseline} (extract, then push)": ([*importing, str(old_tar)], old),
            "tar -xf + xargs -P 8 skopeo copy": (["sh", "-c", untar], None),
        }
        self.tools(target)  # writes the auth file skopeo reads
        got: dict[str, dict[str, list[float]]] = {n: {"import": [], "scratch": []} for n in runs}
        for rep in range(self.reps):
            for name in runs if rep % 2 == 0 else reversed(list(runs)):
                argv, cwd = runs[name]
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
                self.empty_target()
                own = {tar.name, old_tar.name, *(p.name for p in parts.parent.iterdir())}
                seconds, peak = self._sampled(argv, cwd, [media, scratch], own, scratch, repos=repos)
                got[name]["import"].append(seconds)
                got[name]["scratch"].append(peak / 1e6)
                print(f"  bundle import {name}: {seconds:.2f}s, peak scratch {peak / 1e6:.1f} MB", flush=True)
        shutil.rmtree(media, ignore_errors=True)
        out = {n: {k: statistics.median(v) for k, v in by.items()} for n, by in got.items()}
        for row in out.values():
            row["bundle_mb"] = size / 1e6
        return out

    def _sampled(self, argv: list[str], cwd: Path | None, watched: list[Path], bundle_files: set[str],
                 tmpdir: Path, *, repos: list[tuple[str, str]]) -> tuple[float, int]:  # fmt: skip
        """Run `argv` (in `cwd`, with TMPDIR=`tmpdir`) and sample the bytes of files under `watched`
        that are not the bundle's own; return (seconds, the largest sample)."""
        import threading

        peak, done = [0], threading.Event()

        def usage() -> int:
            total = 0
            for top in watched:
                for folder, _, names in os.walk(top):
                    for name in names:
                        if name not in bundle_files:
                            with contextlib.suppress(OSError):
                                total += os.lstat(os.path.join(folder, name)).st_size
            return total

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], usage())
                done.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        try:
            ran = subprocess.run(argv, cwd=cwd, env={**self.env, "TMPDIR": str(tmpdir)}, capture_output=True,
                                 text=True, check=False)  # fmt: skip
        finally:
            seconds = time.monotonic() - started
            done.set()
            sampler.join()
        if ran.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv[:5])} failed:\n{ran.stderr[-3000:]}")
        self.verify(only=repos)
        return seconds, peak[0]


def _measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `argv`; its seconds and its peak resident memory in MB (VmHWM, read while it runs). Its
    stderr goes to a file, not a pipe: a chatty tool (skopeo sync of 518 images) would fill a pipe
    nobody reads during the run, and stall."""
    with tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            time.sleep(0.02)
        seconds = time.monotonic() - started
        errors.seek(0)
        said = errors.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:5])} failed:\n{said[-3000:]}")
    return seconds, peak / 1024


def render_scale(rows: list[dict[str, float]]) -> str:
    lines = ["### Scale: the distinct images of every bundled release (small stand-ins, plain loopback target)", "",
             "| images | survey + plan (s) | per image (ms) | cold (s) | skopeo sync cold (s) | cold / sync | "
             "no-op (s) | skopeo sync no-op (s) | no-op / sync | peak memory (MB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        per = 1000 * r["plan"] / r["images"]
        cells = [f"{int(r['images'])}", f"{r['plan']:.2f}", f"{per:.1f}", f"{r['cold']:.2f}", f"{r['sync_cold']:.2f}",
                 f"{r['cold'] / r['sync_cold']:.2f}x", f"{r['warm']:.2f}", f"{r['sync_warm']:.2f}",
                 f"{r['warm'] / r['sync_warm']:.2f}x", f"{r['peak_mb']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(title: str, medians: dict[str, dict[str, float]]) -> str:
    """A table of medians; with the per-round ranges of `Bench.compare`, those too."""
    spread = "cold min" in medians
    extra = " | cold, range over rounds | warm, range over rounds" if spread else ""
    lines = [
        f"### {title}",
        "",
        f"| tool | cold (s) | warm no-op (s) | chaosmirror / tool, cold | warm{extra} |",
        "|---|---:|---:|---:|---:|" + ("---:|---:|" if spread else ""),
    ]
    ours = medians["cold"]["chaosmirror"], medians["warm"]["chaosmirror"]
    for name in medians["cold"]:
        cold, warm = medians["cold"][name], medians["warm"][name]
        row = f"| {name} | {cold:.2f} | {warm:.2f} | {ours[0] / cold:.2f}x | {ours[1] / warm:.2f}x |"
        if spread and name != "chaosmirror":
            for kind in ("cold", "warm"):
                row += f" {medians[f'{kind} min'][name]:.2f}x–{medians[f'{kind} max'][name]:.2f}x |"
        elif spread:
            row += " | |"
        lines.append(row)
    return "\n".join(lines)


def render_bundles(medians: dict[str, dict[str, float]]) -> str:
    ours = medians["chaosmirror"]
    lines = ["### Air-gap bundles (export from the loopback source; import into the empty TLS + auth target)", "",
             "| tool | export (s) | import (s) | on disk (MB) | chaosmirror / tool, export | import |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in medians.items():
        lines.append(f"| {name} | {m['export']:.2f} | {m['import']:.2f} | {m['size']:.0f} | "
                     f"{ours['export'] / m['export']:.2f}x | {ours['import'] / m['import']:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def render_bundle_imports(medians: dict[str, dict[str, float]], baseline: str = BASELINE) -> str:
    today = next(m for name, m in medians.items() if baseline in name)
    lines = [f"### Bundle import (one {next(iter(medians.values()))['bundle_mb']:.0f} MB bundle of the images "
             f"{baseline} can export into the empty TLS + auth target)", "",
             f"| tool | import (s) | peak scratch disk (MB) | scratch / bundle | time / chaosmirror {baseline} |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in medians.items():
        lines.append(f"| {name} | {m['import']:.2f} | {m['scratch']:.1f} | {100 * m['scratch'] / m['bundle_mb']:.2f}% "
                     f"| {m['import'] / today['import']:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def render_faults(results: dict[str, dict[str, dict[str, float]]], images: int) -> str:
    lines = ["### Faulty connections (target behind lab.faults: 503 / 429 with Retry-After, or cut after a few KB)",
             "", "| faulty connections | tool | exact after one run | exit | time (s) | chaosmirror / tool, time |",
             "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for share, rows in results.items():
        ours = rows["chaosmirror"]["seconds"]
        for name, row in rows.items():
            lines.append(f"| {float(share):.0%} | {name} | {int(row['exact'])}/{images} | {int(row['code'])} | "
                         f"{row['seconds']:.2f} | {ours / row['seconds']:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def render_docker(medians: dict[str, dict[str, float]]) -> str:
    lines = ["### The Docker engine (one private dockerd, vfs storage; loopback source and TLS + auth target)", "",
             "| tool | cold (s) | warm no-op (s) | chaosmirror --engine docker / tool, cold | warm |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    ours = medians["cold"]["chaosmirror --engine docker"], medians["warm"]["chaosmirror --engine docker"]
    for name in medians["cold"]:
        cold, warm = medians["cold"][name], medians["warm"][name]
        lines.append(f"| {name} | {cold:.2f} | {warm:.2f} | {ours[0] / cold:.2f}x | {ours[1] / warm:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="runs per tool and scenario (median is reported)")
    parser.add_argument("--latency-reps", type=int, default=1)
    parser.add_argument("--no-latency", action="store_true", help="skip the run behind the latency proxy")
    parser.add_argument("--no-loopback", action="store_true", help="skip the run straight to the loopback target")
    parser.add_argument("--no-bundles", action="store_true", help="skip the bundle export / import run")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker engine run")
    parser.add_argument("--no-faults", action="store_true", help="skip the runs behind the fault proxy")
    parser.add_argument("--no-scale", action="store_true", help="skip the run of every release's images")
    parser.add_argument("--rtt-ms", type=float, default=40)
    parser.add_argument("--mbit", type=float, default=100, help="per-connection cap of the proxy")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    for tool in ("skopeo", "docker-registry", "htpasswd", "openssl", "dockerd", "docker"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is not installed; run `make setup` first")
    # chaosmirror runs from byte-compiled modules, as `pip install` leaves it (this machine sets
    # PYTHONDONTWRITEBYTECODE, which would make every run compile its source again).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).parent.parent / "chaosmirror")],
                   check=True)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="chaosmirror-bench-"))
    bench = Bench(folder, args.reps)
    version = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, {version}", flush=True)
    names = ["chaosmirror", "skopeo sync", "skopeo copy loop", "xargs -P 8 skopeo copy"]
    out: dict[str, object] = {"unique_mb": round(bench.unique_bytes / 1e6), "images": len(bench.repos)}
    try:
        reports = []
        if not args.no_loopback:
            plain = bench.compare_plain(names)
            out["loopback_plain"] = plain
            reports.append(render("Loopback, plain HTTP target without auth (127.0.0.1)", plain))
            loopback = bench.compare("loopback", bench.rig.target.host, names)
            out["loopback"] = loopback
            reports.append(render("Loopback (target on 127.0.0.1, TLS + auth)", loopback))
        if not args.no_bundles:
            out["bundles"] = bench.bundles()
            reports.append(render_bundles(out["bundles"]))  # type: ignore[arg-type]
            out["bundle_imports"] = bench.bundle_imports()
            reports.append(render_bundle_imports(out["bundle_imports"]))  # type: ignore[arg-type]
        if not args.no_docker:
            with DockerDaemon(folder / "dockerd") as daemon:
                out["docker"] = bench.docker(daemon)
            reports.append(render_docker(out["docker"]))  # type: ignore[arg-type]
        if not args.no_scale:
            out["scale"] = bench.scale()
            reports.append(render_scale(out["scale"]))  # type: ignore[arg-type]
        if not args.no_faults:
            out["faults"] = bench.faults()
            reports.append(render_faults(out["faults"], len(bench.repos)))  # type: ignore[arg-type]
        if not args.no_latency:
            bench.reps = args.latency_reps
            with LatencyProxy(bench.rig.target.host, rtt_ms=args.rtt_ms, mbit=args.mbit) as proxy:
                far = bench.compare("far", proxy.host, names)
            out["latency"] = far
            reports.append(
                render(
                    f"Far target ({args.rtt_ms:.0f} ms round trip, {args.mbit:.0f} Mbit/s per "
                    "connection, through lab.proxy)",
                    far,
                )
            )
    finally:
        bench.rig.stop()
        bench.plain.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("\n\n".join(reports))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
