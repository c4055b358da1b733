"""Import an air-gap bundle into one or more registries, with no access to the source registry.

The bundle is read where it lies (a read-only disc is fine) and nothing is extracted. Every byte is
verified first (`bundlecheck.verify`); nothing is pushed from a damaged or incomplete bundle, and a
missing part is named. An OCI bundle is then pushed straight from its tar members by the registry
client (`layoutpush`), each blob read once for all targets. A docker-archive bundle pushes one
platform per image with the engine, from the archives in place. A delta bundle's left-out images
must already be in the target: the report says so if not.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.bundlecheck import Verified, verify, verify_part
from chaosmirror.bundleset import Bundle, locate
from chaosmirror.delta import held_by
from chaosmirror.engines import Engine
from chaosmirror.errors import BundleError, ChaosmirrorError, EngineError, Interrupted, RegistryError
from chaosmirror.layoutpush import LayoutPush
from chaosmirror.lifecycle import Run
from chaosmirror.mirror import Event, Session
from chaosmirror.ref import ArchiveRef, ImageRef, Target
from chaosmirror.registry import Registries, Registry
from chaosmirror.release import Group, Image, Release, Source, combine
from chaosmirror.report import Entry, Report
from chaosmirror.settings import Settings
from chaosmirror.signatures import Attachment
from chaosmirror.survey import check_target, target_configs
from chaosmirror.tarindex import index_tar, read_member
from chaosmirror.tasks import copy_with_retries
from chaosmirror.workfiles import remove_stale

Attach = Callable[[Entry, ImageRef, tuple[Attachment, ...]], Entry]  # what a delta carries, put next to an image


@dataclass(frozen=True)
class Checked:
    """What `bundle verify` found: the whole bundle, or one part of a split one on its own."""

    verified: Verified
    info: fmt.BundleInfo | None = None  # the whole bundle
    part: fmt.PartInfo | None = None  # one part


def check(paths: Sequence[Path]) -> Checked:
    """Verify a bundle; a single part named on its own (NAME.003) is checked alone."""
    if len(paths) == 1 and _is_part(paths[0]):
        meta, verified = verify_part(paths[0])
        return Checked(verified, part=meta)
    bundle = locate(paths)
    return Checked(verify(bundle), info=bundle.info)


def _is_part(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return fmt.PART in index_tar(path, check_name=fmt.safe_name).files()
    except BundleError:
        return False


def import_bundle(
    paths: Sequence[Path],
    settings: Settings,
    *,
    targets: Sequence[Target] = (),
    work_dir: Path | None = None,
    on_event: Callable[[Event], None] = lambda e: None,
    on_phase: Callable[[str], None] = lambda m: None,
) -> Report:
    """Verify the bundle `paths` name, then push every image to each target as `mirror` would."""
    places = tuple(targets) or ((settings.target,) if settings.target else ())
    if not places:
        raise ChaosmirrorError("give the target registry with --to")
    bundle = locate(paths)
    info = bundle.info
    report = Report(
        "bundle import",
        info.release,
        ", ".join(map(str, places)),
        releases=info.releases,
        needed_by={i.source: i.releases for i in (*info.images, *info.unchanged) if i.releases},
    )
    _remove_old_scratch(bundle, work_dir)
    on_phase(f"verifying {bundle.named}")
    problems = verify(bundle).problems
    if problems:
        raise BundleError(f"{bundle.named} is damaged or incomplete; nothing was pushed:\n  " + "\n  ".join(problems))
    run = Run.current() or Run()
    if info.kind == fmt.OCI:
        try:
            report.entries = _push_layout(bundle, settings, places, report, on_event=on_event, on_phase=on_phase)
        except Interrupted:
            report.entries = [replace(e, status="interrupted") for t in places for e in _all_failed(info, t, "")]
        except (RegistryError, EngineError) as exc:
            report.error = str(exc)
            report.entries = [e for t in places for e in _all_failed(info, t, str(exc))]
        return _stopped(report, run)
    errors = []
    for target in places:  # docker archives, through the engine, one target after the other
        try:
            with Session(replace(settings, target=target), report) as (registries, engine):
                check_target(registries, target.host)
                job = _Import(settings, target, engine, registries, on_event)
                report.entries += job.archives(info, bundle.folder or Path()) + job.unchanged(info)
        except (RegistryError, EngineError) as exc:
            errors.append(str(exc))
            report.entries += _all_failed(info, target, str(exc))
    report.error = "; ".join(errors)
    return _stopped(report, run)


def _stopped(report: Report, run: Run) -> Report:
    if run.stopped:
        report.interrupted = run.reason
        report.signal = run.signal or 0
    return report


def _all_failed(info: fmt.BundleInfo, target: Target, error: str) -> list[Entry]:
    """Every image failed in `target`, for a failure that stopped the run there."""
    return [Entry(i.source, str(target.place(ImageRef.parse(i.source))), "failed", uses=i.uses, error=error)
            for i in (*info.images, *info.unchanged)]  # fmt: skip


def _push_layout(bundle: Bundle, settings: Settings, targets: tuple[Target, ...], report: Report, *,
                 on_event: Callable[[Event], None], on_phase: Callable[[str], None]) -> list[Entry]:  # fmt: skip
    """The OCI path: no engine, the registry client reads the tar members itself."""
    run = Run.current() or Run()
    registries = settings.registries(run=run, note=on_phase)
    unhook = run.on_stop(registries.close)  # a stop ends every upload in flight at once
    report.engine = "chaosmirror"
    try:
        for host in dict.fromkeys(t.host for t in targets):
            check_target(registries, host)  # every target answers and takes our credentials, before any push
        push = LayoutPush(bundle, targets, registries, jobs=settings.workers(), on_event=on_event, on_phase=on_phase,
                          signatures=settings.signatures)  # fmt: skip
        entries = push.run()
        for number, target in enumerate(targets):
            attach = functools.partial(push.attach, number)
            entries += _Import(settings, target, None, registries, on_event).unchanged(bundle.info, attach)
        return entries
    finally:
        unhook()
        registries.close()
        report.finished = time.time()


def _remove_old_scratch(bundle: Bundle, work_dir: Path | None) -> None:
    """Extraction folders of earlier versions and partial files of killed runs, beside the bundle."""
    folders = [p.path.parent for p in bundle.parts.values()] + ([work_dir] if work_dir else [])
    bases = {p.path.name.rsplit(".", 1)[0] if bundle.split else p.path.name for p in bundle.parts.values()}
    for folder in dict.fromkeys(folders):
        for base in bases:
            remove_stale(folder, prefix=f".{base}.", old_scratch=True)


def bundle_release(info: fmt.BundleInfo, name: str = "") -> Release:
    """The release a bundle holds, rebuilt from bundle.json: each image's `uses` names its group and
    component, so the configuration of an import needs no release manifest at the air-gapped site.
    A bundle of several releases gives them all as one (`release.combine`); `name` picks one of them."""
    if info.releases and not name:
        return combine(bundle_release(info, release) for release in info.releases)
    groups: dict[str, list[Image]] = {}
    for image in (*info.images, *info.unchanged):
        ref = ImageRef.parse(image.source)
        for use in image.uses if not name or name in image.releases else ():
            group, _, component = use.partition("/")
            groups.setdefault(group, []).append(Image(group, component, ref, "bundle"))
    source = Source("bundle", f"the chaosmirror bundle of HCE {info.release} ({info.created})")
    return Release(name or info.release, info.revision, {"bundle": source},
                   {group: Group(group, "bundle", tuple(images)) for group, images in groups.items()})  # fmt: skip


@dataclass
class _Import:
    settings: Settings
    target: Target
    engine: Engine | None
    registries: Registries
    on_event: Callable[[Event], None]

    @property
    def dest(self) -> Registry:
        return self.registries.get(self.target.host, "dest")

    def archives(self, info: fmt.BundleInfo, folder: Path) -> list[Entry]:
        """One platform per image: the first of --platform the bundle has, else linux/amd64, else the
        only one. Pushed with the digest the engine produces (a docker archive keeps no manifest)."""
        wanted = [str(p) for p in self.settings.platforms] or ["linux/amd64"]

        def one(image: fmt.BundleImage) -> Entry:
            started = time.monotonic()
            dst = self.target.place(ImageRef.parse(image.source))
            chosen = next((a for w in wanted for a in image.archives if a[0] == w), None)
            if chosen is None and len(image.archives) == 1 and not self.settings.platforms:
                chosen = image.archives[0]
            base = Entry(image.source, str(dst), "failed", uses=image.uses)
            if chosen is None:
                have = ", ".join(a[0] for a in image.archives)
                return self._done(base, error=f"the bundle has {have}, not {', '.join(wanted)}; choose with --platform")
            archive = folder / chosen[1]
            base = replace(base, pulled_from=str(archive), platforms=(chosen[0],))
            try:
                if _archive_config(archive, image.source) in target_configs(self.registries, dst):
                    held = self.dest.digest(dst) or ""
                    return self._done(base, status="skipped", digest=held, reason="target already holds this image")
                assert self.engine is not None
                digest = copy_with_retries(self.engine, ArchiveRef(archive, image.source), dst, self.registries)
            except Interrupted as exc:
                return self._done(base, status="interrupted", error=str(exc), seconds=time.monotonic() - started)
            except ChaosmirrorError as exc:
                return self._done(base, error=str(exc), seconds=time.monotonic() - started)
            return self._done(base, status="copied", digest=digest, size=archive.stat().st_size,
                              seconds=time.monotonic() - started)  # fmt: skip

        with ThreadPoolExecutor(max_workers=max(1, self.settings.workers())) as pool:
            return list(pool.map(one, info.images))

    def _done(self, base: Entry, **changes: object) -> Entry:
        entry = replace(base, **changes)  # type: ignore[arg-type]
        self.on_event(Event("done", None, entry))
        return entry

    def unchanged(self, info: fmt.BundleInfo, attach: Attach | None = None) -> list[Entry]:
        """A delta leaves out images unchanged since its base: the target must already hold them, as
        the base recorded them (its digest, or after a docker-archive base, its image config). What
        the delta carries for them (signatures made since) is put next to them (`attach`)."""
        out = []
        for image in info.unchanged:
            dst = self.target.place(ImageRef.parse(image.source))
            held = self.dest.digest(dst)
            configs = target_configs(self.registries, dst) if held and held != image.digest else frozenset()
            why = held_by(image, held, configs)
            base = Entry(image.source, str(dst), "failed", image.digest, image.uses, platforms=image.platforms,
                         source_digest=image.source_digest)  # fmt: skip
            if not why:
                why = f"unchanged since {info.since}), so import the {info.since} bundle first"
                out.append(replace(base, error=f"missing from the target: this delta bundle leaves it out ({why}"))
                continue
            entry = replace(base, status="skipped", digest=held or "",
                            reason=f"unchanged since {info.since}: the target holds {why}")  # fmt: skip
            exact = held == image.digest  # signatures of the source digests apply only to the same digests
            out.append(attach(entry, dst, image.attached) if attach and exact else entry)
        return out


def _archive_config(archive: Path, name: str) -> str:
    """The config digest of image `name` in a docker archive (what identifies it across formats)."""
    wanted = ImageRef.parse(name)
    try:
        index = index_tar(archive, links=True)  # docker save links a layer stored twice
        member = index.files().get("manifest.json")
        if member is None:
            raise KeyError("manifest.json")
        entries = json.loads(read_member(index, member, cap=fmt.CAPS[fmt.INFO], what="docker manifest.json"))
        config = next(e["Config"] for e in entries if any(ImageRef.parse(t) == wanted for t in e.get("RepoTags") or []))
    except StopIteration:
        raise BundleError(f"{archive} holds no image named {name}") from None
    except (KeyError, ValueError, TypeError, AttributeError, ChaosmirrorError) as exc:
        raise BundleError(f"{archive} is not a docker archive ({exc})") from None
    return "sha256:" + urllib.parse.unquote(config).removesuffix(".json").rsplit("/", 1)[-1]
