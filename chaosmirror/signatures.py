"""Signatures, attestations and SBOMs stored next to an image, found and carried with it.

cosign keeps them as tags in the image's own repository, one set per manifest digest:
`sha256-<hex>.sig` (signatures), `.att` (attestations), `.sbom` (SBOMs). OCI 1.1 referrers (cosign
3's default, notation, ORAS) are manifests whose `subject` names the image: a registry with the
referrers API lists them at `GET /v2/<name>/referrers/<digest>`; one without it (distribution 2.8,
the test registry) holds the fallback tag `sha256-<hex>`, an index of them (OCI distribution-spec
1.1, "Referrers tag schema"). `skopeo copy --all` copies none of these. chaosmirror finds them for
every manifest a copy writes (the index and each platform) and puts them next to the mirrored
image byte for byte, so a verifier (cosign, Kyverno, Connaisseur) in the air gap finds the same
signature, under the same tag or digest, as at the source.

Found from one tag list per repository (`GET /v2/<name>/tags/list`, every tag in one or a few
pages) instead of four lookups per manifest, then a HEAD (free on Docker Hub) of each tag that is
there; where a registry will not list tags, by a HEAD of each tag it may hold. Their manifests are
read through the local cache, so a rerun reads none; in the target each is HEADed first and only
what is missing is written.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from chaosmirror.errors import ChaosmirrorError, Interrupted, RegistryError
from chaosmirror.manifest import OCI_INDEX, Descriptor, Manifest, sha256_digest
from chaosmirror.ref import ImageRef, check_digest

if TYPE_CHECKING:
    from chaosmirror.cache import ManifestCache
    from chaosmirror.plan import Action, Selection
    from chaosmirror.registry import Head, Registries, Registry
    from chaosmirror.report import Entry

COSIGN_KINDS = ("sig", "att", "sbom")
KINDS = (*COSIGN_KINDS, "referrer", "referrers")
KIND_NAMES = {"sig": "cosign signature", "att": "cosign attestation", "sbom": "cosign SBOM",
              "referrer": "OCI referrer", "referrers": "referrers index"}  # fmt: skip
PLACING = 8  # attached manifests put at once, per image
DEPTH = 2  # also what is attached to what is attached (a signature of an SBOM), no further


@dataclass(frozen=True)
class Attachment:
    """One manifest stored next to an image, about the manifest `subject`: a cosign tag (`kind` sig,
    att, sbom), an OCI 1.1 referrer (`referrer`, by digest) or the fallback tag's index (`referrers`)."""

    kind: str
    subject: str
    digest: str
    media_type: str = ""
    size: int = 0
    tag: str = ""  # cosign's tag, or the fallback tag; "" for a referrer, which is found by digest
    artifact_type: str = ""

    def to_json(self) -> dict[str, object]:
        doc = {k: v for k, v in asdict(self).items() if v not in ("", 0)}
        return {"kind": self.kind, "subject": self.subject, "digest": self.digest, **doc}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Attachment:
        found = cls(str(doc["kind"]), check_digest(str(doc["subject"])), check_digest(str(doc["digest"])),
                    str(doc.get("media_type", "")), int(doc.get("size", 0)), str(doc.get("tag", "")),
                    str(doc.get("artifact_type", "")))  # fmt: skip
        if found.kind not in KINDS:
            raise ValueError(f"unknown kind of attached artifact {found.kind!r}")
        if found.tag and found.tag not in (cosign_tag(found.subject, found.kind), fallback_tag(found.subject)):
            raise ValueError(f"tag {found.tag!r} is not where a {found.kind} of {found.subject} is kept")
        return found

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)

    def at(self, repo: ImageRef) -> ImageRef:
        """Where it is kept in `repo`: its tag, or (a referrer) its digest."""
        return ImageRef(repo.registry, repo.repository, self.tag) if self.tag else repo.with_digest(self.digest)


def cosign_tag(subject: str, kind: str) -> str:
    return f"{check_digest(subject).replace(':', '-')}.{kind}"


def fallback_tag(subject: str) -> str:
    return check_digest(subject).replace(":", "-")


@dataclass(frozen=True)
class Found:
    attachment: Attachment
    manifest: Manifest | None  # None when only looked up (HEAD), not read


def subjects_of(manifests: list[Manifest]) -> list[str]:
    """Every manifest digest a copy writes: the index, each platform and attestation manifest."""
    out: dict[str, None] = {}
    for manifest in manifests:
        out[manifest.digest] = None
        for child in manifest.children():
            out[child.digest] = None
    return list(out)


class Finder:
    """Finds what is attached to manifests in source registries. Remembers, per host, whether it has
    the referrers API (a 404 there means it has not: distribution-spec 1.1)."""

    def __init__(self, registries: Registries, cache: ManifestCache, *, jobs: int = 4) -> None:
        self.registries = registries
        self.cache = cache
        self.jobs = jobs
        self._api: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._tags: dict[tuple[str, str], set[str] | None] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}  # one lookup at a time per key

    def tags(self, source: Registry, repo: ImageRef) -> set[str] | None:
        """The tags of `repo`'s repository, listed once per run (None: it cannot be listed)."""
        key = (repo.registry, repo.repository)
        with self._lock:
            one = self._locks.setdefault(key, threading.Lock())
        with one:  # one listing per repository, however many threads ask
            if key not in self._tags:
                try:  # one attempt: the list only saves lookups, and the lookups retry on their own
                    self._tags[key] = source.tags(repo, retry=False)
                except Interrupted:
                    raise
                except RegistryError:
                    self._tags[key] = None  # look each tag up instead
            return self._tags[key]

    def _tagged(self, source: Registry, repo: ImageRef, tag: str) -> Head | None:
        """HEAD of `tag` in `repo`, unless the repository's tag list says it is not there."""
        listed = self.tags(source, repo)
        if listed is not None and tag not in listed:
            return None
        return source.head(ImageRef(repo.registry, repo.repository, tag))

    def find(self, repo: ImageRef, subjects: list[str], *, read: bool = True) -> list[Found]:
        """What `repo` holds about each of `subjects` (and about what that holds, to DEPTH), referrers
        before the fallback index that lists them. Without `read`, HEADs only (nothing is read). The
        lookups of one level run in parallel: against a far registry each is a round trip."""
        source = self.registries.for_ref(repo, "src")
        out: list[Found] = []
        seen: set[str] = set()
        level = list(dict.fromkeys(subjects))
        with ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="find") as pool:
            for depth in range(1, DEPTH + 1):
                level = [s for s in level if s not in seen]
                seen.update(level)
                lookups = [(s, kind) for s in level for kind in (*COSIGN_KINDS, "referrers")]
                found = [f for group in pool.map(lambda job: self._lookup(source, repo, job[0], job[1], read), lookups)
                         for f in group]  # fmt: skip
                out += found
                if depth < DEPTH:
                    level = [f.attachment.digest for f in found if f.attachment.kind != "referrers"]
        return out

    def _lookup(self, source: Registry, repo: ImageRef, subject: str, kind: str, read: bool) -> list[Found]:
        if kind == "referrers":
            return self._referrers(source, repo, subject, read)
        return self._cosign(source, repo, subject, read, kinds=(kind,))

    def _read(self, source: Registry, repo: ImageRef, digest: str, media_type: str) -> Manifest:
        return self.cache.manifest(source, repo.with_digest(digest), media_type)

    def _cosign(self, source: Registry, repo: ImageRef, subject: str, read: bool, *,
                kinds: tuple[str, ...] = COSIGN_KINDS) -> list[Found]:  # fmt: skip
        out = []
        for kind in kinds:
            tag = cosign_tag(subject, kind)
            head = self._tagged(source, repo, tag)
            if head is None:
                continue
            manifest = self._read(source, repo, head.digest, head.media_type) if read else None
            kind_of = manifest.media_type if manifest else head.media_type
            size = len(manifest.data) if manifest else 0
            out.append(Found(Attachment(kind, subject, head.digest, kind_of, size, tag), manifest))
        return out

    def _referrers(self, source: Registry, repo: ImageRef, subject: str, read: bool) -> list[Found]:
        host = repo.registry
        with self._lock:
            first = self._locks.setdefault(("referrers API", host), threading.Lock())
        with first:  # the first lookup of a host learns whether it has the API; the others wait for it
            api = self._api.get(host, True)
            if api and host not in self._api:
                listed = source.referrers(repo, subject)
                self._api[host] = listed is not None
                if listed is not None:
                    return [self._referrer(source, repo, subject, d, read) for d in listed.children()]
                api = False
        if api:
            listed = source.referrers(repo, subject)
            if listed is not None:
                return [self._referrer(source, repo, subject, d, read) for d in listed.children()]
        tag = fallback_tag(subject)
        head = self._tagged(source, repo, tag)
        if head is None:
            return []
        index = self._read(source, repo, head.digest, head.media_type) if read else None
        listing = Attachment("referrers", subject, head.digest, index.media_type if index else head.media_type,
                             len(index.data) if index else 0, tag)  # fmt: skip
        children = [self._referrer(source, repo, subject, d, read) for d in index.children()] if index else []
        return [*children, Found(listing, index)]

    def _referrer(self, source: Registry, repo: ImageRef, subject: str, desc: Descriptor, read: bool) -> Found:
        manifest = self._read(source, repo, desc.digest, desc.media_type) if read else None
        return Found(Attachment("referrer", subject, desc.digest, desc.media_type, desc.size,
                                artifact_type=desc.artifact_type), manifest)  # fmt: skip


# Puts one blob (a descriptor of an attached manifest) into the target repository, if it is missing.
SendBlob = Callable[["Registry", ImageRef, Descriptor], None]


@dataclass(frozen=True)
class Placed:
    attachments: tuple[Attachment, ...]  # what is next to the image in the target now
    copied: int  # of them, written by this run
    notes: tuple[str, ...] = ()


class Placer:
    """Puts attached manifests next to images in target registries, byte for byte. Remembers, per
    target host, whether it has the referrers API (then it keeps the list itself, and no fallback
    tag is written)."""

    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self._api: dict[str, bool] = {}
        self._lock = threading.Lock()

    def _has_api(self, dest: Registry, repo: ImageRef, subject: str) -> bool:
        with self._lock:
            if repo.registry in self._api:
                return self._api[repo.registry]
        try:
            answer = dest.referrers(repo, subject) is not None
        except RegistryError:
            answer = False
        with self._lock:
            self._api[repo.registry] = answer
        return answer

    def place(self, found: list[Found], repo: ImageRef, send: SendBlob) -> Placed:
        """Put each of `found` (read, with its manifest) into the target repository `repo`: the
        attached manifests at once (each is a few round trips: far away they add up), then the
        fallback indexes that list referrers, which the target may check are there."""
        dest = self.registries.for_ref(repo, "dest")
        for item in found:
            if item.manifest is None:
                raise ChaosmirrorError(f"{item.attachment.kind} {item.attachment.digest} was not read")
        placed: dict[int, tuple[Attachment | None, int, str]] = {}
        with ThreadPoolExecutor(max_workers=PLACING, thread_name_prefix="place") as pool:
            for listing in (False, True):
                jobs = {i: pool.submit(self._place_one, dest, repo, item, send) for i, item in enumerate(found)
                        if (item.attachment.kind == "referrers") == listing}  # fmt: skip
                placed.update({i: job.result() for i, job in jobs.items()})
        present = [a for i in sorted(placed) if (a := placed[i][0]) is not None]
        copied = sum(placed[i][1] for i in placed)
        notes = [placed[i][2] for i in sorted(placed) if placed[i][2]]
        listed = {f.attachment.subject for f in found if f.attachment.kind == "referrers"}
        for subject in dict.fromkeys(f.attachment.subject for f in found if f.attachment.kind == "referrer"):
            if subject in listed or self._has_api(dest, repo, subject):
                continue
            # read through the referrers API: a target without it finds them by the fallback tag
            index = _listing([f for f in found if f.attachment.kind == "referrer" and f.attachment.subject == subject])
            tag = fallback_tag(subject)
            there, wrote = Placer._tagged(dest, repo, tag, index)
            present.append(Attachment("referrers", subject, there.digest, OCI_INDEX, len(there.data), tag))
            copied += wrote
        return Placed(tuple(present), copied, tuple(notes))

    def _place_one(self, dest: Registry, repo: ImageRef, item: Found,
                   send: SendBlob) -> tuple[Attachment | None, int, str]:  # fmt: skip
        """Put one attached manifest (and its blobs) unless the target holds it: (what is there now,
        or None where the target lists referrers itself; 1 if written; a note)."""
        attachment, manifest = item.attachment, item.manifest
        assert manifest is not None
        where = attachment.at(repo)
        if attachment.kind == "referrers" and self._has_api(dest, repo, attachment.subject):
            return None, 0, ""  # the target lists referrers itself
        held = dest.digest(where, push=True)
        if held == attachment.digest:
            return attachment, 0, ""
        if attachment.kind == "referrers" and held is not None:
            merged, extra = _merge(manifest, dest.manifest(where))
            dest.put_manifest(where, merged)
            note = f"the target's {attachment.tag} listed {extra} other referrers: kept, merged with these"
            return replace(attachment, digest=merged.digest, size=len(merged.data)), 1, note
        for blob in manifest.stored_blobs():
            send(dest, repo, blob)
        put = dest.put_manifest(where, manifest)
        if put != attachment.digest:
            raise ChaosmirrorError(f"{repo.registry} stored {attachment.kind} {attachment.digest} as {put}")
        return attachment, 1, ""

    @staticmethod
    def _tagged(dest: Registry, repo: ImageRef, tag: str, index: Manifest) -> tuple[Manifest, int]:
        """Put a fallback index at `tag`, merged with the one the target holds there; (what is there, 1 if written)."""
        where = ImageRef(repo.registry, repo.repository, tag)
        held = dest.digest(where, push=True)
        if held == index.digest:
            return index, 0
        if held is not None:
            index, _ = _merge(index, dest.manifest(where))
            if index.digest == held:
                return index, 0
        dest.put_manifest(where, index)
        return index, 1


def _listing(referrers: list[Found]) -> Manifest:
    """A fallback index (`sha256-<hex>`) listing `referrers`, as a client writes it for a registry
    without the referrers API (distribution-spec 1.1, "Pushing Manifests with Subject")."""
    entries = []
    for found in referrers:
        item = found.attachment
        desc: dict[str, object] = {"mediaType": item.media_type, "digest": item.digest, "size": item.size}
        if item.artifact_type:
            desc["artifactType"] = item.artifact_type
        notes = found.manifest.doc.get("annotations") if found.manifest else None
        if isinstance(notes, dict) and notes:
            desc["annotations"] = notes
        entries.append(desc)
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return Manifest(data, OCI_INDEX, sha256_digest(data))


def _merge(ours: Manifest, theirs: Manifest) -> tuple[Manifest, int]:
    """A fallback index listing our referrers and then those the target's listed besides (a
    signature made in the air gap must not be dropped). Returns it and how many were theirs only."""
    listed = {d["digest"]: d for d in ours.doc.get("manifests", []) if isinstance(d, dict)}
    extra = [d for d in theirs.doc.get("manifests", []) if isinstance(d, dict) and d.get("digest") not in listed]
    doc = {**ours.doc, "mediaType": OCI_INDEX, "manifests": [*listed.values(), *extra]}
    data = json.dumps(doc, indent=3).encode()
    return Manifest(data, OCI_INDEX, sha256_digest(data)), len(extra)


def from_registry(registries: Registries, src: ImageRef) -> SendBlob:
    """Sends blobs read from the source registry `src`'s repository."""
    source = registries.for_ref(src, "src")

    def send(dest: Registry, repo: ImageRef, blob: Descriptor) -> None:
        if not dest.has_blob(repo, blob.digest):
            dest.upload_blob(repo, blob.digest, blob.size, lambda: source.open_blob(src, blob.digest))

    return send


def subjects_for(selection: Selection, source_digest: str) -> list[str]:
    """The source manifests a copy writes: each platform (and attestation) manifest, and the index
    when it is the source's own (a filtered index is new: nobody signed it)."""
    out = [d.digest for d in selection.parts]
    if selection.index is None or selection.digest == source_digest:
        out.insert(0, selection.digest)
    return list(dict.fromkeys(out))


class Carrier:
    """Carries what is attached to each image once that image is in the target, on threads of its
    own, so the signatures of the first images travel while the last ones are still copying. With
    `copy` false (an engine that pushes new manifests) it only looks up (HEADs), and lists what it
    found as left out. An image whose signatures could not be put is failed: a verifying cluster
    would refuse it."""

    def __init__(self, registries: Registries, cache: ManifestCache, *, copy: bool, jobs: int) -> None:
        self.registries = registries
        self.copy = copy
        self.finder, self.placer = Finder(registries, cache), Placer(registries)
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sign")

    def prefetch(self, repos: list[ImageRef]) -> None:
        """List the tags of `repos` now, beside the survey, so each image's lookups find them ready."""
        for repo in {(r.registry, r.repository): r for r in repos}.values():
            self._pool.submit(self._list, repo)

    def _list(self, repo: ImageRef) -> None:
        if self.registries.run.stopped:
            return
        with contextlib.suppress(ChaosmirrorError):  # an unreachable source: the survey says so
            self.finder.tags(self.registries.for_ref(repo, "src"), repo)

    def submit(self, action: Action, entry: Entry) -> Future[Entry]:
        """`entry` as it will be once what is attached to `action`'s image is carried."""
        return self._pool.submit(self._one, action, entry)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # a run that failed early leaves listings queued

    def __enter__(self) -> Carrier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _one(self, action: Action, entry: Entry) -> Entry:
        run = self.registries.run
        if entry.status not in ("copied", "skipped") or action.selection is None or action.twin is not None:
            return entry
        if not isinstance(action.item.pull, ImageRef):
            return entry
        stopped = replace(entry, status="interrupted", error=f"{run.reason}: stopped before its signatures were copied")
        if run.stopped:
            return stopped
        try:
            subjects = subjects_for(action.selection, action.source_digest)
            if not self.copy:  # what is attached to the source image and its platforms, none of which is pushed
                subjects = list(dict.fromkeys([action.source_digest, *subjects]))
            found = self.finder.find(action.item.pull, subjects, read=self.copy)
            if not self.copy:
                if not found:
                    return entry
                kinds = ", ".join(sorted({KIND_NAMES[f.attachment.kind] for f in found}))
                why = (f"what is attached to the source digests ({len(found)}: {kinds}): it cannot pass through a "
                       "Docker daemon, which pushes a new digest nobody signed")  # fmt: skip
                return replace(entry, left_out=(*entry.left_out, why))
            placed = self.placer.place(found, action.item.dst, from_registry(self.registries, action.item.pull))
        except Interrupted:
            return stopped
        except ChaosmirrorError as exc:
            return replace(entry, status="failed", error=f"the image is in the target, but what is attached to it "
                           f"(signatures, SBOMs, referrers) could not be copied: {exc}")  # fmt: skip
        note = "; ".join(n for n in (entry.note, *placed.notes) if n)
        return replace(entry, attached=placed.attachments, attached_copied=placed.copied, note=note)


def carry(actions: list[Action], entries: list[Entry], registries: Registries, cache: ManifestCache, *,
          copy: bool, jobs: int) -> list[Entry]:  # fmt: skip
    """For each image in the target (after the copies), what `Carrier` makes of its entry."""
    with Carrier(registries, cache, copy=copy, jobs=min(jobs, len(actions) or 1)) as carrier:
        return [f.result() for f in [carrier.submit(a, e) for a, e in zip(actions, entries, strict=True)]]
