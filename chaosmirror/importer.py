"""Import an air-gap bundle into a registry, with no access to the source registry.

Every byte is verified first (`bundle.scan_*`); nothing is pushed from a damaged or incomplete
bundle. An OCI bundle then goes through the same plan and parallel copies as `mirror` (images the
target already holds are skipped). A docker-archive bundle pushes one platform per image.
A delta bundle's left-out images must already be in the target: the report says so if not.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from chaosmirror import bundle as fmt
from chaosmirror.engines import Engine
from chaosmirror.errors import BundleError, ChaosmirrorError, EngineError, RegistryError
from chaosmirror.manifest import Manifest
from chaosmirror.mirror import Event, Session, run
from chaosmirror.plan import Item, Observed, build_plan
from chaosmirror.ref import ArchiveRef, ImageRef, LayoutRef, Target
from chaosmirror.registry import Registries, Registry
from chaosmirror.release import Group, Image, Release, Source
from chaosmirror.report import Entry, Report
from chaosmirror.settings import Settings
from chaosmirror.survey import check_target, target_configs


def verify(path: Path, *, extract_to: Path | None = None) -> fmt.Scan:
    """Check every checksum and blob digest and that every manifest's blobs are present."""
    if not path.exists():
        raise BundleError(f"{path} does not exist")
    return fmt.scan_folder(path) if path.is_dir() else fmt.scan_tar(path, extract_to=extract_to)


def import_bundle(
    path: Path,
    settings: Settings,
    *,
    work_dir: Path | None = None,
    on_event: Callable[[Event], None] = lambda e: None,
    on_phase: Callable[[str], None] = lambda m: None,
) -> Report:
    """Verify `path`, then push every image to the target as `mirror` would."""
    target = settings.target
    assert target is not None
    info = fmt.read_info(path)
    report = Report("bundle import", info.release, str(target))
    scratch = Path(tempfile.mkdtemp(prefix=".chaosmirror-import-", dir=work_dir or path.resolve().parent))
    try:
        on_phase(f"verifying {path}")
        scan = verify(path, extract_to=None if path.is_dir() else scratch)
        if scan.problems:
            raise BundleError(f"{path} is damaged or incomplete; nothing was pushed:\n  " + "\n  ".join(scan.problems))
        with Session(settings, report) as (registries, engine):
            check_target(registries, target.host)
            job = _Import(settings, target, engine, registries, on_event)
            report.entries = job.layout(info, scratch, on_phase) if info.kind == fmt.OCI else job.archives(info, path)
            report.entries += job.unchanged(info)
    except (RegistryError, EngineError) as exc:
        report.error = str(exc)
        report.entries = [Entry(i.source, str(target.place(ImageRef.parse(i.source))), "failed", uses=i.uses,
                                error=str(exc)) for i in (*info.images, *info.unchanged)]  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def bundle_release(info: fmt.BundleInfo) -> Release:
    """The release a bundle holds, rebuilt from bundle.json: each image's `uses` names its group and
    component, so the configuration of an import needs no release manifest at the air-gapped site."""
    groups: dict[str, list[Image]] = {}
    for image in (*info.images, *info.unchanged):
        ref = ImageRef.parse(image.source)
        for use in image.uses:
            group, _, component = use.partition("/")
            groups.setdefault(group, []).append(Image(group, component, ref, "bundle"))
    source = Source("bundle", f"the chaosmirror bundle of HCE {info.release} ({info.created})")
    return Release(info.release, info.revision, {"bundle": source},
                   {name: Group(name, "bundle", tuple(images)) for name, images in groups.items()})  # fmt: skip


@dataclass
class _Import:
    settings: Settings
    target: Target
    engine: Engine
    registries: Registries
    on_event: Callable[[Event], None]

    @property
    def dest(self) -> Registry:
        return self.registries.get(self.target.host, "dest")

    def layout(self, info: fmt.BundleInfo, root: Path, on_phase: Callable[[str], None]) -> list[Entry]:
        items, seen = [], {}
        for image in info.images:
            src = ImageRef.parse(image.source)
            layout = LayoutRef(root, image.source)
            item = Item(src, layout, self.target.place(src), image.uses)
            top = Manifest.from_bytes(layout.blob_path(image.digest).read_bytes())
            children = {d.digest: Manifest.from_bytes(layout.blob_path(d.digest).read_bytes()) for d in top.children()}
            items.append(item)
            seen[item] = (top, children)
        with ThreadPoolExecutor(max_workers=max(1, self.settings.workers())) as pool:
            held = dict(zip(items, pool.map(lambda i: self.dest.digest(i.dst), items), strict=True))
        plan = build_plan(items, {i: Observed(seen[i][0], held[i], seen[i][1]) for i in items})
        on_phase(f"pushing {plan.count('copy')} images, {plan.count('skip')} already there")
        return run(plan, self.engine, self.registries, jobs=self.settings.workers(), split=False,
                   on_event=self.on_event, on_phase=on_phase)  # fmt: skip

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
                digest = self.engine.copy(ArchiveRef(archive, image.source), dst)
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

    def unchanged(self, info: fmt.BundleInfo) -> list[Entry]:
        """A delta leaves out images unchanged since its base: the target must already hold them."""
        out = []
        for image in info.unchanged:
            dst = self.target.place(ImageRef.parse(image.source))
            held = self.dest.digest(dst)
            if held == image.digest:
                out.append(
                    Entry(
                        image.source,
                        str(dst),
                        "skipped",
                        held,
                        image.uses,
                        reason=f"unchanged since {info.since}: imported with the {info.since} bundle",
                    )
                )
            else:
                out.append(Entry(image.source, str(dst), "failed", image.digest, image.uses,
                                 error=f"missing from the target: this delta bundle leaves it out (unchanged since "
                                       f"{info.since}), so import the {info.since} bundle first"))  # fmt: skip
        return out


def _archive_config(archive: Path, name: str) -> str:
    """The config digest of image `name` in a docker archive (what identifies it across formats)."""
    wanted = ImageRef.parse(name)
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise KeyError("manifest.json")
            entries = json.load(member)
        config = next(e["Config"] for e in entries if any(ImageRef.parse(t) == wanted for t in e.get("RepoTags") or []))
    except StopIteration:
        raise BundleError(f"{archive} holds no image named {name}") from None
    except (tarfile.TarError, KeyError, ValueError, TypeError, OSError, ChaosmirrorError) as exc:
        raise BundleError(f"{archive} is not a docker archive ({exc})") from None
    return "sha256:" + urllib.parse.unquote(config).removesuffix(".json").rsplit("/", 1)[-1]
