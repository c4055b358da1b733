"""Files a run keeps beside its output while it works: the lock of an export, `.NAME.partial-PID`
files, scratch folders; and their removal once the process that made them is gone.

A killed run (kill -9, a power cut) leaves its partial files behind; the next run removes those of
dead processes before it starts. A file of a live process is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from pathlib import Path
from types import TracebackType

from chaosmirror.errors import ChaosmirrorError
from chaosmirror.lifecycle import alive

_PARTIAL_RE = re.compile(r"^\..+\.partial-([0-9]+)$")
OLD_SCRATCH = ".chaosmirror-import-"  # what imports before 0.2 extracted a bundle into


def remove_stale(folder: Path, *, prefix: str = ".", old_scratch: bool = False) -> list[Path]:
    """Remove `.NAME.partial-PID` entries (starting with `prefix`) of dead processes in `folder`, and
    with `old_scratch` the extraction folders of earlier imports. A folder we may not write
    (read-only media) is left as it is. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL_RE.match(entry.name)
        stale = bool(match and entry.name.startswith(prefix) and not alive(int(match.group(1))))
        if old_scratch and entry.name.startswith(OLD_SCRATCH) and entry.is_dir() and not entry.is_symlink():
            stale = True
        if not stale:
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


class OutputLock:
    """An exclusive flock on `.NAME.lock` beside `output`, held for a whole export; a second export
    to the same output is refused at once, with the pid of the one that holds it."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(f".{output.name}.lock")
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ChaosmirrorError(f"cannot create {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ChaosmirrorError(
                    f"another bundle export (pid {holder}) is writing {self.output} right now (it holds "
                    f"{self.path}); wait for it to finish, or choose another -o"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file the previous holder removed while we waited for it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None
