"""Push a verified OCI bundle straight from its tar members to one or more registries.

Nothing is extracted. Per target, the plan is `mirror`'s (`plan.build_plan`: copy, skip, refuse a
collision). Each blob an image to copy needs has, per target, a home (the first repository that
needs it); it is sent only where that home lacks it (a HEAD, so an interrupted import resumes at
blob level), read once from its member and streamed to all those targets at once (`fanout`), each
upload committed only if the bytes hashed to the digest (`Registry.upload_blob_checked`), then
mounted into the other repositories that need it. Then each image's manifests go, children first
and the index last, byte for byte, so the target holds exactly the bundle's digests; a manifest
with foreign layers first, alone and unretried (`foreign`). Last, what the bundle carries next to
each image (signatures, attestations, SBOMs, referrers: `signatures`) goes next to it, byte for byte.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import BinaryIO, cast

from chaosmirror import bundle as fmt
from chaosmirror import foreign
from chaosmirror.bundleset import Bundle, read_manifest, top_descriptors
from chaosmirror.errors import BundleError, ChaosmirrorError, Interrupted
from chaosmirror.fanout import Fanout
from chaosmirror.manifest import Descriptor, Manifest, Platform
from chaosmirror.mirror import Event, entry_for, twin_entry
from chaosmirror.plan import Action, Item, Observed, Plan, build_plan
from chaosmirror.ref import ImageRef, LayoutRef, Target
from chaosmirror.registry import Registries, Registry
from chaosmirror.report import Entry, Status, human_size
from chaosmirror.signatures import Attachment, Found, Placer, SendBlob
from chaosmirror.tarindex import CHUNK, MemberReader


@dataclass
class _Blob:
    """One blob to put in place: where it goes in each target (by target number), and what failed."""

    name: str
    digest: str
    size: int
    homes: dict[int, ImageRef] = field(default_factory=dict)  # uploaded here, if missing
    others: dict[int, list[ImageRef]] = field(default_factory=dict)  # then mounted into these
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Image:
    top: Manifest
    children: dict[str, Manifest]
    platform: Platform | None


class LayoutPush:
    def __init__(self, bundle: Bundle, targets: tuple[Target, ...], registries: Registries, *, jobs: int,
                 on_event: Callable[[Event], None], on_phase: Callable[[str], None],
                 signatures: bool = True) -> None:  # fmt: skip
        self.bundle = bundle
        self.targets = targets
        self.registries = registries
        self.jobs = max(1, jobs)
        self.on_event = on_event
        self.on_phase = on_phase
        self.started = time.monotonic()
        self._streams: ThreadPoolExecutor | None = None
        self.placer = Placer(registries)
        self.signatures = signatures  # put what the bundle carries next to each image

    def dest(self, number: int) -> Registry:
        return self.registries.get(self.targets[number].host, "dest")

    def run(self) -> list[Entry]:
        """Every image to every target; a failure is an entry. Entries per target, in bundle order."""
        images = self._images()
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            plans = [self._plan(number, images, pool) for number in range(len(self.targets))]
        blobs = self._blobs(plans)
        size = sum(b.size for b in blobs.values())
        if blobs:
            self.on_phase(f"sending {len(blobs)} blobs ({human_size(size)}) where they are missing, each read once")
        with ThreadPoolExecutor(max_workers=self.jobs * len(self.targets), thread_name_prefix="stream") as streams:
            self._streams = streams
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="blob") as pool:
                list(pool.map(self._put_blob, sorted(blobs.values(), key=lambda b: -b.size)))
        work = [(n, a) for n, plan in enumerate(plans) for a in plan.actions if a.twin is None]
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="manifest") as pool:
            finished = list(pool.map(lambda job: self._finish(job[0], job[1], images, blobs), work))
        done = {(n, a.item): entry for (n, a), entry in zip(work, finished, strict=True)}
        entries = []
        for number, plan in enumerate(plans):  # an image the same as another's takes that one's outcome
            for action in plan.actions:
                if action.twin is None:
                    entries.append(done[(number, action.item)])
                    continue
                entry = replace(twin_entry(action, done.get((number, action.twin))), pulled_from=self.bundle.named)
                self.on_event(Event("done", action, entry))
                entries.append(entry)
        return entries

    # --- planning -----------------------------------------------------------------------------------

    def _images(self) -> dict[ImageRef, _Image]:
        tops = top_descriptors(self.bundle)
        out = {}
        for image in self.bundle.info.images:
            top = read_manifest(self.bundle, tops[image.source]) if image.source in tops else None
            children = {d.digest: read_manifest(self.bundle, d) for d in top.children()} if top else {}
            if top is None or any(m is None for m in children.values()):
                raise BundleError(f"{self.bundle.named}: the manifests of {image.source} cannot be read")
            single = Platform.parse(image.platforms[0]) if not top.is_index and len(image.platforms) == 1 else None
            out[ImageRef.parse(image.source)] = _Image(
                top, {d: m for d, m in children.items() if m is not None}, single
            )
        return out

    def _plan(self, number: int, images: dict[ImageRef, _Image], pool: ThreadPoolExecutor) -> Plan:
        target = self.targets[number]
        where = self.bundle.parts[1].path
        items = []
        for image in self.bundle.info.images:
            src = ImageRef.parse(image.source)
            items.append(Item(src, LayoutRef(where, image.source), target.place(src), image.uses))
        held = list(pool.map(lambda item: self.dest(number).digest(item.dst), items))
        observed = {}
        for item, digest in zip(items, held, strict=True):
            seen = images[item.src]
            observed[item] = Observed(seen.top, digest, seen.children, seen.platform)
        plan = build_plan(items, observed)
        self.on_phase(f"{target.host}: {plan.count('copy')} images to push, {plan.count('skip')} already there")
        return plan

    def _blobs(self, plans: list[Plan]) -> dict[str, _Blob]:
        blobs: dict[str, _Blob] = {}
        for number, plan in enumerate(plans):
            for action in plan.actions:
                if action.kind != "copy":
                    continue
                repo = action.item.dst
                for part in action.parts:
                    for digest, size in part.layers:
                        blob = blobs.setdefault(digest, _Blob(fmt.blob_name(digest), digest, size))
                        home = blob.homes.setdefault(number, repo)
                        others = blob.others.setdefault(number, [])
                        if repo.repository != home.repository and all(o.repository != repo.repository for o in others):
                            others.append(repo)
        return blobs

    # --- blobs --------------------------------------------------------------------------------------

    def _put_blob(self, blob: _Blob) -> None:
        if self.registries.run.stopped:
            return  # its images say `interrupted`
        try:
            self._place(blob)
        except Exception as exc:  # noqa: BLE001 - one blob's bug must not stop the others
            for number in blob.homes:
                blob.errors.setdefault(number, f"unexpected {type(exc).__name__}: {exc}")

    def _place(self, blob: _Blob) -> None:
        lacking = []
        for number, home in blob.homes.items():
            try:
                if not self.dest(number).has_blob(home, blob.digest):
                    lacking.append((number, home))
            except ChaosmirrorError as exc:
                blob.errors[number] = str(exc)
        self._send(blob, lacking)
        for number, repos in blob.others.items():
            for repo in repos:
                if number in blob.errors:
                    break
                try:
                    dest = self.dest(number)
                    if not dest.mount_blob(repo, blob.digest, blob.homes[number].repository) and not dest.has_blob(
                        repo, blob.digest
                    ):
                        self._send(blob, [(number, repo)])  # a registry that does not mount: upload it there too
                except ChaosmirrorError as exc:
                    blob.errors[number] = str(exc)

    def _send(self, blob: _Blob, places: list[tuple[int, ImageRef]]) -> None:
        """Read the blob once from the bundle and upload it to every place at the same time; an
        upload that breaks is retried alone, reading the blob again from the bundle."""
        if not places:
            return
        part, member = self.bundle.files[blob.name]

        def fresh() -> tuple[BinaryIO, Callable[[], str]]:
            reader = MemberReader(part.path, member)
            return cast(BinaryIO, reader), functools.partial(reader.problem, blob.digest)

        if len(places) == 1:
            number, ref = places[0]
            self._upload(blob, number, ref, fresh)
            return
        with MemberReader(part.path, member) as shared:
            check = functools.partial(shared.problem, blob.digest)
            fan = Fanout(shared, len(places), chunk=CHUNK)

            def one(i: int) -> None:
                first = [(cast(BinaryIO, fan.reader(i)), check)]

                def source() -> tuple[BinaryIO, Callable[[], str]]:
                    if first:
                        return first.pop()
                    fan.drop(i)  # a retry reads on its own, so the others need not wait for it
                    return fresh()

                try:
                    self._upload(blob, places[i][0], places[i][1], source)
                finally:
                    fan.drop(i)

            assert self._streams is not None
            futures = [self._streams.submit(one, i) for i in range(len(places))]
            fan.pump()
            for future in futures:
                future.result()

    def _upload(self, blob: _Blob, number: int, ref: ImageRef,
                source: Callable[[], tuple[BinaryIO, Callable[[], str]]]) -> None:  # fmt: skip
        try:
            self.dest(number).upload_blob_checked(ref, blob.digest, blob.size, source)
        except ChaosmirrorError as exc:
            blob.errors[number] = str(exc)

    # --- manifests ----------------------------------------------------------------------------------

    def _finish(self, number: int, action: Action, images: dict[ImageRef, _Image], blobs: dict[str, _Blob]) -> Entry:
        """The entry of one image in one target: put its manifests once its blobs are all in."""
        run = self.registries.run
        if action.kind == "copy" and run.stopped:
            entry = entry_for(action, "interrupted", error=run.reason)
        elif action.kind == "copy":
            self.on_event(Event("start", action))
            errors = [blobs[d].errors[number] for part in action.parts for d, _ in part.layers
                      if number in blobs[d].errors]  # fmt: skip
            if errors:
                entry = entry_for(action, "failed", seconds=time.monotonic() - self.started,
                                  error="; ".join(dict.fromkeys(errors)))  # fmt: skip
            else:
                entry = self._manifests(number, action, images[action.item.src])
        else:
            status: Status = "skipped" if action.kind == "skip" else "failed"
            entry = entry_for(action, status, error=action.reason if status == "failed" else "")
        entry = replace(entry, pulled_from=self.bundle.named)
        if entry.status in ("copied", "skipped") and action.twin is None and self.signatures:
            entry = self.attach(number, entry, action.item.dst, self._attached(action.item.src))
        self.on_event(Event("done", action, entry))
        return entry

    # --- what is attached to the images -------------------------------------------------------------

    def _attached(self, src: ImageRef) -> tuple[Attachment, ...]:
        for image in (*self.bundle.info.images, *self.bundle.info.unchanged):
            if image.source == str(src):
                return image.attached
        return ()

    def attach(self, number: int, entry: Entry, dst: ImageRef, attached: tuple[Attachment, ...]) -> Entry:
        """Put what the bundle carries next to an image (signatures, SBOMs, referrers) next to it in
        target `number`; an image whose signatures cannot be put fails (a verifier would refuse it)."""
        if not attached or not self.signatures:
            return entry
        found = []
        for attachment in attached:
            manifest = read_manifest(self.bundle, attachment.descriptor)
            if manifest is None:
                return replace(entry, status="failed", error=f"the bundle's {attachment.kind} {attachment.digest} "
                               "of it cannot be read")  # fmt: skip
            found.append(Found(attachment, manifest))
        try:
            placed = self.placer.place(found, dst, self._sender())
        except Interrupted as exc:
            return replace(entry, status="interrupted", error=str(exc))
        except ChaosmirrorError as exc:
            return replace(entry, status="failed", error=f"the image is in the target, but what is attached to it "
                           f"(signatures, SBOMs, referrers) could not be put: {exc}")  # fmt: skip
        note = "; ".join(n for n in (entry.note, *placed.notes) if n)
        return replace(entry, attached=placed.attachments, attached_copied=placed.copied, note=note)

    def _sender(self) -> SendBlob:
        """Sends a blob of an attached artifact from its tar member, checked as every upload is."""

        def send(dest: Registry, repo: ImageRef, blob: Descriptor) -> None:
            if dest.has_blob(repo, blob.digest):
                return
            found = self.bundle.files.get(fmt.blob_name(blob.digest))
            if found is None:
                raise BundleError(f"{self.bundle.named} lacks blob {blob.digest}")
            part, member = found

            def fresh() -> tuple[BinaryIO, Callable[[], str]]:
                reader = MemberReader(part.path, member)
                return cast(BinaryIO, reader), functools.partial(reader.problem, blob.digest)

            dest.upload_blob_checked(repo, blob.digest, blob.size, fresh)

        return send

    def _manifests(self, number: int, action: Action, image: _Image) -> Entry:
        dest, dst = self.dest(number), action.item.dst
        assert action.selection is not None
        try:
            foreign.put_first(dest, dst, [*image.children.values(), image.top])
            for desc in action.selection.parts if image.top.is_index else ():
                ref = dst.with_digest(desc.digest)
                if dest.digest(ref, push=True) != desc.digest:
                    dest.put_manifest(ref, image.children[desc.digest])
            dest.put_manifest(dst, image.top)
            held = dest.digest(dst)  # an answer of its own, not the PUT's word
            if held != action.digest:
                raise ChaosmirrorError(f"after the push the target holds {held or 'nothing'} at {dst}, not "
                                       f"{action.digest}")  # fmt: skip
        except Interrupted as exc:
            return entry_for(action, "interrupted", seconds=time.monotonic() - self.started, error=str(exc))
        except ChaosmirrorError as exc:
            return entry_for(action, "failed", seconds=time.monotonic() - self.started, error=str(exc))
        return entry_for(action, "copied", seconds=time.monotonic() - self.started)
