"""`verify`: does the target hold everything the releases need, and is it what it should be?

The target is always checked on its own, so this works inside an air gap with no source: every tag
exists, and every manifest an index lists and every blob (config and layers) the manifests reference
is there (manifests read, blobs HEADed, in parallel; no blob is read). Where the expected digests
can be learnt (the report of the mirror or import run, a bundle's bundle.json, else the source when
it answers), each tag must also hold its digest. `verdict` decides from what was seen; this module
does the looking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chaosmirror import __version__
from chaosmirror import bundle as fmt
from chaosmirror.cache import ManifestCache
from chaosmirror.errors import ChaosmirrorError, Interrupted, NotFoundError, RegistryError
from chaosmirror.lifecycle import Run
from chaosmirror.plan import Item, choose, collect_items
from chaosmirror.ref import ImageRef, Target
from chaosmirror.registry import Registries, Registry
from chaosmirror.release import Release
from chaosmirror.report import Outcome, held_digests, iso, write_json
from chaosmirror.settings import Settings
from chaosmirror.signatures import Attachment, Finder, subjects_for
from chaosmirror.survey import check_target, survey
from chaosmirror.verdict import BlobSeen, Check, ExtraTag, Seen, Verdict, blobs_to_look_up, judge

FORMAT = 1  # of the JSON document; see docs/json-output.md
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Expected:
    """The digests the tags must hold, by destination, and where they were learnt."""

    digests: dict[ImageRef, str]
    source: str  # "report", "bundle" or "source"
    unknown: str = ""  # why an image not in `digests` has none
    notes: tuple[str, ...] = ()
    # Tags expected beside an image (its signatures, when the source or the report knows them): each
    # must be there whole, like the image itself.
    extra_tags: dict[ImageRef, tuple[ExtraTag, ...]] = field(default_factory=dict)


WHAT = {"sig": "signature", "att": "attestation", "sbom": "SBOM", "referrers": "referrers index"}


def signature_tags(attached: Iterable[Attachment]) -> tuple[ExtraTag, ...]:
    """The tags a verifier finds next to an image: cosign's, and the referrers fallback index. (A
    referrer proper is found through that index, which must then list it: it is checked whole.)"""
    return tuple(dict.fromkeys(ExtraTag(a.tag, WHAT.get(a.kind, a.kind), a.digest) for a in attached if a.tag))


def from_report(doc: dict[str, Any], path: Path) -> Expected:
    """The digests a `mirror` or `bundle import` report (already read) recorded in the target: for a
    Docker-engine mirror, the digests the daemon pushed; and the signatures it put next to them."""
    if doc.get("command") not in ("mirror", "bundle import"):
        raise ChaosmirrorError(f"--mirror-report {path} is the report of `{doc.get('command')}`, which put nothing "
                               "in a registry: give the report of the `mirror` or `bundle import` run")  # fmt: skip
    extra: dict[ImageRef, tuple[ExtraTag, ...]] = {}
    for entry in doc.get("images") or ():
        if isinstance(entry, dict) and entry.get("signatures"):
            try:
                tags = signature_tags(Attachment.from_json(a) for a in entry["signatures"])
                extra[ImageRef.parse(str(entry["destination"]))] = tags
            except (KeyError, TypeError, ValueError, ChaosmirrorError) as exc:
                raise ChaosmirrorError(f"{path}: a broken signatures entry ({exc})") from None
    return Expected(held_digests(doc, path), "report", f"{path} does not record it as in the target",
                    extra_tags=extra)  # fmt: skip


def from_bundle(info: fmt.BundleInfo, target: Target) -> Expected:
    """The digests an import of the bundle puts in the target (what bundle.json records)."""
    if info.kind != fmt.OCI:
        return Expected({}, "bundle", "a docker-archive bundle keeps no manifest, so an import pushes new digests: "
                        "give that import's report with --mirror-report")  # fmt: skip
    images = (*info.images, *info.unchanged)
    extra = {target.place(ImageRef.parse(i.source)): signature_tags(i.attached) for i in images if i.attached}
    return Expected({target.place(ImageRef.parse(i.source)): i.digest for i in images}, "bundle",
                    "the bundle does not hold it", extra_tags=extra)  # fmt: skip


def from_source(items: list[Item], registries: Registries, settings: Settings) -> Expected:
    """The digests a mirror of the source would put there now: the source's, narrowed to --platform.
    A source that does not answer leaves its images unchecked, with a note (an air gap)."""
    notes: list[str] = []
    down: dict[str, str] = {}
    for host in dict.fromkeys(i.pull.registry for i in items if isinstance(i.pull, ImageRef)):
        try:
            registries.get(host, "src").ping()
        except RegistryError as exc:
            down[host] = str(exc)
            notes.append(f"the source {host} cannot be read ({exc}): its images were checked for presence only")
    reachable = [i for i in items if isinstance(i.pull, ImageRef) and i.pull.registry not in down]
    seen = survey(reachable, registries, settings.platforms, jobs=settings.workers())
    digests: dict[ImageRef, str] = {}
    subjects: dict[Item, list[str]] = {}
    for item, observed in seen.items():
        if observed.top is not None and not observed.error:
            selection = choose(observed.top, settings.platforms, observed.platform)
            if not selection.error:
                digests[item.dst] = selection.digest
                subjects[item] = subjects_for(selection, observed.top.digest)
    extra: dict[ImageRef, tuple[ExtraTag, ...]] = {}
    if settings.signatures and subjects:  # what the source keeps next to each manifest: HEADs only
        finder = Finder(registries, ManifestCache(None), jobs=4)

        def attached(item: Item) -> tuple[ImageRef, tuple[ExtraTag, ...]]:
            assert isinstance(item.pull, ImageRef)
            found = finder.find(item.pull, subjects[item], read=False)
            return item.dst, signature_tags(f.attachment for f in found)

        with ThreadPoolExecutor(max_workers=max(1, settings.workers())) as pool:
            extra = {dst: tags for dst, tags in pool.map(attached, list(subjects)) if tags}
    return Expected(digests, "source", "the source could not be read, or does not have it", tuple(notes),
                    extra_tags=extra)  # fmt: skip


OFFLINE = Expected({}, "", "--offline: the source was not asked")


@dataclass
class Verification(Outcome):
    """The outcome of `verify`: one verdict per image, and the JSON document (`"format": 1`)."""

    releases: tuple[str, ...]
    target: str
    verdicts: list[Verdict] = field(default_factory=list)
    expected_from: str = ""  # "report", "bundle", "source"; "" when only presence was checked
    notes: list[str] = field(default_factory=list)
    error: str = ""  # a failure that stopped the check (the target unreachable, credentials refused)
    interrupted: str = ""
    signal: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    looked_up: dict[str, int] = field(default_factory=lambda: {"tags": 0, "manifests": 0, "blobs": 0})

    DONE = ("complete", "incomplete")

    def count(self, status: str) -> int:
        return sum(1 for v in self.verdicts if v.status == status)

    @property
    def failed_any(self) -> bool:
        return self.count("ok") != len(self.verdicts)

    def to_json(self) -> dict[str, object]:
        end = self.finished or time.time()
        return {
            "format": FORMAT,
            "tool": f"chaosmirror {__version__}",
            "command": "verify",
            "release": "+".join(self.releases),
            "releases": list(self.releases),
            "target": self.target,
            "status": self.status,
            "error": self.error or self.interrupted or None,
            "expected_from": self.expected_from or None,
            "started": iso(self.started),
            "finished": iso(end),
            "seconds": round(end - self.started, 3),
            "summary": {s: self.count(s) for s in ("ok", "missing", "wrong", "error")},
            "looked_up": dict(self.looked_up),
            "notes": list(self.notes),
            "images": [v.to_json() for v in self.verdicts],
        }

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


def checks_for(items: list[Item], needed: dict[ImageRef, tuple[str, ...]], expected: Expected | None) -> list[Check]:
    """One check per item, with its expected digest when known."""
    out = []
    for item in items:
        digest = expected.digests.get(item.dst, "") if expected else ""
        unknown = "" if digest else expected.unknown if expected else "no digest was asked for"
        extra = expected.extra_tags.get(item.dst, ()) if expected else ()
        out.append(Check(str(item.src), item.dst, item.uses, needed.get(item.src, ()), digest,
                         expected.source if digest and expected else "", unknown, extra))  # fmt: skip
    return out


def verify_release(
    release: Release,
    settings: Settings,
    *,
    expected: Expected | None = None,
    offline: bool = False,
    run: Run | None = None,
    on_phase: Callable[[str], None] = lambda m: None,
) -> Verification:
    """Check that the target holds every image of `release` whole: against `expected` when given,
    else against the source (unless `offline`, or when it does not answer). Never raises for a
    missing image; the target itself failing (unreachable, credentials refused) is the `error`."""
    target = settings.target
    assert target is not None
    items = collect_items(release.images(settings.groups, optional=settings.optional), target,
                          settings.source_mirrors)  # fmt: skip
    if expected is not None and expected.source == "report" and not {i.dst for i in items} & expected.digests.keys():
        why = ("it is the report of a run to another target, account or release" if expected.digests else
               "it records no image as copied or already there")  # fmt: skip
        raise ChaosmirrorError(f"the report records no image of HCE {release.name} at {target}: {why}")
    result = Verification(release.names, str(target))
    run = run or Run.current() or Run()
    registries = settings.registries(run=run, note=result.notes.append)
    unhook = run.on_stop(registries.close)  # a stop ends every request in flight at once
    try:
        check_target(registries, target.host)
        if expected is None:
            expected = _from_source(items, registries, settings, on_phase) if not offline else OFFLINE
            result.notes += expected.notes
        checks = checks_for(items, release.needed_by(settings.groups, optional=settings.optional), expected)
        result.expected_from = expected.source if expected and any(c.expected for c in checks) else ""
        on_phase(f"checking {len(checks)} images in {target.host}")
        result.verdicts = _look(checks, registries, settings.workers(), result.looked_up)
        if result.expected_from == "source" and any(v.status == "wrong" for v in result.verdicts):
            result.notes.append("a tag holds another digest than the source's: a mirror made with --engine docker "
                                "is verified with that run's report (--mirror-report FILE)")  # fmt: skip
    except Interrupted:
        pass  # below
    except RegistryError as exc:
        result.error = str(exc)
    finally:
        unhook()
        registries.close()
        result.finished = time.time()
    if run.stopped:
        result.interrupted, result.signal = run.reason, run.signal or 0
    return result


def _from_source(items: list[Item], registries: Registries, settings: Settings,
                 on_phase: Callable[[str], None]) -> Expected:  # fmt: skip
    if settings.engine == "docker":
        return Expected({}, "source", "--engine docker: a Docker-engine mirror holds new digests, so the source's "
                        "are not compared; give that run's report with --mirror-report to check them")  # fmt: skip
    on_phase("reading the expected digests from the source")
    return from_source(items, registries, settings)


def _parallel(fn: Callable[[T], R], things: Iterable[T], jobs: int, run: Run) -> list[R]:
    """`fn` over `things` with `jobs` threads, in order; once the run stops, no new call starts."""

    def guarded(thing: T) -> R:
        run.check()
        return fn(thing)

    todo = list(things)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo) or 1)), thread_name_prefix="verify") as pool:
        return list(pool.map(guarded, todo))


def _look(checks: list[Check], registries: Registries, jobs: int, counts: dict[str, int]) -> list[Verdict]:
    """Read every tag's manifests, HEAD every blob they reference (each repository and digest once),
    then judge each image."""
    refs = list(dict.fromkeys([ref for c in checks for ref in (c.dst, *(c.at(e.tag) for e in c.extra_tags))]))
    seen = dict(zip(refs, _parallel(lambda ref: look(registries.for_ref(ref, "dest"), ref), refs, jobs,
                                    registries.run), strict=True))  # fmt: skip
    wanted = sorted({key for ref in refs for key in blobs_to_look_up(seen[ref], ref.repository)})
    by_repo = {ref.repository: ref for ref in refs}

    def head(key: tuple[str, str]) -> BlobSeen:
        ref = by_repo[key[0]]
        try:
            return BlobSeen(registries.for_ref(ref, "dest").blob_size(ref, key[1]))
        except RegistryError as exc:
            return BlobSeen(None, str(exc))

    blobs = dict(zip(wanted, _parallel(head, wanted, jobs, registries.run), strict=True))
    counts["tags"] += len(refs)
    counts["manifests"] += sum(m is not None for s in seen.values() for m in s.manifests.values())
    counts["blobs"] += len(wanted)
    return [judge(c, seen[c.dst], blobs, {e.tag: seen[c.at(e.tag)] for e in c.extra_tags}) for c in checks]


def look(registry: Registry, ref: ImageRef) -> Seen:
    """What the target holds at `ref`: the manifest at the tag, and every manifest an index lists
    (an index of indexes too), read by digest. An answer other than 404 is the Seen's `error`."""
    try:
        top = registry.manifest(ref)
    except NotFoundError:
        return Seen()
    except RegistryError as exc:
        return Seen(error=str(exc))
    manifests: dict[str, Any] = {top.digest: top}
    todo = top.children()
    while todo:
        child = todo.pop(0)
        if child.digest in manifests:
            continue
        try:
            manifests[child.digest] = found = registry.manifest(ref.with_digest(child.digest))
        except NotFoundError:
            manifests[child.digest] = None
            continue
        except RegistryError as exc:
            return Seen(top.digest, manifests, error=f"{child.digest}: {exc}")
        todo += found.children()
    return Seen(top.digest, manifests)
