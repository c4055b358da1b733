from __future__ import annotations

import pytest

from chaosmirror.errors import RefError
from chaosmirror.ref import ImageRef, SourceMirror, Target, check_digest, is_loopback, pull_ref

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("harness/chaos-runner:1.47.0", "docker.io/harness/chaos-runner:1.47.0"),
        ("docker.io/harness/chaos-runner:1.47.0", "docker.io/harness/chaos-runner:1.47.0"),
        ("index.docker.io/harness/x:1", "docker.io/harness/x:1"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("127.0.0.1:5000/harness/x:v3.4.16", "127.0.0.1:5000/harness/x:v3.4.16"),
        ("localhost/x:1", "localhost/x:1"),
        (
            "us-docker.pkg.dev/gar-prod-setup/harness-public/harness/delegate:26.02.88404",
            "us-docker.pkg.dev/gar-prod-setup/harness-public/harness/delegate:26.02.88404",
        ),
        (f"quay.io/a/b:1@{D}", f"quay.io/a/b:1@{D}"),
    ],
)
def test_parse_normalises_and_round_trips(text, full):
    ref = ImageRef.parse(text)
    assert str(ref) == full
    assert ImageRef.parse(str(ref)) == ref


def test_name_is_the_last_path_part():
    assert ImageRef.parse("docker.io/chaosnative/harness-chaos-log-watcher:1.15.1").name == "harness-chaos-log-watcher"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Harness/x:1",
        "harness/x:1 2",
        "https://docker.io/x:1",
        "x@sha256:abc",
        "harness/x:-bad",
        "harness//x:1",
        "a:b/c:1",
    ],
)
def test_bad_references_are_refused(bad):
    with pytest.raises(RefError):
        ImageRef.parse(bad)


def test_short_form_drops_docker_io_and_library():
    assert ImageRef.parse("busybox:1").short() == "busybox:1"
    assert ImageRef.parse("harness/x:1").short() == "harness/x:1"


def test_target_places_images_the_way_hce_composes_names():
    src = ImageRef.parse("docker.io/harness/chaos-ddcr:1.94.0")
    assert str(Target.parse("registry.example.com").place(src)) == "registry.example.com/harness/chaos-ddcr:1.94.0"
    target = Target.parse("registry.example.com:5000/mirror", account="acme")
    assert target.server == "registry.example.com:5000/mirror"
    assert str(target.place(src)) == "registry.example.com:5000/mirror/acme/chaos-ddcr:1.94.0"


@pytest.mark.parametrize("bad", ["https://r.example.com", "", "r.example.com/Bad"])
def test_bad_targets_are_refused(bad):
    with pytest.raises(RefError):
        Target.parse(bad)


def test_source_mirror_rewrites_only_its_registry():
    mirrors = (SourceMirror.parse("docker.io=us-docker.pkg.dev/gar-prod-setup/harness-public"),)
    ref = ImageRef.parse("harness/chaos-runner:1.47.0")
    assert str(pull_ref(ref, mirrors)) == "us-docker.pkg.dev/gar-prod-setup/harness-public/harness/chaos-runner:1.47.0"
    other = ImageRef.parse("quay.io/x/y:1")
    assert pull_ref(other, mirrors) == other
    with pytest.raises(RefError):
        SourceMirror.parse("docker.io")


def test_digests_are_validated_before_use():
    assert check_digest(D) == D
    for bad in ("sha256:../../etc", "sha512:" + "a" * 128, "sha256:" + "A" * 64):
        with pytest.raises(RefError):
            check_digest(bad)


def test_loopback_hosts():
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com:5000")
