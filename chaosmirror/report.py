"""The result of a run: one entry per image, a JSON envelope for CI, and the summary table.

The JSON is versioned (`"format": 1`, docs/json-output.md) and says overall whether the run
succeeded, partly failed, failed before copying, or was interrupted (a signal stopped it; the images
it did not finish say `interrupted`). It never holds a credential: entries carry references, digests and
messages that were already scrubbed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chaosmirror import __version__
from chaosmirror.errors import ChaosmirrorError, RefError
from chaosmirror.ref import ImageRef, check_digest
from chaosmirror.signatures import Attachment

Status = Literal["copied", "skipped", "failed", "planned", "interrupted"]
FORMAT = 1
HELD = ("copied", "skipped")  # entries whose digest is what the target holds at the tag


@dataclass(frozen=True)
class Entry:
    source: str
    destination: str
    status: Status
    digest: str = ""
    uses: tuple[str, ...] = ()
    pulled_from: str = ""
    platforms: tuple[str, ...] = ()
    size: int = 0
    seconds: float = 0.0
    reason: str = ""
    error: str = ""
    source_digest: str = ""  # differs from `digest` when platforms were narrowed or the engine re-pushed
    note: str = ""  # how the copy got done, when not the plain way
    attached: tuple[Attachment, ...] = ()  # signatures, attestations, SBOMs, referrers next to it in the target
    attached_copied: int = 0  # of them, written by this run
    left_out: tuple[str, ...] = ()  # what of the source image was not copied, and why

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "source": self.source,
            "destination": self.destination,
            "status": self.status,
            "digest": self.digest or None,
            "uses": list(self.uses),
            "platforms": list(self.platforms),
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "error": self.error or None,
        }
        if self.pulled_from and self.pulled_from != self.source:
            doc["pulled_from"] = self.pulled_from
        if self.reason:
            doc["reason"] = self.reason
        if self.source_digest:
            doc["source_digest"] = self.source_digest
        if self.note:
            doc["note"] = self.note
        if self.attached:
            doc["signatures"] = [a.to_json() for a in self.attached]
            doc["signatures_copied"] = self.attached_copied
        if self.left_out:
            doc["left_out"] = list(self.left_out)
        return doc


class Outcome:
    """How a run ended, for its JSON `status` and its exit code: interrupted by a signal (128 + N),
    stopped by an `error` (1), or done, with (1) or without (0) some image failing."""

    interrupted: str
    error: str
    signal: int
    DONE = ("success", "partial")  # the status when nothing failed, and when something did

    @property
    def failed_any(self) -> bool:
        raise NotImplementedError

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.error:
            return "error"
        return self.DONE[1] if self.failed_any else self.DONE[0]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.signal if self.signal else 130
        return 1 if self.error or self.failed_any else 0


@dataclass
class Report(Outcome):
    command: str
    release: str
    target: str
    engine: str = ""
    entries: list[Entry] = field(default_factory=list)
    error: str = ""  # a failure that stopped the whole run
    interrupted: str = ""  # why the run stopped early (a signal), if it did
    signal: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the run noticed on the way (retries, downgrades)
    releases: tuple[str, ...] = ()  # several releases in one run (`release` then joins them with +)
    needed_by: dict[str, tuple[str, ...]] = field(default_factory=dict)  # source -> the releases that need it

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def failed_any(self) -> bool:
        return bool(self.count("failed"))

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "tool": f"chaosmirror {__version__}",
            "command": self.command,
            "release": self.release,
            "releases": list(self.releases or (self.release,)),
            "target": self.target,
            "engine": self.engine,
            "status": self.status,
            "error": self.error or self.interrupted or None,
            "started": iso(self.started),
            "finished": iso(self.finished or time.time()),
            "seconds": round((self.finished or time.time()) - self.started, 3),
            "summary": {s: self.count(s) for s in ("copied", "skipped", "failed", "planned", "interrupted")},
            "notes": list(self.notes),
            "images": [{**e.to_json(), "releases": list(self.needed(e))} for e in self.entries],
        }

    def needed(self, entry: Entry) -> tuple[str, ...]:
        """The releases of the run that need `entry`'s image."""
        return self.needed_by.get(entry.source) or self.releases or (self.release,)

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def read_report(path: Path) -> dict[str, Any]:
    """A JSON report that a run wrote with `--report FILE`, checked to be one (ChaosmirrorError if not)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ChaosmirrorError(f"cannot read the report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ChaosmirrorError(f"{path} is not a chaosmirror report (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("images"), list):
        raise ChaosmirrorError(f"{path} is not a chaosmirror report (format {FORMAT}) written by `mirror --report`")
    return doc


def held_digests(doc: dict[str, Any], path: Path) -> dict[ImageRef, str]:
    """Destination -> digest of every image the run of report `doc` copied or found already there."""
    digests: dict[ImageRef, str] = {}
    for entry in doc["images"]:
        if not isinstance(entry, dict) or entry.get("status") not in HELD or not entry.get("digest"):
            continue
        try:
            digests[ImageRef.parse(str(entry["destination"]))] = check_digest(str(entry["digest"]))
        except (KeyError, RefError) as exc:
            raise ChaosmirrorError(f"{path}: a broken image entry ({exc})") from None
    return digests


def iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def shapes(entries: list[Entry]) -> list[str]:
    """Lines on what travelled with the images (signatures, referrers) and what was left out."""
    lines = [f"left out of {e.destination}: {what}" for e in entries for what in e.left_out]
    with_any = [e for e in entries if e.attached]
    if with_any:
        total = sum(len(e.attached) for e in with_any)
        copied = sum(e.attached_copied for e in with_any)
        lines.append(f"signatures, attestations, SBOMs and referrers: {total} next to {len(with_any)} images "
                     f"({copied} written by this run)")  # fmt: skip
    return ["", *lines] if lines else []


def summary(report: Report) -> str:
    """The table printed at the end of a run, then one line of totals."""
    rows = [
        [
            e.status,
            e.destination,
            e.digest[7:19] if e.digest else "-",
            human_size(e.size) if e.size else "-",
            f"{e.seconds:.1f}s" if e.seconds else "-",
        ]
        for e in report.entries
    ]
    out = [table(rows, ["STATUS", "DESTINATION", "DIGEST", "SIZE", "TIME"])] if rows else []
    failed = [e for e in report.entries if e.status == "failed"]
    if failed:
        out.append("")
        out += [f"failed: {e.source}: {e.error}" for e in failed]
    out += shapes(report.entries)
    moved = sum(e.size for e in report.entries if e.status == "copied")
    seconds = (report.finished or time.time()) - report.started
    out.append("")
    stopped = f", {report.count('interrupted')} interrupted" if report.count("interrupted") else ""
    out.append(
        f"{report.count('copied')} copied ({human_size(moved)}), {report.count('skipped')} already there, "
        f"{report.count('failed')} failed{stopped}, in {seconds:.1f}s"
    )
    if report.interrupted:
        out.append(f"{report.interrupted}: run the same command again to finish; what landed is kept")
    return "\n".join(out)
