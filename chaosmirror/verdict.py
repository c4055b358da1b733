"""What `verify` concludes from what it saw in the target. Pure: no I/O beyond its arguments.

For each image (a `Check`): the tag, the manifest it holds, every manifest an index lists, every
blob (config and layers) those reference, and the extra tags expected beside it (`ExtraTag`: a
signature, once signatures are copied), each found or not (`Seen`, `BlobSeen`); and, when known,
the digest the tag must hold. `verify` does the looking, this module decides (`judge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from chaosmirror.manifest import Descriptor, Manifest
from chaosmirror.ref import ImageRef

Status = Literal["ok", "missing", "wrong", "error"]
ProblemKind = Literal["missing-tag", "missing-manifest", "missing-blob", "wrong-digest", "wrong-size", "unreadable"]
UNSAID = -1  # BlobSeen.size of a blob the registry holds without saying its size


@dataclass(frozen=True)
class ExtraTag:
    """A tag expected beside an image in its repository (a cosign signature `sha256-<hex>.sig`, an
    attestation): it must exist, hold `digest` when that is known, and all it references must be there."""

    tag: str
    what: str  # how a problem with it is named: "signature", "attestation"
    digest: str = ""


@dataclass(frozen=True)
class Check:
    """One image to verify: where it is in the target, and what is known of what it must hold."""

    source: str
    dst: ImageRef
    uses: tuple[str, ...] = ()
    releases: tuple[str, ...] = ()
    expected: str = ""  # the digest the tag must hold; "" when it is not known
    expected_from: str = ""  # where `expected` was learnt: "source", "report" or "bundle"
    unknown: str = ""  # why no digest is expected, when none is
    extra_tags: tuple[ExtraTag, ...] = ()

    def at(self, tag: str) -> ImageRef:
        return ImageRef(self.dst.registry, self.dst.repository, tag)


@dataclass(frozen=True)
class Seen:
    """What the target showed at one tag: the digest it holds (None: no such tag) and each manifest
    read from there, by digest (None: an index lists it, the target lacks it)."""

    digest: str | None = None
    manifests: Mapping[str, Manifest | None] = field(default_factory=dict)
    error: str = ""  # the target could not tell (an answer other than 404)


@dataclass(frozen=True)
class BlobSeen:
    size: int | None  # None: the repository lacks it; UNSAID: held, size not given
    error: str = ""


@dataclass(frozen=True)
class Needed:
    """A blob or manifest that a manifest at the tag references."""

    digest: str
    size: int
    what: str  # "config", "layer", "manifest"
    platform: str = ""  # of the platform manifest that references it, when an index names one


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    ref: str  # the tag or manifest it is about
    digest: str = ""
    size: int = 0
    what: str = ""
    detail: str = ""

    def __str__(self) -> str:
        what = f" ({self.what})" if self.what else ""
        if self.kind == "missing-tag":
            return f"tag {self.ref} is missing{what}" + (f"; it should hold {self.digest}" if self.digest else "")
        if self.kind == "missing-manifest":
            return f"manifest {self.digest}{what}, {self.size} bytes, is missing"
        if self.kind == "missing-blob":
            return f"blob {self.digest}{what}, {self.size} bytes, is missing"
        if self.kind == "wrong-digest":
            return f"{self.ref} holds {self.digest}, not {self.detail}"
        if self.kind == "wrong-size":
            return f"blob {self.digest}{what} is {self.detail} bytes in the target, not {self.size}"
        return f"cannot tell what the target holds at {self.ref}{what}: {self.detail}"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "ref": self.ref, "digest": self.digest or None, "size": self.size,
                "what": self.what or None, "message": str(self)}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    check: Check
    status: Status
    digest: str  # what the tag holds; "" when nothing
    problems: tuple[Problem, ...] = ()
    manifests: int = 0  # manifests found at the tag (and at its extra tags)
    blobs: int = 0  # blobs they reference

    def to_json(self) -> dict[str, object]:
        check = self.check
        return {
            "source": check.source,
            "destination": str(check.dst),
            "releases": list(check.releases),
            "uses": list(check.uses),
            "status": self.status,
            "digest": self.digest or None,
            "expected_digest": check.expected or None,
            "expected_from": check.expected_from or None,
            "unknown": check.unknown or None,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "problems": [p.to_json() for p in self.problems],
            "extra_tags": [{"tag": e.tag, "what": e.what, "digest": e.digest or None} for e in check.extra_tags],
        }


def _label(what: str, platform: str) -> str:
    return f"{what} of {platform}" if what and platform else what or platform


def needed(seen: Seen) -> tuple[list[Needed], list[Needed]]:
    """The manifests an index at the tag lists that the target lacks, and every blob the manifests
    it holds reference, each once."""
    platforms: dict[str, str] = {}
    listed: dict[str, Descriptor] = {}
    for manifest in seen.manifests.values():
        for child in manifest.children() if manifest is not None else ():
            listed.setdefault(child.digest, child)
            if child.platform is not None:
                platforms[child.digest] = str(child.platform)
    absent = [Needed(d, listed[d].size, "manifest", platforms.get(d, "")) for d, m in seen.manifests.items()
              if m is None and d in listed]  # fmt: skip
    blobs: dict[str, Needed] = {}
    for digest, manifest in seen.manifests.items():
        if manifest is None or manifest.is_index:
            continue
        for n, blob in enumerate(manifest.blobs()):
            blobs.setdefault(blob.digest, Needed(blob.digest, blob.size, "config" if n == 0 else "layer",
                                                 platforms.get(digest, "")))  # fmt: skip
    return absent, list(blobs.values())


def _at_tag(ref: ImageRef, expected: str, seen: Seen, blobs: Mapping[tuple[str, str], BlobSeen],
            what: str = "") -> tuple[list[Problem], int, int]:  # fmt: skip
    """Problems of one tag, and how many manifests and blobs were checked there."""
    if seen.error:
        return [Problem("unreadable", str(ref), what=what, detail=seen.error)], 0, 0
    if seen.digest is None:
        return [Problem("missing-tag", str(ref), expected, what=what)], 0, 0
    problems = []
    if expected and seen.digest != expected:
        problems.append(Problem("wrong-digest", str(ref), seen.digest, what=what, detail=expected))
    absent, wanted = needed(seen)
    problems += [Problem("missing-manifest", str(ref.with_digest(m.digest)), m.digest, m.size,
                         _label(what, m.platform)) for m in absent]  # fmt: skip
    for blob in wanted:
        label = _label(f"{what} {blob.what}".strip(), blob.platform)
        found = blobs.get((ref.repository, blob.digest), BlobSeen(None, "not looked up"))
        if found.error:
            problems.append(Problem("unreadable", str(ref), blob.digest, blob.size, label, found.error))
        elif found.size is None:
            problems.append(Problem("missing-blob", str(ref), blob.digest, blob.size, label))
        elif found.size not in (blob.size, UNSAID):
            problems.append(Problem("wrong-size", str(ref), blob.digest, blob.size, label, str(found.size)))
    return problems, sum(m is not None for m in seen.manifests.values()), len(wanted)


def judge(check: Check, seen: Seen, blobs: Mapping[tuple[str, str], BlobSeen],
          extras: Mapping[str, Seen] | None = None) -> Verdict:  # fmt: skip
    """The verdict on one image from what the target showed at its tag, at its extra tags (by tag),
    and of the blobs (by repository and digest)."""
    problems, manifests, counted = _at_tag(check.dst, check.expected, seen, blobs)
    for extra in check.extra_tags:
        found = (extras or {}).get(extra.tag, Seen(error="not looked up"))
        more, m, b = _at_tag(check.at(extra.tag), extra.digest, found, blobs, extra.what)
        problems, manifests, counted = problems + more, manifests + m, counted + b
    kinds = {p.kind.split("-")[0] for p in problems}
    status: Status = "missing" if "missing" in kinds else "wrong" if "wrong" in kinds else "error" if kinds else "ok"
    return Verdict(check, status, seen.digest or "", tuple(problems), manifests, counted)


def blobs_to_look_up(seen: Seen, repository: str) -> set[tuple[str, str]]:
    """(repository, digest) of every blob the manifests seen at a tag reference."""
    return {(repository, blob.digest) for blob in needed(seen)[1]}
