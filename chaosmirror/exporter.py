"""Export a release into an air-gap bundle (see `bundle` for the format).

The source is surveyed as for `mirror`; each layer that several images share is downloaded once
into the blob folder all images share; the engine writes every image into an OCI layout on top of
that folder (or into docker archives); then `bundle.json` and `SHA256SUMS` are written and it is
all tarred under a temporary name, renamed only when complete. The work folder (`FILE.parts`)
survives an interruption, so running the same command again reuses what was downloaded.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chaosmirror import bundle as fmt
from chaosmirror import split
from chaosmirror.cache import ManifestCache
from chaosmirror.delta import UNPLACED, Base, hce_name, left_out, record
from chaosmirror.engines import ArchiveWriter, Engine
from chaosmirror.errors import ChaosmirrorError, EngineError, Interrupted, RegistryError
from chaosmirror.layers import shared_layers
from chaosmirror.layoutfiles import finish_archives, finish_oci, tree_size, write_blob
from chaosmirror.lifecycle import Run
from chaosmirror.manifest import DOCKER_LIST, Manifest, platform_children
from chaosmirror.mirror import Event, Session, label, platforms_for
from chaosmirror.plan import Item, Observed, Selection, choose, collect_items, parts_of
from chaosmirror.ref import ArchiveRef, ImageRef, LayoutRef
from chaosmirror.registry import Registries
from chaosmirror.release import Release
from chaosmirror.report import Entry, Report
from chaosmirror.settings import Settings
from chaosmirror.signatures import Attachment, Finder, subjects_for
from chaosmirror.staging import Staging
from chaosmirror.survey import survey
from chaosmirror.tasks import copy_with_retries
from chaosmirror.workfiles import OutputLock, remove_stale

NO_DIGEST = "sha256:" + "0" * 64


def export_release(
    release: Release,
    settings: Settings,
    output: Path,
    *,
    kind: str = fmt.OCI,
    since: Base | None = None,
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


def _export(release: Release, settings: Settings, output: Path, *, kind: str, since: Base | None,
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
            cache = ManifestCache.from_env(settings.env)
            observed = survey(items, registries, settings.platforms, jobs=settings.workers(), target=False, cache=cache,
                              alone=not engine.exact, note=_noter(report, on_phase))  # fmt: skip
            selections = _selections(observed, settings, alone=not engine.exact)
            unchanged = {}
            if since:
                unchanged = left_out(since, items, observed, selections, registries, groups=settings.groups,
                                     optional=settings.optional, mirrors=settings.source_mirrors)  # fmt: skip
            job = _Export(settings, engine, registries, work, on_event, cache, _noter(report, on_phase))
            todo = [i for i in items if i not in unchanged]
            if split_size:
                split.check_fits(_planned(release, todo, observed, settings), split_size, allow_oversize=allow_oversize)
            exported = job.oci(todo, observed, on_phase) if kind == fmt.OCI else job.archives(todo, observed)
            if kind == fmt.OCI and settings.signatures and unchanged:  # what was signed since the base travels
                unchanged = job.attach_unchanged(unchanged, selections, since is not None and since.from_bundle)
    except Interrupted:
        return _stopped(report, run, work, items)
    except (RegistryError, EngineError) as exc:
        report.error = str(exc)
        return report
    if run.stopped:
        report.entries = [entry for _, entry in exported]
        return _stopped(report, run, work, items)
    base_note = f"unchanged since {since.name}" if since else ""
    report.entries = [entry for _, entry in exported] + [
        Entry(str(i.src), hce_name(i.src), "skipped", r.digest, i.uses, platforms=r.platforms, reason=base_note,
              source_digest=r.source_digest, attached=r.attached, attached_copied=len(r.attached))
        for i, r in unchanged.items()
    ]  # fmt: skip
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
        unchanged=tuple(needs(r) for r in unchanged.values()), base=since.label if since else "",
        releases=release.names if several else (),
    )  # fmt: skip
    on_phase(f"writing {output}" + (f" in parts of at most {split_size} bytes" if split_size else ""))
    try:
        if kind == fmt.OCI:
            finish_oci(job.work, output, info, split_size=split_size, allow_oversize=allow_oversize,
                       on_phase=on_phase)  # fmt: skip
        else:
            finish_archives(job.work, output, info)
    except Interrupted:
        return _stopped(report, run, work, items)
    report.finished = time.time()
    return report


def _noter(report: Report, on_phase: Callable[[str], None]) -> Callable[[str], None]:
    def note(message: str) -> None:
        report.notes.append(message)
        on_phase(message)

    return note


def _stopped(report: Report, run: Run, work: Path, items: list[Item]) -> Report:
    """A stop: no bundle is written (nothing under the output's name), what was downloaded stays;
    every image not exported is `interrupted`."""
    done = {e.source for e in report.entries}
    report.entries += [Entry(str(i.src), hce_name(i.src), "interrupted", uses=i.uses, pulled_from=str(i.pull),
                             error=run.reason) for i in items if str(i.src) not in done]  # fmt: skip
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


def _selection(seen: Observed, settings: Settings, *, alone: bool = False) -> Selection:
    if seen.error or seen.top is None:
        raise ChaosmirrorError(seen.error or "source not read")
    selection = choose(seen.top, settings.platforms, seen.platform, alone=alone)
    if selection.error:
        raise ChaosmirrorError(f"the image {selection.error}")
    return selection


def _selections(observed: dict[Item, Observed], settings: Settings, *, alone: bool) -> dict[Item, Selection]:
    """What an export writes of each image that can be exported."""
    out = {}
    for item, seen in observed.items():
        try:
            out[item] = _selection(seen, settings, alone=alone)
        except ChaosmirrorError:
            continue  # reported when the image itself is exported
    return out


@dataclass
class _Export:
    settings: Settings
    engine: Engine
    registries: Registries
    work: Path
    on_event: Callable[[Event], None]
    cache: ManifestCache
    on_phase: Callable[[str], None] = lambda message: None
    finder: Finder = field(init=False)  # one per export: each repository's tags are listed once

    def __post_init__(self) -> None:
        self.finder = Finder(self.registries, self.cache)

    def _each(self, items: list[Item],
              one: Callable[[Item], tuple[fmt.BundleImage, str]]) -> list[tuple[fmt.BundleImage, Entry]]:  # fmt: skip
        """Run `one` per item in parallel (it returns the image and a note); a failure is an entry,
        and never stops the others; once the run stops, no new item starts."""

        def guarded(item: Item) -> tuple[fmt.BundleImage, Entry]:
            started = time.monotonic()
            try:
                image, note = one(item)
                entry = Entry(image.source, image.name, "copied", image.digest, item.uses, str(item.pull),
                              image.platforms, image.size, time.monotonic() - started, note=note,
                              source_digest=image.source_digest, attached=image.attached,
                              attached_copied=len(image.attached))  # fmt: skip
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
        written = {m.digest: m for m in [seen.top, *seen.children.values()]}
        if selection.index is not None:
            written[selection.index.digest] = selection.index
        if written[selection.digest].media_type == DOCKER_LIST:
            # skopeo 1.9.3 cannot write a Docker manifest list into an OCI layout without converting it
            # (a new digest): "Manifest list must be converted to type ..." even with --preserve-digests
            for manifest in written.values():
                write_blob(self.blobs, manifest.data)
            note = "a Docker manifest list: chaosmirror's client wrote its manifests (skopeo would convert it)"
        else:
            note = self._engine_writes(item, seen, selection, written, number)
        size = tree_size(self.blobs, selection.digest)
        attached = self._attach(item, subjects_for(selection, seen.top.digest))
        return replace(record(item, seen, selection), size=size, attached=attached), note

    def _engine_writes(self, item: Item, seen: Observed, selection: Selection, written: dict[str, Manifest],
                       number: int) -> str:  # fmt: skip
        """The engine writes the image's manifests into the layout, reading them from a staged folder
        (every blob is here already); if that fails, from the source; if that keeps failing, the
        client writes them. Returns a note when it was not the engine."""
        assert isinstance(item.pull, ImageRef) and seen.top is not None
        scratch = self.work / "layouts" / str(number)  # one index.json per image; blobs are shared
        scratch.mkdir(parents=True, exist_ok=True)
        staging = Staging(self._config)
        if selection.index is None or selection.digest == seen.top.digest:
            parts = [(written[selection.digest], LayoutRef(scratch, str(item.src), self.blobs))]
        else:  # a subset of platforms: each platform, then the filtered index, written here
            parts = [(written[p.digest], LayoutRef(scratch / p.digest[7:19], "part", self.blobs))
                     for p in selection.parts]  # fmt: skip
        try:
            for top, layout in parts:
                try:
                    staged = staging.stage(top, written, item.pull)
                    copy_with_retries(self.engine, staged, layout, self.registries)
                except (EngineError, ChaosmirrorError, OSError):
                    copy_with_retries(self.engine, item.pull.with_digest(top.digest), layout, self.registries)
            if selection.index is not None:
                write_blob(self.blobs, selection.index.data)
        except EngineError as exc:
            if not exc.transient:
                raise
            # the blobs are here already (downloaded by the client); the manifests are known from the survey
            for manifest in written.values():
                write_blob(self.blobs, manifest.data)
            return f"{self.engine.name} kept failing ({exc}); chaosmirror's client wrote the manifests"
        finally:
            staging.close()
        return ""

    def _config(self, source: ImageRef, digest: str, size: int) -> bytes:
        path = LayoutRef(self.blobs.parent, "", self.blobs).blob_path(digest)
        if path.exists():
            return path.read_bytes()
        return self.cache.blob(self.registries.for_ref(source, "src"), source, digest, size)

    def _attach(self, item: Item, subjects: list[str]) -> tuple[Attachment, ...]:
        """Signatures, attestations, SBOMs and referrers of `subjects`, written into the layout."""
        if not self.settings.signatures:
            return ()
        assert isinstance(item.pull, ImageRef)
        found = self.finder.find(item.pull, subjects)
        for one in found:
            assert one.manifest is not None
            for blob in one.manifest.stored_blobs():
                self._download(item.pull, blob.digest)
                if not LayoutRef(self.blobs.parent, "", self.blobs).blob_path(blob.digest).exists():
                    what = f"{one.attachment.kind} {one.attachment.digest}"
                    raise ChaosmirrorError(f"cannot read {blob.digest} of the {what} attached to it")
            write_blob(self.blobs, one.manifest.data)
        return tuple(one.attachment for one in found)

    def attach_unchanged(self, unchanged: dict[Item, fmt.BundleImage], selections: dict[Item, Selection],
                         recorded: bool) -> dict[Item, fmt.BundleImage]:  # fmt: skip
        """A delta leaves an unchanged image out, but carries what is attached to it and not in the
        base (all of it when the base is only a release name: a signature may have come since)."""
        out = {}
        for item, old in unchanged.items():
            selection = selections[item]
            attached = self._attach(item, subjects_for(selection, old.source_digest))
            known = {a.digest for a in old.attached} if recorded else set()
            out[item] = replace(old, attached=tuple(a for a in attached if a.digest not in known))
        return out

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
        if self.settings.signatures:
            self.on_phase("note: a docker-archive bundle holds no signatures, attestations, SBOMs or referrers (an "
                          "image loaded from it is pushed with a new digest nobody signed): use the OCI format "
                          "to carry them")  # fmt: skip
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
            selection = _selection(seen, self.settings, alone=not self.engine.exact)
            assert isinstance(item.pull, ImageRef) and seen.top is not None
            refused = self.engine.refuses([seen.children.get(p.digest, seen.top) for p in selection.parts])
            if refused:
                raise EngineError(refused)
            pulled[item] = writer.prepare(item.pull.with_digest(selection.parts[0].digest))
            return replace(record(item, seen, selection), archives=((platform, name),))

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
        return replace(record(item, seen, selection), size=size, archives=tuple(archives))


def _platform_parts(selection: Selection, top: Manifest) -> list[tuple[str, str]]:
    """(manifest digest, platform) of each platform image a selection holds."""
    if not top.is_index:
        return [(top.digest, selection.platforms[0] if selection.platforms else "")]
    by_digest = {d.digest: str(d.platform) for d in platform_children(top)}
    return [(p.digest, by_digest[p.digest]) for p in selection.parts if p.digest in by_digest]
