"""Export a release into an air-gap bundle (see `bundle` for the format).

The source is surveyed as for `mirror`; each layer that several images share is downloaded once
into the blob folder all images share; the engine writes every image into an OCI layout on top of
that folder (or into docker archives); then `bundle.json` and `SHA256SUMS` are written and it is
all tarred under a temporary name, renamed only when complete. The work folder (`FILE.parts`)
survives an interruption, so running the same command again reuses what was downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chaosmirror import bundle as fmt
from chaosmirror import split
from chaosmirror.engines import ArchiveWriter, Engine
from chaosmirror.errors import BundleError, ChaosmirrorError, EngineError, Interrupted, RegistryError
from chaosmirror.layers import shared_layers
from chaosmirror.lifecycle import Run
from chaosmirror.manifest import Manifest, platform_children, references
from chaosmirror.mirror import Event, Session, copy_with_retries, label, platforms_for
from chaosmirror.plan import Item, Observed, Selection, choose, collect_items, parts_of
from chaosmirror.ref import ArchiveRef, ImageRef, LayoutRef, Target
from chaosmirror.registry import Registries
from chaosmirror.release import Release
from chaosmirror.report import Entry, Report
from chaosmirror.settings import Settings
from chaosmirror.survey import survey
from chaosmirror.workfiles import OutputLock, remove_stale

UNPLACED = Target("bundle.invalid")  # exports have no target; items still carry a destination value
NO_DIGEST = "sha256:" + "0" * 64


def hce_name(ref: ImageRef) -> str:
    return f"{ref.name}:{ref.tag}"


def export_release(
    release: Release,
    settings: Settings,
    output: Path,
    *,
    kind: str = fmt.OCI,
    since: Release | None = None,
    split_size: int | None = None,
    allow_oversize: bool = False,
    on_phase: Callable[[str], None] = lambda m: None,
    on_event: Callable[[Event], None] = lambda e: None,
) -> Report:
    """Write `release`'s images to the bundle `output` (a tar, or a folder for docker-archive; with
    `split_size`, parts OUTPUT.001, ... of at most that size). A failed image is reported and no
    bundle is written; the work folder is kept for the rerun. One export per output at a time."""
    if split_size and kind != fmt.OCI:
        raise ChaosmirrorError("--split-size splits OCI bundles; a docker-archive bundle is already one tarball "
                               "per image and platform")  # fmt: skip
    with OutputLock(output):
        return _export(release, settings, output, kind=kind, since=since, split_size=split_size,
                       allow_oversize=allow_oversize, on_phase=on_phase, on_event=on_event)  # fmt: skip


def _export(release: Release, settings: Settings, output: Path, *, kind: str, since: Release | None,
            split_size: int | None, allow_oversize: bool, on_phase: Callable[[str], None],
            on_event: Callable[[Event], None]) -> Report:  # fmt: skip
    first = output.with_name(fmt.part_name(output.name, 1))
    for existing in (output, first):
        if existing.exists():
            raise ChaosmirrorError(f"{existing} already exists; delete it (or choose another -o) to export again")
    work = output.with_name(f"{output.name}.parts")
    remove_stale(output.parent, prefix=f".{output.name}.")
    remove_stale(work / "bundle" / "blobs" / "sha256")
    report = label(Report("bundle export", release.name, str(output)), release, settings)
    items = collect_items(
        release.images(settings.groups, optional=settings.optional), UNPLACED, settings.source_mirrors
    )
    run = Run.current() or Run()
    try:
        with Session(settings, report, run=run, on_phase=on_phase) as (registries, engine):
            if kind == fmt.OCI and not engine.exact:
                raise ChaosmirrorError(f"the {engine.name} engine cannot write OCI layouts: use --format "
                                       "docker-archive, or --engine skopeo")  # fmt: skip
            settings = replace(settings, platforms=platforms_for(engine, settings))
            on_phase(f"reading {len(items)} images from the source")
            observed = survey(items, registries, settings.platforms, jobs=settings.workers(), target=False)
            unchanged = _unchanged(since, items, observed, registries, settings) if since else {}
            job = _Export(settings, engine, registries, work, on_event)
            todo = [i for i in items if i not in unchanged]
            if split_size:
                split.check_fits(_planned(release, todo, observed, settings), split_size, allow_oversize=allow_oversize)
            exported = job.oci(todo, observed, on_phase) if kind == fmt.OCI else job.archives(todo, observed)
    except Interrupted:
        return _stopped(report, run, work)
    except (RegistryError, EngineError) as exc:
        report.error = str(exc)
        return report
    if run.stopped:
        report.entries = [entry for _, entry in exported]
        return _stopped(report, run, work)
    base_note = f"unchanged since {since.name}" if since else ""
    report.entries = [entry for _, entry in exported] + [
        Entry(str(i.src), hce_name(i.src), "skipped", d, i.uses, reason=base_note) for i, d in unchanged.items()
    ]
    if report.count("failed"):
        full = any("no space left" in e.error for e in report.entries)
        why = f"out of disk space in {output.parent}" if full else f"{report.count('failed')} images failed"
        report.error = (f"{why}, so no bundle was written; what was downloaded is kept in {job.work} and "
                        "reused when you run the same command again")  # fmt: skip
        return report
    several = len(release.names) > 1  # then bundle.json names each release, and those each image needs

    def needs(image: fmt.BundleImage) -> fmt.BundleImage:
        return replace(image, releases=report.needed_by.get(image.source, ())) if several else image

    info = fmt.BundleInfo(
        kind, release.name, tuple(needs(image) for image, _ in exported), release.revision, fmt.now(),
        groups=settings.groups, platforms=tuple(map(str, settings.platforms)), since=since.name if since else "",
        unchanged=tuple(needs(fmt.BundleImage(str(i.src), hce_name(i.src), d, (), 0, i.uses, d))
                        for i, d in unchanged.items()), releases=release.names if several else (),
    )  # fmt: skip
    on_phase(f"writing {output}" + (f" in parts of at most {split_size} bytes" if split_size else ""))
    try:
        if kind == fmt.OCI:
            _finish_oci(job.work, output, info, split_size=split_size, allow_oversize=allow_oversize,
                        on_phase=on_phase)  # fmt: skip
        else:
            _finish_archives(job.work, output, info)
    except Interrupted:
        return _stopped(report, run, work)
    report.finished = time.time()
    return report


def _stopped(report: Report, run: Run, work: Path) -> Report:
    """A stop: no bundle is written (nothing under the output's name), what was downloaded stays."""
    report.interrupted = run.reason
    report.signal = run.signal or 0
    report.notes.append(f"no bundle was written; what was downloaded is kept in {work} and reused when you run "
                        "the same command again")  # fmt: skip
    report.finished = time.time()
    return report


def _planned(release: Release, items: list[Item], observed: dict[Item, Observed], settings: Settings) -> split.Layout:
    """The blobs an export will hold, with their sizes and users, as the survey saw them."""
    blobs: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    for item in items:
        seen = observed[item]
        try:
            selection = _selection(seen, settings)
        except ChaosmirrorError:
            continue  # reported when the image itself is exported
        assert seen.top is not None
        found = [(seen.top.digest, len(seen.top.data))] + [(m.digest, len(m.data)) for m in seen.children.values()]
        found += [d for part in parts_of(seen.top, selection, seen.children) for d in part.layers]
        for digest, size in found:
            blobs[fmt.blob_name(digest)] = size
            users.setdefault(fmt.blob_name(digest), []).append(str(item.src))
    return split.Layout(release.name, blobs, {n: tuple(dict.fromkeys(u)) for n, u in users.items()}, {})


def _unchanged(
    since: Release, items: list[Item], observed: dict[Item, Observed], registries: Registries, settings: Settings
) -> dict[Item, str]:
    """Items whose HCE name:tag the base release also lists, with the same source digest."""
    old = collect_items(since.images(settings.groups, optional=settings.optional), UNPLACED, settings.source_mirrors)
    base = {hce_name(i.src): i for i in old}
    out: dict[Item, str] = {}
    for item in items:
        seen, before = observed[item], base.get(hce_name(item.src))
        if before is None or seen.top is None:
            continue
        assert isinstance(before.pull, ImageRef)
        if registries.for_ref(before.pull, "src").digest(before.pull) == seen.top.digest:
            out[item] = seen.top.digest
    return out


def _selection(seen: Observed, settings: Settings) -> Selection:
    if seen.error or seen.top is None:
        raise ChaosmirrorError(seen.error or "source not read")
    selection = choose(seen.top, settings.platforms, seen.platform)
    if selection.error:
        raise ChaosmirrorError(f"the image {selection.error}")
    return selection


@dataclass
class _Export:
    settings: Settings
    engine: Engine
    registries: Registries
    work: Path
    on_event: Callable[[Event], None]

    def _each(self, items: list[Item],
              one: Callable[[Item], tuple[fmt.BundleImage, str]]) -> list[tuple[fmt.BundleImage, Entry]]:  # fmt: skip
        """Run `one` per item in parallel (it returns the image and a note); a failure is an entry,
        and never stops the others; once the run stops, no new item starts."""

        def guarded(item: Item) -> tuple[fmt.BundleImage, Entry]:
            started = time.monotonic()
            try:
                image, note = one(item)
                entry = Entry(image.source, image.name, "copied", image.digest, item.uses, str(item.pull),
                              image.platforms, image.size, time.monotonic() - started, note=note)  # fmt: skip
            except Interrupted as exc:
                image = fmt.BundleImage(str(item.src), hce_name(item.src), NO_DIGEST, (), 0, item.uses)
                entry = Entry(str(item.src), hce_name(item.src), "interrupted", uses=item.uses,
                              pulled_from=str(item.pull), error=str(exc))  # fmt: skip
            except ChaosmirrorError as exc:
                image = fmt.BundleImage(str(item.src), hce_name(item.src), NO_DIGEST, (), 0, item.uses)
                entry = Entry(str(item.src), hce_name(item.src), "failed", uses=item.uses, pulled_from=str(item.pull),
                              seconds=time.monotonic() - started, error=str(exc))  # fmt: skip
            self.on_event(Event("done", None, entry))
            return image, entry

        def unless_stopped(item: Item) -> tuple[fmt.BundleImage, Entry]:
            if self.registries.run.stopped:
                entry = Entry(str(item.src), hce_name(item.src), "interrupted", uses=item.uses,
                              pulled_from=str(item.pull), error=self.registries.run.reason)  # fmt: skip
                return fmt.BundleImage(str(item.src), hce_name(item.src), NO_DIGEST, (), 0, item.uses), entry
            return guarded(item)

        with ThreadPoolExecutor(max_workers=max(1, self.settings.workers())) as pool:
            return list(pool.map(unless_stopped, items))

    # --- OCI layout ---------------------------------------------------------------------------------

    @property
    def blobs(self) -> Path:
        return self.work / "bundle" / "blobs"

    def oci(self, items: list[Item], observed: dict[Item, Observed],
            on_phase: Callable[[str], None]) -> list[tuple[fmt.BundleImage, Entry]]:  # fmt: skip
        (self.blobs / "sha256").mkdir(parents=True, exist_ok=True)
        # every blob through chaosmirror's client (retried request by request); skopeo then finds each
        # one in the shared folder and writes only the image's manifests
        shared = shared_layers(self._holders(items, observed), min_repos=1)
        if shared:
            on_phase(f"downloading {len(shared)} blobs ({sum(x.size for x in shared) / 1e6:.1f} MB), each once")
            with ThreadPoolExecutor(max_workers=self.settings.workers()) as pool:
                list(pool.map(lambda layer: self._download(layer.source, layer.digest), shared))
        position = {item: n for n, item in enumerate(items)}
        return self._each(items, lambda item: self._one_oci(item, observed[item], position[item]))

    def _one_oci(self, item: Item, seen: Observed, number: int) -> tuple[fmt.BundleImage, str]:
        selection = _selection(seen, self.settings)
        assert isinstance(item.pull, ImageRef) and seen.top is not None
        scratch = self.work / "layouts" / str(number)  # one index.json per image; blobs are shared
        scratch.mkdir(parents=True, exist_ok=True)
        note = ""
        try:
            if selection.index is None or selection.digest == seen.top.digest:
                copy_with_retries(self.engine, item.pull.with_digest(selection.digest),
                                  LayoutRef(scratch, str(item.src), self.blobs), self.registries)  # fmt: skip
            else:  # a subset of platforms: each platform, then the filtered index, written here
                for part in selection.parts:
                    copy_with_retries(self.engine, item.pull.with_digest(part.digest),
                                      LayoutRef(scratch / part.digest[7:19], "part", self.blobs),
                                      self.registries)  # fmt: skip
                _write_blob(self.blobs, selection.index.data)
        except EngineError as exc:
            if not exc.transient:
                raise
            # the blobs are here already (downloaded by the client); the manifests are known from the survey
            for manifest in [*seen.children.values(), seen.top, *([selection.index] if selection.index else [])]:
                _write_blob(self.blobs, manifest.data)
            note = f"{self.engine.name} kept failing ({exc}); chaosmirror's client wrote the manifests"
        size = _tree_size(self.blobs, selection.digest)
        return fmt.BundleImage(str(item.src), hce_name(item.src), selection.digest, selection.platforms, size,
                               item.uses, seen.top.digest), note  # fmt: skip

    def _holders(self, items: list[Item], observed: dict[Item, Observed]) -> list[tuple[ImageRef, ImageRef, Any]]:
        """(source, place, layers) of each image that will be exported, for `layers.shared_layers`."""
        out = []
        for item in items:
            seen = observed[item]
            try:
                selection = _selection(seen, self.settings)
            except ChaosmirrorError:
                continue  # reported when the image itself is exported
            assert isinstance(item.pull, ImageRef) and seen.top is not None
            layers = {d: n for part in parts_of(seen.top, selection, seen.children) for d, n in part.layers}
            out.append((item.pull, item.dst, tuple(layers.items())))
        return out

    def _download(self, ref: ImageRef | LayoutRef, digest: str) -> None:
        """Fetch one blob into the shared folder, checking its digest; the engine then finds it there."""
        target = LayoutRef(self.blobs.parent, "", self.blobs).blob_path(digest)
        if target.exists():
            return
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        assert isinstance(ref, ImageRef)
        source = self.registries.for_ref(ref, "src")

        def attempt() -> None:  # a download that breaks half-way starts again
            hasher = hashlib.sha256()
            with source.open_blob(ref, digest) as stream, open(partial, "wb") as out:
                while chunk := stream.read(fmt.CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            if f"sha256:{hasher.hexdigest()}" == digest:
                partial.replace(target)

        try:
            source.transport.retrying(attempt)
        except (RegistryError, OSError):
            pass  # the engine downloads it itself
        finally:
            partial.unlink(missing_ok=True)

    # --- docker archives ----------------------------------------------------------------------------

    def archives(self, items: list[Item], observed: dict[Item, Observed]) -> list[tuple[fmt.BundleImage, Entry]]:
        """One `docker load`-able tarball per image and platform (a docker archive holds one platform);
        with an engine that saves several images at once (Docker), one tarball holding them all, in
        which layers shared between images are stored once."""
        self.work.mkdir(parents=True, exist_ok=True)
        if isinstance(self.engine, ArchiveWriter):
            return self._archive_together(self.engine, items, observed)
        return self._each(items, lambda item: (self._one_archive(item, observed[item]), ""))

    def _archive_together(self, writer: ArchiveWriter, items: list[Item],
                          observed: dict[Item, Observed]) -> list[tuple[fmt.BundleImage, Entry]]:  # fmt: skip
        platform = str(self.settings.platforms[0]) if self.settings.platforms else ""
        name = f"images_{platform.replace('/', '-') or 'all'}.tar"
        pulled: dict[Item, str] = {}

        def pull(item: Item) -> fmt.BundleImage:
            seen = observed[item]
            selection = _selection(seen, self.settings)
            assert isinstance(item.pull, ImageRef) and seen.top is not None
            pulled[item] = writer.prepare(item.pull.with_digest(selection.parts[0].digest))
            return fmt.BundleImage(str(item.src), hce_name(item.src), selection.digest, selection.platforms, 0,
                                   item.uses, seen.top.digest, ((platform, name),))  # fmt: skip

        done = self._each(items, lambda item: (pull(item), ""))
        ok = [item for item in items if item in pulled]
        if ok:
            writer.save([(pulled[item], str(item.src)) for item in ok], self.work / name)
        size = (self.work / name).stat().st_size if ok else 0
        return [(replace(image, size=size), replace(entry, size=size) if entry.status == "copied" else entry)
                for image, entry in done]  # fmt: skip

    def _one_archive(self, item: Item, seen: Observed) -> fmt.BundleImage:
        selection = _selection(seen, self.settings)
        assert isinstance(item.pull, ImageRef) and seen.top is not None
        archives = []
        for digest, platform in _platform_parts(selection, seen.top):
            name = f"{item.src.name}_{item.src.tag}_{platform.replace('/', '-') or 'image'}.tar"
            if not (self.work / name).exists():  # a complete tar from an interrupted run is kept
                partial = self.work / f".{name}.partial"
                partial.unlink(missing_ok=True)
                self.engine.copy(item.pull.with_digest(digest), ArchiveRef(partial, str(item.src)))
                partial.replace(self.work / name)
            archives.append((platform, name))
        size = sum((self.work / n).stat().st_size for _, n in archives)
        return fmt.BundleImage(str(item.src), hce_name(item.src), selection.digest, selection.platforms, size,
                               item.uses, seen.top.digest, tuple(archives))  # fmt: skip


def _platform_parts(selection: Selection, top: Manifest) -> list[tuple[str, str]]:
    """(manifest digest, platform) of each platform image a selection holds."""
    if not top.is_index:
        return [(top.digest, selection.platforms[0] if selection.platforms else "")]
    by_digest = {d.digest: str(d.platform) for d in platform_children(top)}
    return [(p.digest, by_digest[p.digest]) for p in selection.parts if p.digest in by_digest]


def _write_blob(blobs: Path, data: bytes) -> None:
    LayoutRef(blobs.parent, "", blobs).blob_path("sha256:" + hashlib.sha256(data).hexdigest()).write_bytes(data)


def _read_small(layout: LayoutRef) -> Callable[[str], bytes | None]:
    """Reads a blob of `layout` if it is small enough to be a manifest; None if absent or large."""

    def read(digest: str) -> bytes | None:
        path = layout.blob_path(digest)
        return path.read_bytes() if path.exists() and path.stat().st_size <= fmt.SMALL else None

    return read


def _tree_size(blobs: Path, top: str) -> int:
    """Bytes of `top` and every blob it references, counting each once."""
    layout = LayoutRef(blobs.parent, "", blobs)
    total = 0
    for digest in references(top, _read_small(layout)):
        path = layout.blob_path(digest)
        if not path.exists():
            raise ChaosmirrorError(f"the export lacks blob {digest}")
        total += path.stat().st_size
    return total


def _finish_oci(work: Path, output: Path, info: fmt.BundleInfo, *, split_size: int | None, allow_oversize: bool,
                on_phase: Callable[[str], None]) -> None:  # fmt: skip
    root = work / "bundle"
    read = _read_small(LayoutRef(root, ""))
    keep = sorted({fmt.blob_name(d) for image in info.images for d in references(image.digest, read)})
    for path in (root / "blobs" / "sha256").iterdir():
        if f"blobs/sha256/{path.name}" not in keep:
            path.unlink()  # left over from an earlier, different export into the same work folder
    entries = [{"mediaType": Manifest.from_bytes((root / fmt.blob_name(i.digest)).read_bytes()).media_type,
                "digest": i.digest, "size": (root / fmt.blob_name(i.digest)).stat().st_size,
                "annotations": {fmt.REF_NAME: i.source, fmt.HCE_NAME: i.name}} for i in info.images]  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    (root / fmt.INDEX).write_text(json.dumps(index, indent=2) + "\n")
    (root / fmt.LAYOUT).write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    (root / fmt.INFO).write_bytes(info.to_json())
    hashes = {name: fmt.sha256_file(root / name) for name in [fmt.INFO, fmt.LAYOUT, fmt.INDEX, *keep]}
    for name in keep:
        if hashes[name] != name.rsplit("/", 1)[1]:
            (root / name).unlink()
            raise BundleError(f"{root / name} was damaged on disk and is removed; run the same command again")
    if split_size:
        users: dict[str, list[str]] = {}
        for image in info.images:
            for digest in references(image.digest, read):
                users.setdefault(fmt.blob_name(digest), []).append(image.source)
        layout = split.Layout(info.release, {n: (root / n).stat().st_size for n in keep},
                              {n: tuple(dict.fromkeys(u)) for n, u in users.items()},
                              {n: (root / n).stat().st_size for n in (fmt.LAYOUT, fmt.INDEX)})  # fmt: skip
        del hashes[fmt.INFO]
        split.write_parts(root, output, info, layout, hashes, split_size=split_size, allow_oversize=allow_oversize,
                          on_phase=on_phase)  # fmt: skip
    else:
        (root / fmt.SUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in hashes.items()))
        fmt.write_tar(output, root, [fmt.INFO, fmt.SUMS, fmt.LAYOUT, fmt.INDEX, "blobs", "blobs/sha256", *keep])
    shutil.rmtree(work, ignore_errors=True)


def _finish_archives(work: Path, output: Path, info: fmt.BundleInfo) -> None:
    files = sorted(name for image in info.images for _, name in image.archives)
    for path in work.iterdir():
        if path.name not in files:
            path.unlink()
    (work / fmt.INFO).write_bytes(info.to_json())
    (work / fmt.SUMS).write_text(fmt.sums_text(work, [fmt.INFO, *files]))
    try:
        work.rename(output)  # the folder appears under its final name only when complete
    except OSError as exc:
        raise BundleError(f"cannot move {work} to {output}: {exc.strerror or exc}") from None
