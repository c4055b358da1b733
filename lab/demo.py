"""`make demo`: the main job, offline, on loopback registries.

Starts a plain registry standing in for docker.io with stand-in images of HCE 1.47.0, and a
private target registry behind TLS and a password; then runs `chaosmirror mirror` the way a CI job
would (credentials in the environment), runs it again to show a rerun copies nothing, and prints
where everything is.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import rig as lab_rig
from lab import standin
from lab.images import DOCKER_LIST, MT_INDEX
from lab.registry import Client

RELEASE = "1.47.0"
# varied: a buildx index with attestations, Docker formats, zstd and plain layers, cosign signatures
# and an OCI 1.1 referrer among the images (lab/standin.py)
DEMO_SHAPE = standin.Shape(base=3 * standin.MiB, middle=1 * standin.MiB, own=512 * standin.KiB, varied=True)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def chaosmirror(*args: str, env: dict[str, str]) -> int:
    shown = " ".join(shlex.quote(a) for a in ("chaosmirror", *args))
    print(f"$ {shown}", flush=True)
    return subprocess.run([sys.executable, "-m", "chaosmirror", *args], env=env, check=False).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="where the demo keeps its files")
    parser.add_argument("--keep", action="store_true", help="leave the registries running afterwards")
    args = parser.parse_args()
    for tool in ("skopeo", "docker-registry", "htpasswd", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"demo: {tool} is not installed; `make demo` installs it (apt), or run `make setup`")

    folder = args.dir.resolve()
    say("Starting two registries on loopback")
    rig = lab_rig.start(folder / "rig")
    print(f"stand-in for docker.io:  http://{rig.source.host}")
    print(
        f"your private registry:   https://{rig.target.host}  (TLS, CA {rig.tls.ca_cert if rig.tls else '-'};"
        f" user {lab_rig.USER})"
    )
    try:
        say(f"Publishing stand-in images of HCE {RELEASE} to the docker.io stand-in")
        from chaosmirror.release import Catalog, bundled_dir

        release = Catalog(bundled_dir()).load(RELEASE)
        started = time.monotonic()
        digests = rig.seed(lab_rig.release_repos(release.images()), DEMO_SHAPE)
        multi = sum(1 for a in rig.artifacts.values() if a.top.media_type in (MT_INDEX, DOCKER_LIST))
        signed = sum(len(found) for found in rig.attached.values())
        print(f"{len(digests)} images ({multi} indexes, {signed} signatures, SBOMs and referrers next to them) in "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip

        env = {**os.environ, **rig.env}  # what a CI job takes from its secret store
        report = folder / "mirror-report.json"
        say(f"Mirroring HCE {RELEASE} into the private registry")
        print("(credentials come from CHAOSMIRROR_DEST_USERNAME / CHAOSMIRROR_DEST_PASSWORD)")
        config = folder / "hce-config"
        shutil.rmtree(config, ignore_errors=True)
        code = chaosmirror("mirror", RELEASE, *rig.args(), "--report", str(report), "--secret-name", "hce-pull",
                           "--config-out", str(config), env=env)  # fmt: skip
        if code != 0:
            raise SystemExit(f"demo: chaosmirror mirror exited {code}")

        say("Running it again: everything is already there, so nothing is copied")
        chaosmirror("mirror", RELEASE, *rig.args(), env=env)

        say("Checking every image in the target against its source digest")
        assert rig.tls is not None
        client = Client(rig.target.host, tls=rig.tls, auth=rig.target.auth)
        try:
            for (repo, tag), digest in sorted(digests.items()):
                name = repo.split("/")[-1]
                held = client.digest(f"harness/{name}", tag)
                print(f"{'ok ' if held == digest else 'BAD'} {rig.target.host}/harness/{name}:{tag}  {digest[:19]}")
                if held != digest:
                    raise SystemExit("demo: digest mismatch")
            say("Checking that each signature, SBOM and referrer sits next to its image, same digest")
            for (repo, _), found in sorted(rig.attached.items()):
                for extra in found:
                    where = extra.tag or extra.digest
                    held = client.digest(f"harness/{repo.split('/')[-1]}", where)
                    print(f"{'ok ' if held == extra.digest else 'BAD'} {repo.split('/')[-1]} {extra.kind:8} "
                          f"{where[:30]}  {extra.digest[:19]}")  # fmt: skip
                    if held != extra.digest:
                        raise SystemExit("demo: a signature did not travel with its image")
        finally:
            client.close()

        say("Done")
        print(f"report:   {report}")
        print(f"config:   {config}  (HCE settings, pull Secret, Helm values, node mirror configs: start with "
              "NEXT-STEPS.md)")  # fmt: skip
        print(f"HCE Image Registry settings for this mirror: server {rig.target.host}, account harness, "
              "private, secret hce-pull")  # fmt: skip
        if args.keep:
            print("registries left running; stop them with: pkill -f " + shlex.quote(str(folder)))
    finally:
        if not args.keep:
            rig.stop()


if __name__ == "__main__":
    main()
