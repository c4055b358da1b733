"""Split bundles on disk, without registries: sizes, packing, resumable part writing, the lock."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from chaosmirror import bundle as fmt
from chaosmirror import split
from chaosmirror.bundlecheck import verify, verify_part
from chaosmirror.bundleset import locate
from chaosmirror.errors import ChaosmirrorError
from chaosmirror.workfiles import OutputLock, remove_stale
from lab import standin
from lab.images import write_oci_layout

SHAPE = standin.Shape(base=300 * standin.KiB, middle=120 * standin.KiB, own=60 * standin.KiB)


@pytest.mark.parametrize(("text", "size"), [("700MB", 700_000_000), ("4GiB", 4 * 2**30), ("734003200", 734003200),
                                            ("1.5 GB", 1_500_000_000), ("64kib", 65536)])  # fmt: skip
def test_sizes_in_decimal_binary_and_bytes(text, size):
    assert split.parse_size(text) == size


@pytest.mark.parametrize(("text", "message"), [("700M", "write 700MB .* or 700MiB"), ("lots", "not a size"),
                                               ("10", "below the smallest part")])  # fmt: skip
def test_sizes_that_are_refused(text, message):
    with pytest.raises(ChaosmirrorError, match=message):
        split.parse_size(text)


def test_computed_tar_sizes_are_what_tarfile_writes():
    for sizes in ([], [0], [1], [511, 512, 513], [10_000, 3, 70_000]):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for n in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(n)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            for i, size in enumerate(sizes):
                info = tarfile.TarInfo(f"f{i}")
                info.size = size
                tar.addfile(info, io.BytesIO(b"x" * size))
        assert split.tar_size(sizes) == len(raw.getvalue()), sizes
    assert split.tar_size([4 * 2**30 - 5000]) % 10240 == 0  # never exactly 4 GiB: FAT32 holds 4 GiB - 1 byte


def _layout(tmp_path: Path) -> tuple[Path, fmt.BundleInfo, split.Layout, dict[str, str]]:
    """An OCI layout of 6 stand-in images, with the bundle.json, Layout and hashes an export has."""
    repos = [(f"harness/img{i}", "1.0") for i in range(6)]
    artifacts = standin.build(repos, SHAPE)
    root = tmp_path / "work" / "bundle"
    write_oci_layout(root, {f"docker.io/{r}:{t}": a for (r, t), a in artifacts.items()})
    images, users = [], {}
    for (repo, tag), art in artifacts.items():
        source = f"docker.io/{repo}:{tag}"
        images.append(fmt.BundleImage(source, f"{repo.split('/')[1]}:{tag}", art.digest, (), 0))
        for blob in [*art.all_blobs(), *art.manifests()]:
            users.setdefault(fmt.blob_name(blob.digest), []).append(source)
    blobs = {f"blobs/sha256/{p.name}": p.stat().st_size for p in (root / "blobs" / "sha256").iterdir()}
    layout = split.Layout("9.9.9", blobs, {n: tuple(u) for n, u in users.items()},
                          {n: (root / n).stat().st_size for n in (fmt.LAYOUT, fmt.INDEX)})  # fmt: skip
    hashes = {n: fmt.sha256_file(root / n) for n in [fmt.LAYOUT, fmt.INDEX, *blobs]}
    return root, fmt.BundleInfo(fmt.OCI, "9.9.9", tuple(images)), layout, hashes


def test_parts_are_at_most_the_size_verify_alone_and_together(tmp_path):
    root, info, layout, hashes = _layout(tmp_path)
    out = tmp_path / "out" / "b.tar"
    out.parent.mkdir()
    size = 400_000
    done = split.write_parts(root, out, info, layout, hashes, split_size=size, allow_oversize=False,
                             on_phase=lambda m: None)  # fmt: skip
    parts = sorted(out.parent.iterdir())
    assert [p.name for p in parts] == [f"b.tar.{n:03d}" for n in range(1, len(parts) + 1)] and len(parts) >= 4
    assert all(p.stat().st_size <= size for p in parts)
    assert [(e.name, e.size) for e in done.parts] == [(p.name, p.stat().st_size) for p in parts]
    assert all(
        e.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() for e, p in zip(done.parts[1:], parts[1:], strict=True)
    )
    for part in parts:
        meta, alone = verify_part(part)
        assert not alone.problems and meta.parts == len(parts)
    whole = verify(locate([parts[2]]))  # any part finds the others
    assert (
        not whole.problems and whole.checked == len(hashes) + 2 * len(parts) + 1
    )  # + part.json, SHA256SUMS, bundle.json
    for part in parts:  # each part is a plain tar the standard tools check
        folder = tmp_path / "x" / part.name
        folder.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(part), "-C", str(folder)], check=True)
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder, check=True)


def test_a_blob_larger_than_the_size_names_the_smallest_size_that_works(tmp_path):
    root, info, layout, hashes = _layout(tmp_path)
    out = tmp_path / "b.tar"
    with pytest.raises(
        ChaosmirrorError, match=r"does not fit .* the smallest --split-size that works is (\d+)"
    ) as caught:
        split.write_parts(root, out, info, layout, hashes, split_size=200_000, allow_oversize=False,
                          on_phase=lambda m: None)  # fmt: skip
    smallest = int(str(caught.value).split("works is ")[1].split()[0])
    assert "used by docker.io/harness/img" in str(caught.value) and "--allow-oversize-blob" in str(caught.value)
    split.write_parts(root, out, info, layout, hashes, split_size=smallest, allow_oversize=False,
                      on_phase=lambda m: None)  # fmt: skip
    assert max(p.stat().st_size for p in tmp_path.glob("b.tar.*")) <= smallest


def test_oversize_blobs_get_a_part_of_their_own_when_allowed(tmp_path):
    root, info, layout, hashes = _layout(tmp_path)
    out = tmp_path / "b.tar"
    phases: list[str] = []
    done = split.write_parts(root, out, info, layout, hashes, split_size=200_000, allow_oversize=True,
                             on_phase=phases.append)  # fmt: skip
    big = [p for p in done.parts if p.size > 200_000]
    assert big and all(len(p.images) >= 1 for p in big) and any("larger than --split-size" in m for m in phases)
    assert not verify(locate([out])).problems


def test_an_interrupted_split_keeps_the_parts_it_finished(tmp_path):
    root, info, layout, hashes = _layout(tmp_path)
    out = tmp_path / "b.tar"

    def crash(message: str) -> None:
        if message.startswith("writing b.tar.004"):
            raise KeyboardInterrupt  # as if killed while writing part 4

    with pytest.raises(KeyboardInterrupt):
        split.write_parts(root, out, info, layout, hashes, split_size=400_000, allow_oversize=False, on_phase=crash)
    staged = root.parent / "split"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(staged.glob("b.tar.00[23]"))}
    assert sorted(before) == ["b.tar.002", "b.tar.003"] and not list(tmp_path.glob("b.tar.*"))
    phases: list[str] = []
    split.write_parts(root, out, info, layout, hashes, split_size=400_000, allow_oversize=False, on_phase=phases.append)
    assert [m for m in phases if m.startswith("kept")] == [f"kept {n} from the interrupted export" for n in before]
    assert not [m for m in phases if m.startswith(("writing b.tar.002", "writing b.tar.003"))]
    assert {n: (out.with_name(n).stat().st_ino, out.with_name(n).stat().st_mtime_ns) for n in before} == before
    assert not verify(locate([out])).problems


def test_a_second_export_to_the_same_output_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "b.tar"
    with OutputLock(out):
        script = "from pathlib import Path\nfrom chaosmirror.workfiles import OutputLock\n"
        script += f"OutputLock(Path({str(out)!r})).__enter__()"
        holder = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
        assert holder.returncode == 1
        assert f"another bundle export (pid {os.getpid()}) is writing {out}" in holder.stderr
    assert not (tmp_path / ".b.tar.lock").exists()
    with OutputLock(out):  # free again
        pass


def test_partial_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(["true"], check=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        finished = subprocess.Popen(["true"])
        finished.wait()
        (tmp_path / f".b.tar.partial-{finished.pid}").write_text("x")
        (tmp_path / f".b.tar.partial-{child.pid}").write_text("x")
        (tmp_path / ".other.partial-1").write_text("x")
        old = tmp_path / ".chaosmirror-import-abc"
        (old / "blobs").mkdir(parents=True)
        removed = remove_stale(tmp_path, prefix=".b.tar.", old_scratch=True)
        assert sorted(p.name for p in removed) == [".b.tar.partial-" + str(finished.pid), old.name]
        assert (tmp_path / f".b.tar.partial-{child.pid}").exists() and (tmp_path / ".other.partial-1").exists()
    finally:
        child.kill()
        child.wait()
    assert dead.returncode == 0


def test_a_part_of_another_split_is_named_as_such(tmp_path):
    root, info, layout, hashes = _layout(tmp_path)
    ours, theirs = tmp_path / "ours" / "b.tar", tmp_path / "theirs" / "b.tar"
    for out, size in ((ours, 400_000), (theirs, 500_000)):
        out.parent.mkdir()
        split.write_parts(root, out, info, layout, hashes, split_size=size, allow_oversize=False, on_phase=print)
    ours.with_name("b.tar.002").write_bytes(theirs.with_name("b.tar.002").read_bytes())
    problems = verify(locate([ours])).problems
    assert any(
        p.endswith("b.tar.002 is part 2 of another bundle (HCE 9.9.9, id " + p.split("id ")[1]) for p in problems
    )
    assert any("part 2 of" in p and "is missing" in p for p in problems)
